"""Read LoRA / LyCORIS key names: which layer each key patches, which part it is, whose naming.

The one parser of LoRA tensor names: the detectors (``lora_probe``: what a LoRA is *for*) and the
``lora_keys`` compatibility rule (``runtime.lora_mapping``: which checkpoint modules it lands on)
both read LoRA files through :func:`parse_key` / :func:`group_modules`.

LoRA files name the layer they patch in several conventions (public facts of the trainers):

- kohya sd-scripts and LyCORIS: ``lora_unet_<module path, dots as _>.lora_down.weight`` /
  ``.lora_up.weight`` / ``.alpha``; text encoders ``lora_te_`` (SD1/SD2), ``lora_te1_`` and
  ``lora_te2_`` (SDXL), ``lora_te3_`` (the T5 of SD3 and Flux: sd-scripts' ``lora_te3``; some
  older Flux builds wrote ``lora_te2_`` for it); older LyCORIS ``lycoris_``; LyCORIS parts
  ``hada_w1_a`` ... (LoHa), ``lokr_w1`` ... (LoKr), ``lora_mid`` (LoCon with CP decomposition),
  ``diff`` (full), ``oft_*``, ``weight`` + ``on_input`` ((IA)^3: one vector per layer, ``[out]``
  on the output or ``[in]`` on the input as the stored ``on_input`` flag says, ``[1, n, 1, 1]``
  for a conv; some files write ``[out, 1]`` / ``[1, in]``), ``w_norm`` + ``b_norm`` (LyCORIS
  ``train_norm``: ``[C]`` diffs of a GroupNorm/LayerNorm's weight and bias, as ComfyUI and A1111
  apply them);
- PEFT (what diffusers saves today): ``unet.<module>.lora_A.weight`` / ``lora_B.weight``,
  ``transformer.<module>...`` (Flux, SD3), ``text_encoder.`` / ``text_encoder_2.``; raw PEFT
  saves under ``base_model.model.``, with the adapter's name (``lora_A.default.weight``);
- older diffusers (0.15-0.17): ``unet.<...>.processor.to_q_lora.down.weight`` and
  ``unet.<...>.to_q_lora.down.weight`` (attention processors: the module is ``<...>.to_q``,
  ``to_out`` is ``to_out.0``), ``text_encoder.<...>.self_attn.to_q_lora.down.weight`` (CLIP's
  ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, as diffusers' own conversion reads them),
  ``...lora.down.weight``, ``...lora_linear_layer.down.weight``;
- ComfyUI / original naming: ``diffusion_model.<original module>.lora_down.weight`` (or lora_A),
  ``text_encoders.clip_l.transformer.<...>`` (``clip_g``, ``clip_h``, ``t5xxl``); some Flux/SD3
  exports have no prefix at all; BFL's Flux control LoRAs carry the q/k RMSNorms' full scales
  (``...norm.query_norm.scale``, ``key_norm.scale``: ``norm_scale``, the layer's new weight).
- XLabs Flux LoRAs: ``double_blocks.N.processor.qkv_lora1.down.weight`` (``proj_lora1``, and
  ``qkv_lora2``/``proj_lora2`` for the text stream; ``single_blocks.N.processor.qkv_lora`` and
  ``proj_lora``): the module keeps XLabs' name, which the mapping table resolves;
- sd-scripts' OFT network: ``oft_unet_<module>.oft_blocks`` (UNet only); LyCORIS OFT
  ``oft_blocks`` ``[n, b, b]`` rotates the n*b outputs; LyCORIS GLoRA ``a1``/``b1`` ``[r, in]``,
  ``a2`` ``[in, r]``, ``b2`` ``[out, r]`` (``W @ a2 @ a1 + b2 @ b1``).

The target of a text-encoder key is a *position* (``text_encoder_2`` is CLIP-G in SDXL and SD3
but T5 in diffusers' Flux pipeline), so a key also records the encoder it names where its naming
says which (``encoder``: ComfyUI's ``text_encoders.t5xxl.``, kohya's ``lora_te3_`` and diffusers'
``text_encoder_3.``, both T5 wherever they occur), and :func:`text_encoder_kind` reads the
encoder family (CLIP or T5) off a module path. Whoever pairs keys with a model's encoders resolves
identity first and falls back to position.

Each key gives a :class:`LoraKey`: the naming, the network it patches (``target``), the module
path in canonical form (dotted wherever the naming keeps the dots; kohya's flat spelling, where the
dots are lost, with ``dotted=False``) and the part, canonical (``down``, ``up``, ``alpha``,
``hada_w1_a`` ...) when it is one the readers understand, else as stored (counted with its
module, read by no rule). PEFT's DoRA ``lora_magnitude_vector`` is ``dora_scale``, as
kohya and LyCORIS name the same thing. :func:`group_modules`
collects the keys of each patched layer into a :class:`LoraModule` with its adapter type and the
shape of the weight delta it describes.

:func:`may_patch` is the cheap test for files that are no LoRA: a file none of whose names ends
in a delta part (down, LoHa/LoKr first factor, diff, OFT, GLoRA) patches no layer.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from modelsafe.types import TensorIndex, TensorInfo

# Stored part (after the module path and its ".") -> canonical part.
PARTS: dict[str, str] = {
    "lora_down.weight": "down",
    "lora_up.weight": "up",
    "lora.down.weight": "down",
    "lora.up.weight": "up",
    "lora_linear_layer.down.weight": "down",
    "lora_linear_layer.up.weight": "up",
    "lora_mid.weight": "mid",
    "lora_A.weight": "down",
    "lora_B.weight": "up",
    "lora_B.bias": "up_bias",
    "alpha": "alpha",
    "dora_scale": "dora_scale",
    # PEFT's DoRA magnitude (one per output row; saved without ``.weight`` by most PEFT versions).
    "lora_magnitude_vector": "dora_scale",
    "lora_magnitude_vector.weight": "dora_scale",
    "hada_w1_a": "hada_w1_a",
    "hada_w1_b": "hada_w1_b",
    "hada_w2_a": "hada_w2_a",
    "hada_w2_b": "hada_w2_b",
    "hada_t1": "hada_t1",
    "hada_t2": "hada_t2",
    "lokr_w1_a": "lokr_w1_a",
    "lokr_w1_b": "lokr_w1_b",
    "lokr_w2_a": "lokr_w2_a",
    "lokr_w2_b": "lokr_w2_b",
    "lokr_w1": "lokr_w1",
    "lokr_w2": "lokr_w2",
    "lokr_t2": "lokr_t2",
    "oft_blocks": "oft_blocks",
    "oft_diag": "oft_blocks",
    # LyCORIS OFT/BOFT saved with rescaled=True: a per-output scale ``[out, 1, ...]``.
    "rescale": "oft_rescale",
    "diff_b": "diff_b",
    "diff": "diff",
    "a1.weight": "glora_a1",
    "a2.weight": "glora_a2",
    "b1.weight": "glora_b1",
    "b2.weight": "glora_b2",
    # LyCORIS (IA)^3: a scaling vector per layer and the flag saying which side it scales.
    "weight": "ia3_w",
    "on_input": "ia3_on_input",
    # LyCORIS train_norm: diffs of a norm layer's weight and bias ([C] each).
    "w_norm": "w_norm",
    "b_norm": "b_norm",
    # BFL Flux control LoRAs: a q/k RMSNorm's full scale [head dim] (the layer's new weight).
    "scale": "norm_scale",
}
# Parts that carry a weight delta (a module without one only scales or annotates).
DELTA_PARTS = frozenset({"down", "hada_w1_a", "lokr_w1", "lokr_w1_a", "diff", "oft_blocks"})
DELTA_PARTS |= {"glora_a1", "ia3_on_input", "w_norm"}
# Parts that patch a 1-D layer (a norm's weight): a vector as wide as the layer's output.
VECTOR_PARTS = ("w_norm", "norm_scale", "b_norm", "diff")

# kohya flat prefixes -> the model part they patch.
KOHYA_TARGETS: dict[str, str] = {
    "lora_unet": "denoiser",
    "lora_transformer": "denoiser",
    "lycoris": "denoiser",
    "lora_te": "text_encoder",
    "lora_te1": "text_encoder",
    "lora_te2": "text_encoder_2",
    "lora_te3": "text_encoder_3",
    "oft_unet": "denoiser",  # sd-scripts' own OFT network (networks/oft.py): UNet only
}
# Prefixes that name the encoder itself, not only its position.
KOHYA_ENCODERS: dict[str, str] = {"lora_te3": "t5xxl"}
_KOHYA = re.compile(r"^(lora_unet|lora_transformer|lycoris|lora_te[123]?|oft_unet)_([^.]+)\.(.+)$")

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
    ("text_encoders.clip_h.transformer.", "text_encoder", "comfy"),
    ("text_encoders.t5xxl.transformer.", "text_encoder_3", "comfy"),
)
DOTTED_ENCODERS: dict[str, str] = {
    "text_encoder_3.": "t5xxl",
    "text_encoders.clip_l.transformer.": "clip_l",
    "text_encoders.clip_g.transformer.": "clip_g",
    "text_encoders.clip_h.transformer.": "openclip_h",
    "text_encoders.t5xxl.transformer.": "t5xxl",
}
_PEFT_ROOT = "base_model.model."

# Where the module path ends in a dotted key: the first of these parts.
_DOTTED_PART = re.compile(
    r"\.(lora_A|lora_B|lora_down|lora_up|lora_mid|lora\.down|lora\.up|lora_linear_layer"
    r"|hada_\w+|lokr_\w+|oft_blocks|oft_diag|rescale|dora_scale|lora_magnitude_vector|diff|diff_b"
    r"|w_norm|b_norm|alpha)(\.|$)"
    r"|(?<=_norm)\.scale$"  # BFL Flux control LoRAs: query_norm.scale, key_norm.scale
)
_GLORA_SUFFIXES = (".a1.weight", ".a2.weight", ".b1.weight", ".b2.weight")
# PEFT with the adapter's name kept: lora_A.<adapter>.weight.
_PEFT_NAMED = re.compile(r"^lora_([AB])\.[^.]+\.weight$")
# Older diffusers attention processors: <attn>.processor.to_q_lora.down.weight patches <attn>.to_q.
_ATTN_PROCESSOR = re.compile(r"^(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_SUFFIXED_LORA = re.compile(r"^(.+)_lora\.(down|up)\.weight$")  # <module>_lora.down.weight
# XLabs Flux LoRAs: LoRA layers of their attention processors, named after the processor
# (double blocks: qkv_lora1/proj_lora1 image stream, qkv_lora2/proj_lora2 text stream; single
# blocks: qkv_lora, proj_lora). The module is kept as XLabs names it; the mapping table knows
# which Flux layer each patches (as diffusers' _convert_xlabs_flux_lora_to_diffusers reads them).
_XLABS = re.compile(
    r"^(?:diffusion_model\.)?((?:double|single)_blocks\.\d+\.processor\.(?:qkv|proj)_lora[12]?)"
    r"\.(down|up)\.weight$"
)
# Older diffusers' attention names -> the layer they patch: in a text encoder CLIP's projections
# (diffusers' DIFFUSERS_OLD_TO_PEFT), in a denoiser the attention's own (UNET_TO_DIFFUSERS).
_OLD_TEXT_PROJ = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
_OLD_DENOISER_PROJ = {"to_out": "to_out.0"}

# The encoder family a text-encoder module path belongs to (flat spelling, every "." as "_"):
# T5 (transformers' T5EncoderModel: encoder.block.N.layer.M.SelfAttention.q, DenseReluDense.wi_0)
# or CLIP (HF text_model.encoder.layers.N.self_attn.q_proj, OpenCLIP resblocks.N.attn).
_T5_MODULE = re.compile(
    r"(?:^|_)(?:encoder_block_\d+_layer_\d+|SelfAttention|DenseReluDense|EncDecAttention)(?:_|$)"
)
_CLIP_MODULE = re.compile(r"(?:^|_)(?:encoder_layers_\d+_(?:self_attn|mlp)|resblocks_\d+)(?:_|$)")
_LEGACY_DIFFUSERS = (".lora.down.", ".lora.up.", ".lora_linear_layer.")

# Parts only LyCORIS algorithms write, -> the algorithm's name.
LYCORIS_PARTS: dict[str, str] = {
    "hada_w1_a": "loha",
    "lokr_w1": "lokr",
    "lokr_w1_a": "lokr",
    "lokr_w2": "lokr",
    "lokr_w2_a": "lokr",
    "mid": "locon",
    "oft_blocks": "oft",
    "diff": "full",
    "glora_a1": "glora",
    "ia3_on_input": "ia3",
    "w_norm": "norm",  # train_norm: beside another algorithm's parts (norm layers only)
}

# LyCORIS BOFT stores its butterfly factors as ``oft_blocks [m, n, b, b]``; OFT's are
# ``[n, b, b]`` (LyCORIS and ComfyUI tell them apart by this rank).
BOFT_BLOCKS_NDIM = 4


@dataclass(frozen=True)
class LoraKey:
    """One stored tensor of a LoRA file, split into what it patches and which part it is."""

    name: str
    naming: str  # kohya | peft | diffusers | comfy | xlabs
    target: str  # denoiser | text_encoder | text_encoder_2 | text_encoder_3
    module: str  # the patched layer's path: dotted, or kohya's flat spelling (dotted=False)
    dotted: bool
    part: str  # canonical (down | up | alpha | mid | hada_w1_a | lokr_w1 | ...) or as stored
    stored_part: str  # after the module path: lora_down.weight, lora_A.weight, alpha (older
    # diffusers' <module>_lora.down.weight: lora_down.weight for processors, else lora.down.weight)
    processor: bool = False  # older diffusers attention-processor naming
    encoder: str = ""  # the encoder the naming names (clip_l, clip_g, openclip_h, t5xxl), or ""

    @property
    def flat(self) -> str:
        """The module path with every ``.`` as ``_`` (kohya's spelling of any naming)."""
        return self.module.replace(".", "_")

    @property
    def known(self) -> bool:
        """True when the part is one the readers understand (not only counted)."""
        return self.part in _CANONICAL


_CANONICAL = frozenset(PARTS.values())


def _canonical_part(stored: str) -> str:
    part = PARTS.get(stored)
    if part is not None:
        return part
    m = _PEFT_NAMED.match(stored)
    if m:
        return "down" if m.group(1) == "A" else "up"
    return stored


def parse_key(name: str) -> LoraKey | None:
    """What ``name`` patches, or None when it names no LoRA/LyCORIS module."""
    m = _XLABS.match(name)
    if m:
        part, stored = m.group(2), f"{m.group(2)}.weight"
        return LoraKey(name, "xlabs", "denoiser", m.group(1), True, part, stored)
    m = _KOHYA.match(name)
    if m:
        target, encoder = KOHYA_TARGETS[m.group(1)], KOHYA_ENCODERS.get(m.group(1), "")
        stored, part = m.group(3), _canonical_part(m.group(3))
        return LoraKey(name, "kohya", target, m.group(2), False, part, stored, encoder=encoder)
    m = _ATTN_PROCESSOR.match(name)
    if m:
        target, module, _naming, encoder = _old_diffusers_module(f"{m.group(1)}.{m.group(2)}")
        part, stored = m.group(3), f"lora_{m.group(3)}.weight"
        return LoraKey(
            name, "diffusers", target, module, True, part, stored, processor=True, encoder=encoder
        )
    m = _SUFFIXED_LORA.match(name)
    if m:
        target, module, _naming, encoder = _old_diffusers_module(m.group(1))
        stored = f"lora.{m.group(2)}.weight"
        return LoraKey(name, "diffusers", target, module, True, m.group(2), stored, encoder=encoder)
    m = _DOTTED_PART.search(name)
    if m:
        module, stored = name[: m.start()], name[m.start() + 1 :]
    elif name.endswith(_GLORA_SUFFIXES) and len(name) > len(".a1.weight"):
        module, stored = name[: -len(".a1.weight")], name[-len("a1.weight") :]
    else:
        return None
    part = _canonical_part(stored)
    target, module, naming, encoder = _dotted_target(module)
    if not module or (naming == "" and module.startswith("lora_")):
        return None  # an unknown kohya-style prefix (lora_te4_...), or no module at all
    peft = ".lora_A." in name or ".lora_B." in name
    if naming == "peft":
        legacy = any(s in name for s in _LEGACY_DIFFUSERS)
        if legacy or (part in ("down", "up") and not peft):
            naming = "diffusers"
    elif naming == "":
        naming = "peft" if peft else "comfy"  # no prefix (some Flux/SD3 exports)
    return LoraKey(name, naming, target, module, True, part, stored, encoder=encoder)


def _dotted_target(module: str) -> tuple[str, str, str, str]:
    """(target, module path after the prefix, naming, encoder; "" when no prefix names it)."""
    if module.startswith(_PEFT_ROOT):
        module = module[len(_PEFT_ROOT) :]
    for prefix, target, naming in DOTTED_TARGETS:
        if module.startswith(prefix):
            return target, module[len(prefix) :], naming, DOTTED_ENCODERS.get(prefix, "")
    return "denoiser", module, "", ""


def _old_diffusers_module(path: str) -> tuple[str, str, str, str]:
    """:func:`_dotted_target` of an older diffusers ``<module>_lora`` path, the attention names
    read as diffusers reads them: ``to_q`` ... ``to_out`` are CLIP's ``q_proj`` ... ``out_proj``
    in a text encoder, and ``to_out`` is ``to_out.0`` in a denoiser."""
    target, module, naming, encoder = _dotted_target(path)
    head, _, leaf = module.rpartition(".")
    table = _OLD_TEXT_PROJ if target.startswith("text_encoder") else _OLD_DENOISER_PROJ
    if leaf in table:
        module = f"{head}.{table[leaf]}" if head else table[leaf]
    return target, module, naming, encoder


def text_encoder_kind(module: str) -> str:
    """``t5`` or ``clip`` when a text-encoder module path (dotted or flat) can only belong to
    that encoder family, else ""."""
    flat = module.replace(".", "_")
    if _T5_MODULE.search(flat):
        return "t5"
    if _CLIP_MODULE.search(flat):
        return "clip"
    return ""


@dataclass
class LoraModule:
    """Every stored part of one patched layer."""

    target: str
    module: str
    dotted: bool
    naming: str
    encoder: str = ""  # the encoder its naming names (clip_l, clip_g, openclip_h, t5xxl), or ""
    parts: dict[str, tuple[int, ...]] = field(default_factory=dict)  # known parts' shapes
    # (IA)^3: the stored on_input flag (True: the vector scales the input); None where not read.
    on_input: bool | None = None
    stored: dict[str, str] = field(default_factory=dict)  # part -> the name in the file
    keys: list[str] = field(default_factory=list)  # every name of this layer, known or not

    @property
    def flat(self) -> str:
        return self.module.replace(".", "_")

    def encoder_kind(self) -> str:
        """``t5`` or ``clip`` when the naming or the module path tells the encoder family."""
        if self.encoder:
            return "t5" if self.encoder == "t5xxl" else "clip"
        return text_encoder_kind(self.module) if self.target.startswith("text_encoder") else ""

    def adapter(self) -> str:
        """lora, locon (a spatial conv or CP-decomposed LoRA), loha, lokr, oft, full, glora, ia3,
        norm (a norm layer's LyCORIS train_norm diffs)."""
        for part, shape in self.parts.items():
            algo = lycoris_algorithm(part, shape)
            if algo is not None and algo not in ("locon", "norm"):
                return algo
        if "mid" in self.parts or self.is_conv():
            return "locon"
        return "norm" if "w_norm" in self.parts and "down" not in self.parts else "lora"

    def has_delta(self) -> bool:
        return any(p in self.parts for p in DELTA_PARTS)

    def says(self) -> str:
        """``<stored name> has shape [r, in]`` for the part that shows the input width (OFT's
        blocks show the output width)."""
        for part in _SAYS_PARTS:
            if part in self.parts:
                shape = ", ".join(str(d) for d in self.parts[part])
                return f"{self.stored[part]} has shape [{shape}]"
        return self.flat

    def rank(self) -> int | None:
        """The low-rank dimension (None for full-rank LoKr / full diffs)."""
        for part, axis in _RANK_AXES:
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
        glora = _glora_shape(self.parts)
        if glora is not None:
            return glora[1]
        return self.delta_shape()[1] if "ia3_w" in self.parts else None

    def is_conv(self) -> bool:
        """True when the patched layer is a spatial conv (kernel larger than 1x1)."""
        down = self.parts.get("down")
        return down is not None and len(down) == 4 and math.prod(down[2:]) > 1

    def delta_shape(self) -> tuple[int | None, int | None, bool]:
        """(out, in, in_is_flattened) of the weight delta; LoHa/LoKr flatten conv kernels."""
        p = self.parts
        down, up = p.get("down"), p.get("up")
        if down or up:
            return (up[0] if up else None), (down[1] if down and len(down) > 1 else None), False
        w1a, w1b = p.get("hada_w1_a"), p.get("hada_w1_b")
        if (w1a or w1b) and "hada_t1" in p:
            # Tucker (LyCORIS use_tucker, conv kxk): w1_a [r, out], w1_b [r, in], t1 [r, r, k, k]
            return _axis(w1a, 1), _axis(w1b, 1), False
        if w1a or w1b:
            return (w1a[0] if w1a else None), (w1b[1] if w1b else None), True
        k1, k2 = p.get("lokr_w1"), p.get("lokr_w2")
        k1a, k1b = p.get("lokr_w1_a"), p.get("lokr_w1_b")
        k2a, k2b = p.get("lokr_w2_a"), p.get("lokr_w2_b")
        w1 = k1 or ((k1a[0], k1b[1]) if k1a and k1b else None)
        tucker = "lokr_t2" in p  # w2_a [r, out_k], w2_b [r, in_n], t2 [r, r, k, k]
        w2: tuple[int, ...] | None
        if tucker:
            w2 = (k2a[1], k2b[1]) if k2a and k2b and len(k2a) > 1 and len(k2b) > 1 else None
        else:
            w2 = k2 or ((k2a[0], k2b[1]) if k2a and k2b else None)
        if w1 and w2:
            return w1[0] * w2[0], w1[1] * math.prod(w2[1:]), not tucker
        diff = p.get("diff")
        if diff and len(diff) >= 2:
            return diff[0], diff[1], False
        glora = _glora_shape(p)
        if glora is not None:
            return glora
        oft = p.get("oft_blocks")
        if oft and len(oft) >= 3:
            # OFT rotates the output in blocks: [n, b, b] (BOFT [m, n, b, b]) is n*b outputs.
            return oft[-3] * oft[-1], None, False
        ia3 = p.get("ia3_w")
        if ia3:
            return _ia3_sides(ia3, self.on_input)
        vector = next((p[v] for v in VECTOR_PARTS if len(p.get(v) or ()) == 1), None)
        if vector:
            return vector[0], None, False  # a norm layer's weight (or bias): [C]
        return None, None, False


# The parts whose shape shows a layer's width (see LoraModule.says), and where each keeps the rank.
_SAYS_PARTS = (
    "down",
    "hada_w1_b",
    "lokr_w1",
    "lokr_w1_b",
    "diff",
    "glora_b1",
    "ia3_w",
    "oft_blocks",
)
_RANK_AXES = (("down", 0), ("hada_w1_b", 0), ("lokr_w2_b", 0), ("lokr_w1_b", 0), ("glora_b1", 0))


def _ia3_sides(
    shape: tuple[int, ...], on_input: bool | None
) -> tuple[int | None, int | None, bool]:
    """(out, in, False) of an (IA)^3 vector: LyCORIS stores ``[n]`` for a linear layer and
    ``[1, n, 1, 1]`` for a conv, n the input width where ``on_input`` is set, else the output
    width (A1111's network_ia3 and InvokeAI read the flag so); ``[1, in]`` / ``[out, 1]`` say
    their side by their shape."""
    if len(shape) == 2 and shape[0] == 1 and shape[1] > 1:
        return None, shape[1], False
    if len(shape) == 2:
        return shape[0], None, False
    width = shape[1] if len(shape) > 2 else shape[0]
    return (None, width, False) if on_input else (width, None, False)


def _glora_shape(p: dict[str, tuple[int, ...]]) -> tuple[int | None, int | None, bool] | None:
    """(out, in, in_is_flattened) of a LyCORIS GLoRA delta, ``W @ a2 @ a1 + b2 @ b1``: a1 and
    b1 ``[r, in]``, a2 ``[in, r]``, b2 ``[out, r]`` (A1111's network_glora reads them so)."""
    b1, b2 = p.get("glora_b1") or p.get("glora_a1"), p.get("glora_b2")
    if b1 is None and b2 is None:
        return None
    return _axis(b2, 0), _axis(b1, 1), b1 is not None and len(b1) == 2


def _axis(shape: tuple[int, ...] | None, axis: int) -> int | None:
    return shape[axis] if shape is not None and len(shape) > axis else None


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


@dataclass
class LoraLayout:
    """A file's tensors read as LoRA modules."""

    modules: list[LoraModule]  # every addressed layer, in the file's order
    unparsed: list[str]  # names that address no layer
    foreign: list[str]  # names that are no known LoRA part (unparsed or an unknown part)

    def known_modules(self) -> list[LoraModule]:
        """The layers with at least one part the readers understand."""
        return [m for m in self.modules if m.parts]


def group_modules(tensors: Iterable[TensorInfo]) -> LoraLayout:
    """The patched layers (with their parts' shapes) and the names that are no LoRA key."""
    modules: dict[tuple[str, str, str, bool], LoraModule] = {}
    unparsed: list[str] = []
    foreign: list[str] = []
    for t in tensors:
        key = parse_key(t.name)
        if key is None:
            unparsed.append(t.name)
            foreign.append(t.name)
            continue
        gk = (key.target, key.encoder, key.module, key.dotted)
        mod = modules.get(gk)
        if mod is None:
            mod = modules[gk] = LoraModule(
                key.target, key.module, key.dotted, key.naming, key.encoder
            )
        mod.keys.append(t.name)
        if key.known:
            mod.parts[key.part] = t.shape
            mod.stored[key.part] = t.name
        else:
            foreign.append(t.name)
    return LoraLayout(list(modules.values()), unparsed, foreign)


def read_layout(index: TensorIndex) -> LoraLayout:
    """:func:`group_modules` of a file's tensors, with each (IA)^3 layer's ``on_input`` flag
    read from the file (a few bytes each)."""
    layout = group_modules(index.tensors)
    flags = {m.stored["ia3_on_input"]: m for m in layout.modules if "ia3_on_input" in m.stored}
    if flags:
        by_name = index.by_name()
        values = read_scalars(index, [by_name[n] for n in flags])
        for name, value in values.items():
            flags[name].on_input = value != 0
    return layout


_SCALAR_FORMATS = {
    "F64": "<d",
    "F32": "<f",
    "F16": "<e",
    "I64": "<q",
    "I32": "<i",
    "I16": "<h",
    "I8": "<b",
    "U8": "<B",
    "BOOL": "<?",
}


def read_scalars(index: TensorIndex, tensors: Iterable[TensorInfo]) -> dict[str, float]:
    """The values of one-element tensors stored in ``index``'s file (NaN left out); those whose
    bytes cannot be read (no offset, in another member or shard, an unknown dtype) are absent."""
    readable = [t for t in tensors if t.offset >= 0 and not t.source and t.numel == 1]
    found: dict[str, float] = {}
    if not readable:
        return found
    try:
        with open(index.path, "rb") as fh:
            for t in readable:
                value = _scalar(fh, t)
                if value is not None and value == value:
                    found[t.name] = value
    except OSError:
        pass
    return found


def _scalar(fh: BinaryIO, t: TensorInfo) -> float | None:
    if t.dtype == "BF16":
        fmt, size, pad = "<f", 2, b"\x00\x00"  # the high half of an F32
    elif t.dtype in _SCALAR_FORMATS:
        fmt, pad = _SCALAR_FORMATS[t.dtype], b""
        size = struct.calcsize(fmt)
    else:
        return None
    fh.seek(t.offset)
    data = fh.read(size)
    if len(data) != size:
        return None
    return float(struct.unpack(fmt, pad + data)[0])


def _delta_suffixes() -> tuple[str, ...]:
    found = {"." + stored for stored, part in PARTS.items() if part in DELTA_PARTS}
    xlabs = {"_lora.down.weight", "_lora1.down.weight", "_lora2.down.weight"}
    return tuple(sorted(found | xlabs))


_DELTA_SUFFIXES = _delta_suffixes()


def may_patch(names: Iterable[str]) -> bool:
    """False when no name can be a delta part (a quick scan, no parse): surely no LoRA file."""
    return any(n.endswith(_DELTA_SUFFIXES) or ".lora_A." in n for n in names)


def lycoris_algorithms(modules: Iterable[LoraModule]) -> set[str]:
    """The LyCORIS algorithms whose parts appear (loha, lokr, locon, oft, boft, full, glora, ia3;
    norm for train_norm's norm-layer diffs, which come beside one of the others)."""
    found: set[str] = set()
    for m in modules:
        for part, shape in m.parts.items():
            algo = lycoris_algorithm(part, shape)
            if algo is not None:
                found.add(algo)
    return found


def lycoris_algorithm(part: str, shape: tuple[int, ...]) -> str | None:
    """The LyCORIS algorithm whose part ``part`` (of ``shape``) is, or None. LyCORIS "full"
    stores a Linear/conv layer's whole weight diff (2-D or more); a ``.diff`` of a 1-D weight (a
    norm's scale, as lightx2v's extracted LoRAs keep beside their low-rank pairs and ComfyUI
    adds as it is) is no LyCORIS algorithm's."""
    algo = LYCORIS_PARTS.get(part)
    if algo == "oft" and len(shape) == BOFT_BLOCKS_NDIM:
        return "boft"
    if algo == "full" and len(shape) < 2:
        return None
    return algo
