"""The released sizes of the families whose sizes differ by model width.

The width is a DiT's model width, the one the probes record as ``hidden_size`` (a FLUX.2
checkpoint's ``img_in`` output, a LoRA's input width on its attention layers). One table says
which released model a width of a family is: the probes name the size they find with it, and
the ``lora_width`` compatibility rule says which size a LoRA was trained for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSize:
    """One released size of a family: its variant (as a detection's ``variant``) and name."""

    variant: str  # "klein-4b"
    label: str  # "FLUX.2 [klein] 4B"


# (family, model width) -> the released size of that width (public layouts of the released
# models; Wan 2.2 A14B's two experts are each a Wan 14B transformer).
MODEL_SIZES: dict[tuple[str, int], ModelSize] = {
    ("flux2", 6144): ModelSize("dev", "FLUX.2 [dev]"),
    ("flux2", 3072): ModelSize("klein-4b", "FLUX.2 [klein] 4B"),
    ("flux2", 4096): ModelSize("klein-9b", "FLUX.2 [klein] 9B"),
    ("wan", 5120): ModelSize("14b", "Wan 14B"),
    ("wan", 1536): ModelSize("1.3b", "Wan 2.1 1.3B"),
    ("wan", 3072): ModelSize("ti2v-5b", "Wan 2.2 TI2V 5B"),
    ("sd3", 1536): ModelSize("medium", "SD3 medium"),
    ("sd3.5", 2432): ModelSize("large", "SD3.5 large"),
    ("sd3.5", 1536): ModelSize("medium", "SD3.5 medium"),
}


def model_size(family: str, width: object) -> ModelSize | None:
    """The released size of ``family`` that is ``width`` wide, or None (no such size, or no
    width known)."""
    return MODEL_SIZES.get((family, width)) if isinstance(width, int) else None


def model_width(family: str, variant: str) -> int:
    """The model width of ``family``'s released size ``variant`` (a size the table holds)."""
    for (name, width), size in MODEL_SIZES.items():
        if name == family and size.variant == variant:
            return width
    raise KeyError(f"no released size {variant!r} of {family!r}")


def family_widths(*families: str) -> tuple[int, ...]:
    """The model widths of every released size of ``families``, smallest first."""
    return tuple(sorted({width for name, width in MODEL_SIZES if name in families}))
