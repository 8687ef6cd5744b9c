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
from modelsafe.types import PACKED_DTYPES, PRECISION_NAMES, Candidate, TensorIndex, TensorInfo
from modelsafe.units import format_size


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
# torrent clients) that stopped before its end, once its control file is gone. In a big file a
# long run counts; in a file of any size, zeros filling a share of the tensors that must not be
# zero count (:func:`must_not_be_zero`: layers' weight matrices and kernels), so the
# zero-initialised tensors of a small real file (an untrained LoRA's lora_up, a zero bias) are
# not taken for one.
ZERO_TAIL_MIN_FILE = 256 << 20  # files the long-run rules apply to
ZERO_TAIL_RUN = 64 << 20  # zeros that always count (in a file of ZERO_TAIL_MIN_FILE or more)
ZERO_TAIL_SHORT_RUN = 4 << 20  # zeros that count when they hold the last 2+ tensors whole
# Zeros in tensors that must not be zero that count, in a file of any size: at least this many
# bytes, and this share of those tensors' bytes (a real file's zero tensors of 2+ dimensions are
# a zero-initialised layer or two, never a tenth of its weights).
ZERO_MUST_MIN = 1 << 20
ZERO_MUST_SHARE = 0.10
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
# Other adapters' factors that LyCORIS and kohya initialise to zeros (LoHa ``hada_w2_a``, LoKr
# ``lokr_w2`` / ``lokr_w2_b``, OFT ``oft_blocks`` / ``oft_diag``, a full LyCORIS ``diff``): an
# untrained one is no damaged file, so they are not counted among the tensors that must not be
# zero.
_ZERO_INIT = re.compile(r"(?:hada_w2_a|lokr_w2(?:_b)?|oft_blocks|oft_diag|\.diff)$")
_NOT_WEIGHTS = frozenset({"BOOL"})  # masks: all False is a value


def must_not_be_zero(t: TensorInfo) -> bool:
    """Whether a real file never holds ``t`` as all zeros: a layer's weight matrix or kernel
    (2+ dimensions: a LoRA's ``lora_down``, a linear or conv weight), not a tensor that is zeros
    by design until trained (:data:`ZERO_BY_DESIGN`), nor a bias, a norm or a scalar."""
    return (
        len(t.shape) >= 2
        and t.numel > 1
        and t.dtype not in _NOT_WEIGHTS
        and not ZERO_BY_DESIGN.search(t.name)
        and not _ZERO_INIT.search(t.name)
    )


_Ranges = list[tuple[int, int]]


def data_spans(
    index: TensorIndex, only: re.Pattern[str] | Callable[[TensorInfo], bool] | None = None
) -> dict[Path, _Ranges]:
    """The byte ranges of tensor data in each file of ``index`` (a file, or a folder whose
    tensors name their file in ``source``); with ``only``, of the tensors whose name it finds
    (a pattern) or that it keeps (a test of the tensor)."""
    spans: dict[Path, _Ranges] = {}
    folder = index.path.is_dir()
    for t in index.tensors:
        if t.offset < 0 or t.nbytes <= 0 or (folder and not t.source):
            continue
        if isinstance(only, re.Pattern) and not only.search(t.name):
            continue
        if callable(only) and not isinstance(only, re.Pattern) and not only(t):
            continue
        file = index.path / t.source if folder else index.path
        spans.setdefault(file, []).append((t.offset, t.offset + t.nbytes))
    return spans


@dataclass(frozen=True)
class FileSpans:
    """Where one file's tensor data is: every tensor's byte range, those of the tensors that are
    zeros by design (:data:`ZERO_BY_DESIGN`) and, merged, those of the tensors that must not be
    zero (:func:`must_not_be_zero`)."""

    ranges: _Ranges
    designed: _Ranges
    must: _Ranges

    @property
    def kept(self) -> _Ranges:
        """The ranges of the tensors that are not zeros by design."""
        return _not_designed(self.ranges, self.designed)

    @property
    def start(self) -> int:
        return min(b for b, _ in self.ranges)

    @property
    def end(self) -> int:
        """Where the last tensor that is not zeros by design ends (the start when none is)."""
        return max((e for _, e in self.kept), default=self.start)

    @property
    def last(self) -> int:
        """Where the last tensor ends."""
        return max(e for _, e in self.ranges)


