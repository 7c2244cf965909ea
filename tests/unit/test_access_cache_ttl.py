"""The access cache never serves an entry past its TTL, and a read that raced a change does
not store what it read."""

from __future__ import annotations

from app.services.access_cache import AccessCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_served_until_its_ttl_and_never_after():
    clock = Clock()
    cache = AccessCache(ttl_s=1.0, clock=clock)
    cache.keys.put("hash", "context")
    clock.now += 0.999
    assert cache.keys.get("hash") == "context"
    clock.now += 0.001
    assert cache.keys.get("hash") is None


def test_a_change_drops_the_keys_and_policy_it_names_and_moves_the_generation():
    cache = AccessCache(ttl_s=60.0)
    cache.keys.put("a", "context a")
    cache.keys.put("b", "context b")
    cache.policies.put("prj_1", "policy")
    before = cache.generation
    cache.apply({"key_hashes": ["a"], "project_id": "prj_1"})
    assert cache.keys.get("a") is None and cache.policies.get("prj_1") is None
    assert cache.keys.get("b") == "context b"
    assert cache.generation == before + 1


def test_a_zero_ttl_caches_nothing():
    cache = AccessCache(ttl_s=0)
    cache.keys.put("a", "context")
    assert cache.keys.get("a") is None
