"""Jobs in the catalog: the rows, and every state change as one guarded UPDATE.

A state change names the attempt it belongs to (``worker`` + ``attempts``, the fencing token), so
a worker that lost its lease (it stalled, another worker took the job over) changes nothing.

Statuses: ``queued`` -> ``running`` -> ``done`` | ``failed``; a cancel makes a queued job
``cancelled`` at once, and a running one ``cancelling`` until its worker stops at its next step
(then ``cancelled``). ``done``, ``failed`` and ``cancelled`` are final: no claim, lease expiry or
requeue changes them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update

from modelsafe.errors import ModelsafeError, UsageError
from modelsafe.registry.catalog.models import Job
from modelsafe.runtime.jobs.errors import JobNotFoundError, JobStateError

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog

STATUSES = ("queued", "running", "cancelling", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 3  # a job whose worker died this many times fails instead of being taken again


def now() -> datetime:
    return datetime.now(UTC)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE changed (a CursorResult's rowcount)."""
    return int(result.rowcount)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every time modelsafe writes is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class JobInfo:
    """A job as clients see it (``to_json`` is the HTTP API's shape)."""

    id: str
    status: str  # queued | running | cancelling | done | failed | cancelled
    spec: dict[str, Any]
    error: dict[str, str] | None
    output_ids: list[int]
    worker: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    vram_need: int | None = None  # bytes, from the spec's vram or the planner
    queue: str | None = None  # the capacity tier queue it was routed to

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "status": self.status,
            "spec": self.spec,
            "error": self.error,
            "output_ids": list(self.output_ids),
            "worker": self.worker,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "vram_need": self.vram_need,
            "queue": self.queue,
            "cancelled_by": self.cancelled_by,
            "cancelled_at": self.cancelled_at,
        }

    @property
    def cancelled_by(self) -> str | None:
        """Who asked to cancel the job (``cancelling`` or ``cancelled`` jobs only)."""
        return (self.error or {}).get("cancelled_by")

    @property
    def cancelled_at(self) -> str | None:
        """When the cancel was asked for (ISO 8601), for ``cancelling``/``cancelled`` jobs."""
        return (self.error or {}).get("cancelled_at")


def job_info(row: Job) -> JobInfo:
    created = _aware(row.created_at)
    assert created is not None
    return JobInfo(
        id=row.id,
        status=row.status,
        spec=dict(row.spec or {}),
        error=dict(row.error) if row.error else None,
        output_ids=[int(i) for i in row.output_ids or []],
        worker=row.worker,
        attempts=row.attempts,
        created_at=created,
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
        vram_need=row.vram_need,
        queue=row.queue,
    )


def insert_job(
    catalog: Catalog, spec: dict[str, Any], *, vram_need: int | None, queue: str | None
) -> JobInfo:
    row = Job(
        id=uuid.uuid4().hex,
        status="queued",
        spec=spec,
        queue=queue,
        vram_need=vram_need,
        output_ids=[],
        attempts=0,
        created_at=now(),
    )
    with catalog.session() as session:
        session.add(row)
        session.flush()
        return job_info(row)


def get_job(catalog: Catalog, job_id: str) -> JobInfo:
    """The job with ``job_id``; :class:`JobNotFoundError` when there is none."""
    with catalog.session() as session:
        row = session.get(Job, job_id) if isinstance(job_id, str) else None
        if row is None:
            raise JobNotFoundError(
                f"no job has the id {job_id!r}", hint="list jobs to see their ids"
            )
        return job_info(row)


def list_jobs(catalog: Catalog, *, status: str | None = None, limit: int = 100) -> list[JobInfo]:
    """The newest ``limit`` jobs, optionally only those with ``status``."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown job status {status!r}", hint=f"one of {', '.join(STATUSES)}")
    if limit < 1:
        raise UsageError("limit must be at least 1")
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if status is not None:
        query = query.where(Job.status == status)
    with catalog.session() as session:
        return [job_info(row) for row in session.scalars(query)]


# -- state changes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """This worker's hold on a job: ``attempt`` is the fencing token."""

    job: JobInfo
    worker: str
    attempt: int


