"""What a scan records and prints does not depend on the order files were read in (worker
threads finish in any order, a later scan reads one copy again):

- a model stored twice (a .safetensors and a .ckpt of the same tensors) shows its preferred
  copy's inspect report, detected family and kind, whichever copy was written last;
- placeholder models (files first read with --no-hash) merged into one keep the oldest row,
  its overrides, and the notes joined oldest first;
- every list of `scan --json` (and the text lines) comes in path order.
"""

from __future__ import annotations

import os
import pickle
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
# (the .safetensors copy says which model the LoRA is for; the .ckpt copy cannot: its family
# is not detected)
META = {"ss_base_model_version": "sdxl_base_v1-0"}


def _touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _copies(lib: Path) -> tuple[Path, Path]:
    """lib/b_style.safetensors (an SDXL LoRA by its metadata) and lib/a_style.ckpt, the same
    tensors saved with torch.save: one model; the .ckpt sorts first by path."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    lib.mkdir(parents=True, exist_ok=True)
    safe = write_safetensors(lib / "b_style.safetensors", LORA, META, data="random", seed=3)
    ckpt = lib / "a_style.ckpt"
    torch.save(dict(load_file(str(safe))), ckpt)
    return safe, ckpt


def _shown(cli_json: Cli, path: Path) -> dict[str, Any]:
    shown = cli_json("show", str(path))
    assert isinstance(shown, dict)
    return shown


def _assert_shows(cli_json: Cli, path: Path, copy: Path, family: str) -> None:
    """The model at ``path`` shows ``copy``'s own inspect report and what was detected in it."""
    shown = _shown(cli_json, path)
    inspect = shown["inspect"]
    assert inspect["path"] == str(copy)
    assert shown["format"] == inspect["format"]
    assert shown["detected"]["family"] == inspect["family"] == family
    assert shown["family"] == family  # (no override)
    assert shown["confidence"] == inspect["confidence"]
    assert shown["error"] is None and shown["hash_error"] is None


def test_a_model_shows_its_preferred_copy_whichever_was_written_last(
    tmp_path: Path, scan_json: Cli, cli_json: Cli
) -> None:
    safe, ckpt = _copies(tmp_path / "lib")
    for _ in range(3):
        scan_json(str(tmp_path / "lib"), "-j", "2", "--force")
        _assert_shows(cli_json, ckpt, safe, "sdxl")
        assert _shown(cli_json, ckpt)["inspect"]["metadata"] == META

    # Only the .ckpt read again: it is the copy written last, not the one shown.
    _touch(ckpt)
    assert scan_json(str(ckpt))["changed"] == 1
    _assert_shows(cli_json, ckpt, safe, "sdxl")
    [listed] = cli_json("ls")
    assert (listed["family"], listed["kind"], listed["format"]) == ("sdxl", "lora", "safetensors")

    # The user's correction applies whichever copy is shown, and after each re-read.
    cli_json("set", str(ckpt), "--family", "sd1")
    for touched in (ckpt, safe):
        _touch(touched)
        scan_json(str(touched))
        shown = _shown(cli_json, ckpt)
        assert shown["family"] == "sd1" and shown["detected"]["family"] == "sdxl"
        assert shown["inspect"]["path"] == str(safe)

    # The preferred copy gone: the model shows the copy that is left, as it was read.
    safe.unlink()
    assert scan_json(str(tmp_path / "lib"))["removed"] == 1
    shown = _shown(cli_json, ckpt)
    assert shown["inspect"]["path"] == str(ckpt) and shown["format"] == "torch-zip"
    assert shown["detected"]["family"] == "unknown" and not shown["inspect"]["metadata"]
    assert shown["family"] == "sd1"  # (the user's correction)


def test_a_model_scanned_copy_by_copy_shows_the_same_as_one_scan(
    tmp_path: Path, scan_json: Cli, cli_json: Cli
) -> None:
    safe, ckpt = _copies(tmp_path / "lib")
    scan_json(str(safe))
    scan_json(str(ckpt))
    _assert_shows(cli_json, safe, safe, "sdxl")
    # Each copy still keeps what it is on its own: the .ckpt shown once the .safetensors is
    # damaged (no longer one of the model's copies).
    safe.write_bytes(b"<!DOCTYPE html><html></html>")
    scan_json(str(tmp_path / "lib"))
    shown = _shown(cli_json, ckpt)
    assert shown["inspect"]["path"] == str(ckpt) and shown["format"] == "torch-zip"
    assert [loc["path"] for loc in shown["locations"] if loc["status"] != "missing"] == [str(ckpt)]


def test_a_model_recorded_before_it_named_its_copy_shows_the_copy_that_is_left(
    tmp_path: Path, scan_json: Cli, cli_json: Cli, catalog_url: str
) -> None:
    """A catalog from before models recorded which copy they show (``details.source``): a
    second copy added, then removed again, leaves the model showing the first one, not the
    removed copy's report under the first one's hashes."""
    from sqlalchemy import select

    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.catalog.models import Model

    safe, ckpt = _copies(tmp_path / "lib")
    kept = safe.read_bytes()
    safe.unlink()
    scan_json(str(ckpt))
    catalog = open_catalog(catalog_url)
    try:
        with catalog.session() as session:
            [model] = session.scalars(select(Model)).all()
            model.details = {k: v for k, v in model.details.items() if k != "source"}
    finally:
        catalog.close()
    safe.write_bytes(kept)  # (the .ckpt is not read again: only the .safetensors is new)
    assert scan_json(str(tmp_path / "lib"))["new"] == 1
    _assert_shows(cli_json, ckpt, safe, "sdxl")
    safe.unlink()
    scan_json(str(tmp_path / "lib"))
    shown = _shown(cli_json, ckpt)
    assert shown["inspect"]["path"] == str(ckpt) and shown["format"] == "torch-zip"
    assert shown["detected"]["family"] == "unknown"


