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
    # Layers of the model this one derives from that it removed by design (Chroma: Flux.1's
    # modulation layers), and what they are, for a message.
    removed: re.Pattern[str] | None = None
    removed_label: str = ""
    _depths: dict[bool, dict[str, int]] = field(default_factory=dict, repr=False)
    _parents: dict[bool, set[str]] = field(default_factory=dict, repr=False)

    def add(self, name: str, target: Target) -> None:
        self.dotted.setdefault(name, target)
        self.flat.setdefault(name.replace(".", "_"), target)

    def names(self, dotted: bool) -> dict[str, Target]:
        return self.dotted if dotted else self.flat

    def depths(self, dotted: bool) -> dict[str, int]:
        """Numbered block list -> its number of blocks (``double_blocks`` -> 19), under every
        name the table has (max index + 1)."""
        found = self._depths.get(dotted)
        if found is None:
            found = {}
            for name in self.names(dotted):
                m = _BLOCK_INDEX.match(name)
                if m:
                    depth = int(m.group(2)) + 1
                    found[m.group(1)] = max(found.get(m.group(1), 0), depth)
            self._depths[dotted] = found
        return found

    def parents(self, dotted: bool) -> set[str]:
        """Every proper prefix (at a separator) of the table's names."""
        found = self._parents.get(dotted)
        if found is None:
            sep = "." if dotted else "_"
            found = set()
            for name in self.names(dotted):
                parts = name.split(sep)
                found.update(sep.join(parts[:k]) for k in range(1, len(parts)))
            self._parents[dotted] = found
        return found


# A module in a numbered block list: "double_blocks.19.img_attn.qkv", kohya's
# "double_blocks_19_img_attn_qkv", "layers.30.attention.qkv" -> (list, index).
_BLOCK_INDEX = re.compile(r"^([A-Za-z_.]+?)[._](\d+)(?=[._]|$)")


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


def _rows(shape: tuple[int, ...], parts: int) -> list[int]:
    """The output rows of each part of a fused layer of ``shape``: q/k/v are as wide as the
    model (its input); k and v share what q leaves (fewer K/V heads: Lumina 2's 2304 + 768 +
    768), and a fourth part (Flux's linear1: the MLP) takes the rest."""
    width = shape[1]
    if parts == 3:
        kv = (shape[0] - width) // 2
        return [width, kv, kv]
    return [width] * (parts - 1) + [shape[0] - width * (parts - 1)]


def _fused_aliases(
    native: dict[str, tuple[int, ...]],
    table: ModuleTable,
    pairs: tuple[tuple[str, tuple[str, ...]], ...],
    original: re.Pattern[str],
) -> None:
    """Aliases between a transformer's original names and diffusers' (``pairs``), both ways.

    A file with names ``original`` finds gets the diffusers names (a fused layer's parts share
    its output rows in order); a diffusers file gets the original names (fused over the parts).
    """
    bfl_native = any(original.search(n) for n in native)
    for bfl, diff in pairs:
        if bfl_native:
            rx = _template_regex(bfl)
            for name, shape in native.items():
                m = rx.match(name)
                if not m:
                    continue
                parts = [d.replace("{i}", m.group(1)) if m.groups() else d for d in diff]
                if len(parts) == 1 or len(shape) < 2:
                    table.add(parts[0], _target(name, shape))
                    continue
                for part, out in zip(parts, _rows(shape, len(parts)), strict=True):
                    table.add(part, _target(name, shape, out))
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
                if len(parts) == 1:
                    target = _target(parts[0], first)
                else:
                    out = sum(native[p][0] for p in parts)
                    target = Target(tuple(parts), out, first[1], math.prod(first[1:]))
                table.add(bfl.replace("{i}", idx), target)


_FLUX_ORIGINAL = re.compile(r"^(?:double|single)_blocks\.")
_MMDIT_ORIGINAL = re.compile(r"^joint_blocks\.")


