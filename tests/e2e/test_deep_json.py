"""JSON nested 100,000 deep, sent to every route that takes a body and down the phone socket of
a real server process: each is a 400 `invalid_body` (or an `error` frame) and the process keeps
serving. Without the guard the decoder overflowed the C stack and the process died (SIGSEGV)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from litestar.routes import ASGIRoute, HTTPRoute

from app.api.app import create_app
from app.services import devices
from app.settings import Settings
from tests.support.factories import TenantKeys, new_tenant
from tests.support.live import eventually
from tests.support.processes import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DEPTH = 100_000
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
DEEP_BODIES = {
    "arrays": "[" * DEPTH + "]" * DEPTH,
    "objects": '{"a":' * DEPTH + "1" + "}" * DEPTH,
    "inside a valid body": '{"to": "+14155550100", "message": "hi", "x": '
    + "[" * DEPTH
    + "]" * DEPTH
    + "}",
    "unclosed": "[" * DEPTH,
}


@pytest.fixture
def engine_name() -> str:
    return "sqlite"  # the guard runs before any database work


@pytest.fixture
def server_process(settings: Settings, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        settings.database_url,
        {"SIMWIRE_RATE_LIMITS": "false", "SIMWIRE_SECRET_KEY": "k" * 32},
        tmp_path / "server.log",
    )
    try:
        yield server
    finally:
        server.stop()


def body_routes(settings: Settings) -> list[tuple[str, str, bool]]:
    """(method, path with placeholders filled, whether the handler decodes a body) for every
    route of the app that may take a body."""
    routes = []
    for route in create_app(settings).routes:
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                for method in sorted(set(handler.http_methods) & BODY_METHODS):
                    routes.append((method, path, "data" in handler.parsed_fn_signature.parameters))
        elif isinstance(route, ASGIRoute):
            routes.append(("POST", path, False))
    return routes


@pytest.fixture
async def http(server_process: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server_process.url, timeout=30) as client:

        async def ready() -> bool:
            assert server_process.alive, "the server process exited"
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout_s=30)
        yield client


async def test_deeply_nested_bodies_are_refused_on_every_route_and_the_server_lives(
    settings, db, server_process, http
):
    tenant: TenantKeys = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    routes = body_routes(settings)
    decoding = {(m, p) for m, p, decodes in routes if decodes}
    assert {("POST", "/v1/messages"), ("POST", "/v1/quotes"), ("POST", "/v1/phone/inbound")} <= (
        decoding
    )
    answers = {}
    for method, path, decodes in routes:
        token = paired.token if path.startswith("/v1/phone") else tenant.key
        for name, body in DEEP_BODIES.items():
            response = await http.request(
                method,
                path,
                content=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            answers[(method, path, name)] = response.status_code
            assert response.status_code < 500, (method, path, name, response.text)
            assert server_process.alive, f"server died on {method} {path}"
            if decodes:
                assert response.status_code == 400, (method, path, name, response.text)
                error = response.json()
                assert error["error"] == "invalid_body", error
                assert "32 levels" in error["message"]
    assert len(answers) >= len(DEEP_BODIES) * len(decoding)
    # Still serving, and ordinary bodies still decode.
    assert (await http.get("/healthz")).status_code == 200
    quote = await http.post("/v1/quotes", json={"to": "+14155550100", "message": "[{still}] ok"})
    assert quote.status_code == 200, quote.text


async def test_deeply_nested_phone_frame_is_an_error_frame_and_the_socket_stays(
    db, server_process, http
):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    ws_url = server_process.url.replace("http://", "ws://") + "/v1/phone/ws"
    async with websockets.connect(f"{ws_url}?token={paired.token}") as socket:

        async def next_frame(kind: str) -> dict:
            while True:
                frame = json.loads(await socket.recv())
                if frame["type"] == kind:
                    return frame

        await next_frame("connected")
        # 30,000 levels: the size that crashed the server, within the 64 KiB frame limit.
        for deep in ("[" * 30_000 + "]" * 30_000, '{"type":"sims","sims":' + "[" * 30_000):
            await socket.send(deep)
            error = await next_frame("error")
            assert error["code"] == "invalid_frame" and "32 levels" in error["message"]
            assert server_process.alive
        await socket.send(
            json.dumps(
                {
                    "type": "inbound",
                    "message": {"id": "after-deep", "address": "+15550001", "body": "[[hi]]"},
                }
            )
        )
        assert (await next_frame("inbound_ack"))["id"] == "after-deep"
    assert (await http.get("/healthz")).status_code == 200


def test_server_process_keeps_a_safe_recursion_limit(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from app.api.app import create_app\n"
        "from app.settings import Settings\n"
        # What py_ecc does at import (eth-account pulls it in with some versions).
        "sys.setrecursionlimit(100_000)\n"
        "raised = sys.getrecursionlimit()\n"
        f"create_app(Settings(database_url='sqlite+aiosqlite:///{tmp_path}/probe.db'))\n"
        "print(raised, sys.getrecursionlimit())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) > 1000  # raised as py_ecc raises it at import...
    assert int(out[1]) == 1000  # ...and creating the app puts it back
