"""Tensor layouts of image models released in 2025-2026, and of the look-alikes they must not be
taken for: FLUX.2 (dev, klein 4B/9B) and its VAE, Lumina Image 2.0, Chroma1-Radiance, the
Qwen-Image-Edit-2511 and Qwen-Image-Layered markers, HunyuanImage 2.1, HunyuanVideo (1.0 and
1.5), Kandinsky 5, Wan 2.1/2.2 transformers and the Wan 2.2 VAE, SANA and its look-alike
PixArt-Sigma (the LLM text encoders FLUX.2 uses, Qwen3-8B and Mistral-Small-3.1, are in
:data:`.components.LLM_CONFIGS`).

Released single-file naming is written from the published architectures (BFL ``flux2`` blocks,
Alpha-VLLM NextDiT, Wan ``WanModel``, NVIDIA SANA) with the shapes read off the diffusers model
classes built on torch's ``meta`` device; diffusers-named layouts are those classes' state dicts.
Each returns ``(name, dtype, shape)`` specs for :func:`modelsafe.testing.write_safetensors`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from modelsafe.testing.layouts.base_models import (
    Specs,
    _conv,
    _lin,
    bfl_flux,
    diffusers_denoiser,
)
from modelsafe.testing.layouts.components import meta_state_dict
from modelsafe.testing.safetensors_writer import TensorSpec

# ---------------------------------------------------------------- FLUX.2 (BFL naming)

# variant -> (heads, double blocks, single blocks, text feature width, guidance embedder)
FLUX2_PARAMS: dict[str, tuple[int, int, int, int, bool]] = {
    "dev": (48, 8, 48, 15360, True),  # Mistral-Small-3.1: 3 layers x 5120
    "klein-4b": (24, 5, 20, 7680, False),  # Qwen3-4B: 3 layers x 2560
    "klein-9b": (32, 8, 24, 12288, False),  # Qwen3-8B: 3 layers x 4096
}


def flux2_bfl(variant: str = "dev", dtype: str = "BF16") -> Specs:
    """FLUX.2 as BFL ships it (``flux2-dev.safetensors``, ``flux-2-klein-*.safetensors``):
    shared modulation layers instead of per-block ones, no ``vector_in``, no biases, SwiGLU
    MLPs (``img_mlp.0`` 6x the width), fused single blocks (``linear1`` 9x), 128 input channels."""
    heads, depth, depth_single, txt, guidance = FLUX2_PARAMS[variant]
    h = heads * 128
    specs = _lin("img_in", h, 128, dtype, bias=False) + _lin("txt_in", h, txt, dtype, bias=False)
    embedders = ("time_in", "guidance_in") if guidance else ("time_in",)
    for name in embedders:
        specs += _lin(f"{name}.in_layer", h, 256, dtype, bias=False)
        specs += _lin(f"{name}.out_layer", h, h, dtype, bias=False)
    specs += _lin("double_stream_modulation_img.lin", 6 * h, h, dtype, bias=False)
    specs += _lin("double_stream_modulation_txt.lin", 6 * h, h, dtype, bias=False)
    specs += _lin("single_stream_modulation.lin", 3 * h, h, dtype, bias=False)
    for i in range(depth):
        for s in ("img", "txt"):
            b = f"double_blocks.{i}.{s}"
            specs += _lin(f"{b}_attn.qkv", 3 * h, h, dtype, bias=False)
            specs += [(f"{b}_attn.norm.query_norm.scale", dtype, (128,))]
            specs += [(f"{b}_attn.norm.key_norm.scale", dtype, (128,))]
            specs += _lin(f"{b}_attn.proj", h, h, dtype, bias=False)
            specs += _lin(f"{b}_mlp.0", 6 * h, h, dtype, bias=False)
            specs += _lin(f"{b}_mlp.2", h, 3 * h, dtype, bias=False)
    for i in range(depth_single):
        b = f"single_blocks.{i}"
        specs += _lin(f"{b}.linear1", 9 * h, h, dtype, bias=False)
        specs += _lin(f"{b}.linear2", h, 4 * h, dtype, bias=False)
        specs += [(f"{b}.norm.query_norm.scale", dtype, (128,))]
        specs += [(f"{b}.norm.key_norm.scale", dtype, (128,))]
    specs += _lin("final_layer.adaLN_modulation.1", 2 * h, h, dtype, bias=False)
    return specs + _lin("final_layer.linear", 128, h, dtype, bias=False)


def flux2_diffusers(variant: str = "dev", dtype: str = "BF16") -> Specs:
    """FLUX.2 in diffusers naming (``Flux2Transformer2DModel``, a ``transformer/`` folder)."""
    heads, depth, depth_single, txt, guidance = FLUX2_PARAMS[variant]
    config = {
        "num_layers": depth,
        "num_single_layers": depth_single,
        "num_attention_heads": heads,
        "joint_attention_dim": txt,
        "guidance_embeds": guidance,
    }
    return meta_state_dict("Flux2Transformer2DModel", config, dtype)


def flux2_vae(dtype: str = "BF16") -> Specs:
    """The FLUX.2 VAE (``AutoencoderKLFlux2``): 32 latent channels, latent batch-norm stats."""
    return meta_state_dict("AutoencoderKLFlux2", {}, dtype)


# ---------------------------------------------------------------- Lumina Image 2.0 (NextDiT)

_LUMINA_ORIGINAL = (
    ("time_caption_embed.caption_embedder.", "cap_embedder."),
    ("time_caption_embed.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
    ("time_caption_embed.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
    ("norm_out.linear_1.", "final_layer.adaLN_modulation.1."),
    ("norm_out.linear_2.", "final_layer.linear."),
    (".norm1.linear.", ".adaLN_modulation.1."),
    (".norm1.norm.", ".attention_norm1."),
    (".norm1.weight", ".attention_norm1.weight"),
    (".norm2.", ".attention_norm2."),
    (".attn.to_out.0.", ".attention.out."),
    (".attn.norm_q.", ".attention.q_norm."),
    (".attn.norm_k.", ".attention.k_norm."),
    (".feed_forward.linear_1.", ".feed_forward.w1."),
    (".feed_forward.linear_2.", ".feed_forward.w2."),
    (".feed_forward.linear_3.", ".feed_forward.w3."),
)


def lumina2(naming: str = "original", dtype: str = "BF16") -> Specs:
    """Lumina Image 2.0 (NetaYume Lumina and other finetunes): NextDiT, width 2304, 26 layers,
    Gemma-2-2B caption features (2304). ``original``: Alpha-VLLM / ComfyUI single-file names
    (fused ``attention.qkv`` of 2304 + 768 + 768 rows); ``diffusers``:
    ``Lumina2Transformer2DModel``."""
    specs = meta_state_dict("Lumina2Transformer2DModel", {"cap_feat_dim": 2304}, dtype)
    if naming == "diffusers":
        return specs
    out: Specs = []
    fused = {
        n[: -len(".attn.to_q.weight")]: s for n, _, s in specs if n.endswith(".attn.to_q.weight")
    }
    kv = {n[: -len(".attn.to_k.weight")]: s for n, _, s in specs if n.endswith(".attn.to_k.weight")}
    for name, d, shape in specs:
        if name.endswith((".attn.to_k.weight", ".attn.to_v.weight")):
            continue
        if name.endswith(".attn.to_q.weight"):
            block = name[: -len(".attn.to_q.weight")]
            rows = fused[block][0] + 2 * kv[block][0]
            out.append((f"{block}.attention.qkv.weight", d, (rows, shape[1])))
            continue
        for old, new in _LUMINA_ORIGINAL:
            name = name.replace(old, new)
        out.append((name, d, shape))
    return out + [("norm_final.weight", dtype, (2304,))]


# ---------------------------------------------------------------- Chroma1-Radiance (pixel space)


def chroma_radiance(dtype: str = "BF16") -> Specs:
    """Chroma1-Radiance: Chroma's blocks and approximator in pixel space: a 16x16 conv
    patchifier ``img_in_patch`` (3 -> 3072) instead of ``img_in``, a NeRF head instead of
    ``final_layer`` (its inner layers abridged to the names and a few shapes)."""
    specs = [
        t
        for t in bfl_flux(chroma=True, dtype=dtype)
        if not t[0].startswith(("img_in.", "final_layer."))
    ]
    specs += [
        ("img_in_patch.weight", dtype, (3072, 3, 16, 16)),
        ("img_in_patch.bias", dtype, (3072,)),
    ]
    specs += _lin("nerf_image_embedder.embedder.0", 64, 3 + 64, dtype)
    for i in range(4):
        specs += _lin(f"nerf_blocks.{i}.param_generator", 2 * 64 * 64, 3072, dtype)
        specs += [(f"nerf_blocks.{i}.norm.scale", dtype, (64,))]
    specs += [("nerf_final_layer_conv.norm.scale", dtype, (64,))]
    return specs + _conv("nerf_final_layer_conv.conv", 3, 64, 3, dtype)


# ---------------------------------------------------------------- Qwen-Image variants


def qwen_image_edit_2511(dtype: str = "BF16") -> Specs:
    """Comfy-Org's Qwen-Image-Edit-2511 file: Qwen-Image's layout plus the empty
    ``__index_timestep_zero__`` marker ComfyUI reads as the 2511 reference method."""
    return diffusers_denoiser("qwen-image", dtype) + [("__index_timestep_zero__", "F32", (0,))]


def qwen_image_layered(dtype: str = "BF16") -> Specs:
    """Qwen-Image-Layered (RGBA layer decomposition): Qwen-Image plus the
    ``time_text_embed.addition_t_embedding`` table its extra timestep condition uses."""
    return diffusers_denoiser("qwen-image", dtype, use_additional_t_cond=True)


# ---------------------------------------------------------------- other 2025 DiTs (diffusers)


def hunyuan_image21(naming: str = "diffusers", dtype: str = "BF16") -> Specs:
    """HunyuanImage 2.1 (``HunyuanImageTransformer2DModel``: 20 double + 40 single blocks at
    3584, Qwen2.5-VL + ByT5 text features, 64-channel 32x VAE latents in 1x1 patches: a 2-D patch
    conv); ``original``: Tencent's names (``img_in.proj``, ``byt5_in``, ``double_blocks``)."""
    if naming == "original":
        return _hunyuan_original(3584, 64, (1, 1), 3584, byt5=True, dtype=dtype)
    return meta_state_dict("HunyuanImageTransformer2DModel", {"text_embed_2_dim": 1472}, dtype)


