"""Which component each tensor of a model belongs to, and the facts its shapes give away.

A single-file checkpoint holds several models under key prefixes (``model.diffusion_model.`` for
the UNet/transformer, ``first_stage_model.`` for the VAE, ``cond_stage_model.`` or
``conditioner.embedders.N.`` for text encoders); a diffusers folder holds them as components.
This module splits either into named components and reads the shapes that decide compatibility
(cross-attention width, latent channels, text-encoder width). Headers only; no tensor data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelsafe.registry.detect.prefixes import COMFY_TEXT_ENCODERS
from modelsafe.types import TensorIndex, TensorInfo

# DiT families the built-in detectors name but whose module layout modelsafe does not map (no
# LoRA-key aliases between their original and diffusers namings): rules that need a layout
# leave them unchecked rather than reject a LoRA whose names are the other naming's.
NAMED_ONLY_FAMILIES = frozenset(
    {"flux2", "lumina2", "sana", "wan", "hunyuan-video", "hunyuanimage2.1", "kandinsky5"}
)

# Families whose denoiser is a transformer (DiT/MMDiT) rather than a UNet.
TRANSFORMER_FAMILIES = frozenset(
    {"sd3", "sd3.5", "flux1", "chroma", "z-image", "qwen-image", "hidream", *NAMED_ONLY_FAMILIES}
)

# The model families whose module layout modelsafe's built-in rules know; a family outside this
# set comes from a plugin (or is one of NAMED_ONLY_FAMILIES), and built-in rules that need a
# family's module layout leave such a model to its plugin.
BUILTIN_FAMILIES = (
    frozenset({"sd1", "sd2", "sdxl", "sdxl_refiner", "stable-cascade", *TRANSFORMER_FAMILIES})
    - NAMED_ONLY_FAMILIES
)

# Text-encoder width (hidden size) -> the name the ecosystem uses for it.
TEXT_ENCODER_BY_WIDTH: dict[int, str] = {
    768: "clip_l",
    1024: "openclip_h",
    1280: "clip_g",
    4096: "t5xxl",
}

# Key prefix in single-file checkpoints -> (component name, role). Longest prefixes first.
# ComfyUI's ``text_encoders.<name>.`` encoders keep the name ComfyUI gives them.
_COMFY_ENCODERS = tuple(
    (f"text_encoders.{name}.", f"text_encoder.{name}", "text_encoder")
    for name in COMFY_TEXT_ENCODERS
)
_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("model.diffusion_model.", "denoiser", "denoiser"),
    ("first_stage_model.", "vae", "vae"),
    ("conditioner.embedders.0.", "text_encoder.0", "text_encoder"),
    ("conditioner.embedders.1.", "text_encoder.1", "text_encoder"),
    ("cond_stage_model.", "text_encoder.0", "text_encoder"),
    *_COMFY_ENCODERS,
    ("model_ema.", "ema", "other"),
    ("vae.", "vae", "vae"),
)

_DIFFUSERS_ROLES = {
    "unet": "denoiser",
    "transformer": "denoiser",
    "prior": "denoiser",
    "decoder": "denoiser",
    "vae": "vae",
    "text_encoder": "text_encoder",
    "text_encoder_2": "text_encoder",
    "text_encoder_3": "text_encoder",
    "controlnet": "controlnet",
}


@dataclass(frozen=True)
class Component:
    """The tensors of one model inside a file or folder; names have ``prefix`` removed."""

    name: str  # unet | transformer | vae | text_encoder.clip_l | ... | ema | other
    role: str  # denoiser | vae | text_encoder | controlnet | adapter | other
    prefix: str
    tensors: tuple[TensorInfo, ...]

    def names(self) -> set[str]:
        return {t.name for t in self.tensors}


def _strip(tensors: Iterable[TensorInfo], prefix: str) -> tuple[TensorInfo, ...]:
    n = len(prefix)  # the constructor, not dataclasses.replace: 5x faster per tensor
    return tuple(
        TensorInfo(t.name[n:], t.dtype, t.shape, t.offset, t.nbytes, t.source) for t in tensors
    )


def encoder_slot(
    tensors: Iterable[TensorInfo], fallback: str = "unknown", index: TensorIndex | None = None
) -> str:
    """The text-encoder slot a component fills: the encoder the text-encoder detector names
    (UMT5-XXL is ``umt5xxl``, not T5-XXL by its width), else by its width if the detector knows
    no such layout; a T5 or LLM the detector could not name keeps ``fallback`` (T5-base is as
    wide as CLIP-L, Llama as T5-XXL). ``index``: the tensors' own index (a GGUF's key/values)."""
    from modelsafe.registry.detect.component_probes import text_encoder

    tensors = list(tensors)
    sub = index or TensorIndex(Path(), "safetensors", tuple(tensors))
    found = text_encoder(sub, "model_parts")
    if found:
        return found[0].variant or fallback
    slot = TEXT_ENCODER_BY_WIDTH.get(text_encoder_width(tensors) or 0)
    if slot == "t5xxl" and not any(
        "SelfAttention" in t.name or "DenseReluDense" in t.name or t.name.startswith("enc.blk.")
        for t in tensors
    ):
        return fallback
    return slot or fallback


def text_encoder_width(tensors: Iterable[TensorInfo]) -> int | None:
    """Hidden size of a text encoder, read off its token-embedding table (or final norm)."""
    fallback = None
    for t in tensors:
        name = t.name
        if len(t.shape) == 2 and name.endswith(
            ("token_embedding.weight", "embed_tokens.weight", "shared.weight", "token_embd.weight")
        ):
            return t.shape[1]
        if len(t.shape) == 1 and name.endswith(("final_layer_norm.weight", "ln_final.weight")):
            fallback = t.shape[0]
    return fallback


def _denoiser_name(family: str, kind: str) -> str:
    if kind in ("unet", "transformer", "controlnet"):
        return kind
    return "transformer" if family in TRANSFORMER_FAMILIES else "unet"


def _role_of_kind(kind: str) -> str:
    return {
        "checkpoint": "denoiser",
        "unet": "denoiser",
        "transformer": "denoiser",
        "vae": "vae",
        "text_encoder": "text_encoder",
        "controlnet": "controlnet",
    }.get(kind, "adapter" if kind in ("lora", "lycoris", "embedding", "ip_adapter") else "other")


def split_components(
    index: TensorIndex, family: str = "unknown", kind: str = "unknown"
) -> list[Component]:
    """The components of ``index``: a diffusers folder's parts, or a single file split by prefix."""
    if index.components:
        found = []
        for name, sub in index.components.items():
            role = _DIFFUSERS_ROLES.get(name, "other")
            if role == "text_encoder":
                name = f"text_encoder.{encoder_slot(sub.tensors, name)}"
            found.append(Component(name, role, "", tuple(sub.tensors)))
        return found
    groups: dict[str, list[TensorInfo]] = {}
    meta: dict[str, tuple[str, str]] = {}
    rest: list[TensorInfo] = []
    for t in index.tensors:
        for prefix, name, role in _PREFIXES:
            if t.name.startswith(prefix):
                groups.setdefault(prefix, []).append(t)
                meta[prefix] = (name, role)
                break
        else:
            rest.append(t)
    whole_file = not groups or (kind not in ("checkpoint", "pipeline") and len(rest) > 0)
    if whole_file:
        # A UNet-only / VAE-only / LoRA file: the whole index is one component of its kind.
        role = _role_of_kind(kind)
        name = _denoiser_name(family, kind) if role in ("denoiser", "controlnet") else kind
        if role == "text_encoder":
            return _encoder_components(index)
        return [Component(name, role, "", tuple(index.tensors))]
    out = []
    for prefix, tensors in groups.items():
        name, role = meta[prefix]
        stripped = _strip(tensors, prefix)
        if name == "denoiser":
            name = _denoiser_name(family, kind)
        elif role == "text_encoder" and not prefix.startswith("text_encoders."):
            name = f"text_encoder.{encoder_slot(stripped, name.split('.')[-1])}"
        out.append(Component(name, role, prefix, stripped))
    if rest:
        # Unprefixed tensors beside prefixed ones: a bare transformer in a ComfyUI file, or the
        # scheduler buffers (betas, alphas_cumprod, ...) of an LDM checkpoint.
        if any(c.role == "denoiser" for c in out):
            out.append(Component("other", "other", "", tuple(rest)))
        else:
            out.append(Component(_denoiser_name(family, kind), "denoiser", "", tuple(rest)))
    return out