def claim(catalog: Catalog, job_id: str, worker: str, lease_s: float) -> Claim | None:
    """Take the job for ``worker`` if it is queued, or running on a lease that expired; None
    when it is done, failed, cancelled (or being cancelled) or held by a live worker (a
    redelivered message is then a no-op)."""
    moment = now()
    claimable = or_(
        Job.status == "queued",
        and_(Job.status == "running", Job.lease_until < moment, Job.attempts < MAX_ATTEMPTS),
    )
    with catalog.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(
                status="running",
                worker=worker,
                attempts=Job.attempts + 1,
                lease_until=moment + timedelta(seconds=lease_s),
                started_at=moment,
            )
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) != 1:
            return None
        row = session.get(Job, job_id, populate_existing=True)
        assert row is not None
        return Claim(job_info(row), worker, row.attempts)


def _attempt(claim: Claim) -> Any:
    return and_(Job.id == claim.job.id, Job.worker == claim.worker, Job.attempts == claim.attempt)


def _held(claim: Claim) -> Any:
    return and_(_attempt(claim), Job.status == "running")


def renew(catalog: Catalog, claim: Claim, lease_s: float) -> bool:
    """Extend the lease (also while the job is being cancelled: its worker is still stopping);
    False when this attempt no longer holds the job."""
    with catalog.session() as session:
        result = session.execute(
            update(Job)
            .where(_attempt(claim), Job.status.in_(("running", "cancelling")))
            .values(lease_until=now() + timedelta(seconds=lease_s))
            .execution_options(synchronize_session=False)
        )
        return bool(_rowcount(result) == 1)


def finish(
    catalog: Catalog,
    claim: Claim,
    *,
    output_ids: list[int] | None = None,
    error: ModelsafeError | None = None,
) -> bool:
    """Mark the job done (with its outputs) or failed (with reason and hint), if this attempt
    still holds it. False when it does not (nothing changed)."""
    values: dict[str, Any] = {"finished_at": now(), "lease_until": None}
    if error is None:
        values.update(status="done", output_ids=list(output_ids or []), error=None)
    else:
        values.update(status="failed", error={"reason": error.reason, "hint": error.hint})
    with catalog.session() as session:
        result = session.execute(
            update(Job)
            .where(_held(claim))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(_rowcount(result) == 1)


def attempt_status(catalog: Catalog, claim: Claim) -> str | None:
    """The job's status while this attempt holds it (``running``, or ``cancelling`` when a
    cancel was asked for); ``lost`` when another attempt holds it or it was taken from this one
    (cancelled after its lease ran out, requeued); None when the row is gone."""
    with catalog.session() as session:
        row = session.execute(
            select(Job.status, Job.worker, Job.attempts).where(Job.id == claim.job.id)
        ).first()
    if row is None:
        return None
    status, worker, attempts = row
    if (
        worker != claim.worker
        or attempts != claim.attempt
        or status
        not in (
            "running",
            "cancelling",
        )
    ):
        return "lost"
    return str(status)


def finish_cancelled(catalog: Catalog, claim: Claim) -> bool:
    """Mark the job ``cancelled`` after its worker stopped (status ``cancelling``, held by this
    attempt). False when it was not being cancelled or this attempt no longer holds it."""
    with catalog.session() as session:
        result = session.execute(
            update(Job)
            .where(_attempt(claim), Job.status == "cancelling")
            .values(status="cancelled", finished_at=now(), lease_until=None)
            .execution_options(synchronize_session=False)
        )
        return bool(_rowcount(result) == 1)


def cancel(catalog: Catalog, job_id: str, *, by: str) -> JobInfo:
    """Cancel a job. Queued: ``cancelled`` now (it is never started: a claim skips it).
    Running: ``cancelling`` (its worker stops at its next step, deletes what this attempt wrote
    and makes it ``cancelled``), or ``cancelled`` at once when its lease already ran out (no
    worker is alive to stop). Cancelling or cancelled already: unchanged (idempotent).

    :class:`JobNotFoundError` for an unknown id, :class:`JobStateError` for a done or failed job.
    """
    for _ in range(10):  # each round is one guarded UPDATE; it repeats only if the job moved
        moment = now()
        note = {
            "reason": f"cancelled by {by}",
            "hint": "submit the job again to run it",
            "cancelled_by": by,
            "cancelled_at": moment.isoformat(),
        }
        with catalog.session() as session:
            row = session.get(Job, job_id) if isinstance(job_id, str) else None
            if row is None:
                raise JobNotFoundError(
                    f"no job has the id {job_id!r}", hint="list jobs to see their ids"
                )
            status, attempts, lease = row.status, row.attempts, _aware(row.lease_until)
            if status in ("cancelling", "cancelled"):
                return job_info(row)
            if status in ("done", "failed"):
                raise JobStateError(
                    f"job {job_id} is already {status}; only a queued or running job can be "
                    "cancelled",
                    hint="its outputs stay; delete them yourself if you do not want them"
                    if status == "done"
                    else "a failed job does not run again; there is nothing to cancel",
                )
            final = {"status": "cancelled", "finished_at": moment, "lease_until": None}
            if status == "queued":
                values: dict[str, Any] = final
            elif lease is None or lease < moment:
                values = final  # its worker died: nobody is left to stop
            else:
                values = {"status": "cancelling"}
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == status, Job.attempts == attempts)
                .values(error=note, **values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) == 1:
                session.flush()
                changed = session.get(Job, job_id, populate_existing=True)
                assert changed is not None
                return job_info(changed)
    return get_job(catalog, job_id)


