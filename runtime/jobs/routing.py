"""Capacity tiers: which queue a job goes to, and which queues a worker with a budget reads.

A job's need is its ``vram`` field, else the smallest peak the runtime planner can reach for it
(every memory-saving option allowed). It goes to the smallest tier that holds that need; a worker
with a budget of B reads every tier <= B, so whatever it takes fits it (its own plan checks again).

Without a budget a job runs unplanned: fp32 weights, no offload, no tiling (the settings
``generate`` uses when no VRAM plan is asked for). :func:`unplanned_need` prices that run with the
planner's own formulas (``runtime/plan.collect_weights`` for the weights, ``runtime/vram_model`` for
the activations), and :func:`check_unplanned` refuses a job whose run the machine's memory cannot
hold (available RAM on a CPU, the GPU's memory on CUDA). Rule and numbers: docs/deploy.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from modelsafe.errors import ModelsafeError, UsageError
from modelsafe.runtime.jobs.errors import JobTooBigError

if TYPE_CHECKING:
    from modelsafe.registry.catalog import Catalog
    from modelsafe.runtime.plan import Plan
    from modelsafe.types import Part

log = logging.getLogger("modelsafe.jobs")
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
    raise JobTooBigError(
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


@dataclass(frozen=True)
class JobSet:
    """A job's set, resolved: the checkpoint, the accepted add-ons, the slots it lacks."""

    base: Part
    parts: list[Part]
    missing: list[str]


def resolve_job(spec: Mapping[str, Any], catalog: Catalog | None) -> JobSet:
    """Resolve a validated spec's set as ``modelsafe plan`` does (headers only)."""
    from modelsafe.runtime.resolve import resolve

    result = resolve(
        spec["checkpoint"],
        loras=[(lo["ref"], lo.get("weight", 1.0)) for lo in spec.get("loras", [])],
        vae=spec.get("vae"),
        embeddings=[e["ref"] for e in spec.get("embeddings", [])],
        catalog=catalog,
    )
    base, *parts = result.loaded
    accepted = [p for p, r in zip(parts, result.parts, strict=True) if r.status != "rejected"]
    return JobSet(base, accepted, [m.slot for m in result.missing])


class JobRefusedError(UsageError):
    """A job that ``generate`` would refuse before loading anything (an inpainting or
    image-editing checkpoint, a scheduler the model's sampling cannot use, a LoRA the checkpoint
    cannot take...): refused at submit with generate's reason (HTTP 422: nothing is queued)."""

    http_status = 422


def check_before_queue(spec: Mapping[str, Any], catalog: Catalog | None) -> None:
    """Refuse a validated spec now when the run would refuse it before loading: generate's own
    checks (``runtime.generate.check_later_run``: headers and configs only, nothing loads) on the
    request the worker would build; a :class:`JobRefusedError` with generate's reason and hint.
    They run only where this machine has every input: a ref the catalog cannot find here, or
    whose files are elsewhere (a worker reads them), is left to the run. Anything but a
    ModelsafeError that a check raises (the runtime extra not installed here, a reader's bug) is
    logged and left to the run too."""
    from modelsafe.runtime.jobs.spec import build_request

    try:
        request = build_request(spec, catalog)
    except ModelsafeError:
        return  # (the job's size check, or its run, says what is missing)
    try:
        from modelsafe.runtime.generate import check_later_run

        check_later_run(request, catalog=catalog)
    except ModelsafeError as exc:
        raise JobRefusedError(exc.reason, exc.hint) from exc
    except Exception:  # noqa: BLE001 - a check that cannot run here is the run's to make
        log.warning("job spec not checked before queueing", exc_info=True)


def _size(spec: Mapping[str, Any]) -> tuple[int | None, int | None]:
    width: int = spec.get("width") or spec.get("height") or 0
    height: int = spec.get("height") or width
    return (width, height) if width else (None, None)


def plan_job(
    spec: Mapping[str, Any], budget: int, catalog: Catalog | None, resolved: JobSet | None = None
) -> Plan:
    """The runtime plan of a validated spec for ``budget`` bytes."""
    from modelsafe.runtime.plan import plan_parts

    found = resolved or resolve_job(spec, catalog)
    width, height = _size(spec)
    return plan_parts(
        found.base,
        found.parts,
        budget,
        width=width,
        height=height,
        batch=spec.get("batch_size", 1),
        missing=found.missing,
    )


