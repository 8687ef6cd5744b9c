"""Map a LoRA's keys onto a checkpoint's modules and say how many land (and why the rest don't).

LoRA files name the layers they patch in several conventions (kohya / LyCORIS flat names, PEFT and
older diffusers dotted names, ComfyUI's original names); the registry's reader
(``modelsafe.registry.detect.lora_keys``, the detectors' too) turns each key into a target network,
a module path (dotted, or kohya's flat spelling) and a part.

And checkpoints name their layers in their own convention: original LDM/SGM (``input_blocks.4.1``),
diffusers (``down_blocks.1.attentions.0``), BFL Flux (``double_blocks.0.img_attn.qkv``), diffusers
Flux (``transformer_blocks.0.attn.to_q``), OpenCLIP (``resblocks.0.attn.in_proj_weight``), HF CLIP
(``encoder.layers.0.self_attn.q_proj``). For every checkpoint component we build a table of its
module names in each convention it can be addressed by (aliases computed from block arithmetic,
the same correspondences as diffusers' single-file converters), then look every LoRA key up and
check its shapes against the module it would patch.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from modelsafe.registry.detect.lora_keys import LoraModule, read_layout, text_encoder_kind
from modelsafe.registry.model_parts import Component
from modelsafe.types import TensorIndex, TensorInfo

# -- the checkpoint side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The checkpoint module(s) a LoRA module patches, and the shape its delta must have."""

    modules: tuple[str, ...]
    out_features: int
    in_features: int
    in_flat: int  # in_features * kernel size (LoHa/LoKr store conv deltas flattened)


@dataclass
class ModuleTable:
    """One checkpoint component's modules under every name a LoRA may use for them."""

    component: str
    dotted: dict[str, Target] = field(default_factory=dict)
    flat: dict[str, Target] = field(default_factory=dict)

    def add(self, name: str, target: Target) -> None:
        self.dotted.setdefault(name, target)
        self.flat.setdefault(name.replace(".", "_"), target)


def _module_of(name: str) -> tuple[str, str]:
    if name.endswith(("in_proj_weight", "in_proj_bias")):
        head, _, param = name.rpartition("_")
        return head, param  # OpenCLIP fused attention: module "...attn.in_proj"
    module, _, param = name.rpartition(".")
    return module, param


def _native_modules(tensors: Iterable[TensorInfo]) -> dict[str, tuple[int, ...]]:
    """Module name -> weight shape, for every module with a weight of 2+ dimensions and every
    norm layer (a 1-D ``weight``: GroupNorm/LayerNorm; ``scale``: Flux's q/k RMSNorms), which
    LyCORIS ``w_norm``/``b_norm`` and Flux control LoRAs patch."""
    found: dict[str, tuple[int, ...]] = {}
    for t in tensors:
        module, param = _module_of(t.name)
        if (param == "weight" and len(t.shape) >= 2) or (
            param in ("weight", "scale") and len(t.shape) == 1
        ):
            found[module] = t.shape
    return found


def _target(module: str, shape: tuple[int, ...], out: int | None = None) -> Target:
    if len(shape) == 1:  # a norm layer: C channels in, C out
        return Target((module,), shape[0], shape[0], shape[0])
    return Target((module,), out or shape[0], shape[1], math.prod(shape[1:]))


_RESNET_LDM_TO_DIFFUSERS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_RESNET_DIFFUSERS_TO_LDM = {v: k for k, v in _RESNET_LDM_TO_DIFFUSERS.items()}
_UNET_TOP_LDM_TO_DIFFUSERS = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}
_UNET_TOP_DIFFUSERS_TO_LDM = {v: k for k, v in _UNET_TOP_LDM_TO_DIFFUSERS.items()}
LAYERS_PER_BLOCK = 2  # SD1, SD2, SDXL and the SDXL refiner all use two resnets per level


