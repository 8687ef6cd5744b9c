"""The catalog web page, server-side: filters, a model's page, the gallery, escaping."""

from __future__ import annotations

import html
from typing import Any

from serve_support import HOSTILE_NAME, Library


def test_index_lists_and_filters(client: Any, library: Library) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"{len(library.ids)} of {len(library.ids)} models" in page.text
    sdxl = client.get("/", params={"family": "sdxl"}).text
    assert "xl-detail" in sdxl and "ft-mse" not in sdxl and "1 of" in sdxl
    assert '<option value="sdxl" selected>' in sdxl
    unsafe = client.get("/", params={"audit": "unsafe"}).text
    assert "free-model" in unsafe and "xl-detail" not in unsafe
    assert "vae" in client.get("/", params={"kind": "vae"}).text


def test_model_page_shows_evidence_findings_and_addons(client: Any, library: Library) -> None:
    checkpoint = client.get(f"/models/{library.ids['tiny-sd1']}").text
    assert "Compatible add-ons" in checkpoint and "ft-mse" in checkpoint
    assert "sha256" in checkpoint and "autov2" in checkpoint
    hostile = client.get(f"/models/{library.ids['free-model']}").text
    assert "os.system" in hostile and "unsafe" in hostile
    lora = client.get(f"/models/{library.ids['xl-detail']}").text
    assert 'id="evidence"' in lora
    assert "add-ons are checked against a checkpoint" in lora


def test_html_in_a_file_name_is_escaped(client: Any, library: Library) -> None:
    escaped = html.escape(HOSTILE_NAME, quote=False)[: len("&lt;script&gt;alert(")]
    for url in ("/", f"/models/{library.ids[HOSTILE_NAME]}", "/?kind=lora"):
        text = client.get(url).text
        assert HOSTILE_NAME not in text, url
        assert "<script>alert" not in text, url
        assert escaped in text, url
    assert client.get("/", params={"q": "<b>x</b>"}).text.count("<b>x</b>") == 0


def test_gallery_without_images(client: Any) -> None:
    page = client.get("/gallery")
    assert page.status_code == 200 and "No images yet" in page.text


def test_page_errors_are_pages_and_api_errors_stay_json(client: Any) -> None:
    page = client.get("/models/999999", headers={"accept": "text/html"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "no model has the id 999999" in page.text and "Traceback" not in page.text
    api = client.get("/api/models/999999", headers={"accept": "text/html"})
    assert api.status_code == 404 and api.json()["error"] == "no model has the id 999999"
    assert client.get("/models/999999").json()["hint"]  # no Accept: JSON
