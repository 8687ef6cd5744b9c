"""Frozen values that flow between the steps of the pipeline (read -> identify -> hash -> audit).

Every step takes the output of the one before; all of them are plain data, safe to pickle and to
turn into JSON with :func:`to_jsonable`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Bytes per element for the safetensors dtype names modelsafe uses everywhere.
# GGUF block-quantised types are not listed: their size is computed per block by the GGUF reader.
DTYPE_SIZES: dict[str, float] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2FNUZ": 1,
    "F4": 0.5,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "C64": 8,
    "C128": 16,  # torch's complex128: sized for audits; no safetensors dtype holds it
    # 4-bit weights a safetensors file stores packed two to a U8 byte; the reader gives them
    # these dtypes with their logical shape (modelsafe.registry.formats.safetensors_reader).
    "NF4": 0.5,  # bitsandbytes NF4
    "FP4": 0.5,  # bitsandbytes FP4
    "NVFP4": 0.5,  # ComfyUI's NVFP4 (comfy_quant)
    "INT4": 0.5,  # nunchaku's SVDQuant/AWQ int4 (qweight)
}
# Dtypes no file names: packed 4-bit weights read back to their logical shape.
PACKED_DTYPES: frozenset[str] = frozenset({"NF4", "FP4", "NVFP4", "INT4"})
# The dtypes a safetensors file may hold (the library's own list; C128 is not one of them).
SAFETENSORS_DTYPES: frozenset[str] = frozenset(DTYPE_SIZES) - {"C128"} - PACKED_DTYPES
# bitsandbytes' packed state of a 4-bit weight ``<name>``: ``<name>.quant_state.bitsandbytes__nf4``
# (or ``__fp4``), U8 bytes of JSON holding the weight's shape.
BNB_STATE = ".quant_state.bitsandbytes__"
_BNB_SIDE = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map")
# nunchaku's SVDQuant layer beside its ``qweight`` (int4 and NVFP4 alike).
_NUNCHAKU_SIDE = ("@wscales", "@wtscale", "@wcscales", "@smooth_factor", "@smooth_factor_orig")
# What a packed weight ``<name>`` keeps beside it (its quantization state, not parameters of
# the model): bitsandbytes' QuantState.as_dict(packed=True), ComfyUI's comfy_quant layers,
# nunchaku's SVDQuant/AWQ layers (their low-rank proj_down/proj_up are parameters).
QUANT_STATE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "NF4": (*_BNB_SIDE, BNB_STATE + "nf4"),
    "FP4": (*_BNB_SIDE, BNB_STATE + "fp4"),
    # (ComfyUI's NVFP4 weight, then nunchaku's NVFP4 qweight)
    "NVFP4": ("_scale", "_scale_2", "@input_scale", "@comfy_quant", *_NUNCHAKU_SIDE),
    "INT4": (*_NUNCHAKU_SIDE, "@wzeros"),  # (AWQ W4A16 layers keep zero points too)
}

# The kinds of file the built-in detectors tell (``ls --kind``, ``set --kind``; a plugin's
# detector may give others). PART_KINDS are a generation pipeline's own parts; every other
# kind is used beside a pipeline (an add-on, a tool) and is never loaded as one of its parts.
PART_KINDS = (
    "checkpoint",
    "unet",
    "transformer",
    "vae",
    "text_encoder",
    "image_encoder",
    "pipeline",
)
KINDS = (
    *PART_KINDS[:-1],
    "lora",
    "lycoris",
    "controlnet",
    "t2i_adapter",
    "ip_adapter",
    "embedding",
    "hypernetwork",
    "photomaker",
    "motion_module",
    "style_model",
    "upscaler",
    PART_KINDS[-1],
    "unknown",
)
NOT_PART_KINDS = tuple(k for k in KINDS if k not in PART_KINDS and k != "unknown")
# The kinds that hold a denoiser: what generate runs and resolve pairs add-ons with.
BASE_KINDS = ("checkpoint", "unet", "transformer", "pipeline")


def a_kind(kind: str) -> str:
    """A kind in words with its article: ``a motion module``, ``an ip adapter``."""
    if kind in ("unknown", ""):
        return "a file of unknown kind"
    return ("an " if kind[:1] in "aeiou" else "a ") + kind.replace("_", " ")


# Human names for precisions, as ``inspect`` reports them.
PRECISION_NAMES: dict[str, str] = {
    "F64": "fp64",
    "F32": "fp32",
    "F16": "fp16",
    "BF16": "bf16",
    "F8_E4M3": "fp8_e4m3fn",
    "F8_E5M2": "fp8_e5m2",
    "F8_E4M3FNUZ": "fp8_e4m3fnuz",
    "F8_E5M2FNUZ": "fp8_e5m2fnuz",
    "I8": "int8",
    "U8": "uint8",
    "NF4": "nf4",
    "FP4": "fp4",
    "NVFP4": "nvfp4",
    "INT4": "int4",
}


class Format(enum.StrEnum):
    """What a file really is, judged from its bytes (never from its name)."""

    SAFETENSORS = "safetensors"
    TORCH_ZIP = "torch-zip"
    LEGACY_TORCH = "legacy-torch"
    PICKLE = "pickle"
    GGUF = "gguf"
    NUMPY = "numpy"
    ZIP = "zip"
    DIFFUSERS_DIR = "diffusers-dir"
    LFS_POINTER = "git-lfs-pointer"
    HTML = "html"
    JSON = "json"
    TEXT = "text"
    ARCHIVE = "archive"  # gzip, xz, 7z, rar, zstd, bzip2, tar: a model packed, not a model
    ZEROS = "zeros"  # nothing but zero bytes: a preallocated download that got no data
    EMPTY = "empty"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor: where its bytes are and what they mean. No data is held."""

    name: str
    dtype: str  # safetensors dtype name (F16, BF16, ...) or a GGUF quant type (Q4_K, Q8_0, ...)
    shape: tuple[int, ...]
    offset: int = -1  # absolute byte offset of the data in ``source`` (-1: not known)
    nbytes: int = 0
    source: str = ""  # zip member or shard file the bytes live in ("" = the file itself)
    # (dtype, shape) as the file stores them, when the reader gave the tensor its logical ones (a
    # packed 4-bit weight: U8 [numel/2, 1] read as NF4 [out, in]); None when they are the same.
    # What identifies the bytes (content_id) uses these.
    stored: tuple[str, tuple[int, ...]] | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class TensorIndex:
    """A file's (or diffusers folder's) table of tensors, read from headers only."""

    path: Path
    format: str
    tensors: tuple[TensorInfo, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # For multi-part models (diffusers folders): component name -> that component's index.
    components: Mapping[str, TensorIndex] = field(default_factory=dict)
    # Free-form facts a reader found (e.g. GGUF architecture, pickle protocol); JSON-able values.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def names(self) -> set[str]:
        return {t.name for t in self.tensors}

    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}

    @property
    def parameter_count(self) -> int:
        """Elements of the model's parameters: a packed 4-bit weight counts at its logical
        shape, and the quantization state beside it (absmax, scales) not at all."""
        state = quant_state_names(self.tensors)
        return sum(t.numel for t in self.tensors if t.name not in state)

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def quant_state_names(tensors: Iterable[TensorInfo]) -> set[str]:
    """The names of the quantization-state tensors kept beside packed 4-bit weights (see
    :data:`QUANT_STATE_SUFFIXES`; ``@x``: the sibling ``x`` of the weight's module)."""
    names: set[str] = set()
    for t in tensors:
        for suffix in QUANT_STATE_SUFFIXES.get(t.dtype, ()):
            if suffix.startswith("@"):
                names.add(t.name.rpartition(".")[0] + "." + suffix[1:])
            else:
                names.add(t.name + suffix)
    return names