# The vision tower and the shared logit scale of a whole CLIP saved as a text encoder
# (transformers' CLIPModel: ``vision_model.*``, ``visual_projection``; OpenCLIP: ``visual.*``):
# text-encoder loaders (ComfyUI's CLIPLoader, CLIPTextModel) load the text tower only.
# (A VLM's vision tower, Qwen2.5-VL's ``visual.*``, is another matter: image-editing models use
# it, so it counts.)
_VISION_TOWER = ("vision_model.", "visual_projection.", "visual.", "logit_scale")
_CLIP_SLOTS = frozenset({"clip_l", "clip_g", "openclip_h"})


def _encoder_components(index: TensorIndex) -> list[Component]:
    """A text-encoder file: one component, or one per encoder of a ComfyUI CLIP save
    (``clip_l.transformer.*`` beside ``t5xxl.transformer.*``), each named by what it is."""
    groups: dict[str, list[TensorInfo]] = {}
    rest = []
    for t in index.tensors:
        root = t.name.split(".", 1)[0]
        if root in COMFY_TEXT_ENCODERS and "." in t.name:
            groups.setdefault(root, []).append(t)
        else:
            rest.append(t)
    if len(groups) < 2:
        vision = [t for t in index.tensors if t.name.startswith(_VISION_TOWER)]
        text = [t for t in index.tensors if not t.name.startswith(_VISION_TOWER)]
        slot = encoder_slot(text) if vision and text else None
        if slot in _CLIP_SLOTS:  # a whole CLIP (text and vision): the text tower is what loads
            return [
                Component(f"text_encoder.{slot}", "text_encoder", "", tuple(text)),
                Component("vision_model", "other", "", tuple(vision)),
            ]
        return [
            Component(
                f"text_encoder.{encoder_slot(index.tensors, index=index)}",
                "text_encoder",
                "",
                tuple(index.tensors),
            )
        ]
    out = []
    for root, tensors in groups.items():
        stripped = _strip(tensors, root + ".")
        out.append(
            Component(
                f"text_encoder.{encoder_slot(stripped, root)}", "text_encoder", root + ".", stripped
            )
        )
    if rest:  # (the fp8 ``scaled_fp8`` marker and the like)
        out.append(Component("other", "other", "", tuple(rest)))
    return out


