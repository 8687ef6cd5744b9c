"""Run one job on this machine: claim it, check it fits, generate, record the outputs, finish.

Exactly-once completion: the claim is a guarded UPDATE; the lease is renewed while the job runs;
each attempt writes under ``OUTPUTS/<job id>/attempt-<n>/``; a new attempt first deletes what a
dead one left (rows and files); ``done`` and the output ids are written in one guarded UPDATE, and
an attempt that lost the job meanwhile deletes its own outputs instead.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsafe.errors import BackendError, ModelsafeError, UsageError
from modelsafe.runtime.jobs import store

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog
    from modelsafe.runtime.generate import GenerateRequest

log = logging.getLogger("modelsafe.jobs")
DEFAULT_LEASE_S = 60.0


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker is: its name, where it writes, its VRAM budget and device."""

    name: str
    outputs: Path
    budget: int | None = None  # bytes; None: no budget (every tier, no plan check)
    device: str | None = None  # None: the job's device, else cpu
    lease_s: float = DEFAULT_LEASE_S


def run_job(catalog: Catalog, job_id: str, settings: WorkerSettings) -> store.JobInfo | None:
    """Run ``job_id`` if it can be claimed. Returns its final state, or None when it was not
    claimed (already done or failed, or running on another live worker)."""
    held = store.claim(catalog, job_id, settings.name, settings.lease_s)
    if held is None:
        log.info("job %s: not claimable (done, failed or held elsewhere); skipped", job_id)
        return None
    log.info("job %s: attempt %d on %s", job_id, held.attempt, settings.name)
    job_dir = settings.outputs.resolve() / job_id
    _clear_dead_attempts(catalog, job_dir)
    out_dir = job_dir / f"attempt-{held.attempt}"
    output_ids: list[int] = []
    try:
        with _lease(catalog, held, settings.lease_s):
            request = _request_for(catalog, held.job.spec, settings)
            from modelsafe.runtime.generate import generate

            result = generate(request, out_dir, catalog=catalog)
            output_ids = [i.output_id for i in result.images if i.output_id is not None]
    except ModelsafeError as exc:
        log.info("job %s failed: %s", job_id, exc.reason)
        _finish_or_discard(catalog, held, out_dir, error=exc)
    except Exception as exc:  # noqa: BLE001 - the job fails with the reason; the worker goes on
        log.exception("job %s: unexpected error", job_id)
        error = BackendError(
            f"{type(exc).__name__}: {exc}", hint="see the worker's log for the traceback"
        )
        _finish_or_discard(catalog, held, out_dir, error=error)
    else:
        _finish_or_discard(catalog, held, out_dir, output_ids=output_ids)
    return store.get_job(catalog, job_id)


def _finish_or_discard(
    catalog: Catalog,
    held: store.Claim,
    out_dir: Path,
    *,
    output_ids: list[int] | None = None,
    error: ModelsafeError | None = None,
) -> None:
    if store.finish(catalog, held, output_ids=output_ids, error=error):
        return
    log.warning("job %s: attempt %d lost its lease; discarding", held.job.id, held.attempt)
    _delete_outputs(catalog, out_dir)


def _request_for(
    catalog: Catalog, spec: dict[str, Any], settings: WorkerSettings
) -> GenerateRequest:
    from modelsafe.runtime.jobs.spec import build_request

    wanted = spec.get("device")
    if settings.device and wanted and not settings.device.startswith(wanted):
        raise UsageError(
            f"the job wants device {wanted!r}; worker {settings.name} runs on {settings.device}",
            hint="submit it without 'device', or start a worker with that --device",
        )
    request = build_request(spec, catalog, device=settings.device or wanted or "cpu")
    if settings.budget is None:
        return request
    return _planned(request, spec, catalog, settings)


def _planned(
    request: GenerateRequest, spec: dict[str, Any], catalog: Catalog, settings: WorkerSettings
) -> GenerateRequest:
    from modelsafe.runtime.jobs.routing import plan_job
    from modelsafe.units import format_size

    assert settings.budget is not None
    planned_spec = {**spec, "checkpoint": str(request.checkpoint)}
    result = plan_job(planned_spec, settings.budget, catalog)
    if not result.fits:
        raise UsageError(
            f"the job needs {format_size(result.peak)} of VRAM; worker {settings.name} has a "
            f"budget of {format_size(settings.budget)}",
            hint="; ".join(result.suggestions) or "run it on a worker with a bigger --vram",
        )
    # generate() plans the run itself for this budget and records why (runtime/generate_plan.py).
    return replace(request, vram=settings.budget)


@contextmanager
def _lease(catalog: Catalog, held: store.Claim, lease_s: float) -> Iterator[None]:
    """Renew the lease every third of its length while the body runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_s / 3):
            try:
                if not store.renew(catalog, held, lease_s):
                    log.warning("job %s: lease lost", held.job.id)
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: try again next beat
                log.exception("job %s: renewing the lease failed", held.job.id)

    thread = threading.Thread(target=beat, name=f"lease-{held.job.id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _clear_dead_attempts(catalog: Catalog, job_dir: Path) -> None:
    """Delete output rows and files an earlier, dead attempt of this job left behind."""
    if job_dir.is_dir():
        _delete_outputs(catalog, job_dir)


def _delete_outputs(catalog: Catalog, folder: Path) -> None:
    from sqlalchemy import delete

    from modelsafe.registry.catalog.models import Output

    prefix = str(folder.resolve()) + "/"
    with catalog.session() as session:
        session.execute(
            delete(Output)
            .where(Output.path.startswith(prefix, autoescape=True))
            .execution_options(synchronize_session=False)
        )
    shutil.rmtree(folder, ignore_errors=True)