def _resnet(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def ldm_unet_to_diffusers(name: str) -> str | None:
    """``input_blocks.4.1.transformer_blocks.0.attn1.to_q`` -> ``down_blocks.1.attentions.0...``."""
    if name in _UNET_TOP_LDM_TO_DIFFUSERS:
        return _UNET_TOP_LDM_TO_DIFFUSERS[name]
    per = LAYERS_PER_BLOCK + 1
    m = re.match(r"input_blocks\.(\d+)\.(\d+)(?:\.(.*))?$", name)
    if m:
        n, sub, rest = int(m.group(1)), m.group(2), m.group(3) or ""
        level, j = (n - 1) // per, (n - 1) % per
        if j == LAYERS_PER_BLOCK:
            return f"down_blocks.{level}.downsamplers.0.conv" if rest == "op" else None
        if sub == "0":
            return f"down_blocks.{level}.resnets.{j}.{_resnet(rest, _RESNET_LDM_TO_DIFFUSERS)}"
        return f"down_blocks.{level}.attentions.{j}.{rest}"
    m = re.match(r"middle_block\.(\d)\.(.*)$", name)
    if m:
        sub, rest = m.group(1), m.group(2)
        if sub == "1":
            return f"mid_block.attentions.0.{rest}"
        resnet = 0 if sub == "0" else 1
        return f"mid_block.resnets.{resnet}.{_resnet(rest, _RESNET_LDM_TO_DIFFUSERS)}"
    m = re.match(r"output_blocks\.(\d+)\.(\d+)\.(.*)$", name)
    if m:
        n, sub, rest = int(m.group(1)), m.group(2), m.group(3)
        level, j = n // per, n % per
        if sub == "0":
            return f"up_blocks.{level}.resnets.{j}.{_resnet(rest, _RESNET_LDM_TO_DIFFUSERS)}"
        if rest == "conv":
            return f"up_blocks.{level}.upsamplers.0.conv"
        return f"up_blocks.{level}.attentions.{j}.{rest}"
    return None


def diffusers_unet_to_ldm(name: str, up_levels_with_attention: set[int]) -> str | None:
    """The inverse of :func:`ldm_unet_to_diffusers`."""
    if name in _UNET_TOP_DIFFUSERS_TO_LDM:
        return _UNET_TOP_DIFFUSERS_TO_LDM[name]
    per = LAYERS_PER_BLOCK + 1
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)$", name)
    if m:
        level, what, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if what == "downsamplers":
            return f"input_blocks.{level * per + per}.0.op" if rest == "conv" else None
        n = level * per + j + 1
        if what == "resnets":
            return f"input_blocks.{n}.0.{_resnet(rest, _RESNET_DIFFUSERS_TO_LDM)}"
        return f"input_blocks.{n}.1.{rest}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d)\.(.*)$", name)
    if m:
        what, index, rest = m.group(1), m.group(2), m.group(3)
        if what == "attentions":
            return f"middle_block.1.{rest}"
        sub = 0 if index == "0" else 2
        return f"middle_block.{sub}.{_resnet(rest, _RESNET_DIFFUSERS_TO_LDM)}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)$", name)
    if m:
        level, what, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if what == "upsamplers":
            sub = 2 if level in up_levels_with_attention else 1
            return f"output_blocks.{level * per + LAYERS_PER_BLOCK}.{sub}.conv"
        n = level * per + j
        if what == "resnets":
            return f"output_blocks.{n}.0.{_resnet(rest, _RESNET_DIFFUSERS_TO_LDM)}"
        return f"output_blocks.{n}.1.{rest}"
    return None


