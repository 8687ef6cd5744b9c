"""`generate --upscale MODEL`: tiny random-weight ESRGAN models (both key styles, compact) are
identified as upscalers, turn a 32x32 image into 128x128, the recipe and PNG say so and
round-trip, and a missing, wrong-kind or unsafe upscaler is a clear error before any load."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from modelsafe.runtime.recipe import recipe_from_png
from modelsafe.runtime.upscalers.select import upscale_image
from modelsafe.testing.tiny_models import Tiny, tiny_model
from modelsafe.testing.tiny_upscalers import (
    TINY,
    old_style,
    save,
    tiny_compact_state,
    tiny_rrdbnet_state,
    trunk_style,
)


@pytest.fixture(scope="module")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return tiny_model("sd1", tmp_path_factory.mktemp("tiny-upscale"))


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("upscalers")
    state = tiny_rrdbnet_state()
    return {
        "new": save(state, root / "4x-new.safetensors"),
        "old": save(old_style(state), root / "4x-old.safetensors"),
        "trunk": save(trunk_style(state), root / "4x-trunk.safetensors"),
        "ema": save({f"params_ema.{k}": v for k, v in state.items()}, root / "4x-ema.safetensors"),
        "compact": save(tiny_compact_state(), root / "4x-compact.safetensors"),
    }


def _args(t: Tiny, out: Path, *extra: str) -> list[str]:
    return [
        "generate", "--checkpoint", str(t.single), "--family", "sd1",
        "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers),
        "--prompt", "a cat", "--steps", "2", "--seed", "3",
        "--width", "32", "--height", "32", "--out", str(out), "--json", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("style", ["new", "old", "trunk", "ema", "compact"])
def test_tiny_upscalers_are_identified(
    upscalers: dict[str, Path], run_cli: Any, style: str
) -> None:
    code, out, err = run_cli("inspect", "--json", str(upscalers[style]))
    assert code == 0, err
    report = json.loads(out)
    assert (report["family"], report["kind"]) == ("any", "upscaler")
    assert report["facts"]["scale"] == 4
    arch = "real-esrgan-compact" if style == "compact" else "esrgan"
    assert report["facts"]["architecture"] == arch


def test_every_key_style_is_the_same_network(upscalers: dict[str, Path]) -> None:
    from modelsafe.runtime.upscalers.select import load_upscaler

    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    outs = {}
    for style in ("new", "old", "trunk", "ema"):
        model, scale = load_upscaler(upscalers[style])
        assert scale == 4
        with torch.no_grad():
            outs[style] = model(x)
    assert outs["new"].shape == (1, 3, 96, 160)
    assert outs["new"].std() > 0  # depends on the input
    for style in ("old", "trunk", "ema"):
        assert torch.equal(outs[style], outs["new"]), style
    image = Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), "RGB")
    assert upscale_image(image, upscalers["old"]).size == (160, 96)


@pytest.mark.parametrize(("unshuffle", "scale"), [(2, 2), (4, 1)])
def test_real_esrgan_pixel_unshuffle_models(
    tmp_path: Path, run_cli: Any, unshuffle: int, scale: int
) -> None:
    """Real-ESRGAN x2/x1: the input is pixel-unshuffled into conv_first (12 / 48 channels)."""
    config = replace(TINY, unshuffle=unshuffle)
    path = save(tiny_rrdbnet_state(config), tmp_path / f"x{scale}.safetensors")
    code, out, err = run_cli("inspect", "--json", str(path))
    assert code == 0, err
    assert json.loads(out)["facts"]["scale"] == scale
    image = Image.new("RGB", (40, 24), (200, 30, 90))
    assert upscale_image(image, path).size == (40 * scale, 24 * scale)


@pytest.mark.parametrize(
    ("unshuffle", "upsamples", "scale"), [(1, 2, 4), (1, 3, 8), (1, 1, 2), (2, 2, 2), (4, 2, 1)]
)
def test_esrgan_repository_naming_is_identified_and_runs(
    tmp_path: Path, run_cli: Any, unshuffle: int, upsamples: int, scale: int
) -> None:
    """BSRGAN / RealSR / RRDB_ESRGAN_x4 files (``RRDB_trunk``, ``trunk_conv``, ``upconvN``,
    ``HRconv``): an ESRGAN upscaler whose scale is 2 per upconv over the pixel-unshuffle folded
    into conv_first (12 input channels: x2, 48: x1), upscaling like the same weights in the
    BasicSR naming."""
    config = replace(TINY, unshuffle=unshuffle, upsamples=upsamples, blocks=1)
    state = tiny_rrdbnet_state(config, seed=scale)
    trunk = trunk_style(state)
    assert "RRDB_trunk.0.RDB1.conv1.weight" in trunk and "HRconv.weight" in trunk
    assert f"upconv{upsamples}.weight" in trunk and "conv_up1.weight" not in trunk
    old = save(trunk, tmp_path / f"{scale}x-bsrgan.safetensors")
    new = save(state, tmp_path / f"{scale}x-basicsr.safetensors")
    code, out, err = run_cli("inspect", "--json", str(old))
    assert code == 0, err
    report = json.loads(out)
    assert (report["family"], report["kind"]) == ("any", "upscaler")
    assert report["variant"] == f"esrgan x{scale}"
    facts = report["facts"]
    assert (facts["architecture"], facts["scale"], facts["naming"]) == (
        "esrgan",
        scale,
        "esrgan-trunk",
    )
    assert (facts["num_blocks"], facts["num_features"]) == (1, TINY.features)
    evidence = " | ".join(report["evidence"])
    assert "RRDB_trunk.N.RDB1..RDB3 (1 RRDB blocks)" in evidence, evidence
    assert f"{upsamples} nearest+conv upsampling layers" in evidence, evidence
    if unshuffle > 1:
        assert f"input pixel-unshuffled by {unshuffle}" in evidence, evidence
    from modelsafe.runtime.upscalers.select import load_upscaler

    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(scale))
    outs = []
    for path in (old, new):
        model, got = load_upscaler(path)
        assert got == scale
        with torch.no_grad():
            outs.append(model(x))
    assert outs[0].shape == (1, 3, 24 * scale, 40 * scale)
    assert outs[0].std() > 0  # depends on the input
    assert torch.equal(outs[0], outs[1])
    image = Image.new("RGB", (40, 24), (200, 30, 90))
    assert upscale_image(image, old).size == (40 * scale, 24 * scale)


def test_generate_upscales_with_an_esrgan_repository_file(
    sd1: Tiny, upscalers: dict[str, Path], run_cli: Any, tmp_path: Path
) -> None:
    """Once refused as "not an upscaler (not recognised)": the RRDB_trunk file now upscales the
    generated image to the same pixels as the same weights in the BasicSR naming."""
    pixels: dict[str, Any] = {}
    for style in ("trunk", "new"):
        code, out, err = run_cli(*_args(sd1, tmp_path / style, "--upscale", str(upscalers[style])))
        assert code == 0, err
        image = json.loads(out)["images"][0]
        assert image["recipe"]["upscaler"]["path"] == str(upscalers[style].resolve())
        with Image.open(image["path"]) as png:
            assert png.size == (128, 128)
            pixels[style] = np.asarray(png.convert("RGB"))
    assert pixels["new"].std() > 0  # not a blank image: the comparison says something
    assert np.array_equal(pixels["trunk"], pixels["new"])


def test_tiles_match_the_whole_image(
    upscalers: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelsafe.runtime.upscalers.select as select

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "RGB")
    whole = np.asarray(upscale_image(image, upscalers["compact"]))
    monkeypatch.setattr(select, "TILE", 16)
    monkeypatch.setattr(select, "TILE_PAD", 8)  # wider than the compact net's 4-conv field
    tiled = np.asarray(upscale_image(image, upscalers["compact"]))
    assert whole.shape == tiled.shape == (192, 192, 3)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_generate_upscales_records_and_reproduces(
    sd1: Tiny, upscalers: dict[str, Path], run_cli: Any, tmp_path: Path
) -> None:
    db = tmp_path / "c.db"
    code, out, err = run_cli("--catalog", str(db), "scan", str(upscalers["old"].parent))
    assert code == 0, err
    code, out, err = run_cli("--catalog", str(db), *_args(sd1, tmp_path / "plain"), "--seed", "3")
    assert code == 0, err
    plain = Path(json.loads(out)["images"][0]["path"])
    code, out, err = run_cli(
        "--catalog", str(db), *_args(sd1, tmp_path / "up", "--upscale", "4x-old")
    )  # by catalog name
    assert code == 0, err
    image = json.loads(out)["images"][0]
    path = Path(image["path"])
    with Image.open(path) as png, Image.open(plain) as small:
        assert png.size == (128, 128) and small.size == (32, 32)
        text = dict(png.text)  # type: ignore[attr-defined]
    recipe = recipe_from_png(path)
    assert (recipe.width, recipe.height, recipe.upscale_scale) == (32, 32, 4)
    assert recipe.upscaler is not None and recipe.upscaler.name == "4x-old"
    assert recipe.upscaler.path == str(upscalers["old"].resolve())
    assert recipe.upscaler.autov2 == recipe.upscaler.sha256[:10]  # type: ignore[index]
    assert (
        f"Postprocess upscaler: 4x-old, Postprocess upscaler hash: {recipe.upscaler.autov2}"
        in (text["parameters"])
    )
    assert "Postprocess upscale by: 4" in text["parameters"]
    assert recipe_from_png(plain).upscaler is None

    code, out, err = run_cli(
        "--catalog", str(db), "generate", "--from-image", str(path),
        "--out", str(tmp_path / "again"), "--json",
    )  # fmt: skip
    assert code == 0, err
    again = json.loads(out)
    assert again["reproduces"]["identical_pixels"] is True
    assert again["images"][0]["sha256"] == image["sha256"]  # the same recipe, the same file
    assert again["images"][0]["recipe"]["upscaler"]["sha256"] == recipe.upscaler.sha256

    prefix = recipe.upscaler.autov2 or ""
    code, out, err = run_cli(
        "--catalog", str(db), *_args(sd1, tmp_path / "hash", "--upscale", prefix[:8])
    )  # by hash prefix: the same model, the same pixels
    assert code == 0, err
    assert json.loads(out)["images"][0]["sha256"] == image["sha256"]


def test_python_api_with_a_compact_upscaler(
    sd1: Tiny, upscalers: dict[str, Path], tmp_path: Path
) -> None:
    from modelsafe.runtime.generate import GenerateRequest, generate

    request = GenerateRequest(
        checkpoint=sd1.single,
        prompt="a cat",
        family="sd1",
        config_dir=sd1.configs,
        tokenizers=sd1.tokenizers,
        steps=2,
        seed=3,
        width=32,
        height=32,
        upscale=upscalers["compact"],
    )
    (image,) = generate(request, tmp_path).images
    with Image.open(image.path) as png:
        assert png.size == (128, 128)
    assert image.recipe.upscaler is not None and image.recipe.upscale_scale == 4


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (os.getcwd, ())


def test_bad_upscalers_are_refused_before_any_load(
    sd1: Tiny,
    upscalers: dict[str, Path],
    run_cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import modelsafe.runtime.diffusers_loader as loader

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a model was loaded before the upscaler was refused")

    monkeypatch.setattr(loader, "load_pipeline", never)
    unsafe = tmp_path / "4x-evil.pth"
    torch.save({"params_ema": tiny_rrdbnet_state(), "x": _Payload()}, unsafe)
    cases = [
        (str(tmp_path / "nope.pth"), 2, "does not exist"),
        (str(sd1.single), 2, "is not an upscaler"),
        (str(unsafe), 1, "refusing to load"),
    ]
    db = tmp_path / "c.db"
    code, _out, err = run_cli("--catalog", str(db), "scan", str(sd1.single))
    assert code == 0, err
    cases += [
        ("no-such-model", 2, "no upscaler 'no-such-model': it is not a file"),
        (sd1.single.stem, 2, "is not an upscaler (the catalog says kind"),
    ]
    for ref, exit_code, message in cases:
        code, _out, err = run_cli(
            "--catalog", str(db), *_args(sd1, tmp_path / "o", "--upscale", ref)
        )
        assert code == exit_code, err
        assert message in err, err
    assert not list((tmp_path / "o").glob("*.png"))


def test_a_safe_pickle_upscaler_is_loaded_weights_only(
    sd1: Tiny, run_cli: Any, tmp_path: Path
) -> None:
    pth = tmp_path / "4x-legacy.pth"
    torch.save({"params_ema": tiny_rrdbnet_state()}, pth)
    code, out, err = run_cli(*_args(sd1, tmp_path / "o", "--upscale", str(pth)))
    assert code == 0, err
    with Image.open(json.loads(out)["images"][0]["path"]) as png:
        assert png.size == (128, 128)


def test_an_upscaler_swapped_after_its_audit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its weights are read right after its own audit; a file renamed over it in between (an
    unaudited file's weights) is refused, as generate's other inputs are."""
    from modelsafe.errors import UnsafeFileError
    from modelsafe.runtime import generate
    from modelsafe.runtime.upscalers import select

    path = save(tiny_rrdbnet_state(), tmp_path / "4x.safetensors")
    other = save(tiny_rrdbnet_state(), tmp_path / "other.safetensors")
    real = generate.refuse_unsafe

    def then_swap(paths: Any) -> Any:
        audited = real(paths)
        os.replace(other, path)
        return audited

    monkeypatch.setattr(generate, "refuse_unsafe", then_swap)
    monkeypatch.setattr(select, "_LOADED", {})
    with pytest.raises(UnsafeFileError, match="changed after it was audited"):
        select.read_weights(path)
