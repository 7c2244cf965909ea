"""Named crash points for recovery tests: with `SIMWIRE_CRASH_AT=<name>` set, the process
kills itself (SIGKILL, as `kill -9` would) when it reaches that point; unset, each costs one
comparison."""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("SIMWIRE_CRASH_AT") or None


def crash_point(name: str) -> None:
    """Die here, at once and without cleanup, when `SIMWIRE_CRASH_AT` names this point."""
    if _CRASH_AT is not None and name == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
