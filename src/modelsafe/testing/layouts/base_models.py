"""Tensor layouts of the base-model families, derived from their architecture parameters.

Each generator returns ``(name, dtype, shape)`` specs in the naming real files use: LDM/SGM single
files (``model.diffusion_model.`` + ``first_stage_model.`` + ``cond_stage_model.``/
``conditioner.embedders.N.``), SAI MMDiT (SD3/3.5), BFL (Flux, Chroma) and diffusers naming.
Written from the published architectures (CompVis/Stability ``ldm``/``sgm`` configs, SD3.5
``mmditx.py``, BFL ``flux/model.py``); checked tensor-for-tensor against real files' headers.
Diffusers-named denoisers (pipelines, Z-Image, Qwen-Image, HiDream, Stable Cascade) are read
off diffusers model classes built on torch's ``meta`` device (no memory, no weights).

Feed the specs to :func:`modelsafe.testing.write_safetensors` (``data="sparse"`` for full size).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelsafe.testing.safetensors_writer import TensorSpec

Specs = list[TensorSpec]


def _lin(name: str, out: int, inp: int, dtype: str, bias: bool = True) -> Specs:
    specs: Specs = [(f"{name}.weight", dtype, (out, inp))]
    return specs + ([(f"{name}.bias", dtype, (out,))] if bias else [])


def _conv(name: str, out: int, inp: int, k: int, dtype: str) -> Specs:
    return [(f"{name}.weight", dtype, (out, inp, k, k)), (f"{name}.bias", dtype, (out,))]


def _norm(name: str, ch: int, dtype: str, bias: bool = True) -> Specs:
    specs: Specs = [(f"{name}.weight", dtype, (ch,))]
    return specs + ([(f"{name}.bias", dtype, (ch,))] if bias else [])


def prefixed(prefix: str, specs: Iterable[TensorSpec]) -> Specs:
    """``specs`` with ``prefix`` put before every name."""
    return [(prefix + n, d, s) for n, d, s in specs]


# ---------------------------------------------------------------- LDM UNet (SD1/SD2/SDXL)


def _resblock(name: str, cin: int, cout: int, emb: int, dtype: str) -> Specs:
    specs = _norm(f"{name}.in_layers.0", cin, dtype) + _conv(
        f"{name}.in_layers.2", cout, cin, 3, dtype
    )
    specs += _lin(f"{name}.emb_layers.1", cout, emb, dtype)
    specs += _norm(f"{name}.out_layers.0", cout, dtype) + _conv(
        f"{name}.out_layers.3", cout, cout, 3, dtype
    )
    if cin != cout:
        specs += _conv(f"{name}.skip_connection", cout, cin, 1, dtype)
    return specs


def _spatial_transformer(
    name: str, ch: int, depth: int, context: int, linear: bool, dtype: str
) -> Specs:
    specs = _norm(f"{name}.norm", ch, dtype)
    proj = (lambda n: _lin(n, ch, ch, dtype)) if linear else (lambda n: _conv(n, ch, ch, 1, dtype))
    specs += proj(f"{name}.proj_in")
    for d in range(depth):
        b = f"{name}.transformer_blocks.{d}"
        for attn, kv in (("attn1", ch), ("attn2", context)):
            specs += _lin(f"{b}.{attn}.to_q", ch, ch, dtype, bias=False)
            specs += _lin(f"{b}.{attn}.to_k", ch, kv, dtype, bias=False)
            specs += _lin(f"{b}.{attn}.to_v", ch, kv, dtype, bias=False)
            specs += _lin(f"{b}.{attn}.to_out.0", ch, ch, dtype)
        specs += _lin(f"{b}.ff.net.0.proj", ch * 8, ch, dtype) + _lin(
            f"{b}.ff.net.2", ch, ch * 4, dtype
        )
        for i in (1, 2, 3):
            specs += _norm(f"{b}.norm{i}", ch, dtype)
    return specs + proj(f"{name}.proj_out")


def ldm_unet(
    *,
    model_channels: int = 320,
    channel_mult: tuple[int, ...] = (1, 2, 4, 4),
    depth: tuple[int, ...] = (1, 1, 1, 0),
    mid_depth: int = 1,
    context_dim: int = 768,
    in_channels: int = 4,
    out_channels: int = 4,
    linear: bool = False,
    adm_in_channels: int | None = None,
    num_res_blocks: int = 2,
    dtype: str = "F16",
) -> Specs:
    """An LDM ``UNetModel`` (openaimodel.py) state dict, unprefixed."""
    mc, emb = model_channels, model_channels * 4
    specs = _lin("time_embed.0", emb, mc, dtype) + _lin("time_embed.2", emb, emb, dtype)
    if adm_in_channels:
        specs += _lin("label_emb.0.0", emb, adm_in_channels, dtype) + _lin(
            "label_emb.0.2", emb, emb, dtype
        )
    specs += _conv("input_blocks.0.0", mc, in_channels, 3, dtype)
    skips, ch, i = [mc], mc, 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            out = mc * mult
            specs += _resblock(f"input_blocks.{i}.0", ch, out, emb, dtype)
            ch = out
            if depth[level]:
                specs += _spatial_transformer(
                    f"input_blocks.{i}.1", ch, depth[level], context_dim, linear, dtype
                )
            skips.append(ch)
            i += 1
        if level != len(channel_mult) - 1:
            specs += _conv(f"input_blocks.{i}.0.op", ch, ch, 3, dtype)
            skips.append(ch)
            i += 1
    specs += _resblock("middle_block.0", ch, ch, emb, dtype)
    specs += _spatial_transformer("middle_block.1", ch, mid_depth, context_dim, linear, dtype)
    specs += _resblock("middle_block.2", ch, ch, emb, dtype)
    o = 0
    for level in reversed(range(len(channel_mult))):
        for r in range(num_res_blocks + 1):
            out = mc * channel_mult[level]
            specs += _resblock(f"output_blocks.{o}.0", ch + skips.pop(), out, emb, dtype)
            ch = out
            sub = 1
            if depth[level]:
                specs += _spatial_transformer(
                    f"output_blocks.{o}.1", ch, depth[level], context_dim, linear, dtype
                )
                sub = 2
            if level and r == num_res_blocks:
                specs += _conv(f"output_blocks.{o}.{sub}.conv", ch, ch, 3, dtype)
            o += 1
    return specs + _norm("out.0", mc, dtype) + _conv("out.2", out_channels, mc, 3, dtype)


UNET_PARAMS: dict[str, dict[str, Any]] = {
    "sd1": {},
    "sd2": {"context_dim": 1024, "linear": True},
    "sdxl": {
        "channel_mult": (1, 2, 4),
        "depth": (0, 2, 10),
        "mid_depth": 10,
        "context_dim": 2048,
        "linear": True,
        "adm_in_channels": 2816,
    },
    "sdxl_refiner": {
        "model_channels": 384,
        "depth": (0, 4, 4, 0),
        "mid_depth": 4,
        "context_dim": 1280,
        "linear": True,
        "adm_in_channels": 2560,
    },
}


# ---------------------------------------------------------------- VAE and text encoders


def _vae_res(name: str, cin: int, cout: int, dtype: str) -> Specs:
    specs = _norm(f"{name}.norm1", cin, dtype) + _conv(f"{name}.conv1", cout, cin, 3, dtype)
    specs += _norm(f"{name}.norm2", cout, dtype) + _conv(f"{name}.conv2", cout, cout, 3, dtype)
    return specs + (_conv(f"{name}.nin_shortcut", cout, cin, 1, dtype) if cin != cout else [])


def _vae_mid(name: str, ch: int, dtype: str) -> Specs:
    specs = _vae_res(f"{name}.block_1", ch, ch, dtype) + _norm(f"{name}.attn_1.norm", ch, dtype)
    for p in ("q", "k", "v", "proj_out"):
        specs += _conv(f"{name}.attn_1.{p}", ch, ch, 1, dtype)
    return specs + _vae_res(f"{name}.block_2", ch, ch, dtype)


def ldm_vae(latent_channels: int = 4, quant_conv: bool = True, dtype: str = "F16") -> Specs:
    """An LDM ``AutoencoderKL`` (ch 128, mult 1,2,4,4): SD 4-channel or SD3/Flux 16-channel."""
    chs = [128, 256, 512, 512]
    specs = _conv("encoder.conv_in", 128, 3, 3, dtype)
    ch = 128
    for level, out in enumerate(chs):
        for b in range(2):
            specs += _vae_res(f"encoder.down.{level}.block.{b}", ch, out, dtype)
            ch = out
        if level != 3:
            specs += _conv(f"encoder.down.{level}.downsample.conv", ch, ch, 3, dtype)
    specs += _vae_mid("encoder.mid", ch, dtype) + _norm("encoder.norm_out", ch, dtype)
    specs += _conv("encoder.conv_out", 2 * latent_channels, ch, 3, dtype)
    specs += _conv("decoder.conv_in", 512, latent_channels, 3, dtype) + _vae_mid(
        "decoder.mid", 512, dtype
    )
    ch = 512
    for level in reversed(range(4)):
        out = chs[level]
        for b in range(3):
            specs += _vae_res(f"decoder.up.{level}.block.{b}", ch, out, dtype)
            ch = out
        if level:
            specs += _conv(f"decoder.up.{level}.upsample.conv", ch, ch, 3, dtype)
    specs += _norm("decoder.norm_out", 128, dtype) + _conv("decoder.conv_out", 3, 128, 3, dtype)
    if quant_conv:
        specs += _conv("quant_conv", 2 * latent_channels, 2 * latent_channels, 1, dtype)
        specs += _conv("post_quant_conv", latent_channels, latent_channels, 1, dtype)
    return specs


def clip_text(
    width: int = 768, layers: int = 12, projection: int | None = None, dtype: str = "F16"
) -> Specs:
    """A transformers ``CLIPTextModel`` (``text_model.*``), optionally with ``text_projection``."""
    t = "text_model"
    specs: Specs = [
        (f"{t}.embeddings.token_embedding.weight", dtype, (49408, width)),
        (f"{t}.embeddings.position_embedding.weight", dtype, (77, width)),
        (f"{t}.embeddings.position_ids", "I64", (1, 77)),
    ]
    for i in range(layers):
        b = f"{t}.encoder.layers.{i}"
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            specs += _lin(f"{b}.self_attn.{p}", width, width, dtype)
        specs += _norm(f"{b}.layer_norm1", width, dtype) + _norm(f"{b}.layer_norm2", width, dtype)
        specs += _lin(f"{b}.mlp.fc1", width * 4, width, dtype) + _lin(
            f"{b}.mlp.fc2", width, width * 4, dtype
        )
    specs += _norm(f"{t}.final_layer_norm", width, dtype)
    if projection:
        specs += _lin("text_projection", projection, width, dtype, bias=False)
    return specs


def openclip_text(width: int = 1024, layers: int = 24, dtype: str = "F16") -> Specs:
    """An open_clip text tower (``model.*`` in SD2/SDXL files): ViT-H 1024 or bigG 1280."""
    specs: Specs = [
        ("model.token_embedding.weight", dtype, (49408, width)),
        ("model.positional_embedding", dtype, (77, width)),
        ("model.text_projection", dtype, (width, width)),
        ("model.logit_scale", dtype, ()),
    ]
    for i in range(layers):
        b = f"model.transformer.resblocks.{i}"
        specs += [(f"{b}.attn.in_proj_weight", dtype, (3 * width, width))]
        specs += [(f"{b}.attn.in_proj_bias", dtype, (3 * width,))]
        specs += _lin(f"{b}.attn.out_proj", width, width, dtype)
        specs += _norm(f"{b}.ln_1", width, dtype) + _norm(f"{b}.ln_2", width, dtype)
        specs += _lin(f"{b}.mlp.c_fc", 4 * width, width, dtype) + _lin(
            f"{b}.mlp.c_proj", width, 4 * width, dtype
        )
    return specs + _norm("model.ln_final", width, dtype)


def t5_encoder(layers: int = 24, dtype: str = "F16") -> Specs:
    """A transformers ``T5EncoderModel`` v1.1 XXL (width 4096, 64 heads, gated FF 10240)."""
    specs: Specs = [("shared.weight", dtype, (32128, 4096))]
    for i in range(layers):
        b = f"encoder.block.{i}.layer"
        for p in ("q", "k", "v", "o"):
            specs += _lin(f"{b}.0.SelfAttention.{p}", 4096, 4096, dtype, bias=False)
        if i == 0:
            specs += [(f"{b}.0.SelfAttention.relative_attention_bias.weight", dtype, (32, 64))]
        specs += _norm(f"{b}.0.layer_norm", 4096, dtype, bias=False)
        specs += _lin(f"{b}.1.DenseReluDense.wi_0", 10240, 4096, dtype, bias=False)
        specs += _lin(f"{b}.1.DenseReluDense.wi_1", 10240, 4096, dtype, bias=False)
        specs += _lin(f"{b}.1.DenseReluDense.wo", 4096, 10240, dtype, bias=False)
        specs += _norm(f"{b}.1.layer_norm", 4096, dtype, bias=False)
    return specs + _norm("encoder.final_layer_norm", 4096, dtype, bias=False)


# ---------------------------------------------------------------- SD3 / SD3.5 (SAI MMDiT)

SD3_PARAMS: dict[str, dict[str, Any]] = {
    "sd3/medium": {"depth": 24, "pos": 192, "attn2_blocks": 0, "qk_norm": False},
    "sd3.5/medium": {"depth": 24, "pos": 384, "attn2_blocks": 13, "qk_norm": True},
    "sd3.5/large": {"depth": 38, "pos": 192, "attn2_blocks": 0, "qk_norm": True},
}


def sai_mmdit(
    depth: int = 24,
    pos: int = 192,
    attn2_blocks: int = 0,
    qk_norm: bool = False,
    dtype: str = "F16",
) -> Specs:
    """SD3/SD3.5 ``MMDiT(X)`` as SAI ships it: width 64 * depth, 16 latent channels, patch 2."""
    h = 64 * depth
    specs: Specs = [("pos_embed", dtype, (1, pos * pos, h))]
    specs += [
        ("x_embedder.proj.weight", dtype, (h, 16, 2, 2)),
        ("x_embedder.proj.bias", dtype, (h,)),
    ]
    specs += _lin("t_embedder.mlp.0", h, 256, dtype) + _lin("t_embedder.mlp.2", h, h, dtype)
    specs += _lin("y_embedder.mlp.0", h, 2048, dtype) + _lin("y_embedder.mlp.2", h, h, dtype)
    specs += _lin("context_embedder", h, 4096, dtype)
    for i in range(depth):
        for part in ("context_block", "x_block"):
            b = f"joint_blocks.{i}.{part}"
            last = part == "context_block" and i == depth - 1
            dual = part == "x_block" and i < attn2_blocks
            mods = 2 if last else (9 if dual else 6)
            specs += _lin(f"{b}.adaLN_modulation.1", mods * h, h, dtype)
            specs += _lin(f"{b}.attn.qkv", 3 * h, h, dtype)
            if qk_norm:
                specs += _norm(f"{b}.attn.ln_q", 64, dtype, bias=False) + _norm(
                    f"{b}.attn.ln_k", 64, dtype, bias=False
                )
            if last:
                continue
            specs += _lin(f"{b}.attn.proj", h, h, dtype)
            if dual:
                specs += _lin(f"{b}.attn2.qkv", 3 * h, h, dtype) + _lin(
                    f"{b}.attn2.proj", h, h, dtype
                )
                if qk_norm:
                    specs += _norm(f"{b}.attn2.ln_q", 64, dtype, bias=False) + _norm(
                        f"{b}.attn2.ln_k", 64, dtype, bias=False
                    )
            specs += _lin(f"{b}.mlp.fc1", 4 * h, h, dtype) + _lin(f"{b}.mlp.fc2", h, 4 * h, dtype)
    specs += _lin("final_layer.linear", 64, h, dtype)
    return specs + _lin("final_layer.adaLN_modulation.1", 2 * h, h, dtype)


# ---------------------------------------------------------------- Flux.1 / Chroma (BFL naming)


def bfl_flux(
    *,
    guidance: bool = True,
    in_features: int = 64,
    depth: int = 19,
    depth_single: int = 38,
    chroma: bool = False,
    dtype: str = "BF16",
) -> Specs:
    """Flux.1 (dev with ``guidance_in``, schnell without) or Chroma (no modulation layers, a
    ``distilled_guidance_layer`` instead), as BFL/lodestones ship them (unprefixed)."""
    h, mlp = 3072, 12288
    specs = _lin("img_in", h, in_features, dtype)
    if not chroma:
        specs += _lin("time_in.in_layer", h, 256, dtype) + _lin("time_in.out_layer", h, h, dtype)
        specs += _lin("vector_in.in_layer", h, 768, dtype) + _lin(
            "vector_in.out_layer", h, h, dtype
        )
        if guidance:
            specs += _lin("guidance_in.in_layer", h, 256, dtype) + _lin(
                "guidance_in.out_layer", h, h, dtype
            )
    else:
        g = "distilled_guidance_layer"
        specs += _lin(f"{g}.in_proj", 5120, 64, dtype) + _lin(f"{g}.out_proj", h, 5120, dtype)
        for i in range(5):
            specs += _lin(f"{g}.layers.{i}.in_layer", 5120, 5120, dtype)
            specs += _lin(f"{g}.layers.{i}.out_layer", 5120, 5120, dtype)
            specs += _norm(f"{g}.norms.{i}.scale", 5120, dtype, bias=False)
    specs += _lin("txt_in", h, 4096, dtype)
    for i in range(depth):
        for s in ("img", "txt"):
            b = f"double_blocks.{i}.{s}"
            if not chroma:
                specs += _lin(f"{b}_mod.lin", 6 * h, h, dtype)
            specs += _lin(f"{b}_attn.qkv", 3 * h, h, dtype)
            specs += [(f"{b}_attn.norm.query_norm.scale", dtype, (128,))]
            specs += [(f"{b}_attn.norm.key_norm.scale", dtype, (128,))]
            specs += _lin(f"{b}_attn.proj", h, h, dtype)
            specs += _lin(f"{b}_mlp.0", mlp, h, dtype) + _lin(f"{b}_mlp.2", h, mlp, dtype)
    for i in range(depth_single):
        b = f"single_blocks.{i}"
        specs += _lin(f"{b}.linear1", 3 * h + mlp, h, dtype) + _lin(
            f"{b}.linear2", h, h + mlp, dtype
        )
        specs += [
            (f"{b}.norm.query_norm.scale", dtype, (128,)),
            (f"{b}.norm.key_norm.scale", dtype, (128,)),
        ]
        if not chroma:
            specs += _lin(f"{b}.modulation.lin", 3 * h, h, dtype)
    specs += _lin("final_layer.linear", 64, h, dtype)
    if not chroma:
        specs += _lin("final_layer.adaLN_modulation.1", 2 * h, h, dtype)
    return specs


# ---------------------------------------------------------------- diffusers naming (meta device)

# family/variant -> (diffusers class, config) of the denoiser as released.
DIFFUSERS_DENOISERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sd1": ("UNet2DConditionModel", {"cross_attention_dim": 768}),
    "sd2": (
        "UNet2DConditionModel",
        {
            "cross_attention_dim": 1024,
            "attention_head_dim": [5, 10, 20, 20],
            "use_linear_projection": True,
        },
    ),
    "sdxl": (
        "UNet2DConditionModel",
        {
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "block_out_channels": [320, 640, 1280],
            "transformer_layers_per_block": [1, 2, 10],
            "attention_head_dim": [5, 10, 20],
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
    ),
    "sdxl_refiner": (
        "UNet2DConditionModel",
        {
            "down_block_types": [
                "DownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ],
            "up_block_types": [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "UpBlock2D",
            ],
            "block_out_channels": [384, 768, 1536, 1536],
            "transformer_layers_per_block": 4,
            "attention_head_dim": [6, 12, 24, 24],
            "cross_attention_dim": 1280,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2560,
        },
    ),
    "sd3": (
        "SD3Transformer2DModel",
        {
            "sample_size": 128,
            "num_layers": 24,
            "num_attention_heads": 24,
            "caption_projection_dim": 1536,
            "pos_embed_max_size": 192,
        },
    ),
    "sd3.5/large": (
        "SD3Transformer2DModel",
        {
            "num_layers": 38,
            "num_attention_heads": 38,
            "caption_projection_dim": 2432,
            "qk_norm": "rms_norm",
        },
    ),
    "sd3.5/medium": (
        "SD3Transformer2DModel",
        {
            "num_layers": 24,
            "num_attention_heads": 24,
            "caption_projection_dim": 1536,
            "pos_embed_max_size": 384,
            "qk_norm": "rms_norm",
            "dual_attention_layers": tuple(range(13)),
        },
    ),
    "flux1/dev": ("FluxTransformer2DModel", {"guidance_embeds": True}),
    "flux1/schnell": ("FluxTransformer2DModel", {"guidance_embeds": False}),
    "chroma": ("ChromaTransformer2DModel", {}),
    "z-image": ("ZImageTransformer2DModel", {}),
    "qwen-image": ("QwenImageTransformer2DModel", {"num_layers": 60}),
    "hidream": (
        "HiDreamImageTransformer2DModel",
        {
            "patch_size": 2,
            "in_channels": 16,
            "out_channels": 16,
            "num_layers": 16,
            "num_single_layers": 32,
            "attention_head_dim": 128,
            "num_attention_heads": 20,
            "caption_channels": [4096, 4096],
            "text_emb_dim": 2048,
            "num_routed_experts": 4,
            "num_activated_experts": 2,
            "axes_dims_rope": (64, 32, 32),
            "max_resolution": (128, 128),
            "llama_layers": list(range(48)),
        },
    ),
    "stable-cascade/stage_c": (
        "StableCascadeUNet",
        {
            "in_channels": 16,
            "out_channels": 16,
            "timestep_ratio_embedding_dim": 64,
            "patch_size": 1,
            "conditioning_dim": 2048,
            "block_out_channels": [2048, 2048],
            "num_attention_heads": [32, 32],
            "down_num_layers_per_block": [8, 24],
            "up_num_layers_per_block": [24, 8],
            "down_blocks_repeat_mappers": [1, 1],
            "up_blocks_repeat_mappers": [1, 1],
            "block_types_per_layer": [
                ["SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"],
                ["SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"],
            ],
            "clip_text_in_channels": 1280,
            "clip_text_pooled_in_channels": 1280,
            "clip_image_in_channels": 768,
            "clip_seq": 4,
            "effnet_in_channels": None,
            "pixel_mapper_in_channels": None,
            "kernel_size": 3,
            "dropout": [0.1, 0.1],
            "self_attn": True,
            "timestep_conditioning_type": ["sca", "crp"],
            "switch_level": [False],
        },
    ),
    "stable-cascade/stage_b": (
        "StableCascadeUNet",
        {
            "in_channels": 4,
            "out_channels": 4,
            "timestep_ratio_embedding_dim": 64,
            "patch_size": 2,
            "conditioning_dim": 1280,
            "block_out_channels": [320, 640, 1280, 1280],
            "num_attention_heads": [0, 0, 20, 20],
            "down_num_layers_per_block": [2, 6, 28, 6],
            "up_num_layers_per_block": [6, 28, 6, 2],
            "down_blocks_repeat_mappers": [1, 1, 1, 1],
            "up_blocks_repeat_mappers": [3, 3, 2, 2],
            "block_types_per_layer": [
                ["SDCascadeResBlock", "SDCascadeTimestepBlock"],
                ["SDCascadeResBlock", "SDCascadeTimestepBlock"],
                ["SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"],
                ["SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"],
            ],
            "clip_text_in_channels": None,
            "clip_text_pooled_in_channels": 1280,
            "clip_image_in_channels": None,
            "clip_seq": 4,
            "effnet_in_channels": 16,
            "pixel_mapper_in_channels": 3,
            "kernel_size": 3,
            "dropout": [0, 0, 0.1, 0.1],
            "self_attn": True,
            "timestep_conditioning_type": ["sca"],
            "switch_level": None,
        },
    ),
}

_TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def diffusers_denoiser(key: str, dtype: str = "F16", **overrides: Any) -> Specs:
    """The state dict layout of a diffusers denoiser class built on the ``meta`` device."""
    import diffusers
    import torch

    class_name, config = DIFFUSERS_DENOISERS[key]
    with torch.device("meta"):
        model = getattr(diffusers, class_name)(**{**config, **overrides})
    return [(name, dtype, tuple(t.shape)) for name, t in model.state_dict().items()]


def diffusers_config(key: str, **overrides: Any) -> dict[str, Any]:
    """The ``config.json`` a diffusers folder holds for :func:`diffusers_denoiser`'s model."""
    class_name, config = DIFFUSERS_DENOISERS[key]
    out = {"_class_name": class_name, **config, **overrides}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def cascade_original(specs: Iterable[TensorSpec]) -> Specs:
    """Stable Cascade diffusers names back to the released files' (fused ``in_proj``)."""
    out: Specs = []
    for name, dtype, shape in specs:
        if name.endswith(
            (
                "attention.to_k.weight",
                "attention.to_v.weight",
                "attention.to_k.bias",
                "attention.to_v.bias",
            )
        ):
            continue
        if name.endswith(("attention.to_q.weight", "attention.to_q.bias")):
            what = "weight" if name.endswith("weight") else "bias"
            base = name.rsplit(".to_q.", 1)[0]
            out.append((f"{base}.attn.in_proj_{what}", dtype, (3 * shape[0], *shape[1:])))
        elif ".attention.to_out.0." in name:
            out.append(
                (name.replace(".attention.to_out.0.", ".attention.attn.out_proj."), dtype, shape)
            )
        else:
            out.append((name, dtype, shape))
    return out


