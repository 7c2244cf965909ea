"""Use cases: each runs one operation in one transaction over domain rules and repositories."""
