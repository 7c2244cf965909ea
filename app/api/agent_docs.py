"""The agents' front door: `/llms.txt`, `/llms-full.txt`, the error guide at `/docs/errors`,
and the `docs_url` every 4xx error body carries (a link to its code's entry there)."""

from __future__ import annotations

import html
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings

DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
LLMS_TEMPLATE = Path(__file__).resolve().parent / "llms.txt"
ERRORS_PATH = "/docs/errors"
# The pages /llms-full.txt joins, in reading order.
FULL_REFERENCE = ("agents.md", "api.md", "payments.md", "errors.md")


def public_base(settings: Settings, scope: Scope | None = None, request: Any = None) -> str:
    """This server's absolute base URL: `SIMWIRE_PUBLIC_URL`, else the one the request came
    to (scheme and Host header)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    if request is not None:
        return str(request.base_url).rstrip("/")
    assert scope is not None
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1")
    if not host:
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}"


def docs_url(base: str, code: str) -> str:
    return f"{base}{ERRORS_PATH}#{code}"


class ErrorDocsMiddleware(ASGIMiddleware):
    """Adds `docs_url` to every 4xx JSON error body (`{"error": code, ...}`), whoever wrote
    it: exception handlers, the x402 offers and refusals, the rate limiter. Other responses
    pass through untouched and unbuffered."""

    scopes = ("http",)  # type: ignore[assignment]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_with_docs(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                given = dict(message.get("headers") or [])
                content_type = given.get(b"content-type", b"")
                if 400 <= message["status"] < 500 and content_type.startswith(b"application/json"):
                    start = message
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _with_docs_url(b"".join(chunks), public_base(self.settings, scope))
            kept: list[tuple[bytes, bytes]] = [
                (name, value)
                for name, value in start.get("headers") or []  # type: ignore[attr-defined]
                if name.lower() != b"content-length"
            ]
            kept.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": kept})  # type: ignore[arg-type]
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await next_app(scope, receive, send_with_docs)


def _with_docs_url(body: bytes, base: str) -> bytes:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), str):
        return body
    parsed.setdefault("docs_url", docs_url(base, parsed["error"]))
    return json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()


@cache
def _read(name: str) -> str:
    return (DOCS_DIR / name).read_text(encoding="utf-8")


def _with_base(text: str, base: str) -> str:
    return text.replace("{BASE_URL}", base)


@get("/llms.txt", include_in_schema=False, media_type=MediaType.TEXT)
async def llms_txt(request: Request[Any, Any, Any], settings: Settings) -> str:
    """What Simwire is and the three shortest ways in (llmstxt.org format)."""
    return _with_base(
        LLMS_TEMPLATE.read_text(encoding="utf-8"), public_base(settings, request=request)
    )


@get("/llms-full.txt", include_in_schema=False, media_type=MediaType.TEXT)
async def llms_full_txt(request: Request[Any, Any, Any], settings: Settings) -> str:
    """The whole API reference as one text: agents, HTTP API, payments, errors."""
    base = public_base(settings, request=request)
    parts = [_with_base(LLMS_TEMPLATE.read_text(encoding="utf-8"), base)]
    parts += [f"\n\n<!-- docs/{name} -->\n\n" + _read(name) for name in FULL_REFERENCE]
    return "".join(parts)


@get(ERRORS_PATH + ".md", include_in_schema=False, media_type="text/markdown")
async def errors_markdown() -> str:
    """docs/errors.md as written."""
    return _read("errors.md")


@get(ERRORS_PATH, include_in_schema=False, media_type=MediaType.HTML)
async def errors_page() -> Response[str]:
    """docs/errors.md as HTML, one anchor per error code (`#content_blocked`)."""
    return Response(_errors_html(), media_type=MediaType.HTML)


_CODE_SPAN = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    return _CODE_SPAN.sub(r"<code>\1</code>", html.escape(text, quote=False))


@cache
def _errors_html() -> str:
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Simwire errors</title>",
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:2rem auto;"
        "padding:0 1rem}code{background:#f3f3f3;padding:0 .2em}h3{margin-bottom:.2em}</style>",
        "</head><body>",
    ]
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    for line in _read("errors.md").splitlines():
        heading = re.match(r"^(#{1,3}) (.*)$", line)
        if heading:
            flush()
            level, title = len(heading.group(1)), heading.group(2).strip()
            anchor = f" id='{html.escape(title)}'" if level == 3 else ""
            out.append(f"<h{level}{anchor}>{_inline(title)}</h{level}>")
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
    flush()
    out.append("</body></html>")
    return "\n".join(out)


AGENT_DOC_ROUTES = [llms_txt, llms_full_txt, errors_markdown, errors_page]
