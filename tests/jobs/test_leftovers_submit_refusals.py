"""A job that generate would refuse before loading anything is refused at submit (HTTP 422,
nothing queued) with generate's own reason, where the server has the job's files: an inpainting
checkpoint, a scheduler an EDM model cannot be sampled with, an unknown scheduler. A job whose
files are not here is left to its run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.catalog import Catalog, open_catalog
from modelsafe.runtime.jobs import JobRefusedError, list_jobs, submit_job
from modelsafe.testing.queues import RecordingQueue
from modelsafe.testing.tiny_models import Tiny

torch = pytest.importorskip("torch")
Spec = Callable[..., dict[str, Any]]
FIRST_CONV = "model.diffusion_model.input_blocks.0.0.weight"


@pytest.fixture(scope="module")
def variants(tiny_sd1: Tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny sd1 single file as an inpainting model (9 input channels) and with ComfyUI's
    EDM v-prediction markers (sampled with the EDM noise schedule)."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("jobs-variants")
    state = load_file(tiny_sd1.single)
    out, _, kh, kw = state[FIRST_CONV].shape
    inpaint = {**state, FIRST_CONV: torch.zeros(out, 9, kh, kw)}
    save_file(inpaint, root / "tiny-inpainting.safetensors")
    edm = {
        **state,
        "edm_vpred.sigma_max": torch.tensor(120.0),
        "edm_vpred.sigma_min": torch.tensor(0.002),
    }
    save_file(edm, root / "tiny-edm.safetensors")
    return {
        "inpaint": root / "tiny-inpainting.safetensors",
        "edm": root / "tiny-edm.safetensors",
    }


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    cat = open_catalog(tmp_path / "catalog.db")
    yield cat
    cat.close()


@pytest.fixture
def client(catalog: Catalog, tmp_path: Path) -> Iterator[tuple[Any, RecordingQueue]]:
    """A TestClient over an app on ``catalog`` whose jobs go to a recording queue."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from modelsafe.serve import create_app

    queue = RecordingQueue()
    app = create_app(catalog.url, queue=queue, outputs=tmp_path / "outputs")
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client, queue


def _refused(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] and body["hint"] and "Traceback" not in response.text
    return body


def test_an_inpainting_checkpoint_is_422_at_submit(
    client: tuple[Any, RecordingQueue], catalog: Catalog, make_spec: Spec, variants: dict[str, Path]
) -> None:
    http, queue = client
    path = variants["inpaint"]
    body = _refused(http.post("/api/jobs", json=make_spec(checkpoint=str(path))))
    assert body["error"].startswith(f"{path.name} is an inpainting model")
    assert "takes 9 input channels" in body["error"]
    assert "text-to-image checkpoint" in body["hint"]
    assert not queue.jobs and not list_jobs(catalog)


def test_a_folder_that_is_no_model_is_422_at_submit_without_reading_it(
    client: tuple[Any, RecordingQueue],
    catalog: Catalog,
    make_spec: Spec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job naming `/` as its checkpoint audited the whole disk inside the HTTP request."""
    from modelsafe.registry import audit

    monkeypatch.setattr(audit, "audit_path", lambda *a, **k: pytest.fail("audited"))
    http, queue = client
    body = _refused(http.post("/api/jobs", json=make_spec(checkpoint=str(tmp_path))))
    assert "is a folder, but no model folder" in body["error"]
    assert not queue.jobs and not list_jobs(catalog)


@pytest.mark.parametrize("scheduler", ["heun", "ddim", "unipc"])
def test_a_scheduler_an_edm_model_cannot_use_is_422_at_submit(
    client: tuple[Any, RecordingQueue],
    catalog: Catalog,
    make_spec: Spec,
    variants: dict[str, Path],
    scheduler: str,
) -> None:
    http, queue = client
    spec = make_spec(checkpoint=str(variants["edm"]), scheduler=scheduler, vram="1GiB")
    body = _refused(http.post("/api/jobs", json=spec))
    assert f"scheduler {scheduler!r} cannot sample" in body["error"]
    assert "EDM noise schedule" in body["error"]
    assert "--scheduler euler" in body["hint"]
    assert not queue.jobs and not list_jobs(catalog)


def test_the_edm_model_with_a_scheduler_it_can_use_is_queued(
    client: tuple[Any, RecordingQueue], catalog: Catalog, make_spec: Spec, variants: dict[str, Path]
) -> None:
    http, queue = client
    for scheduler in ("euler", "dpmpp_2m_karras"):
        spec = make_spec(checkpoint=str(variants["edm"]), scheduler=scheduler, vram="1GiB")
        answer = http.post("/api/jobs", json=spec)
        assert answer.status_code == 201, answer.text
    assert len(queue.jobs) == 2 and len(list_jobs(catalog)) == 2


def test_a_plain_job_is_still_queued_and_submit_warns_of_nothing(
    catalog: Catalog, make_spec: Spec, recwarn: pytest.WarningsRecorder
) -> None:
    queue = RecordingQueue()
    job = submit_job(catalog, make_spec(), queue)
    assert job.status == "queued" and queue.jobs == [job]
    assert not [w for w in recwarn if "modelsafe" in str(w.filename)]


def test_submit_job_refuses_an_unknown_scheduler(catalog: Catalog, make_spec: Spec) -> None:
    queue = RecordingQueue()
    with pytest.raises(JobRefusedError, match="unknown scheduler 'no-such-scheduler'") as caught:
        submit_job(catalog, make_spec(scheduler="no-such-scheduler"), queue)
    assert caught.value.http_status == 422 and "euler" in caught.value.hint
    assert not queue.jobs and not list_jobs(catalog)


def test_a_job_whose_files_are_not_here_is_left_to_its_run(
    catalog: Catalog, make_spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker elsewhere reads the job's files: submit cannot check them (and does not try)."""
    from modelsafe.runtime import generate

    checked: list[Any] = []
    monkeypatch.setattr(generate, "check_later_run", lambda request: checked.append(request))
    queue = RecordingQueue()
    lora = str(tmp_path / "on-the-worker" / "style.safetensors")
    spec = make_spec(loras=[{"ref": lora}], vram="1GiB")
    job = submit_job(catalog, spec, queue)
    assert job.status == "queued" and not checked


def test_an_unsafe_input_is_left_to_the_runs_audit(
    catalog: Catalog, make_spec: Spec, tmp_path: Path
) -> None:
    """The run's audit refuses it with its findings; submit does not answer for it with a
    check of a file nothing should read further."""
    from modelsafe.demo import _hostile_pickle_bytes, _write_torch_zip

    hostile = tmp_path / "free-model.ckpt"
    _write_torch_zip(hostile, _hostile_pickle_bytes())
    queue = RecordingQueue()
    job = submit_job(catalog, make_spec(loras=[{"ref": str(hostile)}], vram="1GiB"), queue)
    assert job.status == "queued"
