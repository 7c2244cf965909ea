"""Repositories: the only code that writes SQL for an aggregate."""
