"""The phone socket's own way in (app/api/phone_door.py, app/hub/socket.py): a connected phone
holds nothing of the web framework, the path works as the framework's routes did, and a failure
while connecting closes the socket with 1011 and leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

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


@dataclass
class OnePhone:
    hub: Any
    paired: Any
    socket: websockets.ClientConnection
    protocol: WebSocketProtocol
    connection: Any


@contextlib.asynccontextmanager
async def _one_phone(settings, db) -> AsyncIterator[OnePhone]:
    """A server with one paired phone connected and ready, and its socket's protocol."""
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(settings, db) as server:
        hub = server.app.state["hub"]
        socket = await _connect(server.ws_url, paired.token)
        await eventually(lambda: any(c.ready for c in hub.connections.values()))
        [protocol] = [o for o in gc.get_objects() if isinstance(o, WebSocketProtocol)]
        yield OnePhone(hub, paired, socket, protocol, hub.connections[paired.device.id])


async def test_heartbeats_are_taken_as_they_arrive_and_the_rest_comes_in_order(hub_settings, db):
    async with _one_phone(hub_settings, db) as phone:
        hub, paired, socket, protocol = phone.hub, phone.paired, phone.socket, phone.protocol
        assert protocol.text_hook is not None
        queued: list[str] = []
        put_nowait = protocol.queue.put_nowait

        def watch(event):  # observes what goes through the socket's ASGI queue
            queued.append(event.get("text", event["type"]))
            put_nowait(event)

        protocol.queue.put_nowait = watch
        connection = phone.connection
        heard_before = connection.heard_at
        for battery in range(1, 21):
            heartbeat = {"type": "heartbeat", "battery": battery, "charging": battery % 2 == 0}
            await socket.send(json.dumps(heartbeat))
        auth = json.dumps({"type": "auth", "token": paired.token})
        await socket.send(auth)
        answer = json.loads(await asyncio.wait_for(socket.recv(), 5))
        assert answer["code"] == "already_authenticated"
        # Twenty heartbeats noted without the queue; the auth frame went through it.
        assert (connection.battery, connection.charging, connection.signal) == (20, True, None)
        assert connection.heard_at > heard_before and connection.seen_at is not None
        assert queued == [auth]
        # A heartbeat the hub cannot take is answered as before, after the frame ahead of it.
        bad = json.dumps({"type": "heartbeat", "battery": 101})
        await socket.send(auth)
        await socket.send(bad)
        answers = [json.loads(await asyncio.wait_for(socket.recv(), 5)) for _ in range(2)]
        assert [a["code"] for a in answers] == ["already_authenticated", "invalid_frame"]
        assert queued == [auth, auth, bad] and connection.battery == 20
        await socket.close()
        await eventually(lambda: not hub.connections)
        assert protocol.text_hook is None


async def test_a_heartbeat_read_whole_skips_the_frame_parser_and_the_rest_does_not(
    hub_settings, db
):
    """A read that is one whole heartbeat frame (7-bit or 16-bit length) is taken without
    websockets' parser; a fragmented heartbeat, two frames in one read and any other frame go
    through the parser and are handled as before."""
    async with _one_phone(hub_settings, db) as phone:
        socket, protocol, connection = phone.socket, phone.protocol, phone.connection
        parsed: list[bytes] = []
        receive_data = protocol.conn.receive_data

        def watch(data: bytes) -> None:  # observes what reaches websockets' parser
            parsed.append(data)
            receive_data(data)

        protocol.conn.receive_data = watch
        for battery in range(1, 6):
            padding = " " * (200 if battery % 2 else 0)  # 16-bit lengths, 7-bit ones
            await socket.send(f'{{"type": "heartbeat", "battery": {battery}{padding}}}')
            await eventually(lambda battery=battery: connection.battery == battery)
        assert parsed == []
        await socket.send(iter(['{"type": "heart', 'beat", "battery": 41}']))  # fragmented
        await eventually(lambda: connection.battery == 41)
        assert len(parsed) >= 1
        both = parsed.copy()
        # Two frames written at once arrive in one read: the parser splits them.
        transport = socket.transport
        socket.protocol.send_text(b'{"type": "heartbeat", "battery": 42}')
        socket.protocol.send_text(b'{"type": "heartbeat", "battery": 43}')
        transport.write(b"".join(socket.protocol.data_to_send()))
        await eventually(lambda: connection.battery == 43)
        assert len(parsed) > len(both)
        await socket.send(json.dumps({"type": "auth", "token": phone.paired.token}))
        answer = json.loads(await asyncio.wait_for(socket.recv(), 5))
        assert answer["code"] == "already_authenticated"
        await socket.send('{"type": "heartbeat", "battery": 44}')
        await eventually(lambda: connection.battery == 44)
        # An unmasked frame is still the parser's, which refuses it (1002).
        unmasked = b'{"type": "heartbeat", "battery": 45}'
        transport.write(bytes([0x81, len(unmasked)]) + unmasked)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
        assert connection.battery == 44
