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
    "clip_vision",
    "dat",
    "hat",
    "multi_text_encoders",
    "omnisr",
    "openclip_g",
    "prefixed",
    "qwen_image_vae",
    "siglip_vision",
    "rrdbnet",
    "span",
    "srvgg_compact",
    "swinir",
    "t5xxl",
    "taesd",
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


def transformers_state_dict(class_name: str, config_name: str, **config: Any) -> Specs | None:
    """The state-dict layout (BF16) of a transformers class built on the ``meta`` device from
    ``config_name(**config)``; None when the installed transformers lacks either class. A T5's
    ``encoder.embed_tokens`` (a tie of ``shared``, not stored) is left out."""
    import torch
    import transformers

    cls = getattr(transformers, class_name, None)
    config_cls = getattr(transformers, config_name, None)
    if cls is None or config_cls is None:
        return None
    with torch.device("meta"):
        model = cls(config_cls(**config))
    specs = [(n, "BF16", tuple(t.shape)) for n, t in model.state_dict().items()]
    if any(n == "shared.weight" for n, _, _ in specs):
        specs = [s for s in specs if s[0] != "encoder.embed_tokens.weight"]
    return specs


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
    "qwen3_8b": (151936, 4096, 36, 32, 8, 128, 12288, True, False),  # FLUX.2 klein 9B
    "mistral_small_3_24b": (131072, 5120, 40, 32, 8, 128, 32768, False, False),  # FLUX.2 dev
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


# ------------------------------------------------------------------------------------ more (gaps)

_TEXT_ENCODERS = {"clip_l": clip_l, "clip_g": clip_g, "t5xxl": t5xxl}


def multi_text_encoders(
    names: tuple[str, ...] = ("clip_l", "clip_g", "t5xxl"),
    prefix: str = "text_encoders.{}.transformer.",
    dtype: str = "F16",
) -> Specs:
    """Several text encoders in one file: SD3 ``*_incl_clips`` / ComfyUI CLIP saves
    (``text_encoders.clip_l.transformer.*`` or ``clip_l.transformer.*``, one prefix each)."""
    specs: Specs = []
    for name in names:
        specs += prefixed(prefix.format(name), _TEXT_ENCODERS[name](dtype))
    return specs


# (hidden, layers, heads, mlp, patch, image size, projection) of released vision towers.
CLIP_VISION_CONFIGS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "clip_vit_l": (1024, 24, 16, 4096, 14, 224, 768),
    "clip_vit_h": (1280, 32, 16, 5120, 14, 224, 1024),
    "clip_vit_bigg": (1664, 48, 16, 8192, 14, 224, 1280),
}


def clip_vision(variant: str = "clip_vit_h", projection: bool = True, dtype: str = "F16") -> Specs:
    """A transformers ``CLIPVisionModelWithProjection`` (IP-Adapter ``image_encoder``, ComfyUI
    ``clip_vision``), built on the ``meta`` device from the released config."""
    import torch
    import transformers

    hidden, layers, heads, mlp, patch, size, proj = CLIP_VISION_CONFIGS[variant]
    config = transformers.CLIPVisionConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        patch_size=patch,
        image_size=size,
        projection_dim=proj,
    )
    cls = transformers.CLIPVisionModelWithProjection if projection else transformers.CLIPVisionModel
    with torch.device("meta"):
        model = cls(config)
    return _saved_vision_names(model.state_dict(), dtype)


def _saved_vision_names(state: Any, dtype: str) -> Specs:
    """Names as released files store them: the tower under ``vision_model.`` (transformers 5
    drops that level from a bare ``*VisionModel``'s state dict; files saved by 4.x have it)."""
    specs: Specs = []
    for name, tensor in state.items():
        if not name.startswith(("vision_model.", "visual_projection.")):
            name = "vision_model." + name
        specs.append((name, dtype, tuple(tensor.shape)))
    return specs


