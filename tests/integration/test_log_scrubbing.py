"""Secrets never reach the log, as written or percent-encoded, wherever they sit in an event."""

from __future__ import annotations

import json
import logging

import websockets

from app.logs import get_logger
from app.services import devices
from tests.support.factories import new_tenant
from tests.support.live import eventually, fast_settings, live_server


async def test_percent_encoded_device_token_authenticates_and_is_never_logged(settings, db, capfd):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    secret_hex = paired.token.removeprefix("sw_dev_")
    encoded = paired.token.replace("_", "%5F")
    captured: list[str] = []

    def output() -> str:
        out, err = capfd.readouterr()
        captured.append(out + err)
        return "".join(captured)

    async with live_server(fast_settings(settings), db) as server:
        async with websockets.connect(f"{server.ws_url}?token={encoded}") as socket:
            connected = json.loads(await socket.recv())
            assert connected["type"] == "connected"
            assert connected["device_id"] == paired.device.id
        # The server's own line for the socket carries the query string as sent.
        await eventually(lambda: '"WebSocket /v1/phone/ws?token=' in output())
        # Events of our own loggers and of stdlib ones, the secret nested and in either form.
        get_logger("simwire.test").info(
            "probe",
            url=f"/v1/phone/ws?token={encoded}",
            nested={"seen": [paired.token, {"again": f"token={encoded}&x=1"}]},
            as_tuple=(encoded,),
        )
        logging.getLogger("uvicorn.error").info("raw %s and %s", encoded, paired.token)
        await eventually(lambda: "raw " in output() and '"probe"' in output())

    raw = output()
    events = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
    text = raw + "\n".join(json.dumps(event, ensure_ascii=False) for event in events)
    assert secret_hex[:12] not in text and encoded not in text
    accepted = next(e["event"] for e in events if "[accepted]" in e["event"])
    assert '"WebSocket /v1/phone/ws?token=sw%5Fdev%5F…"' in accepted
    probe = next(e for e in events if e["event"] == "probe")
    assert probe["url"] == "/v1/phone/ws?token=sw%5Fdev%5F…"
    assert probe["nested"] == {
        "seen": ["sw_dev_" + secret_hex[:4] + "…", {"again": "token=sw%5Fdev%5F…&x=1"}]
    }
    assert probe["as_tuple"] == ["sw%5Fdev%5F…"]
    assert any(e["event"] == f"raw sw%5Fdev%5F… and sw_dev_{secret_hex[:4]}…" for e in events)
