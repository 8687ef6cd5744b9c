"""Cancelling jobs, and refusing jobs too big for the machine: a queued job is never started, a
running one stops between two diffusion steps and leaves no output, a finished one cannot be
cancelled, a lease expiry never brings a cancelled job back; an unplanned job the machine's
memory cannot hold is refused before it is queued (or, on a worker, before anything loads).

Every cancel of a running job happens inside the progress path (no sleeps): a wrapper around
``generate`` cancels at a chosen step, then calls the runner's own progress callback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from modelsafe.registry.catalog import Catalog
from modelsafe.registry.catalog.models import Output
from modelsafe.runtime.jobs import (
    JobNotFoundError,
    JobStateError,
    JobTooBigError,
    cancel_job,
    get_job,
    list_jobs,
    store,
    submit_job,
)
from modelsafe.runtime.jobs import routing as routing_mod
from modelsafe.runtime.jobs.inprocess import InProcessQueue
from modelsafe.runtime.jobs.runner import WorkerSettings, run_job

Spec = Callable[..., dict[str, Any]]
MANY_STEPS = 200  # far more than a test lets run: a job that finished was not stopped


def _outputs(catalog: Catalog) -> list[Output]:
    with catalog.session() as session:
        return list(session.scalars(select(Output).order_by(Output.id)))


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png")) if folder.exists() else []


def _wrap_generate(monkeypatch: pytest.MonkeyPatch, at_step: Callable[[int], None]) -> list[int]:
    """Wrap runtime.generate.generate: ``at_step(n)`` runs after step n, before the runner's
    progress callback. Returns the steps seen."""
    import modelsafe.runtime.generate as gen

    real = gen.generate
    seen: list[int] = []

    def wrapped(request: Any, out_dir: Any = None, *, progress: Any = None, **kw: Any) -> Any:
        def hook(done: int, total: int) -> None:
            seen.append(done)
            at_step(done)
            if progress is not None:
                progress(done, total)

        return real(request, out_dir, progress=hook, **kw)

    monkeypatch.setattr(gen, "generate", wrapped)
    return seen


# -- queued ----------------------------------------------------------------------------------


def test_a_cancelled_queued_job_is_never_started(
    catalog: Catalog, make_spec: Spec, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = store.insert_job(catalog, make_spec(seed=1), vram_need=None, queue=None)
    cancelled = cancel_job(catalog, job.id, by="alice")
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_by == "alice" and cancelled.cancelled_at
    assert cancelled.finished_at is not None and cancelled.started_at is None
    assert cancelled.error and cancelled.error["reason"] == "cancelled by alice"
    as_json = cancelled.to_json()
    assert as_json["status"] == "cancelled" and as_json["cancelled_by"] == "alice"
    # Its message arrives anyway (Celery, or the in-process queue's list): a no-op.
    assert run_job(catalog, job.id, WorkerSettings("w1", out)) is None
    after = get_job(catalog, job.id)
    assert after == cancelled and after.attempts == 0 and after.worker is None
    assert _outputs(catalog) == [] and not (out / job.id).exists()
    assert [j.id for j in list_jobs(catalog, status="cancelled")] == [job.id]


def test_the_in_process_queue_skips_a_job_cancelled_while_it_waited(
    catalog: Catalog,
    catalog_path: Path,
    make_spec: Spec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reached, proceed = threading.Event(), threading.Event()

    def hold_first(step: int) -> None:
        if step == 1 and not reached.is_set():
            reached.set()
            assert proceed.wait(60)

    _wrap_generate(monkeypatch, hold_first)
    out = tmp_path / "out"
    queue = InProcessQueue(str(catalog_path), outputs=out)
    try:
        first = submit_job(catalog, make_spec(seed=1), queue)
        assert reached.wait(60)  # the first job runs, the second waits behind it
        second = submit_job(catalog, make_spec(seed=2), queue)
        assert get_job(catalog, second.id).status == "queued"
        assert cancel_job(catalog, second.id, by="bob").status == "cancelled"
        proceed.set()
        assert queue.join(120)
    finally:
        proceed.set()
        queue.close()
    assert get_job(catalog, first.id).status == "done"
    skipped = get_job(catalog, second.id)
    assert skipped.status == "cancelled" and skipped.attempts == 0
    assert skipped.started_at is None and skipped.output_ids == []
    assert not (out / second.id).exists()
    assert len(_outputs(catalog)) == 1  # the first job's image only


# -- running ---------------------------------------------------------------------------------


def test_a_running_job_stops_at_its_next_step_and_keeps_nothing(
    catalog: Catalog, make_spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    job = store.insert_job(
        catalog, make_spec(seed=4, steps=MANY_STEPS, batch_size=2), vram_need=None, queue=None
    )
    states: list[str] = []

    def cancel_at_3(step: int) -> None:
        if step == 3:
            states.append(cancel_job(catalog, job.id, by="carol").status)

    seen = _wrap_generate(monkeypatch, cancel_at_3)
    final = run_job(catalog, job.id, WorkerSettings("w1", out))
    assert states == ["cancelling"]  # while its worker was still running it
    assert seen == [1, 2, 3]  # stopped at the step the cancel came in, of 2 x 200
    assert final is not None and final.status == "cancelled"
    assert final.cancelled_by == "carol" and final.attempts == 1 and final.output_ids == []
    assert final.finished_at is not None
    assert _outputs(catalog) == [] and _pngs(out) == [] and not (out / job.id).exists()
    assert cancel_job(catalog, job.id, by="dave") == final  # a second cancel changes nothing


def test_a_worker_elsewhere_sees_the_cancel_in_the_row(
    catalog: Catalog, make_spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Celery worker is another process: no in-memory signal reaches it, it reads the row."""
    out = tmp_path / "out"
    job = store.insert_job(catalog, make_spec(seed=5, steps=MANY_STEPS), vram_need=None, queue=None)

    def cancel_row_at_2(step: int) -> None:
        if step == 2:
            assert store.cancel(catalog, job.id, by="server").status == "cancelling"

    seen = _wrap_generate(monkeypatch, cancel_row_at_2)
    final = run_job(catalog, job.id, WorkerSettings("remote", out, cancel_poll_s=0))
    assert seen == [1, 2]
    assert final is not None and final.status == "cancelled" and final.output_ids == []
    assert _outputs(catalog) == [] and _pngs(out) == []


