"""Text that every database can store: PostgreSQL refuses NUL (U+0000) in text columns."""

from __future__ import annotations

NUL = "\x00"
REPLACEMENT = "\ufffd"

# For msgspec/OpenAPI string constraints: a string holding no NUL.
NO_NUL_PATTERN = "^[^\x00]*$"


def has_nul(text: str) -> bool:
    return NUL in text


def storable(text: str) -> str:
    """`text` with each NUL replaced by U+FFFD, for text we must keep whatever it holds (an SMS
    a phone received); text a caller chose is refused instead (see `has_nul`)."""
    return text.replace(NUL, REPLACEMENT) if NUL in text else text
