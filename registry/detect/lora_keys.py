"""Read LoRA / LyCORIS key names: which layer each key patches, which part it is, whose naming.

LoRA files name the layer they patch in several conventions (public facts of the trainers):

- kohya sd-scripts and LyCORIS: ``lora_unet_<module path, dots as _>.lora_down.weight`` /
  ``.lora_up.weight`` / ``.alpha``; text encoders ``lora_te_`` (SD1/SD2), ``lora_te1_`` and
  ``lora_te2_`` (SDXL), ``lora_te3_`` (SD3 T5); LyCORIS parts ``hada_w1_a`` ... (LoHa),
  ``lokr_w1`` ... (LoKr), ``lora_mid`` (LoCon with CP decomposition), ``diff`` (full), ``oft_*``;
- PEFT (what diffusers saves today): ``unet.<module>.lora_A.weight`` / ``lora_B.weight``,
  ``transformer.<module>...`` (Flux, SD3), ``text_encoder.`` / ``text_encoder_2.``;
- older diffusers: ``unet.<...>.processor.to_q_lora.down.weight``, ``...lora.down.weight``;
- ComfyUI / original naming: ``diffusion_model.<original module>.lora_down.weight`` (or lora_A).

:func:`parse_key` splits one name; :func:`group_modules` collects the parts of each patched layer.
Module paths are compared in *flat* form (every ``.`` as ``_``) so one pattern fits all namings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from modelsafe.types import TensorInfo

# Part suffix -> canonical part name. Longest suffixes first where one ends another.
PART_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_lora.down.weight", "down"),
    ("_lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora_B.bias", "up_bias"),
    (".alpha", "alpha"),
    (".dora_scale", "dora_scale"),
    (".hada_w1_a", "hada_w1_a"),
    (".hada_w1_b", "hada_w1_b"),
    (".hada_w2_a", "hada_w2_a"),
    (".hada_w2_b", "hada_w2_b"),
    (".hada_t1", "hada_t1"),
    (".hada_t2", "hada_t2"),
    (".lokr_w1_a", "lokr_w1_a"),
    (".lokr_w1_b", "lokr_w1_b"),
    (".lokr_w2_a", "lokr_w2_a"),
    (".lokr_w2_b", "lokr_w2_b"),
    (".lokr_w1", "lokr_w1"),
    (".lokr_w2", "lokr_w2"),
    (".lokr_t2", "lokr_t2"),
    (".oft_blocks", "oft_blocks"),
    (".oft_diag", "oft_blocks"),
    (".diff_b", "diff_b"),
    (".diff", "diff"),
    (".a1.weight", "glora_a1"),
    (".a2.weight", "glora_a2"),
    (".b1.weight", "glora_b1"),
    (".b2.weight", "glora_b2"),
)

# kohya flat prefixes -> the model part they patch.
KOHYA_TARGETS: tuple[tuple[str, str], ...] = (
    ("lora_unet_", "denoiser"),
    ("lora_transformer_", "denoiser"),
    ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
    ("lora_te3_", "text_encoder_3"),
    ("lora_te_", "text_encoder"),
)

# Dotted prefixes -> (model part, naming). ``base_model.model.`` (raw PEFT saves) is peeled first.
DOTTED_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("model.diffusion_model.", "denoiser", "comfy"),
    ("diffusion_model.", "denoiser", "comfy"),
    ("unet.", "denoiser", "peft"),
    ("transformer.", "denoiser", "peft"),
    ("text_encoder_2.", "text_encoder_2", "peft"),
    ("text_encoder_3.", "text_encoder_3", "peft"),
    ("text_encoder.", "text_encoder", "peft"),
    ("text_encoders.clip_l.transformer.", "text_encoder", "comfy"),
    ("text_encoders.clip_g.transformer.", "text_encoder_2", "comfy"),
    ("text_encoders.t5xxl.transformer.", "text_encoder_3", "comfy"),
)

# Parts only LyCORIS algorithms write, -> the algorithm's name.
LYCORIS_PARTS: dict[str, str] = {
    "hada_w1_a": "loha",
    "lokr_w1": "lokr",
    "lokr_w1_a": "lokr",
    "lokr_w2": "lokr",
    "lokr_w2_a": "lokr",
    "lora_mid": "locon",
    "mid": "locon",
    "oft_blocks": "oft",
    "diff": "full",
    "glora_a1": "glora",
}

_LEGACY_DIFFUSERS = ("_lora.down.weight", "_lora.up.weight", ".lora_linear_layer.", ".lora.down.")


@dataclass(frozen=True)
class LoraKey:
    """One stored tensor of a LoRA file, split into what it patches and which part it is."""

    name: str
    target: str  # denoiser | text_encoder | text_encoder_2 | text_encoder_3
    module: str  # the patched layer's path as stored after the prefix
    part: str  # down | up | alpha | mid | hada_w1_a | lokr_w1 | ...
    naming: str  # kohya | peft | diffusers | comfy

    @property
    def flat(self) -> str:
        """The module path with every ``.`` as ``_`` (kohya's spelling of any naming)."""
        return self.module.replace(".", "_")


@dataclass
class LoraModule:
    """Every stored part of one patched layer."""

    target: str
    flat: str
    naming: str
    parts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    stored: dict[str, str] = field(default_factory=dict)  # part -> the name in the file

    def says(self) -> str:
        """``<stored name> has shape [r, in]`` for the part that shows the input width."""
        for part in ("down", "hada_w1_b", "lokr_w1", "lokr_w1_b", "diff"):
            if part in self.parts:
                shape = ", ".join(str(d) for d in self.parts[part])
                return f"{self.stored[part]} has shape [{shape}]"
        return self.flat

    def rank(self) -> int | None:
        """The low-rank dimension (None for full-rank LoKr / full diffs)."""
        for part, axis in (("down", 0), ("hada_w1_b", 0), ("lokr_w2_b", 0), ("lokr_w1_b", 0)):
            shape = self.parts.get(part)
            if shape:
                return shape[axis]
        return None

    def in_features(self) -> int | None:
        """Input width of the patched layer (for a 4-D conv: its input channels)."""
        down = self.parts.get("down")
        if down is not None and len(down) >= 2:
            return down[1]
        w1b = self.parts.get("hada_w1_b")
        if w1b is not None and len(w1b) == 2:
            return w1b[1]
        c = _kron_dim(self.parts, "lokr_w1", 1)
        d = _kron_dim(self.parts, "lokr_w2", 1)
        if c is not None and d is not None:
            return c * d
        diff = self.parts.get("diff")
        if diff is not None and len(diff) >= 2:
            return diff[1]
        return None

    def is_conv(self) -> bool:
        """True when the patched layer is a spatial conv (kernel larger than 1x1)."""
        down = self.parts.get("down")
        return down is not None and len(down) == 4 and math.prod(down[2:]) > 1


def _kron_dim(parts: dict[str, tuple[int, ...]], base: str, axis: int) -> int | None:
    """One side of a LoKr Kronecker factor, full (``lokr_w1``) or low-rank (``_a`` @ ``_b``)."""
    full = parts.get(base)
    if full is not None and len(full) >= 2:
        return full[axis]
    a, b = parts.get(base + "_a"), parts.get(base + "_b")
    if axis == 0 and a is not None:
        return a[0]
    if axis == 1 and b is not None and len(b) >= 2:
        return b[1]
    return None


def _split_part(name: str) -> tuple[str, str] | None:
    for suffix, part in PART_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], part
    return None


