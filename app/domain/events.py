"""The event types a project can be told about (DESIGN §9): one list for the outbox, the
`type` filter of `GET /v1/events` and the event filters of webhook endpoints."""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = (
    "message.queued",
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.expired",
    "message.canceled",
    "message.received",
    "request.completed",
    "device.online",
    "device.offline",
    "credits.low",
    "agent.claimed",
    "webhook.test",
    "webhook.disabled",
)
ALL_EVENT_TYPES = frozenset(EVENT_TYPES)


def unknown_event_types(types: list[str]) -> list[str]:
    """The entries of `types` that are not event types, sorted and without repeats."""
    return sorted(set(types) - ALL_EVENT_TYPES)
