"""Generation jobs: submit a spec, a queue runs it, poll it. One machine or a team.

``open_queue(None, ...)`` runs jobs in a background thread of this process (single machine,
SQLite); ``open_queue("redis://...", ...)`` sends them to Celery workers (``modelsafe worker``).
The catalog's ``jobs`` table is the truth either way. Design: docs/deploy.md.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modelsafe.errors import ModelsafeError
from modelsafe.runtime.jobs.errors import (
    JobNotFoundError,
    JobStateError,
    JobTooBigError,
    QueueError,
)
from modelsafe.runtime.jobs.routing import JobRefusedError
from modelsafe.runtime.jobs.spec import MAX_SEED, validate_spec
from modelsafe.runtime.jobs.store import STATUSES, JobInfo, get_job, list_jobs

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog

__all__ = [
    "STATUSES",
    "JobInfo",
    "JobNotFoundError",
    "JobQueue",
    "JobRefusedError",
    "JobStateError",
    "JobTooBigError",
    "QueueError",
    "cancel_job",
    "get_job",
    "list_jobs",
    "open_queue",
    "submit_job",
    "validate_spec",
]


class JobQueue(Protocol):
    """Where submitted jobs go: ``enqueue`` hands one over, ``close`` lets go of the queue."""

    def enqueue(self, job: JobInfo) -> None: ...

    def close(self) -> None: ...


def submit_job(catalog: Catalog, spec: Mapping[str, Any], queue: JobQueue) -> JobInfo:
    """Check ``spec``, route it by its VRAM need, record it ``queued`` and hand it to ``queue``.

    A UsageError (nothing recorded) for a bad spec; a JobRefusedError (a UsageError, HTTP 422,
    nothing recorded) for a job generate would refuse before loading, where this machine has its
    inputs (``routing.check_before_queue``); a JobTooBigError (a UsageError, nothing recorded)
    for a job bigger than the largest tier, one no running worker has the budget for, or one the
    in-process queue's machine cannot hold; a QueueError (the job is then recorded ``failed``)
    when the queue cannot take it.
    """
    from modelsafe.runtime.jobs import store
    from modelsafe.runtime.jobs.routing import JobSize, check_before_queue, queue_name, tier_for

    checked = validate_spec(spec)
    if "seed" not in checked:  # chosen now, so a re-run after a worker died makes the same images
        checked["seed"] = secrets.randbelow(MAX_SEED + 1)
    check_before_queue(checked, catalog)  # what generate refuses before loading: refused now
    size = JobSize(checked, catalog)
    need = size.need()
    tier = tier_for(need)
    check_route = getattr(queue, "check_route", None)
    if check_route is not None:  # the queue knows its workers: refuse what none of them takes
        check_route(queue_name(tier), need)
    check_memory = getattr(queue, "check_memory", None)
    if check_memory is not None:  # the queue runs jobs here: refuse what this machine cannot hold
        check_memory(size)
    job = store.insert_job(catalog, checked, vram_need=need, queue=queue_name(tier))
    try:
        queue.enqueue(job)
    except ModelsafeError as exc:
        store.fail_unclaimed(catalog, job.id, exc)
        raise
    return job


def cancel_job(catalog: Catalog, job_id: str, *, by: str) -> JobInfo:
    """Cancel ``job_id`` (see :func:`store.cancel`): a queued job is ``cancelled`` and never
    starts; a running one is ``cancelling`` until its worker stops at its next step. ``by`` says
    who asked (kept in the job). JobNotFoundError for an unknown id, JobStateError (HTTP 409)
    for a done or failed job; a second cancel returns the job unchanged."""
    from modelsafe.runtime.jobs import store
    from modelsafe.runtime.jobs.runner import signal_cancel

    job = store.cancel(catalog, job_id, by=by)
    if job.status == "cancelling":
        signal_cancel(job_id)  # an attempt in this process stops at once, others read the row
    return job


def open_queue(
    broker_url: str | None,
    catalog_url: str,
    *,
    outputs: Path,
    vram: int | None = None,
    device: str | None = None,
    visibility_timeout: float | None = None,
) -> JobQueue:
    """``None``: an in-process queue (jobs run here, one at a time, images under ``outputs``,
    optional ``vram`` budget and ``device``); ``redis://...``: Celery workers run them."""
    if broker_url is None:
        from modelsafe.runtime.jobs.inprocess import InProcessQueue

        return InProcessQueue(catalog_url, outputs=outputs, vram=vram, device=device)
    from modelsafe.runtime.jobs.celery_queue import CeleryQueue

    return CeleryQueue(broker_url, visibility_timeout=visibility_timeout)
