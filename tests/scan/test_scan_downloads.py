"""Files as downloads and file systems leave them: unfinished, undecodable, special, shrinking.

Each case once went wrong: a non-UTF-8 name aborted a whole scan, a FIFO hung `inspect`, a GGUF
key/value array cost 9 bytes of memory per file byte, one broken link dropped a whole Hugging
Face repo, a git-lfs pointer inside a diffusers folder was called a memory bomb.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_scan_catalog import model_file, rows

from modelsafe.errors import FileReadError, MalformedFileError
from modelsafe.registry.read import read_index

Scan = Callable[..., dict[str, Any]]
LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4f1c0ad0b1e0c3c1f2f6a9a2b4e5d6c7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3\n"
    "size 3438167536\n"
)


def test_a_name_that_is_not_utf8_is_skipped_and_the_scan_goes_on(
    tmp_path: Path, scan_json: Scan
) -> None:
    lib = tmp_path / "lib"
    model_file(lib / "a.safetensors", seed=1)
    model_file(lib / "z.safetensors", seed=2)
    bad = os.path.join(os.fsencode(lib), b"m\xff.safetensors")
    with open(bad, "wb") as fh:
        fh.write((lib / "a.safetensors").read_bytes())
    summary = scan_json(str(lib))
    assert summary["new"] == 2 and summary["errors"] == 0
    [skipped] = summary["skipped"]
    assert skipped["path"].endswith("m\ufffd.safetensors")
    assert "not valid UTF-8" in skipped["reason"]


def test_unfinished_downloads_are_named(
    tmp_path: Path, scan_json: Scan, run_cli: Any, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    done = model_file(lib / "model.safetensors", seed=3)
    (lib / "model.safetensors.aria2").write_bytes(b"\x00\x01control")
    (lib / "other.safetensors.crdownload").write_bytes(b"\x00" * 100)
    summary = scan_json(str(lib))
    assert [s["reason"] for s in summary["skipped"]] == [
        "an unfinished Chrome/Edge download: let it finish, then scan again"
    ]
    code, out, _ = run_cli("inspect", str(done), "--json")
    assert code == 0
    assert any("aria2 has not finished downloading" in w for w in json.loads(out)["warnings"])
    [_model], [location] = rows(catalog_url)  # the scan records it too
    assert any("aria2 has not finished downloading" in w for w in location.warnings)


def test_special_files_are_refused_without_opening_them(tmp_path: Path) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    # A subprocess with a timeout: opening a FIFO for reading would block for ever.
    for command in ("inspect", "audit"):
        done = subprocess.run(
            [sys.executable, "-c", "from modelsafe.cli import main; main()", command, str(fifo)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert "named pipe" in done.stdout + done.stderr
    with pytest.raises(FileReadError, match="character device"):
        read_index("/dev/null")


def test_catalog_option_after_the_command(tmp_path: Path, run_cli: Any) -> None:
    lib = tmp_path / "lib"
    model_file(lib / "a.safetensors", seed=4)
    url = str(tmp_path / "here.db")
    code, out, err = run_cli("scan", str(lib), "--catalog", url, "--json")
    assert code == 0, err
    assert json.loads(out)["new"] == 1 and Path(url).is_file()
    code, out, err = run_cli("ls", "--catalog", url, "--json")
    assert code == 0, err
    assert [m["name"] for m in json.loads(out)] == ["a"]


# -- GGUF -----------------------------------------------------------------------------------------


def _gguf(path: Path, array_items: int) -> Path:
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "flux")
    writer.add_array("big", np.zeros(array_items, np.uint8).tolist())
    writer.add_array("words", [f"w{i}" for i in range(1000)])
    writer.add_tensor("img_in.weight", np.zeros((4, 64), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_long_arrays_are_skipped_not_built(tmp_path: Path) -> None:
    index = read_index(_gguf(tmp_path / "a.gguf", 300_000))
    kv = index.extra["kv"]
    assert kv["big"]["length"] == 300_000 and "array_of" in kv["big"]
    assert kv["words"] == {"array_of": "string", "length": 1000}
    assert [t.name for t in index.tensors] == ["img_in.weight"]


def test_gguf_that_shrinks_while_read_is_an_error_not_a_crash(tmp_path: Path) -> None:
    from modelsafe.registry.formats import gguf_reader

    path = _gguf(tmp_path / "a.gguf", 1000)
    size = path.stat().st_size
    os.truncate(path, 100)  # a new download started over it after its size was taken
    with open(path, "rb") as fh, pytest.raises(MalformedFileError, match="got shorter"):
        gguf_reader._parse(fh, size, path)


# -- diffusers folders and the Hugging Face cache -------------------------------------------------


def test_stubs_inside_a_diffusers_folder_are_named(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}'
    )
    (pipe / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    (pipe / "unet" / "diffusion_pytorch_model.safetensors").write_text(LFS_POINTER)
    with pytest.raises(Exception, match="git-lfs pointer") as caught:
        read_index(pipe)
    assert "git lfs pull" in str(getattr(caught.value, "hint", ""))
    (pipe / "model_index.json").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    with pytest.raises(MalformedFileError, match="HTML page"):
        read_index(pipe)


def test_one_broken_link_does_not_drop_a_hugging_face_repo(tmp_path: Path, scan_json: Scan) -> None:
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    good = model_file(repo / "blobs" / ("a" * 64), seed=5)
    (repo / "blobs" / ("d" * 64 + ".incomplete")).write_bytes(good.read_bytes()[:1000])
    snap = repo / "snapshots" / ("c" * 40)
    (snap / "unet").mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(Path("../../blobs") / ("a" * 64))
    (snap / "unet" / "diffusion_pytorch_model.safetensors").symlink_to(
        Path("../../../blobs") / ("d" * 64)
    )
    summary = scan_json("--hf-cache-dir", str(tmp_path / "hub"))
    assert summary["new"] == 1, summary
    reasons = " | ".join(s["reason"] for s in summary["skipped"])
    assert "broken symlink" in reasons
    assert "an interrupted download (1,000 bytes so far)" in reasons
    # The broken link is said once, for its own path (huggingface_hub's "Blob missing" for the
    # whole cache said it again).
    assert reasons.count("broken symlink") == 1, reasons
    assert "Blob missing" not in reasons
