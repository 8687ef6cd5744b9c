"""POST /api/jobs/{id}/cancel on the in-process queue, and 422 for a job the machine cannot hold.

A running job is held at its first step by a wrapper around ``generate`` (events, no sleeps)
while the test cancels it over HTTP; then it goes on and must stop at the next step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_support import Library, job_spec

from modelsafe.testing.queues import RecordingQueue

MANY_STEPS = 200


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] and "Traceback" not in response.text
    return body


def _wait(client: Any, job_id: str, *, until: tuple[str, ...], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in until or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


class Gate:
    """Holds the first job at its first step until ``proceed`` is set; counts steps."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.proceed = threading.Event()
        self.steps: list[int] = []


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    import modelsafe.runtime.generate as gen

    real = gen.generate
    held = Gate()

    def wrapped(request: Any, out_dir: Any = None, *, progress: Any = None, **kw: Any) -> Any:
        def hook(done: int, total: int) -> None:
            held.steps.append(done)
            if not held.reached.is_set():
                held.reached.set()
                assert held.proceed.wait(60)
            if progress is not None:
                progress(done, total)

        return real(request, out_dir, progress=hook, **kw)

    monkeypatch.setattr(gen, "generate", wrapped)
    yield held
    held.proceed.set()


def test_cancel_a_running_job_over_http(
    make_client: Callable[..., Any], library: Library, gate: Gate, tmp_path: Path
) -> None:
    client = make_client(token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    spec = job_spec(library.tiny, steps=MANY_STEPS, batch_size=2)
    job = client.post("/api/jobs", json=spec, headers=auth).json()
    assert gate.reached.wait(60)  # it runs, held at step 1
    url = f"/api/jobs/{job['id']}/cancel"
    # The token is needed, and checked first.
    _error(client.post(url), 401)
    _error(client.post(url, headers={"Authorization": "Bearer wrong"}), 401)
    assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "running"
    answer = client.post(url, headers=auth)
    assert answer.status_code == 200, answer.text
    cancelling = answer.json()
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancelled_by"].startswith("API client ") and cancelling["cancelled_at"]
    gate.proceed.set()
    final = _wait(client, job["id"], until=("cancelled", "done", "failed"))
    assert final["status"] == "cancelled", final
    assert gate.steps == [1]  # stopped right after the step it was held at, of 2 x 200
    assert final["output_ids"] == [] and final["finished_at"]
    assert final["error"]["reason"].startswith("cancelled by API client")
    assert not list((tmp_path / "outputs").rglob("*.png"))
    assert client.get("/api/outputs").json()["total"] == 0
    again = client.post(url, headers=auth)  # idempotent
    assert again.status_code == 200 and again.json() == final
    listed = client.get("/api/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in listed] == [job["id"]]


def test_cancel_a_queued_job_over_http_it_never_runs(
    make_client: Callable[..., Any], library: Library, gate: Gate, tmp_path: Path
) -> None:
    client = make_client()
    first = client.post("/api/jobs", json=job_spec(library.tiny, seed=1)).json()
    assert gate.reached.wait(60)
    second = client.post("/api/jobs", json=job_spec(library.tiny, seed=2)).json()
    assert client.get(f"/api/jobs/{second['id']}").json()["status"] == "queued"
    answer = client.post(f"/api/jobs/{second['id']}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    gate.proceed.set()
    done = _wait(client, first["id"], until=("done", "failed"))
    assert done["status"] == "done", done
    # The in-process queue reached the cancelled job after the first one: it skipped it.
    client.app.state.ms.queue().join(60)
    skipped = client.get(f"/api/jobs/{second['id']}").json()
    assert skipped["status"] == "cancelled" and skipped["attempts"] == 0
    assert skipped["started_at"] is None and skipped["worker"] is None
    assert skipped["output_ids"] == []
    assert not (tmp_path / "outputs" / second["id"]).exists()
    # A finished job: 409 with the reason; an unknown one: 404.
    body = _error(client.post(f"/api/jobs/{first['id']}/cancel"), 409)
    assert "already done" in body["error"] and body["hint"]
    assert client.get(f"/api/jobs/{first['id']}").json()["status"] == "done"
    _error(client.post("/api/jobs/nosuchjob/cancel"), 404)


def test_cancel_is_refused_to_a_page_of_another_site(make_client: Callable[..., Any]) -> None:
    queue = RecordingQueue()
    client = make_client(queue=queue, allowed_hosts=["127.0.0.1"])
    host = {"host": "127.0.0.1:8765"}
    spec = {"checkpoint": "tiny-sd1", "prompt": "a"}  # (its family: the catalog's correction)
    submitted = client.post("/api/jobs", json=spec, headers=host)
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()
    url = f"/api/jobs/{job['id']}/cancel"
    for foreign in (
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:9999"},
        {"sec-fetch-site": "cross-site"},
    ):
        body = _error(client.post(url, headers={**host, **foreign}), 403)
        assert "another site" in body["error"] or "cross-site" in body["error"]
        _error(client.post("/api/jobs", json=spec, headers={**host, **foreign}), 403)
    assert client.get(f"/api/jobs/{job['id']}", headers=host).json()["status"] == "queued"
    same = client.post(url, headers={**host, "origin": "http://127.0.0.1:8765"})
    assert same.status_code == 200 and same.json()["status"] == "cancelled"


def test_a_job_the_machine_cannot_hold_is_422_and_not_queued(
    make_client: Callable[..., Any], library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelsafe.runtime.jobs import routing

    monkeypatch.setattr(
        routing, "available_memory", lambda device, **_: (8 * 1024**3, "available RAM")
    )
    client = make_client()
    huge = job_spec(library.tiny, width=4096, height=4096, batch_size=8)
    body = _error(client.post("/api/jobs", json=huge), 422)
    assert "without a VRAM plan" in body["error"] and "8.0 GiB of available RAM" in body["error"]
    assert "--vram" in body["hint"]
    assert client.get("/api/jobs").json() == []
    # A small job on the same server is fine; a budget refuses by its own rule, 422 too.
    assert client.post("/api/jobs", json=job_spec(library.tiny)).status_code == 201
    budget = make_client(vram=1024**3)
    body = _error(budget.post("/api/jobs", json=job_spec(library.tiny, vram="3GiB")), 422)
    assert "this server's budget is 1.0 GiB" in body["error"]
    assert budget.get("/api/jobs").json() == []
