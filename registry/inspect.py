"""``inspect``: read + identify (+ hash) one file or folder into a report with evidence."""

from __future__ import annotations

import bisect
import errno
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.errors import FileReadError
from modelsafe.registry.identify import identify
from modelsafe.registry.read import read_index
from modelsafe.types import PACKED_DTYPES, PRECISION_NAMES, Candidate, TensorIndex


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
    quantized = [d for d in histogram if _GGUF_QUANT.match(d) or d in PACKED_DTYPES]
    dtype = quantized[0] if quantized else next(iter(histogram))
    return PRECISION_NAMES.get(dtype, dtype)


# GGUF's quantized tensor types (Q8_0, Q4_K, IQ4_XS, TQ1_0, MXFP4...): not plain dtypes.
_GGUF_QUANT = re.compile(r"^(?:I?Q\d|TQ\d|MXFP\d)")


# What quantized a file's packed 4-bit weights (facts["quantization"]), by their dtype.
_PACKED_QUANTIZATION = {
    "NF4": "bnb-4bit",
    "FP4": "bnb-4bit",
    "NVFP4": "comfy-nvfp4",
    "INT4": "nunchaku-int4",
}
_NUNCHAKU_WEIGHT = ".qweight"  # nunchaku's packed weights (ComfyUI's and bitsandbytes' are .weight)
_COMFY_QUANT = ".comfy_quant"  # ComfyUI's per-layer quantization marker (newer than scaled_fp8)


def packed_quantization(hist: dict[str, int], names: set[str]) -> tuple[dict[str, Any], str]:
    """Facts and an evidence line for weights a detector reads past: packed 4-bit weights
    (bitsandbytes, ComfyUI NVFP4) and ComfyUI's ``comfy_quant`` fp8 layers; ({}, "") if none."""
    packed = [d for d in hist if d in PACKED_DTYPES]
    if packed:
        quantization = _PACKED_QUANTIZATION[packed[0]]
        if any(n.endswith(_NUNCHAKU_WEIGHT) for n in names):  # (nunchaku's fp4 is NVFP4 too)
            quantization = "nunchaku-" + packed[0].lower()
        facts = {"quantization": quantization, "quant_types": sorted(packed)}
        return facts, (
            f"{facts['quantization']} weights ({', '.join(sorted(packed))}) stored packed, 4 "
            "bits a value; shapes, parameters and precision read at their logical size"
        )
    markers = sum(1 for n in names if n.endswith(_COMFY_QUANT))
    if markers and any(d.startswith("F8_") for d in hist):
        return {"quantization": "comfy-fp8"}, (
            f"ComfyUI fp8 layers: {markers} *.comfy_quant markers with weight_scale/input_scale "
            "(ignored for identification)"
        )
    return {}, ""


def ema_parameters(index: TensorIndex, family: str, kind: str) -> int:
    """Parameters of the EMA copy a training checkpoint keeps beside its model (``model_ema.``,
    SD 1.5's v1-5-pruned): not loaded for inference; 0 when there is none."""
    from modelsafe.registry.model_parts import split_components

    if index.components or not any(t.name.startswith("model_ema.") for t in index.tensors):
        return 0
    comps = split_components(index, family, kind)
    if len(comps) < 2:
        return 0
    ema = sum(t.numel for c in comps if c.name == "ema" for t in c.tensors)
    # (many SD 1.5 files keep only model_ema.decay and num_updates: scalars, no copy)
    return ema if ema >= _EMA_COPY_MIN else 0


_EMA_COPY_MIN = 1_000_000  # parameters: less is the EMA's bookkeeping, not a copy of a model


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


def inspect_index(index: TensorIndex, *, holes: bool = True) -> InspectReport:
    """The report for ``index``, with a ``zero-tail`` warning for each file whose tensor data ends
    in a long run of zeros (a few small reads near its end) and, with ``holes``, one for each file
    whose data has long holes before its end (``lseek`` calls only; leave it to a hashing pass of
    the file, whose :class:`ZeroRuns` finds written zeros as well)."""
    from dataclasses import replace

    report = _inspect_index(index)
    found = download_damage_warnings(index) if holes else zero_tail_warnings(index)
    return replace(report, warnings=[*report.warnings, *found]) if found else report


