"""Which family a component whose layout several families share was made for, when a file says.

Some VAEs have one layout for several families: the SD1/SD2 VAE and SDXL's retrained one (also
TAESD/TAESDXL and A1111's VAE approximations), Flux.1's ``ae`` and the SD3 VAE (TAEF1/TAESD3),
the Wan 2.1 VAE and Qwen-Image's fine-tune of it. The weights cannot tell which a file is; what
is written about it can, in this order:

1. its metadata (kohya ``ss_*`` / SAI ``modelspec.*``: :func:`family_from_metadata`);
2. a diffusers component's class (``AutoencoderKLWan`` / ``AutoencoderKLQwenImage``);
3. the download manager's sidecar beside the file (``.civitai.info`` and the like: the Civitai
   base model it was filed under, :mod:`modelsafe.registry.sidecars`).

The first of them naming a family the component serves decides (a family that decodes with it
but is not one of the tied ones, such as ``sd2`` or ``z-image``, becomes the component's family).
Nothing is guessed from the file's name.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from modelsafe.registry.detect.metadata_family import family_from_metadata
from modelsafe.types import TensorIndex

# Diffusers VAE classes whose name says the family of a layout two families share.
_VAE_CLASSES = {"AutoencoderKLWan": "wan", "AutoencoderKLQwenImage": "qwen-image"}


def said_family(index: TensorIndex, serves: Collection[str]) -> tuple[str, str] | None:
    """``(family, evidence)``: the family among ``serves`` the file's metadata, diffusers class
    or download-manager sidecar names (the first of them that names one), else None."""
    for read in (_from_metadata, _from_class, _from_sidecar):
        found = read(index)
        if found is not None and found[0] in serves:
            return found
    return None


def _from_metadata(index: TensorIndex) -> tuple[str, str] | None:
    return family_from_metadata(index.metadata)


def _from_class(index: TensorIndex) -> tuple[str, str] | None:
    name = index.extra.get("class_name")
    family = _VAE_CLASSES.get(name) if isinstance(name, str) else None
    return (family, f"config.json _class_name={name!r}") if family else None


def _from_sidecar(index: TensorIndex) -> tuple[str, str] | None:
    """The family of the Civitai base model the file's sidecar names (a file given without a
    path, or whose sidecar cannot be read, has none)."""
    from modelsafe.registry.sidecars import read_sidecar

    try:
        path = Path(index.path)
        sidecar = read_sidecar(path) if path.name else None
    except (OSError, TypeError, ValueError):
        return None
    if sidecar is None or sidecar.family is None:
        return None
    return sidecar.family, (
        f"{sidecar.path.name} ({sidecar.tool}) files it under base model {sidecar.base_model!r}"
    )


def tied_scores(
    index: TensorIndex, families: tuple[str, ...], serves: Collection[str], score: float
) -> list[tuple[str, float, str | None]]:
    """``(family, score, why)`` for each of the tied ``families`` (at ``score``) and, when the
    file names one of the families the component ``serves``, that family at ``score + 0.05``
    (``why`` the evidence that decides the tie, None for the others)."""
    said = said_family(index, {*families, *serves})
    out: list[tuple[str, float, str | None]] = [(f, score, None) for f in families]
    if said is None:
        return out
    family, why = said
    decided = (family, round(score + 0.05, 3), f"{why}: decides the tie")
    return [decided, *[x for x in out if x[0] != family]]
