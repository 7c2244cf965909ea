"""Which webhook URLs and target addresses Simwire will call: the shape of a URL and the
address classes refused as SSRF targets (pure rules; resolving names is app/webhooks/ssrf.py)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.domain.errors import InvalidInput

MAX_URL_LENGTH = 2048

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
URL_PATTERN = (
    rf"^https?://(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
    r"(?:[/?#][!-~]*)?$"
)
"""An http(s) URL whose host is a DNS name of letters, digits and hyphens or an IP literal,
with an optional port and printable-ASCII rest: what the API documents and accepts."""
_URL = re.compile(URL_PATTERN)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Cloud instance-metadata services that are not already link-local or private.
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}


class InvalidWebhookUrl(InvalidInput):
    code = "invalid_url"

    def __init__(self, reason: str) -> None:
        super().__init__(f"`url` {reason}", param="url")


class WebhookUrlNotAllowed(InvalidInput):
    """A well-formed URL that Simwire refuses to call (SSRF rules); `reason` says why."""

    code = "webhook_url_not_allowed"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"webhook URL {url!r} is not allowed: {reason}", param="url", reason=reason
        )


@dataclass(frozen=True)
class WebhookUrl:
    url: str
    scheme: str
    host: str
    """Without brackets for an IPv6 literal."""
    port: int


def parse_webhook_url(url: str) -> WebhookUrl:
    """The parts of an absolute http(s) URL with a host, or InvalidWebhookUrl."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(char.isspace() or ord(char) < 32 for char in url):
        raise InvalidWebhookUrl("must be an ASCII URL without spaces or control characters")
    if not _URL.match(url):
        raise InvalidWebhookUrl(
            "is not an http(s) URL with a host name or IP address, such as https://example.com/hook"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidWebhookUrl("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhookUrl("must be an absolute http(s) URL such as https://example.com/hook")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl("must not carry a user name or password")
    default_port = 443 if parts.scheme == "https" else 80
    return WebhookUrl(url, parts.scheme, parts.hostname, port or default_port)


def as_address(host: str) -> IpAddress | None:
    """The IP address a host names literally, else None (a name to resolve)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_refusal(address: IpAddress) -> str | None:
    """Why `address` is not a public target, or None when it is. An IPv4-mapped IPv6 address
    is judged as the IPv4 address it maps."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA:
        return f"{address} is a cloud metadata address"
    if address.is_unspecified:
        return f"{address} is an unspecified address"
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return f"{address} is a shared (CGNAT) address"
    if address.is_private:
        return f"{address} is a private address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None
