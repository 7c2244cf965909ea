"""The phone socket's own way in (app/api/phone_door.py, app/hub/socket.py): a connected phone
holds nothing of the web framework, the path works as the framework's routes did, and a failure
while connecting closes the socket with 1011 and leaves nothing behind."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest
import websockets

from app.hub.ws_protocol import WebSocketProtocol
from app.services import devices
from tests.support.factories import new_tenant
from tests.support.live import eventually, fast_settings, live_server

PHONES = 20


@pytest.fixture
def hub_settings(settings):
    return fast_settings(settings)


def _framework_objects() -> int:
    """Objects of Litestar's classes, and suspended coroutines of its code, alive now."""
    count = 0
    for obj in gc.get_objects():
        module = getattr(type(obj), "__module__", None)
        is_coroutine = type(obj).__name__ == "coroutine"
        if (isinstance(module, str) and module.startswith("litestar")) or (
            is_coroutine and "/litestar/" in obj.cr_code.co_filename
        ):
            count += 1
    return count


async def _connect(ws_url: str, token: str) -> websockets.ClientConnection:
    socket = await websockets.connect(f"{ws_url}?token={token}")
    assert json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] == "connected"
    await socket.send(json.dumps({"type": "hello", "sims": [{"slot": 0}]}))
    return socket


async def test_a_connected_phone_holds_nothing_of_the_web_framework(hub_settings, db):
    tenant = await new_tenant(db)
    tokens = [(await devices.pair_device(db, tenant.project_id)).token for _ in range(PHONES)]
    async with live_server(hub_settings, db) as server:
        hub = server.app.state["hub"]
        gc.collect()
        before = _framework_objects()
        sockets = [await _connect(server.ws_url, token) for token in tokens]
        try:
            await eventually(lambda: all(c.ready for c in hub.connections.values()))
            assert len(hub.connections) == PHONES
            gc.collect()
            # Through the framework's router each phone held a WebSocket, its scope state, a
            # dependency cleanup group and the route's coroutines: three or more per phone.
            assert _framework_objects() - before < PHONES
        finally:
            for socket in sockets:
                await socket.close()


async def test_a_connected_phone_keeps_no_handshake_on_the_server(hub_settings, db):
    tenant = await new_tenant(db)
    tokens = [(await devices.pair_device(db, tenant.project_id)).token for _ in range(PHONES)]
    async with live_server(hub_settings, db) as server:
        sockets = [await _connect(server.ws_url, token) for token in tokens]
        try:
            protocols = [o for o in gc.get_objects() if isinstance(o, WebSocketProtocol)]
            assert len(protocols) == PHONES
            for protocol in protocols:
                # uvicorn's own protocol keeps the request and the 101 response for good.
                assert getattr(protocol, "response", None) is None
                assert getattr(protocol, "request", None) is None
                assert protocol.scope["query_string"]  # the scope, its own copy, stays
            # Each phone still talks: a frame in, an answer out.
            await sockets[0].send(json.dumps({"type": "auth", "token": tokens[0]}))
            answer = json.loads(await asyncio.wait_for(sockets[0].recv(), 5))
            assert answer["type"] == "error" and answer["code"] == "already_authenticated"
        finally:
            for socket in sockets:
                await socket.close()


async def test_the_phone_path_with_a_trailing_slash_is_the_phone_socket(hub_settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(hub_settings, db) as server:
        socket = await _connect(server.ws_url + "/", paired.token)
        await socket.close()


@pytest.mark.parametrize("step", ["authenticate_device", "device_connected"])
async def test_a_failure_while_connecting_closes_1011_and_leaves_no_phone_behind(
    hub_settings, db, monkeypatch, step
):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)

    async def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(devices, step, broken)
    async with live_server(hub_settings, db) as server:
        hub = server.app.state["hub"]
        socket = await websockets.connect(f"{server.ws_url}?token={paired.token}")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        # Not left registered (before, a failure here left the phone in the hub's table).
        await eventually(lambda: not hub.connections)
