"""Tensor layouts for the resolve/plan tests, written from the models' published structure.

- LDM/SGM UNets (``input_blocks``/``middle_block``/``output_blocks``) as in the original SD1/SDXL
  single-file checkpoints, generated from channel multipliers and transformer depths;
- diffusers-named modules taken from diffusers' own model classes built on the meta device (an
  independent source of names for LoRAs in kohya/PEFT naming);
- CLIP (HF naming), OpenCLIP (``resblocks``), BFL Flux, VAE and embedding layouts.
"""

from __future__ import annotations

from typing import Any

Spec = tuple[str, str, tuple[int, ...]]


def _lin(name: str, out: int, inn: int, dt: str, bias: bool = True) -> list[Spec]:
    specs: list[Spec] = [(f"{name}.weight", dt, (out, inn))]
    if bias:
        specs.append((f"{name}.bias", dt, (out,)))
    return specs


def _conv(name: str, out: int, inn: int, k: int, dt: str) -> list[Spec]:
    return [(f"{name}.weight", dt, (out, inn, k, k)), (f"{name}.bias", dt, (out,))]


def _norm(name: str, c: int, dt: str) -> list[Spec]:
    return [(f"{name}.weight", dt, (c,)), (f"{name}.bias", dt, (c,))]


def _resnet(p: str, cin: int, c: int, temb: int, dt: str) -> list[Spec]:
    s = _norm(f"{p}.in_layers.0", cin, dt) + _conv(f"{p}.in_layers.2", c, cin, 3, dt)
    s += _lin(f"{p}.emb_layers.1", c, temb, dt)
    s += _norm(f"{p}.out_layers.0", c, dt) + _conv(f"{p}.out_layers.3", c, c, 3, dt)
    if cin != c:
        s += _conv(f"{p}.skip_connection", c, cin, 1, dt)
    return s


def _transformer(p: str, c: int, ctx: int, depth: int, linear_proj: bool, dt: str) -> list[Spec]:
    s = _norm(f"{p}.norm", c, dt)
    s += _lin(f"{p}.proj_in", c, c, dt) if linear_proj else _conv(f"{p}.proj_in", c, c, 1, dt)
    for d in range(depth):
        b = f"{p}.transformer_blocks.{d}"
        for a, kv in (("attn1", c), ("attn2", ctx)):
            s += _lin(f"{b}.{a}.to_q", c, c, dt, False)
            s += _lin(f"{b}.{a}.to_k", c, kv, dt, False) + _lin(f"{b}.{a}.to_v", c, kv, dt, False)
            s += _lin(f"{b}.{a}.to_out.0", c, c, dt)
        s += _lin(f"{b}.ff.net.0.proj", 8 * c, c, dt) + _lin(f"{b}.ff.net.2", c, 4 * c, dt)
        for n in (1, 2, 3):
            s += _norm(f"{b}.norm{n}", c, dt)
    s += _lin(f"{p}.proj_out", c, c, dt) if linear_proj else _conv(f"{p}.proj_out", c, c, 1, dt)
    return s


def ldm_unet(
    *,
    channels: tuple[int, ...],
    depths: tuple[int, ...],  # transformer depth per level (0 = no attention)
    context: int,
    in_channels: int = 4,
    linear_proj: bool = False,
    adm_in: int = 0,
    mid_depth: int = 1,
    prefix: str = "model.diffusion_model.",
    dt: str = "F16",
) -> list[Spec]:
    """An original-layout (LDM/SGM) UNet with two resnets per level."""
    c0, temb = channels[0], channels[0] * 4
    s = _lin("time_embed.0", temb, c0, dt) + _lin("time_embed.2", temb, temb, dt)
    if adm_in:
        s += _lin("label_emb.0.0", temb, adm_in, dt) + _lin("label_emb.0.2", temb, temb, dt)
    s += _conv("input_blocks.0.0", c0, in_channels, 3, dt)
    skips, n, cin = [c0], 1, c0
    for level, (c, depth) in enumerate(zip(channels, depths, strict=True)):
        for _ in range(2):
            s += _resnet(f"input_blocks.{n}.0", cin, c, temb, dt)
            if depth:
                s += _transformer(f"input_blocks.{n}.1", c, context, depth, linear_proj, dt)
            skips.append(c)
            cin, n = c, n + 1
        if level < len(channels) - 1:
            s += _conv(f"input_blocks.{n}.0.op", c, c, 3, dt)
            skips.append(c)
            n += 1
    s += _resnet("middle_block.0", cin, cin, temb, dt)
    s += _transformer("middle_block.1", cin, context, mid_depth, linear_proj, dt)
    s += _resnet("middle_block.2", cin, cin, temb, dt)
    n = 0
    for level, (c, depth) in enumerate(zip(reversed(channels), reversed(depths), strict=True)):
        for j in range(3):
            s += _resnet(f"output_blocks.{n}.0", cin + skips.pop(), c, temb, dt)
            cin = c
            if depth:
                s += _transformer(f"output_blocks.{n}.1", c, context, depth, linear_proj, dt)
            if j == 2 and level < len(channels) - 1:
                s += _conv(f"output_blocks.{n}.{2 if depth else 1}.conv", c, c, 3, dt)
            n += 1
    s += _norm("out.0", c0, dt) + _conv("out.2", 4, c0, 3, dt)
    return [(prefix + name, d, shape) for name, d, shape in s]


