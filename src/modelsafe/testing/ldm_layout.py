"""Write a tiny diffusers SD1/SD2 pipeline as an original-format (A1111/ldm) single file.

The inverse of the key renaming diffusers applies when it reads such files; written from the
ldm layout (``model.diffusion_model.input_blocks...``, ``first_stage_model.encoder.down...``).
"""

from __future__ import annotations

from typing import Any

import torch

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _unet_key(key: str, lpb: int) -> str:
    parts = key.split(".")
    simple = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    for old, new in simple.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]

    def resnet(rest: list[str]) -> str:
        return ".".join([_RESNET.get(rest[0], rest[0]), *rest[1:]])

    if parts[0] == "down_blocks":
        level = int(parts[1])
        if parts[2] == "downsamplers":
            idx = 1 + level * (lpb + 1) + lpb
            return f"input_blocks.{idx}.0.op." + ".".join(parts[5:])
        idx = 1 + level * (lpb + 1) + int(parts[3])
        if parts[2] == "resnets":
            return f"input_blocks.{idx}.0." + resnet(parts[4:])
        return f"input_blocks.{idx}.1." + ".".join(parts[4:])
    if parts[0] == "up_blocks":
        level = int(parts[1])
        if parts[2] == "upsamplers":
            idx = level * (lpb + 1) + lpb
            return f"output_blocks.{idx}.UPS.conv." + ".".join(parts[5:])
        idx = level * (lpb + 1) + int(parts[3])
        if parts[2] == "resnets":
            return f"output_blocks.{idx}.0." + resnet(parts[4:])
        return f"output_blocks.{idx}.1." + ".".join(parts[4:])
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}." + resnet(parts[3:])
        return "middle_block.1." + ".".join(parts[3:])
    raise KeyError(key)


def unet_to_ldm(unet: Any) -> dict[str, torch.Tensor]:
    lpb = unet.config.layers_per_block
    out = {_unet_key(k, lpb): v for k, v in unet.state_dict().items()}
    # An upsampler sits after the attention (index 2) when the level has one, else at index 1.
    fixed: dict[str, torch.Tensor] = {}
    for key, value in out.items():
        if ".UPS." in key:
            block = key.split(".UPS.")[0]
            has_attn = any(k.startswith(block + ".1.") for k in out)
            key = key.replace(".UPS.", ".2." if has_attn else ".1.")
        fixed["model.diffusion_model." + key] = value
    return fixed


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(vae: Any) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    out: dict[str, torch.Tensor] = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        parts = new.split(".")
        if parts[1] == "down_blocks":
            if parts[3] == "downsamplers":
                new = f"encoder.down.{parts[2]}.downsample." + ".".join(parts[5:])
            else:
                new = f"encoder.down.{parts[2]}.block." + ".".join(parts[4:])
        elif parts[1] == "up_blocks":
            level = levels - 1 - int(parts[2])
            if parts[3] == "upsamplers":
                new = f"decoder.up.{level}.upsample." + ".".join(parts[5:])
            else:
                new = f"decoder.up.{level}.block." + ".".join(parts[4:])
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}." + ".".join(parts[4:])
            else:
                inner = ".".join(parts[4:-1])
                new = f"{parts[0]}.mid.attn_1.{_VAE_ATTN[inner]}.{parts[-1]}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def to_ldm_checkpoint(pipe: Any) -> dict[str, torch.Tensor]:
    state = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae)}
    for key, value in pipe.text_encoder.state_dict().items():
        # transformers >= 5.6 flattened CLIPTextModel; the file keeps the original names.
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    return state
