"""A model stored as a .ckpt and as a .safetensors (the same tensors: one model) shows the
format and file hashes (sha256, AutoV2...) of its preferred copy, the one `generate` and jobs
use (``queries.file_on_disk``: audited safe, then safetensors), whichever file was scanned
last, and keeps them across re-scans in any order; when that copy is deleted, the model shows
the copy that is left."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors

Cli = Callable[..., Any]
LORA = [
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "F16", (4, 320)),
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", "F16", (320, 4)),
]


class _Payload:
    """Pickled as a call of ``open(marker, "w")``: it would create the marker when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _copies(lib: Path, payload: Path | None = None) -> tuple[Path, Path]:
    """lib/b_style.safetensors and lib/a_style.ckpt holding the same tensors (the .ckpt sorts
    first by path; with ``payload`` it also runs code when loaded)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    lib.mkdir(parents=True, exist_ok=True)
    safe = write_safetensors(lib / "b_style.safetensors", LORA, data="random", seed=21)
    ckpt = lib / "a_style.ckpt"
    state: dict[str, Any] = dict(load_file(str(safe)))
    if payload is not None:
        state["x"] = _Payload(payload)
    torch.save(state, ckpt)
    return safe, ckpt


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scan(run_cli: Callable[..., Any], url: str, *paths: Path, force: bool = False) -> Any:
    args = ["--catalog", url, "scan", *map(str, paths), "--json"]
    if force:
        args.insert(3, "--force")
    code, out, err = run_cli(*args)
    assert code in (0, 1), err
    return json.loads(out)


def _shows(cli_json: Cli, copy: Path) -> None:
    """ls and show give the model the format and hashes ``copy`` has on its own."""
    [listed] = cli_json("ls")
    shown = cli_json("show", str(copy))
    own = next(loc for loc in shown["locations"] if loc["path"] == str(copy))
    fmt = "safetensors" if copy.suffix == ".safetensors" else own["format"]
    assert listed["format"] == shown["format"] == own["format"] == fmt
    assert listed["sha256"] == shown["sha256"] == _sha256(copy)
    assert listed["autov2"] == shown["autov2"] == own["hashes"]["autov2"] == _sha256(copy)[:10]
    assert shown["hashes"]["sha256"] == _sha256(copy)
    assert all(shown["hashes"][k] == v for k, v in own["hashes"].items() if k in shown["hashes"])


@pytest.mark.parametrize("order", ["both", "safetensors-first", "ckpt-first"])
def test_the_model_shows_its_safetensors_copy_in_any_scan_order(
    order: str, tmp_path: Path, run_cli: Callable[..., Any], cli_json: Cli, catalog_url: str
) -> None:
    lib = tmp_path / "lib"
    safe, ckpt = _copies(lib)
    if order == "both":
        _scan(run_cli, catalog_url, lib)
    else:
        first, second = (safe, ckpt) if order == "safetensors-first" else (ckpt, safe)
        _scan(run_cli, catalog_url, first)
        _scan(run_cli, catalog_url, second)
    _shows(cli_json, safe)

    # Re-scans, each file read again in turn (a touched file, a forced scan): no change.
    for touched in (ckpt, safe, ckpt):
        st = touched.stat()
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        summary = _scan(run_cli, catalog_url, touched)
        assert summary["changed"] == 1
        _shows(cli_json, safe)
    _scan(run_cli, catalog_url, lib, force=True)
    _shows(cli_json, safe)

    # The safetensors copy deleted: the model is what is left on disk.
    safe.unlink()
    assert _scan(run_cli, catalog_url, lib)["removed"] == 1
    _shows(cli_json, ckpt)


@pytest.mark.parametrize("order", ["safetensors-first", "ckpt-first"])
def test_a_hostile_ckpt_twin_never_lends_the_model_its_hashes(
    order: str, tmp_path: Path, run_cli: Callable[..., Any], cli_json: Cli, catalog_url: str
) -> None:
    marker = tmp_path / "PWNED"
    safe, ckpt = _copies(tmp_path / "lib", payload=marker)
    first, second = (safe, ckpt) if order == "safetensors-first" else (ckpt, safe)
    _scan(run_cli, catalog_url, first)
    _scan(run_cli, catalog_url, second)
    _shows(cli_json, safe)
    [listed] = cli_json("ls")
    assert listed["audit"] == "unsafe" and listed["unsafe_paths"] == [str(ckpt)]
    assert not marker.exists()
