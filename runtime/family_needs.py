"""What each model family is made of: names, cross-attention widths, text encoders, latents.

Sources: the model configs shipped with diffusers pipelines (``unet/config.json``
``cross_attention_dim``, ``vae/config.json`` ``latent_channels``), ComfyUI ``supported_models.py``
(which text encoders each family loads), and the model cards of each family.
"""

from __future__ import annotations

from dataclasses import dataclass

LABELS: dict[str, str] = {
    "sd1": "SD1",
    "sd2": "SD2",
    "sdxl": "SDXL",
    "sdxl_refiner": "SDXL refiner",
    "sd3": "SD3",
    "sd3.5": "SD3.5",
    "flux1": "Flux.1",
    "chroma": "Chroma",
    "z-image": "Z-Image",
    "qwen-image": "Qwen-Image",
    "hidream": "HiDream",
    "stable-cascade": "Stable Cascade",
    "flux2": "FLUX.2",
    "lumina2": "Lumina 2",
    "sana": "SANA",
    "wan": "Wan",
    "hunyuan-video": "HunyuanVideo",
    "hunyuanimage2.1": "HunyuanImage 2.1",
    "kandinsky5": "Kandinsky 5",
    "any": "any family",
    "unknown": "an unknown family",
}

# UNet cross-attention width (text-encoder output the UNet attends to).
CONTEXT_DIM: dict[str, int] = {"sd1": 768, "sd2": 1024, "sdxl": 2048, "sdxl_refiner": 1280}

TEXT_ENCODER_WIDTHS: dict[str, int] = {
    "clip_l": 768,
    "openclip_h": 1024,
    "clip_g": 1280,
    "t5xxl": 4096,
}


@dataclass(frozen=True)
class FamilyNeeds:
    """The text encoders and VAE a family's denoiser needs to generate anything."""

    text_encoders: tuple[str, ...]
    optional_text_encoders: tuple[str, ...] = ()
    latent_channels: int = 4
    vae_name: str = "VAE"


NEEDS: dict[str, FamilyNeeds] = {
    "sd1": FamilyNeeds(("clip_l",)),
    "sd2": FamilyNeeds(("openclip_h",)),
    "sdxl": FamilyNeeds(("clip_l", "clip_g")),
    "sdxl_refiner": FamilyNeeds(("clip_g",)),
    "sd3": FamilyNeeds(("clip_l", "clip_g"), ("t5xxl",), 16),
    "sd3.5": FamilyNeeds(("clip_l", "clip_g", "t5xxl"), (), 16),
    "flux1": FamilyNeeds(("clip_l", "t5xxl"), (), 16, "ae (Flux VAE)"),
    "chroma": FamilyNeeds(("t5xxl",), (), 16, "ae (Flux VAE)"),
}

# The VAE each family was trained with, by the family that introduced it (SD2 kept SD1's VAE,
# the SDXL refiner SDXL's, SD3.5 SD3's; Chroma, Z-Image, HiDream and Lumina 2 use Flux.1's ae;
# FLUX.2 has its own 32-channel VAE; Qwen-Image fine-tuned Wan 2.1's 3-D causal video VAE,
# diffusers AutoencoderKLQwenImage; HunyuanVideo has its own 3-D VAE). Families without an entry
# (SANA's DC-AE, HunyuanImage 2.1's 32x VAE, Kandinsky 5's per-model VAEs) are checked by latent
# channels only.
VAE_LINEAGE: dict[str, str] = {
    "sd1": "sd1",
    "sd2": "sd1",
    "sdxl": "sdxl",
    "sdxl_refiner": "sdxl",
    "sd3": "sd3",
    "sd3.5": "sd3",
    "flux1": "flux1",
    "chroma": "flux1",
    "z-image": "flux1",
    "hidream": "flux1",
    "lumina2": "flux1",
    "flux2": "flux2",
    "qwen-image": "wan",
    "wan": "wan",
    "hunyuan-video": "hunyuan-video",
}
# Lineages whose VAE is a 3-D (video, causal) VAE: 5-D conv weights, a latent with a time axis.
# Its latent space is no image VAE's, whatever the channel count says.
VAE_3D_LINEAGES = frozenset({"wan", "hunyuan-video"})

# Families whose add-ons partly load onto another (derived weights share layer names).
RELATED: dict[str, set[str]] = {"chroma": {"flux1"}, "sd3.5": set(), "sd3": set()}


def cross_attention(family: str) -> bool:
    """True for the UNet families, whose text reaches the denoiser through cross-attention
    (DiTs such as Flux.1 and SD3 attend jointly over image and text tokens)."""
    return family in CONTEXT_DIM


def label(family: str) -> str:
    return LABELS.get(family, family)


def same_base(base: str, part: str) -> bool:
    return base == part


def related(base: str, part: str) -> bool:
    return part in RELATED.get(base, set())
