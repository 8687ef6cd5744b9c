"""Real component and add-on files for the identification tests, from the project's own layouts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad
from modelsafe.testing.layouts import components as co
from modelsafe.testing.layouts.base_models import Specs


@dataclass(frozen=True)
class Case:
    build: Callable[[], Specs]
    family: str | tuple[str, ...]  # a tuple: a real tie, any of these may come first
    kind: str
    variant: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


@cache
def _sd1_unet() -> list[ad.Module]:
    return ad.sd1_unet_modules()


@cache
def _sdxl_sgm() -> list[ad.Module]:
    return ad.sdxl_unet_modules("sgm")


@cache
def _sdxl_diffusers() -> list[ad.Module]:
    return ad.sdxl_unet_modules("diffusers")


@cache
def _flux(naming: str) -> list[ad.Module]:
    return ad.flux_modules(naming)


def _kohya_sd15() -> Specs:
    return ad.kohya_lora([("lora_unet_", _sd1_unet()), ("lora_te_", ad.clip_modules())], rank=32)


KOHYA_SD15_META = {
    "ss_network_module": "networks.lora",
    "ss_network_dim": "32",
    "ss_network_alpha": "16.0",
    "ss_base_model_version": "sd_v1",
    "modelspec.architecture": "stable-diffusion-v1/lora",
}

CASES: dict[str, Case] = {
    # -------------------------------------------------------------- LoRA / LyCORIS
    "lora_kohya_sd15": Case(
        _kohya_sd15,
        "sd1",
        "lora",
        facts={
            "lora_format": "kohya",
            "rank": 32,
            "context_dim": 768,
            "targets": ["unet", "text_encoder"],
            "alpha": 16.0,
        },
        metadata=KOHYA_SD15_META,
    ),
    "lora_kohya_sd15_no_metadata": Case(
        _kohya_sd15, "sd1", "lora", facts={"context_dim": 768, "rank": 32}
    ),
    "lora_kohya_sdxl_unet_only": Case(
        lambda: ad.kohya_lora([("lora_unet_", _sdxl_sgm())], rank=16),
        "sdxl",
        "lora",
        facts={"lora_format": "kohya", "rank": 16, "context_dim": 2048, "targets": ["unet"]},
        metadata={"ss_base_model_version": "sdxl_base_v1-0", "ss_network_alpha": "8.0"},
    ),
    "lora_peft_sdxl": Case(
        lambda: ad.peft_lora(
            [
                ("unet.", _sdxl_diffusers()),
                ("text_encoder.", ad.clip_modules()),
                ("text_encoder_2.", ad.clip_modules(1280, 32)),
            ],
            rank=8,
        ),
        "sdxl",
        "lora",
        facts={
            "lora_format": "peft",
            "rank": 8,
            "context_dim": 2048,
            "targets": ["unet", "text_encoder", "text_encoder_2"],
        },
    ),
    "lora_flux_kohya": Case(
        lambda: ad.kohya_lora([("lora_unet_", _flux("bfl"))], rank=16, dtype="BF16"),
        "flux1",
        "lora",
        facts={"lora_format": "kohya", "rank": 16, "targets": ["transformer"], "hidden_size": 3072},
    ),
    "lora_flux_comfy": Case(
        lambda: ad.comfy_lora(_flux("bfl"), rank=4),
        "flux1",
        "lora",
        facts={"lora_format": "comfy", "rank": 4, "targets": ["transformer"]},
    ),
    "lora_flux_peft": Case(
        lambda: ad.peft_lora([("transformer.", _flux("diffusers"))], rank=16, dtype="BF16"),
        "flux1",
        "lora",
        facts={"lora_format": "peft", "rank": 16, "targets": ["transformer"], "hidden_size": 3072},
    ),
    "lycoris_loha_sd15": Case(
        lambda: ad.loha([("lora_unet_", _sd1_unet()), ("lora_te_", ad.clip_modules())], rank=8),
        "sd1",
        "lycoris",
        "loha",
        facts={"lora_format": "lycoris", "rank": 8, "context_dim": 768},
        metadata={"ss_network_module": "lycoris.kohya"},
    ),
    "lycoris_lokr_sdxl": Case(
        lambda: ad.lokr([("lora_unet_", _sdxl_sgm())], rank=4),
        "sdxl",
        "lycoris",
        "lokr",
        facts={"lora_format": "lycoris", "rank": 4, "context_dim": 2048, "targets": ["unet"]},
    ),
    # -------------------------------------------------------------- ControlNet / T2I / IP
    "controlnet_sd15_ldm": Case(
        lambda: ad.controlnet_ldm("sd1"),
        "sd1",
        "controlnet",
        facts={"context_dim": 768, "in_channels": 4, "naming": "ldm"},
    ),
    "controlnet_sd15_ldm_unprefixed": Case(
        lambda: ad.controlnet_ldm("sd1", prefix=""), "sd1", "controlnet", facts={"in_channels": 4}
    ),
    "controlnet_sdxl_diffusers": Case(
        lambda: ad.controlnet_diffusers("sdxl"),
        "sdxl",
        "controlnet",
        facts={"context_dim": 2048, "in_channels": 4, "naming": "diffusers"},
    ),
    "t2i_adapter_sd15": Case(
        lambda: ad.t2i_adapter("sd1"), "sd1", "t2i_adapter", facts={"in_channels": 192, "levels": 4}
    ),
    "t2i_adapter_sdxl_sketch": Case(
        lambda: ad.t2i_adapter("sdxl", hint_channels=1),
        "sdxl",
        "t2i_adapter",
        facts={"in_channels": 256, "levels": 3},
    ),
    "ip_adapter_sd15": Case(
        lambda: ad.ip_adapter("sd1"),
        "sd1",
        "ip_adapter",
        "base",
        facts={"context_dim": 768, "num_tokens": 4, "image_embed_dim": 1024, "ip_layers": 16},
    ),
    "ip_adapter_plus_sdxl": Case(
        lambda: ad.ip_adapter("sdxl", "plus", tokens=16),
        "sdxl",
        "ip_adapter",
        "plus",
        facts={"context_dim": 2048, "num_tokens": 16, "image_encoder": "clip_vit_bigg"},
    ),
    # -------------------------------------------------------------- embeddings
    "embedding_sd15": Case(
        lambda: ad.embedding("sd1", 4),
        "sd1",
        "embedding",
        facts={"token_width": 768, "num_vectors": 4},
    ),
    "embedding_sdxl": Case(
        lambda: ad.embedding("sdxl", 2),
        "sdxl",
        "embedding",
        facts={"token_widths": {"clip_l": 768, "clip_g": 1280}, "num_vectors": 2},
    ),
    # -------------------------------------------------------------- VAEs
    "vae_sd_ldm": Case(
        lambda: co.ldm_vae(4, True, "F32"),
        ("sd1", "sdxl"),
        "vae",
        facts={"latent_channels": 4, "naming": "ldm"},
    ),
    "vae_sdxl_diffusers_with_metadata": Case(
        lambda: co.diffusers_vae(4, True),
        "sdxl",
        "vae",
        facts={"latent_channels": 4, "naming": "diffusers"},
        metadata={"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"},
    ),
    "vae_flux_ae": Case(
        lambda: co.ldm_vae(16, False, "BF16"),
        ("flux1", "sd3"),
        "vae",
        facts={"latent_channels": 16, "quant_conv": False},
    ),
    "vae_sd3_diffusers": Case(
        lambda: co.diffusers_vae(16, False),
        ("flux1", "sd3"),
        "vae",
        facts={"latent_channels": 16, "naming": "diffusers"},
    ),
    "vae_qwen_image": Case(
        co.qwen_image_vae,
        ("qwen-image", "wan"),
        "vae",
        facts={"latent_channels": 16, "conv3d": True},
    ),
    # -------------------------------------------------------------- text encoders
    "te_clip_l": Case(
        co.clip_l, "any", "text_encoder", "clip_l", {"hidden_size": 768, "num_layers": 12}
    ),
    "te_clip_l_comfy_prefixed": Case(
        lambda: co.prefixed("text_encoders.clip_l.transformer.", co.clip_l()),
        "any",
        "text_encoder",
        "clip_l",
    ),
    "te_clip_g": Case(
        co.clip_g, "any", "text_encoder", "clip_g", {"hidden_size": 1280, "num_layers": 32}
    ),
    "te_clip_g_openclip": Case(
        co.openclip_g, "any", "text_encoder", "clip_g", {"hidden_size": 1280, "naming": "open_clip"}
    ),
    "te_t5xxl": Case(
        co.t5xxl, "any", "text_encoder", "t5xxl", {"hidden_size": 4096, "num_layers": 24}
    ),
    "te_umt5xxl": Case(co.umt5xxl, "any", "text_encoder", "umt5xxl", {"vocab_size": 256384}),
    "te_qwen3_4b": Case(
        lambda: co.llm_text_encoder("qwen3_4b"),
        "any",
        "text_encoder",
        "qwen3_4b",
        {"hidden_size": 2560, "num_layers": 36, "used_by": ["z-image", "flux2"]},
    ),
    # -------------------------------------------------------------- upscalers
    "upscaler_esrgan_x4_old": Case(
        lambda: co.esrgan_old(4),
        "any",
        "upscaler",
        "esrgan x4",
        {"architecture": "esrgan", "scale": 4, "num_blocks": 23},
    ),
    "upscaler_realesrgan_x2plus": Case(
        lambda: co.prefixed("params_ema.", co.rrdbnet(2)),
        "any",
        "upscaler",
        "esrgan x2",
        {"architecture": "esrgan", "scale": 2},
    ),
    "upscaler_compact_x2": Case(
        lambda: co.prefixed("params.", co.srvgg_compact(2)),
        "any",
        "upscaler",
        "real-esrgan-compact x2",
        {"architecture": "real-esrgan-compact", "scale": 2},
    ),
    "upscaler_swinir_x4": Case(
        lambda: co.swinir(4), "any", "upscaler", "swinir x4", {"architecture": "swinir", "scale": 4}
    ),
}


def write_case(folder: Path, name: str, data: str = "sparse") -> Path:
    case = CASES[name]
    return write_safetensors(folder / f"{name}.safetensors", case.build(), case.metadata, data=data)
