"""Tensor layouts of stand-alone components: VAEs, text encoders and upscalers.

Written from the published architectures: LDM ``AutoencoderKL`` and transformers' CLIP/T5
(reused from :mod:`.base_models`), diffusers VAE classes on torch's ``meta`` device, decoder-only
LLM text encoders (Llama/Qwen/Gemma ``model.layers``), and the upscalers' reference code
(xinntao ESRGAN ``RRDBNet_arch.py`` "old" naming, BasicSR ``rrdbnet_arch.py``,
``srvgg_arch.py``, JingyunLiang ``network_swinir.py``). Each returns ``(name, dtype, shape)``.
"""

from __future__ import annotations

from typing import Any

from modelsafe.testing.layouts.base_models import (
    Specs,
    _conv,
    _lin,
    _norm,
    clip_text,
    ldm_vae,
    openclip_text,
    prefixed,
    t5_encoder,
)

__all__ = [
    "clip_g",
    "clip_l",
    "diffusers_vae",
    "esrgan_old",
    "ldm_vae",
    "llm_text_encoder",
    "meta_state_dict",
    "openclip_g",
    "prefixed",
    "qwen_image_vae",
    "rrdbnet",
    "srvgg_compact",
    "swinir",
    "t5xxl",
    "umt5xxl",
]


# ------------------------------------------------------------------------------------ VAEs


def meta_state_dict(class_name: str, config: dict[str, Any], dtype: str) -> Specs:
    """The state-dict layout of a diffusers class built on the ``meta`` device (no memory)."""
    import diffusers
    import torch

    with torch.device("meta"):
        model = getattr(diffusers, class_name)(**config)
    return [(n, dtype, tuple(t.shape)) for n, t in model.state_dict().items()]


def diffusers_vae(latent_channels: int = 4, quant_conv: bool = True, dtype: str = "F16") -> Specs:
    """A diffusers ``AutoencoderKL`` (SD/SDXL 4-channel, or Flux/SD3 16-channel without quant)."""
    config: dict[str, Any] = {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": latent_channels,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "use_quant_conv": quant_conv,
        "use_post_quant_conv": quant_conv,
    }
    return meta_state_dict("AutoencoderKL", config, dtype)


def qwen_image_vae(dtype: str = "BF16") -> Specs:
    """Qwen-Image's VAE (the Wan 2.1 3-D causal VAE), diffusers naming."""
    return meta_state_dict("AutoencoderKLQwenImage", {}, dtype)


# ------------------------------------------------------------------------------------ text encoders


def clip_l(dtype: str = "F16") -> Specs:
    """CLIP ViT-L/14 text model as ComfyUI's ``clip_l.safetensors`` / SD1.5 ``text_encoder``."""
    return clip_text(768, 12, None, dtype)


def clip_g(dtype: str = "F16") -> Specs:
    """OpenCLIP bigG text model in transformers naming (SDXL ``text_encoder_2``), projection."""
    return clip_text(1280, 32, 1280, dtype)


def openclip_g(dtype: str = "F16") -> Specs:
    """OpenCLIP bigG text tower in open_clip naming (as SGM checkpoints store it, unprefixed)."""
    return [(n[len("model.") :], d, s) for n, d, s in openclip_text(1280, 32, dtype)]


def t5xxl(dtype: str = "F16") -> Specs:
    """T5 v1.1 XXL encoder (``t5xxl_fp16.safetensors``)."""
    return t5_encoder(24, dtype)


def umt5xxl(dtype: str = "BF16") -> Specs:
    """UMT5-XXL encoder: T5-XXL shapes, 256384-token vocabulary, relative bias in every block."""
    specs: Specs = []
    for name, d, shape in t5_encoder(24, dtype):
        if name == "shared.weight":
            shape = (256384, 4096)
        specs.append((name, d, shape))
        if name.endswith("layer.0.SelfAttention.o.weight") and not name.startswith(
            "encoder.block.0."
        ):
            block = name.split(".")[2]
            specs.append(
                (
                    f"encoder.block.{block}.layer.0.SelfAttention.relative_attention_bias.weight",
                    d,
                    (32, 64),
                )
            )
    return specs


# Published configs: (vocab, hidden, layers, heads, kv heads, head dim, ffn, qk norm, qkv bias).
LLM_CONFIGS: dict[str, tuple[int, int, int, int, int, int, int, bool, bool]] = {
    "llama3.1_8b": (128256, 4096, 32, 32, 8, 128, 14336, False, False),
    "qwen2.5_vl_7b": (152064, 3584, 28, 28, 4, 128, 18944, False, True),
    "qwen3_4b": (151936, 2560, 36, 32, 8, 128, 9728, True, False),
}


def llm_text_encoder(variant: str, layers: int | None = None, dtype: str = "BF16") -> Specs:
    """A decoder-only LLM used as a text encoder (``model.*`` transformers naming)."""
    vocab, hidden, depth, heads, kv, hd, ffn, qk_norm, bias = LLM_CONFIGS[variant]
    specs: Specs = [("model.embed_tokens.weight", dtype, (vocab, hidden))]
    for i in range(layers if layers is not None else depth):
        b = f"model.layers.{i}"
        specs += _lin(f"{b}.self_attn.q_proj", heads * hd, hidden, dtype, bias=bias)
        specs += _lin(f"{b}.self_attn.k_proj", kv * hd, hidden, dtype, bias=bias)
        specs += _lin(f"{b}.self_attn.v_proj", kv * hd, hidden, dtype, bias=bias)
        specs += _lin(f"{b}.self_attn.o_proj", hidden, heads * hd, dtype, bias=False)
        if qk_norm:
            specs += [(f"{b}.self_attn.q_norm.weight", dtype, (hd,))]
            specs += [(f"{b}.self_attn.k_norm.weight", dtype, (hd,))]
        for p, o, i_ in (
            ("gate_proj", ffn, hidden),
            ("up_proj", ffn, hidden),
            ("down_proj", hidden, ffn),
        ):
            specs += _lin(f"{b}.mlp.{p}", o, i_, dtype, bias=False)
        specs += _norm(f"{b}.input_layernorm", hidden, dtype, bias=False)
        specs += _norm(f"{b}.post_attention_layernorm", hidden, dtype, bias=False)
    return specs + _norm("model.norm", hidden, dtype, bias=False)


