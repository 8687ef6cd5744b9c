"""The single-machine queue: jobs run one at a time in a background thread of this process."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from modelsafe.runtime.jobs import store
from modelsafe.runtime.jobs.runner import DEFAULT_LEASE_S, WorkerSettings, run_job

if TYPE_CHECKING:
    from modelsafe.runtime.jobs.routing import JobSize

log = logging.getLogger("modelsafe.jobs")
_STOP = ""


class InProcessQueue:
    """Runs each enqueued job in one background thread, in order. On start it takes up the jobs
    a previous process left queued (or running, once their lease expired)."""

    def __init__(
        self,
        catalog_url: str,
        *,
        outputs: Path,
        vram: int | None = None,
        device: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        from modelsafe.registry.catalog import open_catalog

        self.catalog = open_catalog(catalog_url)
        self.settings = WorkerSettings(
            name=f"in-process@{socket.gethostname()}:{os.getpid()}",
            outputs=Path(outputs),
            budget=vram,
            device=device,
            lease_s=lease_s,
        )
        self._ids: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="modelsafe-jobs", daemon=True)
        self._closed = False
        store.release_stale(self.catalog)
        for job in store.queued_jobs(self.catalog):
            self._ids.put(job.id)
        self._thread.start()

    def enqueue(self, job: store.JobInfo) -> None:
        if self._closed:
            from modelsafe.errors import UsageError

            raise UsageError("the job queue is closed")
        self._ids.put(job.id)

    def check_route(self, queue: str, need: int) -> None:
        """A JobTooBigError when this process has a VRAM budget and the job needs more."""
        budget = self.settings.budget
        if budget is not None and need > budget:
            from modelsafe.runtime.jobs.errors import JobTooBigError
            from modelsafe.units import format_size

            raise JobTooBigError(
                f"the job needs {format_size(need)} of VRAM; this server's budget is "
                f"{format_size(budget)}",
                hint="lower width/height or batch_size, or run workers with more VRAM",
            )

    def check_memory(self, size: JobSize) -> None:
        """Without a VRAM budget jobs run here unplanned: a JobTooBigError when this machine's
        memory (all its RAM, or all the GPU's for a ``cuda`` job: a job running now may hold some of
        it, and this one runs after it) cannot hold the job's run.
        With a budget, :meth:`check_route` has checked the job against it."""
        if self.settings.budget is not None:
            return
        from modelsafe.runtime.jobs.routing import check_unplanned

        device = self.settings.device or size.spec.get("device") or "cpu"
        check_unplanned(
            size.spec, size.catalog, device=device, where="this server", size=size, total=True
        )

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every enqueued job has run (True) or ``timeout`` seconds passed (False)."""
        done = threading.Event()

        def wait() -> None:
            self._ids.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self, wait: float = 5.0) -> None:
        """Stop taking jobs (queued ones stay queued for the next start). A job still running
        after ``wait`` seconds is left to die with the process (the thread is a daemon): its row
        keeps its lease, and the next start puts it back in the queue once the lease ends. The
        server must not hang on shutdown for the length of a generation."""
        if self._closed:
            return
        self._closed = True
        self._ids.put(_STOP)
        self._thread.join(wait)
        if self._thread.is_alive():
            return  # (its catalog stays open for it until the process ends)
        self.catalog.close()

    def _loop(self) -> None:
        while True:
            job_id = self._ids.get()
            try:
                if job_id == _STOP:
                    return
                if self._closed:
                    continue
                run_job(self.catalog, job_id, self.settings)
            except Exception:  # noqa: BLE001 - one bad job never stops the queue
                log.exception("job %s: could not be run", job_id)
            finally:
                self._ids.task_done()
