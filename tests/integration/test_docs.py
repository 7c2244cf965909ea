"""`/docs` is a Swagger UI page whose every asset this server serves itself (a self-hosted or
air-gapped box has no CDN), and whose Authorize button has the key schemes to offer."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from app.api.app import create_app
from tests.conftest import app_client
from tests.support.factories import new_tenant

# src="…", href='…' and CSS url(…) references.
_REFERENCE = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+))""")


def references(text: str) -> list[str]:
    return [a or b for a, b in _REFERENCE.findall(text) if not (a or b).startswith("data:")]


async def test_docs_page_loads_swagger_ui_only_from_this_server(client):
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = references(page.text)
    assert {urlsplit(url).path.rsplit("/", 1)[-1] for url in assets} >= {
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-ui.css",
    }
    assert "SwaggerUIBundle(" in page.text
    # Nothing on the page points anywhere else: no scheme, no host, no protocol-relative URL.
    assert not re.search(r"(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page.text.split("spec:")[0])
    for url in assets:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        served = await client.get(url)
        assert served.status_code == 200 and served.content, url
        if url.endswith(".js"):
            assert "javascript" in served.headers["content-type"], url
        if url.endswith(".css"):
            assert served.headers["content-type"].startswith("text/css")
            for inner in references(served.text):
                assert not urlsplit(inner).netloc, inner  # fonts and images: local too


async def test_the_explorer_offers_both_key_schemes_and_both_headers_authenticate(client, db):
    spec = (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerKey"] == schemes["bearerKey"] | {"type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"] == schemes["apiKeyHeader"] | {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
    }
    send = spec["paths"]["/v1/messages"]["post"]
    assert {"bearerKey": []} in send["security"] and {"apiKeyHeader": []} in send["security"]
    page = (await client.get("/docs")).text
    assert '"securitySchemes"' in page  # the page embeds the same document
    inline = json.loads(page.split("spec:", 1)[1].split(",\n", 1)[0].strip())
    assert inline["components"]["securitySchemes"] == schemes

    # What Swagger UI sends after Authorize with each scheme is accepted.
    tenant = await new_tenant(db)
    for headers in ({"Authorization": f"Bearer {tenant.key}"}, {"X-Api-Key": tenant.key}):
        answered = await client.get("/v1/project", headers=headers)
        assert answered.status_code == 200, answered.text


async def test_the_openapi_document_is_encoded_once_not_per_request(settings, db, monkeypatch):
    app = create_app(settings, db)
    async with app_client(app) as client:
        first = await client.get("/openapi.json")
        assert first.status_code == 200 and first.headers["content-type"] == "application/json"
        encodings: list[object] = []
        original = type(app.openapi_schema).to_schema

        def counted(self):  # type: ignore[no-untyped-def]
            encodings.append(self)
            return original(self)

        monkeypatch.setattr(type(app.openapi_schema), "to_schema", counted)
        again = [await client.get("/openapi.json") for _ in range(3)]
    assert encodings == []  # every later request is served the document made for the first
    assert all(r.content == first.content for r in again)
    assert first.json()["paths"]["/v1/messages"]["post"]["operationId"]