def vae(latent: int = 4, prefix: str = "first_stage_model.", dt: str = "F16") -> list[Spec]:
    """The VAE tensors that decide compatibility (a real VAE has more; enough to identify)."""
    s = _conv("encoder.conv_in", 128, 3, 3, dt) + _conv("encoder.conv_out", 2 * latent, 512, 3, dt)
    s += _conv("quant_conv", 2 * latent, 2 * latent, 1, dt)
    s += _conv("post_quant_conv", latent, latent, 1, dt)
    s += _conv("decoder.conv_in", 512, latent, 3, dt) + _conv("decoder.conv_out", 3, 128, 3, dt)
    s += _norm("decoder.norm_out", 128, dt)
    return [(prefix + n, d, sh) for n, d, sh in s]


def clip_text(width: int, layers: int, prefix: str, dt: str = "F16") -> list[Spec]:
    """HF CLIPTextModel naming (``text_model.encoder.layers.N.self_attn.q_proj``)."""
    t = "text_model."
    s: list[Spec] = [
        (f"{t}embeddings.token_embedding.weight", dt, (49408, width)),
        (f"{t}embeddings.position_embedding.weight", dt, (77, width)),
    ]
    for i in range(layers):
        b = f"{t}encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s += _lin(f"{b}.self_attn.{proj}", width, width, dt)
        s += _lin(f"{b}.mlp.fc1", 4 * width, width, dt) + _lin(f"{b}.mlp.fc2", width, 4 * width, dt)
        s += _norm(f"{b}.layer_norm1", width, dt) + _norm(f"{b}.layer_norm2", width, dt)
    s += _norm(f"{t}final_layer_norm", width, dt)
    return [(prefix + n, d, sh) for n, d, sh in s]


def open_clip_text(width: int, layers: int, prefix: str, dt: str = "F16") -> list[Spec]:
    """OpenCLIP naming (``transformer.resblocks.N.attn.in_proj_weight``)."""
    s: list[Spec] = [
        ("token_embedding.weight", dt, (49408, width)),
        ("positional_embedding", dt, (77, width)),
    ]
    for i in range(layers):
        b = f"transformer.resblocks.{i}"
        s += [(f"{b}.attn.in_proj_weight", dt, (3 * width, width))]
        s += [(f"{b}.attn.in_proj_bias", dt, (3 * width,))]
        s += _lin(f"{b}.attn.out_proj", width, width, dt)
        s += _lin(f"{b}.mlp.c_fc", 4 * width, width, dt) + _lin(
            f"{b}.mlp.c_proj", width, 4 * width, dt
        )
        s += _norm(f"{b}.ln_1", width, dt) + _norm(f"{b}.ln_2", width, dt)
    s += _norm("ln_final", width, dt) + [("text_projection", dt, (width, width))]
    return [(prefix + n, d, sh) for n, d, sh in s]


def sd1_checkpoint(dt: str = "F16", in_channels: int = 4) -> list[Spec]:
    unet = ldm_unet(
        channels=(320, 640, 1280, 1280),
        depths=(1, 1, 1, 0),
        context=768,
        in_channels=in_channels,
        dt=dt,
    )
    te = clip_text(768, 12, "cond_stage_model.transformer.", dt)
    return unet + vae(dt=dt) + te


def sdxl_checkpoint(dt: str = "F16") -> list[Spec]:
    unet = ldm_unet(
        channels=(320, 640, 1280),
        depths=(0, 2, 10),
        context=2048,
        linear_proj=True,
        adm_in=2816,
        mid_depth=10,
        dt=dt,
    )
    te1 = clip_text(768, 12, "conditioner.embedders.0.transformer.", dt)
    te2 = open_clip_text(1280, 32, "conditioner.embedders.1.model.", dt)
    return unet + vae(dt=dt) + te1 + te2


