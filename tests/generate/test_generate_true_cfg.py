"""Flux.1's real CFG (``--true-cfg``): the negative prompt steers a Flux.1 image only with it,
the recipe records what ran, and an image made with it is made again from its PNG."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_generate_families import pixels, request_for

from modelsafe.errors import UsageError
from modelsafe.runtime.generate import generate, request_from_recipe
from modelsafe.runtime.recipe import recipe_from_parameters, recipe_from_png
from modelsafe.testing.tiny_models import Tiny


def test_true_cfg_applies_the_negative_prompt_to_flux(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    t = tiny("flux1")
    plain = generate(request_for(t, t.single), tmp_path / "plain").images[0]
    # A negative prompt without real CFG does nothing on Flux.1: said, and not recorded.
    ignored = generate(request_for(t, t.single, negative_prompt="fog"), tmp_path / "ignored")
    assert any("--true-cfg" in w and "ignores the negative prompt" in w for w in ignored.warnings)
    assert ignored.images[0].recipe.negative_prompt == ""
    assert "Negative prompt" not in ignored.images[0].recipe.to_parameters()
    assert np.array_equal(pixels(plain.path), pixels(ignored.images[0].path))

    real = generate(
        request_for(t, t.single, negative_prompt="fog", true_cfg=4.0), tmp_path / "real"
    ).images[0]
    assert not np.array_equal(pixels(plain.path), pixels(real.path))  # it steered
    assert (real.recipe.true_cfg, real.recipe.negative_prompt) == (4.0, "fog")
    assert "Negative prompt: fog" in real.recipe.to_parameters()
    assert "CFG scale: 4, Distilled CFG Scale:" in real.recipe.to_parameters()
    # --from-image makes it again, from the JSON chunk and from the parameters text alone
    again = request_from_recipe(recipe_from_png(real.path))
    assert (again.true_cfg, again.negative_prompt) == (4.0, "fog")
    remade = generate(again, tmp_path / "again").images[0]
    assert np.array_equal(pixels(real.path), pixels(remade.path))


def test_true_cfg_without_a_negative_prompt_runs_against_an_empty_one(
    tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    # Forge runs real CFG against an empty negative prompt (its Flux images say "CFG scale: 3.5,
    # Distilled CFG Scale: 3.5" and no Negative prompt line), and so does diffusers: it is applied
    # and recorded, so that such an image is made again.
    flux = tiny("flux1")
    plain = generate(request_for(flux, flux.single), tmp_path / "plain").images[0]
    alone = generate(request_for(flux, flux.single, true_cfg=3.0), tmp_path / "alone")
    assert not any("true-cfg" in w for w in alone.warnings)
    made = alone.images[0]
    assert (made.recipe.true_cfg, made.recipe.negative_prompt) == (3.0, "")
    assert not np.array_equal(pixels(plain.path), pixels(made.path))
    text = made.recipe.to_parameters()
    assert "CFG scale: 3, Distilled CFG Scale:" in text and "Negative prompt" not in text
    read = recipe_from_parameters(text)  # (a parameters-only copy, as Forge writes it)
    assert (read.true_cfg, read.negative_prompt) == (3.0, "")
    remade = generate(
        replace(request_for(flux, flux.single), true_cfg=read.true_cfg), tmp_path / "again"
    )
    assert np.array_equal(pixels(made.path), pixels(remade.images[0].path))


def test_true_cfg_off_flux_is_said_and_dropped(tiny: Callable[[str], Tiny], tmp_path: Path) -> None:
    sd1 = tiny("sd1")
    other = generate(
        request_for(sd1, sd1.single, negative_prompt="fog", true_cfg=3.0), tmp_path / "sd1"
    )
    assert any("--true-cfg 3 is not applied to sd1" in w for w in other.warnings)
    assert other.images[0].recipe.true_cfg == 1.0
    assert other.images[0].recipe.negative_prompt == "fog"  # (SD1 reads it through --cfg)


@pytest.mark.parametrize("value", [0.5, 31.0, float("nan")])
def test_true_cfg_out_of_range_is_refused(
    value: float, tiny: Callable[[str], Tiny], tmp_path: Path
) -> None:
    t = tiny("flux1")
    with pytest.raises(UsageError, match="--true-cfg"):
        generate(request_for(t, t.single, negative_prompt="fog", true_cfg=value), tmp_path)