def file_spans(index: TensorIndex) -> dict[Path, FileSpans]:
    """The :class:`FileSpans` of each file of ``index`` (a file, or a folder whose tensors name
    their file in ``source``)."""
    designed = data_spans(index, ZERO_BY_DESIGN)
    must = data_spans(index, must_not_be_zero)
    return {
        file: FileSpans(ranges, designed.get(file, []), _merge(must.get(file, [])))
        for file, ranges in data_spans(index).items()
    }


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
    ``SEEK_HOLE`` without reading (:func:`zero_regions_warning` decides what counts)."""
    return _per_file(index, _zero_holes)


def _per_file(index: TensorIndex, check: Callable[[Path, FileSpans], str | None]) -> list[str]:
    """``check`` of each file of ``index``, given where its tensor data is."""
    folder = index.path.is_dir()
    found = []
    for file, spans in file_spans(index).items():
        try:
            warning = check(file, spans)
        except OSError:
            warning = None
        if warning:
            found.append(warning if not folder else f"{file.relative_to(index.path)}: {warning}")
    return found


def _many_must_zeros(zeros: int, spans: FileSpans) -> bool:
    """Whether ``zeros`` bytes of the tensors that must not be zero are too many for a real
    file's zero-initialised layers (:data:`ZERO_MUST_MIN`, :data:`ZERO_MUST_SHARE`)."""
    return zeros >= ZERO_MUST_MIN and zeros >= ZERO_MUST_SHARE * _size(spans.must)


_UNFINISHED = "an unfinished or preallocated download? compare its sha256 with the source's"
_NEVER_WRITTEN = "an empty file, preallocated at full size and never written? download it again"


# What the warnings that say a file is damaged or unfinished hold (inspect's zero checks, the
# hashing pass's, a reader's, a downloader's control file beside it, a sidecar's size or
# SHA-256): ``resolve`` shows them as reasons. Those of a file that cannot be loaded as it is
# come first. A file whose tensor data is all zeros (``_NEVER_WRITTEN``) is left out: the
# full-size layouts tests and demos write sparse are all zeros.
UNUSABLE_MARKERS = (
    "the safetensors library refuses such files",
    "has not finished downloading this file",
    "it is not a whole model",
)
DAMAGE_MARKERS = (
    _UNFINISHED,
    "pieces an unfinished torrent or download never wrote",
    "CRC-32 check",
    "a download cut short or damaged",
    "untrained LoRA",
)


def damage_warnings(warnings: list[str]) -> tuple[list[str], list[str]]:
    """The warnings of a report that say the file is damaged or unfinished: (those of a file
    that cannot be loaded as it is, the others)."""
    warnings = [w for w in warnings if _NEVER_WRITTEN not in w]
    unusable = [w for w in warnings if any(m in w for m in UNUSABLE_MARKERS)]
    damaged = [w for w in warnings if w not in unusable and any(m in w for m in DAMAGE_MARKERS)]
    return unusable, damaged


