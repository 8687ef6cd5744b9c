"""The single-machine queue runs real jobs on a tiny sd1 model: outputs recorded once per job,
failures carry a reason, a dead attempt's leftovers are cleared, a redelivery is a no-op."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from modelsafe.errors import ModelsafeError, UsageError
from modelsafe.registry.catalog import Catalog
from modelsafe.registry.catalog.models import Output
from modelsafe.runtime.jobs import JobInfo, get_job, list_jobs, open_queue, store, submit_job
from modelsafe.runtime.jobs.inprocess import InProcessQueue
from modelsafe.runtime.jobs.runner import WorkerSettings, run_job

Spec = Callable[..., dict[str, Any]]


def _wait(catalog: Catalog, jobs: list[JobInfo], timeout: float = 120) -> list[JobInfo]:
    deadline = time.monotonic() + timeout
    while True:
        now = [get_job(catalog, j.id) for j in jobs]
        if all(j.status in ("done", "failed") for j in now) or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def _outputs(catalog: Catalog) -> list[Output]:
    with catalog.session() as session:
        return list(session.scalars(select(Output).order_by(Output.id)))


def test_in_process_queue_runs_jobs_end_to_end(
    catalog: Catalog, catalog_path: Path, make_spec: Spec, tmp_path: Path
) -> None:
    queue = open_queue(None, str(catalog_path), outputs=tmp_path / "out")
    assert isinstance(queue, InProcessQueue)
    try:
        jobs = [
            submit_job(catalog, make_spec(batch_size=2, seed=11), queue),
            submit_job(catalog, make_spec(clip_skip=2), queue),
            submit_job(catalog, make_spec(tokenizers=str(tmp_path / "no-such-tokenizers")), queue),
        ]
        assert all(j.status == "queued" and j.queue == "modelsafe.vram.2gib" for j in jobs)
        assert "seed" in jobs[1].spec  # chosen at submit: a re-run makes the same images
        assert queue.join(120)
    finally:
        queue.close()
    first, second, bad = _wait(catalog, jobs)
    assert (first.status, second.status, bad.status) == ("done", "done", "failed")
    assert first.attempts == 1 and first.worker and first.worker.startswith("in-process@")
    assert first.started_at and first.finished_at and first.finished_at >= first.started_at
    assert len(first.output_ids) == 2 and len(second.output_ids) == 1
    assert bad.error and "no-such-tokenizers" in bad.error["reason"] and bad.error["hint"]
    rows = {o.id: o for o in _outputs(catalog)}
    assert sorted(rows) == sorted(first.output_ids + second.output_ids)
    for oid, seed in zip(first.output_ids, (11, 12), strict=True):
        assert rows[oid].recipe["seed"] == seed
        assert Path(rows[oid].path).is_file()
        assert Path(rows[oid].path).parent == tmp_path / "out" / first.id / "attempt-1"
    assert rows[second.output_ids[0]].recipe["clip_skip"] == 2
    assert [j.id for j in list_jobs(catalog, status="done")] == [second.id, first.id]


def test_a_redelivered_done_job_is_a_no_op(
    catalog: Catalog, make_spec: Spec, tmp_path: Path
) -> None:
    settings = WorkerSettings("w1", tmp_path / "out")
    job = store.insert_job(catalog, make_spec(seed=1), vram_need=None, queue=None)
    done = run_job(catalog, job.id, settings)
    assert done is not None and done.status == "done" and len(done.output_ids) == 1
    assert run_job(catalog, job.id, WorkerSettings("w2", tmp_path / "out")) is None
    again = get_job(catalog, job.id)
    assert (again.worker, again.attempts, again.output_ids) == ("w1", 1, done.output_ids)
    assert len(_outputs(catalog)) == 1


def test_a_dead_attempts_leftovers_are_cleared(
    catalog: Catalog, make_spec: Spec, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = store.insert_job(catalog, make_spec(seed=3, batch_size=2), vram_need=None, queue=None)
    ghost = store.claim(catalog, job.id, "ghost", lease_s=0.05)
    assert ghost is not None
    # The ghost wrote one image and its row, then died before finishing.
    leftover = out / job.id / "attempt-1" / "00000-3.png"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    with catalog.session() as session:
        session.add(Output(path=str(leftover), sha256=None, recipe={}))
    time.sleep(0.1)
    done = run_job(catalog, job.id, WorkerSettings("heir", out))
    assert done is not None and done.status == "done"
    assert (done.worker, done.attempts, len(done.output_ids)) == ("heir", 2, 2)
    assert [o.id for o in _outputs(catalog)] == done.output_ids
    assert not leftover.parent.exists()
    assert sorted(p.name for p in (out / job.id).iterdir()) == ["attempt-2"]
    assert not store.finish(catalog, ghost, output_ids=[1])  # the ghost is fenced off


def test_a_worker_fails_a_job_its_plan_cannot_fit(
    catalog: Catalog, make_spec: Spec, tmp_path: Path
) -> None:
    job = store.insert_job(catalog, make_spec(), vram_need=None, queue=None)
    small = WorkerSettings("small", tmp_path / "out", budget=64 * 1024**2)
    failed = run_job(catalog, job.id, small)
    assert failed is not None and failed.status == "failed" and failed.error
    assert "of VRAM; worker small has a budget of 64.0 MiB" in failed.error["reason"]
    assert failed.error["hint"]
    assert _outputs(catalog) == []


def test_a_job_for_another_device_fails_with_the_reason(
    catalog: Catalog, make_spec: Spec, tmp_path: Path
) -> None:
    job = store.insert_job(catalog, make_spec(device="cuda"), vram_need=None, queue=None)
    failed = run_job(catalog, job.id, WorkerSettings("cpu1", tmp_path / "out", device="cpu"))
    assert failed is not None and failed.error
    assert "wants device 'cuda'; worker cpu1 runs on cpu" in failed.error["reason"]


def test_submit_refuses_bad_specs_and_jobs_bigger_than_every_tier(
    catalog: Catalog, catalog_path: Path, make_spec: Spec, tmp_path: Path
) -> None:
    queue = open_queue(None, str(catalog_path), outputs=tmp_path / "out")
    try:
        with pytest.raises(UsageError, match="more than the largest worker tier"):
            submit_job(catalog, make_spec(vram="100GiB"), queue)
        with pytest.raises(UsageError, match="unknown key 'sampler'"):
            submit_job(catalog, make_spec(sampler="x"), queue)
    finally:
        queue.close()
    small = open_queue(None, str(catalog_path), outputs=tmp_path / "out", vram=1024**3)
    try:
        with pytest.raises(UsageError, match="needs 3.0 GiB of VRAM; this server's budget is 1.0"):
            submit_job(catalog, make_spec(vram="3GiB"), small)
    finally:
        small.close()
    queue = open_queue(None, str(catalog_path), outputs=tmp_path / "out")
    try:
        with pytest.raises(UsageError, match="unknown key 'sampler'"):
            submit_job(catalog, make_spec(sampler="x"), queue)
        with pytest.raises(ModelsafeError, match="no model in the catalog matches"):
            submit_job(catalog, make_spec(checkpoint=str(tmp_path / "nope.safetensors")), queue)
    finally:
        queue.close()
    assert list_jobs(catalog) == []  # nothing half-submitted


def test_a_new_queue_takes_up_jobs_left_queued(
    catalog: Catalog, catalog_path: Path, make_spec: Spec, tmp_path: Path
) -> None:
    left = store.insert_job(catalog, make_spec(seed=5), vram_need=None, queue=None)
    queue = InProcessQueue(str(catalog_path), outputs=tmp_path / "out")
    try:
        assert queue.join(120)
    finally:
        queue.close()
    assert get_job(catalog, left.id).status == "done"
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Output)) == 1