def z_image_original(specs: Iterable[TensorSpec]) -> Specs:
    """Z-Image diffusers names back to the released single file's (fused ``qkv``)."""
    out: Specs = []
    renames = (
        ("all_final_layer.2-1.", "final_layer."),
        ("all_x_embedder.2-1.", "x_embedder."),
        (".attention.to_out.0.", ".attention.out."),
        (".attention.norm_k.", ".attention.k_norm."),
        (".attention.norm_q.", ".attention.q_norm."),
    )
    for name, dtype, shape in specs:
        if name.endswith((".attention.to_k.weight", ".attention.to_v.weight")):
            continue
        if name.endswith(".attention.to_q.weight"):
            out.append((name.replace(".to_q.", ".qkv."), dtype, (3 * shape[0], shape[1])))
            continue
        for old, new in renames:
            name = name.replace(old, new)
        out.append((name, dtype, shape))
    return out


# ---------------------------------------------------------------- whole files


def unet_checkpoint(family: str, in_channels: int = 4, dtype: str = "F16") -> Specs:
    """An LDM/SGM single-file checkpoint: UNet + VAE + text encoder(s), as A1111/ComfyUI load."""
    params = {**UNET_PARAMS[family], "in_channels": in_channels, "dtype": dtype}
    specs = prefixed("model.diffusion_model.", ldm_unet(**params))
    specs += prefixed("first_stage_model.", ldm_vae(4, True, dtype))
    if family == "sd1":
        specs += prefixed("cond_stage_model.transformer.", clip_text(768, 12, None, dtype))
    elif family == "sd2":
        specs += prefixed("cond_stage_model.", openclip_text(1024, 24, dtype))
    elif family == "sdxl":
        specs += prefixed("conditioner.embedders.0.transformer.", clip_text(768, 12, None, dtype))
        specs += prefixed("conditioner.embedders.1.", openclip_text(1280, 32, dtype))
    else:
        specs += prefixed("conditioner.embedders.0.", openclip_text(1280, 32, dtype))
    return specs