def hunyuan_video(naming: str = "original", dtype: str = "BF16") -> Specs:
    """HunyuanVideo (text-to-video 13B: 20 double + 40 single blocks at 3072, 1x2x2 patches of
    16-channel video latents: a 3-D patch conv, LLaVA-Llama-3 text features 4096 wide and the
    CLIP-L pooled vector, cfg-distilled guidance input); ``original``: Tencent's names as
    ComfyUI's ``split_files`` ship them, ``diffusers``: ``HunyuanVideoTransformer3DModel``."""
    if naming == "diffusers":
        return meta_state_dict("HunyuanVideoTransformer3DModel", {}, dtype)
    return _hunyuan_original(3072, 16, (1, 2, 2), 4096, byt5=False, dtype=dtype)


def hunyuan_video15(dtype: str = "BF16") -> Specs:
    """HunyuanVideo 1.5 (``HunyuanVideo15Transformer3DModel``: 1x1x1 patches of latents plus the
    image condition, 65 input channels; HunyuanImage 2.1's refiner has 1x1x1 patches too)."""
    return meta_state_dict("HunyuanVideo15Transformer3DModel", {}, dtype)


def _hunyuan_original(
    h: int,
    channels: int,
    patch: tuple[int, ...],
    text: int,
    *,
    byt5: bool,
    dtype: str,
    double: int = 20,
    single: int = 40,
) -> Specs:
    """Tencent's HunyuanVideo / HunyuanImage 2.1 names (``HYVideoDiffusionTransformer``): fused
    ``*_attn_qkv``, ``*_mod.linear``, ``mlp.fc1/fc2``, a 2-block token refiner on the text, and
    ``vector_in`` (CLIP-L pooled) + ``guidance_in`` for the video model, ``byt5_in`` (glyph ByT5
    features) for the image model."""
    mlp = 4 * h
    specs: Specs = [
        ("img_in.proj.weight", dtype, (h, channels, *patch)),
        ("img_in.proj.bias", dtype, (h,)),
    ]
    specs += _lin("txt_in.input_embedder", h, text, dtype)
    specs += _lin("txt_in.t_embedder.mlp.0", h, 256, dtype) + _lin(
        "txt_in.t_embedder.mlp.2", h, h, dtype
    )
    specs += _lin("txt_in.c_embedder.linear_1", h, text, dtype)
    specs += _lin("txt_in.c_embedder.linear_2", h, h, dtype)
    for i in range(2):
        b = f"txt_in.individual_token_refiner.blocks.{i}"
        specs += [(f"{b}.norm1.weight", dtype, (h,)), (f"{b}.norm2.weight", dtype, (h,))]
        specs += _lin(f"{b}.self_attn_qkv", 3 * h, h, dtype) + _lin(
            f"{b}.self_attn_proj", h, h, dtype
        )
        specs += _lin(f"{b}.mlp.fc1", mlp, h, dtype) + _lin(f"{b}.mlp.fc2", h, mlp, dtype)
        specs += _lin(f"{b}.adaLN_modulation.1", 2 * h, h, dtype)
    specs += _lin("time_in.mlp.0", h, 256, dtype) + _lin("time_in.mlp.2", h, h, dtype)
    if byt5:
        specs += [("byt5_in.layernorm.weight", dtype, (1472,))]
        specs += _lin("byt5_in.fc1", 2048, 1472, dtype) + _lin("byt5_in.fc2", 2048, 2048, dtype)
        specs += _lin("byt5_in.fc3", h, 2048, dtype)
    else:
        specs += _lin("vector_in.in_layer", h, 768, dtype) + _lin(
            "vector_in.out_layer", h, h, dtype
        )
        specs += _lin("guidance_in.mlp.0", h, 256, dtype) + _lin("guidance_in.mlp.2", h, h, dtype)
    for i in range(double):
        for s in ("img", "txt"):
            b = f"double_blocks.{i}.{s}"
            specs += _lin(f"{b}_mod.linear", 6 * h, h, dtype)
            specs += _lin(f"{b}_attn_qkv", 3 * h, h, dtype)
            specs += [(f"{b}_attn_q_norm.weight", dtype, (128,))]
            specs += [(f"{b}_attn_k_norm.weight", dtype, (128,))]
            specs += _lin(f"{b}_attn_proj", h, h, dtype)
            specs += _lin(f"{b}_mlp.fc1", mlp, h, dtype) + _lin(f"{b}_mlp.fc2", h, mlp, dtype)
    for i in range(single):
        b = f"single_blocks.{i}"
        specs += _lin(f"{b}.linear1", 3 * h + mlp, h, dtype) + _lin(
            f"{b}.linear2", h, h + mlp, dtype
        )
        specs += [(f"{b}.q_norm.weight", dtype, (128,)), (f"{b}.k_norm.weight", dtype, (128,))]
        specs += _lin(f"{b}.modulation.linear", 3 * h, h, dtype)
    out = channels * math.prod(patch)
    specs += _lin("final_layer.linear", out, h, dtype)
    return specs + _lin("final_layer.adaLN_modulation.1", 2 * h, h, dtype)


