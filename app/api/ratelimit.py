"""Request rate limits: per API key (or device token), per client address for anonymous
callers, on failed authentications per address, and on new quotes and 402 offers. Over a
budget: 429 `rate_limited` with `Retry-After` and `RateLimit-*` headers. Counts live in this
process (docs/operations.md says what that means behind a load balancer)."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import msgspec
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.domain.ratelimit import Buckets, Decision, Rate
from app.settings import Settings

# Close code of a phone socket whose token matched nothing (app/hub/protocol.py).
_CLOSE_INVALID_TOKEN = 4401
# Set in the connection's state by app/api/auth.py once a presented key authenticated.
AUTHENTICATED_FLAG = "simwire_key_authenticated"
_OFFER_ROUTES = ("/v1/messages", "/v1/credits/topup")
_PAYMENT_HEADERS = (b"payment-signature", b"x-payment", b"x-payment-tx")
_NOT_LIMITED = ("/healthz", "/readyz")


class ClientAddresses:
    """The client's address: the socket peer, or, only when that peer is one of the trusted
    proxies, the nearest untrusted hop of `X-Forwarded-For` (read right to left, as each proxy
    appends the address it saw). Anyone can send the header; only a trusted proxy is believed."""

    def __init__(self, trusted_proxies: list[str]) -> None:
        self._networks = [ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies]
        self._trusted: dict[str, bool] = {}

    def is_trusted(self, address: str) -> bool:
        known = self._trusted.get(address)
        if known is None:
            try:
                parsed = ipaddress.ip_address(address)
            except ValueError:
                known = False
            else:
                known = any(parsed in network for network in self._networks)
            if len(self._trusted) > 10_000:
                self._trusted.clear()
            self._trusted[address] = known
        return known

    def of(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else ""
        if not self._networks or not self.is_trusted(peer):
            return peer
        forwarded = [
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
        ]
        hops = [hop.strip() for hop in ",".join(forwarded).split(",") if hop.strip()]
        nearest = peer
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return nearest  # garbage before a trusted hop: the last address we can believe
            if not self.is_trusted(hop):
                return hop
            nearest = hop
        return nearest


def bucket_of_address(address: str) -> str:
    """IPv6 clients are counted per /64, the block one subscriber usually holds."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    except ValueError:
        return address


