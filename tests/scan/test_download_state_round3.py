"""Downloads caught half-way, as a red-teamer left them (round 3), one test per defect.

Each case once went wrong: a file aria2 was still filling was "truncated ...
download it again" as soon as it did not parse; `audit` called folders SAFE that `inspect` could
not load (a shard missing, an index that is not JSON or names the wrong shard, a pipeline
component without weights); shards fetched without their index were catalogued as whole, safe
models; `audit` of a `.part` / `.crdownload` said "download it again" where `inspect` says "let it
finish"; Firefox's empty placeholder beside `NAME.part` was an interrupted download and an ERROR
row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors

Cli = Callable[..., tuple[int, str, str]]
Scan = Callable[..., dict[str, Any]]


def _cut_safetensors(path: Path) -> Path:
    """A safetensors file whose download stopped half-way through its data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    specs = [(f"lora_unet_{i}.lora_up.weight", "F16", (64, 64)) for i in range(4)]
    write_safetensors(path, specs, data="random", seed=1)
    os.truncate(path, path.stat().st_size // 2)
    return path


def _cut_torch_zip(path: Path) -> Path:
    """A torch zip checkpoint cut short: no end-of-central-directory record."""
    torch = pytest.importorskip("torch")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"w{i}": torch.ones(64, 64) for i in range(4)}, path)
    os.truncate(path, path.stat().st_size // 2)
    return path


def _error(err: str) -> str:
    """The reason `modelsafe` printed (its ``Error: `` line), without the hint."""
    return next(line for line in err.splitlines() if line.startswith("Error: "))[len("Error: ") :]


# D2: a downloader's control file beside a file that does not parse yet ---------------------------


@pytest.mark.parametrize(("suffix", "tool"), [(".aria2", "aria2")])
@pytest.mark.parametrize("make", [_cut_safetensors, _cut_torch_zip], ids=["safetensors", "zip"])
def test_a_file_a_downloader_still_fills_is_named_so_when_it_does_not_read(
    tmp_path: Path,
    run_cli: Cli,
    scan_json: Scan,
    suffix: str,
    tool: str,
    make: Callable[[Path], Path],
) -> None:
    lib = tmp_path / "lib"
    path = make(lib / "lora.pt")
    (lib / f"lora.pt{suffix}").write_bytes(b"\xc0\x00control")
    said = f"{tool} has not finished downloading it (lora.pt{suffix} is beside it)"

    code, _out, err = run_cli("inspect", str(path))
    assert code == 2
    assert said in _error(err) and "Hint: let it finish, then inspect again" in err
    assert "download it again" not in err
    code, out, _err = run_cli("inspect", str(path), "--json")
    error = json.loads(out)["error"]
    assert code == 2 and said in error["reason"]
    assert error["hint"] == "let it finish, then inspect again"

    code, out, _err = run_cli("audit", str(path))
    assert code == 2 and f"{said}: let it finish, then audit again" in out
    assert "download it again" not in out and "truncated" not in out

    summary = scan_json(str(lib))
    [failed] = summary["error_files"]
    assert failed["path"] == str(path) and said in failed["reason"]


# D3: audit of a folder that cannot be loaded -----------------------------------------------------


def _sharded(folder: Path, shards: int = 3) -> list[Path]:
    """A sharded component folder as the hub has it: config.json, the index, the shards."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map, paths = {}, []
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        paths.append(write_safetensors(folder / name, [(f"blocks.{i}.w", "BF16", (16, 16))]))
        weight_map[f"blocks.{i}.w"] = name
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text('{"_class_name": "FluxTransformer2DModel"}')
    return paths


def _break(how: str, root: Path) -> Path:
    folder = root / how / "transformer"
    shards = _sharded(folder)
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if how == "shard-missing":
        shards[2].unlink()
    elif how == "index-names-a-tensor-no-shard-has":
        data = json.loads(index.read_text())
        data["weight_map"]["blocks.9.w"] = shards[1].name
        index.write_text(json.dumps(data))
    elif how == "index-names-the-wrong-shard":
        data = json.loads(index.read_text())
        data["weight_map"]["blocks.0.w"] = shards[2].name
        index.write_text(json.dumps(data))
    elif how == "index-not-json":
        index.write_text(index.read_text()[:40])
    else:  # a pipeline whose unet has its config.json but no weights
        folder = root / how / "sd15"
        folder.mkdir(parents=True)
        declared = {"_class_name": "StableDiffusionPipeline"}
        (folder / "model_index.json").write_text(
            json.dumps({**declared, "unet": ["diffusers", "UNet2DConditionModel"]})
        )
        (folder / "unet").mkdir()
        (folder / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    return folder


@pytest.mark.parametrize(
    "how",
    [
        "shard-missing",
        "index-names-a-tensor-no-shard-has",
        "index-names-the-wrong-shard",
        "index-not-json",
        "unet-without-weights",
    ],
)
def test_audit_of_a_folder_that_cannot_load_is_an_error_with_inspects_reason(
    tmp_path: Path, run_cli: Cli, how: str
) -> None:
    whole = _sharded(tmp_path / "whole" / "transformer")[0].parent
    code, out, err = run_cli("audit", str(whole))
    assert code == 0 and out.startswith("SAFE"), out + err  # a complete folder stays safe

    folder = _break(how, tmp_path)
    code, _out, err = run_cli("inspect", str(folder))
    assert code == 2
    reason = _error(err)
    code, out, _err = run_cli("audit", str(folder))
    assert code == 2 and out.startswith("ERROR"), out
    assert reason in out


# D4: shards fetched without their index ----------------------------------------------------------


def test_shards_without_their_index_are_not_whole_models(
    tmp_path: Path, run_cli: Cli, scan_json: Scan
) -> None:
    lib = tmp_path / "lib"
    # two shards of three, fetched one by one into Downloads/ (no index, no config.json)
    loose = _sharded(lib / "Downloads")
    loose[2].unlink()
    (lib / "Downloads" / "diffusion_pytorch_model.safetensors.index.json").unlink()
    (lib / "Downloads" / "config.json").unlink()
    # a component folder with its config and two shards, but no index
    no_index = _sharded(lib / "flux" / "transformer")
    no_index[2].unlink()
    (lib / "flux" / "transformer" / "diffusion_pytorch_model.safetensors.index.json").unlink()
    # a component folder whose index is not JSON (cut short)
    _break("index-not-json", lib)
    # a complete set with its index and no config.json: one model (accelerate loads it so)
    _sharded(lib / "complete")
    (lib / "complete" / "config.json").unlink()

    summary = scan_json(str(lib))
    warned = {w["path"]: w["warning"] for w in summary["warnings"]}
    assert warned == {
        str(loose[0]): "shard 1 of 3 of diffusion_pytorch_model: the index and shard 00003 are "
        "missing; it is not a whole model",
        str(loose[1]): "shard 2 of 3 of diffusion_pytorch_model: the index and shard 00003 are "
        "missing; it is not a whole model",
    }
    reasons = {e["path"]: e["reason"] for e in summary["error_files"]}
    assert set(reasons) == {
        str(lib / "flux" / "transformer"),
        str(lib / "index-not-json" / "transformer"),
    }
    assert (
        "the index and shard 00003 are missing, so the model cannot be loaded"
        in (reasons[str(lib / "flux" / "transformer")])
    )
    assert "not valid JSON" in reasons[str(lib / "index-not-json" / "transformer")]
    assert summary["files"] == 2 + 2 + 1  # loose shards, two folders, the complete set

    code, out, err = run_cli("inspect", str(loose[1]), "--json")
    assert code == 0, err
    assert warned[str(loose[1])] in json.loads(out)["warnings"]


# D6: audit of a file whose name says it is still downloading -------------------------------------


@pytest.mark.parametrize(
    ("suffix", "what"),
    [
        (".part", "an unfinished Firefox, wget/curl or Transmission download"),
        (".crdownload", "an unfinished Chrome/Edge download"),
    ],
)
def test_audit_names_an_unfinished_download_as_inspect_does(
    tmp_path: Path, run_cli: Cli, suffix: str, what: str
) -> None:
    path = _cut_safetensors(tmp_path / f"lora.safetensors{suffix}")
    code, _out, err = run_cli("inspect", str(path))
    assert code == 2 and _error(err).endswith(what)
    code, out, _err = run_cli("audit", str(path))
    assert code == 2 and f"{what}: let it finish, then audit again" in out
    assert "download it again" not in out and "truncated" not in out


def test_a_folder_with_a_shard_still_downloading_says_so(tmp_path: Path, run_cli: Cli) -> None:
    folder = tmp_path / "transformer"
    shards = _sharded(folder)
    shards[2].rename(f"{shards[2]}.crdownload")
    os.truncate(f"{shards[2]}.crdownload", 100)
    code, out, _err = run_cli("audit", str(folder))
    assert code == 2
    assert "an unfinished Chrome/Edge download: let it finish, then audit again" in out
    assert "download it again" not in out
    code, _out, err = run_cli("inspect", str(folder))
    assert code == 2 and f"shard '{shards[2].name}' is still downloading" in _error(err)
    assert "Hint: let it finish, then inspect again" in err


# D7: Firefox's empty placeholder beside NAME.part -------------------------------------------------


def test_firefoxs_empty_placeholder_is_a_download_in_progress(
    tmp_path: Path, run_cli: Cli, scan_json: Scan
) -> None:
    lib = tmp_path / "lib"
    _cut_safetensors(lib / "lora.safetensors.part")
    placeholder = lib / "lora.safetensors"
    placeholder.write_bytes(b"")
    said = "Firefox is still downloading it (lora.safetensors.part is beside it)"

    code, _out, err = run_cli("inspect", str(placeholder))
    assert code == 2 and _error(err) == f"{placeholder}: {said}"
    assert "Hint: let it finish, then inspect again" in err
    code, out, _err = run_cli("audit", str(placeholder))
    assert code == 2 and f"{said}: let it finish, then audit again" in out

    summary = scan_json(str(lib))
    assert summary["errors"] == 0 and summary["files"] == 0
    skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert skipped[str(placeholder)] == f"{said}: let it finish, then scan again"

    # an empty file with no .part beside it is still an interrupted download
    placeholder.with_suffix(".safetensors.part").unlink()
    code, _out, err = run_cli("inspect", str(placeholder))
    assert code == 2 and "the file is empty" in err