def kandinsky5(dtype: str = "BF16") -> Specs:
    """Kandinsky 5.0 (``Kandinsky5Transformer3DModel``, Lite config)."""
    return meta_state_dict("Kandinsky5Transformer3DModel", {}, dtype)


def sana(naming: str = "diffusers", dtype: str = "BF16") -> Specs:
    """SANA 1600M (SANA 1.5 / Sprint share the blocks): linear-attention DiT, 20 layers at
    2240, Gemma-2-2B caption features; ``original``: NVIDIA's single-file names (abridged to
    the blocks' attention and MLP layers)."""
    if naming == "diffusers":
        return meta_state_dict("SanaTransformer2DModel", {}, dtype)
    h = 2240
    specs: Specs = [("pos_embed", dtype, (1, 1024, h))]
    specs += _conv("x_embedder.proj", h, 32, 1, dtype)
    specs += _lin("t_embedder.mlp.0", h, 256, dtype) + _lin("t_embedder.mlp.2", h, h, dtype)
    specs += _lin("t_block.1", 6 * h, h, dtype)
    specs += _lin("y_embedder.y_proj.fc1", h, 2304, dtype) + _lin(
        "y_embedder.y_proj.fc2", h, h, dtype
    )
    specs += [
        ("y_embedder.y_embedding", dtype, (300, 2304)),
        ("attention_y_norm.weight", dtype, (h,)),
    ]
    for i in range(20):
        b = f"blocks.{i}"
        specs += [(f"{b}.scale_shift_table", dtype, (6, h))]
        specs += _lin(f"{b}.attn.qkv", 3 * h, h, dtype, bias=False) + _lin(
            f"{b}.attn.proj", h, h, dtype
        )
        specs += _lin(f"{b}.cross_attn.q_linear", h, h, dtype)
        specs += _lin(f"{b}.cross_attn.kv_linear", 2 * h, h, dtype)
        specs += _lin(f"{b}.cross_attn.proj", h, h, dtype)
        specs += _conv(f"{b}.mlp.inverted_conv.conv", 2 * 5600, h, 1, dtype)
        specs += _conv(f"{b}.mlp.point_conv.conv", h, 5600, 1, dtype)
    specs += [("final_layer.scale_shift_table", dtype, (2, h))]
    return specs + _lin("final_layer.linear", 32, h, dtype)