def flux_bfl(
    dt: str = "BF16", double: int = 19, single: int = 38, prefix: str = "", d: int = 3072
) -> list[Spec]:
    """A Flux.1-dev transformer in BFL naming (hidden ``d``, 3072 for the real model)."""
    s = _lin("img_in", d, 64, dt) + _lin("txt_in", d, 4096, dt)
    for blk in ("time_in", "vector_in", "guidance_in"):
        inn = {"time_in": 256, "vector_in": 768, "guidance_in": 256}[blk]
        s += _lin(f"{blk}.in_layer", d, inn, dt) + _lin(f"{blk}.out_layer", d, d, dt)
    for i in range(double):
        b = f"double_blocks.{i}"
        for side in ("img", "txt"):
            s += _lin(f"{b}.{side}_mod.lin", 6 * d, d, dt)
            s += _lin(f"{b}.{side}_attn.qkv", 3 * d, d, dt) + _lin(
                f"{b}.{side}_attn.proj", d, d, dt
            )
            s += [(f"{b}.{side}_attn.norm.query_norm.scale", dt, (128,))]
            s += [(f"{b}.{side}_attn.norm.key_norm.scale", dt, (128,))]
            s += _lin(f"{b}.{side}_mlp.0", 4 * d, d, dt) + _lin(f"{b}.{side}_mlp.2", d, 4 * d, dt)
    for i in range(single):
        b = f"single_blocks.{i}"
        s += _lin(f"{b}.linear1", 7 * d, d, dt) + _lin(f"{b}.linear2", d, 5 * d, dt)
        s += _lin(f"{b}.modulation.lin", 3 * d, d, dt)
        s += [(f"{b}.norm.query_norm.scale", dt, (128,)), (f"{b}.norm.key_norm.scale", dt, (128,))]
    s += _lin("final_layer.linear", 64, d, dt) + _lin(
        "final_layer.adaLN_modulation.1", 2 * d, d, dt
    )
    return [(prefix + n, dd, sh) for n, dd, sh in s]


# -- LoRAs -----------------------------------------------------------------------------------------


def diffusers_modules(model: str, **config: Any) -> dict[str, tuple[int, ...]]:
    """Module name -> weight shape of a diffusers model class built on the meta device."""
    import diffusers
    import torch

    cls = getattr(diffusers, model)
    with torch.device("meta"):
        m = cls(**config)
    return {
        name[: -len(".weight")]: tuple(p.shape)
        for name, p in m.state_dict().items()
        if name.endswith(".weight") and p.ndim >= 2
    }


SD1_UNET_CONFIG: dict[str, Any] = {
    "cross_attention_dim": 768,
    "block_out_channels": (320, 640, 1280, 1280),
}
SDXL_UNET_CONFIG: dict[str, Any] = {
    "cross_attention_dim": 2048,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


def lora_specs(
    modules: dict[str, tuple[int, ...]],
    *,
    style: str,
    prefix: str,
    rank: int = 4,
    only: tuple[str, ...] = ATTENTION,
    dt: str = "F16",
) -> list[Spec]:
    """A LoRA over the ``modules`` whose names end with one of ``only``.

    ``style``: kohya (``prefix`` like ``lora_unet``), peft (``prefix`` like ``unet.``), loha,
    lokr (kohya-prefixed LyCORIS)."""
    s: list[Spec] = []
    for name, shape in sorted(modules.items()):
        if not name.endswith(only):
            continue
        out, inn = shape[0], shape[1]
        if style == "peft":
            s += [(f"{prefix}{name}.lora_A.weight", dt, (rank, inn))]
            s += [(f"{prefix}{name}.lora_B.weight", dt, (out, rank))]
            continue
        flat = f"{prefix}_{name.replace('.', '_')}"
        if style == "kohya":
            s += [
                (f"{flat}.lora_down.weight", dt, (rank, inn)),
                (f"{flat}.lora_up.weight", dt, (out, rank)),
            ]
        elif style == "loha":
            s += [(f"{flat}.hada_w1_a", dt, (out, rank)), (f"{flat}.hada_w1_b", dt, (rank, inn))]
            s += [(f"{flat}.hada_w2_a", dt, (out, rank)), (f"{flat}.hada_w2_b", dt, (rank, inn))]
        elif style == "lokr":
            s += [(f"{flat}.lokr_w1", dt, (4, 4)), (f"{flat}.lokr_w2", dt, (out // 4, inn // 4))]
        s += [(f"{flat}.alpha", dt, ())]
    return s
