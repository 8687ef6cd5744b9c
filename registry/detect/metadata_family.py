"""The base family that a file's metadata names (kohya ``ss_*`` and SAI ``modelspec.*`` keys).

Metadata is *supporting* evidence: trainers copy it from their settings, and files are renamed,
merged and re-saved. Detectors decide from keys and shapes where they can and use this to agree,
to disagree out loud, or to decide only when the layout is silent.
"""

from __future__ import annotations

from collections.abc import Mapping

# (substring of modelspec.architecture, family), most specific first.
_ARCHITECTURES: tuple[tuple[str, str], ...] = (
    ("stable-diffusion-xl-v1-refiner", "sdxl_refiner"),
    ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v3.5", "sd3.5"),
    ("stable-diffusion-3.5", "sd3.5"),
    ("stable-diffusion-v3", "sd3"),
    ("stable-diffusion-3", "sd3"),
    ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-v1", "sd1"),
    ("stable-cascade", "stable-cascade"),
    ("flux-1", "flux1"),
    ("flux.1", "flux1"),
    ("chroma", "chroma"),
    ("qwen-image", "qwen-image"),
    ("hidream", "hidream"),
    ("z-image", "z-image"),
)

# (prefix of ss_base_model_version, family), most specific first.
_BASE_VERSIONS: tuple[tuple[str, str], ...] = (
    ("sdxl_refiner", "sdxl_refiner"),
    ("sdxl", "sdxl"),
    ("sd_v1", "sd1"),
    ("sd_v2", "sd2"),
    ("sd3.5", "sd3.5"),
    ("sd3", "sd3"),
    ("flux1", "flux1"),
    ("flux", "flux1"),
    ("chroma", "chroma"),
    # sd-scripts' "lumina2" is Lumina-Image 2.0 (2304 wide), not Z-Image: no family of ours.
)


def family_from_metadata(metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """(family, evidence) from the metadata, or None when it names no known family."""
    arch = metadata.get("modelspec.architecture", "").lower()
    for needle, family in _ARCHITECTURES:
        if needle in arch:
            return family, f"metadata modelspec.architecture={metadata['modelspec.architecture']!r}"
    version = metadata.get("ss_base_model_version", "").lower()
    for prefix, family in _BASE_VERSIONS:
        if version.startswith(prefix):
            return family, f"metadata ss_base_model_version={metadata['ss_base_model_version']!r}"
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
