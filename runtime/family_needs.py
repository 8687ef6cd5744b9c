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
# The architecture of each slot's encoder: a file that could not be named fills a slot by its
# width only if its architecture is the slot's (T5-base is as wide as CLIP-L, Llama as T5-XXL).
TEXT_ENCODER_ARCH: dict[str, str] = {
    "clip_l": "CLIP",
    "openclip_h": "CLIP",
    "clip_g": "CLIP",
    "t5xxl": "T5",
}


@dataclass(frozen=True)
class FamilyNeeds:
    """The text encoders and VAE a family's denoiser needs to generate anything."""

    text_encoders: tuple[str, ...]
    optional_text_encoders: tuple[str, ...] = ()
    latent_channels: int = 4
    vae_name: str = "VAE"
    any_text_encoder: tuple[str, ...] = ()  # one of these is needed (which: the model's size)


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

# What a set needs for the families modelsafe identifies and resolves but does not generate:
# the text encoders their pipelines load (diffusers' ``text_encoder*`` classes, ComfyUI's
# text-encoder loaders) and the VAE they decode with. Keyed by family, or ``family/variant``
# where the variant decides (FLUX.2 [dev] takes Mistral-Small-3.1, [klein] 4B Qwen3-4B, [klein]
# 9B Qwen3-8B; Wan 2.2 TI2V 5B decodes 48-channel latents with the Wan 2.2 VAE). A FLUX.2 model
# of no known size needs one of the three (``any_text_encoder``). HunyuanImage 2.1's ByT5 glyph
# encoder renders quoted text and may be left out (ComfyUI runs without it). A text encoder
# outside a family's entry is rejected (:func:`text_encoders_of`).
OTHER_NEEDS: dict[str, FamilyNeeds] = {
    "wan": FamilyNeeds(("umt5xxl",), (), 16, "Wan VAE"),
    "wan/ti2v-5b": FamilyNeeds(("umt5xxl",), (), 48, "Wan 2.2 VAE"),
    "qwen-image": FamilyNeeds(("qwen2.5_vl_7b",), (), 16, "Qwen-Image VAE"),
    "z-image": FamilyNeeds(("qwen3_4b",), (), 16, "ae (Flux VAE)"),
    "lumina2": FamilyNeeds(("gemma2_2b",), (), 16, "ae (Flux VAE)"),
    "sana": FamilyNeeds(("gemma2_2b",), (), 32, "DC-AE"),
    "hidream": FamilyNeeds(("clip_l", "clip_g", "t5xxl", "llama3.1_8b"), (), 16, "ae (Flux VAE)"),
    "hunyuan-video": FamilyNeeds(("clip_l", "llava_llama3_8b"), (), 16, "HunyuanVideo VAE"),
    "hunyuanimage2.1": FamilyNeeds(
        ("qwen2.5_vl_7b",), ("byt5_small_glyph",), 64, "HunyuanImage 2.1 VAE"
    ),
    "kandinsky5": FamilyNeeds(("qwen2.5_vl_7b", "clip_l"), (), 16, "VAE"),
    "flux2": FamilyNeeds((), (), 32, "FLUX.2 VAE", ("mistral_small_3_24b", "qwen3_4b", "qwen3_8b")),
    "flux2/dev": FamilyNeeds(("mistral_small_3_24b",), (), 32, "FLUX.2 VAE"),
    "flux2/klein-4b": FamilyNeeds(("qwen3_4b",), (), 32, "FLUX.2 VAE"),
    "flux2/klein-9b": FamilyNeeds(("qwen3_8b",), (), 32, "FLUX.2 VAE"),
}


# The names ComfyUI gives the encoders it saves into a checkpoint (``text_encoders.<name>.``)
# where they are not the slot's: its ``llama`` is HiDream's Llama-3.1-8B or HunyuanVideo's
# LLaVA-Llama-3-8B, whichever model it saved.
COMFY_ENCODER_SLOTS: dict[str, tuple[str, ...]] = {
    "qwen25_7b": ("qwen2.5_vl_7b",),
    "mistral3_24b": ("mistral_small_3_24b",),
    "llama": ("llama3.1_8b", "llava_llama3_8b"),
}


def needs_of(family: str, variant: str | None = None, width: object = None) -> FamilyNeeds | None:
    """What a set of ``family`` (of ``variant``, else of the released size its model ``width``
    says: a Wan transformer 3072 wide is the TI2V 5B) needs; None if not tabulated."""
    from modelsafe.registry.detect.sizes import model_size

    if variant is None and (size := model_size(family, width)) is not None:
        variant = size.variant
    return NEEDS.get(family) or OTHER_NEEDS.get(f"{family}/{variant}") or OTHER_NEEDS.get(family)


def text_encoders_of(family: str, variant: str | None = None) -> tuple[str, ...] | None:
    """The text encoders ``family`` (of ``variant``) takes; None if not tabulated."""
    needs = needs_of(family, variant)
    if needs is None:
        return None
    return needs.text_encoders + needs.optional_text_encoders + needs.any_text_encoder


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
