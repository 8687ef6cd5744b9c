"""/docs works offline: Swagger UI's script, style and icon come from the package, not a CDN."""

from __future__ import annotations

import re
from typing import Any

from modelsafe.serve.app import HERE, SWAGGER_UI_STATIC, SWAGGER_UI_VERSION

ASSET_TYPES = {
    "swagger-ui-bundle.js": ("text/javascript", "application/javascript"),
    "swagger-ui.css": ("text/css",),
    "favicon-32x32.png": ("image/png",),
}


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_docs_page_references_only_local_assets(client: Any) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "SwaggerUIBundle(" in html and 'id="swagger-ui"' in html
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html
    assert not re.search(r"(?:https?:)?//", html), "the page names another host"
    assert sorted(_asset_urls(html)) == sorted(
        f"{SWAGGER_UI_STATIC}/{name}" for name in ASSET_TYPES
    )


def test_docs_assets_are_served_from_the_package(client: Any) -> None:
    for name, types in ASSET_TYPES.items():
        response = client.get(f"{SWAGGER_UI_STATIC}/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].split(";")[0] in types, name
        assert response.content == (HERE / "static" / "swagger-ui" / name).read_bytes()
    bundle = (HERE / "static" / "swagger-ui" / "swagger-ui-bundle.js").read_text()
    assert "SwaggerUIBundle" in bundle
    readme = (HERE / "static" / "swagger-ui" / "README.txt").read_text()
    assert f"swagger-ui-dist {SWAGGER_UI_VERSION}" in readme
    assert (HERE / "static" / "swagger-ui" / "LICENSE").is_file()


def test_docs_follow_the_root_path(make_client: Any) -> None:
    """Behind a proxy that mounts the app under a prefix, every URL on the page keeps it."""
    client = make_client()
    html = client.get("/docs").text
    client.app.root_path = "/ms"  # what uvicorn's --root-path sets
    try:
        prefixed = client.get("/docs").text
    finally:
        client.app.root_path = ""
    assert "url: '/ms/openapi.json'" in prefixed
    assert all(u.startswith("/ms/static/swagger-ui/") for u in _asset_urls(prefixed))
    assert html != prefixed


def test_redoc_is_off(client: Any) -> None:
    assert client.get("/redoc").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert "/docs" not in paths and "/redoc" not in paths