def siglip_vision(dtype: str = "BF16") -> Specs:
    """SigLIP so400m-patch14-384 vision tower (Flux.1 Redux; ComfyUI ``sigclip_vision_384``)."""
    import torch
    import transformers

    config = transformers.SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        patch_size=14,
        image_size=384,
    )
    with torch.device("meta"):
        model = transformers.SiglipVisionModel(config)
    return _saved_vision_names(model.state_dict(), dtype)


def taesd(latent_channels: int = 4, naming: str = "diffusers", parts: str = "both") -> Specs:
    """A tiny autoencoder: diffusers ``AutoencoderTiny`` naming, or the original madebyollin
    files (``taesd_encoder``/``taesd_decoder``: unprefixed ``nn.Sequential``, the decoder's layer
    numbers one higher for its leading ``Clamp``), or ComfyUI's ``taesd_encoder.`` and
    ``taesd_decoder.`` with ``vae_scale``/``vae_shift``. ``parts``: both, encoder or decoder."""
    config = {"latent_channels": latent_channels}
    specs = meta_state_dict("AutoencoderTiny", config, "F16")
    wanted = ("encoder", "decoder") if parts == "both" else (parts,)
    out: Specs = []
    for name, d, shape in specs:
        part, _, rest = name.partition(".layers.")
        if part not in wanted:
            continue
        if naming == "diffusers":
            out.append((name, d, shape))
            continue
        number, _, tail = rest.partition(".")
        if part == "decoder":
            number = str(int(number) + 1)
        stem = f"taesd_{part}." if naming == "comfyui" else ""
        out.append((f"{stem}{number}.{tail}", d, shape))
    if naming == "comfyui":
        out += [("vae_scale", "F32", ()), ("vae_shift", "F32", ())]
    return out


def _ps_upsample(start: str, scale: int, nf: int, dtype: str) -> Specs:
    """Pixel-shuffle upsampler convs ``start.0``, ``start.2``, ... (x2 steps, or one x3)."""
    if scale == 3:
        return _conv(f"{start}.0", 9 * nf, nf, 3, dtype)
    specs: Specs = []
    for u in range({1: 0, 2: 1, 4: 2, 8: 3}[scale]):
        specs += _conv(f"{start}.{2 * u}", 4 * nf, nf, 3, dtype)
    return specs


