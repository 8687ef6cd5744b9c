"""``modelsafe worker``: take generation jobs from Redis (Celery) and run them within a budget."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from modelsafe.commands.catalog_option import catalog_option


@click.command()
@click.option(
    "--broker",
    envvar="MODELSAFE_BROKER",
    required=True,
    metavar="URL",
    help="Redis URL of the job queue, e.g. redis://127.0.0.1:6379/0 [env MODELSAFE_BROKER].",
)
@click.option(
    "--outputs",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("outputs"),
    show_default=True,
    help="Folder the images go to (OUTPUTS/<job id>/...); shared storage for a team.",
)
@click.option(
    "--vram",
    default=None,
    metavar="SIZE",
    help="This worker's VRAM budget, e.g. 8GiB: it takes the tiers that fit and plans each "
    "job for it [no budget: every tier, no plan check].",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Where jobs run [the job's `device`, else cpu].",
)
@click.option("--name", default=None, help="Worker name in the jobs table [modelsafe-HOST-PID].")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs at once (threads; keep 1 per GPU).",
)
@click.option(
    "--lease",
    "lease_s",
    type=click.FloatRange(min=0.5),
    default=60.0,
    show_default=True,
    help="Seconds a claim lasts without renewal; a dead worker's job is taken over after it.",
)
@click.option(
    "--visibility-timeout",
    type=click.FloatRange(min=1),
    default=None,
    help="Seconds before Redis delivers an unacknowledged message again [3600].",
)
@click.option(
    "--loglevel",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default="INFO",
    show_default=True,
)
@catalog_option
@click.pass_context
def worker(
    ctx: click.Context,
    broker: str,
    outputs: Path,
    vram: str | None,
    device: str | None,
    name: str | None,
    concurrency: int,
    lease_s: float,
    visibility_timeout: float | None,
    loglevel: str,
) -> int:
    """Run generation jobs from the queue (Redis + Celery), recording outputs in the catalog.

    The worker reads the capacity tiers its --vram budget holds (see docs/deploy.md, "How jobs
    are routed"), plans every job for its budget and fails one that cannot fit with the reason.
    A job whose worker is killed is taken over by another once its lease expires; each job
    completes once. Stop with Ctrl-C (the running job finishes first).

    \b
    Example:
      modelsafe --catalog postgresql+psycopg://db/modelsafe worker \\
          --broker redis://queue:6379/0 --vram 24GiB --device cuda --outputs /shared/outputs

    Exit codes: 0 stopped, 2 bad option, Redis unreachable or Celery not installed.
    """
    import logging

    from modelsafe.commands.catalog_option import open_cli_catalog
    from modelsafe.runtime.jobs.celery_queue import check_broker, run_worker
    from modelsafe.runtime.jobs.routing import worker_queues
    from modelsafe.runtime.jobs.runner import WorkerSettings
    from modelsafe.units import format_size, parse_size

    budget = parse_size(vram) if vram is not None else None
    queues = worker_queues(budget)
    check_broker(broker)
    settings = WorkerSettings(
        name=name or f"modelsafe-{socket.gethostname()}-{os.getpid()}",
        outputs=outputs.resolve(),
        budget=budget,
        device=device,
        lease_s=lease_s,
    )
    catalog = open_cli_catalog(ctx)
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _preload()
    click.echo(
        f"worker {settings.name}: budget {format_size(budget) if budget else 'none'}, "
        f"queues {', '.join(q.rsplit('.', 1)[-1] for q in queues)}, outputs {settings.outputs}",
        err=True,
    )
    try:
        return run_worker(
            broker,
            catalog,
            settings,
            concurrency=concurrency,
            visibility_timeout=visibility_timeout,
            loglevel=loglevel,
        )
    finally:
        catalog.close()


def _preload() -> None:
    """Import the generation stack once, before the first job (it takes seconds)."""
    import modelsafe.runtime.generate  # noqa: F401

    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        pass  # the job fails with generate's own reason