def fail_unclaimed(catalog: Catalog, job_id: str, error: ModelsafeError) -> None:
    """Fail a job no worker holds (its message could not be sent, it died too often)."""
    with catalog.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(("queued", "running")))
            .values(
                status="failed",
                error={"reason": error.reason, "hint": error.hint},
                finished_at=now(),
                lease_until=None,
            )
            .execution_options(synchronize_session=False)
        )


def release_stale(catalog: Catalog) -> list[JobInfo]:
    """Put every running job whose lease expired back to ``queued`` (the caller sends each
    again); a job whose workers died MAX_ATTEMPTS times fails instead. Returns the requeued.

    Only ``running`` rows are requeued: a job being cancelled whose worker died becomes
    ``cancelled``; a cancelled one is never touched."""
    moment = now()
    stale = and_(Job.status == "running", Job.lease_until < moment)
    requeued: list[JobInfo] = []
    with catalog.session() as session:
        session.execute(
            update(Job)
            .where(Job.status == "cancelling", Job.lease_until < moment)
            .values(status="cancelled", finished_at=moment, lease_until=None)
            .execution_options(synchronize_session=False)
        )
    with catalog.session() as session:
        # (oldest first, as they were submitted: without an order PostgreSQL returns them in
        # the order their rows were last updated)
        ids = list(session.scalars(select(Job.id).where(stale).order_by(Job.created_at, Job.id)))
    for job_id in ids:
        with catalog.session() as session:
            row = session.get(Job, job_id)
            if row is None:
                continue
            if row.attempts >= MAX_ATTEMPTS:
                values: dict[str, Any] = {
                    "status": "failed",
                    "finished_at": moment,
                    "lease_until": None,
                    "error": {
                        "reason": f"the worker running the job stopped {row.attempts} times "
                        "(killed, out of memory?)",
                        "hint": "see the workers' logs; submit it again with a smaller size",
                    },
                }
            else:
                values = {"status": "queued", "worker": None, "lease_until": None}
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, stale)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result) == 1 and values["status"] == "queued":
                session.flush()
                row = session.get(Job, job_id, populate_existing=True)
                assert row is not None
                requeued.append(job_info(row))
    return requeued


def queued_jobs(catalog: Catalog) -> list[JobInfo]:
    with catalog.session() as session:
        rows = session.scalars(
            select(Job).where(Job.status == "queued").order_by(Job.created_at, Job.id)
        )
        return [job_info(row) for row in rows]
