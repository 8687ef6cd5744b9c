"""Every family generates on CPU from a diffusers folder and from single files, identically,
and the same seed gives the same pixels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelsafe.runtime.generate import GenerateRequest, generate
from modelsafe.testing.tiny_models import Tiny


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def request_for(t: Tiny, path: Path, **changes: object) -> GenerateRequest:
    family = t.base_family
    parts = {} if path.is_dir() else {k: v for k, v in t.parts.items() if k != "vae"}
    base = GenerateRequest(
        checkpoint=path,
        prompt="a cat",
        seed=7,
        steps=2,
        width=32,
        height=32,
        family=family,
        tokenizers=t.tokenizers,
        config_dir=t.configs,
        vae=None if path.is_dir() else t.parts.get("vae"),
        text_encoders=parts,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "family", ["sd1", "sd2", "sdxl", "sd3", "sd3.5-large", "sd3.5-medium", "flux1", "flux1-schnell"]
)
def test_family_folder_and_single_file_agree(
    family: str, tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    t = tiny(family)
    from_folder = generate(request_for(t, t.folder), tmp_path / "a").images[0]
    from_file = generate(request_for(t, t.single), tmp_path / "b").images[0]
    a, b = pixels(from_folder.path), pixels(from_file.path)
    assert a.shape == (32, 32, 3) and a.std() > 1  # a real image, not a blank
    assert np.array_equal(a, b)
    recipe = from_file.recipe
    assert recipe.family == t.base_family
    assert recipe.checkpoint.sha256 and recipe.checkpoint.autov2 == recipe.checkpoint.sha256[:10]
    if family == "flux1-schnell":
        assert (recipe.variant, recipe.cfg) == ("schnell", 0.0)
    if t.base_family == "sd3.5":
        assert recipe.variant == t.variant  # large / medium told apart from the weights
    if family == "sd2":
        assert recipe.prediction_type == "v_prediction"


def test_seeds_reproduce_and_batches_use_per_image_seeds(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    t = tiny("sd1")
    batch = generate(request_for(t, t.single, seed=100, batch_size=2), tmp_path / "batch").images
    assert [i.seed for i in batch] == [100, 101]
    again = generate(request_for(t, t.single, seed=100), tmp_path / "again").images[0]
    assert np.array_equal(
        pixels(again.path),
        pixels(generate(request_for(t, t.single, seed=100), tmp_path / "third").images[0].path),
    )
    # image 2 of the batch is exactly the image of its own seed alone (each image is its own
    # pipeline call: CPU matmuls of a different batch shape differ in the low bits)
    alone = generate(request_for(t, t.single, seeds=(101,)), tmp_path / "alone").images[0]
    assert np.array_equal(pixels(alone.path), pixels(batch[1].path))
    assert not np.array_equal(pixels(batch[0].path), pixels(batch[1].path))


def test_sd2_prediction_type_is_honoured(tiny: Callable[[str], Tiny], tmp_path: Path) -> None:
    t = tiny("sd2")
    v = generate(request_for(t, t.single), tmp_path / "v").images[0]
    eps = generate(request_for(t, t.single, prediction_type="epsilon"), tmp_path / "e").images[0]
    assert v.recipe.prediction_type == "v_prediction"
    assert eps.recipe.prediction_type == "epsilon"
    assert not np.array_equal(pixels(v.path), pixels(eps.path))
