"""Sends one webhook POST the way Simwire may: the endpoint's host is resolved when a
connection is made, by the connection's own resolver, which refuses (unless private targets
are allowed) a name with any address that is not public and hands the connection the addresses
it checked, so no second lookup can swap in another address (DNS rebinding); TLS still names
the host, so its certificate is verified for the name. Redirects are not followed and at most
64 KiB of an answer is read."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv6Address

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

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
CONNECTIONS_PER_HOST = 16
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


class _CheckedResolver(AbstractResolver):
    """The only name lookup a connection makes: what it returns is what was checked, and the
    connection goes there (the TLS handshake still names the host, so its certificate is
    verified for the name)."""

    def __init__(self, lookup: Resolver, allow_private: bool) -> None:
        self._lookup = lookup
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._lookup(host, port)
        if not addresses:
            raise TargetRefused(f"host {host!r} does not resolve")
        if not self._allow_private:
            for address in addresses:
                refusal = address_refusal(address)
                if refusal is not None:
                    raise TargetRefused(f"{host!r} resolves to {refusal}")
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


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
        self._resolver = _CheckedResolver(resolver, allow_private)
        self._verify = verify
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
        """POSTs `body` (JSON) with `headers` to `url`. Never raises for anything the network
        or the endpoint does: every outcome is a SendResult."""
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                self._check(url)
                status = await self._send(url, body, headers)
        except TargetRefused as refused:
            error = f"not sent: {refused.reason}"
        except TimeoutError:
            error = f"no answer within {self.timeout_s:g} s"
        except aiohttp.ClientConnectorError as exc:
            error = f"could not connect: {_describe(exc.os_error)}"
        except aiohttp.ClientError as exc:
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
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _check(self, url: str) -> None:
        """The checks a URL's own text allows: its shape, its scheme, and an address given
        literally (a name is checked when it is resolved, by the connection's resolver)."""
        try:
            parsed = parse_webhook_url(url)
        except InvalidWebhookUrl as exc:
            raise TargetRefused(str(exc)) from None
        if self.allow_private:
            return
        if parsed.scheme != "https":
            raise TargetRefused("only https URLs are allowed")
        literal = as_address(parsed.host)
        if literal is not None:
            refusal = address_refusal(literal)
            if refusal is not None:
                raise TargetRefused(refusal)

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        session = self._session or self._open()
        async with session.post(
            url,
            data=body,
            headers={**headers, "Content-Type": "application/json", "User-Agent": USER_AGENT},
            allow_redirects=False,
        ) as response:
            read = 0
            while read < MAX_RESPONSE_BYTES:
                chunk = await response.content.read(MAX_RESPONSE_BYTES - read)
                if not chunk:
                    break
                read += len(chunk)
            if not response.content.at_eof():
                response.close()  # the rest is never read: drop the connection
            return response.status

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            use_dns_cache=False,  # every new connection resolves, and is checked, afresh
            limit=0,
            limit_per_host=CONNECTIONS_PER_HOST,
            ssl=self._verify,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s + 1),
            trust_env=False,  # a proxy from the environment would resolve the name again
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )
        return self._session


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
