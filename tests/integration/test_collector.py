"""The server's app leaves the garbage collector set for thousands of sockets: what startup
built is out of every later collection, and full collections are spaced out (app/collector.py).
Run in a child process: the settings are process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.collector import MIDDLE_COLLECTIONS_PER_FULL

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import gc, json, weakref

class Node:
    pass

# Garbage made before the app: a cycle only the collector can free.
cycle = Node(); cycle.me = cycle
garbage = weakref.ref(cycle)
del cycle

from app.api.app import app_from_env
app_from_env()
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "threshold": gc.get_threshold(),
    "garbage_frozen": garbage() is not None,
}))
"""


def test_the_served_app_freezes_startup_objects_and_spaces_out_full_collections(database_url):
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env={**os.environ, "SIMWIRE_DATABASE_URL": database_url, "SIMWIRE_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    # The modules, classes, app and routes: hundreds of thousands of objects, never garbage.
    assert probe["frozen"] > 100_000
    assert probe["threshold"][2] == MIDDLE_COLLECTIONS_PER_FULL
    # Nothing unreachable was frozen with them: it was collected first.
    assert probe["garbage_frozen"] is False
