"""`modelsafe resolve` and `modelsafe plan` end to end on real files (exit codes, JSON, text).

Family detection belongs to the detector plugins; until they identify these layouts, a test-only
detector names each file's family/kind from its file name (``sd1__checkpoint.safetensors``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rr_layouts as L

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.testing import fresh_plugin_manager, invoke, write_safetensors
from modelsafe.types import Candidate


class _NameDetector:
    __name__ = "rr_name_detector"

    @hookimpl
    def modelsafe_identify(self, index: Any) -> Candidate | None:
        stem = Path(str(index.path)).name.split(".")[0]
        if "__" not in stem:
            return None
        family, kind = stem.split("__")[:2]
        return Candidate(family, kind, 0.31, ("test: named by file",), detector="rr_name_detector")


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Any]:
    with fresh_plugin_manager(_NameDetector()):
        yield invoke


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    mods = L.diffusers_modules("UNet2DConditionModel", **L.SD1_UNET_CONFIG)
    ldm = {
        n[22:-7]: sh
        for n, _d, sh in L.sdxl_checkpoint()
        if n.startswith("model.diffusion_model.") and n.endswith(".weight") and len(sh) >= 2
    }
    made = {
        "ckpt": write_safetensors(tmp_path / "sd1__checkpoint.safetensors", L.sd1_checkpoint()),
        "lora": write_safetensors(
            tmp_path / "sd1__lora.safetensors",
            L.lora_specs(mods, style="kohya", prefix="lora_unet"),
        ),
        "xl": write_safetensors(
            tmp_path / "sdxl__lora.safetensors",
            L.lora_specs(ldm, style="kohya", prefix="lora_unet"),
        ),
        "vae16": write_safetensors(tmp_path / "flux1__vae.safetensors", L.vae(16, prefix="")),
        "ti": write_safetensors(
            tmp_path / "sd1__embedding.safetensors", [("emb_params", "F32", (2, 768))]
        ),
    }
    return {k: str(v) for k, v in made.items()}


def test_resolve_all_compatible_exit_0(cli: Any, files: dict[str, str]) -> None:
    code, out, err = cli(
        "resolve", files["ckpt"], "--lora", files["lora"] + ":0.8", "--embedding", files["ti"]
    )
    assert code == 0, out + err
    assert "LoRA keys map onto this UNet" in out and "embedding width 768 fits clip_l" in out
    assert "compatible" in out.splitlines()[-1]


@pytest.mark.parametrize(("tail", "words"), [("nan", "not a finite"), ("abc", "not a number")])
def test_resolve_refuses_a_lora_weight_that_is_no_number(
    cli: Any, files: dict[str, str], tail: str, words: str
) -> None:
    code, out, err = cli("resolve", files["ckpt"], "--lora", f"{files['lora']}:{tail}")
    assert code == 2 and out == ""
    assert f"weight '{tail}' is {words}" in err and "Traceback" not in err


def test_resolve_rejects_json_exit_1(cli: Any, files: dict[str, str]) -> None:
    code, out, _ = cli(
        "resolve", files["ckpt"], "--lora", files["xl"], "--vae", files["vae16"], "--json"
    )
    assert code == 1
    data = json.loads(out)
    assert data["compatible"] is False
    by_ref = {p["ref"]: p for p in data["parts"]}
    assert by_ref[files["xl"]]["status"] == "rejected"
    reasons = [r["reason"] for r in by_ref[files["vae16"]]["reasons"]]
    assert "VAE latent channels 16 != 4 of the checkpoint" in reasons


def test_resolve_unreadable_exit_2_without_traceback(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("resolve", str(tmp_path / "nope.safetensors"))
    assert code == 2 and "Traceback" not in err and "does not exist" in err


def test_plan_text_and_json(cli: Any, files: dict[str, str]) -> None:
    code, out, err = cli(
        "plan", files["ckpt"], "--lora", files["lora"], "--vram", "4GiB", "--resolution", "512x512"
    )
    assert code == 0, out + err
    for phase in ("text_encoding", "denoising", "decode"):
        assert phase in out
    code, out, _ = cli(
        "plan",
        files["ckpt"],
        "--vram",
        "300MiB",
        "--resolution",
        "1024x1024",
        "--batch",
        "2",
        "--json",
    )
    data = json.loads(out)
    assert code == 1 and data["fits"] is False and data["suggestions"]


def test_plan_budget_from_config(cli: Any, files: dict[str, str], monkeypatch: Any) -> None:
    code, _, err = cli("plan", files["ckpt"])
    assert code == 2 and "no VRAM budget" in err
    monkeypatch.setenv("MODELSAFE_VRAM", "6GiB")
    code, out, _ = cli("plan", files["ckpt"], "--json")
    assert code == 0 and json.loads(out)["budget"] == 6 * 1024**3


def test_python_api_equals_cli(cli: Any, files: dict[str, str]) -> None:
    import modelsafe.runtime
    from modelsafe.runtime import resolve

    result = resolve(files["ckpt"], loras=[(files["lora"], 0.8)])
    assert result.compatible and result.parts[0].weight == 0.8
    again = modelsafe.runtime.resolve(files["ckpt"], loras=[files["lora"] + ":0.8"])
    assert again.as_json() == result.as_json()
    _, out, _ = cli("resolve", files["ckpt"], "--lora", files["lora"] + ":0.8", "--json")
    assert json.loads(out) == result.as_json()
    p = modelsafe.runtime.plan(files["ckpt"], vram="8GiB")
    assert p.fits and p.width == 512
