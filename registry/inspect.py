"""``inspect``: read + identify (+ hash) one file or folder into a report with evidence."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.errors import FileReadError
from modelsafe.registry.identify import identify
from modelsafe.registry.read import read_index
from modelsafe.types import PRECISION_NAMES, Candidate, TensorIndex


@dataclass(frozen=True)
class InspectReport:
    """Everything ``modelsafe inspect`` says about one path (the documented JSON contract)."""

    path: str
    format: str
    family: str
    kind: str
    variant: str | None
    prediction_type: str | None
    precision: str | None
    parameter_count: int
    weight_bytes: int
    tensor_count: int
    dtype_histogram: dict[str, int]
    vram: dict[str, Any]
    evidence: list[str]
    confidence: float
    candidates: list[dict[str, Any]]
    warnings: list[str]
    facts: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    hashes: dict[str, str | None] | None = None


def dtype_histogram(index: TensorIndex) -> dict[str, int]:
    """Elements held by each dtype, largest first."""
    counts: Counter[str] = Counter()
    for t in index.tensors:
        counts[t.dtype] += t.numel
    return dict(counts.most_common())


def precision_of(histogram: dict[str, int]) -> str | None:
    """The dtype holding most elements, in human form (fp16, bf16, fp8_e4m3fn, Q4_K, ...).

    A GGUF file's quantization wins over the plain dtypes beside it: an SD1.5 UNet at Q8_0 keeps
    most of its weights (3x3 convolutions, norms) in F16, and it is still a Q8_0 file."""
    if not histogram:
        return None
    quantized = [d for d in histogram if _GGUF_QUANT.match(d)]
    dtype = quantized[0] if quantized else next(iter(histogram))
    return PRECISION_NAMES.get(dtype, dtype)


# GGUF's quantized tensor types (Q8_0, Q4_K, IQ4_XS, TQ1_0, MXFP4...): not plain dtypes.
_GGUF_QUANT = re.compile(r"^(?:I?Q\d|TQ\d|MXFP\d)")


def _candidate_json(c: Candidate) -> dict[str, Any]:
    return {
        "family": c.family,
        "kind": c.kind,
        "variant": c.variant,
        "score": round(c.score, 3),
        "detector": c.detector,
        "why": list(c.evidence),
    }


def _vram(index: TensorIndex, family: str, kind: str, facts: dict[str, Any]) -> dict[str, Any]:
    from modelsafe.registry.vram import estimate_component_vram

    return estimate_component_vram(index, family, kind, facts)


def inspect_index(index: TensorIndex) -> InspectReport:
    identity = identify(index)
    hist = dtype_histogram(index)
    facts = dict(identity.facts)
    components = {
        name: {
            k: v
            for k, v in _report_dict(inspect_index(sub)).items()
            if k not in ("path", "components", "metadata", "hashes")
        }
        for name, sub in index.components.items()
    }
    return InspectReport(
        path=str(index.path),
        format=index.format,
        family=identity.family,
        kind=identity.kind,
        variant=identity.variant,
        prediction_type=identity.prediction_type,
        precision=precision_of(hist),
        parameter_count=index.parameter_count,
        weight_bytes=index.weight_bytes,
        tensor_count=len(index.tensors),
        dtype_histogram=hist,
        vram=_vram(index, identity.family, identity.kind, facts),
        evidence=list(identity.evidence),
        confidence=identity.confidence,
        candidates=[_candidate_json(c) for c in identity.candidates],
        warnings=list(index.warnings),
        facts=facts,
        metadata=dict(index.metadata),
        components=components,
    )


def _report_dict(report: InspectReport) -> dict[str, Any]:
    from modelsafe.types import to_jsonable

    value = to_jsonable(report)
    assert isinstance(value, dict)
    return value


# Control files downloaders keep beside a file they have preallocated at full size and are still
# filling: the file reads as complete (its header is there) while its data is partly zeros.
DOWNLOAD_CONTROL_FILES = {".aria2": "aria2", ".!qB": "qBittorrent"}


def unfinished_download(path: Path) -> str | None:
    """A warning when a downloader's control file sits beside ``path`` (download in progress)."""
    for suffix, tool in DOWNLOAD_CONTROL_FILES.items():
        # (os.path.exists, not Path.exists: a name near the 255-byte limit makes the sibling's
        # name too long, which Path.exists raises as ENAMETOOLONG; such a sibling cannot exist)
        if os.path.exists(os.fspath(path) + suffix):
            return (
                f"{path.name}{suffix} is beside it: {tool} has not finished downloading this "
                "file (it is preallocated at full size, so its data may still be zeros); "
                "inspect it again when the download is done"
            )
    return None


def _refuse_partial_download(path: Path) -> None:
    """A file still being downloaded (``model.safetensors.part``) is named as such: read, it would
    only look truncated."""
    from modelsafe.registry.walk import partial_download

    partial = partial_download(path.name, folder=os.path.isdir(path))
    if partial is not None:
        raise FileReadError(
            f"{path}: {partial.what}",
            hint=partial.advice("inspect"),
        )


def inspect_path(path: Path | str, *, with_hashes: bool = False) -> InspectReport:
    """Read, identify and (optionally) hash ``path``."""
    from dataclasses import replace

    _refuse_partial_download(Path(path))
    index = read_index(path)
    report = inspect_index(index)
    unfinished = unfinished_download(Path(path))
    if unfinished:
        report = replace(report, warnings=[*report.warnings, unfinished])
    if with_hashes and Path(path).is_file():
        from modelsafe.registry.hashing import hash_file

        report = replace(report, hashes=hash_file(Path(path), index))
    return report
