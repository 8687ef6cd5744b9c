"""Downloads and folders as a red-teamer left them (round "downloads3"), one test per defect.

Each case once went wrong: two links back into a diffusers folder made `scan` hang, a sharded FLUX
transformer folder with a missing shard scanned clean (each shard a model of its own), an
in-place rewrite with its mtime put back was never read again, a 252-byte name crashed `inspect`,
a pipeline missing its transformer's weights was "present", `--json` failures left stdout empty,
browser temp names were ignored or read as truncated models, a newline in a name split a line of
text output, and `inspect --json` wrote a lone surrogate for a name that is not UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_scan_catalog import model_file, rows

from modelsafe.output import printable
from modelsafe.registry.analyse import analyse
from modelsafe.registry.walk import StatKey, walk
from modelsafe.testing import write_safetensors

Scan = Callable[..., dict[str, Any]]
Cli = Callable[..., tuple[int, str, str]]


_PART = "an unfinished Firefox, wget/curl or Transmission download: let it finish, then scan again"


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (the walk that once took forever)."""

    def _expired(*_: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def sharded(folder: Path, shards: int = 3, base: str = "diffusion_pytorch_model") -> list[Path]:
    """A sharded component folder as the hub has it: config.json, an index, the shards."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map, paths = {}, []
    for i in range(shards):
        name = f"{base}-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensors = [(f"blocks.{i}.to_q.weight", "BF16", (32, 32))]
        paths.append(write_safetensors(folder / name, tensors, data="random", seed=i))
        weight_map.update({t[0]: name for t in tensors})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / f"{base}.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text('{"_class_name": "FluxTransformer2DModel"}')
    return paths


def pipeline(root: Path, components: dict[str, str]) -> Path:
    declared = {name: ["diffusers", cls] for name, cls in components.items()}
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", **declared}))
    return root


# 1. HIGH: links back into a diffusers folder -----------------------------------------------


def test_links_back_into_a_diffusers_folder_are_loops_not_a_hang(
    tmp_path: Path, scan_json: Scan
) -> None:
    pipe = pipeline(tmp_path / "lib" / "pipe", {"unet": "UNet2DConditionModel"})
    (pipe / "unet").mkdir()
    (pipe / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    model_file(pipe / "unet" / "diffusion_pytorch_model.safetensors", seed=1)
    (pipe / "vae").mkdir()
    os.symlink("..", pipe / "unet" / "up")
    os.symlink("..", pipe / "vae" / "up")
    with deadline(60):
        walked = walk([tmp_path / "lib"])
        result = analyse(str(pipe), True)
        summary = scan_json(str(tmp_path / "lib"))
    assert [f.path for f in walked.found] == [str(pipe)]
    assert {(s.path, s.reason) for s in walked.skipped} == {
        (str(pipe / d / "up"), "symlink loop: leads back to a folder above it")
        for d in ("unet", "vae")
    }
    assert list(result.component_hashes) == ["unet/diffusion_pytorch_model.safetensors"]
    assert summary["files"] == 1 and summary["new"] == 1
    assert sorted(s["path"] for s in summary["skipped"]) == [
        str(pipe / "unet" / "up"),
        str(pipe / "vae" / "up"),
    ]


# 2. MED-HIGH: a sharded component folder is one model ---------------------------------------


def test_a_sharded_component_folder_is_one_model_and_a_missing_shard_an_error(
    tmp_path: Path, scan_json: Scan, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    missing = sharded(lib / "flux" / "transformer")
    missing[1].unlink()
    truncated = sharded(lib / "other" / "transformer")
    os.truncate(truncated[2], 100)
    sharded(lib / "t5" / "text_encoder_2", shards=2, base="model")
    # not a component folder: a config.json beside unrelated files (no index naming them)
    model_file(lib / "loras" / "a.safetensors", seed=7)
    model_file(lib / "loras" / "b.safetensors", seed=8)
    (lib / "loras" / "config.json").write_text("{}")

    summary = scan_json(str(lib))
    models, locations = rows(catalog_url)
    by_path = {loc.path: loc for loc in locations}
    assert sorted(Path(p).relative_to(lib).as_posix() for p in by_path) == [
        "flux/transformer",
        "loras/a.safetensors",
        "loras/b.safetensors",
        "other/transformer",
        "t5/text_encoder_2",
    ]
    assert summary["files"] == 5 and summary["errors"] == 2
    reasons = {
        Path(e["path"]).relative_to(lib).as_posix(): e["reason"] for e in summary["error_files"]
    }
    assert (
        "shard 'diffusion_pytorch_model-00002-of-00003.safetensors' is missing"
        in reasons["flux/transformer"]
    )
    assert "truncated" in reasons["other/transformer"]
    assert by_path[str(lib / "t5" / "text_encoder_2")].status == "present"


# 3. MED: ctime is part of the change key ------------------------------------------------------


def test_a_rewrite_that_puts_the_mtime_back_is_read_again(
    tmp_path: Path, scan_json: Scan, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    path = model_file(lib / "a.safetensors", seed=1)
    other = model_file(tmp_path / "other.safetensors", seed=2)
    first = scan_json(str(lib))
    assert first["new"] == 1
    before = os.stat(path)
    time.sleep(0.05)  # (file times tick at the kernel's clock granularity)
    path.write_bytes(other.read_bytes())  # same size, same inode
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert StatKey.of(after) != StatKey.of(before)  # only the ctime tells
    assert StatKey(1, 2, 3, 4) == StatKey(1, 2, 3, 4, 5)  # 0: not recorded, matches any
    again = scan_json(str(lib))
    assert again["changed"] == 1 and again["unchanged"] == 0
    models, [location] = rows(catalog_url)
    [model] = [m for m in models if m.id == location.model_id]
    assert model.sha256 == hashlib.sha256(other.read_bytes()).hexdigest()
    time.sleep(0.05)
    path.chmod(0o600)  # a chmod (what makes an unreadable file readable) changes only the ctime
    assert scan_json(str(lib))["unchanged"] == 0


# 4. MED: a name near the 255-byte limit -------------------------------------------------------


def test_a_name_near_the_length_limit_is_inspected_and_scanned(
    tmp_path: Path, scan_json: Scan, run_cli: Cli
) -> None:
    lib = tmp_path / "lib"
    path = model_file(lib / ("L" * 240 + ".safetensors"), seed=3)  # 252 bytes: .aria2 is too long
    code, out, err = run_cli("inspect", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["format"] == "safetensors"
    summary = scan_json(str(lib))
    assert summary["new"] == 1 and summary["errors"] == 0, summary["error_files"]


# 5. LOW: a pipeline component with a config and no weights ------------------------------------


def test_a_pipeline_missing_a_components_weights_is_an_error(
    tmp_path: Path, scan_json: Scan, run_cli: Cli
) -> None:
    lib = tmp_path / "lib"
    pipe = pipeline(
        lib / "flux",
        {"transformer": "FluxTransformer2DModel", "vae": "AutoencoderKL"},
    )
    (pipe / "transformer").mkdir()
    (pipe / "transformer" / "config.json").write_text('{"_class_name": "FluxTransformer2DModel"}')
    (pipe / "vae").mkdir()
    (pipe / "vae" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    model_file(pipe / "vae" / "diffusion_pytorch_model.safetensors", seed=4)
    # a safety checker without weights is fine: pipelines are loaded without it
    ok = pipeline(lib / "sd", {"unet": "UNet2DConditionModel"})
    index = json.loads((ok / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    (ok / "model_index.json").write_text(json.dumps(index))
    (ok / "unet").mkdir()
    (ok / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    model_file(ok / "unet" / "diffusion_pytorch_model.safetensors", seed=5)
    (ok / "safety_checker").mkdir()
    (ok / "safety_checker" / "config.json").write_text("{}")

    summary = scan_json(str(lib))
    [error] = summary["error_files"]
    assert error["path"] == str(pipe)
    assert (
        "component transformer (FluxTransformer2DModel) has a config.json but no weights"
        in (error["reason"])
    )
    code, _, err = run_cli("inspect", str(pipe))
    assert code == 2 and "fetch the weights files of transformer" in err


# 6. LOW: --json failures print one JSON object on stdout ---------------------------------------


@pytest.mark.parametrize(
    ("args", "kind", "code"),
    [
        (["inspect", "{lib}/html.safetensors", "--json"], "UnsupportedFormatError", 2),
        (["show", "nothing-matches", "--json"], "ModelNotFoundError", 2),
        (["scan", "{lib}", "--catalog", "{tmp}/no/such/dir/c.db", "--json"], "CatalogError", 2),
    ],
)
def test_a_failing_command_given_json_prints_the_error_as_json(
    tmp_path: Path, run_cli: Cli, args: list[str], kind: str, code: int
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "html.safetensors").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    argv = [a.format(lib=lib, tmp=tmp_path) for a in args]
    if args[0] == "show":  # (a catalog to look in: show does not create one)
        (tmp_path / "empty").mkdir()
        assert run_cli("--catalog", str(tmp_path / "c.db"), "scan", str(tmp_path / "empty"))[0] == 0
    got, out, err = run_cli("--catalog", str(tmp_path / "c.db"), *argv)
    assert got == code
    error = json.loads(out)["error"]
    assert error["type"] == kind and error["exit_code"] == code
    assert error["reason"] and f"Error: {error['reason']}" in err  # the text stays on stderr
    assert isinstance(error["hint"], str)
    # without --json, stdout stays empty
    got, out, _ = run_cli("--catalog", str(tmp_path / "c.db"), *argv[:-1])
    assert got == code and out == ""


def test_json_given_as_another_options_value_does_not_count(tmp_path: Path, run_cli: Cli) -> None:
    code, out, err = run_cli(
        "--catalog", str(tmp_path / "c.db"), "set", "nothing", "--note", "--json"
    )
    assert code == 2 and out == "" and "Error:" in err


# 7. LOW: browser temp names ---------------------------------------------------------------------


def test_browser_temp_names_are_named_as_unfinished_downloads(
    tmp_path: Path, scan_json: Scan, run_cli: Cli, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    model_file(lib / "done.safetensors", seed=1)
    for name in ("m.safetensors.tmp", "Unconfirmed 123456.crdownload", "Xa3bC.part"):
        model_file(lib / name, seed=2)
    part = model_file(lib / "big.safetensors.part", seed=3)
    os.truncate(part, 100)
    model_file(lib / "notes.txt.part", seed=4)  # not a model's name: ignored, as before
    (lib / "old.part").mkdir()  # a folder whose name ends in .part is just a folder
    model_file(lib / "old.part" / "inside.safetensors", seed=5)

    summary = scan_json(str(lib))
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert skipped == {
        "Unconfirmed 123456.crdownload": "an unfinished Chrome/Edge download: let it finish, "
        "then scan again",
        "Xa3bC.part": _PART,
        "big.safetensors.part": _PART,
        "m.safetensors.tmp": "an unfinished download or copy (a temporary file): let it finish, "
        "then scan again",
    }
    assert summary["new"] == 2 and summary["errors"] == 0
    code, _, err = run_cli("inspect", str(part))
    assert code == 2
    assert (
        "an unfinished Firefox, wget/curl or Transmission download" in err
        and "truncated" not in err
    )
    code, out, err = run_cli("--catalog", catalog_url, "scan", str(part), "--json")
    assert code in (0, 2), err  # (2: a path given could not be scanned)
    root = json.loads(out)
    assert root["new"] == 0 and root["errors"] == 0
    assert root["skipped"][0]["reason"].startswith("an unfinished Firefox")


# 8. LOW: control characters in names -------------------------------------------------------------


def test_control_characters_in_a_name_are_escaped_in_text_output(
    tmp_path: Path, run_cli: Cli
) -> None:
    assert printable("new\nline\tx\x1b[31m.safetensors") == "new\\nline\\tx\\x1b[31m.safetensors"
    assert printable("caf\udce9") == "caf\ufffd"
    path = model_file(tmp_path / "new\nline.safetensors", seed=1)
    code, out, err = run_cli("inspect", str(path))
    assert code == 0, err
    assert out.splitlines()[0] == str(tmp_path / "new\\nline.safetensors")


def test_a_newline_in_a_name_keeps_one_row_in_ls_and_show(
    tmp_path: Path, run_cli: Cli, scan_json: Scan, catalog_url: str
) -> None:
    model_file(tmp_path / "new\nline.safetensors", seed=1)
    scan_json(str(tmp_path))
    code, out, err = run_cli("--catalog", catalog_url, "ls")
    assert code == 0, err
    rows = out.splitlines()
    assert len(rows) == 2 and rows[1].endswith("new\\nline")  # the header, one model
    code, out, err = run_cli("--catalog", catalog_url, "show", "new\nline")
    assert code == 0, err
    assert out.splitlines()[0].startswith("new\\nline  [")


# 9. LOW: names that are not UTF-8 in --json ----------------------------------------------------


def test_json_output_is_valid_utf8_for_a_name_that_is_not(
    tmp_path: Path, run_cli: Cli, scan_json: Scan
) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.safetensors")
    with open(raw, "wb") as fh:
        fh.write(model_file(tmp_path / "src" / "x.safetensors", seed=1).read_bytes())
    code, out, err = run_cli("inspect", os.fsdecode(raw), "--json")
    assert code == 0, err
    out.encode("utf-8")  # (run_cli decoded it strictly; no lone surrogate either)
    assert json.loads(out)["path"] == str(tmp_path / "caf\ufffd.safetensors")
    assert "\\udc" not in out
    summary = scan_json(str(tmp_path))
    assert summary["skipped"][0]["path"] == str(tmp_path / "caf\ufffd.safetensors")