def pixart_sigma(dtype: str = "BF16") -> Specs:
    """PixArt-Sigma in its original names (28 blocks at 1152, T5-XXL captions, 4-channel SDXL VAE
    latents in 2x2 patches, plain ``mlp.fc1/fc2``): the ``cross_attn.q_linear`` /
    ``y_embedder`` names SANA kept from PixArt's code, without SANA's GLUMBConv MLP."""
    h = 1152
    specs: Specs = _conv("x_embedder.proj", h, 4, 2, dtype)
    specs += _lin("t_embedder.mlp.0", h, 256, dtype) + _lin("t_embedder.mlp.2", h, h, dtype)
    specs += _lin("t_block.1", 6 * h, h, dtype)
    specs += _lin("y_embedder.y_proj.fc1", h, 4096, dtype)
    specs += _lin("y_embedder.y_proj.fc2", h, h, dtype)
    specs += [("y_embedder.y_embedding", dtype, (300, 4096))]
    for i in range(28):
        b = f"blocks.{i}"
        specs += [(f"{b}.scale_shift_table", dtype, (6, h))]
        specs += _lin(f"{b}.attn.qkv", 3 * h, h, dtype) + _lin(f"{b}.attn.proj", h, h, dtype)
        specs += _lin(f"{b}.cross_attn.q_linear", h, h, dtype)
        specs += _lin(f"{b}.cross_attn.kv_linear", 2 * h, h, dtype)
        specs += _lin(f"{b}.cross_attn.proj", h, h, dtype)
        specs += _lin(f"{b}.mlp.fc1", 4 * h, h, dtype) + _lin(f"{b}.mlp.fc2", h, 4 * h, dtype)
    specs += [("final_layer.scale_shift_table", dtype, (2, h))]
    return specs + _lin("final_layer.linear", 2 * 2 * 8, h, dtype)


