"""The HTTP API against what a red-team pass tried: big bodies, a token route read before its
token, tampered output rows, control characters and LIKE wildcards in refs, other loopback
addresses, unknown schedulers, and a shutdown while a job runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serve_support import Library

from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.catalog.models import Output

SPEC = {"checkpoint": "tiny-sd1", "prompt": "a"}


def test_big_bodies_are_413_and_the_token_comes_before_the_body(
    make_client: Callable[..., Any],
) -> None:
    client = make_client(token="s3cret")
    body = b'{"checkpoint": "tiny-sd1", "prompt": "' + b"a" * (2 << 20) + b'"}'
    big = client.post("/api/resolve", content=body, headers={"content-type": "application/json"})
    assert big.status_code == 413 and "larger than" in big.json()["error"]

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for i in range(0, len(body), 64 << 10):
            yield body[i : i + (64 << 10)]

    chunked = client.post(
        "/api/resolve", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413 and "larger than" in chunked.json()["error"]
    # A job without the token is refused before its body is parsed: 401, not 422 or 413.
    for content in (b"not json at all", body):
        refused = client.post(
            "/api/jobs", content=content, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"


def _output_row(url: str, path: Path) -> int:
    catalog = open_catalog(url)
    try:
        with catalog.session() as session:
            row = Output(path=str(path), recipe={})
            session.add(row)
            session.flush()
            return int(row.id)
    finally:
        catalog.close()


def test_only_png_files_are_served_as_outputs(
    make_client: Callable[..., Any], library: Library, tmp_path: Path
) -> None:
    from serve_support import copy_catalog

    (tmp_path / "c").mkdir()
    url = copy_catalog(library, tmp_path / "c")
    client = make_client(catalog_url=url)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    link = tmp_path / "looks.png"
    link.symlink_to(secret)
    png = tmp_path / "real.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    for path in (secret, link, Path("/etc/passwd")):
        answer = client.get(f"/api/outputs/{_output_row(url, path)}/image")
        assert answer.status_code == 404, path
        assert "SECRET" not in answer.text and "root:" not in answer.text
    served = client.get(f"/api/outputs/{_output_row(url, png)}/image")
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"


def test_refs_refuse_control_characters_and_match_wildcards_literally(
    client: Any,
) -> None:
    for ref in ("tiny-sd1\u0000zzz", "tiny-sd1\u001b", "\u007f"):
        answer = client.post("/api/resolve", json={"checkpoint": ref})
        assert answer.status_code == 422, ref
    for ref in ("%", "_", "tiny%", "tiny_sd1"):
        answer = client.post("/api/resolve", json={"checkpoint": ref})
        assert answer.status_code == 404, (ref, answer.text)


def test_unknown_scheduler_is_refused_at_submit(make_client: Callable[..., Any]) -> None:
    client = make_client()
    answer = client.post("/api/jobs", json={**SPEC, "scheduler": "<b>nope</b>"})
    assert answer.status_code == 422 and "unknown scheduler" in answer.text


def test_a_bound_loopback_address_is_an_allowed_host(make_client: Callable[..., Any]) -> None:
    client = make_client(allowed_hosts=["localhost", "127.0.0.1", "::1", "127.0.0.2"])
    assert client.get("/api/models", headers={"host": "127.0.0.2:8765"}).status_code == 200
    assert client.get("/api/models", headers={"host": "evil.example"}).status_code == 400


def test_closing_the_in_process_queue_does_not_wait_for_a_running_job(tmp_path: Path) -> None:
    from modelsafe.runtime.jobs.inprocess import InProcessQueue

    queue = InProcessQueue.__new__(InProcessQueue)  # only close() is exercised
    release = threading.Event()
    queue._closed = False
    queue._ids = __import__("queue").Queue()
    queue._thread = threading.Thread(target=release.wait, daemon=True)  # a job that runs on
    queue._thread.start()
    closed_catalog: list[bool] = []
    queue.catalog = type("C", (), {"close": lambda self: closed_catalog.append(True)})()
    started = time.perf_counter()
    queue.close(wait=0.2)
    assert time.perf_counter() - started < 5
    assert not closed_catalog  # the running job keeps its catalog until the process ends
    release.set()
    assert os.getpid()  # (the daemon thread ends with the test process)