class JobSize:
    """What a validated spec needs, its set resolved once (on first use)."""

    def __init__(self, spec: Mapping[str, Any], catalog: Catalog | None) -> None:
        self.spec = spec
        self.catalog = catalog

    @cached_property
    def resolved(self) -> JobSet:
        return resolve_job(self.spec, self.catalog)

    def need(self) -> int:
        """Bytes of VRAM the job needs: its ``vram`` field, else the planner's smallest peak."""
        from modelsafe.units import parse_size

        if "vram" in self.spec:
            return parse_size(self.spec["vram"])
        # a 1-byte budget: the plan shows the smallest peak
        return plan_job(self.spec, 1, self.catalog, self.resolved).peak

    def unplanned(self, device: str) -> int:
        """Bytes the job takes on ``device`` when it runs without a plan (see the module doc)."""
        return unplanned_need(self.spec, device, self.resolved)


def job_need(spec: Mapping[str, Any], catalog: Catalog | None) -> int:
    """Bytes of VRAM the job needs: its ``vram`` field, else the planner's smallest peak."""
    return JobSize(spec, catalog).need()


def unplanned_need(spec: Mapping[str, Any], device: str, resolved: JobSet) -> int:
    """Peak bytes of the job run without a plan: every weight in fp32 (GGUF stays quantised),
    all loaded at once, plus the largest phase's fp32 activations at the job's size: the
    denoiser and the VAE decoder at batch 1 (the backend makes one image per pipeline call) and
    the decoded images of the whole batch; plus the CUDA context on a GPU."""
    from modelsafe.runtime.plan import DIT_FAMILIES, collect_weights
    from modelsafe.runtime.vram_model import (
        CUDA_CONTEXT_BYTES,
        arch_for,
        decode_activation_bytes,
        denoise_activation_bytes,
        text_activation_bytes,
    )

    base = resolved.base
    family = spec.get("family") or base.family  # the spec's family when the file does not say
    hidden = base.facts.get("hidden_size") if family in DIT_FAMILIES else None
    arch = arch_for(family, hidden if isinstance(hidden, int) else None)
    width, height = _size(spec)
    width = width or arch.default_resolution
    height = height or arch.default_resolution
    batch = int(spec.get("batch_size", 1))
    weights = 0
    for w in collect_weights(base, resolved.parts, resolved.missing):
        native = int(w.sizes.get("native", 0))
        weights += native if w.quantized else int(w.sizes.get("fp32", native))
    activations = max(
        text_activation_bytes(arch, 1, "fp32"),
        denoise_activation_bytes(arch, width, height, 1, "fp32"),
        # slicing=True: one image decoded at a time, every decoded image kept
        decode_activation_bytes(arch, width, height, batch, "fp32", tiling=False, slicing=True),
    )
    overhead = CUDA_CONTEXT_BYTES if device.split(":")[0] == "cuda" else 0
    return weights + activations + overhead


def available_memory(device: str, *, total: bool = False) -> tuple[int, str] | None:
    """Bytes a job run on ``device`` can use here, and what they are. ``total``: all this machine
    has (``MemTotal``, the GPU's whole memory): what a submit is checked against, since another
    job may hold memory now that is free by the time this one runs. Otherwise what is free now:
    on ``cuda`` the GPU's free memory (plus what this process's allocator holds unused), else
    the RAM the kernel reports available (``MemAvailable``): what a job about to start is
    checked against. None when it cannot be told (no CUDA GPU: the run fails with generate's
    own reason)."""
    if device.split(":")[0] == "cuda":
        try:
            import torch
        except ImportError:
            return None
        if not torch.cuda.is_available():
            return None
        free, whole = torch.cuda.mem_get_info()
        if total:
            return int(whole), "GPU memory"
        idle = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        return int(free + idle), "free GPU memory"
    key = "MemTotal:" if total else "MemAvailable:"
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024, "RAM" if total else "available RAM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "RAM"
    except (ValueError, OSError, AttributeError):
        return None


def check_unplanned(
    spec: Mapping[str, Any],
    catalog: Catalog | None,
    *,
    device: str,
    where: str,
    size: JobSize | None = None,
    total: bool = False,
) -> None:
    """A JobTooBigError when the job's unplanned run on ``device`` needs more memory than
    :func:`available_memory` says ``where`` (e.g. "this server") has (``total``: has at all)."""
    from modelsafe.units import format_size

    have = available_memory(device, total=total)
    if have is None:
        return
    limit, what = have
    need = (size or JobSize(spec, catalog)).unplanned(device)
    if need <= limit:
        return
    width, height = _size(spec)
    shape = f"{width}x{height}, " if width else ""
    raise JobTooBigError(
        f"the job ({shape}batch {spec.get('batch_size', 1)}) needs about {format_size(need)} "
        f"to run on {device} without a VRAM plan (fp32 weights, no tiling); {where} has "
        f"{format_size(limit)} of {what}",
        hint="lower width/height or batch_size, or run it where it is planned: a server or "
        "worker with --vram SIZE (VAE tiling and slicing; on a GPU also 16-bit weights and "
        "offload)",
    )