# BFL Flux module -> diffusers Flux module(s); "{i}" is a block number. Fused BFL layers (qkv,
# linear1) split into several diffusers layers: their output rows are shared in order.
_FLUX_PAIRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "double_blocks.{i}.img_attn.qkv",
        (
            "transformer_blocks.{i}.attn.to_q",
            "transformer_blocks.{i}.attn.to_k",
            "transformer_blocks.{i}.attn.to_v",
        ),
    ),
    ("double_blocks.{i}.img_attn.proj", ("transformer_blocks.{i}.attn.to_out.0",)),
    (
        "double_blocks.{i}.txt_attn.qkv",
        (
            "transformer_blocks.{i}.attn.add_q_proj",
            "transformer_blocks.{i}.attn.add_k_proj",
            "transformer_blocks.{i}.attn.add_v_proj",
        ),
    ),
    ("double_blocks.{i}.txt_attn.proj", ("transformer_blocks.{i}.attn.to_add_out",)),
    ("double_blocks.{i}.img_mlp.0", ("transformer_blocks.{i}.ff.net.0.proj",)),
    ("double_blocks.{i}.img_mlp.2", ("transformer_blocks.{i}.ff.net.2",)),
    ("double_blocks.{i}.txt_mlp.0", ("transformer_blocks.{i}.ff_context.net.0.proj",)),
    ("double_blocks.{i}.txt_mlp.2", ("transformer_blocks.{i}.ff_context.net.2",)),
    ("double_blocks.{i}.img_mod.lin", ("transformer_blocks.{i}.norm1.linear",)),
    ("double_blocks.{i}.txt_mod.lin", ("transformer_blocks.{i}.norm1_context.linear",)),
    (
        "single_blocks.{i}.linear1",
        (
            "single_transformer_blocks.{i}.attn.to_q",
            "single_transformer_blocks.{i}.attn.to_k",
            "single_transformer_blocks.{i}.attn.to_v",
            "single_transformer_blocks.{i}.proj_mlp",
        ),
    ),
    ("single_blocks.{i}.linear2", ("single_transformer_blocks.{i}.proj_out",)),
    ("single_blocks.{i}.modulation.lin", ("single_transformer_blocks.{i}.norm.linear",)),
    ("img_in", ("x_embedder",)),
    ("txt_in", ("context_embedder",)),
    ("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",)),
    ("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",)),
    ("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",)),
    ("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",)),
    ("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",)),
    ("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",)),
    ("final_layer.linear", ("proj_out",)),
    ("final_layer.adaLN_modulation.1", ("norm_out.linear",)),
)


# SAI MMDiT (SD3 / SD3.5 single files) module -> diffusers SD3 module(s), as diffusers'
# convert_sd3_transformer_checkpoint_to_diffusers and ComfyUI's mmdit_to_diffusers pair them.
_MMDIT_PAIRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "joint_blocks.{i}.x_block.attn.qkv",
        (
            "transformer_blocks.{i}.attn.to_q",
            "transformer_blocks.{i}.attn.to_k",
            "transformer_blocks.{i}.attn.to_v",
        ),
    ),
    ("joint_blocks.{i}.x_block.attn.proj", ("transformer_blocks.{i}.attn.to_out.0",)),
    (
        "joint_blocks.{i}.context_block.attn.qkv",
        (
            "transformer_blocks.{i}.attn.add_q_proj",
            "transformer_blocks.{i}.attn.add_k_proj",
            "transformer_blocks.{i}.attn.add_v_proj",
        ),
    ),
    ("joint_blocks.{i}.context_block.attn.proj", ("transformer_blocks.{i}.attn.to_add_out",)),
    (
        "joint_blocks.{i}.x_block.attn2.qkv",
        (
            "transformer_blocks.{i}.attn2.to_q",
            "transformer_blocks.{i}.attn2.to_k",
            "transformer_blocks.{i}.attn2.to_v",
        ),
    ),
    ("joint_blocks.{i}.x_block.attn2.proj", ("transformer_blocks.{i}.attn2.to_out.0",)),
    ("joint_blocks.{i}.x_block.mlp.fc1", ("transformer_blocks.{i}.ff.net.0.proj",)),
    ("joint_blocks.{i}.x_block.mlp.fc2", ("transformer_blocks.{i}.ff.net.2",)),
    ("joint_blocks.{i}.context_block.mlp.fc1", ("transformer_blocks.{i}.ff_context.net.0.proj",)),
    ("joint_blocks.{i}.context_block.mlp.fc2", ("transformer_blocks.{i}.ff_context.net.2",)),
    ("joint_blocks.{i}.x_block.adaLN_modulation.1", ("transformer_blocks.{i}.norm1.linear",)),
    (
        "joint_blocks.{i}.context_block.adaLN_modulation.1",
        ("transformer_blocks.{i}.norm1_context.linear",),
    ),
    ("x_embedder.proj", ("pos_embed.proj",)),
    ("t_embedder.mlp.0", ("time_text_embed.timestep_embedder.linear_1",)),
    ("t_embedder.mlp.2", ("time_text_embed.timestep_embedder.linear_2",)),
    ("y_embedder.mlp.0", ("time_text_embed.text_embedder.linear_1",)),
    ("y_embedder.mlp.2", ("time_text_embed.text_embedder.linear_2",)),
    ("final_layer.linear", ("proj_out",)),
    ("final_layer.adaLN_modulation.1", ("norm_out.linear",)),
)


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