def hat(
    scale: int = 4,
    embed: int = 180,
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
    heads: int = 6,
    window: int = 16,
    compress: int = 3,
    squeeze: int = 30,
    overlap_ratio: float = 0.5,
    dtype: str = "F32",
) -> Specs:
    """HAT (``HAT_SRx4``; HAT-L: 12 groups), names as the reference ``hat_arch.py`` stores them."""
    overlap = int(window * overlap_ratio) + window
    specs = _conv("conv_first", embed, 3, 3, dtype)
    specs += [
        ("relative_position_index_SA", "I64", (window**2, window**2)),
        ("relative_position_index_OCA", "I64", (window**2, overlap**2)),
    ]
    specs += _norm("patch_embed.norm", embed, dtype)
    for i, depth in enumerate(depths):
        g = f"layers.{i}.residual_group"
        for b in range(depth):
            blk = f"{g}.blocks.{b}"
            specs += _norm(f"{blk}.norm1", embed, dtype)
            specs += [
                (f"{blk}.attn.relative_position_bias_table", dtype, ((2 * window - 1) ** 2, heads))
            ]
            specs += _lin(f"{blk}.attn.qkv", 3 * embed, embed, dtype)
            specs += _lin(f"{blk}.attn.proj", embed, embed, dtype)
            specs += _conv(f"{blk}.conv_block.cab.0", embed // compress, embed, 3, dtype)
            specs += _conv(f"{blk}.conv_block.cab.2", embed, embed // compress, 3, dtype)
            specs += _conv(f"{blk}.conv_block.cab.3.attention.1", embed // squeeze, embed, 1, dtype)
            specs += _conv(f"{blk}.conv_block.cab.3.attention.3", embed, embed // squeeze, 1, dtype)
            specs += _norm(f"{blk}.norm2", embed, dtype)
            specs += _lin(f"{blk}.mlp.fc1", 2 * embed, embed, dtype)
            specs += _lin(f"{blk}.mlp.fc2", embed, 2 * embed, dtype)
        oa = f"{g}.overlap_attn"
        specs += _norm(f"{oa}.norm1", embed, dtype)
        specs += _lin(f"{oa}.qkv", 3 * embed, embed, dtype)
        specs += [
            (f"{oa}.relative_position_bias_table", dtype, ((window + overlap - 1) ** 2, heads))
        ]
        specs += _lin(f"{oa}.proj", embed, embed, dtype)
        specs += _norm(f"{oa}.norm2", embed, dtype)
        specs += _lin(f"{oa}.mlp.fc1", 2 * embed, embed, dtype)
        specs += _lin(f"{oa}.mlp.fc2", embed, 2 * embed, dtype)
        specs += _conv(f"layers.{i}.conv", embed, embed, 3, dtype)
    specs += _norm("norm", embed, dtype) + _conv("conv_after_body", embed, embed, 3, dtype)
    specs += _conv("conv_before_upsample.0", 64, embed, 3, dtype)
    return specs + _ps_upsample("upsample", scale, 64, dtype) + _conv("conv_last", 3, 64, 3, dtype)


def _bn(name: str, ch: int, dtype: str) -> Specs:
    return _norm(name, ch, dtype) + [
        (f"{name}.running_mean", dtype, (ch,)),
        (f"{name}.running_var", dtype, (ch,)),
        (f"{name}.num_batches_tracked", "I64", ()),
    ]


def dat(
    scale: int = 4,
    embed: int = 180,
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
    heads: int = 6,
    split: tuple[int, int] = (8, 32),
    direct: bool = False,
    dtype: str = "F32",
) -> Specs:
    """DAT (``DAT_x4``; ``direct``: DAT-light's pixel-shuffle-direct upsampler), reference
    ``DAT.py`` naming: even blocks spatial window attention, odd blocks channel attention."""
    pos = embed // 2 // 4 // 4  # DynamicPosBias width: (dim // 2 per branch) // 4 // 4
    specs = _conv("conv_first", embed, 3, 3, dtype) + _norm("before_RG.1", embed, dtype)
    for i, depth in enumerate(depths):
        for b in range(depth):
            blk = f"layers.{i}.blocks.{b}"
            specs += _norm(f"{blk}.norm1", embed, dtype)
            specs += _lin(f"{blk}.attn.qkv", 3 * embed, embed, dtype)
            specs += _lin(f"{blk}.attn.proj", embed, embed, dtype)
            if b % 2 == 0:
                for a in range(2):
                    at = f"{blk}.attn.attns.{a}"
                    h, w = split if a == 0 else split[::-1]
                    specs += [
                        (f"{at}.rpe_biases", dtype, ((2 * h - 1) * (2 * w - 1), 2)),
                        (f"{at}.relative_position_index", "I64", (h * w, h * w)),
                    ]
                    specs += _lin(f"{at}.pos.pos_proj", pos, 2, dtype)
                    for p in ("pos1", "pos2"):
                        specs += _norm(f"{at}.pos.{p}.0", pos, dtype)
                        specs += _lin(f"{at}.pos.{p}.2", pos, pos, dtype)
                    specs += _norm(f"{at}.pos.pos3.0", pos, dtype)
                    specs += _lin(f"{at}.pos.pos3.2", heads // 2, pos, dtype)
            else:
                specs += [(f"{blk}.attn.temperature", dtype, (heads, 1, 1))]
            specs += [(f"{blk}.attn.dwconv.0.weight", dtype, (embed, 1, 3, 3))]
            specs += [(f"{blk}.attn.dwconv.0.bias", dtype, (embed,))]
            specs += _bn(f"{blk}.attn.dwconv.1", embed, dtype)
            specs += _conv(f"{blk}.attn.channel_interaction.1", embed // 8, embed, 1, dtype)
            specs += _bn(f"{blk}.attn.channel_interaction.2", embed // 8, dtype)
            specs += _conv(f"{blk}.attn.channel_interaction.4", embed, embed // 8, 1, dtype)
            specs += _conv(f"{blk}.attn.spatial_interaction.0", embed // 16, embed, 1, dtype)
            specs += _bn(f"{blk}.attn.spatial_interaction.1", embed // 16, dtype)
            specs += _conv(f"{blk}.attn.spatial_interaction.3", 1, embed // 16, 1, dtype)
            specs += _norm(f"{blk}.norm2", embed, dtype)
            hidden = 2 * embed
            specs += _lin(f"{blk}.ffn.fc1", hidden, embed, dtype)
            specs += _norm(f"{blk}.ffn.sg.norm", hidden // 2, dtype)
            specs += [(f"{blk}.ffn.sg.conv.weight", dtype, (hidden // 2, 1, 3, 3))]
            specs += [(f"{blk}.ffn.sg.conv.bias", dtype, (hidden // 2,))]
            specs += _lin(f"{blk}.ffn.fc2", embed, hidden // 2, dtype)
        specs += _conv(f"layers.{i}.conv", embed, embed, 3, dtype)
    specs += _norm("norm", embed, dtype) + _conv("conv_after_body", embed, embed, 3, dtype)
    if direct:
        return specs + _conv("upsample.0", 3 * scale * scale, embed, 3, dtype)
    specs += _conv("conv_before_upsample.0", 64, embed, 3, dtype)
    return specs + _ps_upsample("upsample", scale, 64, dtype) + _conv("conv_last", 3, 64, 3, dtype)


def omnisr(
    scale: int = 4, nf: int = 64, groups: int = 5, blocks: int = 1, dtype: str = "F32"
) -> Specs:
    """OmniSR (``input``, ``residual_layer`` OSA groups, ``output``, ``up.0``): the convs and
    the first block layers per group, in the reference naming."""
    specs = _conv("input", nf, 3, 3, dtype)
    for g in range(groups):
        base = f"residual_layer.{g}.residual_layer"
        for b in range(blocks):
            specs += _conv(f"{base}.{b}.layer.0.fn.0", nf, nf, 1, dtype)
            specs += _conv(f"{base}.{b}.layer.0.fn.1.depth_conv", nf, nf, 3, dtype)
            specs += _conv(f"{base}.{b}.layer.0.fn.1.point_conv", nf, nf, 1, dtype)
        specs += _conv(f"{base}.{blocks}", nf, nf, 3, dtype)
    specs += _conv("output", nf, nf, 3, dtype)
    return specs + _conv("up.0", 3 * scale * scale, nf, 3, dtype)


def span(scale: int = 4, nf: int = 48, dtype: str = "F32") -> Specs:
    """SPAN (``conv_1``, ``block_1..6`` of three Conv3XC, ``conv_cat``, ``conv_2``,
    ``upsampler.0``): each Conv3XC stores ``sk`` (1x1), the ``conv`` chain (gain 2) and
    ``eval_conv``."""

    def conv3xc(name: str, out: int, inp: int) -> Specs:
        return (
            _conv(f"{name}.sk", out, inp, 1, dtype)
            + _conv(f"{name}.conv.0", inp * 2, inp, 1, dtype)
            + _conv(f"{name}.conv.1", out * 2, inp * 2, 3, dtype)
            + _conv(f"{name}.conv.2", out, out * 2, 1, dtype)
            + _conv(f"{name}.eval_conv", out, inp, 3, dtype)
        )

    specs = [("no_norm", dtype, (1,))] + conv3xc("conv_1", nf, 3)
    for b in range(1, 7):
        for c in ("c1_r", "c2_r", "c3_r"):
            specs += conv3xc(f"block_{b}.{c}", nf, nf)
    specs += _conv("conv_cat", nf, nf * 4, 1, dtype) + conv3xc("conv_2", nf, nf)
    return specs + _conv("upsampler.0", 3 * scale * scale, nf, 3, dtype)
