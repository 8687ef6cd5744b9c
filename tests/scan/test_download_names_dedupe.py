"""qBittorrent's ``.!qB`` is the unfinished file itself, never a control file beside a finished one.

qBittorrent (with "append .!qB to incomplete files") downloads ``X`` as ``X.!qB`` and renames it
to ``X`` when done. ``.!qB`` was also taken for a control file like aria2's ``X.aria2``, so a
finished ``X`` beside a new ``X.!qB`` (the same torrent added again) was "still downloading" in
`inspect` and `scan`, and an ``X`` that does not read became `unfinished-download` in `audit`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelsafe.testing import write_safetensors

Cli = Callable[..., tuple[int, str, str]]
Scan = Callable[..., dict[str, Any]]
STILL_DOWNLOADING = "has not finished downloading"


def _model(path: Path) -> Path:
    """A complete, valid safetensors file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    specs = [(f"lora_unet_{i}.lora_up.weight", "F16", (64, 64)) for i in range(4)]
    return write_safetensors(path, specs, data="random", seed=7)


def test_a_finished_file_beside_a_qbittorrent_partial_is_not_still_downloading(
    tmp_path: Path, run_cli: Cli, scan_json: Scan
) -> None:
    lib = tmp_path / "lib"
    done = _model(lib / "lora.safetensors")
    partial = lib / "lora.safetensors.!qB"
    partial.write_bytes(done.read_bytes()[:100])  # the same torrent, downloading again

    code, out, err = run_cli("inspect", str(done), "--json")
    assert code == 0, err
    warnings = json.loads(out)["warnings"]
    assert not [w for w in warnings if STILL_DOWNLOADING in w or ".!qB" in w], warnings

    summary = scan_json(str(lib))
    assert summary["errors"] == 0
    assert [w for w in summary["warnings"] if STILL_DOWNLOADING in w["warning"]] == []
    assert summary["skipped"] == [
        {
            "path": str(partial),
            "reason": "an unfinished qBittorrent download: let it finish, then scan again",
        }
    ]


def test_audit_of_a_broken_file_beside_a_qbittorrent_partial_keeps_its_error(
    tmp_path: Path, run_cli: Cli
) -> None:
    path = _model(tmp_path / "lora.safetensors")
    os.truncate(path, path.stat().st_size // 2)
    (tmp_path / "lora.safetensors.!qB").write_bytes(b"\x00" * 100)

    code, out, _err = run_cli("audit", str(path))
    assert code == 2 and out.startswith("ERROR"), out
    assert "unfinished-download" not in out and "qBittorrent" not in out
    assert "truncated" in out
