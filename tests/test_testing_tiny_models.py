"""The tiny-model factory plugin authors use: one call gives a model that generates on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelsafe.runtime.generate import GenerateRequest, generate
from modelsafe.testing.tiny_models import FAMILIES, tiny_model


def test_tiny_model_generates_as_the_docs_show(tmp_path: Path) -> None:
    t = tiny_model("sd1", tmp_path / "models")
    assert (t.folder / "model_index.json").is_file() and t.single.stat().st_size < 10_000_000
    request = GenerateRequest(
        checkpoint=t.single,
        prompt="a cat",
        seed=1,
        steps=2,
        width=32,
        height=32,
        family=t.base_family,  # tiny widths do not match the real family's: say it
        tokenizers=t.tokenizers,
        config_dir=t.configs,
    )
    image = generate(request, tmp_path / "out").images[0]
    assert image.path.is_file() and image.recipe.family == "sd1"


def test_unknown_family_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sd3.5-medium"):
        tiny_model("pixart", tmp_path)
    assert "flux1-schnell" in FAMILIES
