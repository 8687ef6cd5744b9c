"""The team queue: jobs go through Redis to Celery workers (``modelsafe worker``).

Celery carries the messages; the catalog says what is true. Messages are acknowledged after the
job ran (``acks_late``), so a worker killed mid-job leaves its message to be delivered again
(Redis ``visibility_timeout``); each worker also puts back jobs whose lease expired (a reaper
thread), so a job is never lost. Whoever claims the job in the database runs it; a second
delivery of a job that is done, failed, cancelled or held by a live worker is a no-op, and so is
the delivery of a job cancelled while it waited in Redis (it is never started). A running job is
cancelled through its row: the worker reads it between steps (runtime/jobs/runner.py).

Celery and redis are imported inside functions only (the ``serve`` extra).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

from modelsafe.runtime.jobs import store
from modelsafe.runtime.jobs.errors import SERVE_EXTRA_HINT, QueueError

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog
    from modelsafe.runtime.jobs.runner import WorkerSettings

log = logging.getLogger("modelsafe.jobs")
TASK_NAME = "modelsafe.run_job"
DEFAULT_VISIBILITY_TIMEOUT_S = 3600
WORKER_KEY = "modelsafe:worker:"  # + name -> JSON advertisement, expires unless refreshed
ADVERT_TTL_S = 30


def require_celery() -> None:
    """A QueueError (no traceback) when Celery or redis-py is not installed."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise QueueError(
            f"the job queue needs Celery and redis-py ({exc.name} is not installed)",
            hint=SERVE_EXTRA_HINT,
        ) from exc


def _redis(broker_url: str) -> Any:
    import redis

    return redis.Redis.from_url(broker_url, socket_connect_timeout=3, socket_timeout=5)


def check_broker(broker_url: str) -> None:
    """A QueueError when ``broker_url`` is not a reachable Redis server."""
    require_celery()
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        raise QueueError(
            f"{broker_url!r} is not a Redis URL", hint="e.g. --broker redis://127.0.0.1:6379/0"
        )
    import redis

    try:
        _redis(broker_url).ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        raise QueueError(
            f"cannot reach Redis at {_safe(broker_url)}: {exc}",
            hint="start it (e.g. `redis-server` or `bash .ci/redis start`) or fix --broker",
        ) from exc