FAMILIES = ("sd1", "sd2", "sdxl", "flux1")


def test_merged_placeholders_keep_the_oldest_row_and_its_settings(
    tmp_path: Path, scan_json: Cli, cli_json: Cli
) -> None:
    """Four files read with --no-hash (four placeholder models, created d, c, b, a: not in
    path order), each with its own family override and note, become hard links of one file:
    the next hashed scan merges them into the oldest row."""
    root = tmp_path / "m"
    root.mkdir()
    names = ["d", "c", "b", "a"]  # the order their models are created in
    for i, name in enumerate(names):
        spec = [(f"w{i}.weight", "F16", (16, 16))]
        write_safetensors(root / f"{name}.safetensors", spec, data="random", seed=i)
        scan_json(str(root / f"{name}.safetensors"), "--no-hash")
    for name, family in zip(names, FAMILIES, strict=True):
        path = root / f"{name}.safetensors"
        cli_json("set", str(path), "--family", family, "--note", f"note {name}")
    listed = {m["paths"][0]: m for m in cli_json("ls")}
    assert len(listed) == 4
    oldest = min(m["id"] for m in listed.values())
    assert listed[str(root / "d.safetensors")]["id"] == oldest
    for name in names[1:]:
        os.link(root / "d.safetensors", root / f"{name}.tmp")
        os.replace(root / f"{name}.tmp", root / f"{name}.safetensors")

    scan_json(str(root))
    [model] = cli_json("ls")
    assert model["id"] == oldest
    assert model["family"] == "sd1" and model["overrides"] == {"family": "sd1"}
    assert model["note"] == "note d / note c / note b / note a"
    assert model["paths"] == [str(root / f"{n}.safetensors") for n in "abcd"]


class _Payload:
    """Pickled as a call of ``open(marker, "w")``: it would create the marker when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _problem_files(root: Path, marker: Path, names: list[str], big: int = 0) -> None:
    """For each name: an unsafe pickle, an HTML page saved as .safetensors (unreadable) and a
    safetensors file with bytes after its tensors (an error: the safetensors library refuses
    it). ``big``: the first name's files
    get that many more bytes, so that a worker thread finishes the later ones first."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        pad = big if i == 0 else 0
        body = pickle.dumps({"w": [1.0], "x": _Payload(marker)}, protocol=2)
        (root / f"{name}_evil.ckpt").write_bytes(body + b"\0" * pad)
        (root / f"{name}_page.safetensors").write_bytes(b"<!DOCTYPE html><html>" + b"x" * pad)
        spec = [(f"t{i}.weight", "F16", (64, 64))]
        trail = write_safetensors(root / f"{name}_trail.safetensors", spec, data="random", seed=i)
        with open(trail, "ab") as fh:
            fh.write(b"\1" * (4096 + pad))


def _assert_sorted(summary: dict[str, Any]) -> None:
    assert summary["unsafe_files"] == sorted(summary["unsafe_files"])
    for key, message in (
        ("error_files", "reason"),
        ("warnings", "warning"),
        ("wrong_folder", "problem"),
        ("notices", "message"),
        ("skipped", "reason"),
    ):
        entries = [(e["path"], e[message]) for e in summary[key]]
        assert entries == sorted(entries), key


def test_scan_lists_come_in_path_order(
    tmp_path: Path, scan_json: Cli, run_cli: Cli, catalog_url: str
) -> None:
    marker = tmp_path / "PWNED"
    root = tmp_path / "lib"
    _problem_files(root, marker, ["m", "n", "o", "p"], big=32 << 20)
    summary = scan_json(str(root), "-j", "2")
    assert len(summary["unsafe_files"]) == 4 and len(summary["error_files"]) == 8
    assert len(summary["warnings"]) >= 4
    _assert_sorted(summary)

    # Files seen unchanged are listed with the new ones, in path order.
    _problem_files(root, marker, ["a", "z"])
    summary = scan_json(str(root), "-j", "2")
    assert summary["unchanged"] == 12 and summary["new"] == 6
    assert len(summary["unsafe_files"]) == 6 and len(summary["error_files"]) == 12
    _assert_sorted(summary)
    assert summary["unsafe_files"][0] == str(root / "a_evil.ckpt")

    # The text output: the same lines, in the same order.
    code, out, err = run_cli("--catalog", catalog_url, "scan", str(root), "-j", "2", "--force")
    assert code == 1, err
    lines = [line for line in out.splitlines() if line[:7].strip().isupper()]
    for tag, key in (("UNSAFE", "unsafe_files"), ("ERROR", "error_files")):
        paths = [line.split()[1].rstrip(":") for line in lines if line.startswith(tag)]
        assert paths == [e if isinstance(e, str) else e["path"] for e in summary[key]]
    warned = [line for line in lines if line.startswith("WARNING")]
    assert warned == sorted(warned) and len(warned) >= 6
    assert not marker.exists()
