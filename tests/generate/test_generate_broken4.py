"""`generate` heeds what inspect finds about a download before the slow load: a file aria2 is
still filling is refused, a checkpoint whose data has a zero tail or zero holes (an unfinished
torrent) is warned of, and a VAE the detectors are unsure of the family of is still refused as a
VAE (not taken for a model of the family given)."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.runtime.generate import collect_warnings, identify_model
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models
from modelsafe.testing.tiny_models import Tiny

MiB = 1 << 20


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pipeline load fails the test (the file must be refused before it)."""
    import diffusers

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the pipeline was loaded before the file was refused")

    for cls in (diffusers.StableDiffusionPipeline, diffusers.FluxPipeline):
        monkeypatch.setattr(cls, "from_single_file", never)
        monkeypatch.setattr(cls, "from_pretrained", never)


@pytest.mark.usefixtures("no_load")
@pytest.mark.parametrize("family", [[], ["--family", "sd1"]], ids=["detected", "given"])
def test_a_checkpoint_aria2_is_still_filling_is_refused(
    run_cli: Any, tiny: Callable[[str], Tiny], tmp_path: Path, family: list[str]
) -> None:
    t = tiny("sd1")
    model = tmp_path / "sd15.safetensors"
    shutil.copyfile(t.single, model)
    (tmp_path / "sd15.safetensors.aria2").write_bytes(b"\0\1\0\0")
    code, _out, err = run_cli(
        "--catalog", str(tmp_path / "c.db"), "generate", "--checkpoint", str(model), *family,
        "--config-dir", str(t.configs), "--tokenizers", str(t.tokenizers), "--prompt", "a cat",
        "--steps", "1", "--width", "32", "--height", "32", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2, err
    assert "Traceback" not in err and "this is a bug" not in err
    assert "aria2 has not finished downloading it (sd15.safetensors.aria2 is beside it)" in err
    assert "let it finish, then generate again" in err
    assert not (tmp_path / "out").exists()


def test_zero_holes_of_an_unfinished_torrent_are_warned_of_before_the_load(
    tmp_path: Path,
) -> None:
    # a full-size SD1.5 checkpoint whose first and last pieces only were written
    path = write_safetensors(tmp_path / "sd15.safetensors", base_models.unet_checkpoint("sd1"))
    head = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    with path.open("r+b") as fh:
        for at in (head, path.stat().st_size - MiB):
            fh.seek(at)
            fh.write(random.Random(at).randbytes(MiB))
    with collect_warnings(None) as warnings:
        found = identify_model(path)
    assert (found.family, found.kind) == ("sd1", "checkpoint")
    [warning] = warnings
    assert warning.startswith("sd15.safetensors: ")
    assert "are zeros in 1 run of 1 MiB or more before its end" in warning
    assert "compare its sha256 with the source's" in warning


def test_a_zero_tail_is_warned_of_before_the_load(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "sd15.safetensors", base_models.unet_checkpoint("sd1"))
    with collect_warnings(None) as warnings:
        identify_model(path)
    assert [w for w in warnings if "the tensor data ends in 64 MiB or more of zeros" in w]


@pytest.mark.usefixtures("no_load")
def test_a_flux_vae_of_unsure_family_is_refused_as_a_vae(run_cli: Any, tmp_path: Path) -> None:
    # Flux.1's ae and SD3's VAE share their layout: identified at low confidence
    ae = write_safetensors(tmp_path / "ae.safetensors", base_models.ldm_vae(16, quant_conv=False))
    code, _out, err = run_cli(
        "--catalog", str(tmp_path / "c.db"), "generate", "--checkpoint", str(ae),
        "--prompt", "a cat", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2, err
    assert "Traceback" not in err and "cannot tell which model family" not in err
    assert "ae.safetensors is probably a vae" in err and "not a model to generate with" in err
    assert "--vae PATH" in err and "modelsafe inspect" in err
