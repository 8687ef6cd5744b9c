"""The catalog web page, server-side: filters, a model's page, the gallery, escaping."""

from __future__ import annotations

import html
from typing import Any

from serve_support import HOSTILE_NAME, Library, job_spec


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


def test_jobs_page_lists_jobs_with_their_outcome(make_client: Any, library: Library) -> None:
    from modelsafe.errors import ModelsafeError
    from modelsafe.runtime.jobs.store import claim, finish
    from modelsafe.testing.queues import RecordingQueue

    client = make_client(queue=RecordingQueue())
    assert "No jobs" in client.get("/jobs").text
    queued = client.post("/api/jobs", json=job_spec(library.tiny, prompt="<b>a red</b> cube"))
    failing = client.post("/api/jobs", json=job_spec(library.tiny, prompt="a blue cube"))
    assert queued.status_code == failing.status_code == 201, failing.text
    catalog = client.app.state.ms.catalog
    held = claim(catalog, failing.json()["id"], "worker-a", 60)
    assert held is not None
    error = ModelsafeError("the tokenizer folder is gone", hint="pass --tokenizers DIR")
    assert finish(catalog, held, error=error)

    page = client.get("/jobs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "2 jobs" in page.text and '<a href="/jobs">Jobs</a>' in page.text
    assert "&lt;b&gt;a red&lt;/b&gt; cube" in page.text and "<b>a red" not in page.text
    assert "the tokenizer folder is gone" in page.text and "pass --tokenizers DIR" in page.text
    assert "worker-a" in page.text and library.tiny.single.name in page.text
    # Only the queued job can be cancelled (app.js shows the button; no token on this server).
    assert page.text.count('class="cancel-job"') == 1
    assert f'data-job="{queued.json()["id"]}"' in page.text
    assert 'data-token-required="0"' in page.text
    failed = client.get("/jobs", params={"status": "failed"}).text
    assert "1 job<" in failed and "a blue cube" in failed and "a red" not in failed
    assert '<option value="failed" selected>' in failed
    assert "No jobs with status done" in client.get("/jobs", params={"status": "done"}).text
    bad = client.get("/jobs", params={"status": "exploded"}, headers={"accept": "text/html"})
    assert bad.status_code == 400 and "unknown job status" in bad.text
