"""Sends one webhook POST the way Simwire may: the endpoint's host is resolved once, at send
time; unless private targets are allowed every address it resolves to must be public; the
connection goes to the address that was checked (the IP in the URL, the name in `Host` and in
TLS SNI, so the certificate is still verified for the name), so a second lookup can never swap
in another address (DNS rebinding). Redirects are not followed and at most 64 KiB of an answer
is read."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.domain.webhook_urls import (
    InvalidWebhookUrl,
    IpAddress,
    address_refusal,
    as_address,
    parse_webhook_url,
)
from app.webhooks.ssrf import resolve

MAX_RESPONSE_BYTES = 64 * 1024
MAX_ERROR_CHARS = 500
# Connections are pooled per endpoint origin and address, never across names: a connection
# made (and its certificate verified) for one name must not carry a request for another.
MAX_POOLS = 256
CONNECTIONS_PER_POOL = 8
USER_AGENT = "Simwire-Webhooks/1"

Resolver = Callable[[str, int], Awaitable[list[IpAddress]]]


@dataclass(frozen=True)
class SendResult:
    """What one attempt came to: the status the endpoint answered (None when it did not
    answer), an error saying what went wrong (None for a 2xx), and how long it took."""

    status_code: int | None
    error: str | None
    latency_ms: int

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None


class TargetRefused(Exception):
    """The endpoint's URL or the address it resolves to may not be called; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Target:
    url: str
    """The endpoint URL with the checked IP address in place of the host name."""
    host_header: str
    extensions: dict[str, Any] = field(default_factory=dict)

    @property
    def pool_key(self) -> tuple[str, str]:
        return (self.url.split("/", 3)[2], self.host_header)


class WebhookClient:
    """One per delivery worker. `resolver` and `verify` are for tests (a name no DNS knows, a
    test certificate authority); `allow_private` is `SIMWIRE_WEBHOOK_ALLOW_PRIVATE`."""

    def __init__(
        self,
        allow_private: bool,
        timeout_s: float,
        resolver: Resolver = resolve,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self._resolve = resolver
        self._verify = verify
        self._pools: OrderedDict[tuple[str, str], httpx.AsyncClient] = OrderedDict()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
        """POSTs `body` (JSON) with `headers` to `url`. Never raises for anything the network
        or the endpoint does: every outcome is a SendResult."""
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                target = await self._target(url)
                status = await self._send(target, body, headers)
        except TargetRefused as refused:
            error = f"not sent: {refused.reason}"
        except TimeoutError:
            error = f"no answer within {self.timeout_s:g} s"
        except httpx.ConnectError as exc:
            error = f"could not connect: {_describe(exc)}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {_describe(exc)}"
        except OSError as exc:
            error = f"could not connect: {_describe(exc)}"
        latency_ms = round((time.perf_counter() - started) * 1000)
        if error is None and status is not None and not 200 <= status < 300:
            error = (
                f"answered {status}: redirects are not followed"
                if 300 <= status < 400
                else f"answered {status}"
            )
        return SendResult(status, error[:MAX_ERROR_CHARS] if error else None, latency_ms)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()

    async def _target(self, url: str) -> _Target:
        try:
            parsed = parse_webhook_url(url)
        except InvalidWebhookUrl as exc:
            raise TargetRefused(str(exc)) from None
        if not self.allow_private and parsed.scheme != "https":
            raise TargetRefused("only https URLs are allowed")
        literal = as_address(parsed.host)
        addresses = (
            [literal] if literal is not None else await self._resolve(parsed.host, parsed.port)
        )
        if not addresses:
            raise TargetRefused(f"host {parsed.host!r} does not resolve")
        if not self.allow_private:
            for address in addresses:
                refusal = address_refusal(address)
                if refusal is not None:
                    raise TargetRefused(
                        refusal if literal is not None else f"{parsed.host!r} resolves to {refusal}"
                    )
        address = addresses[0]
        parts = urlsplit(url)
        shown = f"[{address}]" if isinstance(address, IPv6Address) else str(address)
        pinned = urlunsplit(
            (parts.scheme, f"{shown}:{parsed.port}", parts.path or "/", parts.query, "")
        )
        extensions: dict[str, Any] = {}
        if parsed.scheme == "https" and literal is None:
            extensions["sni_hostname"] = parsed.host.rstrip(".")
        return _Target(pinned, parts.netloc, extensions)

    async def _send(self, target: _Target, body: bytes, headers: dict[str, str]) -> int:
        pool = self._pool(target)
        request = pool.build_request(
            "POST",
            target.url,
            content=body,
            headers={
                **headers,
                "Host": target.host_header,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
            extensions=target.extensions,
        )
        response = await pool.send(request, stream=True, follow_redirects=False)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= MAX_RESPONSE_BYTES:
                    break  # the rest is never read; closing drops the connection
        finally:
            await response.aclose()
        return response.status_code

    def _pool(self, target: _Target) -> httpx.AsyncClient:
        key = target.pool_key
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        pool = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s),
            verify=self._verify,
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would resolve the name again
            limits=httpx.Limits(
                max_connections=CONNECTIONS_PER_POOL,
                max_keepalive_connections=CONNECTIONS_PER_POOL,
            ),
        )
        self._pools[key] = pool
        if len(self._pools) > MAX_POOLS:
            _key, oldest = self._pools.popitem(last=False)
            task = asyncio.get_running_loop().create_task(oldest.aclose())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        return pool


_closing: set[asyncio.Task[None]] = set()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
