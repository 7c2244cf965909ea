"""Named crash points for recovery tests: with `SIMWIRE_CRASH_AT=<name>` set, the process
kills itself (SIGKILL, as `kill -9` would) when it reaches that point (the first time, or with
`SIMWIRE_CRASH_AFTER=N` the time after passing it N times); unset, each costs one comparison."""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("SIMWIRE_CRASH_AT") or None
_passes_left = int(os.environ.get("SIMWIRE_CRASH_AFTER") or 0)


def crash_point(name: str) -> None:
    """Die here, at once and without cleanup, when `SIMWIRE_CRASH_AT` names this point."""
    global _passes_left
    if _CRASH_AT is not None and name == _CRASH_AT:
        if _passes_left > 0:
            _passes_left -= 1
            return
        os.kill(os.getpid(), signal.SIGKILL)
