"""Token buckets: how many requests (or frames) a caller may make now, given a steady rate and a
burst. Pure arithmetic over a time the caller passes in; the buckets live in this process."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Refill arithmetic in floats: a bucket this close to a whole token holds it, so waiting the
# advertised time is always enough.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Rate:
    """`per_s` tokens come back every second, up to `burst` (also the size of a first burst)."""

    per_s: float
    burst: int

    @classmethod
    def per_minute(cls, count: int, burst: int | None = None) -> Rate:
        return cls(per_s=count / 60.0, burst=burst if burst is not None else count)

    @property
    def window_s(self) -> float:
        """The time an empty bucket takes to fill up again."""
        return self.burst / self.per_s if self.per_s > 0 else math.inf


@dataclass(frozen=True)
class Decision:
    """The outcome of taking (or looking at) one bucket, in the terms of the `RateLimit-*`
    headers: `limit` (burst), `remaining` whole tokens, `reset_s` until the bucket is full
    again, and `retry_after_s` until the next token when `allowed` is False."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float


class Buckets:
    """One token bucket per key (a client address, an API key hash, a device id), at most
    `max_keys` of them: a bucket that has filled up again is forgotten, as it would behave
    exactly like a new one, and past the bound the oldest buckets go first."""

    def __init__(self, rate: Rate, max_keys: int = 100_000) -> None:
        if rate.per_s <= 0 or rate.burst < 1:
            raise ValueError("a rate needs per_s > 0 and burst >= 1")
        self.rate = rate
        self.max_keys = max_keys
        # key -> [tokens, at]: the tokens the bucket held at time `at`.
        self._state: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._state)

    def _tokens(self, key: str, now: float) -> float:
        state = self._state.get(key)
        if state is None:
            return float(self.rate.burst)
        tokens, at = state
        return min(float(self.rate.burst), tokens + max(0.0, now - at) * self.rate.per_s)

    def _decision(self, tokens: float, allowed: bool, cost: float) -> Decision:
        rate = self.rate
        missing = max(0.0, cost - tokens)
        return Decision(
            allowed=allowed,
            limit=rate.burst,
            remaining=max(0, math.floor(tokens)),
            reset_s=(rate.burst - tokens) / rate.per_s,
            retry_after_s=0.0 if allowed else missing / rate.per_s,
        )

    def peek(self, key: str, now: float, cost: float = 1.0) -> Decision:
        """Whether `cost` tokens are there, without taking them."""
        tokens = self._tokens(key, now)
        return self._decision(tokens, tokens + _EPSILON >= cost, cost)

    def take(self, key: str, now: float, cost: float = 1.0) -> Decision:
        """Takes `cost` tokens if the bucket holds them; else takes nothing and says when."""
        tokens = self._tokens(key, now)
        allowed = tokens + _EPSILON >= cost
        if allowed:
            tokens -= cost
            if key not in self._state and len(self._state) >= self.max_keys:
                self._prune(now)
            self._state[key] = [tokens, now]
        return self._decision(tokens, allowed, cost)

    def charge(self, key: str, now: float, cost: float = 1.0) -> Decision:
        """Takes `cost` tokens even if that leaves the bucket in debt (an event that already
        happened, such as a failed authentication, is counted in full); the decision says
        whether one more would still be allowed."""
        tokens = self._tokens(key, now) - cost
        if key not in self._state and len(self._state) >= self.max_keys:
            self._prune(now)
        self._state[key] = [max(tokens, -float(self.rate.burst)), now]
        return self._decision(tokens, tokens + _EPSILON >= 1, 1.0)

    def _prune(self, now: float) -> None:
        full = [key for key in self._state if self._tokens(key, now) >= self.rate.burst]
        for key in full:
            del self._state[key]
        excess = len(self._state) - self.max_keys // 2
        if excess > 0:  # still crowded: the oldest entries (insertion order) go
            for key in list(self._state)[:excess]:
                del self._state[key]
