"""Simwire's MCP server at /mcp through the official MCP SDK client over real sockets, on both
databases: the tools are listed with schemas, each acts as the key's project with its scopes,
and `wait_for_sms` answers the moment a phone's SMS is stored, or times out cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from app.services import credits, devices
from tests.support.factories import new_tenant
from tests.support.live import LiveServer, fast_settings, live_server, start_phone

TOOLS = {
    "quote_sms",
    "send_sms",
    "get_request",
    "get_message",
    "list_messages",
    "wait_for_sms",
    "list_sims",
    "get_balance",
}


@contextlib.asynccontextmanager
async def mcp_session(
    server: LiveServer | str, headers: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    """The official client: `streamable_http_client` + `ClientSession`, initialized."""
    url = (server.url if isinstance(server, LiveServer) else server) + "/mcp"
    async with (
        create_mcp_http_client(headers=headers or {}) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def body_of(result: Any) -> dict[str, Any]:
    """A tool result's JSON: its structured content, which its text repeats."""
    text = "".join(getattr(part, "text", "") for part in result.content)
    parsed = json.loads(text)
    if getattr(result, "structured_content", None) is not None:
        assert result.structured_content == parsed
    return parsed


async def test_official_client_lists_the_tools_and_calls_each_as_the_keys_project(
    settings, db, tmp_path
) -> None:
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)
    paired = await devices.pair_device(db, tenant.project_id, "pixel")
    async with live_server(fast_settings(settings), db) as server:
        phone = await start_phone(server, paired.token, tmp_path / "phone")
        try:
            async with mcp_session(server, tenant.headers) as session:
                listed = await session.list_tools()
                tools = {tool.name: tool for tool in listed.tools}
                assert set(tools) == TOOLS
                for tool in tools.values():
                    assert tool.description and len(tool.description) > 40
                    assert tool.input_schema["type"] == "object"
                assert {"to", "message"} <= set(tools["send_sms"].input_schema["required"])
                assert {"sim", "tag", "callback_url"} <= set(
                    tools["send_sms"].input_schema["properties"]
                )

                quote = body_of(
                    await session.call_tool("quote_sms", {"to": "+14155550100", "message": "hi"})
                )
                assert quote["total"] == "0.035" and quote["segment_count"] == 1

                sent = await session.call_tool(
                    "send_sms", {"to": ["+14155550100"], "message": "Table ready", "tag": "t"}
                )
                assert not sent.is_error, sent.content
                accepted = body_of(sent)
                assert accepted["request_id"].startswith("req_")
                [message] = accepted["messages"]

                async def delivered() -> bool:
                    got = body_of(await session.call_tool("get_message", {"id": message["id"]}))
                    return got["status"] == "delivered"

                from tests.support.live import eventually

                await eventually(delivered, timeout_s=20)
                request = body_of(
                    await session.call_tool("get_request", {"request_id": accepted["request_id"]})
                )
                assert request["status"] == "all_delivered" and request["total"] == 1

                listed_out = body_of(
                    await session.call_tool("list_messages", {"direction": "out", "limit": 5})
                )
                assert [m["id"] for m in listed_out["data"]] == [message["id"]]

                sims = body_of(await session.call_tool("list_sims", {}))
                assert sims["online_devices"] == 1 and len(sims["live_sims"]) == 1

                balance = body_of(await session.call_tool("get_balance", {}))
                assert balance["balance_atomic"] == 1_000_000 - 35_000

                waited = body_of(
                    await session.call_tool("wait_for_sms", {"timeout_s": 0.2, "contains": "x"})
                )
                assert waited == {
                    "received": False,
                    "timed_out": True,
                    "timeout_s": 0.2,
                    "message": None,
                }
        finally:
            await phone.stop()
    assert [s.to for s in phone.radio.sent] == ["+14155550100"]


async def test_a_weaker_key_gets_tool_errors_naming_the_missing_scope(settings, db) -> None:
    reader = await new_tenant(db, "reader", scopes=["messages.read"])
    async with live_server(settings, db) as server, mcp_session(server, reader.headers) as session:
        refused = {}
        for name, args in [
            ("send_sms", {"to": "+14155550100", "message": "hi"}),
            ("list_sims", {}),
            ("get_balance", {}),
        ]:
            result = await session.call_tool(name, args)
            assert result.is_error
            refused[name] = body_of(result)
        allowed = await session.call_tool("list_messages", {})
        no_key = None
        async with mcp_session(server) as anonymous:
            no_key = await anonymous.call_tool("get_message", {"id": "msg_x"})

    assert {name: body["required_scope"] for name, body in refused.items()} == {
        "send_sms": "messages.send",
        "list_sims": "numbers.read",
        "get_balance": "credits.read",
    }
    for body in refused.values():
        assert body["error"] == "forbidden" and "scope" in body["message"]
        assert body["docs_url"].endswith("/docs/errors#forbidden")
        assert "Traceback" not in json.dumps(body)
    assert not allowed.is_error and body_of(allowed)["data"] == []
    assert no_key.is_error and body_of(no_key)["error"] == "unauthorized"


async def test_wait_for_sms_returns_an_inbound_within_a_second_of_its_storage(
    settings, db, tmp_path
) -> None:
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id, "pixel")
    async with live_server(fast_settings(settings), db) as server:
        phone = await start_phone(server, paired.token, tmp_path / "phone")
        try:
            async with mcp_session(server, tenant.headers) as session:
                # From this moment on: the SMS below may be stored before the call reaches
                # the server (a loaded machine), and must still be found.
                since = datetime.now(UTC).isoformat()
                waiting = asyncio.create_task(
                    session.call_tool(
                        "wait_for_sms",
                        {
                            "from": "+14155550123",
                            "pattern": r"\b\d{6}\b",
                            "timeout_s": 30,
                            "since": since,
                        },
                    )
                )
                # A message that does not match is passed over; the code that follows is it.
                await phone.radio.receive("+14155550999", "Your code is 111111")
                await phone.radio.receive("+14155550123", "no digits here")
                await phone.radio.receive("+14155550123", "Your code is 481516")
                result = await asyncio.wait_for(waiting, timeout=20)
                answered = time.monotonic()
        finally:
            await phone.stop()
    body = body_of(result)
    assert body["received"] is True and body["message"]["body"] == "Your code is 481516"
    assert body["message"]["direction"] == "in" and body["message"]["from"] == "+14155550123"
    async with db.sessions() as session_db:
        from sqlalchemy import select

        from app.db.models import Message

        stored = (
            await session_db.execute(select(Message).where(Message.id == body["message"]["id"]))
        ).scalar_one()
    stored_at = stored.created_at.timestamp()
    # The answer left within a second of the row's commit (wall clocks of one machine).
    assert time.time() - (time.monotonic() - answered) - stored_at < 1.0