def _fused_aliases(
    native: dict[str, tuple[int, ...]],
    table: ModuleTable,
    pairs: tuple[tuple[str, tuple[str, ...]], ...],
    original_blocks: tuple[str, ...],
) -> None:
    """Aliases between a transformer's original names and diffusers' (``pairs``), both ways.

    A file with ``original_blocks`` names gets the diffusers names (a fused layer's parts share
    its output rows in order); a diffusers file gets the original names (fused over the parts).
    """
    bfl_native = any(n.startswith(original_blocks) for n in native)
    for bfl, diff in pairs:
        if bfl_native:
            rx = _template_regex(bfl)
            for name, shape in native.items():
                m = rx.match(name)
                if not m:
                    continue
                parts = [d.replace("{i}", m.group(1)) if m.groups() else d for d in diff]
                width = shape[1]
                for k, part in enumerate(parts):
                    # q/k/v parts are as wide as the hidden size; linear1's MLP part is the rest.
                    out = width if k < 3 and len(parts) > 1 else shape[0] - width * (len(parts) - 1)
                    table.add(part, _target(name, shape, out if len(parts) > 1 else None))
        else:
            rx = _template_regex(diff[0])
            for name in list(native):
                m = rx.match(name)
                if not m:
                    continue
                idx = m.group(1) if m.groups() else ""
                parts = [d.replace("{i}", idx) for d in diff]
                if not all(p in native for p in parts):
                    continue
                first = native[parts[0]]
                out = sum(native[p][0] for p in parts)
                target = Target(tuple(parts), out, first[1], math.prod(first[1:]))
                table.add(bfl.replace("{i}", idx), target)


# XLabs Flux LoRA module -> the BFL layer it patches (diffusers' _convert_xlabs_flux_lora_to_
# diffusers makes the same correspondence). A single block's qkv_lora patches only the q/k/v rows
# of the fused linear1 (its MLP rows are left alone): its delta is 3 x the model width tall.
_XLABS_PAIRS: tuple[tuple[str, str], ...] = (
    ("double_blocks.{i}.processor.qkv_lora1", "double_blocks.{i}.img_attn.qkv"),
    ("double_blocks.{i}.processor.proj_lora1", "double_blocks.{i}.img_attn.proj"),
    ("double_blocks.{i}.processor.qkv_lora2", "double_blocks.{i}.txt_attn.qkv"),
    ("double_blocks.{i}.processor.proj_lora2", "double_blocks.{i}.txt_attn.proj"),
    ("single_blocks.{i}.processor.qkv_lora", "single_blocks.{i}.linear1"),
    ("single_blocks.{i}.processor.proj_lora", "single_blocks.{i}.linear2"),
)


def _xlabs_aliases(table: ModuleTable) -> None:
    """XLabs' processor names for the Flux layers ``table`` has under BFL names."""
    for xlabs, bfl in _XLABS_PAIRS:
        rx = _template_regex(bfl)
        for name, target in list(table.dotted.items()):
            m = rx.match(name)
            if not m:
                continue
            alias = xlabs.replace("{i}", m.group(1))
            if xlabs.endswith("qkv_lora"):
                width = target.in_features
                modules = target.modules[:3] if len(target.modules) > 1 else target.modules
                target = Target(modules, 3 * width, width, target.in_flat)
            table.add(alias, target)


_OPENCLIP_TO_HF = (
    (r"resblocks\.(\d+)\.attn\.out_proj$", "text_model.encoder.layers.{}.self_attn.out_proj"),
    (r"resblocks\.(\d+)\.mlp\.c_fc$", "text_model.encoder.layers.{}.mlp.fc1"),
    (r"resblocks\.(\d+)\.mlp\.c_proj$", "text_model.encoder.layers.{}.mlp.fc2"),
    (r"resblocks\.(\d+)\.ln_1$", "text_model.encoder.layers.{}.layer_norm1"),
    (r"resblocks\.(\d+)\.ln_2$", "text_model.encoder.layers.{}.layer_norm2"),
    (r"(?:^|\.)ln_final$", "text_model.final_layer_norm"),
)