def _nextdit_pairs() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Z-Image and Lumina 2 (NextDiT) original module -> diffusers module(s).

    Z-Image (``ZImageTransformer2DModel``) as ComfyUI's ``z_image_to_diffusers`` pairs them: the
    fused ``attention.qkv`` is ``attention.to_q``/``to_k``/``to_v``, ``attention.out`` is
    ``attention.to_out.0``, the q/k norms ``norm_q``/``norm_k`` (the feed-forward and adaLN
    layers keep their names). Lumina 2 (``Lumina2Transformer2DModel``) as diffusers'
    ``convert_lumina2_to_diffusers`` pairs them: ``attention`` is ``attn``, ``w1``-``w3`` are
    ``linear_1``-``linear_3``, ``adaLN_modulation.1`` is ``norm1.linear``."""
    pairs: list[tuple[str, tuple[str, ...]]] = []
    for block in ("layers", "noise_refiner", "context_refiner"):
        o = f"{block}.{{i}}"
        for attn in ("attention", "attn"):  # Z-Image, Lumina 2
            d = f"{o}.{attn}"
            pairs += [
                (f"{o}.attention.qkv", (f"{d}.to_q", f"{d}.to_k", f"{d}.to_v")),
                (f"{o}.attention.out", (f"{d}.to_out.0",)),
                (f"{o}.attention.q_norm", (f"{d}.norm_q",)),
                (f"{o}.attention.k_norm", (f"{d}.norm_k",)),
            ]
        pairs += [(f"{o}.feed_forward.w{k}", (f"{o}.feed_forward.linear_{k}",)) for k in (1, 2, 3)]
        pairs.append((f"{o}.adaLN_modulation.1", (f"{o}.norm1.linear",)))
    return (
        *pairs,
        ("x_embedder", ("all_x_embedder.2-1",)),
        ("final_layer.linear", ("all_final_layer.2-1.linear",)),
        ("final_layer.adaLN_modulation.1", ("all_final_layer.2-1.adaLN_modulation.1",)),
        ("final_layer.linear", ("norm_out.linear_2",)),
        ("final_layer.adaLN_modulation.1", ("norm_out.linear_1",)),
        ("t_embedder.mlp.0", ("time_caption_embed.timestep_embedder.linear_1",)),
        ("t_embedder.mlp.2", ("time_caption_embed.timestep_embedder.linear_2",)),
        ("cap_embedder.1", ("time_caption_embed.caption_embedder.1",)),
    )


_NEXTDIT_PAIRS = _nextdit_pairs()
_NEXTDIT_ORIGINAL = re.compile(r"^(?:layers|noise_refiner|context_refiner)\.\d+\.attention\.qkv$")
_NEXTDIT = re.compile(
    r"^(?:layers|noise_refiner|context_refiner)\.\d+\.(?:attention\.(?:qkv|to_q)|attn\.to_q)$"
)

# HunyuanVideo: the released file's names -> ComfyUI's (Flux-style) names for the same layers,
# in the order ComfyUI's HunyuanVideo ``process_unet_state_dict`` renames them; LoRAs are
# written in both (diffusion-pipe/musubi: the file's; ComfyUI's own names), and ComfyUI loads both.
_HUNYUAN_VIDEO_RENAMES = (
    ("txt_in.t_embedder.mlp.0.", "txt_in.t_embedder.in_layer."),
    ("txt_in.t_embedder.mlp.2.", "txt_in.t_embedder.out_layer."),
    ("txt_in.c_embedder.linear_1.", "txt_in.c_embedder.in_layer."),
    ("txt_in.c_embedder.linear_2.", "txt_in.c_embedder.out_layer."),
    ("_mod.linear.", "_mod.lin."),
    ("_attn_qkv.", "_attn.qkv."),
    ("mlp.fc1.", "mlp.0."),
    ("mlp.fc2.", "mlp.2."),
    ("_attn_q_norm.", "_attn.norm.query_norm."),
    ("_attn_k_norm.", "_attn.norm.key_norm."),
    (".q_norm.", ".norm.query_norm."),
    (".k_norm.", ".norm.key_norm."),
    ("_attn_proj.", "_attn.proj."),
    (".modulation.linear.", ".modulation.lin."),
    ("_in.mlp.2.", "_in.out_layer."),
    ("_in.mlp.0.", "_in.in_layer."),
)
_HUNYUAN_VIDEO_ORIGINAL = re.compile(r"^double_blocks\.\d+\.img_attn_qkv$")


def _renamed_aliases(
    native: dict[str, tuple[int, ...]],
    table: ModuleTable,
    renames: tuple[tuple[str, str], ...],
) -> None:
    for name, shape in native.items():
        alias = name + "."
        for old, new in renames:
            alias = alias.replace(old, new)
        if alias[:-1] != name:
            table.add(alias[:-1], _target(name, shape))


# Chroma is Flux.1 without its modulation layers (per-block img_mod/txt_mod/modulation, the
# time/vector/guidance inputs and the final adaLN): one distilled guidance layer computes them
# all. A Flux.1 LoRA's keys for them have no layer on Chroma by design (ComfyUI skips them).
_CHROMA_REMOVED = re.compile(
    r"^(?:double_blocks[._]\d+[._](?:img|txt)_mod[._]lin"
    r"|single_blocks[._]\d+[._]modulation[._]lin"
    r"|(?:time|vector|guidance)_in[._](?:in|out)_layer"
    r"|final_layer[._]adaLN_modulation[._]1"
    r"|transformer_blocks[._]\d+[._]norm1(?:_context)?[._]linear"
    r"|single_transformer_blocks[._]\d+[._]norm[._]linear"
    r"|time_text_embed[._].*|norm_out[._]linear)$"
)
_CHROMA_REMOVED_LABEL = (
    "Flux.1's modulation layers (img_mod, txt_mod, modulation; the time, vector and guidance "
    "inputs), which Chroma removed by design (its distilled guidance layer computes them)"
)


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


_CLIP_TEXT_MODEL_PARTS = ("encoder.layers.", "embeddings.", "final_layer_norm")


def _text_encoder_aliases(native: dict[str, tuple[int, ...]], table: ModuleTable) -> None:
    for name, shape in native.items():
        inner = [
            name[len(w) :]
            for w in ("transformer.", "model.transformer.", "model.")
            if name.startswith(w)
        ]
        for alias in inner:
            table.add(alias, _target(name, shape))
        for alias in (name, *inner):
            if alias.startswith(_CLIP_TEXT_MODEL_PARTS):
                # Older SD1 files store HF CLIP without its "text_model." level
                # (cond_stage_model.transformer.encoder...); A1111 and ComfyUI add it on load.
                table.add("text_model." + alias, _target(name, shape))
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
        _fused_aliases(native, table, _FLUX_PAIRS, _FLUX_ORIGINAL)
        _xlabs_aliases(table)
        if any(_HUNYUAN_VIDEO_ORIGINAL.match(n) for n in native):
            _renamed_aliases(native, table, _HUNYUAN_VIDEO_RENAMES)
    elif any(n.startswith("joint_blocks.") for n in native):
        _fused_aliases(native, table, _MMDIT_PAIRS, _MMDIT_ORIGINAL)
    elif any(n.startswith("transformer_blocks.") for n in native):
        # diffusers Flux (with single_transformer_blocks) or SD3: both sets of original names;
        # a pair only applies where every diffusers part it names exists.
        _fused_aliases(native, table, _FLUX_PAIRS, _FLUX_ORIGINAL)
        _xlabs_aliases(table)
        _fused_aliases(native, table, _MMDIT_PAIRS, _MMDIT_ORIGINAL)
    elif any(_NEXTDIT.match(n) for n in native):
        _fused_aliases(native, table, _NEXTDIT_PAIRS, _NEXTDIT_ORIGINAL)
    if any(n.startswith("distilled_guidance_layer.") for n in native):
        table.removed, table.removed_label = _CHROMA_REMOVED, _CHROMA_REMOVED_LABEL
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
    denoiser_keys: int = 0  # keys that patch the UNet/transformer (the rest: text encoders)
    removed_keys: int = 0  # keys for layers the model removed by design (Chroma's modulation)
    removed_label: str = ""  # what those layers are
    # Keys for blocks past the checkpoint's last, and (block list, first, last, its depth).
    beyond_keys: int = 0
    beyond: tuple[tuple[str, int, int, int], ...] = ()
    # Keys in the checkpoint's own naming for layers it does not have (an image-to-video
    # model's image cross-attention on a text-to-video one), and example modules.
    missing_layer_keys: int = 0
    missing_layers: tuple[str, ...] = ()
    # Keys (and example modules) that name no layer of the checkpoint under any name it knows:
    # another naming, or another model.
    foreign_keys: int = 0
    foreign: tuple[str, ...] = ()

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
# The encoders a LoRA's naming names (ComfyUI's text_encoders.<name>., kohya's lora_te3_).
_NAMED_LABEL = {**_ROLE_LABEL, "t5xxl": "T5 text encoder"}


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
                # Named as kohya's lora_te1_/lora_te2_ keys are (ComfyUI's clip_g is CLIP-G).
                return None, _NAMED_LABEL.get(mod.encoder, f"text encoder {mod.encoder}")
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
    mapped_keys = mapped_modules = denoiser_keys = 0
    unmapped: list[str] = list(layout.unparsed)
    mismatches: list[str] = []
    absent: set[str] = set()
    absent_keys = 0
    unfound = _Unfound()
    per_comp: dict[str, list[int]] = {}
    for mod in layout.modules:
        keys = mod.keys
        if mod.target in TEXT_ENCODER_TARGETS:
            table, label = encoders.table(mod)
        else:
            table = denoiser_table
            label = table.component if table else _TARGET_LABEL.get(mod.target, mod.target)
            denoiser_keys += len(keys)
        counts = per_comp.setdefault(label, [0, 0])
        counts[1] += len(keys)
        if table is None:
            absent.add(label)
            absent_keys += len(keys)
            unmapped.extend(keys)
            continue
        target = table.names(mod.dotted).get(mod.module)
        if target is None:
            unfound.add(mod, table, denoiser=table is denoiser_table)
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
        denoiser_keys=denoiser_keys,
        removed_keys=unfound.removed_keys,
        removed_label=denoiser_table.removed_label if denoiser_table else "",
        beyond_keys=unfound.beyond_keys,
        beyond=unfound.beyond_blocks(),
        missing_layer_keys=unfound.missing_keys,
        missing_layers=tuple(unfound.missing[:5]),
        foreign_keys=unfound.foreign_keys + len(layout.unparsed),
        foreign=tuple([*layout.unparsed, *unfound.foreign][:5]),
    )


class _Unfound:
    """Why LoRA modules find no layer of the checkpoint, where it can be told: a layer the model
    removed by design, a block past its last one, a layer its own naming has no place for."""

    def __init__(self) -> None:
        self.removed_keys = self.beyond_keys = self.missing_keys = self.foreign_keys = 0
        self.beyond: dict[str, tuple[set[int], int]] = {}  # block list -> (indices, depth)
        self.missing: list[str] = []
        self.foreign: list[str] = []

    def add(self, mod: LoraModule, table: ModuleTable, denoiser: bool) -> None:
        keys = len(mod.keys)
        if table.removed is not None and table.removed.match(mod.module):
            self.removed_keys += keys
            return
        m = _BLOCK_INDEX.match(mod.module)
        if denoiser and m:
            # Blocks of the checkpoint's text encoders may be dropped (a penultimate-layer
            # CLIP): only the denoiser's depth says which model a LoRA was made for.
            depth = table.depths(mod.dotted).get(m.group(1))
            if depth is not None and int(m.group(2)) >= depth:
                self.beyond_keys += keys
                self.beyond.setdefault(m.group(1), (set(), depth))[0].add(int(m.group(2)))
                return
        if _own_naming(mod.module, mod.dotted, table):
            self.missing_keys += keys
            self.missing.append(mod.module)
        else:
            self.foreign_keys += keys
            self.foreign.append(mod.module)

    def beyond_blocks(self) -> tuple[tuple[str, int, int, int], ...]:
        return tuple(
            (name, min(indices), max(indices), depth)
            for name, (indices, depth) in self.beyond.items()
        )


def _own_naming(module: str, dotted: bool, table: ModuleTable) -> bool:
    """True when ``module`` sits where the checkpoint's own names have layers (its parent, in
    a block, is one of theirs: ``blocks.0.cross_attn.k_img`` beside ``blocks.0.cross_attn.k``),
    so it names a layer this model lacks rather than one under another naming. Kohya's flat
    names lose the dots: a parent one or two ``_`` words up counts."""
    sep = "." if dotted else "_"
    parts = module.split(sep)
    parents = table.parents(dotted)
    for up in (1, 2) if not dotted else (1,):
        parent = parts[:-up]
        if any(p.isdigit() for p in parent[:-1]) and sep.join(parent) in parents:
            return True
    return False


def _side(width: int | None) -> str:
    """A delta's side for a message: ``?`` where the format does not tell it (OFT changes
    outputs only)."""
    return "?" if width is None else str(width)
