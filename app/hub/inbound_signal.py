"""Wakes whoever waits for a project's next inbound SMS (MCP `wait_for_sms`) as soon as one is
stored, on this instance or (through the hub's channel) on any other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class InboundSignal:
    """Per-project events: `watch` before looking, `fire` after a commit that stored one."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def watch(self, project_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._events.setdefault(project_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._events.get(project_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._events[project_id]

    def fire(self, project_id: str) -> None:
        for event in self._events.get(project_id, ()):
            event.set()
