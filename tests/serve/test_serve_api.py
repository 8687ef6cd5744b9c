"""The HTTP API on a real scanned catalog: reads, resolve/plan, errors, tokens, jobs end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from serve_support import HOSTILE_NAME, Library, job_spec

from modelsafe.errors import UsageError
from modelsafe.testing.queues import RecordingQueue


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= {"error", "hint"} and body["error"]
    assert "Traceback" not in response.text
    return body


def test_list_models_filters(client: Any, library: Library) -> None:
    every = client.get("/api/models").json()
    assert every["total"] == len(library.ids) == len(every["items"])
    loras = client.get("/api/models", params={"kind": "lora"}).json()["items"]
    assert {m["name"] for m in loras} == {"sd1-style", "xl-detail", HOSTILE_NAME}
    sdxl = client.get("/api/models", params={"family": "sdxl"}).json()["items"]
    assert [m["name"] for m in sdxl] == ["xl-detail"]
    unsafe = client.get("/api/models", params={"audit": "unsafe"}).json()["items"]
    assert [m["name"] for m in unsafe] == ["free-model"]
    found = client.get("/api/models", params={"q": "MSE"}).json()["items"]
    assert [m["name"] for m in found] == ["ft-mse"]
    page = client.get("/api/models", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == every["total"] and page["items"] == every["items"][1:3]
    assert client.get("/api/models", params={"status": "missing"}).json()["total"] == 0


def test_show_model_has_hashes_evidence_and_audit(client: Any, library: Library) -> None:
    lora = client.get(f"/api/models/{library.ids['xl-detail']}").json()
    assert lora["family"] == "sdxl" and lora["kind"] == "lora"
    assert len(lora["hashes"]["sha256"]) == 64 and lora["hashes"]["autov2"]
    assert lora["inspect"]["evidence"], "identification evidence is shown"
    assert lora["audit_verdict"]["status"] == "safe"
    hostile = client.get(f"/api/models/{library.ids['free-model']}").json()
    assert hostile["audit"] == "unsafe"
    assert any("os.system" in f["message"] for f in hostile["audit_verdict"]["findings"])


def test_compatible_addons_of_a_checkpoint(client: Any, library: Library) -> None:
    fits = client.get(f"/api/models/{library.ids['tiny-sd1']}/compatible").json()
    names = {f["model"]["name"] for f in fits}
    assert {"sd1-style", "ft-mse"} <= names and "xl-detail" not in names
    assert all(f["reasons"] for f in fits)
    every = client.get(
        f"/api/models/{library.ids['tiny-sd1']}/compatible", params={"include_rejected": True}
    ).json()
    rejected = [f for f in every if f["model"]["name"] == "xl-detail"]
    assert rejected and rejected[0]["status"] == "rejected"
    only_vae = client.get(
        f"/api/models/{library.ids['tiny-sd1']}/compatible", params={"kind": "vae"}
    ).json()
    assert [f["model"]["name"] for f in only_vae] == ["ft-mse"]
    body = _error(client.get(f"/api/models/{library.ids['ft-mse']}/compatible"), 400)
    assert "checkpoint" in body["error"]


def test_resolve_and_plan_by_catalog_name(client: Any) -> None:
    result = client.post(
        "/api/resolve",
        json={"checkpoint": "tiny-sd1", "loras": [{"ref": "xl-detail", "weight": 0.5}]},
    ).json()
    assert result["compatible"] is False
    assert result["checkpoint"]["ref"] == "tiny-sd1"
    (part,) = result["parts"]
    assert part["ref"] == "xl-detail" and part["status"] == "rejected" and part["reasons"]
    ok = client.post("/api/resolve", json={"checkpoint": "tiny-sd1", "vae": "ft-mse"}).json()
    assert [p["status"] for p in ok["parts"]] == ["accepted"]
    planned = client.post(
        "/api/plan", json={"checkpoint": "tiny-sd1", "vram": "4GiB", "width": 64}
    ).json()
    assert planned["fits"] is True and planned["width"] == planned["height"] == 64
    assert planned["peak"] <= planned["budget"] == 4 * 1024**3


def test_resolve_refuses_paths_outside_the_catalog(client: Any, tmp_path: Any) -> None:
    stray = tmp_path / "not-scanned.safetensors"
    stray.write_bytes(b"x" * 16)
    body = _error(client.post("/api/resolve", json={"checkpoint": str(stray)}), 404)
    assert "no model in the catalog" in body["error"]


def test_errors_are_json_with_reason_and_hint(client: Any) -> None:
    _error(client.get("/api/models/999999"), 404)
    _error(client.get("/api/jobs/nosuchjob"), 404)
    _error(client.get("/api/outputs/424242"), 404)
    _error(client.get("/api/outputs/424242/image"), 404)
    body = _error(client.get("/api/models/abc"), 422)
    assert body["field"] == "path.model_id"
    body = _error(client.post("/api/jobs", json={"prompt": "x"}), 422)
    assert body["field"] == "body.checkpoint"
    body = _error(
        client.post("/api/jobs", json={"checkpoint": "a", "prompt": "x", "steps": 0}), 422
    )
    assert body["field"] == "body.steps"
    body = _error(
        client.post("/api/jobs", json={"checkpoint": "a", "prompt": "x", "width": 33}), 422
    )
    assert body["field"] == "body.width"
    _error(client.post("/api/jobs", json={"checkpoint": "a", "prompt": "x", "nope": 1}), 422)
    # ~user for a user this machine does not have: a missing file, not a 500 (found by fuzzing)
    missing = {"checkpoint": "~no_such_user_zz/m.safetensors", "prompt": "x"}
    assert client.post("/api/jobs", json=missing).status_code in (400, 404, 422)
    _error(
        client.post(
            "/api/jobs", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    _error(client.post("/api/plan", json={"checkpoint": "tiny-sd1", "vram": "lots"}), 422)
    _error(client.get("/api/jobs", params={"status": "sleeping"}), 422)
    _error(client.get("/no/such/page"), 404)


def test_unexpected_errors_are_500_json_without_traceback(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from modelsafe.serve import catalog_views

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(catalog_views, "search_models", boom)
    client = make_client()
    response = client.get("/api/models")
    body = _error(response, 500)
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert "internal error" in body["error"]
    assert "secret internals" in caplog.text  # logged server-side


def test_token_guards_writes_only(make_client: Callable[..., Any], library: Library) -> None:
    queue = RecordingQueue()
    client = make_client(token="s3cret", queue=queue)
    spec = job_spec(library.tiny)
    body = _error(client.post("/api/jobs", json=spec), 401)
    assert "token" in body["error"] and "Bearer" in body["hint"]
    _error(client.post("/api/jobs", json=spec, headers={"Authorization": "Bearer wrong"}), 401)
    _error(client.post("/api/jobs", json=spec, headers={"Authorization": "s3cret"}), 401)
    assert queue.jobs == []
    ok = client.post("/api/jobs", json=spec, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201, ok.text
    assert [j.id for j in queue.jobs] == [ok.json()["id"]]
    # Reads stay open.
    assert client.get("/api/models").status_code == 200
    assert client.get(f"/api/jobs/{ok.json()['id']}").status_code == 200
    assert client.post("/api/resolve", json={"checkpoint": "tiny-sd1"}).status_code == 200
    # Without a token (loopback), writes are open.
    open_client = make_client(queue=RecordingQueue())
    assert open_client.post("/api/jobs", json=spec).status_code == 201


def test_refuses_non_loopback_bind_without_token(run_cli: Any) -> None:
    from modelsafe.serve.security import check_bind, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "t")
    with pytest.raises(UsageError) as caught:
        check_bind("0.0.0.0", None)
    assert "token" in caught.value.hint
    code, out, err = run_cli("serve", "--host", "0.0.0.0", "--port", "1")
    assert code == 2
    assert "refusing to listen on 0.0.0.0" in err and "--token" in err
    assert "Traceback" not in err


def test_host_header_is_checked_on_loopback(make_client: Callable[..., Any]) -> None:
    client = make_client(allowed_hosts=["127.0.0.1", "localhost"])
    assert client.get("/api/models", headers={"host": "127.0.0.1:8765"}).status_code == 200
    body = _error(client.get("/api/models", headers={"host": "evil.example"}), 400)
    assert "evil.example" in body["error"]
    _error(client.get("/", headers={"host": "127.0.0.1.evil.example:8765"}), 400)
    ipv6 = make_client(allowed_hosts=["::1"])
    assert ipv6.get("/api/models", headers={"host": "[::1]:8765"}).status_code == 200


def test_host_name_parsing() -> None:
    from modelsafe.serve.security import host_name

    assert host_name("127.0.0.1:8765") == "127.0.0.1"
    assert host_name("LOCALHOST") == "localhost"
    assert host_name("[::1]:80") == "::1" and host_name("[::1]") == "::1"
    assert host_name("::1") == "::1"


def test_bad_spec_value_from_the_job_module_is_422(make_client: Callable[..., Any]) -> None:
    client = make_client(queue=RecordingQueue())
    body = _error(client.post("/api/jobs", json={"checkpoint": " ", "prompt": "x"}), 422)
    assert "checkpoint" in body["error"]


def test_job_runs_in_process_and_its_image_is_served(
    make_client: Callable[..., Any], library: Library
) -> None:
    client = make_client()
    response = client.post("/api/jobs", json=job_spec(library.tiny))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] in ("queued", "running", "done")
    deadline = time.monotonic() + 60
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "done", job
    (output_id,) = job["output_ids"]
    assert job["id"] in [j["id"] for j in client.get("/api/jobs", params={"status": "done"}).json()]
    image = client.get(f"/api/outputs/{output_id}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(image.content)).size == (32, 32)
    record = client.get(f"/api/outputs/{output_id}").json()
    assert record["recipe"]["prompt"] == "a red cube" and record["recipe"]["seed"] == 7
    listed = client.get("/api/outputs").json()
    assert output_id in [o["id"] for o in listed["items"]]
    gallery = client.get("/gallery").text
    assert f"/api/outputs/{output_id}/image" in gallery and "a red cube" in gallery
    jobs_page = client.get("/jobs").text  # the jobs page links the job's image in the gallery
    assert f'href="/gallery#output-{output_id}"' in jobs_page and "job-done" in jobs_page


def test_unknown_checkpoint_is_refused_and_a_failing_job_says_why(
    make_client: Callable[..., Any], library: Library, tmp_path: Any
) -> None:
    client = make_client()
    missing = job_spec(library.tiny, checkpoint="/nonexistent/model.safetensors")
    body = _error(client.post("/api/jobs", json=missing), 404)  # planned at submission
    assert "/nonexistent/model.safetensors" in body["error"]
    broken = job_spec(library.tiny, tokenizers=str(tmp_path / "no-tokenizers"))
    response = client.post("/api/jobs", json=broken)
    assert response.status_code == 201, response.text
    job = response.json()
    deadline = time.monotonic() + 60
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "failed" and job["output_ids"] == []
    assert job["error"]["reason"] and "hint" in job["error"]
