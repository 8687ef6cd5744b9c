"""Capacity tiers: which queue a job goes to, and which queues a worker with a budget reads.

A job's need is its ``vram`` field, else the smallest peak the runtime planner can reach for it
(every memory-saving option allowed). It goes to the smallest tier that holds that need; a worker
with a budget of B reads every tier <= B, so whatever it takes fits it (its own plan checks again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelsafe.errors import UsageError

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog
    from modelsafe.runtime.plan import Plan

GIB = 1024**3
TIERS_GIB = (2, 4, 6, 8, 12, 16, 24, 48, 80)
QUEUE_PREFIX = "modelsafe.vram."


def queue_name(tier_gib: int) -> str:
    return f"{QUEUE_PREFIX}{tier_gib}gib"


ALL_QUEUES = tuple(queue_name(t) for t in TIERS_GIB)


def tier_for(need: int) -> int:
    """The smallest tier (GiB) that holds ``need`` bytes; a UsageError past the largest."""
    from modelsafe.units import format_size

    for tier in TIERS_GIB:
        if need <= tier * GIB:
            return tier
    raise UsageError(
        f"the job needs {format_size(need)} of VRAM, more than the largest worker tier "
        f"({TIERS_GIB[-1]} GiB)",
        hint="lower width/height or batch_size, or use a smaller checkpoint",
    )


def worker_queues(budget: int | None) -> list[str]:
    """The queues a worker with ``budget`` bytes reads (all of them with no budget)."""
    from modelsafe.units import format_size

    if budget is None:
        return list(ALL_QUEUES)
    tiers = [t for t in TIERS_GIB if t * GIB <= budget]
    if not tiers:
        raise UsageError(
            f"a VRAM budget of {format_size(budget)} is below the smallest tier "
            f"({TIERS_GIB[0]} GiB)",
            hint=f"give --vram {TIERS_GIB[0]}GiB or more, or leave --vram out (no budget)",
        )
    return [queue_name(t) for t in tiers]


def plan_job(spec: Mapping[str, Any], budget: int, catalog: Catalog | None) -> Plan:
    """The runtime plan of a validated spec for ``budget`` bytes."""
    from modelsafe.runtime.plan import plan

    width: int = spec.get("width") or spec.get("height") or 0
    height: int = spec.get("height") or width
    size = (width, height) if width else None
    return plan(
        spec["checkpoint"],
        vram=budget,
        resolution=size,
        batch=spec.get("batch_size", 1),
        loras=[(lo["ref"], lo.get("weight", 1.0)) for lo in spec.get("loras", [])],
        vae=spec.get("vae"),
        embeddings=[e["ref"] for e in spec.get("embeddings", [])],
        catalog=catalog,
    )


def job_need(spec: Mapping[str, Any], catalog: Catalog | None) -> int:
    """Bytes of VRAM the job needs: its ``vram`` field, else the planner's smallest peak."""
    from modelsafe.units import parse_size

    if "vram" in spec:
        return parse_size(spec["vram"])
    return plan_job(spec, 1, catalog).peak  # a 1-byte budget: the plan shows the smallest peak
