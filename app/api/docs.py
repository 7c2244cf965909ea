"""The API explorer at /docs: Swagger UI from assets this server serves itself (PyPI
`swagger-ui-bundle-v2`), so it works on a box without internet access."""

from __future__ import annotations

from litestar import Router
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

ASSETS_PATH = "/docs/assets"


def docs_assets_router() -> Router:
    """Swagger UI's scripts, stylesheet and icons under ASSETS_PATH."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[swagger_ui_path],
        name="docs_assets",
        include_in_schema=False,
    )


def swagger_plugin() -> SwaggerRenderPlugin:
    """The Swagger UI page, pointing at our own copies instead of Litestar's CDN defaults
    (which include the favicon)."""
    return SwaggerRenderPlugin(
        path="/",
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )
