"""Tensor layouts of add-ons: LoRA / LyCORIS, ControlNet, T2I-Adapter, IP-Adapter, embeddings.

Derived from the base layouts in :mod:`.base_models` plus the trainers' naming rules (public):
kohya sd-scripts ``networks/lora.py`` (``lora_unet_``/``lora_te_`` + module path with ``_``,
``lora_down``/``lora_up``/``alpha``; targets the Transformer2DModel / CLIP attention and MLP
linears), PEFT ``lora_A``/``lora_B``, LyCORIS ``hada_*``/``lokr_*``; lllyasviel ``cldm``
(``input_hint_block``, ``zero_convs``, ``middle_block_out``); diffusers ``ControlNetModel`` and
``T2IAdapter`` on the ``meta`` device; tencent-ailab IP-Adapter ``image_proj`` + ``ip_adapter``;
A1111 / kohya textual-inversion files. Each returns ``(name, dtype, shape)`` specs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from modelsafe.testing.layouts.base_models import (
    UNET_PARAMS,
    Specs,
    _conv,
    _lin,
    bfl_flux,
    clip_text,
    diffusers_denoiser,
    ldm_unet,
    prefixed,
)
from modelsafe.testing.layouts.components import meta_state_dict

Module = tuple[str, tuple[int, ...]]  # (module path, weight shape)

# Layers kohya's LoRA (and diffusers' default LoRA config, for attention) patch.
_UNET_TARGET = re.compile(
    r"(?:attentions\.\d+|\.\d+\.1|middle_block\.1|mid_block\.attentions\.0)\."
    r"(?:proj_in|proj_out|transformer_blocks\.\d+\.(?:attn[12]\.(?:to_q|to_k|to_v|to_out\.0)"
    r"|ff\.net\.0\.proj|ff\.net\.2))$"
)
_ATTN_ONLY = re.compile(r"\.attn[12]\.(?:to_q|to_k|to_v|to_out\.0)$")
_TE_TARGET = re.compile(r"\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12])$")
_FLUX_BFL_TARGET = re.compile(
    r"^(?:double_blocks\.\d+\.(?:img|txt)_(?:attn\.qkv|attn\.proj|mlp\.0|mlp\.2|mod\.lin)"
    r"|single_blocks\.\d+\.(?:linear1|linear2|modulation\.lin))$"
)
_FLUX_DIFFUSERS_TARGET = re.compile(
    r"^(?:transformer_blocks\.\d+\.attn\.(?:to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj"
    r"|add_v_proj|to_add_out)|single_transformer_blocks\.\d+\.(?:attn\.(?:to_q|to_k|to_v)"
    r"|proj_mlp|proj_out))$"
)


def linears(specs: Iterable[tuple[str, str, tuple[int, ...]]], pattern: str) -> list[Module]:
    """(module, (out, in)) of every 2-D ``.weight`` whose tensor name matches ``pattern``: the
    Linear layers a LoRA of those modules patches."""
    return [
        (name[: -len(".weight")], shape)
        for name, _, shape in specs
        if name.endswith(".weight") and len(shape) == 2 and re.search(pattern, name)
    ]


def modules(
    specs: Iterable[tuple[str, str, tuple[int, ...]]], pattern: re.Pattern[str]
) -> list[Module]:
    """The (module, weight shape) of every 2-D/4-D ``.weight`` whose module matches."""
    out: list[Module] = []
    for name, _, shape in specs:
        if name.endswith(".weight") and len(shape) in (2, 4):
            module = name[: -len(".weight")]
            if pattern.search(module):
                out.append((module, shape))
    return out


def sd1_unet_modules() -> list[Module]:
    """SD1.x UNet layers kohya patches, diffusers names (kohya's SD1/SD2 LoRA naming)."""
    return modules(diffusers_denoiser("sd1"), _UNET_TARGET)


def sdxl_unet_modules(naming: str = "sgm") -> list[Module]:
    """SDXL UNet layers: SGM names (kohya SDXL LoRAs) or diffusers names (PEFT attention)."""
    if naming == "sgm":
        return modules(ldm_unet(**UNET_PARAMS["sdxl"]), _UNET_TARGET)
    return modules(diffusers_denoiser("sdxl"), _ATTN_ONLY)


def clip_modules(width: int = 768, layers: int = 12) -> list[Module]:
    return modules(clip_text(width, layers), _TE_TARGET)


def flux_modules(naming: str = "bfl") -> list[Module]:
    """Flux.1 layers a LoRA patches: BFL names (kohya/ComfyUI) or diffusers names (PEFT)."""
    if naming == "bfl":
        return modules(bfl_flux(), _FLUX_BFL_TARGET)
    return modules(diffusers_denoiser("flux1/dev"), _FLUX_DIFFUSERS_TARGET)


# ------------------------------------------------------------------------------------ LoRA


def _pair(shape: tuple[int, ...], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    out, inp = shape[0], shape[1]
    if len(shape) == 4:  # 1x1 convs (SD1 proj_in/out) keep 4-D down/up
        return (rank, inp, *shape[2:]), (out, rank, 1, 1)
    return (rank, inp), (out, rank)


def kohya_lora(
    groups: Iterable[tuple[str, list[Module]]], rank: int = 16, dtype: str = "F16"
) -> Specs:
    """kohya naming: ``<prefix><module with _>.lora_down.weight`` / ``lora_up`` / ``alpha``."""
    specs: Specs = []
    for prefix, mods in groups:
        for module, shape in mods:
            name = prefix + module.replace(".", "_")
            down, up = _pair(shape, rank)
            specs += [
                (f"{name}.lora_down.weight", dtype, down),
                (f"{name}.lora_up.weight", dtype, up),
                (f"{name}.alpha", dtype, ()),
            ]
    return specs


def peft_lora(
    groups: Iterable[tuple[str, list[Module]]], rank: int = 16, dtype: str = "F16"
) -> Specs:
    """PEFT naming (diffusers ``save_lora_weights``): ``<prefix><module>.lora_A/lora_B.weight``."""
    specs: Specs = []
    for prefix, mods in groups:
        for module, shape in mods:
            down, up = _pair(shape, rank)
            specs += [
                (f"{prefix}{module}.lora_A.weight", dtype, down),
                (f"{prefix}{module}.lora_B.weight", dtype, up),
            ]
    return specs


def comfy_lora(mods: list[Module], rank: int = 16, dtype: str = "BF16") -> Specs:
    """ComfyUI / original naming: ``diffusion_model.<module>.lora_down/lora_up`` + alpha."""
    specs: Specs = []
    for module, shape in mods:
        down, up = _pair(shape, rank)
        specs += [
            (f"diffusion_model.{module}.lora_down.weight", dtype, down),
            (f"diffusion_model.{module}.lora_up.weight", dtype, up),
            (f"diffusion_model.{module}.alpha", dtype, ()),
        ]
    return specs


def loha(groups: Iterable[tuple[str, list[Module]]], rank: int = 8, dtype: str = "F16") -> Specs:
    """LyCORIS LoHa (kohya naming): ``hada_w1_a/b``, ``hada_w2_a/b``, ``alpha``."""
    specs: Specs = []
    for prefix, mods in groups:
        for module, shape in mods:
            name = prefix + module.replace(".", "_")
            out, flat_in = shape[0], math.prod(shape[1:])
            for w in ("w1", "w2"):
                specs += [
                    (f"{name}.hada_{w}_a", dtype, (out, rank)),
                    (f"{name}.hada_{w}_b", dtype, (rank, flat_in)),
                ]
            specs.append((f"{name}.alpha", dtype, ()))
    return specs


def _factor(dim: int, factor: int) -> tuple[int, int]:
    """LyCORIS-style split of ``dim`` into (m, n), m <= factor, m * n = dim."""
    m = max(d for d in range(1, factor + 1) if dim % d == 0)
    return m, dim // m


def lokr(
    groups: Iterable[tuple[str, list[Module]]],
    rank: int = 8,
    factor: int = 8,
    dtype: str = "F16",
) -> Specs:
    """LyCORIS LoKr (kohya naming): full ``lokr_w1`` [a, c] and low-rank ``lokr_w2_a/b``."""
    specs: Specs = []
    for prefix, mods in groups:
        for module, shape in mods:
            name = prefix + module.replace(".", "_")
            a, b = _factor(shape[0], factor)
            c, d = _factor(math.prod(shape[1:]), factor)
            specs += [
                (f"{name}.lokr_w1", dtype, (a, c)),
                (f"{name}.lokr_w2_a", dtype, (b, rank)),
                (f"{name}.lokr_w2_b", dtype, (rank, d)),
                (f"{name}.alpha", dtype, ()),
            ]
    return specs


# ------------------------------------------------------------------------------------ ControlNet


def controlnet_ldm(
    family: str = "sd1", prefix: str = "control_model.", dtype: str = "F16"
) -> Specs:
    """An lllyasviel ``cldm`` ControlNet: the UNet encoder + hint block + zero convs."""
    unet = ldm_unet(**{**UNET_PARAMS[family], "dtype": dtype})
    specs = [
        s
        for s in unet
        if s[0].startswith(("time_embed.", "label_emb.", "input_blocks.", "middle_block."))
    ]
    hint = [(3, 16), (16, 16), (16, 32), (32, 32), (32, 96), (96, 96), (96, 256)]
    for i, (cin, cout) in enumerate(hint):
        specs += _conv(f"input_hint_block.{2 * i}", cout, cin, 3, dtype)
    base = UNET_PARAMS[family].get("model_channels", 320)
    specs += _conv(f"input_hint_block.{2 * len(hint)}", base, 256, 3, dtype)
    widths = _input_block_widths(unet)
    for i, ch in enumerate(widths):
        specs += _conv(f"zero_convs.{i}.0", ch, ch, 1, dtype)
    mid = widths[-1]
    specs += _conv("middle_block_out.0", mid, mid, 1, dtype)
    return prefixed(prefix, specs)


def _input_block_widths(unet: Specs) -> list[int]:
    """Output channels of each ``input_blocks.N`` (what its zero conv sees)."""
    widths: dict[int, int] = {}
    for name, _, shape in unet:
        m = re.match(r"input_blocks\.(\d+)\.0\.(?:weight|op\.weight|out_layers\.3\.weight)$", name)
        if m:
            widths[int(m.group(1))] = shape[0]
    return [widths[i] for i in sorted(widths)]


_SDXL_CONTROLNET: dict[str, Any] = {
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}


def controlnet_diffusers(family: str = "sdxl", dtype: str = "F16") -> Specs:
    """A diffusers ``ControlNetModel`` (SDXL config by default, SD1 with ``family='sd1'``)."""
    config = _SDXL_CONTROLNET if family == "sdxl" else {"cross_attention_dim": 768}
    return meta_state_dict("ControlNetModel", config, dtype)


_DIT_CONTROLNETS: dict[str, tuple[str, dict[str, Any]]] = {
    # InstantX FLUX.1-dev-Controlnet-Union / Shakker: diffusers FluxControlNetModel.
    "flux1": ("FluxControlNetModel", {"num_layers": 5, "num_single_layers": 10}),
    # InstantX Qwen-Image-ControlNet-Union (5 blocks); the inpainting one has 6 blocks and
    # 4 extra condition channels (the packed mask).
    "qwen-image": ("QwenImageControlNetModel", {"num_layers": 5}),
    "qwen-image/inpaint": (
        "QwenImageControlNetModel",
        {"num_layers": 6, "extra_condition_channels": 4},
    ),
}


def controlnet_dit(family: str = "qwen-image", dtype: str = "BF16") -> Specs:
    """A diffusers transformer ControlNet (``controlnet_blocks`` + ``controlnet_x_embedder``
    beside a copy of the first blocks): ``flux1``, ``qwen-image`` or ``qwen-image/inpaint``."""
    class_name, config = _DIT_CONTROLNETS[family]
    return meta_state_dict(class_name, config, dtype)


# ------------------------------------------------------------------------------------ T2I / IP


def t2i_adapter(family: str = "sd1", hint_channels: int = 3, dtype: str = "F16") -> Specs:
    """A diffusers ``T2IAdapter`` (``adapter.*``): SD1.x full adapter or SDXL full_adapter_xl."""
    if family == "sdxl":
        config: dict[str, Any] = {
            "channels": [320, 640, 1280],
            "downscale_factor": 16,
            "adapter_type": "full_adapter_xl",
        }
    else:
        config = {"channels": [320, 640, 1280, 1280], "downscale_factor": 8}
    config.update(in_channels=hint_channels, num_res_blocks=2)
    return meta_state_dict("T2IAdapter", config, dtype)


def ip_adapter(
    family: str = "sd1", variant: str = "base", tokens: int = 4, dtype: str = "F16"
) -> Specs:
    """tencent-ailab IP-Adapter as ``ip-adapter*.safetensors`` store it.

    ``image_proj.*`` (a linear projection, or the "plus" Resampler) and ``ip_adapter.N.to_k_ip``
    / ``to_v_ip`` for every cross-attention layer N (the odd attention-processor indices).
    ``variant`` ``faceid`` / ``faceid-plus``: the FaceID layouts (see :func:`_faceid`).
    """
    unet = diffusers_denoiser("sdxl" if family == "sdxl" else "sd1")
    ctx = 2048 if family == "sdxl" else 768
    widths = [s[0] for n, _, s in unet if n.endswith(".attn2.to_k.weight")]
    specs: Specs = []
    if variant in ("faceid", "faceid-plus"):
        return _faceid(unet, ctx, widths, variant, tokens, dtype)
    if variant == "plus":
        dim, embed, heads_dim = (
            1280 if family == "sdxl" else 768,
            1664 if family == "sdxl" else 1280,
            64,
        )
        specs += [("image_proj.latents", dtype, (1, tokens, dim))]
        specs += _lin("image_proj.proj_in", dim, embed, dtype)
        specs += _lin("image_proj.proj_out", ctx, dim, dtype)
        specs += [
            ("image_proj.norm_out.weight", dtype, (ctx,)),
            ("image_proj.norm_out.bias", dtype, (ctx,)),
        ]
        for layer in range(4):
            p = f"image_proj.layers.{layer}"
            for norm in ("0.norm1", "0.norm2", "1.0"):
                specs += [
                    (f"{p}.{norm}.weight", dtype, (dim,)),
                    (f"{p}.{norm}.bias", dtype, (dim,)),
                ]
            specs += _lin(f"{p}.0.to_q", heads_dim * 12, dim, dtype, bias=False)
            specs += _lin(f"{p}.0.to_kv", 2 * heads_dim * 12, dim, dtype, bias=False)
            specs += _lin(f"{p}.0.to_out", dim, heads_dim * 12, dtype, bias=False)
            specs += _lin(f"{p}.1.1", 4 * dim, dim, dtype, bias=False)
            specs += _lin(f"{p}.1.3", dim, 4 * dim, dtype, bias=False)
    else:
        embed = 1280 if family == "sdxl" else 1024
        specs += _lin("image_proj.proj", ctx * tokens, embed, dtype)
        specs += [
            ("image_proj.norm.weight", dtype, (ctx,)),
            ("image_proj.norm.bias", dtype, (ctx,)),
        ]
    for i, hidden in enumerate(widths):
        specs += _lin(f"ip_adapter.{2 * i + 1}.to_k_ip", hidden, ctx, dtype, bias=False)
        specs += _lin(f"ip_adapter.{2 * i + 1}.to_v_ip", hidden, ctx, dtype, bias=False)
    return specs


def _faceid(
    unet: Specs, ctx: int, widths: list[int], variant: str, tokens: int, dtype: str
) -> Specs:
    """IP-Adapter FaceID (``MLPProjModel``: InsightFace 512 -> proj.0/proj.2/norm) and
    FaceID-Plus/PlusV2 (``ProjPlusModel``: the same plus a ``perceiver_resampler``, a
    FacePerceiverResampler without latents over 1280-wide CLIP ViT-H features), each with the
    LoRA layers (``N.to_q_lora.down``...) of ``ip_adapter_faceid.py`` for every attention layer."""
    specs = _lin("image_proj.proj.0", 1024, 512, dtype) + _lin(
        "image_proj.proj.2", ctx * tokens, 1024, dtype
    )
    specs += [("image_proj.norm.weight", dtype, (ctx,)), ("image_proj.norm.bias", dtype, (ctx,))]
    if variant == "faceid-plus":
        p, inner = "image_proj.perceiver_resampler.", ctx  # heads = ctx // 64, dim_head 64
        specs += _lin(f"{p}proj_in", ctx, 1280, dtype) + _lin(f"{p}proj_out", ctx, ctx, dtype)
        specs += [(f"{p}norm_out.weight", dtype, (ctx,)), (f"{p}norm_out.bias", dtype, (ctx,))]
        for layer in range(4):
            q = f"{p}layers.{layer}"
            for norm in ("0.norm1", "0.norm2", "1.0"):
                specs += [
                    (f"{q}.{norm}.weight", dtype, (ctx,)),
                    (f"{q}.{norm}.bias", dtype, (ctx,)),
                ]
            specs += _lin(f"{q}.0.to_q", inner, ctx, dtype, bias=False)
            specs += _lin(f"{q}.0.to_kv", 2 * inner, ctx, dtype, bias=False)
            specs += _lin(f"{q}.0.to_out", ctx, inner, dtype, bias=False)
            specs += _lin(f"{q}.1.1", 4 * ctx, ctx, dtype, bias=False)
            specs += _lin(f"{q}.1.3", ctx, 4 * ctx, dtype, bias=False)
    self_widths = [s[0] for n, _, s in unet if n.endswith(".attn1.to_q.weight")]
    rank = 128
    for i, hidden in enumerate(self_widths):
        for idx, cross in ((2 * i, hidden), (2 * i + 1, ctx)):
            for proj, inp in (
                ("to_q_lora", hidden),
                ("to_k_lora", cross),
                ("to_v_lora", cross),
                ("to_out_lora", hidden),
            ):
                specs += [
                    (f"ip_adapter.{idx}.{proj}.down.weight", dtype, (rank, inp)),
                    (f"ip_adapter.{idx}.{proj}.up.weight", dtype, (hidden, rank)),
                ]
    for i, hidden in enumerate(widths):
        specs += _lin(f"ip_adapter.{2 * i + 1}.to_k_ip", hidden, ctx, dtype, bias=False)
        specs += _lin(f"ip_adapter.{2 * i + 1}.to_v_ip", hidden, ctx, dtype, bias=False)
    return specs


# ------------------------------------------------------------------------------------ embeddings


def embedding(family: str = "sd1", vectors: int = 4, dtype: str = "F32") -> Specs:
    """A textual-inversion safetensors: ``emb_params`` (SD1/SD2) or ``clip_l`` + ``clip_g``."""
    if family == "sdxl":
        return [("clip_g", dtype, (vectors, 1280)), ("clip_l", dtype, (vectors, 768))]
    return [("emb_params", dtype, (vectors, 1024 if family == "sd2" else 768))]


__all__ = [
    "clip_modules",
    "comfy_lora",
    "controlnet_diffusers",
    "controlnet_dit",
    "controlnet_ldm",
    "embedding",
    "flux_modules",
    "ip_adapter",
    "kohya_lora",
    "loha",
    "lokr",
    "modules",
    "peft_lora",
    "prefixed",
    "sd1_unet_modules",
    "sdxl_unet_modules",
    "t2i_adapter",
]
