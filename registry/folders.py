"""The folder conventions of ComfyUI, AUTOMATIC1111/Forge and InvokeAI, and files in the wrong one.

A folder name says what the apps expect inside it (``loras/`` holds LoRAs, ``models/sdxl/vae``
holds SDXL VAEs). :func:`convention_of` reads that expectation off a path; :func:`folder_report`
says, in words, where a file contradicts it: an SDXL LoRA under an ``SD1.5`` folder, a LoRA in
``checkpoints/``. Names are compared case-insensitively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

_LORA = frozenset({"lora", "lycoris"})
_CONTROL = frozenset({"controlnet", "t2i_adapter"})
_DIFFUSION = frozenset({"unet", "transformer"})

# folder name (lower case) -> (kinds the apps put there, which apps use the name, the folder a
# user of those apps keeps each kind in).
_FOLDERS: dict[str, tuple[frozenset[str], str]] = {
    # ComfyUI: ComfyUI/models/<name>/ (folder_paths.py)
    "checkpoints": (frozenset({"checkpoint"}), "ComfyUI"),
    "loras": (_LORA, "ComfyUI"),
    "vae": (frozenset({"vae"}), "ComfyUI/A1111"),
    "vae_approx": (frozenset({"vae"}), "ComfyUI"),
    "controlnet": (_CONTROL, "ComfyUI/A1111"),
    "t2i_adapter": (_CONTROL, "ComfyUI"),
    "embeddings": (frozenset({"embedding"}), "ComfyUI/A1111"),
    "upscale_models": (frozenset({"upscaler"}), "ComfyUI"),
    "clip": (frozenset({"text_encoder"}), "ComfyUI"),
    "clip_vision": (frozenset({"image_encoder"}), "ComfyUI"),
    "text_encoders": (frozenset({"text_encoder"}), "ComfyUI"),
    "unet": (_DIFFUSION, "ComfyUI"),
    "diffusion_models": (_DIFFUSION, "ComfyUI"),
    "ipadapter": (frozenset({"ip_adapter"}), "ComfyUI"),
    "instantid": (frozenset({"ip_adapter"}), "ComfyUI"),
    "photomaker": (frozenset({"photomaker"}), "ComfyUI"),
    "hypernetworks": (frozenset({"hypernetwork"}), "ComfyUI/A1111"),
    "style_models": (frozenset({"style_model"}), "ComfyUI"),
    # ComfyUI-AnimateDiff-Evolved: models/animatediff_models/, models/animatediff_motion_lora/
    "animatediff_models": (frozenset({"motion_module"}), "ComfyUI"),
    "animatediff_motion_lora": (frozenset({"motion_module"}), "ComfyUI"),
    "diffusers": (frozenset({"pipeline"}), "ComfyUI"),
    # AUTOMATIC1111 / Forge: stable-diffusion-webui/models/<name>/
    "stable-diffusion": (frozenset({"checkpoint", "unet", "transformer"}), "A1111/Forge"),
    "lora": (_LORA, "A1111/Forge"),
    "lycoris": (_LORA, "A1111/Forge"),
    "vae-approx": (frozenset({"vae"}), "A1111/Forge"),
    "esrgan": (frozenset({"upscaler"}), "A1111/Forge"),
    "realesrgan": (frozenset({"upscaler"}), "A1111/Forge"),
    "swinir": (frozenset({"upscaler"}), "A1111/Forge"),
    "text_encoder": (frozenset({"text_encoder"}), "Forge"),
}

# Where each app keeps a kind (for the hint in a report).
_HOME: dict[str, dict[str, str]] = {
    "ComfyUI": {
        "checkpoint": "checkpoints/",
        "lora": "loras/",
        "lycoris": "loras/",
        "vae": "vae/",
        "controlnet": "controlnet/",
        "t2i_adapter": "controlnet/",
        "embedding": "embeddings/",
        "upscaler": "upscale_models/",
        "text_encoder": "text_encoders/ (or clip/)",
        "unet": "diffusion_models/ (or unet/)",
        "transformer": "diffusion_models/ (or unet/)",
        "ip_adapter": "ipadapter/",
        "image_encoder": "clip_vision/",
        "photomaker": "photomaker/",
        "hypernetwork": "hypernetworks/",
        "motion_module": "animatediff_models/ (MotionLoRAs: animatediff_motion_lora/)",
        "style_model": "style_models/",
        "pipeline": "diffusers/",
    },
    "A1111/Forge": {
        "checkpoint": "Stable-diffusion/",
        "unet": "Stable-diffusion/",
        "transformer": "Stable-diffusion/",
        "lora": "Lora/",
        "lycoris": "Lora/",
        "vae": "VAE/",
        "controlnet": "ControlNet/",
        "embedding": "embeddings/",
        "upscaler": "ESRGAN/",
        "text_encoder": "text_encoder/",
        "hypernetwork": "hypernetworks/",
    },
}

# InvokeAI: models/<base>/<type>/<model>
_INVOKE_BASES = {
    "sd-1": "sd1",
    "sd-2": "sd2",
    "sdxl": "sdxl",
    "sdxl-refiner": "sdxl_refiner",
    "sd-3": "sd3",
    "flux": "flux1",
    "flux2": "flux2",
    "cogview4": "cogview4",
    "any": "any",
}
_INVOKE_TYPES: dict[str, frozenset[str]] = {
    "main": frozenset({"checkpoint", "pipeline", "unet", "transformer"}),
    "lora": _LORA,
    "vae": frozenset({"vae"}),
    "controlnet": frozenset({"controlnet"}),
    "t2i_adapter": frozenset({"t2i_adapter"}),
    "embedding": frozenset({"embedding"}),
    "ip_adapter": frozenset({"ip_adapter"}),
    "clip_vision": frozenset({"image_encoder"}),
    "clip_embed": frozenset({"text_encoder"}),
    "t5_encoder": frozenset({"text_encoder"}),
    "spandrel_image_to_image": frozenset({"upscaler"}),
}

# Family a folder name points at, first match wins (people write SD1.5, sd15, SDXL, Pony, ...).
# Only names that say one family: a plain "hunyuan", "kandinsky", "lumina" or "sana" folder may
# hold models of another generation (HunyuanDiT, Kandinsky 3, Lumina-Next, a character named
# Sana), and a wrong "wrong folder" is worse than none.
_FAMILY_HINTS: list[tuple[str, re.Pattern[str]]] = [
    (family, re.compile(pattern))
    for family, pattern in [
        ("sdxl_refiner", r"(sdxl|\bxl)[-_ ]?refiner"),
        ("sdxl", r"sdxl|(^|[^a-z])xl([^a-z]|$)|pony|illustrious|noobai"),
        ("sd3.5", r"sd[-_ ]?3\.?5"),
        ("sd3", r"sd[-_ ]?3([^0-9.]|$)"),
        ("sd2", r"sd[-_ ]?v?2(\.?[01x])?([^0-9.]|$)"),
        ("sd1", r"sd[-_ ]?v?1(\.?[45x])?([^0-9.]|$)"),
        ("flux2", r"flux[-_. ]?2(?![0-9])"),
        ("flux1", r"flux[-_. ]?1(?![0-9])|flux.*(schnell|kontext|krea)"),
        ("flux", r"flux"),
        ("chroma", r"chroma"),
        ("hidream", r"hidream"),
        ("qwen-image", r"qwen"),
        ("z-image", r"z[-_ ]?image"),
        ("lumina2", r"lumina[-_ ]?(image[-_ ]?)?2(?![0-9])"),
        ("wan", r"(^|[^a-z0-9])wan([-_. ]?2\.?[12]|[-_ ]?video)?(?=[^a-z0-9.]|$)"),
        ("hunyuan-video", r"hunyuan[-_ ]?video(?![-_. ]?1\.?5)"),
        ("hunyuanimage2.1", r"hunyuan[-_ ]?image[-_ ]?2\.?1(?![0-9])"),
        ("kandinsky5", r"kandinsky[-_ ]?5(?![0-9])"),
        ("sana", r"(^|[^a-z0-9])sana[-_ ]?(1\.?[05]|sprint)(?![0-9])"),
        ("stable-cascade", r"cascade"),
    ]
]
# Families that are one family for the purpose of "is it in the right folder".
_SAME = {"sd3.5": "sd3", "sdxl_refiner": "sdxl"}
# Folder names that say one of several families: a plain "flux" folder may hold Flux.1 or FLUX.2.
_EITHER: dict[str, tuple[str, ...]] = {"flux": ("flux1", "flux2")}
# The VAE a family's folder rightly holds under another family's name: Flux.1's ae (SD3's VAE
# has its layout) in the folder of any family decoding with it, and such a family's name on it
# (its metadata or download sidecar may name Z-Image) in a flux folder; the Wan 2.1 VAE, named
# Qwen-Image's or Wan's (the same file), in either's folder; SD1's for SD2 (SDXL's VAE has its
# layout).
_FLUX_AE_FAMILIES = frozenset({"flux1", "sd3", "sd3.5", "chroma", "z-image", "hidream", "lumina2"})
_VAE_KEPT_WITH: dict[str, frozenset[str]] = {
    **{f: _FLUX_AE_FAMILIES - {f} for f in _FLUX_AE_FAMILIES},
    "qwen-image": frozenset({"wan"}),
    "wan": frozenset({"qwen-image"}),
    "sd1": frozenset({"sd2", "sdxl"}),
}


@dataclass(frozen=True)
class Convention:
    """What the folders above a file say it should be."""

    app: str  # ComfyUI, A1111/Forge, InvokeAI, ...
    folder: str  # the folder name that set the expectation (as written on disk)
    kinds: frozenset[str]
    family: str | None = None  # family a folder name points at ("flux": flux1 or flux2)
    family_folder: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "app": self.app,
            "folder": self.folder,
            "kinds": sorted(self.kinds),
            "family": self.family,
            "family_folder": self.family_folder,
        }


def family_hint(name: str) -> str | None:
    """The family a folder name points at (``SD1.5`` -> ``sd1``), or None."""
    lowered = name.lower()
    for family, pattern in _FAMILY_HINTS:
        if pattern.search(lowered):
            return family
    return None


def convention_of(path: str | PurePath) -> Convention | None:
    """The expectation the folders above ``path`` set, or None outside any known layout."""
    parents = list(PurePath(path).parts[:-1])
    lowered = [p.lower() for p in parents]
    for i in range(len(parents) - 1, -1, -1):
        name = lowered[i]
        if name in _INVOKE_TYPES and i > 0 and lowered[i - 1] in _INVOKE_BASES:
            base = _INVOKE_BASES[lowered[i - 1]]
            return Convention(
                "InvokeAI",
                parents[i],
                _INVOKE_TYPES[name],
                None if base == "any" else base,
                parents[i - 1],
            )
        if name in _FOLDERS:
            kinds, app = _FOLDERS[name]
            family, family_folder = None, None
            for below in reversed(parents[i + 1 :]):
                hint = family_hint(below)
                if hint:
                    family, family_folder = hint, below
                    break
            return Convention(app, parents[i], kinds, family, family_folder)
    if parents:
        hint = family_hint(parents[-1])
        if hint:
            return Convention("", parents[-1], frozenset(), hint, parents[-1])
    return None


def folder_report(path: str | PurePath, family: str, kind: str) -> list[str]:
    """Sentences saying how ``path``'s folder contradicts a file of ``family``/``kind``."""
    conv = convention_of(path)
    if conv is None:
        return []
    problems = []
    if conv.kinds and kind not in ("unknown", "") and kind not in conv.kinds:
        home = _home_for(conv.app, kind)
        where = f" ({conv.app} keeps a {kind} in {home})" if home else ""
        problems.append(f"wrong folder: a {kind} in {conv.folder}/{where}")
    if (
        conv.family
        and family not in ("unknown", "any", "")
        and not _fits_folder(family, kind, conv.family)
    ):
        says = " or ".join(_EITHER.get(conv.family, (conv.family,)))
        problems.append(
            f"wrong folder: a {family} {kind} in {conv.family_folder}/ "
            f"(the folder name says {says})"
        )
    return problems


def _fits_folder(family: str, kind: str, hint: str) -> bool:
    """Whether a ``family`` file of ``kind`` belongs in a folder whose name says ``hint``."""
    folder_families = {_SAME.get(f, f) for f in _EITHER.get(hint, (hint,))}
    if _SAME.get(family, family) in folder_families:
        return True
    return kind == "vae" and bool(folder_families & _VAE_KEPT_WITH.get(family, frozenset()))


def _home_for(app: str, kind: str) -> str | None:
    if app == "InvokeAI":
        return None
    for name, homes in _HOME.items():
        if name in app or app in name:
            if kind in homes:
                return homes[kind]
    return _HOME["ComfyUI"].get(kind)