def _text_encoder_aliases(native: dict[str, tuple[int, ...]], table: ModuleTable) -> None:
    for name, shape in native.items():
        for wrapper in ("transformer.", "model.transformer.", "model."):
            if name.startswith(wrapper):
                table.add(name[len(wrapper) :], _target(name, shape))
        m = re.search(r"resblocks\.(\d+)\.attn\.in_proj$", name)
        if m:
            width = shape[1]
            for proj in ("q_proj", "k_proj", "v_proj"):
                alias = f"text_model.encoder.layers.{m.group(1)}.self_attn.{proj}"
                table.add(alias, Target((name,), width, width, width))
            continue
        for pattern, template in _OPENCLIP_TO_HF:
            m = re.search(pattern, name)
            if m:
                table.add(template.format(*m.groups()), _target(name, shape))


def build_table(component: Component) -> ModuleTable:
    """Every name a LoRA can use for the modules of ``component``."""
    native = _native_modules(component.tensors)
    table = ModuleTable(component.name)
    for name, shape in native.items():
        table.add(name, _target(name, shape))
    if component.role == "text_encoder":
        _text_encoder_aliases(native, table)
        return table
    if any(n.startswith(("input_blocks.", "middle_block.", "output_blocks.")) for n in native):
        for name, shape in native.items():
            alias = ldm_unet_to_diffusers(name)
            if alias:
                table.add(alias, _target(name, shape))
    elif any(n.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for n in native):
        with_attention = {
            int(m.group(1)) for n in native if (m := re.match(r"up_blocks\.(\d+)\.attentions", n))
        }
        for name, shape in native.items():
            alias = diffusers_unet_to_ldm(name, with_attention)
            if alias:
                table.add(alias, _target(name, shape))
    if any(n.startswith(("double_blocks.", "single_blocks.")) for n in native):
        _fused_aliases(native, table, _FLUX_PAIRS, ("double_blocks.", "single_blocks."))
        _xlabs_aliases(table)
    elif any(n.startswith("joint_blocks.") for n in native):
        _fused_aliases(native, table, _MMDIT_PAIRS, ("joint_blocks.",))
    elif any(n.startswith("transformer_blocks.") for n in native):
        # diffusers Flux (with single_transformer_blocks) or SD3: both sets of original names;
        # a pair only applies where every diffusers part it names exists.
        _fused_aliases(native, table, _FLUX_PAIRS, ("double_blocks.", "single_blocks."))
        _xlabs_aliases(table)
        _fused_aliases(native, table, _MMDIT_PAIRS, ("joint_blocks.",))
    return table


# -- the LoRA side -------------------------------------------------------------------------------
# Parsed by the registry's LoRA key reader (modelsafe.registry.detect.lora_keys), the one the
# detectors use; a LoRA module names its network as a target (denoiser, text_encoder, ...).
#
# A text-encoder target is a position (text_encoder_2 is CLIP-G in SDXL and SD3, T5 in diffusers'
# Flux pipeline; kohya writes Flux's T5 as lora_te3 beside lora_te1, so Flux has no second
# encoder for it by position). The encoder a LoRA module patches is found by identity first:
# the encoder its naming names (ComfyUI's text_encoders.t5xxl., kohya's lora_te3_), else the
# encoder family its module path belongs to (a T5 block can only be the T5, a CLIP layer is the
# n-th CLIP for target n); position among all encoders only when neither tells.

TEXT_ENCODER_TARGETS = ("text_encoder", "text_encoder_2", "text_encoder_3")


# -- coverage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraCoverage:
    """How a LoRA's keys land on a checkpoint's modules."""

    lora_keys: int
    mapped_keys: int
    modules: int
    mapped_modules: int
    by_component: dict[str, tuple[int, int]]  # component -> (mapped keys, keys)
    lora_format: str
    unmapped: tuple[str, ...] = ()  # example keys with no module to land on
    shape_mismatches: tuple[str, ...] = ()  # "module: LoRA in 2048, checkpoint 768"
    absent_components: tuple[str, ...] = ()  # targeted parts the checkpoint does not contain
    absent_keys: int = 0  # keys for those parts

    @property
    def ratio(self) -> float:
        return self.mapped_keys / self.lora_keys if self.lora_keys else 0.0