def denoiser_of(components: Iterable[Component]) -> Component | None:
    for c in components:
        if c.role in ("denoiser", "controlnet"):
            return c
    return None


# -- facts read off shapes ---------------------------------------------------------------------


def _first(tensors: Mapping[str, TensorInfo], *suffixes: str) -> TensorInfo | None:
    for name, t in tensors.items():
        if name.endswith(suffixes):
            return t
    return None


def cross_attention_width(tensors: Iterable[TensorInfo]) -> int | None:
    """Cross-attention context width of a UNet/ControlNet (``attn2.to_k`` input features)."""
    for t in tensors:
        if t.name.endswith("attn2.to_k.weight") and len(t.shape) == 2:
            return t.shape[1]
    return None


def latent_channels_of(component: Component) -> int | None:
    """Latent channels a denoiser or VAE works in (4 for SD1/SD2/SDXL, 16 for SD3/Flux)."""
    by_name = {t.name: t for t in component.tensors}
    if component.role == "vae":
        t = by_name.get("post_quant_conv.weight") or by_name.get("decoder.conv_in.weight")
        return t.shape[1] if t is not None and len(t.shape) >= 2 else None
    t = by_name.get("img_in.weight") or by_name.get("x_embedder.weight")
    if t is not None and len(t.shape) == 2:
        return t.shape[1] // 4  # Flux packs 2x2 latent patches into each token
    t = by_name.get("x_embedder.proj.weight") or by_name.get("pos_embed.proj.weight")
    if t is not None and len(t.shape) == 4:
        return t.shape[1]  # SD3 patch embedding convolution
    t = by_name.get("input_blocks.0.0.weight") or by_name.get("conv_in.weight")
    if t is not None and len(t.shape) == 4:
        # Inpainting UNets take latents + mask + masked latents (9 = 4 + 1 + 4).
        return 4 if t.shape[1] == 9 else t.shape[1]
    return None


