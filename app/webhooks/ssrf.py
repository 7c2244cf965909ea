"""SSRF rules applied to a webhook URL: https only and public addresses only, unless the
operator allows private targets (`SIMWIRE_WEBHOOK_ALLOW_PRIVATE`)."""

from __future__ import annotations

import asyncio
import socket

from app.domain.webhook_urls import (
    IpAddress,
    WebhookUrl,
    WebhookUrlNotAllowed,
    address_refusal,
    as_address,
    parse_webhook_url,
)

RESOLVE_TIMEOUT_S = 5.0


async def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address `host` resolves to; an empty list when it does not resolve in time."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError, UnicodeError):
        return []
    found: list[IpAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = as_address(str(sockaddr[0]).split("%", 1)[0])
        if address is not None and address not in found:
            found.append(address)
    return found


async def check_webhook_url(url: str, allow_private: bool) -> WebhookUrl:
    """`url` parsed, when Simwire may call it. InvalidWebhookUrl for a malformed URL;
    WebhookUrlNotAllowed (saying why) for `http`, or a host that is or resolves to any
    non-public address, or does not resolve, unless `allow_private`."""
    parsed = parse_webhook_url(url)
    if allow_private:
        return parsed
    if parsed.scheme != "https":
        raise WebhookUrlNotAllowed(url, "only https URLs are allowed")
    literal = as_address(parsed.host)
    addresses = [literal] if literal is not None else await resolve(parsed.host, parsed.port)
    if not addresses:
        raise WebhookUrlNotAllowed(url, f"host {parsed.host!r} does not resolve")
    for address in addresses:
        refusal = address_refusal(address)
        if refusal is not None:
            reason = refusal if literal is not None else f"{parsed.host!r} resolves to {refusal}"
            raise WebhookUrlNotAllowed(url, reason)
    return parsed