def _text_encoder_order(components: Iterable[Component]) -> list[Component]:
    order = ["clip_l", "openclip_h", "clip_g", "t5xxl"]

    def rank(c: Component) -> int:
        short = c.name.split(".", 1)[-1]
        return order.index(short) if short in order else len(order)

    return sorted((c for c in components if c.role == "text_encoder"), key=rank)


def _encoder_kind(component: Component) -> str:
    """``t5`` or ``clip`` by the component's module names, else by its name; "" when neither."""
    for t in component.tensors:
        kind = text_encoder_kind(_module_of(t.name)[0])
        if kind:
            return kind
    short = component.name.split(".", 1)[-1]
    return "t5" if short == "t5xxl" else ("clip" if short in _CLIP_NAMES else "")


_CLIP_NAMES = ("clip_l", "openclip_h", "clip_g")


# CLIP text encoders by width: the role a CLIP layer of that input width plays (kohya's
# lora_te1_ is CLIP-L in SDXL, SD3 and Flux.1, lora_te2_ CLIP-G in SDXL and SD3).
_CLIP_BY_WIDTH = {768: "clip_l", 1024: "openclip_h", 1280: "clip_g"}
_CLIP_WIDTH = {role: width for width, role in _CLIP_BY_WIDTH.items()}
_ROLE_LABEL = {
    "clip_l": "text encoder 1 (CLIP-L)",
    "openclip_h": "text encoder 1 (OpenCLIP-H)",
    "clip_g": "text encoder 2 (CLIP-G)",
}


def _encoder_width(component: Component) -> int | None:
    """The hidden width of a CLIP text encoder component (its token embedding or attention)."""
    for t in component.tensors:
        if t.name.endswith(("token_embedding.weight", "q_proj.weight", "in_proj_weight")):
            if len(t.shape) == 2:
                return t.shape[1]
    return None


class _EncoderResolver:
    """Which of a checkpoint's text encoders a LoRA module patches: the encoder its naming names,
    else by role (a CLIP layer's input width says which CLIP: 768 CLIP-L, 1280 CLIP-G), then by
    encoder family and position."""

    def __init__(self, components: Iterable[Component]) -> None:
        self.encoders = _text_encoder_order(components)
        self.kinds = [_encoder_kind(c) for c in self.encoders]
        self.widths = [_encoder_width(c) for c in self.encoders]
        self._tables: dict[str, ModuleTable] = {}
        self.roles: dict[str, str] = {}  # LoRA target -> the CLIP it patches, by width

    def learn(self, modules: Iterable[LoraModule]) -> None:
        """Read each text-encoder target's role off its layers' input widths (the hidden width
        of the CLIP they patch: q/k/v/out_proj and fc1 take it; fc2 takes the MLP width)."""
        seen: dict[str, Counter[str]] = {}
        for m in modules:
            if m.target in TEXT_ENCODER_TARGETS and not m.encoder and m.encoder_kind() != "t5":
                role = _CLIP_BY_WIDTH.get(m.in_features() or 0)
                if role:
                    seen.setdefault(m.target, Counter())[role] += 1
        self.roles = {t: c.most_common(1)[0][0] for t, c in seen.items()}

    def table(self, mod: LoraModule) -> tuple[ModuleTable | None, str]:
        """The module table of the encoder ``mod`` patches, or None and the absent one's label."""
        position = TEXT_ENCODER_TARGETS.index(mod.target)
        found: Component | None = None
        kind = mod.encoder_kind()
        named = [c for c in self.encoders if mod.encoder and c.name.split(".")[-1] == mod.encoder]
        role = self.roles.get(mod.target) if kind != "t5" and not mod.encoder else None
        if named:
            found = named[0]
        elif role:
            # By role: the CLIP of this width (never a CLIP of another width by position).
            width = _CLIP_WIDTH[role]
            fits = [
                c
                for c, k, w in zip(self.encoders, self.kinds, self.widths, strict=True)
                if k != "t5" and (w == width or (w is None and c.name.split(".")[-1] == role))
            ]
            found = fits[0] if fits else None
            if found is None:
                return None, _ROLE_LABEL[role]
        elif kind:
            same = [c for c, k in zip(self.encoders, self.kinds, strict=True) if k == kind]
            # One T5 at most; CLIPs in order (CLIP-L, then OpenCLIP-H or CLIP-G) by target.
            index = 0 if kind == "t5" else position
            found = same[index] if index < len(same) else None
        elif position < len(self.encoders):
            found = self.encoders[position]
        if found is None:
            if mod.encoder:
                return None, f"text encoder {mod.encoder}"
            label = "T5 text encoder" if kind == "t5" else _TARGET_LABEL[mod.target]
            return None, label
        table = self._tables.get(found.name)
        if table is None:
            table = self._tables[found.name] = build_table(found)
        return table, found.name


