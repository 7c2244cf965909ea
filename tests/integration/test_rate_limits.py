"""Request rate limits over real HTTP requests (the app through an ASGI client, and a live
server for the phone socket), with a movable clock instead of waiting."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.api.app import create_app
from app.api.ratelimit import ClientAddresses
from app.db.engine import Database
from app.services import devices
from app.settings import Settings
from tests.support.factories import new_tenant
from tests.support.live import fast_settings, live_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def limited_app(
    settings: Settings, db: Database, **limits: object
) -> AsyncIterator[tuple[Clock, httpx.AsyncClient]]:
    app = create_app(settings.model_copy(update={"rate_limits": True, **limits}), db)
    clock = Clock()
    app.state["rate_limits"].clock = clock
    async with _client(app, "198.51.100.7") as http:
        yield clock, http


@asynccontextmanager
async def _client(app: object, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(address, 40_000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://simwire.test") as http:
        yield http


def assert_rate_limited(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "rate_limited" and body["limit"] == limit and body["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert body["retry_after_s"] == int(response.headers["retry-after"])
    for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        assert response.headers[header].isdigit()


async def test_a_key_over_its_budget_gets_429_with_retry_after_and_ratelimit_headers(settings, db):
    tenant, other = await new_tenant(db, "acme"), await new_tenant(db, "globex")
    async with limited_app(settings, db, rate_limit_key_per_s=1.0, rate_limit_key_burst=3) as (
        clock,
        http,
    ):
        remaining = []
        for _ in range(3):
            response = await http.get("/v1/project", headers=tenant.headers)
            assert response.status_code == 200
            assert response.headers["ratelimit-limit"] == "3"
            remaining.append(response.headers["ratelimit-remaining"])
        assert remaining == ["2", "1", "0"]
        refused = await http.get("/v1/project", headers=tenant.headers)
        assert_rate_limited(refused, "api_key")
        assert refused.headers["retry-after"] == "1"
        # Another key (even from the same address) has its own budget.
        assert (await http.get("/v1/project", headers=other.headers)).status_code == 200
        # X-Api-Key is the same key, so the same budget.
        same = await http.get("/v1/project", headers={"X-Api-Key": tenant.key})
        assert same.status_code == 429
        clock.advance(1.0)
        assert (await http.get("/v1/project", headers=tenant.headers)).status_code == 200
        assert (await http.get("/v1/project", headers=tenant.headers)).status_code == 429


async def test_anonymous_callers_are_limited_per_client_address(settings, db):
    app = create_app(
        settings.model_copy(
            update={"rate_limits": True, "rate_limit_ip_per_s": 2.0, "rate_limit_ip_burst": 2}
        ),
        db,
    )
    clock = Clock()
    app.state["rate_limits"].clock = clock
    async with _client(app, "198.51.100.7") as first, _client(app, "203.0.113.9") as second:
        assert [(await first.get("/openapi.json")).status_code for _ in range(2)] == [200, 200]
        assert_rate_limited(await first.get("/openapi.json"), "client_address")
        assert (await second.get("/openapi.json")).status_code == 200
        # Health probes are never limited.
        assert (await first.get("/healthz")).status_code == 200
        clock.advance(0.5)
        assert (await first.get("/openapi.json")).status_code == 200


async def test_made_up_keys_do_not_buy_fresh_budgets_on_routes_that_ignore_them(settings, db):
    tenant = await new_tenant(db)
    async with limited_app(settings, db, rate_limit_ip_per_s=1.0, rate_limit_ip_burst=3) as (
        clock,
        http,
    ):
        # A real key, once it authenticated, counts only against its own budget.
        assert (await http.get("/v1/project", headers=tenant.headers)).status_code == 200
        for i in range(2):
            made_up = {"Authorization": f"Bearer sw_live_{i:032x}"}
            assert (await http.get("/openapi.json", headers=made_up)).status_code == 200
        made_up = {"Authorization": f"Bearer sw_live_{9:032x}"}
        assert_rate_limited(await http.get("/openapi.json", headers=made_up), "client_address")
        assert_rate_limited(await http.get("/openapi.json?token=anything"), "client_address")
        assert (await http.get("/v1/project", headers=tenant.headers)).status_code == 200


async def test_wrong_keys_from_one_address_are_refused_before_they_are_checked(settings, db):
    tenant = await new_tenant(db, "acme")
    late = await new_tenant(db, "globex")
    async with limited_app(settings, db, rate_limit_auth_failures_per_minute=3) as (clock, http):
        # A key that authenticated before the guessing started keeps working.
        assert (await http.get("/v1/project", headers=tenant.headers)).status_code == 200
        wrong = {"Authorization": "Bearer sw_live_" + "0" * 32}
        for _ in range(3):
            assert (await http.get("/v1/project", headers=wrong)).status_code == 401
        assert_rate_limited(await http.get("/v1/project", headers=wrong), "auth_failures")
        guessed = {"X-Api-Key": "sw_live_" + "1" * 32}
        assert_rate_limited(
            await http.post("/v1/messages", json={}, headers=guessed), "auth_failures"
        )
        # A key never seen from here waits like a guess would; the known one does not.
        assert (await http.get("/v1/project", headers=late.headers)).status_code == 429
        assert (await http.get("/v1/project", headers=tenant.headers)).status_code == 200
        # Without a key the address is not held back: the key check is what is limited.
        assert (await http.get("/openapi.json")).status_code == 200
        clock.advance(20.0)  # 3 per minute: one failure is forgiven every 20 s
        assert (await http.get("/v1/project", headers=late.headers)).status_code == 200


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(settings, db):
    app = create_app(
        settings.model_copy(
            update={
                "rate_limits": True,
                "rate_limit_ip_per_s": 1.0,
                "rate_limit_ip_burst": 1,
                "trusted_proxies": ["10.0.0.0/8"],
            }
        ),
        db,
    )
    app.state["rate_limits"].clock = Clock()
    async with _client(app, "10.1.2.3") as proxy, _client(app, "192.0.2.50") as direct:
        # Behind the proxy: each forwarded client has its own budget (the rightmost
        # untrusted hop is the client; what it claims further left is ignored).
        for client_ip in ("198.51.100.1", "198.51.100.2"):
            headers = {"X-Forwarded-For": f"6.6.6.6, {client_ip}, 10.9.9.9"}
            assert (await proxy.get("/openapi.json", headers=headers)).status_code == 200
        again = {"X-Forwarded-For": "7.7.7.7, 198.51.100.1"}
        assert_rate_limited(await proxy.get("/openapi.json", headers=again), "client_address")
        # From an untrusted peer the header means nothing: a new value is not a new client.
        assert (
            await direct.get("/openapi.json", headers={"X-Forwarded-For": "1.1.1.1"})
        ).status_code == 200
        assert (
            await direct.get("/openapi.json", headers={"X-Forwarded-For": "2.2.2.2"})
        ).status_code == 429


def test_client_address_reads_forwarded_for_only_from_trusted_peers():
    addresses = ClientAddresses(["10.0.0.0/8", "::1"])

    def of(peer: str, forwarded: str | None) -> str:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return addresses.of({"client": (peer, 1), "headers": headers})  # type: ignore[arg-type,typeddict-item]

    assert of("192.0.2.1", "198.51.100.1") == "192.0.2.1"
    assert of("10.0.0.1", "198.51.100.1") == "198.51.100.1"
    assert of("10.0.0.1", "198.51.100.1, 10.0.0.2") == "198.51.100.1"
    assert of("10.0.0.1", "10.0.0.3, 10.0.0.2") == "10.0.0.3"
    assert of("10.0.0.1", "not-an-address, 10.0.0.2") == "10.0.0.2"
    assert of("10.0.0.1", None) == "10.0.0.1"
    assert of("::1", "2001:db8::5") == "2001:db8::5"


async def test_anonymous_quotes_are_limited_per_address(settings, db):
    async with limited_app(settings, db, rate_limit_quotes_per_minute=2) as (clock, http):
        quote = {"to": "+14155550100", "message": "hello"}
        assert [(await http.post("/v1/quotes", json=quote)).status_code for _ in range(2)] == [
            200,
            200,
        ]
        assert_rate_limited(await http.post("/v1/quotes", json=quote), "quotes")
        clock.advance(30.0)
        assert (await http.post("/v1/quotes", json=quote)).status_code == 200


async def test_402_answers_are_limited_per_caller(settings, db):
    broke = await new_tenant(db, "broke")
    send = {"to": "+14155550100", "message": "hello"}
    async with limited_app(settings, db, rate_limit_quotes_per_minute=2) as (clock, http):
        for _ in range(2):
            response = await http.post("/v1/messages", json=send, headers=broke.headers)
            assert response.status_code == 402
        assert_rate_limited(
            await http.post("/v1/messages", json=send, headers=broke.headers), "quotes"
        )
        # Other requests of the same key are not affected.
        assert (await http.get("/v1/project", headers=broke.headers)).status_code == 200
        clock.advance(30.0)
        response = await http.post("/v1/messages", json=send, headers=broke.headers)
        assert response.status_code == 402


async def test_rate_limits_false_turns_every_limit_off(settings, db):
    tenant = await new_tenant(db)
    app = create_app(
        settings.model_copy(
            update={
                "rate_limits": False,
                "rate_limit_key_burst": 1,
                "rate_limit_ip_burst": 1,
                "rate_limit_auth_failures_per_minute": 1,
                "rate_limit_quotes_per_minute": 1,
            }
        ),
        db,
    )
    async with _client(app, "198.51.100.7") as http:
        wrong = {"Authorization": "Bearer sw_live_" + "0" * 32}
        for _ in range(5):
            assert (await http.get("/v1/project", headers=tenant.headers)).status_code == 200
            assert (await http.get("/v1/project", headers=wrong)).status_code == 401
            assert (await http.get("/openapi.json")).status_code == 200
            quote = await http.post("/v1/quotes", json={"to": "+14155550100", "message": "x"})
            assert quote.status_code == 200
            assert "ratelimit-limit" not in quote.headers


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
async def test_wrong_device_tokens_are_refused_at_the_phone_socket_handshake(settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    limited = fast_settings(settings, rate_limits=True, rate_limit_auth_failures_per_minute=2)
    async with live_server(limited, db) as server:
        good = f"{server.ws_url}?token={paired.token}"
        async with connect(good) as socket:
            assert json.loads(await socket.recv())["type"] == "connected"
        bad = f"{server.ws_url}?token=sw_dev_{'0' * 32}"
        for _ in range(2):
            async with connect(bad) as socket:
                with pytest.raises(ConnectionClosed) as closed:
                    await socket.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        with pytest.raises(InvalidStatus) as refused:
            async with connect(bad):
                pass
        response = refused.value.response
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert b"rate_limited" in response.body
        # The phone that connected before the guessing started still gets in.
        async with connect(good) as socket:
            assert json.loads(await socket.recv())["type"] == "connected"
