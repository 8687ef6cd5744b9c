"""A .ckpt and the .safetensors converted from it are one model with two locations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def test_ckpt_and_its_safetensors_are_one_model(
    tmp_path: Path,
    scan_json: Callable[..., dict[str, Any]],
    cli_json: Callable[..., Any],
) -> None:
    torch = pytest.importorskip("torch")
    from modelsafe.registry.convert import convert_file

    lib = tmp_path / "lib"
    lib.mkdir()
    gen = torch.Generator().manual_seed(0)
    state = {
        "emb_params": torch.randn(4, 768, generator=gen),
        "layer.weight": torch.randn(16, 8, generator=gen).to(torch.float16),
    }
    ckpt = lib / "model.ckpt"
    torch.save(state, ckpt)
    convert_file(ckpt, lib / "model.safetensors")

    summary = scan_json(str(lib))
    assert summary["errors"] == 0, summary
    models = cli_json("ls")
    assert len(models) == 1, models
    shown = cli_json("show", models[0]["name"])
    paths = sorted(Path(loc["path"]).name for loc in shown["locations"])
    assert paths == ["model.ckpt", "model.safetensors"]
    assert shown["hashes"]["content_id"]
