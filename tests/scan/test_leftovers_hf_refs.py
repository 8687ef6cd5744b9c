"""A Hugging Face cache whose ``refs/main`` names no snapshot the way huggingface_hub reads it (a
ref written by hand with ``echo``: a trailing newline; a ref to a deleted snapshot): the hub's
scanner drops the whole repo with "Reference(s) refer to missing commit hashes: {...}";
modelsafe scans its snapshots anyway and says what is wrong with that ref and how to fix it. A
cache as the hub writes it (the bare 40-digit hash) gives no warning."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelsafe.testing import write_safetensors

Scan = Callable[..., dict[str, Any]]
Cli = Callable[..., Any]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LORA = [
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "F16", (4, 320)),
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", "F16", (320, 4)),
]


def _repo(hub: Path, name: str, ref_text: str, commit: str = COMMIT, seed: int = 1) -> Path:
    """hub/models--org--NAME: one blob, one snapshot ``commit`` linking to it, and refs/main
    holding ``ref_text``."""
    repo = hub / f"models--org--{name}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(ref_text, newline="")
    write_safetensors(repo / "blobs" / ("b" * 64), LORA, data="random", seed=seed)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(Path("../../blobs") / ("b" * 64))
    return repo


def _reasons(summary: dict[str, Any]) -> list[str]:
    return [s["reason"] for s in summary["skipped"]]


def test_a_cache_as_the_hub_writes_it_gives_no_warning(tmp_path: Path, scan_json: Scan) -> None:
    _repo(tmp_path / "hub", "tiny", COMMIT)
    summary = scan_json("--hf-cache-dir", str(tmp_path / "hub"))
    assert summary["new"] == 1 and summary["skipped"] == []


def test_a_ref_with_a_newline_is_named_with_its_fix_and_the_repo_is_scanned(
    tmp_path: Path, scan_json: Scan, cli_json: Cli
) -> None:
    from huggingface_hub import try_to_load_from_cache

    hub = tmp_path / "hub"
    repo = _repo(hub, "tiny", COMMIT + "\n")
    # (what huggingface_hub makes of it: no file for the ref, though the snapshot is there)
    assert try_to_load_from_cache("org/tiny", "model.safetensors", cache_dir=hub) is None

    summary = scan_json("--hf-cache-dir", str(hub))
    assert summary["new"] == 1
    [reason] = _reasons(summary)
    ref = repo / "refs" / "main"
    assert reason.startswith(f"{ref}: the ref 'main' holds the commit '{COMMIT}' with a newline")
    assert "cannot load org/tiny by that ref offline; its snapshots were scanned anyway" in reason
    assert f"printf %s {COMMIT} > {ref}" in reason
    assert "missing commit hashes" not in reason
    [model] = cli_json("ls")
    [loc] = cli_json("show", model["name"])["locations"]
    assert (loc["hf_repo"], loc["hf_revision"], loc["hf_refs"]) == ("org/tiny", COMMIT, ["main"])

    ref.write_text(COMMIT, newline="")  # the fix the message gives
    assert try_to_load_from_cache("org/tiny", "model.safetensors", cache_dir=hub) is not None
    again = scan_json("--hf-cache-dir", str(hub))
    assert again["unchanged"] == 1 and again["skipped"] == []


def test_a_ref_to_a_deleted_snapshot_says_so(tmp_path: Path, scan_json: Scan) -> None:
    hub = tmp_path / "hub"
    gone = "f" * 40
    repo = _repo(hub, "tiny", gone)
    _repo(hub, "other", COMMIT, seed=2)  # a good repo beside it says nothing
    summary = scan_json("--hf-cache-dir", str(hub))
    assert summary["new"] == 2
    [reason] = _reasons(summary)
    assert reason.startswith(f"{repo / 'refs' / 'main'}: the ref 'main' points at the commit")
    assert f"'{gone}', which has no snapshots/ folder" in reason
    assert "hf download org/tiny --revision main" in reason


def test_the_json_summary_is_one_object_per_bad_ref(
    tmp_path: Path, run_cli: Callable[..., Any], catalog_url: str
) -> None:
    hub = tmp_path / "hub"
    for i, name in enumerate(("a", "b")):
        _repo(hub, name, COMMIT + "\r\n", seed=i)
    code, out, err = run_cli("--catalog", catalog_url, "scan", "--hf-cache-dir", str(hub), "--json")
    assert code == 0, err
    skipped = json.loads(out)["skipped"]
    assert [s["path"] for s in skipped] == [str(hub)] * 2
    assert all("newline or spaces" in s["reason"] for s in skipped)
