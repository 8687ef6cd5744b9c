"""`modelsafe generate` end to end: JSON output, recipe in the PNG, catalog rows, --from-image
reproduces the pixels, and an unsafe pickle is refused before anything loads it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from modelsafe.testing.tiny_models import Tiny, tiny_lora_kohya


def _args(t: Tiny, db: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--catalog", str(db), "generate",
        "--checkpoint", str(t.single), "--family", "sd1",
        "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
        "--prompt", "a cat", "--negative", "dull", "--steps", "2",
        "--width", "32", "--height", "32", "--out", str(out), "--json", *extra,
    ]  # fmt: skip


def test_generate_records_and_reproduces(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.catalog.models import Output
    from modelsafe.runtime.recipe import recipe_from_png

    t = tiny("sd1")
    lora = tiny_lora_kohya(t.pipe.unet, tmp_path / "style.safetensors")
    db = tmp_path / "catalog.db"
    code, out, err = run_cli(
        *_args(t, db, tmp_path / "out", "--seed", "42", "--batch", "2", "--lora", f"{lora}:0.8")
    )
    assert code == 0, err
    images = json.loads(out)["images"]
    assert [i["seed"] for i in images] == [42, 43]
    first = Path(images[0]["path"])
    recipe = recipe_from_png(first)
    assert (recipe.seed, recipe.steps, recipe.negative_prompt) == (42, 2, "dull")
    assert recipe.loras[0].weight == 0.8 and recipe.loras[0].sha256
    catalog = open_catalog(db)
    with catalog.session() as session:
        rows = session.scalars(select(Output).order_by(Output.id)).all()
        assert [r.path for r in rows] == [str(Path(i["path"]).resolve()) for i in images]
        assert rows[0].recipe == recipe.to_json() and rows[0].sha256 == images[0]["sha256"]
    catalog.close()

    code, out, err = run_cli(
        "--catalog", str(db), "generate", "--from-image", str(images[1]["path"]),
        "--out", str(tmp_path / "again"), "--json",
    )  # fmt: skip
    assert code == 0, err
    again = json.loads(out)
    assert again["reproduces"]["identical_pixels"] is True
    assert again["images"][0]["seed"] == 43


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (os.getcwd, ())


def test_unsafe_pickle_is_refused_before_any_load(
    tiny: Callable[[str], Tiny], run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tiny("sd1")
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _Payload()}, bad)

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a model file was loaded before the audit refused it")

    import diffusers
    import safetensors.torch

    monkeypatch.setattr(torch, "load", never)
    monkeypatch.setattr(safetensors.torch, "load_file", never)
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_single_file", never)
    for extra in (["--checkpoint", str(bad)], ["--lora", f"{bad}:0.5"]):
        code, out, err = run_cli(*_args(t, tmp_path / "c.db", tmp_path / "o", *extra))
        assert code == 1, err
        assert "refusing to load" in err and "bad.ckpt" in err
        assert not list((tmp_path / "o").glob("*.png"))