def _inspect_index(index: TensorIndex) -> InspectReport:
    identity = identify(index)
    hist = dtype_histogram(index)
    facts = dict(identity.facts)
    evidence = list(identity.evidence)
    quantized, why = packed_quantization(hist, index.names())
    if quantized and "quantization" not in facts:
        facts.update(quantized)
        evidence.append(why)
    ema = ema_parameters(index, identity.family, identity.kind)
    if ema:
        evidence.append(
            f"an EMA copy of the model (model_ema.*, {ema:,} parameters) is in the file; it is "
            "not loaded for inference, so the parameter count and VRAM leave it out"
        )
    components = {
        name: {
            k: v
            for k, v in _report_dict(_inspect_index(sub)).items()
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
        parameter_count=index.parameter_count - ema,
        weight_bytes=index.weight_bytes,
        tensor_count=len(index.tensors),
        dtype_histogram=hist,
        vram=_vram(index, identity.family, identity.kind, facts),
        evidence=evidence,
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


def unfinished_download(path: Path) -> str | None:
    """A warning when a downloader's control file sits beside ``path`` (download in progress)."""
    from modelsafe.registry.walk import download_control_file

    control = download_control_file(path)
    if control is None:
        return None
    beside, tool = control
    return (
        f"{beside} is beside it: {tool} has not finished downloading this file (it is "
        "preallocated at full size, so its data may still be zeros); inspect it again when the "
        "download is done"
    )


def beside_warnings(path: Path) -> list[str]:
    """What the files beside ``path`` say is unfinished: a downloader's control file (download
    in progress), the rest of a sharded checkpoint's set missing (``x-00001-of-00003``)."""
    from modelsafe.registry.formats.diffusers_dir_reader import lone_shard_warning

    return [w for w in (unfinished_download(path), lone_shard_warning(path)) if w]


# A file whose tensor data ends in zeros: a download preallocated at full size (aria2, IDM,
# torrent clients) that stopped before its end, once its control file is gone. Only big files are
# checked, and only a long run counts, so the zero-initialised last tensors of a small real file
# (an untrained LoRA's lora_up) are not taken for one.
ZERO_TAIL_MIN_FILE = 256 << 20
ZERO_TAIL_RUN = 64 << 20  # zeros that always count
ZERO_TAIL_SHORT_RUN = 4 << 20  # zeros that count when they hold the last 2+ tensors whole
_ZERO_CHUNK = 4 << 20
_MiB = 1 << 20


# Tensors that are zeros by design until trained: a LoRA's up factor (PEFT: ``lora_B``; kohya and
# PEFT initialise it to zeros), a ControlNet's zero convolutions (LDM ``zero_convs``,
# ``middle_block_out``, the hint block's last conv; diffusers ``controlnet_down_blocks``,
# ``controlnet_mid_block``, ``controlnet_cond_embedding.conv_out``; SD3/Flux ``controlnet_blocks``).
# Their zeros are no download's unwritten pieces: the zero checks leave their bytes out.
LORA_UP = re.compile(r"lora[._](?:up|B)(?:\.[^.]+)?\.weight$")
ZERO_BY_DESIGN = re.compile(
    rf"{LORA_UP.pattern}|(?:^|\.)(?:zero_convs|middle_block_out|controlnet_down_blocks"
    r"|controlnet_mid_block|controlnet_blocks|controlnet_single_blocks|input_hint_block\.14"
    r"|controlnet_cond_embedding\.conv_out)\."
)


def data_spans(
    index: TensorIndex, only: re.Pattern[str] | None = None
) -> dict[Path, list[tuple[int, int]]]:
    """The byte ranges of tensor data in each file of ``index`` (a file, or a folder whose
    tensors name their file in ``source``); with ``only``, of the tensors whose name it finds."""
    spans: dict[Path, list[tuple[int, int]]] = {}
    folder = index.path.is_dir()
    for t in index.tensors:
        if t.offset < 0 or t.nbytes <= 0 or (folder and not t.source):
            continue
        if only is not None and not only.search(t.name):
            continue
        file = index.path / t.source if folder else index.path
        spans.setdefault(file, []).append((t.offset, t.offset + t.nbytes))
    return spans


def zero_tail_warnings(index: TensorIndex) -> list[str]:
    """``zero-tail`` warnings for the files of ``index`` (a file, or a folder whose tensors name
    their file in ``source``) whose tensor data ends in a long run of zero bytes. Reads at most
    64 MiB backwards from the end of each file's tensor data, and stops at the first non-zero
    byte (a real file: one small read); a file that cannot be read is left to the other checks."""
    return _per_file(index, _zero_tail)


def download_damage_warnings(index: TensorIndex) -> list[str]:
    """The warnings of :func:`inspect_index` that say the data looks like an unfinished
    download: a zero tail, zero holes."""
    return [*zero_tail_warnings(index), *zero_hole_warnings(index)]


def zero_hole_warnings(index: TensorIndex) -> list[str]:
    """Warnings for the files of ``index`` whose tensor data has long holes before its end (a
    sparse file a torrent client or downloader left unfinished), found with ``SEEK_DATA`` /
    ``SEEK_HOLE`` without reading (:func:`zero_runs_warning` decides what counts)."""
    return _per_file(index, _zero_holes)


_Ranges = list[tuple[int, int]]


def _per_file(
    index: TensorIndex, check: Callable[[Path, _Ranges, _Ranges], str | None]
) -> list[str]:
    """``check`` of each file of ``index``, given its tensors' byte ranges and those of its
    tensors that are zeros by design (:data:`ZERO_BY_DESIGN`)."""
    folder = index.path.is_dir()
    designed = data_spans(index, ZERO_BY_DESIGN)
    found = []
    for file, ranges in data_spans(index).items():
        try:
            warning = check(file, ranges, designed.get(file, []))
        except OSError:
            warning = None
        if warning:
            found.append(warning if not folder else f"{file.relative_to(index.path)}: {warning}")
    return found


def _zero_tail(file: Path, ranges: _Ranges, designed: _Ranges) -> str | None:
    """The zeros before the end of the last tensor that is not zeros by design, less the bytes
    of those tensors."""
    if os.path.getsize(file) < ZERO_TAIL_MIN_FILE:
        return None
    kept = _not_designed(ranges, designed)
    if not kept:
        return None
    start, end = min(b for b, _ in ranges), max(e for _, e in kept)
    with open(file, "rb", buffering=0) as fh:
        zeros = _zero_run(fh.fileno(), start, end, ZERO_TAIL_RUN)
    run = sum(e - b for b, e in _outside([(end - zeros, end)], designed))
    whole = sum(1 for b, e in kept if b >= end - zeros)
    if run < ZERO_TAIL_RUN and (run < ZERO_TAIL_SHORT_RUN or whole < 2):
        return None
    if run >= ZERO_TAIL_RUN:
        count = f" ({whole}+ tensors)" if whole else ""  # (a shard's last tensor may be longer)
        what = f"the tensor data ends in {run // _MiB:,} MiB or more of zeros{count}"
    else:
        what = f"the last {run / _MiB:,.1f} MiB of tensor data ({whole} tensors) are all zeros"
    return f"{what}: an unfinished or preallocated download? compare its sha256 with the source's"


def _zero_run(fd: int, start: int, end: int, limit: int) -> int:
    """How many bytes before ``end`` (down to ``start``, at most ``limit``) are zeros: read
    backwards, a small piece first; holes of a sparse file are skipped without reading."""
    run = 0
    size = 64 << 10
    while run < limit and end - run > start:
        begin = max(start, end - run - size)
        if _is_hole(fd, begin, end - run):
            run = end - begin
        else:
            chunk = os.pread(fd, end - run - begin, begin)
            kept = len(chunk.rstrip(b"\x00"))
            if kept or len(chunk) < end - run - begin:
                return run + len(chunk) - kept
            run += len(chunk)
        size = _ZERO_CHUNK
    return min(run, end - start)


def _is_hole(fd: int, begin: int, end: int) -> bool:
    """Whether ``[begin, end)`` of a sparse file holds no data (reads as zeros)."""
    seek_data = getattr(os, "SEEK_DATA", None)
    if seek_data is None:
        return False
    try:
        return os.lseek(fd, begin, seek_data) >= end
    except OSError as exc:  # ENXIO: no data at or after begin; else SEEK_DATA is not supported
        return exc.errno == errno.ENXIO


# Pieces an unfinished torrent or a parallel download never wrote: runs of zeros before the end
# of the tensor data, as holes of a sparse file or as written zeros of a preallocated one. Only
# whole MiB aligned to 1 MiB count, and only many of them, so a real model's zero tensors (a bias,
# padded embedding rows, an untrained ControlNet's zero convolutions) are not taken for them.
ZERO_RUNS_MIN = 64 << 20  # zeros in runs that always count
ZERO_RUNS_SHORT = 16 << 20  # zeros in runs that count when they are ZERO_RUNS_SHARE of the data
ZERO_RUNS_SHARE = 0.04
_HOLE_SEEKS = 4096  # holes looked at per file (two lseek calls each)
_ZEROS = bytes(_MiB)


def zero_runs_warning(runs: list[tuple[int, int]], data_bytes: int) -> str | None:
    """The warning for ``runs`` (``[begin, end)`` of whole zero MiB before the end of a file's
    ``data_bytes`` of tensor data; the run that ends it is :func:`zero_tail_warnings`' business),
    or None when they are too few to be anything but a real model's zero tensors."""
    total = sum(e - b for b, e in runs)
    if total < ZERO_RUNS_MIN and (total < ZERO_RUNS_SHORT or total < ZERO_RUNS_SHARE * data_bytes):
        return None
    count = f"{len(runs):,} run{'s' if len(runs) > 1 else ''}"
    share = total / data_bytes if data_bytes else 1.0
    return (
        f"{total // _MiB:,} MiB of the tensor data ({share:.0%}) are zeros in {count} of 1 MiB or "
        f"more before its end, the first at byte {runs[0][0]:,}: pieces an unfinished torrent or "
        "download never wrote? compare its sha256 with the source's"
    )


def _zero_holes(file: Path, ranges: _Ranges, designed: _Ranges) -> str | None:
    kept = _not_designed(ranges, designed)
    if not kept:
        return None
    start, end = min(b for b, _ in ranges), max(e for _, e in kept)
    with open(file, "rb", buffering=0) as fh:
        runs = _holes(fh.fileno(), start, end)
    return zero_runs_warning(_whole_mib(_outside(runs, designed)), end - start)


def _not_designed(ranges: _Ranges, designed: _Ranges) -> _Ranges:
    """The ranges of tensors that are not zeros by design."""
    cut = set(designed)
    return [r for r in ranges if r not in cut]


def _outside(runs: _Ranges, cut: _Ranges) -> _Ranges:
    """The pieces of ``runs`` outside every range of ``cut`` (tensors: they never overlap)."""
    cut = sorted(cut)
    ends = [e for _, e in cut]
    pieces = []
    for begin, end in runs:
        pos = begin
        i = bisect.bisect_right(ends, begin)
        while i < len(cut) and cut[i][0] < end:
            if cut[i][0] > pos:
                pieces.append((pos, cut[i][0]))
            pos = max(pos, cut[i][1])
            i += 1
        if end > pos:
            pieces.append((pos, end))
    return pieces


def _whole_mib(runs: _Ranges) -> _Ranges:
    """The whole aligned MiB of each run (runs holding none left out)."""
    aligned = ((-(-b // _MiB) * _MiB, e // _MiB * _MiB) for b, e in runs)
    return [(b, e) for b, e in aligned if e > b]


def _holes(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """The whole aligned MiB of each hole in ``[start, end)`` of a sparse file, but the hole that
    reaches ``end`` (at most :data:`_HOLE_SEEKS` holes; none where the file system cannot say)."""
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return []
    runs = []
    pos = start
    for _ in range(_HOLE_SEEKS):
        try:
            hole = os.lseek(fd, pos, seek_hole)
            data = os.lseek(fd, hole, seek_data) if hole < end else end
        except OSError:  # ENXIO: no data after the hole (the tail); else not supported
            break
        if data >= end:
            break
        begin, stop = -(-hole // _MiB) * _MiB, data // _MiB * _MiB
        if stop > begin:
            runs.append((begin, stop))
        pos = data
    return runs


class ZeroRuns:
    """The runs of whole, aligned zero MiB in a file's tensor data, seen as the bytes of the one
    hashing pass stream past (a hasher of that pass, giving no hash): written zeros of a
    preallocated download as well as holes. Chunks come in order; a MiB is checked with one
    ``memcmp`` against zeros, which stops at the first non-zero byte (real weights: at once).

    Tensors that are zeros by design (``designed``) are left out: the data ends with the last
    tensor that is not one. The same pass says whether every LoRA up factor (``ups``) is zeros:
    an untrained LoRA (checked until one holds a non-zero byte: a trained one, at once)."""

    name = "zero-runs"
    cost = 0.01

    def __init__(
        self,
        start: int,
        end: int,
        designed: _Ranges | None = None,
        ups: _Ranges | None = None,
        up_name: str = "lora_up",
    ) -> None:
        self.start, self.end = start, end
        self.runs: list[tuple[int, int]] = []
        self._last = max(start, end // _MiB * _MiB)  # where the data's last, partial MiB begins
        self._last_zero = True  # whether that partial MiB holds only zeros
        self._designed = designed or []
        self._ups = sorted(ups or [])
        self._up_ends = [e for _, e in self._ups]
        self._ups_zero = bool(self._ups)  # whether every LoRA up factor seen so far is zeros
        self._up_name = up_name

    @classmethod
    def of_index(cls, index: TensorIndex) -> ZeroRuns | None:
        """The check of a file's tensor data (None for a folder, or a file without tensors)."""
        ranges = data_spans(index).get(index.path) if not index.path.is_dir() else None
        if not ranges:
            return None
        designed = data_spans(index, ZERO_BY_DESIGN).get(index.path, [])
        ups = data_spans(index, LORA_UP).get(index.path, [])
        start = min(b for b, _ in ranges)
        kept = _not_designed(ranges, designed)
        peft = any("lora_B" in t.name for t in index.tensors)
        end = max((e for _, e in kept), default=start)
        return cls(start, end, designed, ups, "lora_B" if peft else "lora_up")

    def update(self, offset: int, data: bytes | memoryview) -> None:
        first = -(-max(offset, self.start) // _MiB) * _MiB
        stop = min(offset + len(data), self.end)
        for begin in range(first, stop - _MiB + 1, _MiB):
            if _ZEROS.startswith(data[begin - offset : begin - offset + _MiB]):
                if self.runs and self.runs[-1][1] == begin:
                    self.runs[-1] = (self.runs[-1][0], begin + _MiB)
                else:
                    self.runs.append((begin, begin + _MiB))
        if offset <= self._last < offset + len(data):
            self._last_zero = _ZEROS.startswith(data[self._last - offset : self.end - offset])
        if self._ups_zero:
            self._ups_zero = self._ups_all_zeros(offset, data)

    def _ups_all_zeros(self, offset: int, data: bytes | memoryview) -> bool:
        """Whether the bytes of LoRA up factors in ``data`` are all zeros."""
        stop = offset + len(data)
        i = bisect.bisect_right(self._up_ends, offset)
        while i < len(self._ups) and self._ups[i][0] < stop:
            begin, end = max(self._ups[i][0], offset) - offset, min(self._ups[i][1], stop) - offset
            for at in range(begin, end, _MiB):
                if not _ZEROS.startswith(data[at : min(at + _MiB, end)]):
                    return False
            i += 1
        return True

    def hexdigest(self) -> str | None:
        return None

    def warning(self) -> str | None:
        """:func:`zero_runs_warning` of the runs seen, but the one that ends the data."""
        runs = list(self.runs)
        if runs and runs[-1][1] >= self._last and self._last_zero:
            runs.pop()
        return zero_runs_warning(_whole_mib(_outside(runs, self._designed)), self.end - self.start)

    def untrained(self) -> str | None:
        """A warning when the file is a LoRA whose every up factor is zeros (the pass read it)."""
        if not self._ups_zero:
            return None
        return f"untrained LoRA: every {self._up_name} weight is zero, so it changes nothing"


def read_for_inspect(path: Path, command: str = "inspect") -> TensorIndex:
    """``read_index(path)``, a file still being downloaded told as such
    (:func:`refuse_partial_download`; an aria2-filled file that does not read yet is named as
    unfinished, not damaged)."""
    from modelsafe.registry.walk import unfinished_error

    refuse_partial_download(path, command)
    try:
        return read_index(path)
    except FileReadError as exc:  # (aria2 still filling it: not a file to download again)
        raise unfinished_error(path, exc, command) from None


def refuse_partial_download(
    path: Path, command: str = "inspect", *, preallocated: bool = False
) -> None:
    """A file still being downloaded (``model.safetensors.part``; with ``preallocated``, also one
    beside a downloader's control file, ``model.safetensors.aria2``) is named as such: read, it
    would only look truncated (or full of zeros); the hint says to ``command`` again later."""
    from modelsafe.registry.walk import download_state

    partial = download_state(path, unreadable=preallocated)
    if partial is not None:
        raise FileReadError(
            f"{path}: {partial.what}",
            hint=partial.advice(command),
        )


def inspect_path(
    path: Path | str, *, with_hashes: bool = False, index: TensorIndex | None = None
) -> InspectReport:
    """Read, identify and (optionally) hash ``path`` (``index``: ``path`` already read, by a
    caller that uses the index too)."""
    from dataclasses import replace

    if index is None:
        index = read_for_inspect(Path(path))
    hashing = with_hashes and Path(path).is_file()
    report = inspect_index(index, holes=not hashing)
    beside = beside_warnings(Path(path))
    if beside:
        report = replace(report, warnings=[*report.warnings, *beside])
    if hashing:
        from modelsafe.registry.hashing import hash_file, pop_warnings
        from modelsafe.registry.hf_cache import refuse_corrupt_blob

        hashes = hash_file(Path(path), index)
        refuse_corrupt_blob(Path(path), hashes.get("sha256"))
        found = pop_warnings(hashes)  # (a corrupt zip member, zero runs: the same read found it)
        report = replace(report, hashes=hashes, warnings=[*report.warnings, *found])
    return with_sidecar(report, Path(path))


def with_sidecar(report: InspectReport, path: Path) -> InspectReport:
    """``report`` of the file at ``path`` with what its download manager's sidecar says
    (:mod:`modelsafe.registry.sidecars`: ``facts["civitai"]`` and the warnings where the file
    disagrees: family, size, SHA-256 when hashed)."""
    from dataclasses import replace

    from modelsafe.registry.sidecars import sidecar_findings

    if not path.is_file():
        return report
    facts, found = sidecar_findings(path, report.family, (report.hashes or {}).get("sha256"))
    if not facts:
        return report
    return replace(report, facts={**report.facts, **facts}, warnings=[*report.warnings, *found])
