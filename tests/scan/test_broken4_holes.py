"""Downloads damaged in the middle: pieces an unfinished torrent or parallel download never wrote
(holes of a sparse file, or written zeros of a preallocated one) are a warning of inspect and
scan; a real model's zero tensors are not. A Hugging Face cache blob whose content does not
match the sha256 it is named by is an error of scan and of inspect --hash."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models
from modelsafe.testing.safetensors_writer import safetensors_header

MiB = 1 << 20
PIECE = 4 * MiB
ZEROS = "zeros in"  # (the zero-run warning says "N MiB of the tensor data (P%) are zeros in ...")
# 40 tensors of 2 MiB: 80 MiB of tensor data
SPECS = [(f"model.blocks.{i}.weight", "F16", (MiB,)) for i in range(40)]


def _pieces(path: Path, specs: list[Any], piece: Callable[[int], str]) -> Path:
    """A safetensors file written piece by piece (4 MiB, counted from the file's start) as a
    torrent client does: ``piece(i)`` says "data" (random bytes), "zeros" (written) or "hole"."""
    head, size = safetensors_header(specs)
    total = len(head) + size
    rng = random.Random(7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(head)
        pos = len(head)
        while pos < total:
            n = min(PIECE - pos % PIECE, total - pos)
            what = piece(pos // PIECE)
            if what == "hole":
                fh.seek(pos + n)
            else:
                fh.write(bytes(n) if what == "zeros" else rng.randbytes(n))
            pos += n
        fh.truncate(total)
    return path


def _every_third(kind: str) -> Callable[[int], str]:
    return lambda i: kind if i % 3 == 1 else "data"


def _inspect(run_cli: Any, path: Path, *flags: str) -> dict[str, Any]:
    code, out, err = run_cli("inspect", str(path), "--json", *flags)
    assert code == 0, err
    value = json.loads(out)
    assert isinstance(value, dict)
    return value


def _zero_runs(warnings: list[str]) -> list[str]:
    return [w for w in warnings if ZEROS in w]


def test_holes_in_the_middle_of_a_full_size_checkpoint_are_a_warning(
    run_cli: Any, tmp_path: Path
) -> None:
    # A 4 GB SD1.5 checkpoint of which a torrent client wrote the first and last pieces only.
    path = write_safetensors(tmp_path / "sd15.safetensors", base_models.unet_checkpoint("sd1"))
    head = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    size = path.stat().st_size
    with path.open("r+b") as fh:
        for at in (head, size - MiB):
            fh.seek(at)
            fh.write(random.Random(at).randbytes(MiB))
    warnings = _inspect(run_cli, path)["warnings"]
    [found] = _zero_runs(warnings)
    assert "are zeros in 1 run of 1 MiB or more before its end" in found
    assert "unfinished torrent" in found and "compare its sha256" in found
    assert not [w for w in warnings if "ends in" in w]  # (its last piece is there)


def test_written_zero_pieces_are_found_by_the_hashing_pass(
    run_cli: Any, tmp_path: Path, scan_json: Callable[..., dict[str, Any]]
) -> None:
    path = _pieces(tmp_path / "m" / "prealloc.safetensors", SPECS, _every_third("zeros"))
    # (not holes: inspect alone cannot see them without reading the data)
    assert _zero_runs(_inspect(run_cli, path)["warnings"]) == []
    [found] = _zero_runs(_inspect(run_cli, path, "--hash")["warnings"])
    assert found.startswith("28 MiB of the tensor data (35%) are zeros in 7 runs")
    summary = scan_json(str(path.parent))
    assert [w["warning"] for w in summary["warnings"] if ZEROS in w["warning"]] == [found]
    assert summary["errors"] == 0


def test_hole_pieces_are_one_warning_with_or_without_the_hash(run_cli: Any, tmp_path: Path) -> None:
    path = _pieces(tmp_path / "sparse.safetensors", SPECS, _every_third("hole"))
    [alone] = _zero_runs(_inspect(run_cli, path)["warnings"])
    [hashed] = _zero_runs(_inspect(run_cli, path, "--hash")["warnings"])
    assert alone == hashed and "in 7 runs" in alone


def test_a_real_models_zero_tensors_and_an_all_sparse_file_do_not_warn(
    run_cli: Any, tmp_path: Path, scan_json: Callable[..., dict[str, Any]]
) -> None:
    folder = tmp_path / "m"
    # an all-zero 8 MiB bias (two 4 MiB pieces) in the middle of 80 MiB of weights
    bias = _pieces(folder / "bias.safetensors", SPECS, lambda i: "zeros" if i in (9, 10) else "")
    # 12 MiB of zeros in 3 runs in a 60 MiB file: a few zero tensors, under the 16 MiB it takes
    few = _pieces(
        folder / "few.safetensors", SPECS[:30], lambda i: "zeros" if i in (1, 5, 9) else ""
    )
    # all holes (a test layout written sparse): its zero tail is the tail check's business
    sparse = write_safetensors(folder / "sparse.safetensors", SPECS)
    for path in (bias, few, sparse):
        assert _zero_runs(_inspect(run_cli, path, "--hash")["warnings"]) == [], path
        assert _zero_runs(_inspect(run_cli, path)["warnings"]) == [], path
    summary = scan_json(str(folder))
    assert [w for w in summary["warnings"] if ZEROS in w["warning"]] == []


# -- Hugging Face cache blobs ----------------------------------------------------------------


def _cache(hub: Path, repo: str, data: bytes, blob_name: str | None = None) -> Path:
    """A cache repo whose one file's blob holds ``data``, named ``blob_name`` (default: the sha256
    of ``data``, as the hub names an LFS file's blob). Returns the snapshot path of the file."""
    folder = hub / ("models--" + repo.replace("/", "--"))
    rev = "a" * 40
    (folder / "blobs").mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(rev, newline="")
    name = blob_name or hashlib.sha256(data).hexdigest()
    (folder / "blobs" / name).write_bytes(data)
    link = folder / "snapshots" / rev / "lora.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(f"../../blobs/{name}")
    return link


def _bytes(tmp_path: Path, seed: int) -> bytes:
    specs = [(f"lora_unet_down.{i}.lora_up.weight", "F16", (64, 8)) for i in range(8)]
    path = write_safetensors(tmp_path / f"src{seed}.safetensors", specs, data="random", seed=seed)
    return path.read_bytes()


def test_a_cache_blob_not_matching_its_sha256_name_is_an_error(
    run_cli: Any, tmp_path: Path, scan_json: Callable[..., dict[str, Any]]
) -> None:
    good = _bytes(tmp_path, 1)
    hub = tmp_path / "hub"
    _cache(hub, "org/good", good)
    flipped = bytearray(good)
    flipped[-100] ^= 0xFF
    bad = _cache(hub, "org/bitflip", bytes(flipped), hashlib.sha256(good).hexdigest())
    # a small file's blob is named by its git sha1 (40 digits): not a sha256 to compare
    _cache(hub, "org/small", _bytes(tmp_path, 2), "b" * 40)
    summary = scan_json("--hf-cache-dir", str(hub))
    assert summary["errors"] == 1 and summary["new"] == 3
    [error] = summary["error_files"]
    assert error["path"] == str(bad)
    assert f"does not match its name {hashlib.sha256(good).hexdigest()}" in error["reason"]
    assert "corrupt download" in error["reason"] and "--force-download" in error["reason"]
    assert "hf download org/bitflip lora.safetensors" in error["reason"]

    code, _out, err = run_cli("inspect", str(bad), "--hash")
    assert code == 2 and "Traceback" not in err
    assert hashlib.sha256(bytes(flipped)).hexdigest() in err and "--force-download" in err
    assert _inspect(run_cli, bad)["family"]  # (without --hash nothing is hashed: read as ever)


def test_a_corrupt_blob_moved_to_the_shared_xet_store_is_found(
    run_cli: Any, tmp_path: Path
) -> None:
    # huggingface_hub 2.4 moves a repo's blob into the cache-wide store
    # (<cache>/blobs/<2 hex>/<xet hash>) and leaves a link at blobs/<sha256>: the blob's name is
    # the first blobs/<sha256> on the link chain, not where the chain ends (it was never checked)
    good = _bytes(tmp_path, 3)
    hub = tmp_path / "hub"
    flipped = bytearray(good)
    flipped[-100] ^= 0xFF
    bad = _cache(hub, "org/xet", bytes(flipped), hashlib.sha256(good).hexdigest())
    repo_blob = Path(os.path.realpath(bad))
    xet = "c" * 64
    shared = hub / "blobs" / xet[:2] / xet
    shared.parent.mkdir(parents=True)
    repo_blob.rename(shared)
    repo_blob.symlink_to(os.path.relpath(shared, repo_blob.parent))
    code, _out, err = run_cli("inspect", str(bad), "--hash")
    assert code == 2, err
    assert f"does not match its name {hashlib.sha256(good).hexdigest()}" in err