def _zero_tail(file: Path, spans: FileSpans) -> str | None:
    """The zeros before the end of the last tensor that is not zeros by design, less the bytes
    of those tensors; a file whose tensor data is all zeros is said to be one."""
    kept = spans.kept
    if not kept:
        return None
    start, end = spans.start, spans.end
    with open(file, "rb", buffering=0) as fh:
        fd = fh.fileno()
        zeros = _zero_run(fd, start, end, ZERO_TAIL_RUN)
        everything = _is_hole(fd, start, spans.last) or (
            zeros >= end - start
            and _zero_run(fd, end, spans.last, ZERO_TAIL_RUN) >= spans.last - end
        )
    tail = [(end - zeros, end)]
    pieces = _outside(tail, spans.designed)
    run = _size(pieces)
    whole = sum(1 for b, _ in kept if b >= end - zeros)
    big = os.path.getsize(file) >= ZERO_TAIL_MIN_FILE
    long_run = big and (run >= ZERO_TAIL_RUN or (run >= ZERO_TAIL_SHORT_RUN and whole >= 2))
    if not long_run and not _many_must_zeros(_overlap(tail, spans.must), spans):
        return None
    size = format_size(spans.last - start)
    if long_run and run >= ZERO_TAIL_RUN:
        count = f" ({whole}+ tensors)" if whole else ""  # (a shard's last tensor may be longer)
        # (how far a preallocated file's written zeros go back is read no further)
        what = f"the tensor data ends in {ZERO_TAIL_RUN // _MiB} MiB or more of zeros{count}"
        if everything:
            what += f", and all {size} of it are zeros"
    elif everything:
        what = f"all {size} of its tensor data ({len(spans.ranges):,} tensors) are zeros"
    else:
        # (from the first zero byte of a tensor that must not be zero: LoRA up factors between
        # them are unwritten too, zero convolutions before them may be zeros by design)
        zero = end - pieces[0][0]
        what = f"the last {zero / _MiB:,.1f} MiB of tensor data ({whole} tensors) are all zeros"
    return f"{what}: {_NEVER_WRITTEN if everything else _UNFINISHED}"


def _zero_run(fd: int, start: int, end: int, limit: int) -> int:
    """How many bytes before ``end`` (down to ``start``) are zeros: the hole of a sparse file
    that reaches ``end`` without reading, then at most ``limit`` bytes read backwards, a small
    piece first (a real file: one small read)."""
    run = end - max(start, _hole_start(fd, start, end))
    read = 0
    size = 64 << 10
    while read < limit and end - run > start:
        begin = max(start, end - run - size)
        if _is_hole(fd, begin, end - run):
            run = end - begin
        else:
            chunk = os.pread(fd, end - run - begin, begin)
            kept = len(chunk.rstrip(b"\x00"))
            if kept or len(chunk) < end - run - begin:
                return run + len(chunk) - kept
            run += len(chunk)
            read += len(chunk)
        size = _ZERO_CHUNK
    return min(run, end - start)


def _hole_start(fd: int, start: int, end: int) -> int:
    """Where the hole of a sparse file that reaches ``end`` begins (``end`` when the byte
    before it holds data, or the file system cannot say), found going forward from ``start``
    (two ``lseek`` calls a data extent, at most :data:`_HOLE_SEEKS` of them)."""
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None or end <= start:
        return end
    pos = start
    for _ in range(_HOLE_SEEKS):
        try:
            data = os.lseek(fd, pos, seek_data)
        except OSError as exc:  # ENXIO: no data at or after pos
            return pos if exc.errno == errno.ENXIO else end
        if data >= end:
            return pos
        try:
            pos = os.lseek(fd, data, seek_hole)
        except OSError:
            return end
        if pos >= end:
            return end
    return end


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
# of the tensor data, as holes of a sparse file or as written zeros of a preallocated one. Whole
# MiB (aligned to 1 MiB) outside the tensors that are zeros by design count when there are many
# of them, and so do zeros filling a share of the tensors that must not be zero (a small file's
# tensors are smaller than a MiB), so a real model's zero tensors (a bias, padded embedding
# rows, an untrained ControlNet's zero convolutions or LoRA's up factors) are not taken for them.
ZERO_RUNS_MIN = 64 << 20  # zeros in runs that always count
ZERO_RUNS_SHORT = 16 << 20  # zeros in runs that count when they are ZERO_RUNS_SHARE of the data
ZERO_RUNS_SHARE = 0.04
_HOLE_SEEKS = 4096  # holes looked at per file (two lseek calls each)
_ZEROS = bytes(_MiB)