class RequestLimits:
    """Every request budget of this process and the clock they are counted with."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = settings.rate_limits
        self.clock = clock
        self.addresses = ClientAddresses(settings.trusted_proxies)
        self.per_key = Buckets(Rate(settings.rate_limit_key_per_s, settings.rate_limit_key_burst))
        self.per_address = Buckets(Rate(settings.rate_limit_ip_per_s, settings.rate_limit_ip_burst))
        self.auth_failures = Buckets(Rate.per_minute(settings.rate_limit_auth_failures_per_minute))
        self.offers = Buckets(Rate.per_minute(settings.rate_limit_quotes_per_minute))
        # Hashes of keys that authenticated lately: their holders are not held back by someone
        # else guessing keys from the same address.
        self._known_keys: dict[str, None] = {}

    def key_is_known(self, key_id: str) -> bool:
        return key_id in self._known_keys

    def note_key(self, key_id: str, authenticated: bool) -> None:
        if authenticated:
            if len(self._known_keys) >= 100_000:
                self._known_keys.clear()
            self._known_keys[key_id] = None
        else:
            self._known_keys.pop(key_id, None)


def _credential(scope: Scope) -> str | None:
    """The presented API key or device token, as `app/api/auth.py` and the hub read it."""
    api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                return rest.strip()
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip() or None
    if api_key is None and b"token=" in scope.get("query_string", b""):
        tokens = parse_qs(scope["query_string"].decode("latin-1")).get("token")
        return tokens[0] if tokens else None
    return api_key


def _key_id(credential: str) -> str:
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _has_payment(scope: Scope) -> bool:
    return any(name in _PAYMENT_HEADERS for name, _ in scope["headers"])


def limit_headers(decision: Decision, window_s: float) -> list[tuple[bytes, bytes]]:
    """`RateLimit-Limit/Remaining/Reset` (and the policy) as Litestar's RateLimitConfig
    writes them; Reset is whole seconds until the bucket is full."""
    return [
        (b"ratelimit-policy", f"{decision.limit}; w={math.ceil(window_s)}".encode()),
        (b"ratelimit-limit", str(decision.limit).encode()),
        (b"ratelimit-remaining", str(decision.remaining).encode()),
        (b"ratelimit-reset", str(math.ceil(decision.reset_s)).encode()),
    ]


def retry_after_s(decision: Decision) -> int:
    return max(1, math.ceil(decision.retry_after_s))


class RateLimitMiddleware(ASGIMiddleware):
    """Applies `RequestLimits` to every route's HTTP requests and phone socket handshakes."""

    scopes = ("http", "websocket")  # type: ignore[assignment]
    exclude_path_pattern = _NOT_LIMITED

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        limits = self.limits
        if not limits.enabled:
            await next_app(scope, receive, send)
            return
        now = limits.clock()
        address = bucket_of_address(limits.addresses.of(scope))
        credential = _credential(scope)
        is_socket = scope["type"] == "websocket"
        key_id = _key_id(credential) if credential is not None else None
        known = key_id is not None and limits.key_is_known(key_id)
        if not known and (key_id is not None or is_socket):
            failures = limits.auth_failures.peek(address, now)
            if not failures.allowed:
                await self._refuse(
                    scope,
                    send,
                    failures,
                    limits.auth_failures.rate.window_s,
                    "auth_failures",
                    "too many failed authentications from this address",
                )
                return
        if not known:
            # A key not seen to authenticate counts as anonymous too: random keys sent to a
            # route that never checks them must not each buy a fresh budget.
            anonymous = limits.per_address.take(address, now)
            if not anonymous.allowed:
                await self._refuse(
                    scope,
                    send,
                    anonymous,
                    limits.per_address.rate.window_s,
                    "client_address",
                    "too many requests for this client address",
                )
                return
        if key_id is not None:
            budget, name, who = limits.per_key, "api_key", key_id
        else:
            budget, name, who = limits.per_address, "client_address", address
        primary = budget.take(who, now) if key_id is not None else anonymous
        if not primary.allowed:
            await self._refuse(
                scope,
                send,
                primary,
                budget.rate.window_s,
                name,
                f"too many requests for this {name.replace('_', ' ')}",
            )
            return
        offer = self._offer_decision(scope, key_id, address, now)
        if offer is not None and not offer.allowed:
            await self._refuse(
                scope,
                send,
                offer,
                limits.offers.rate.window_s,
                "quotes",
                "too many quotes and payment offers; pay one you have or wait",
            )
            return
        headers = limit_headers(primary, budget.rate.window_s)
        status = 0
        closed_code = 0
        token_accepted = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, closed_code, token_accepted
            event: Any = message
            if event["type"] == "http.response.start":
                status = event["status"]
                event = {**event, "headers": [*event.get("headers", []), *headers]}
            elif event["type"] == "websocket.send" and key_id is not None and not token_accepted:
                # The hub sends nothing before the device token matched (`connected` first).
                token_accepted = True
                limits.note_key(key_id, authenticated=True)
            elif event["type"] == "websocket.close":
                closed_code = event.get("code", 1000)
            await send(event)

        try:
            await next_app(scope, receive, send_with_headers)
        finally:
            self._after(scope, address, key_id, status, closed_code)

    def _offer_decision(
        self, scope: Scope, key_id: str | None, address: str, now: float
    ) -> Decision | None:
        """An anonymous quote takes from the offer budget up front; a request that may be
        answered with a 402 offer only needs some left (the 402 itself is counted after)."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            return None
        path = scope["path"].rstrip("/")
        if path == "/v1/quotes":
            return self.limits.offers.take(address, now) if key_id is None else None
        if path in _OFFER_ROUTES and not _has_payment(scope):
            return self.limits.offers.peek(key_id or address, now)
        return None

    def _after(
        self, scope: Scope, address: str, key_id: str | None, status: int, closed_code: int
    ) -> None:
        limits = self.limits
        now = limits.clock()
        if status == 402:
            limits.offers.charge(key_id or address, now)
        if (status == 401 and key_id is not None) or closed_code == _CLOSE_INVALID_TOKEN:
            limits.auth_failures.charge(address, now)
            if key_id is not None:
                limits.note_key(key_id, authenticated=False)
        elif key_id is not None and scope.get("state", {}).get(AUTHENTICATED_FLAG):
            limits.note_key(key_id, authenticated=True)

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        decision: Decision,
        window_s: float,
        limit: str,
        message: str,
    ) -> None:
        retry = retry_after_s(decision)
        body = msgspec.json.encode(
            {"error": "rate_limited", "message": message, "retry_after_s": retry, "limit": limit}
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry).encode()),
            *limit_headers(decision, window_s),
        ]
        events: list[Any]
        if scope["type"] == "http":
            events = [
                {"type": "http.response.start", "status": 429, "headers": headers},
                {"type": "http.response.body", "body": body},
            ]
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            events = [
                {"type": "websocket.http.response.start", "status": 429, "headers": headers},
                {"type": "websocket.http.response.body", "body": body},
            ]
        else:
            events = [{"type": "websocket.close", "code": 1008, "reason": message}]
        for event in events:
            await send(event)
