"""A JSON object's fields against what a route takes: unknown ones refused by name (a typo
such as `tll_s` is never silently ignored), missing ones named."""

from __future__ import annotations

from typing import Any

from app.domain.errors import InvalidBody, UnknownField


def check_fields(
    payload: dict[str, Any], allowed: frozenset[str], required: tuple[str, ...], where: str
) -> None:
    """Refuse a field the request does not take (so a typo such as `tll_s` is not silently
    ignored) and name every required field that is missing."""
    unknown = sorted(set(payload) - allowed)
    if unknown:
        more = f" (also {', '.join(f'`{name}`' for name in unknown[1:])})" if unknown[1:] else ""
        raise UnknownField(
            f"{where} has an unknown field `{unknown[0]}`{more}; it takes "
            + ", ".join(f"`{name}`" for name in sorted(allowed)),
            field=unknown[0],
            unknown_fields=unknown,
        )
    missing = [name for name in required if name not in payload]
    if missing:
        raise InvalidBody(
            f"{where} is missing {' and '.join(f'`{name}`' for name in missing)}",
            missing_fields=missing,
        )


def optional_string(payload: dict[str, Any], name: str) -> str | None:
    """`payload[name]` when it is a string, None when absent or null; else `invalid_body`."""
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidBody(f"`{name}` must be a string")
    return value
