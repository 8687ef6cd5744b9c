"""Run one job on this machine: claim it, check it fits, generate, record the outputs, finish.

Exactly-once completion: the claim is a guarded UPDATE; the lease is renewed while the job runs;
each attempt writes under ``OUTPUTS/<job id>/attempt-<n>/``; a new attempt first deletes what a
dead one left (rows and files); ``done`` and the output ids are written in one guarded UPDATE, and
an attempt that lost the job meanwhile deletes its own outputs instead.

Cancelling is cooperative: the progress callback ``generate`` calls after every diffusion step
checks the job (an in-memory signal when the cancel came from this process, else the row, at most
every ``cancel_poll_s`` seconds) and raises :class:`JobStopped`; the attempt then deletes what it
wrote and marks the job ``cancelled``. A job about to start is checked once more before anything
loads, and a budget-less worker refuses a job its machine's memory cannot hold (runtime/jobs/
routing.py, ``check_unplanned``) before it loads.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
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
DEFAULT_CANCEL_POLL_S = 1.0


class JobStopped(BaseException):  # noqa: N818 - a signal, not an error
    """Raised from the progress callback to stop a job that was cancelled (or that this attempt
    lost). A BaseException, so that no ``except Exception`` in a backend, a pipeline or a plugin
    between the callback and the runner takes it for a failure and goes on."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why  # cancelled | lost


# The attempts running in this process, by job id: a cancel asked for here stops one at its next
# step without waiting for the row to be read.
_running: dict[str, threading.Event] = {}
_running_lock = threading.Lock()


def signal_cancel(job_id: str) -> bool:
    """Tell an attempt of ``job_id`` running in this process to stop; False when none runs."""
    with _running_lock:
        event = _running.get(job_id)
    if event is None:
        return False
    event.set()
    return True


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker is: its name, where it writes, its VRAM budget and device."""

    name: str
    outputs: Path
    budget: int | None = None  # bytes; None: no budget (every tier, no plan check)
    device: str | None = None  # None: the job's device, else cpu
    lease_s: float = DEFAULT_LEASE_S
    cancel_poll_s: float = DEFAULT_CANCEL_POLL_S  # how often a running job reads its row


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
    stop = threading.Event()
    with _running_lock:
        _running[job_id] = stop
    try:
        with _lease(catalog, held, settings.lease_s):
            request = _request_for(catalog, held.job.spec, settings)
            from modelsafe.runtime.generate import generate

            progress = _progress(catalog, held, stop, settings.cancel_poll_s)
            progress(0, 0)  # a cancel that came while the request was built: nothing loads
            result = generate(request, out_dir, catalog=catalog, progress=progress)
            output_ids = [i.output_id for i in result.images if i.output_id is not None]
    except JobStopped as stopped:
        log.info("job %s: attempt %d stopped (%s)", job_id, held.attempt, stopped.why)
        _delete_outputs(catalog, out_dir)
        _remove_if_empty(job_dir)
        store.finish_cancelled(catalog, held)
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
    finally:
        with _running_lock:
            if _running.get(job_id) is stop:
                del _running[job_id]
    return store.get_job(catalog, job_id)


def _progress(
    catalog: Catalog, held: store.Claim, stop: threading.Event, poll_s: float
) -> Callable[[int, int], None]:
    """The callback ``generate`` calls after each step: raises JobStopped once the job is
    being cancelled (or this attempt no longer holds it)."""
    last = [float("-inf")]

    def progress(_done: int, _total: int) -> None:
        if stop.is_set():
            raise JobStopped("cancelled")
        moment = time.monotonic()
        if moment - last[0] < poll_s:
            return
        last[0] = moment
        try:
            state = store.attempt_status(catalog, held)
        except Exception:  # noqa: BLE001 - a database hiccup: the job goes on, checked next time
            log.exception("job %s: reading its status failed", held.job.id)
            return
        if state == "cancelling":
            raise JobStopped("cancelled")
        if state != "running":
            raise JobStopped("lost")

    return progress


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
    _delete_outputs(catalog, out_dir)
    if store.finish_cancelled(catalog, held):  # cancelled after its last step: nothing is kept
        log.info("job %s: cancelled as it finished; its outputs are deleted", held.job.id)
        _remove_if_empty(out_dir.parent)
        return
    log.warning("job %s: attempt %d lost its lease; discarding", held.job.id, held.attempt)


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
    device = settings.device or wanted or "cpu"
    request = build_request(spec, catalog, device=device)
    if settings.budget is None:
        _check_machine(request, spec, catalog, settings, device)
        return request
    return _planned(request, spec, catalog, settings)


def _check_machine(
    request: GenerateRequest,
    spec: dict[str, Any],
    catalog: Catalog,
    settings: WorkerSettings,
    device: str,
) -> None:
    """Without a budget the job runs unplanned (fp32, no offload, no tiling): refuse it before
    anything loads when this machine's memory cannot hold that (a CPU run would swap or be
    killed, and be taken up again). An estimate that cannot be made is left to ``generate``."""
    from modelsafe.runtime.jobs.errors import JobTooBigError
    from modelsafe.runtime.jobs.routing import check_unplanned

    try:
        check_unplanned(
            {**spec, "checkpoint": str(request.checkpoint)},
            catalog,
            device=device,
            where=f"worker {settings.name}",
        )
    except JobTooBigError:
        raise
    except ModelsafeError as exc:
        log.info("job: no memory estimate (%s); generate checks it", exc.reason)


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


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (another attempt's folder) or already gone


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
