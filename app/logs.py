"""Structured logging (JSON lines) with secrets scrubbed from every event and stdlib record."""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog

from app.domain.credentials import redact_secrets

_SECRET_FIELDS = {
    "key",
    "raw_key",
    "api_key",
    "x-api-key",
    "token",
    "device_token",
    "secret",
    "password",
    "authorization",
    "relayer_key",
}
_PLAIN = (int, float, bool, type(None))


def _scrubbed(value: Any, depth: int = 0) -> Any:
    """`value` with every secret in it redacted, however deep (dicts, lists, tuples, sets) and
    whatever the type (an object whose text holds a secret is logged as its redacted text)."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, _PLAIN) or depth > 20:
        return value
    if isinstance(value, dict):
        return {
            name: "[redacted]"
            if isinstance(name, str) and name.lower() in _SECRET_FIELDS
            else _scrubbed(item, depth + 1)
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_scrubbed(item, depth + 1) for item in value]
    if isinstance(value, tuple | set | frozenset):
        return tuple(_scrubbed(item, depth + 1) for item in value)
    text = str(value)
    redacted = redact_secrets(text)
    return value if redacted == text else redacted


def _scrub(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for name, value in list(event.items()):
        if name.startswith("_"):
            continue  # the formatter's own bookkeeping (`_record`), not logged
        if name.lower() in _SECRET_FIELDS:
            event[name] = "[redacted]"
        else:
            event[name] = _scrubbed(value)
    return event


class _ScrubFilter(logging.Filter):
    """Scrubs stdlib records too (uvicorn, SQLAlchemy, websockets), message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_secrets(record.msg)
        if record.args:
            record.args = _scrubbed(record.args)
        return True


class _StderrLogger:
    """Writes each rendered event as one line to the `sys.stderr` of the moment (so a test's
    capture sees it): the structlog-native path, without a stdlib record, formatter and handler
    per event (about half the cost of a request's log line)."""

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")  # line-buffered: one write per event

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


_json_encode = msgspec.json.Encoder(enc_hook=repr).encode


def _render_json(event: dict[str, Any], **_: Any) -> str:
    return _json_encode(event).decode()


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """Our own events go straight from structlog to stderr; stdlib records (uvicorn,
    SQLAlchemy, websockets) through a handler that renders them the same way."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_render_json)
        if json_lines
        else structlog.dev.ConsoleRenderer()
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # render tracebacks first, so they get scrubbed
        _scrub,
    ]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: _StderrLogger(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=processors,
        )
    )
    handler.addFilter(_ScrubFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Access lines carry query strings (the phone socket's token); we log requests ourselves.
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
