"""What download managers write beside a model file (Civitai Helper's ``.civitai.info``,
Stability Matrix's ``.cm-info.json``, ComfyUI-Lora-Manager's ``.metadata.json``, A1111's
``.json``): reported as ``facts.civitai``, with a warning where the file disagrees (family,
size, SHA-256)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.sidecars import family_of_base_model
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts.adapters import kohya_lora, sd1_unet_modules, sdxl_unet_modules

RunCli = Callable[..., tuple[int, str, str]]


def sd1_lora(path: Path) -> Path:
    specs = kohya_lora([("lora_unet_", sd1_unet_modules())], rank=4)
    return write_safetensors(path, specs, {}, data="random", seed=1)


def sdxl_lora(path: Path) -> Path:
    specs = kohya_lora([("lora_unet_", sdxl_unet_modules())], rank=2)
    return write_safetensors(path, specs, {}, data="random", seed=2)


def civitai_info(model: Path, base: str, *, size: int | None = None, sha256: str = "") -> Path:
    """A ``.civitai.info`` as Civitai Helper writes it (the API's model version)."""
    size = model.stat().st_size if size is None else size
    sha256 = sha256 or hashlib.sha256(model.read_bytes()).hexdigest()
    version = {
        "id": 62833,
        "modelId": 58390,
        "name": "v1.0",
        "baseModel": base,
        "trainedWords": ["detailed", " sharp "],
        "model": {"name": "Detail Tweaker", "type": "LORA", "nsfw": False},
        "files": [
            {"name": "notes.zip", "sizeKB": 3.5, "type": "Training Data", "hashes": {}},
            {
                "name": model.name,
                "sizeKB": size / 1024,
                "type": "Model",
                "primary": True,
                "hashes": {"AutoV2": sha256[:10].upper(), "SHA256": sha256.upper()},
            },
        ],
    }
    path = model.with_name(model.name.rsplit(".", 1)[0] + ".civitai.info")
    path.write_text(json.dumps(version), encoding="utf-8")
    return path


def inspect_json(run_cli: RunCli, path: Path, *extra: str) -> dict[str, Any]:
    code, out, err = run_cli("inspect", str(path), "--json", *extra)
    assert code == 0, err
    return dict(json.loads(out))


def test_a_matching_sidecar_gives_facts_and_no_warning(tmp_path: Path, run_cli: RunCli) -> None:
    lora = sd1_lora(tmp_path / "detail.safetensors")
    civitai_info(lora, "SD 1.5")
    report = inspect_json(run_cli, lora, "--hash")
    assert report["warnings"] == []
    civitai = report["facts"]["civitai"]
    assert civitai["base_model"] == "SD 1.5" and civitai["family"] == "sd1"
    assert (civitai["model_name"], civitai["version_name"]) == ("Detail Tweaker", "v1.0")
    assert (civitai["model_id"], civitai["version_id"]) == (58390, 62833)
    assert civitai["trained_words"] == ["detailed", "sharp"]
    code, out, _ = run_cli("inspect", str(lora))
    assert code == 0
    assert "civitai    Detail Tweaker / v1.0 (SD 1.5 LORA, version 62833)" in out
    assert "triggers   detailed, sharp" in out


def test_a_sidecar_that_disagrees_is_warned_of(tmp_path: Path, run_cli: RunCli) -> None:
    lora = sd1_lora(tmp_path / "detail.safetensors")
    size = lora.stat().st_size
    civitai_info(lora, "SDXL 1.0", size=size + 4096, sha256="ab" * 32)
    plain = inspect_json(run_cli, lora)["warnings"]
    assert any("lists this file as SDXL 1.0, but its tensors are sd1" in w for w in plain)
    assert any(f"the file has {size:,} bytes, shorter than the {size + 4096:,}" in w for w in plain)
    assert not any("SHA-256" in w for w in plain)  # (only when the file is hashed)
    hashed = inspect_json(run_cli, lora, "--hash")["warnings"]
    assert any("is not the ababababab... detail.civitai.info" in w for w in hashed)


@pytest.mark.parametrize("base", ["Pony", "Illustrious", "NoobAI", "SDXL 1.0", "SDXL Lightning"])
def test_sdxl_derived_base_models_fit_an_sdxl_file(
    tmp_path: Path, run_cli: RunCli, base: str
) -> None:
    lora = sdxl_lora(tmp_path / "style.safetensors")
    civitai_info(lora, base)
    assert inspect_json(run_cli, lora)["warnings"] == []


def test_scan_warns_from_stability_matrix_and_lora_manager_sidecars(
    tmp_path: Path, run_cli: RunCli
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    matrix = sd1_lora(lib / "a.safetensors")
    (lib / "a.cm-info.json").write_text(
        json.dumps(
            {
                "ModelId": 1,
                "ModelName": "A",
                "VersionId": 2,
                "BaseModel": "SD 1.5",
                "ModelType": "LORA",
                "TrainedWords": ["aa"],
                "Hashes": {"SHA256": "CD" * 32, "BLAKE3": "00"},
            }
        )
    )
    manager = sdxl_lora(lib / "b.safetensors")
    (lib / "b.metadata.json").write_text(
        json.dumps(
            {
                "file_name": "b",
                "model_name": "B",
                "size": manager.stat().st_size,
                "sha256": hashlib.sha256(manager.read_bytes()).hexdigest(),
                "base_model": "Flux.1 D",
                "civitai": {"id": 5, "modelId": 4, "trainedWords": ["bb"], "model": {}},
            }
        )
    )
    catalog = f"sqlite:///{tmp_path / 'c.db'}"
    code, out, err = run_cli("--catalog", catalog, "scan", str(lib), "--json")
    assert code == 0, err
    warnings = {(Path(w["path"]).name, w["warning"]) for w in json.loads(out)["warnings"]}
    assert any(
        name == matrix.name and "a.cm-info.json (Stability Matrix)" in text and "SHA-256" in text
        for name, text in warnings
    ), warnings
    assert any(
        name == manager.name and "lists this file as Flux.1 D, but its tensors are sdxl" in text
        for name, text in warnings
    ), warnings
    assert len(warnings) == 2, warnings
    code, out, _ = run_cli("--catalog", catalog, "show", "b", "--json")
    facts = json.loads(out)["inspect"]["facts"]["civitai"]
    assert facts["tool"] == "ComfyUI-Lora-Manager" and facts["trained_words"] == ["bb"]


def test_a1111_user_metadata_and_sidecars_that_are_not_ones(
    tmp_path: Path, run_cli: RunCli
) -> None:
    lora = sd1_lora(tmp_path / "x.safetensors")
    (tmp_path / "x.json").write_text(json.dumps({"sd version": "SDXL", "activation text": "x1"}))
    report = inspect_json(run_cli, lora)
    assert report["facts"]["civitai"]["trained_words"] == ["x1"]
    assert any("lists this file as SDXL, but its tensors are sd1" in w for w in report["warnings"])
    # Another tool's JSON under the stem, a broken sidecar, a huge one: passed over, no warning.
    (tmp_path / "x.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (tmp_path / "x.civitai.info").write_text("{not json")
    (tmp_path / "x.cm-info.json").write_bytes(b" " * (9 << 20) + b"{}")
    report = inspect_json(run_cli, lora)
    assert "civitai" not in report["facts"] and report["warnings"] == []


@pytest.mark.parametrize(
    ("base", "family"),
    [
        ("SD 1.5 LCM", "sd1"),
        ("SD 2.1 768", "sd2"),
        ("SD 2.1 Unclip", None),
        ("Pony V7", None),
        ("SD 3.5 Medium", "sd3.5"),
        ("Flux.1 Kontext", "flux1"),
        ("Flux.2 Klein 4B", "flux2"),
        ("Wan Video 2.2 TI2V-5B", "wan"),
        ("Hunyuan 1", None),
        ("Other", None),
        ("", None),
    ],
)
def test_civitai_base_model_names(base: str, family: str | None) -> None:
    assert family_of_base_model(base) == family


def test_a_fifo_or_broken_sidecar_is_passed_over(tmp_path: Path, run_cli: RunCli) -> None:
    """A FIFO named as a sidecar is never opened for reading (it would block forever), and
    out-of-place values (an infinite sizeKB, files not a list) do not stop inspect or generate's
    trigger-word check."""
    import os

    from modelsafe.runtime.generate import _warn_of_missing_trigger, collect_warnings

    lora = sd1_lora(tmp_path / "x.safetensors")
    os.mkfifo(tmp_path / "x.civitai.info")
    assert "civitai" not in inspect_json(run_cli, lora)["facts"]
    (tmp_path / "x.civitai.info").unlink()
    for broken in ('{"baseModel": "SD 1.5", "files": [{"sizeKB": 1e400}]}', '{"files": 5}'):
        (tmp_path / "x.civitai.info").write_text(broken)
        report = inspect_json(run_cli, lora)
        assert not any("bytes" in w for w in report["warnings"]), report["warnings"]
        with collect_warnings(None) as found:
            _warn_of_missing_trigger(lora, "a cat")
        assert found == []


def test_a_version_s_other_file_saved_under_this_name_is_no_damaged_download(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """The pruned fp16 file of a version saved as the full file's name: its size and SHA-256
    are another listed file's, so neither is warned of."""
    lora = sd1_lora(tmp_path / "x.safetensors")
    size, sha256 = lora.stat().st_size, hashlib.sha256(lora.read_bytes()).hexdigest()
    version = {
        "baseModel": "SD 1.5",
        "files": [
            {"name": "x.safetensors", "sizeKB": 2 * size / 1024, "hashes": {"SHA256": "ab" * 32}},
            {"name": "x_pruned.safetensors", "sizeKB": size / 1024, "hashes": {"SHA256": sha256}},
        ],
    }
    (tmp_path / "x.civitai.info").write_text(json.dumps(version))
    assert inspect_json(run_cli, lora, "--hash")["warnings"] == []
