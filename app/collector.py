"""The cyclic garbage collector, set for a server that holds thousands of phone sockets.

A full collection walks every object the collector tracks, with the event loop stopped. With
10,000 phones connected that is about 1.4 million objects and 0.7-1.4 s on this machine's cores,
some 400,000 of them built at startup (modules, classes, the app and its routes) and never
garbage. Python's defaults took one about every minute with the phones idle, and every few
seconds while they connected."""

from __future__ import annotations

import gc

# Collections of the middle generation between two full ones (Python's default is 10). A full
# collection also waits, as always, until a quarter of the oldest generation is new since the
# last one; this makes it ten times rarer on top of that, never skipped.
MIDDLE_COLLECTIONS_PER_FULL = 100


def settle_after_startup() -> None:
    """Takes what startup built out of every later collection (`gc.freeze`, after one collection
    so that no garbage is frozen with it) and spaces out the full collections."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, MIDDLE_COLLECTIONS_PER_FULL)
