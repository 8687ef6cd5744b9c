"""Errors of the job queue (each with a reason and a hint, like every modelsafe error)."""

from __future__ import annotations

from modelsafe.errors import ModelsafeError

SERVE_EXTRA_HINT = "install the serve extra: pip install 'modelsafe[serve]'"


class JobNotFoundError(ModelsafeError):
    """No job has the given id."""

    exit_code = 1


class QueueError(ModelsafeError):
    """The job queue (Redis + Celery) cannot be reached or is not installed."""

    exit_code = 2
