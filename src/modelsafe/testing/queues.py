"""A job queue for tests of job submission: it keeps what it is given and runs nothing."""

from __future__ import annotations

from typing import Any


class RecordingQueue:
    """A :class:`modelsafe.runtime.jobs.JobQueue` that records each job enqueued in ``jobs``
    (for tests that must not run generation)."""

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def enqueue(self, job: Any) -> None:
        self.jobs.append(job)

    def close(self) -> None:
        pass
