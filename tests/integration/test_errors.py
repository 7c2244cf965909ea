"""Every error the framework raises leaves in the DESIGN §10 JSON shape with the right status."""

from __future__ import annotations

from litestar import get

from app.api.app import create_app
from tests.conftest import app_client
from tests.support.factories import new_tenant


def assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.text
    return body


async def test_unknown_route_is_404_json(client):
    assert_error_shape(await client.get("/v1/nothing-here"), 404, "not_found")


async def test_wrong_method_is_405_json(client):
    assert_error_shape(await client.put("/healthz"), 405, "method_not_allowed")


async def test_malformed_json_is_400_json(client, db):
    tenant = await new_tenant(db)
    response = await client.post(
        "/v1/keys",
        content=b'{"name": ',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert_error_shape(response, 400, "malformed_json")


async def test_wrong_field_type_is_400_json(client, db):
    tenant = await new_tenant(db)
    response = await client.post("/v1/keys", json={"scopes": "admin"}, headers=tenant.headers)
    body = assert_error_shape(response, 400, "invalid_request")
    assert "scopes" in body["message"]


async def test_oversized_body_is_413_json(settings, db):
    settings.max_request_bytes = 1024
    tenant = await new_tenant(db)
    async with app_client(create_app(settings, db)) as client:
        response = await client.post("/v1/keys", json={"name": "x" * 5000}, headers=tenant.headers)
    assert_error_shape(response, 413, "body_too_large")


async def test_handler_that_raises_is_500_without_stack_trace(settings, db, capfd):
    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail sw_live_" + "ab" * 16)

    app = create_app(settings, db)
    app.register(boom)
    async with app_client(app) as client:
        response = await client.get("/boom")
    body = assert_error_shape(response, 500, "internal_error")
    assert "secret internal detail" not in response.text
    assert body == {
        "error": "internal_error",
        "message": "the server could not complete the request",
    }
    logged = capfd.readouterr().err
    assert "unhandled_error" in logged
    assert "ab" * 16 not in logged


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready"


async def test_openapi_document_and_docs_page(client):
    schema = (await client.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.")
    assert "/v1/keys" in schema["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_unreachable_database_is_503_json(engine_name, settings, tmp_path):
    url = (
        f"sqlite+aiosqlite:///{tmp_path}/missing/dir/simwire.db"
        if engine_name == "sqlite"
        else "postgresql+asyncpg://simwire@127.0.0.1:9/simwire"  # nothing listens there
    )
    gone = settings.model_copy(update={"database_url": url})
    key = {"Authorization": "Bearer sw_live_" + "0" * 32}
    async with app_client(create_app(gone)) as http:
        response = await http.get("/v1/project", headers=key)
    assert_error_shape(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