def test_a_cancel_after_the_last_step_deletes_the_images(
    catalog: Catalog, make_spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelsafe.runtime.generate as gen

    out = tmp_path / "out"
    job = store.insert_job(catalog, make_spec(seed=6, batch_size=2), vram_need=None, queue=None)
    real = gen.generate

    def then_cancel(*args: Any, **kw: Any) -> Any:
        result = real(*args, **kw)  # images saved and recorded
        assert len(_outputs(catalog)) == 2
        store.cancel(catalog, job.id, by="late")
        return result

    monkeypatch.setattr(gen, "generate", then_cancel)
    final = run_job(catalog, job.id, WorkerSettings("w1", out))
    assert final is not None and final.status == "cancelled" and final.output_ids == []
    assert _outputs(catalog) == [] and _pngs(out) == []


# -- refusals, leases ------------------------------------------------------------------------


def test_finished_jobs_cannot_be_cancelled_and_unknown_ids_are_not_found(
    catalog: Catalog, make_spec: Spec, tmp_path: Path
) -> None:
    done = store.insert_job(catalog, make_spec(seed=7), vram_need=None, queue=None)
    assert run_job(catalog, done.id, WorkerSettings("w1", tmp_path / "out")) is not None
    failed = store.insert_job(catalog, make_spec(scheduler="nope"), vram_need=None, queue=None)
    assert run_job(catalog, failed.id, WorkerSettings("w1", tmp_path / "out")) is not None
    for job, status in ((done, "done"), (failed, "failed")):
        before = get_job(catalog, job.id)
        assert before.status == status
        with pytest.raises(JobStateError, match=f"already {status}") as info:
            cancel_job(catalog, job.id, by="x")
        assert info.value.http_status == 409 and info.value.hint
        assert get_job(catalog, job.id) == before
    with pytest.raises(JobNotFoundError):
        cancel_job(catalog, "nosuchjob", by="x")


def test_lease_expiry_never_brings_a_cancelled_job_back(catalog: Catalog, make_spec: Spec) -> None:
    # Cancelled while queued.
    queued = store.insert_job(catalog, make_spec(), vram_need=None, queue=None)
    store.cancel(catalog, queued.id, by="x")
    # Cancelled while running; its worker dies before it stops (lease runs out).
    running = store.insert_job(catalog, make_spec(), vram_need=None, queue=None)
    ghost = store.claim(catalog, running.id, "ghost", lease_s=0.2)
    assert ghost is not None
    assert store.cancel(catalog, running.id, by="x").status == "cancelling"
    assert store.renew(catalog, ghost, 0.2)  # a worker that is stopping keeps its lease
    # Running on a lease that already ran out: no worker is alive, it is cancelled at once.
    dead = store.insert_job(catalog, make_spec(), vram_need=None, queue=None)
    assert store.claim(catalog, dead.id, "dead", lease_s=0.01) is not None
    time.sleep(0.3)
    assert store.cancel(catalog, dead.id, by="x").status == "cancelled"
    assert store.release_stale(catalog) == []  # nothing requeued
    for job in (queued, running, dead):
        now = get_job(catalog, job.id)
        assert now.status == "cancelled", job.id
        assert store.claim(catalog, job.id, "heir", lease_s=60) is None
    assert store.queued_jobs(catalog) == []
    # The ghost comes back: fenced off.
    assert not store.finish(catalog, ghost, output_ids=[1])
    assert not store.renew(catalog, ghost, 60)
    assert store.attempt_status(catalog, ghost) == "lost"
    assert get_job(catalog, running.id).status == "cancelled"


# -- too big for the machine -----------------------------------------------------------------


def _machine(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    monkeypatch.setattr(
        routing_mod, "available_memory", lambda device, **_: (size, "available RAM")
    )


def test_the_unplanned_estimate_follows_size_and_batch(catalog: Catalog, make_spec: Spec) -> None:
    small = routing_mod.JobSize(make_spec(), catalog).unplanned("cpu")
    assert 0 < small < 256 * 1024**2  # the tiny model at 32x32
    huge = routing_mod.JobSize(make_spec(width=4096, height=4096), catalog).unplanned("cpu")
    assert huge > 64 * 1024**3  # an fp32 VAE decode at 4096x4096 alone is ~80 GiB
    batch = routing_mod.JobSize(make_spec(width=4096, height=4096, batch_size=8), catalog)
    assert batch.unplanned("cpu") > huge  # the decoded images of the batch are kept
    assert batch.unplanned("cuda") > batch.unplanned("cpu")  # + the CUDA context
    have = routing_mod.available_memory("cpu")
    assert have is not None and have[0] > 0


def test_an_oversized_job_is_refused_before_it_is_queued(
    catalog: Catalog,
    catalog_path: Path,
    make_spec: Spec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _machine(monkeypatch, 4 * 1024**3)
    queue = InProcessQueue(str(catalog_path), outputs=tmp_path / "out")
    try:
        with pytest.raises(JobTooBigError) as info:
            submit_job(catalog, make_spec(width=4096, height=4096, batch_size=8), queue)
        assert info.value.http_status == 422
        reason = info.value.reason
        assert "4096x4096, batch 8" in reason and "without a VRAM plan" in reason
        assert "this server has 4.0 GiB of available RAM" in reason
        assert "--vram" in info.value.hint
        assert list_jobs(catalog) == []  # nothing recorded
        ok = submit_job(catalog, make_spec(), queue)  # a small job still runs
        assert queue.join(120)
    finally:
        queue.close()
    assert get_job(catalog, ok.id).status == "done"
    # With a VRAM budget the budget decides (the plan's smallest peak), as 422 too.
    budgeted = InProcessQueue(str(catalog_path), outputs=tmp_path / "out", vram=1024**3)
    try:
        with pytest.raises(JobTooBigError, match="this server's budget is 1.0 GiB"):
            submit_job(catalog, make_spec(vram="3GiB"), budgeted)
    finally:
        budgeted.close()


def test_a_worker_without_a_budget_refuses_what_its_memory_cannot_hold(
    catalog: Catalog, make_spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(monkeypatch, 1024**2)  # 1 MiB: not even the tiny model's weights
    job = store.insert_job(catalog, make_spec(), vram_need=None, queue=None)
    failed = run_job(catalog, job.id, WorkerSettings("little", tmp_path / "out"))
    assert failed is not None and failed.status == "failed" and failed.error
    assert "worker little has 1.0 MiB of available RAM" in failed.error["reason"]
    assert _outputs(catalog) == []
