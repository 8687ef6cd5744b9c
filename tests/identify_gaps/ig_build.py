"""Real files for the identification gaps: multi-encoder files, image encoders, tiny VAEs and
more upscaler architectures, written from the project's own layouts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models as bm
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts.base_models import Specs


@dataclass(frozen=True)
class Case:
    build: Callable[[], Specs]
    family: str | tuple[str, ...]  # a tuple: a real tie, any of these may come first
    kind: str
    variant: str | None
    facts: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def _sdxl_conditioner() -> Specs:
    """SDXL's two text encoders as SGM checkpoints name them, without the UNet."""
    return bm.prefixed("conditioner.embedders.0.transformer.", co.clip_l()) + bm.prefixed(
        "conditioner.embedders.1.model.", co.openclip_g()
    )


def _hidream_encoders() -> Specs:
    return co.multi_text_encoders() + bm.prefixed(
        "text_encoders.llama.transformer.", co.llm_text_encoder("llama3.1_8b", dtype="F16")
    )


CASES: dict[str, Case] = {
    # -------------------------------------------------------------- several text encoders
    "te_sd3_incl_clips": Case(
        bm.text_encoders_sd3,
        "any",
        "text_encoder",
        "clip_l+clip_g+t5xxl",
        {"compatible_families": ["sd3", "sd3.5"], "naming": "multi-encoder"},
    ),
    "te_comfy_clip_save_sd3": Case(
        lambda: co.multi_text_encoders(prefix="{}.transformer."),
        "any",
        "text_encoder",
        "clip_l+clip_g+t5xxl",
        {"compatible_families": ["sd3", "sd3.5"]},
    ),
    "te_comfy_flux_pair": Case(
        lambda: co.multi_text_encoders(("t5xxl", "clip_l"), "{}.transformer."),
        "flux1",
        "text_encoder",
        "clip_l+t5xxl",
        {"compatible_families": ["flux1"]},
    ),
    "te_sdxl_conditioner_pair": Case(
        _sdxl_conditioner,
        "any",
        "text_encoder",
        "clip_l+clip_g",
        {"compatible_families": ["sdxl", "sd3", "sd3.5"]},
    ),
    "te_hidream_four": Case(
        _hidream_encoders,
        "hidream",
        "text_encoder",
        "clip_l+clip_g+t5xxl+llama3.1_8b",
        {"compatible_families": ["hidream"]},
    ),
    # -------------------------------------------------------------- image encoders
    "clip_vision_h": Case(
        lambda: co.clip_vision("clip_vit_h"),
        "any",
        "image_encoder",
        "clip_vit_h",
        {"hidden_size": 1280, "num_layers": 32, "projection_dim": 1024, "image_size": 224},
    ),
    "clip_vision_bigg": Case(
        lambda: co.clip_vision("clip_vit_bigg"),
        "any",
        "image_encoder",
        "clip_vit_bigg",
        {"hidden_size": 1664, "num_layers": 48, "projection_dim": 1280},
    ),
    "clip_vision_l_no_projection": Case(
        lambda: co.clip_vision("clip_vit_l", projection=False),
        "any",
        "image_encoder",
        "clip_vit_l",
        {"hidden_size": 1024, "num_layers": 24, "patch_size": 14},
    ),
    "clip_vision_h_prefixed": Case(
        lambda: bm.prefixed("image_encoder.", co.clip_vision("clip_vit_h")),
        "any",
        "image_encoder",
        "clip_vit_h",
        {"key_prefix": "image_encoder.", "encoder_type": "clip_vision"},
    ),
    "clip_vision_l_bare": Case(
        lambda: [
            (n.removeprefix("vision_model."), d, sh)
            for n, d, sh in co.clip_vision("clip_vit_l", projection=False)
        ],
        "any",
        "image_encoder",
        "clip_vit_l",
        {"hidden_size": 1024},
    ),
    "siglip_vision_redux": Case(
        co.siglip_vision,
        "any",
        "image_encoder",
        "siglip_so400m",
        {"encoder_type": "siglip_vision", "hidden_size": 1152, "num_layers": 27, "patch_grid": 27},
    ),
    # -------------------------------------------------------------- tiny autoencoders
    "taesd_diffusers": Case(
        lambda: co.taesd(4),
        ("sd1", "sdxl"),
        "vae",
        "taesd",
        {"latent_channels": 4, "parts": ["decoder", "encoder"], "naming": "diffusers"},
    ),
    "taesd_decoder_original": Case(
        lambda: co.taesd(4, "madebyollin", "decoder"),
        ("sd1", "sdxl"),
        "vae",
        "taesd",
        {"latent_channels": 4, "parts": ["decoder"], "naming": "madebyollin"},
    ),
    "taesd_encoder_original": Case(
        lambda: co.taesd(4, "madebyollin", "encoder"),
        ("sd1", "sdxl"),
        "vae",
        "taesd",
        {"latent_channels": 4, "parts": ["encoder"]},
    ),
    "taef1_decoder_original": Case(
        lambda: co.taesd(16, "madebyollin", "decoder"),
        ("sd3", "flux1"),
        "vae",
        "taesd",
        {"latent_channels": 16, "parts": ["decoder"]},
    ),
    "taesd3_comfyui": Case(
        lambda: co.taesd(16, "comfyui"),
        ("sd3", "flux1"),
        "vae",
        "taesd",
        {"latent_channels": 16, "parts": ["decoder", "encoder"], "naming": "comfyui"},
    ),
    # -------------------------------------------------------------- upscalers
    "upscaler_hat_x4": Case(
        lambda: co.hat(4), "any", "upscaler", "hat x4", {"architecture": "hat", "scale": 4}
    ),
    "upscaler_hat_l_x2": Case(
        lambda: co.hat(2, depths=(6,) * 12),
        "any",
        "upscaler",
        "hat x2",
        {"architecture": "hat", "scale": 2, "num_layers": 12, "window_size": 16},
    ),
    "upscaler_hat_x3_params_ema": Case(
        lambda: bm.prefixed("params_ema.", co.hat(3)),
        "any",
        "upscaler",
        "hat x3",
        {"scale": 3, "key_prefix": "params_ema."},
    ),
    "upscaler_dat_x4": Case(
        lambda: co.dat(4), "any", "upscaler", "dat x4", {"architecture": "dat", "scale": 4}
    ),
    "upscaler_dat_light_x2": Case(
        lambda: co.dat(2, embed=60, depths=(18,), direct=True),
        "any",
        "upscaler",
        "dat x2",
        {"upsampler": "pixelshuffledirect", "scale": 2},
    ),
    "upscaler_omnisr_x4": Case(
        lambda: co.omnisr(4), "any", "upscaler", "omnisr x4", {"architecture": "omnisr"}
    ),
    "upscaler_span_x2": Case(
        lambda: co.span(2), "any", "upscaler", "span x2", {"architecture": "span", "scale": 2}
    ),
    "upscaler_swinir_x2_still_swinir": Case(
        lambda: co.swinir(2), "any", "upscaler", "swinir x2", {"architecture": "swinir"}
    ),
}


def write_case(folder: Path, name: str, data: str = "sparse") -> Path:
    case = CASES[name]
    return write_safetensors(folder / f"{name}.safetensors", case.build(), case.metadata, data=data)