@dataclass(frozen=True)
class Candidate:
    """One detector's answer: what the file might be, how sure, and why."""

    family: str
    kind: str
    score: float  # 0..1
    evidence: tuple[str, ...] = ()
    variant: str | None = None
    prediction_type: str | None = None
    detector: str = ""
    # Extra facts the detector read off the layout (e.g. context_dim, latent_channels, scale).
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Identity:
    """What a file is, with the evidence that decided it."""

    family: str
    kind: str
    variant: str | None
    prediction_type: str | None
    confidence: float
    evidence: tuple[str, ...]
    candidates: tuple[Candidate, ...] = ()  # the alternatives that lost, best first
    facts: Mapping[str, Any] = field(default_factory=dict)
    detector: str = ""


@dataclass(frozen=True)
class Finding:
    """Something an audit noticed. ``severity`` is ``unsafe``, ``error`` or ``warning``."""

    severity: str
    code: str
    message: str
    location: str = ""  # e.g. "archive/data.pkl @ byte 123"
    scanner: str = ""


@dataclass(frozen=True)
class Verdict:
    """The audit's answer for one file: ``safe``, ``unsafe`` or ``error``."""

    path: Path
    status: str
    format: str
    findings: tuple[Finding, ...] = ()

    @property
    def exit_code(self) -> int:
        return {"safe": 0, "unsafe": 1}.get(self.status, 2)


@dataclass(frozen=True)
class Part:
    """One model in a set being resolved (checkpoint, LoRA, VAE, ...) and what is known of it."""

    role: str  # checkpoint | lora | vae | embedding | controlnet | text_encoder
    ref: str  # what the user named: a path, a catalog name or a hash prefix
    family: str
    kind: str
    variant: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)
    index: TensorIndex | None = None  # the tensor table; None when known from the catalog only
    path: str | None = None
    weight: float = 1.0  # LoRA strength
    report: Mapping[str, Any] = field(default_factory=dict)  # inspect report (JSON form)
    # For the checkpoint while its set is checked: the text encoders given beside it (a
    # transformer-only Flux file + clip_l + t5xxl), so LoRA text-encoder keys can land on them.
    beside: tuple[Part, ...] = ()


@dataclass(frozen=True)
class Compatibility:
    """One compatibility rule's answer about a part: ``accept``, ``reject`` or ``warn``, and why."""

    rule: str
    status: str
    reason: str
    evidence: tuple[str, ...] = ()


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, paths, enums, tuples and mappings into JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value
