"""`generate` on a damaged download says what is wrong and to download it again, before any
load: a safetensors file with bytes after its last tensor (the safetensors library refuses it)
got "it could not be audited" with no word of the download; a cached pipeline copied with
`cp -r` (every link dangling) was "a folder, but no model folder"."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelsafe.runtime import diffusers_loader

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("loaded a model generate should have refused")

    monkeypatch.setattr(diffusers_loader, "load_pipeline", never)


def _generate(run_cli: Any, model: Path, out: Path) -> tuple[int, str]:
    code, _, err = run_cli(
        "generate", "--checkpoint", str(model), "--family", "sd1", "--prompt", "a cat",
        "--out", str(out),
    )  # fmt: skip
    return code, err


def test_a_file_with_bytes_after_its_tensors_says_download_again(
    run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    model = write_safetensors(
        tmp_path / "sd15.safetensors", [("conv_in.weight", "F16", (32, 4, 3, 3))], data="random"
    )
    with open(model, "ab") as fh:
        fh.write(b"\1" * 4096)
    code, err = _generate(run_cli, model, tmp_path / "out")
    assert code == 2, err
    assert "could not be audited" in err and "bytes after the last tensor" in err
    assert "the file is damaged: download it again" in err and "Traceback" not in err


def test_a_cached_pipeline_copied_with_cp_r_names_its_broken_links(
    run_cli: Any, tmp_path: Path, no_load: None
) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for name in ("model_index.json", "unet/config.json"):
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blobs / name.replace("/", "_"), link.parent))
    copied = tmp_path / "copied"
    shutil.copytree(snapshot, copied, symlinks=True)  # (the blobs were never there to follow)
    code, err = _generate(run_cli, copied, tmp_path / "out")
    assert code == 2, err
    assert "model_index.json is a broken link" in err and "cp -rL" in err
    assert "no model folder" not in err