# ---------------------------------------------------------------- Wan 2.1 / 2.2 (video DiTs)

# variant -> WanTransformer3DModel config (as the released transformers are configured)
WAN_CONFIGS: dict[str, dict[str, Any]] = {
    "t2v-14b": {},
    "t2v-1.3b": {"num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30},
    "ti2v-5b": {
        "num_attention_heads": 24,
        "ffn_dim": 14336,
        "num_layers": 30,
        "in_channels": 48,
        "out_channels": 48,
    },
}
_WAN_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
    ("proj_out.", "head.head."),
)


def wan_transformer(
    variant: str = "t2v-14b", naming: str = "original", dtype: str = "BF16"
) -> Specs:
    """A Wan 2.1/2.2 video transformer (T2V 14B = each of Wan 2.2 A14B's two experts, T2V 1.3B,
    TI2V 5B with Wan 2.2's 48-channel latents): original ``WanModel`` names (``blocks.N.self_attn``,
    ``head.modulation``), as ComfyUI's ``split_files`` ship them, or diffusers names."""
    specs = meta_state_dict("WanTransformer3DModel", WAN_CONFIGS[variant], dtype)
    if naming == "diffusers":
        return specs
    out: Specs = []
    for name, d, shape in specs:
        if name == "scale_shift_table":
            out.append(("head.modulation", d, shape))
            continue
        name = name.replace(".scale_shift_table", ".modulation")
        name = re.sub(
            r"\.norm([23])\.", lambda m: ".norm" + ("3" if m[1] == "2" else "2") + ".", name
        )
        for old, new in _WAN_ORIGINAL:
            name = name.replace(old, new)
        out.append((name, d, shape))
    return out


def wan22_vae(dtype: str = "BF16") -> Specs:
    """The Wan 2.2 VAE (TI2V 5B): 48 latent channels, 16x spatial compression, diffusers naming."""
    config = {
        "base_dim": 160,
        "decoder_base_dim": 256,
        "z_dim": 48,
        "dim_mult": [1, 2, 4, 4],
        "temperal_downsample": [False, True, True],
        "is_residual": True,
        "in_channels": 12,
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_spatial": 16,
        "latents_mean": [0.0] * 48,
        "latents_std": [1.0] * 48,
    }
    return meta_state_dict("AutoencoderKLWan", config, dtype)


def shapes(specs: Iterable[TensorSpec]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of ``specs``, for tests that edit or look up single tensors."""
    return {n: tuple(s) for n, _, s in specs}
