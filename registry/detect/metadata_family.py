"""The base family that a file's metadata names (kohya ``ss_*`` and SAI ``modelspec.*`` keys).

Metadata is *supporting* evidence: trainers copy it from their settings, and files are renamed,
merged and re-saved. Detectors decide from keys and shapes where they can and use this to agree,
to disagree out loud, or to decide only when the layout is silent.
"""

from __future__ import annotations

from collections.abc import Mapping

# (substring of modelspec.architecture, family or None: no family of ours), most specific first.
# sd-scripts writes lumina-2 and hunyuan-image-2.1; musubi-tuner Flux.2-dev / Flux.2-klein-4b /
# -9b, wan2.1 (also for Wan 2.2), hunyuan-video, hunyuan-video-1.5 (another model) and Kandinsky-5.
_ARCHITECTURES: tuple[tuple[str, str | None], ...] = (
    ("stable-diffusion-xl-v1-refiner", "sdxl_refiner"),
    ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v3.5", "sd3.5"),
    ("stable-diffusion-3.5", "sd3.5"),
    # sd-scripts: "stable-diffusion-3" + "-" + the model: 3-5-large, 3-5-medium, 3-medium
    ("stable-diffusion-3-3-5", "sd3.5"),
    ("stable-diffusion-v3", "sd3"),
    ("stable-diffusion-3", "sd3"),
    ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-v1", "sd1"),
    ("stable-cascade", "stable-cascade"),
    ("flux-1", "flux1"),
    ("flux.1", "flux1"),
    ("flux-2", "flux2"),
    ("flux.2", "flux2"),
    ("chroma", "chroma"),
    ("qwen-image", "qwen-image"),
    ("hidream", "hidream"),
    ("z-image", "z-image"),
    ("lumina-2", "lumina2"),
    ("wan2.", "wan"),
    ("hunyuan-video-1.5", None),
    ("hunyuan-video", "hunyuan-video"),
    ("hunyuan-image-2.1", "hunyuanimage2.1"),
    ("kandinsky-5", "kandinsky5"),
)

# (prefix of ss_base_model_version, family or None: no family of ours), most specific first.
# FLUX.2: ai-toolkit writes flux2, flux2_klein_4b/9b, musubi-tuner flux_2_dev, flux_2_klein_4b/9b
# (Flux.1: sd-scripts flux1, ai-toolkit flux.1, flux.1_kontext, musubi-tuner flux_kontext). Wan:
# musubi-tuner wan, ai-toolkit wan_2.1, wan_2.2_14b, wan_2.2_5b. sd-scripts' and ai-toolkit's
# lumina2 is Lumina-Image 2.0 (2304 wide), not Z-Image. musubi-tuner's hunyuan_video_1_5 is
# HunyuanVideo 1.5, no family of ours.
_BASE_VERSIONS: tuple[tuple[str, str | None], ...] = (
    ("sdxl_refiner", "sdxl_refiner"),
    ("sdxl", "sdxl"),
    ("sd_v1", "sd1"),
    ("sd_v2", "sd2"),
    ("sd3.5", "sd3.5"),
    ("sd3", "sd3"),
    ("flux2", "flux2"),
    ("flux_2", "flux2"),
    ("flux.2", "flux2"),
    ("flux-2", "flux2"),
    ("flux1", "flux1"),
    ("flux", "flux1"),
    ("chroma", "chroma"),
    ("lumina2", "lumina2"),
    ("wan", "wan"),
    ("hunyuan_video_1_5", None),
    ("hunyuan_video", "hunyuan-video"),
    ("hunyuan-image-2.1", "hunyuanimage2.1"),
    ("kandinsky5", "kandinsky5"),
)


def family_from_metadata(metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """(family, evidence) from the metadata, or None when it names no known family."""
    arch = metadata.get("modelspec.architecture", "").lower()
    for needle, family in _ARCHITECTURES:
        if needle in arch:
            why = f"metadata modelspec.architecture={metadata['modelspec.architecture']!r}"
            return (family, why) if family else None
    version = metadata.get("ss_base_model_version", "").lower()
    for prefix, family in _BASE_VERSIONS:
        if version.startswith(prefix):
            why = f"metadata ss_base_model_version={metadata['ss_base_model_version']!r}"
            return (family, why) if family else None
    if metadata.get("ss_v2", "").lower() == "true":
        return "sd2", "metadata ss_v2='True'"
    return None


def weigh_metadata(
    family: str | None, score: float, metadata: Mapping[str, str], evidence: list[str]
) -> tuple[str | None, float]:
    """Let metadata support, contradict (noted, keys win) or, if keys were silent, decide."""
    said = family_from_metadata(metadata)
    if said is None:
        return family, score
    meta_family, why = said
    if family is None:
        evidence.append(f"{why}: the keys cannot tell the base, so metadata decides")
        return meta_family, 0.6
    if meta_family == family:
        evidence.append(f"{why} agrees")
        return family, min(1.0, score + 0.03)
    evidence.append(f"{why} names {meta_family}, but the keys and shapes say {family}: keys win")
    return family, max(0.0, score - 0.1)
