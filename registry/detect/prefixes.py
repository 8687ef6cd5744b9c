"""Key prefixes of single-file models, and views of an index with a prefix stripped.

Single files name the same weights in several ways: ``model.diffusion_model.input_blocks...``
(LDM/SGM checkpoints, ComfyUI saves), bare ``input_blocks...`` (UNet-only files, GGUF),
``diffusion_model.``/``unet.``/``transformer.`` (exporters' own choices). Detectors do not list
every spelling: they name a few *anchor* suffixes they expect and :func:`find_prefix` finds
whatever sits in front of them. :class:`KeyView` then answers shape questions on stripped names.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modelsafe.types import TensorIndex, TensorInfo

# Prefixes in front of the diffusion model in single files, most specific first.
DIFFUSION_MODEL_PREFIXES: tuple[str, ...] = (
    "model.diffusion_model.",
    "diffusion_model.",
    "model.model.",
    "unet.",
    "transformer.",
    "model.",
    "net.",
)

# Prefixes of the parts that sit beside the diffusion model in a full checkpoint.
VAE_PREFIXES: tuple[str, ...] = ("first_stage_model.", "vae.")
# The text encoders ComfyUI's checkpoint saves hold, each under ``text_encoders.<name>.``
# (``<name>.transformer.*`` is the encoder's state dict in ComfyUI's text_encoders modules):
# the CLIPs and T5 of SD3/Flux, UMT5-XXL (Wan), Gemma-2-2B (Lumina 2), Qwen2.5-VL-7B
# (Qwen-Image), Qwen3-4B (Z-Image, FLUX.2 klein 4B), Llama (HiDream, HunyuanVideo),
# Mistral-Small-3 24B (FLUX.2 dev) and Pile-T5-XL (AuraFlow).
COMFY_TEXT_ENCODERS: tuple[str, ...] = (
    "clip_l",
    "clip_g",
    "t5xxl",
    "umt5xxl",
    "gemma2_2b",
    "qwen25_7b",
    "qwen3_4b",
    "llama",
    "mistral3_24b",
    "pile_t5xl",
)
COMFY_TEXT_ENCODER_PREFIXES: tuple[str, ...] = tuple(
    f"text_encoders.{name}." for name in COMFY_TEXT_ENCODERS
)
# Those beyond SD3/Flux's CLIP-L, CLIP-G and T5-XXL: a model's first (or only) text encoder.
COMFY_FIRST_TEXT_ENCODER_PREFIXES: tuple[str, ...] = tuple(
    p for p in COMFY_TEXT_ENCODER_PREFIXES if p.split(".")[1] not in ("clip_g", "t5xxl")
)
TEXT_ENCODER_PREFIXES: tuple[str, ...] = (
    "cond_stage_model.",
    "conditioner.embedders.0.",
    "conditioner.embedders.1.",
    *COMFY_TEXT_ENCODER_PREFIXES,
    "text_encoder.",
    "text_encoder_2.",
    "text_encoder_3.",
)

# ComfyUI "scaled fp8" files: a marker tensor plus a scale per quantised weight.
SCALED_FP8_MARKER = "scaled_fp8"
SCALE_SUFFIXES: tuple[str, ...] = (".scale_weight", ".scale_input")


def find_prefix(names: Iterable[str], anchors: Iterable[str]) -> str | None:
    """The prefix ``p`` such that ``p + anchor`` is a name for the most anchors; None if none.

    ``anchors`` are suffixes a layout is known to have (``"double_blocks.0.img_attn.qkv.weight"``);
    an anchor must match at a key boundary (the prefix is empty or ends with ``.``).
    """
    anchor_list = list(anchors)
    any_anchor = tuple(anchor_list)
    votes: Counter[str] = Counter()
    for name in names:
        if not name.endswith(any_anchor):  # one C-level test per name; few names get past it
            continue
        for anchor in anchor_list:
            if name.endswith(anchor):
                prefix = name[: -len(anchor)]
                if not prefix or prefix.endswith("."):
                    votes[prefix] += 1
    if not votes:
        return None
    best = max(votes.values())
    # Equal votes: prefer the shortest prefix (the outermost model).
    return min((p for p, v in votes.items() if v == best), key=len)


def strip(tensors: Iterable[TensorInfo], prefix: str) -> dict[str, TensorInfo]:
    """Tensors whose name starts with ``prefix``, keyed by the rest of the name."""
    n = len(prefix)
    return {t.name[n:]: t for t in tensors if t.name.startswith(prefix)}


def prefixes_present(names: Iterable[str], prefixes: Iterable[str]) -> dict[str, int]:
    """How many names start with each of ``prefixes`` (only those with at least one)."""
    wanted = list(prefixes)
    counts: Counter[str] = Counter()
    for name in names:
        for p in wanted:
            if name.startswith(p):
                counts[p] += 1
                break
    return dict(counts)


def shape_text(shape: Iterable[int]) -> str:
    """``[320, 768]``: a shape as evidence strings write it."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class KeyView:
    """The tensors of one model inside a file, names stripped of ``prefix``."""

    prefix: str
    tensors: Mapping[str, TensorInfo] = field(default_factory=dict)

    @classmethod
    def of(cls, index: TensorIndex, prefix: str) -> KeyView:
        return cls(prefix, strip(index.tensors, prefix))

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def shape(self, name: str) -> tuple[int, ...] | None:
        t = self.tensors.get(name)
        return t.shape if t is not None else None

    def dim(self, name: str, axis: int) -> int | None:
        """One dimension of a tensor's shape; None when the tensor or the axis is missing."""
        shape = self.shape(name)
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        return shape[axis]

    def full(self, name: str) -> str:
        """The name as stored in the file (prefix put back), for evidence."""
        return self.prefix + name

    def says(self, name: str) -> str:
        """``<full name> has shape [a, b]`` (or ``... is absent``), for evidence."""
        shape = self.shape(name)
        if shape is None:
            return f"{self.full(name)} is absent"
        return f"{self.full(name)} has shape {shape_text(shape)}"

    def has_prefix(self, start: str) -> bool:
        return any(n.startswith(start) for n in self.tensors)

    def first(self, suffix: str) -> str | None:
        """The first name (sorted naturally) ending with ``suffix``."""
        found = [n for n in self.tensors if n.endswith(suffix)]
        return min(found, key=natural_key) if found else None

    def count_blocks(self, start: str) -> int:
        """How many numbered children ``start`` has: ``count_blocks("double_blocks.")`` -> 19."""
        seen: set[int] = set()
        n = len(start)
        for name in self.tensors:
            if name.startswith(start):
                head = name[n:].split(".", 1)[0]
                if head.isdigit():
                    seen.add(int(head))
        return max(seen) + 1 if seen else 0


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders ``blocks.2`` before ``blocks.10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def scaled_fp8_markers(names: Iterable[str]) -> tuple[str | None, int]:
    """ComfyUI scaled-fp8 evidence: the marker tensor's full name (or None) and scale count."""
    marker = None
    scales = 0
    for name in names:
        if name == SCALED_FP8_MARKER or name.endswith("." + SCALED_FP8_MARKER):
            marker = name
        elif name.endswith(SCALE_SUFFIXES):
            scales += 1
    return marker, scales
