"""`modelsafe demo` builds a sample library, scans it and reports each file as expected."""

from __future__ import annotations

import json
from pathlib import Path


def test_demo_scans_the_sample_library(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run_cli("demo", "--keep", str(tmp_path / "lib"), "--json")
    assert code == 0, err
    result = json.loads(out)
    rows = {Path(r["file"]).name: r for r in result["files"]}
    assert rows["free-model.ckpt"]["audit"] == "unsafe"
    assert any("os.system" in n for n in rows["free-model.ckpt"]["notes"])
    assert rows["sd15-base.safetensors"]["identified"].startswith("sd1/checkpoint")
    assert rows["sd15-style.safetensors"]["identified"] == "sd1/lora"
    assert rows["xl-detail.safetensors"]["identified"] == "sdxl/lora"
    assert rows["legacy-embedding.pt"]["audit"] == "safe"
    for broken in ("truncated.safetensors", "model.safetensors", "pointer.safetensors"):
        assert rows[broken]["identified"] == "unreadable"
    assert "git-lfs pointer" in rows["pointer.safetensors"]["notes"][0]
    assert any("xl-detail" in w["path"] for w in result["wrong_folder"])
    assert result["summary"]["unsafe"] == 1 and result["summary"]["errors"] == 3
    assert (tmp_path / "lib" / "catalog.db").is_file()
    # its full-size sparse checkpoint ends in real bytes: no "unfinished download" warning
    code, out, err = run_cli(
        "--catalog", str(tmp_path / "lib" / "catalog.db"), "show", "sd15-base", "--json"
    )
    assert code == 0, err
    [location] = json.loads(out)["locations"]
    assert not [w for w in location["warnings"] if "zeros" in w]


def test_ls_compatible_with_answers_from_the_catalog(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lib = tmp_path / "lib"
    code, _, err = run_cli("demo", "--keep", str(lib), "--json")
    assert code == 0, err
    catalog = str(lib / "catalog.db")
    code, out, err = run_cli(
        "--catalog", catalog, "ls", "--compatible-with", "sd15-base", "--kind", "lora", "--json"
    )
    assert code == 0, err
    fits = {Path(f["model"]["name"]).name: f for f in json.loads(out)}
    assert any("sd15-style" in name for name in fits), fits.keys()
    assert not any("xl-detail" in name for name in fits), "an SDXL LoRA must not fit SD1.5"


def test_demo_keeps_a_relative_folder_and_says_where(  # type: ignore[no-untyped-def]
    run_cli, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("demo", "--keep", "lib")
    assert code == 0, err
    assert "The library and its catalog are in lib" in out
    assert (tmp_path / "lib" / "catalog.db").is_file()
    assert (tmp_path / "lib" / "models" / "checkpoints" / "sd15-base.safetensors").is_file()


def test_the_demo_library_is_the_same_bytes_on_every_run(tmp_path: Path) -> None:
    """docs/scan.md shows the demo's hashes: two builds write identical files (the hostile zip's
    entry dates and the legacy pickle's storage key are fixed), and no sample LoRA is all
    zeros (a scan would call it untrained)."""
    import hashlib

    from modelsafe.demo import build_library

    def digests(root: Path) -> dict[str, str]:
        files = build_library(root)
        return {  # (the 2 GiB sparse checkpoint's bytes are a fixed pattern: left out)
            str(f.path.relative_to(root)): hashlib.sha256(f.path.read_bytes()).hexdigest()
            for f in files
            if f.path.stat().st_size < 64 << 20
        }

    first, second = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert first == second
    assert "models/embeddings/legacy-embedding.pt" in first
    for lora in ("loras/sd15-style.safetensors", "loras/sd15/xl-detail.safetensors"):
        data = (tmp_path / "a" / "models" / lora).read_bytes()
        assert data.count(0) < len(data) // 2, lora