def _safe(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    return f"{url.split('://')[0]}://***@{tail}" if sep else url


def celery_app(broker_url: str, *, visibility_timeout: float | None = None) -> Any:
    """A Celery app on ``broker_url`` with the settings that keep jobs from being lost."""
    require_celery()
    from celery import Celery

    app = Celery("modelsafe", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options={
            "visibility_timeout": visibility_timeout or DEFAULT_VISIBILITY_TIMEOUT_S,
            "socket_connect_timeout": 3,
        },
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def send(app: Any, job: store.JobInfo) -> None:
    """Send ``job`` to its capacity tier queue; a QueueError when Redis refuses."""
    from kombu.exceptions import OperationalError

    from modelsafe.runtime.jobs.routing import ALL_QUEUES

    queue = job.queue or ALL_QUEUES[-1]
    try:
        app.send_task(
            TASK_NAME,
            args=[job.id],
            queue=queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except (OperationalError, OSError) as exc:
        raise QueueError(
            f"cannot send job {job.id} to the queue: {exc}",
            hint="check that Redis is running and --broker points at it",
        ) from exc


class CeleryQueue:
    """Sends jobs to Celery workers through Redis."""

    def __init__(self, broker_url: str, *, visibility_timeout: float | None = None) -> None:
        check_broker(broker_url)
        self.broker_url = broker_url
        self.app = celery_app(broker_url, visibility_timeout=visibility_timeout)

    def enqueue(self, job: store.JobInfo) -> None:
        send(self.app, job)

    def check_route(self, queue: str, need: int) -> None:
        """A JobTooBigError when workers are running and none of them reads ``queue`` (none has
        the budget); with no worker running the job waits for one."""
        from modelsafe.runtime.jobs.errors import JobTooBigError
        from modelsafe.units import format_size

        live = self.workers()
        if not live or any(queue in w.get("queues", []) for w in live):
            return
        budgets = [w["budget"] for w in live if w.get("budget")]
        biggest = format_size(max(budgets)) if budgets else "none"
        raise JobTooBigError(
            f"the job needs {format_size(need)} of VRAM ({queue}); no running worker has the "
            f"budget for it (the biggest has {biggest})",
            hint="start a worker with a bigger --vram, or lower width/height or batch_size",
        )

    def workers(self) -> list[dict[str, Any]]:
        """The live workers' advertisements (name, budget, device, queues)."""
        return live_workers(self.broker_url)

    def close(self) -> None:
        self.app.close()


def live_workers(broker_url: str) -> list[dict[str, Any]]:
    """The advertisements of the workers alive on ``broker_url``; a QueueError without Redis."""
    import redis

    client = _redis(broker_url)
    out = []
    try:
        for key in sorted(client.scan_iter(match=WORKER_KEY + "*")):
            raw = client.get(key)
            if raw:
                out.append(json.loads(raw))
    except (redis.RedisError, OSError) as exc:
        raise QueueError(
            f"cannot reach Redis at {_safe(broker_url)}: {exc}",
            hint="check that Redis is running and --broker points at it",
        ) from exc
    return out


# -- the worker ----------------------------------------------------------------------------------


def run_worker(
    broker_url: str,
    catalog: Catalog,
    settings: WorkerSettings,
    *,
    concurrency: int = 1,
    visibility_timeout: float | None = None,
    loglevel: str = "INFO",
) -> int:
    """Consume the tiers ``settings.budget`` allows until stopped; returns the exit code."""
    from modelsafe.runtime.jobs.routing import worker_queues
    from modelsafe.runtime.jobs.runner import run_job

    queues = worker_queues(settings.budget)
    check_broker(broker_url)
    app = celery_app(broker_url, visibility_timeout=visibility_timeout)

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)
    def run(job_id: str) -> None:
        run_job(catalog, job_id, settings)

    advert = {
        "name": settings.name,
        "host": socket.gethostname(),
        "budget": settings.budget,
        "device": settings.device,
        "queues": queues,
        "concurrency": concurrency,
    }
    stop = threading.Event()
    reaper = threading.Thread(
        target=_reap,
        args=(app, catalog, broker_url, advert, settings.lease_s, stop),
        name="modelsafe-reaper",
        daemon=True,
    )
    reaper.start()
    worker = app.Worker(
        hostname=f"{settings.name}@{socket.gethostname()}",
        queues=queues,
        concurrency=concurrency,
        pool="solo" if concurrency == 1 else "threads",
        loglevel=loglevel,
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
        quiet=True,
    )
    try:
        worker.start()
    finally:
        stop.set()
        try:
            _redis(broker_url).delete(WORKER_KEY + settings.name)
        except Exception:  # noqa: BLE001 - the advertisement expires by itself
            pass
    return int(worker.exitcode or 0)


def _reap(
    app: Any,
    catalog: Catalog,
    broker_url: str,
    advert: dict[str, Any],
    lease_s: float,
    stop: threading.Event,
) -> None:
    """Advertise this worker and send again every job whose worker died (lease expired)."""
    every = max(0.5, min(lease_s / 2, 10.0))
    client = _redis(broker_url)
    while True:
        try:
            client.set(WORKER_KEY + advert["name"], json.dumps(advert), ex=ADVERT_TTL_S)
            for job in store.release_stale(catalog):
                log.warning("job %s: its worker stopped; sending it again", job.id)
                send(app, job)
        except Exception:  # noqa: BLE001 - Redis or the database is back next round
            log.exception("reaper: one round failed")
        if stop.wait(every):
            return