def parse_key(name: str) -> LoraKey | None:
    """What ``name`` patches, or None when it is no LoRA/LyCORIS key."""
    split = _split_part(name)
    if split is None:
        return None
    module, part = split
    for prefix, target in KOHYA_TARGETS:
        if module.startswith(prefix):
            return LoraKey(name, target, module[len(prefix) :], part, "kohya")
    if module.startswith("base_model.model."):
        module = module[len("base_model.model.") :]
    legacy = any(s in name for s in _LEGACY_DIFFUSERS)
    for prefix, target, naming in DOTTED_TARGETS:
        if module.startswith(prefix):
            peft = ".lora_A." in name or ".lora_B." in name
            if naming == "peft" and (legacy or (part in ("down", "up") and not peft)):
                naming = "diffusers"
            return LoraKey(name, target, module[len(prefix) :], part, naming)
    if "." in module:
        # No prefix at all (some Flux/SD3 exports): a dotted denoiser path.
        naming = "peft" if (".lora_A." in name or ".lora_B." in name) else "comfy"
        return LoraKey(name, "denoiser", module, part, naming)
    return None


def group_modules(tensors: Iterable[TensorInfo]) -> tuple[list[LoraModule], list[str]]:
    """The patched layers (with their parts' shapes) and the names that are no LoRA key."""
    modules: dict[tuple[str, str], LoraModule] = {}
    others: list[str] = []
    for t in tensors:
        key = parse_key(t.name)
        if key is None:
            others.append(t.name)
            continue
        mod = modules.setdefault(
            (key.target, key.flat), LoraModule(key.target, key.flat, key.naming)
        )
        mod.parts[key.part] = t.shape
        mod.stored[key.part] = t.name
    return list(modules.values()), others


def lycoris_algorithms(modules: Iterable[LoraModule]) -> set[str]:
    """The LyCORIS algorithms whose parts appear (loha, lokr, locon, oft, full, glora)."""
    found: set[str] = set()
    for m in modules:
        for part in m.parts:
            algo = LYCORIS_PARTS.get(part)
            if algo is not None:
                found.add(algo)
    return found
