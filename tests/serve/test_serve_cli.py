"""`modelsafe serve` as a user starts it: a real process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_support import Library, copy_catalog, job_spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(library: Library, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "MODELSAFE_API_TOKEN": "env-token"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelsafe.cli",
            "--catalog",
            copy_catalog(library, tmp_path),
            "serve",
            "--port",
            str(port),
            "--outputs",
            str(tmp_path / "outputs"),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/api/models", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"modelsafe serve exited {proc.returncode}: {out}")
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("modelsafe serve did not answer within 60 s")
    yield base
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_process_token_from_env_and_host_check(served: str, library: Library) -> None:
    assert httpx.get(served + "/").status_code == 200
    spec = job_spec(library.tiny, vram="1GiB")
    denied = httpx.post(served + "/api/jobs", json=spec)
    assert denied.status_code == 401 and denied.json()["error"]
    assert denied.headers["www-authenticate"] == "Bearer"
    # A cross-site form post (text/plain) never reaches the job queue, token or not.
    form = httpx.post(
        served + "/api/jobs",
        content=httpx.Request("POST", "/", json=spec).content,
        headers={"content-type": "text/plain", "authorization": "Bearer env-token"},
    )
    assert form.status_code == 422
    # A page on another origin that rebinds its DNS name to 127.0.0.1 is refused.
    rebound = httpx.get(served + "/api/models", headers={"host": "attacker.example"})
    assert rebound.status_code == 400
    ok = httpx.post(served + "/api/jobs", json=spec, headers={"authorization": "Bearer env-token"})
    assert ok.status_code == 201, ok.text
    spec_json = httpx.get(f"{served}/api/jobs/{ok.json()['id']}").json()["spec"]
    assert spec_json["prompt"] == spec["prompt"]
    schema = httpx.get(served + "/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
