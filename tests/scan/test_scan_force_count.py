"""`scan --force` reads every file again; one whose stat and content are as stored is unchanged."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelsafe.testing import write_safetensors

Scan = Callable[..., dict[str, Any]]


def model_file(path: Path, seed: int) -> Path:
    """A small real safetensors file, readable by the test reader in conftest.py."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"test_family": "unknown", "test_kind": "unknown"}
    return write_safetensors(path, [("w", "F16", (32, 32))], meta, data="random", seed=seed)


def test_force_counts_identical_files_unchanged(tmp_path: Path, scan_json: Scan) -> None:
    lib = tmp_path / "lib"
    files = [model_file(lib / f"m{i}.safetensors", seed=i) for i in range(2)]
    first = scan_json(str(lib))
    assert (first["new"], first["changed"], first["unchanged"]) == (2, 0, 0)

    forced = scan_json(str(lib), "--force")
    assert (forced["new"], forced["changed"], forced["unchanged"]) == (0, 0, 2)
    assert forced["bytes_read"] == sum(f.stat().st_size for f in files)  # read again all the same

    model_file(files[1], seed=99)  # new content, same path
    os.utime(files[1], ns=(1, 1_000_000_000))
    again = scan_json(str(lib), "--force")
    assert (again["new"], again["changed"], again["unchanged"]) == (0, 1, 1)


def test_scan_model_root_option(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]], catalog_url: str
) -> None:
    import json

    a, b = tmp_path / "a", tmp_path / "b"
    model_file(a / "m.safetensors", seed=1)
    model_file(b / "n.safetensors", seed=2)
    code, out, err = run_cli(
        "--catalog", catalog_url, "scan", "--model-root", str(a), "--model-root", str(b), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["new"] == 2

    # PATHS given: they are scanned, not the --model-root folders
    code, out, err = run_cli(
        "--catalog", catalog_url, "scan", str(a), "--model-root", str(b), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["files"] == 1

    # nothing given and no model_roots configured: the hint names --model-root
    code, out, err = run_cli("--catalog", catalog_url, "scan")
    assert code == 2 and "--model-root" in err