def lora_context_width(tensors: Iterable[TensorInfo]) -> int | None:
    """Cross-attention width a LoRA was trained against (input features of its attn2 to_k)."""
    for t in tensors:
        name = t.name
        if ("attn2.to_k" in name or "attn2_to_k" in name) and len(t.shape) >= 2:
            if any(p in name for p in ("lora_down", "lora_A", "lora.down", "hada_w1_b")):
                return t.shape[1]
    return None


def embedding_widths(tensors: Iterable[TensorInfo]) -> dict[str, int]:
    """Token widths of a textual-inversion embedding: {"clip_l": 768, "clip_g": 1280} or
    {"emb_params": 768} for a single-encoder one."""
    found: dict[str, int] = {}
    for t in tensors:
        if len(t.shape) != 2:
            continue
        leaf = t.name.rsplit(".", 1)[-1]
        if t.name in ("clip_l", "clip_g", "t5", "emb_params") or t.name.startswith(
            "string_to_param"
        ):
            found[t.name if t.name in ("clip_l", "clip_g", "t5") else "emb_params"] = t.shape[1]
        elif leaf in ("clip_l", "clip_g"):
            found[leaf] = t.shape[1]
    return found


def derived_facts(
    index: TensorIndex, family: str = "unknown", kind: str = "unknown"
) -> dict[str, Any]:
    """Facts about ``index`` computed here from shapes, for when a detector did not supply them."""
    if kind in ("lora", "lycoris"):
        ctx = lora_context_width(index.tensors)
        return {"context_dim": ctx} if ctx else {}
    if kind == "embedding":
        widths = embedding_widths(index.tensors)
        return {"token_widths": widths} if widths else {}
    comps = split_components(index, family, kind)
    facts: dict[str, Any] = {
        "parts_present": sorted({_short(c.name) for c in comps if c.role != "other"})
    }
    den = denoiser_of(comps)
    if den is not None:
        ctx = cross_attention_width(den.tensors)
        if ctx:
            facts["context_dim"] = ctx
        lat = latent_channels_of(den)
        if lat:
            facts["latent_channels"] = lat
    vae = next((c for c in comps if c.role == "vae"), None)
    if vae is not None:
        lat = latent_channels_of(vae)
        if lat:
            facts["vae_latent_channels"] = lat
            facts.setdefault("latent_channels", lat)
    te_widths: dict[str, int | None] = {
        c.name.split(".", 1)[1]: text_encoder_width(c.tensors)
        for c in comps
        if c.role == "text_encoder"
    }
    if te_widths:
        facts["text_encoder_widths"] = {k: v for k, v in te_widths.items() if v}
    return facts


def _short(name: str) -> str:
    """``text_encoder.clip_l`` -> ``clip_l``; ``unet`` stays ``unet``."""
    return name.split(".", 1)[1] if name.startswith("text_encoder.") else name
