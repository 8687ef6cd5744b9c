"""Errors of the job queue (each with a reason and a hint, like every modelsafe error)."""

from __future__ import annotations

from modelsafe.errors import ModelsafeError, UsageError

SERVE_EXTRA_HINT = "install the serve extra: pip install 'modelsafe[serve]'"


class JobNotFoundError(ModelsafeError):
    """No job has the given id."""

    exit_code = 1


class QueueError(ModelsafeError):
    """The job queue (Redis + Celery) cannot be reached or is not installed."""

    exit_code = 2


class JobTooBigError(UsageError):
    """The job cannot fit the memory of what would run it: a VRAM budget, a worker tier, or the
    machine's RAM/GPU memory (HTTP 422: nothing is queued)."""

    http_status = 422


class JobStateError(UsageError):
    """The job's state does not allow the request, e.g. cancelling a finished job (HTTP 409)."""

    exit_code = 1
    http_status = 409