def zero_regions_warning(regions: _Ranges, spans: FileSpans) -> str | None:
    """The warning for ``regions`` (sorted ``[begin, end)`` of a file's tensor data known to be
    zeros, before its end: the run that ends it is :func:`zero_tail_warnings`' business), or
    None when they are too few to be anything but a real model's zero tensors."""
    whole = _whole_mib(_outside(regions, spans.designed))
    runs = _size(whole)
    data = spans.end - spans.start
    long_runs = runs >= ZERO_RUNS_MIN or (
        runs >= ZERO_RUNS_SHORT and runs >= ZERO_RUNS_SHARE * data
    )
    in_must = _overlaps(regions, spans.must)
    if not long_runs and not _many_must_zeros(sum(in_must), spans):
        return None
    in_whole = _overlaps(regions, whole)
    counted = [r for r, m, w in zip(regions, in_must, in_whole, strict=True) if m or w]
    total = _size(counted)
    share = total / data if data else 1.0
    count = f"{len(counted):,} run{'s' if len(counted) > 1 else ''}"
    wide = " of 1 MiB or more" if all(e - b >= _MiB for b, e in counted) else ""
    amount = f"{total // _MiB:,} MiB" if total >= 10 * _MiB else f"{total / _MiB:.1f} MiB"
    return (
        f"{amount} of the tensor data ({share:.0%}) are zeros in {count}{wide} before its end, "
        f"the first at byte {counted[0][0]:,}: pieces an unfinished torrent or download never "
        "wrote? compare its sha256 with the source's"
    )


def _zero_holes(file: Path, spans: FileSpans) -> str | None:
    """:func:`zero_regions_warning` of the holes before the end of the data, counted as the
    hashing pass counts zeros (:class:`ZeroRuns`): their whole MiB and the tensors they hold
    whole."""
    if not spans.kept:
        return None
    with open(file, "rb", buffering=0) as fh:
        holes = _holes(fh.fileno(), spans.start, spans.end)
    return zero_regions_warning(zero_regions(holes, spans.ranges), spans)


def zero_regions(zeros: _Ranges, tensors: _Ranges) -> _Ranges:
    """What of ``zeros`` (sorted, disjoint ranges known to be zeros) the zero checks count: its
    whole, aligned MiB and the ``tensors`` it holds whole, merged."""
    starts = [b for b, _ in zeros]
    whole = []
    for begin, end in tensors:
        i = bisect.bisect_right(starts, begin) - 1
        if i >= 0 and zeros[i][1] >= end:
            whole.append((begin, end))
    return _merge([*_whole_mib(zeros), *whole])


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


def _merge(ranges: _Ranges) -> _Ranges:
    """``ranges`` sorted, those that overlap or touch made one."""
    merged: _Ranges = []
    for b, e in sorted(ranges):
        if merged and b <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        elif e > b:
            merged.append((b, e))
    return merged


def _size(ranges: _Ranges) -> int:
    return sum(e - b for b, e in ranges)


def _overlaps(regions: _Ranges, other: _Ranges) -> list[int]:
    """The bytes each of ``regions`` shares with ``other`` (both sorted, each disjoint)."""
    found = []
    first = 0
    for b, e in regions:
        while first < len(other) and other[first][1] <= b:
            first += 1
        shared = 0
        i = first
        while i < len(other) and other[i][0] < e:
            shared += min(e, other[i][1]) - max(b, other[i][0])
            i += 1
        found.append(shared)
    return found


def _overlap(regions: _Ranges, other: _Ranges) -> int:
    return sum(_overlaps(regions, other))


def _holes(fd: int, start: int, end: int) -> _Ranges:
    """The holes in ``[start, end)`` of a sparse file, but the hole that reaches ``end`` (at most
    :data:`_HOLE_SEEKS` holes; none where the file system cannot say)."""
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
        if data > hole:
            runs.append((hole, data))
        pos = data
    return runs