# ------------------------------------------------------------------------------------ upscalers


def _rrdb(name: str, nf: int, gc: int, dtype: str, old: bool) -> Specs:
    specs: Specs = []
    for r in (1, 2, 3):
        rdb = f"{name}.RDB{r}" if old else f"{name}.rdb{r}"
        for c in range(1, 6):
            cin = nf + (c - 1) * gc
            cout = nf if c == 5 else gc
            conv = f"{rdb}.conv{c}.0" if old else f"{rdb}.conv{c}"
            specs += _conv(conv, cout, cin, 3, dtype)
    return specs


def esrgan_old(
    scale: int = 4, num_blocks: int = 23, nf: int = 64, gc: int = 32, dtype: str = "F32"
) -> Specs:
    """ESRGAN in its original naming (``RRDB_ESRGAN_x4.pth``, most community ``4x-*.pth``)."""
    specs = _conv("model.0", nf, 3, 3, dtype)
    for b in range(num_blocks):
        specs += _rrdb(f"model.1.sub.{b}", nf, gc, dtype, old=True)
    specs += _conv(f"model.1.sub.{num_blocks}", nf, nf, 3, dtype)
    index = 3
    for _ in range({1: 0, 2: 1, 4: 2, 8: 3}[scale]):
        specs += _conv(f"model.{index}", nf, nf, 3, dtype)
        index += 3
    specs += _conv(f"model.{index - 1}", nf, nf, 3, dtype)  # HRconv
    return specs + _conv(f"model.{index + 1}", 3, nf, 3, dtype)  # conv_last


def rrdbnet(
    scale: int = 4, num_blocks: int = 23, nf: int = 64, gc: int = 32, dtype: str = "F32"
) -> Specs:
    """BasicSR ``RRDBNet`` (Real-ESRGAN x4plus / x2plus: x2 folds a 2x pixel-unshuffle in)."""
    in_ch = 3 * {1: 16, 2: 4}.get(scale, 1)
    specs = _conv("conv_first", nf, in_ch, 3, dtype)
    for b in range(num_blocks):
        specs += _rrdb(f"body.{b}", nf, gc, dtype, old=False)
    specs += _conv("conv_body", nf, nf, 3, dtype)
    ups = 3 if scale == 8 else 2
    for u in range(1, ups + 1):
        specs += _conv(f"conv_up{u}", nf, nf, 3, dtype)
    return specs + _conv("conv_hr", nf, nf, 3, dtype) + _conv("conv_last", 3, nf, 3, dtype)


def srvgg_compact(scale: int = 4, num_conv: int = 16, nf: int = 64, dtype: str = "F32") -> Specs:
    """Real-ESRGAN ``SRVGGNetCompact`` (realesr-general-x4v3, 2x compact models)."""
    specs = _conv("body.0", nf, 3, 3, dtype) + [("body.1.weight", dtype, (nf,))]
    index = 2
    for _ in range(num_conv):
        specs += _conv(f"body.{index}", nf, nf, 3, dtype)
        specs += [(f"body.{index + 1}.weight", dtype, (nf,))]
        index += 2
    return specs + _conv(f"body.{index}", 3 * scale * scale, nf, 3, dtype)


def swinir(
    scale: int = 4,
    embed: int = 180,
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
    window: int = 8,
    heads: int = 6,
    dtype: str = "F32",
) -> Specs:
    """SwinIR classical SR (``pixelshuffle`` upsampler) in the reference naming."""
    specs = _conv("conv_first", embed, 3, 3, dtype)
    specs += _norm("patch_embed.norm", embed, dtype)
    for i, depth in enumerate(depths):
        g = f"layers.{i}.residual_group"
        for b in range(depth):
            blk = f"{g}.blocks.{b}"
            specs += _norm(f"{blk}.norm1", embed, dtype)
            specs += [
                (f"{blk}.attn.relative_position_bias_table", dtype, ((2 * window - 1) ** 2, heads))
            ]
            specs += [(f"{blk}.attn.relative_position_index", "I64", (window**2, window**2))]
            specs += _lin(f"{blk}.attn.qkv", 3 * embed, embed, dtype)
            specs += _lin(f"{blk}.attn.proj", embed, embed, dtype)
            specs += _norm(f"{blk}.norm2", embed, dtype)
            specs += _lin(f"{blk}.mlp.fc1", 2 * embed, embed, dtype)
            specs += _lin(f"{blk}.mlp.fc2", embed, 2 * embed, dtype)
        specs += _conv(f"layers.{i}.conv", embed, embed, 3, dtype)
    specs += _norm("norm", embed, dtype) + _conv("conv_after_body", embed, embed, 3, dtype)
    nf = 64
    specs += _conv("conv_before_upsample.0", nf, embed, 3, dtype)
    if scale == 3:
        specs += _conv("upsample.0", 9 * nf, nf, 3, dtype)
    else:
        for u in range({2: 1, 4: 2, 8: 3}[scale]):
            specs += _conv(f"upsample.{2 * u}", 4 * nf, nf, 3, dtype)
    return specs + _conv("conv_last", 3, nf, 3, dtype)