def text_encoders_sd3(dtype: str = "F16", t5_layers: int = 24) -> Specs:
    """CLIP-L, CLIP-G and T5-XXL as SD3/3.5 *incl. clips* files store them."""
    specs = prefixed("text_encoders.clip_l.transformer.", clip_text(768, 12, 768, dtype))
    specs += prefixed("text_encoders.clip_g.transformer.", clip_text(1280, 32, 1280, dtype))
    return specs + prefixed("text_encoders.t5xxl.transformer.", t5_encoder(t5_layers, dtype))


def text_encoders_flux(dtype: str = "F16", t5_layers: int = 24) -> Specs:
    """CLIP-L and T5-XXL as ComfyUI's all-in-one Flux checkpoints store them."""
    specs = prefixed("text_encoders.clip_l.transformer.", clip_text(768, 12, None, dtype))
    return specs + prefixed("text_encoders.t5xxl.transformer.", t5_encoder(t5_layers, dtype))


def dit_checkpoint(transformer: Specs, encoders: Specs, dtype: str = "F16") -> Specs:
    """A ComfyUI-style all-in-one file: ``model.diffusion_model.`` + 16-channel VAE + encoders."""
    specs = prefixed("model.diffusion_model.", transformer)
    specs += prefixed("first_stage_model.", ldm_vae(16, False, dtype))
    return specs + encoders