def _all_zeros(data: bytes | memoryview) -> bool:
    """Whether ``data`` holds only zero bytes (one ``memcmp`` a MiB, stopping at the first
    non-zero byte)."""
    return all(_ZEROS.startswith(data[at : at + _MiB]) for at in range(0, len(data), _MiB))


class ZeroRuns:
    """The zeros in a file's tensor data, seen as the bytes of the one hashing pass stream past
    (a hasher of that pass, giving no hash): written zeros of a preallocated download as well as
    holes. Chunks come in order; each whole, aligned MiB is checked with one ``memcmp`` against
    zeros, and so is each tensor until it holds a non-zero byte (real weights: at once).

    What counts is :func:`zero_regions_warning`'s to say, but the run that ends the data (the
    tail check's). The same pass says whether every LoRA up factor (``ups``) is zeros while its
    other weights are not: an untrained LoRA."""

    name = "zero-runs"
    cost = 0.01

    def __init__(
        self, spans: FileSpans, ups: _Ranges | None = None, up_name: str = "lora_up"
    ) -> None:
        self.spans = spans
        self.start, self.end = spans.start, spans.end
        self.runs: _Ranges = []
        self._last = max(
            self.start, self.end // _MiB * _MiB
        )  # where the data's last, partial MiB begins
        self._last_zero = True  # whether that partial MiB holds only zeros
        self._tensors = sorted(set(spans.ranges))
        self._zero = [True] * len(self._tensors)  # whether each tensor is zeros so far
        self._next = 0  # the first tensor the pass has not gone past
        self._ups = set(ups or [])
        self._up_name = up_name

    @classmethod
    def of_index(cls, index: TensorIndex) -> ZeroRuns | None:
        """The check of a file's tensor data (None for a folder, or a file without tensors)."""
        if index.path.is_dir():
            return None
        spans = file_spans(index).get(index.path)
        if spans is None:
            return None
        ups = data_spans(index, LORA_UP).get(index.path, [])
        peft = any("lora_B" in t.name for t in index.tensors)
        return cls(spans, ups, "lora_B" if peft else "lora_up")

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
        self._see_tensors(offset, data)

    def _see_tensors(self, offset: int, data: bytes | memoryview) -> None:
        """Whether the tensors the chunk at ``offset`` holds bytes of are zeros so far."""
        stop = offset + len(data)
        tensors = self._tensors
        while self._next < len(tensors) and tensors[self._next][1] <= offset:
            self._next += 1
        i = self._next
        while i < len(tensors) and tensors[i][0] < stop:
            if self._zero[i]:
                begin, end = tensors[i]
                piece = data[max(begin, offset) - offset : max(0, min(end, stop) - offset)]
                self._zero[i] = _all_zeros(piece)
            i += 1

    def hexdigest(self) -> str | None:
        return None

    def _regions(self) -> _Ranges:
        """The zeros seen before the end of the data: whole MiB and whole tensors."""
        zero = [r for r, z in zip(self._tensors, self._zero, strict=True) if z]
        merged = _merge([*self.runs, *zero])
        return [(b, min(e, self.end)) for b, e in merged if b < self.end]

    def warning(self) -> str | None:
        """:func:`zero_regions_warning` of the zeros seen, but the run that ends the data."""
        regions = self._regions()
        if regions and (
            regions[-1][1] >= self.end or (regions[-1][1] >= self._last and self._last_zero)
        ):
            regions.pop()
        return zero_regions_warning(regions, self.spans)

    def untrained(self) -> str | None:
        """A warning when the file is a LoRA whose every up factor is zeros (the pass read it)
        while its other weights are not: with them all zeros too it is an empty file, which the
        tail check says."""
        if not self._ups:
            return None
        zero = dict(zip(self._tensors, self._zero, strict=True))
        if not all(zero.get(r, False) for r in self._ups):
            return None
        if self.spans.must and _overlap(self._regions(), self.spans.must) >= _size(self.spans.must):
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