_TARGET_LABEL = {
    "denoiser": "UNet/transformer",
    "text_encoder": "text encoder 1",
    "text_encoder_2": "text encoder 2",
    "text_encoder_3": "text encoder 3",
}
_LYCORIS_FIRST_FACTORS = ("hada_w1_a", "lokr_w1", "lokr_w1_a", "ia3_on_input", "w_norm")


def map_lora(lora: TensorIndex, components: list[Component]) -> LoraCoverage:
    """Look every key of ``lora`` up in the checkpoint ``components`` and check its shapes."""
    denoiser = next((c for c in components if c.role in ("denoiser", "controlnet")), None)
    encoders = _EncoderResolver(components)
    layout = read_layout(lora)
    encoders.learn(layout.modules)
    denoiser_table = build_table(denoiser) if denoiser else None
    mapped_keys = mapped_modules = 0
    unmapped: list[str] = list(layout.unparsed)
    mismatches: list[str] = []
    absent: set[str] = set()
    absent_keys = 0
    per_comp: dict[str, list[int]] = {}
    for mod in layout.modules:
        keys = mod.keys
        if mod.target in TEXT_ENCODER_TARGETS:
            table, label = encoders.table(mod)
        else:
            table = denoiser_table
            label = table.component if table else _TARGET_LABEL.get(mod.target, mod.target)
        counts = per_comp.setdefault(label, [0, 0])
        counts[1] += len(keys)
        if table is None:
            absent.add(label)
            absent_keys += len(keys)
            unmapped.extend(keys)
            continue
        target = (table.dotted if mod.dotted else table.flat).get(mod.module)
        if target is None:
            unmapped.extend(keys)
            continue
        out, inn, flat_in = mod.delta_shape()
        want_in = target.in_flat if flat_in else target.in_features
        bad_out = out is not None and out != target.out_features
        bad_in = inn is not None and inn not in (want_in, target.in_features)
        if bad_out or bad_in:
            mismatches.append(
                f"{target.modules[0]}: LoRA delta {_side(out)}x{_side(inn)}, checkpoint layer "
                f"{target.out_features}x{target.in_features}"
            )
            continue
        mapped_keys += len(keys)
        mapped_modules += 1
        counts[0] += len(keys)
    total = len(lora.tensors)
    namings = {m.naming for m in layout.modules}
    fmt = "kohya" if "kohya" in namings else ("peft" if namings else "unknown")
    if namings == {"xlabs"}:
        fmt = "xlabs"
    if any(p in m.parts for m in layout.modules for p in _LYCORIS_FIRST_FACTORS):
        fmt = "lycoris"
    return LoraCoverage(
        lora_keys=total,
        mapped_keys=mapped_keys,
        modules=len(layout.modules),
        mapped_modules=mapped_modules,
        by_component={k: (v[0], v[1]) for k, v in sorted(per_comp.items())},
        lora_format=fmt,
        unmapped=tuple(unmapped[:10]),
        shape_mismatches=tuple(mismatches[:10]),
        absent_components=tuple(sorted(absent)),
        absent_keys=absent_keys,
    )


def _side(width: int | None) -> str:
    """A delta's side for a message: ``?`` where the format does not tell it (OFT changes
    outputs only)."""
    return "?" if width is None else str(width)
