"""Broken downloads, round 3 (what inspect, scan and resolve say of them).

Files under 256 MiB whose data is mostly zeros read as fine (an SDXL LoRA with its second half
zero, zero pieces in the middle, a sparse tail; a VAE with its last 60% zero), an all-zero LoRA
was "untrained", and holes among a LoRA's small tensors were not counted at all. A safetensors
file the safetensors library refuses (bytes after its last tensor) was only a warning of scan.
``resolve`` called damaged parts "compatible" and never showed why a catalog row is an error. A
scan hashed the whole of a file already known to be all zeros.

Real layouts, written as real files: a trained LoRA's factors are random bytes, an untrained
LoRA's ``lora_up`` factors zeros (kohya and PEFT initialise them so).
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import base_models
from modelsafe.testing.layouts.adapters import kohya_lora, sd1_unet_modules, sdxl_unet_modules
from modelsafe.testing.safetensors_writer import safetensors_header

MiB = 1 << 20
DAMAGE = "compare its sha256 with the source's"
NEVER_WRITTEN = "an empty file, preallocated at full size and never written? download it again"
UNTRAINED = "untrained LoRA"
Cli = Callable[..., tuple[int, str, str]]
Spec = tuple[str, str, tuple[int, ...]]


def _sdxl_lora() -> list[Spec]:
    """A rank-4 kohya SDXL UNet LoRA: 20 MiB, 2,100+ tensors each well under a MiB."""
    return kohya_lora([("lora_unet_", sdxl_unet_modules())], rank=4)


def _write(path: Path, specs: list[Spec], fill: Callable[[str], str]) -> Path:
    """A safetensors file whose tensors hold what ``fill(name)`` says: "data" (random bytes),
    "zeros" (written) or "hole" (never written)."""
    head, size = safetensors_header(specs)
    offsets = json.loads(head[8:])
    rng = random.Random(5)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(head)
        for name, _dtype, _shape in specs:
            begin, end = offsets[name]["data_offsets"]
            what = fill(name)
            fh.seek(len(head) + begin)
            if what != "hole":
                fh.write(bytes(end - begin) if what == "zeros" else rng.randbytes(end - begin))
        fh.truncate(len(head) + size)
    return path


def _data_start(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def _inspect(run_cli: Cli, path: Path, *flags: str) -> list[str]:
    code, out, err = run_cli("inspect", str(path), "--json", *flags)
    assert code == 0, err
    warnings = json.loads(out)["warnings"]
    assert isinstance(warnings, list)
    return warnings


def _damage(warnings: list[str]) -> list[str]:
    return [w for w in warnings if DAMAGE in w or NEVER_WRITTEN in w]


# -- 1. zeros in files under 256 MiB -----------------------------------------------------------


def _half_zero(path: Path) -> Path:
    """Its second half written as zeros (a preallocated download that stopped halfway)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lora = write_safetensors(path, _sdxl_lora(), data="random")
    size = lora.stat().st_size
    with lora.open("r+b") as fh:
        fh.seek(size // 2)
        fh.write(bytes(size - size // 2))
    return lora


def _zero_middle(path: Path) -> Path:
    """8 MiB of zeros (two torrent pieces) in its middle, written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lora = write_safetensors(path, _sdxl_lora(), data="random")
    with lora.open("r+b") as fh:
        fh.seek(8 * MiB)
        fh.write(bytes(8 * MiB))
    return lora


def _hole_middle(path: Path) -> Path:
    """Its pieces from 4 to 12 MiB never written: holes of a sparse file."""
    lora = write_safetensors(path, _sdxl_lora(), data="random")
    data = lora.read_bytes()
    with lora.open("wb") as fh:
        fh.write(data[: 4 * MiB])
        fh.seek(12 * MiB)
        fh.write(data[12 * MiB :])
    return lora


def _sparse_tail(path: Path) -> Path:
    """Only its first 4 MiB of tensor data written; the rest a hole."""
    lora = write_safetensors(path, _sdxl_lora(), data="random")
    size = lora.stat().st_size
    os.truncate(lora, _data_start(lora) + 4 * MiB)
    os.truncate(lora, size)
    return lora


@pytest.mark.parametrize(
    ("make", "flags", "said"),
    [
        (_half_zero, ("--hash",), "the last 10."),
        (_zero_middle, ("--hash",), "8.0 MiB of the tensor data (39%) are zeros in 1 run"),
        (_hole_middle, (), "8.0 MiB of the tensor data (39%) are zeros in 1 run"),
        (_sparse_tail, (), "MiB of tensor data ("),
    ],
    ids=["half-zero", "zero-middle", "hole-middle", "sparse-tail"],
)
def test_a_small_lora_that_is_mostly_zeros_is_warned_of(
    run_cli: Cli, tmp_path: Path, make: Callable[[Path], Path], flags: tuple[str, ...], said: str
) -> None:
    lora = make(tmp_path / "style.safetensors")
    assert lora.stat().st_size < 32 * MiB
    found = _damage(_inspect(run_cli, lora, *flags))
    assert len(found) == 1 and said in found[0], found


def test_a_small_lora_that_is_mostly_zeros_is_a_scan_warning(
    tmp_path: Path, scan_json: Callable[..., dict[str, Any]]
) -> None:
    lib = tmp_path / "lib"
    _half_zero(lib / "half.safetensors")
    _zero_middle(lib / "middle.safetensors")
    summary = scan_json(str(lib))
    warned = {Path(w["path"]).name for w in summary["warnings"] if DAMAGE in w["warning"]}
    assert warned == {"half.safetensors", "middle.safetensors"}
    assert not [w for w in summary["warnings"] if UNTRAINED in w["warning"]]


@pytest.mark.parametrize("data", ["sparse", "zeros"])
def test_an_all_zero_lora_is_an_unwritten_file_not_an_untrained_one(
    run_cli: Cli, tmp_path: Path, data: str
) -> None:
    lora = write_safetensors(tmp_path / "empty.safetensors", _sdxl_lora(), data=data)  # type: ignore[arg-type]
    for flags in ((), ("--hash",)):
        warnings = _inspect(run_cli, lora, *flags)
        assert not [w for w in warnings if UNTRAINED in w], warnings
        [found] = _damage(warnings)
        assert found.startswith("all 20.3 MiB of its tensor data (2,166 tensors) are zeros: ")
        assert found.endswith(NEVER_WRITTEN)


def test_a_vae_whose_last_60_percent_are_zeros_is_warned_of(run_cli: Cli, tmp_path: Path) -> None:
    vae = write_safetensors(tmp_path / "vae-ft-mse.safetensors", base_models.ldm_vae(4))
    size = vae.stat().st_size
    start = _data_start(vae)
    with vae.open("r+b") as fh:  # its first 40% written, the rest never
        fh.seek(start)
        fh.write(random.Random(1).randbytes(int(size * 0.4) - start))
    assert size < 256 * MiB
    [found] = _damage(_inspect(run_cli, vae))
    assert "of tensor data" in found and "are all zeros" in found
    zero = float(found.split("the last ", 1)[1].split(" MiB", 1)[0].replace(",", ""))
    assert 0.55 * size < zero * MiB < 0.65 * size  # (the whole tail, not 64 MiB of it)


def test_a_lora_with_many_holes_reports_all_of_them(run_cli: Cli, tmp_path: Path) -> None:
    """60% of a LoRA in holes of 3 MiB among its small tensors: all of them are counted."""
    lora = write_safetensors(tmp_path / "torrent.safetensors", _sdxl_lora(), data="random")
    data = lora.read_bytes()
    piece = 5 * MiB  # (2 MiB written, then a 3 MiB hole: the file ends with a written piece)
    holes = 0
    with lora.open("wb") as fh:
        for at in range(0, len(data), piece):
            fh.seek(at)
            fh.write(data[at : at + 2 * MiB])
            holes += max(0, min(at + piece, len(data)) - (at + 2 * MiB))
        fh.truncate(len(data))
    for flags in ((), ("--hash",)):
        [found] = _damage(_inspect(run_cli, lora, *flags))
        total = float(found.split(" MiB of the tensor data", 1)[0].replace(",", ""))
        assert holes - MiB <= total * MiB <= holes, (found, holes / MiB)
        assert "(59%)" in found or "(58%)" in found or "(60%)" in found, found


def _untrained(path: Path, ups: str) -> Path:
    """A real-layout LoRA fresh from its initialisation: lora_down random, lora_up zeros."""
    return _write(path, _sdxl_lora(), lambda n: ups if "lora_up" in n else "data")


def test_untrained_loras_and_a_few_zero_layers_are_no_damaged_download(
    run_cli: Cli, tmp_path: Path, scan_json: Callable[..., dict[str, Any]]
) -> None:
    lib = tmp_path / "lib"
    written = _untrained(lib / "fresh.safetensors", "zeros")
    copied = _untrained(lib / "fresh-sparse.safetensors", "hole")  # (`cp --sparse=always`)
    # a trained LoRA with two modules whose factors are all zeros (less than a tenth of it)
    specs = _sdxl_lora()
    dead = {n for n, _d, _s in specs if "down_blocks_2_attentions_0_proj_in" in n}
    dead |= {n for n, _d, _s in specs if "mid_block_attentions_0_proj_out" in n}
    few = _write(lib / "few.safetensors", specs, lambda n: "zeros" if n in dead else "data")
    for path in (written, copied, few):
        for flags in ((), ("--hash",)):
            assert _damage(_inspect(run_cli, path, *flags)) == [], (path, flags)
    assert [w for w in _inspect(run_cli, written, "--hash") if UNTRAINED in w]
    summary = scan_json(str(lib))
    assert not [w for w in summary["warnings"] if DAMAGE in w["warning"]], summary["warnings"]
    assert summary["errors"] == 0


# -- 5. a file the safetensors library refuses is an error of scan ------------------------------


def _trailing(path: Path, seed: int = 3) -> Path:
    """An SD1 LoRA with 100 zero bytes after its last tensor (the safetensors library refuses
    it: "incomplete metadata, file not fully covered")."""
    specs = kohya_lora([("lora_unet_", sd1_unet_modules())], rank=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    lora = write_safetensors(path, specs, data="random", seed=seed)
    with lora.open("ab") as fh:
        fh.write(bytes(100))
    return lora


def test_a_file_the_safetensors_library_refuses_is_a_scan_error(
    tmp_path: Path, scan_json: Callable[..., dict[str, Any]]
) -> None:
    safetensors = pytest.importorskip("safetensors")
    lib = tmp_path / "lib"
    lora = _trailing(lib / "style.safetensors")
    with pytest.raises(Exception, match="not fully covered"):
        safetensors.safe_open(str(lora), "np")
    for rescan in (False, True):
        summary = scan_json(str(lib))
        assert summary["unchanged"] == (1 if rescan else 0)
        [error] = summary["error_files"]
        assert summary["errors"] == 1 and error["path"] == str(lora)
        assert "100 bytes after the last tensor" in error["reason"]


# -- 6. resolve shows damage -------------------------------------------------------------------


def _sd1_lora(path: Path, seed: int = 2) -> Path:
    specs = kohya_lora([("lora_unet_", sd1_unet_modules())], rank=4)
    return write_safetensors(path, specs, data="random", seed=seed)


def _half_written_checkpoint(path: Path) -> Path:
    """A full-size SD1.5 checkpoint with bytes in every MiB of its first half (as a real
    model's weights have), its second half never written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = write_safetensors(path, base_models.unet_checkpoint("sd1"))
    size = ckpt.stat().st_size
    with ckpt.open("r+b") as fh:
        for at in range(_data_start(ckpt), size // 2, MiB):
            fh.seek(at)
            fh.write(b"\x3c\x11" * 8)
    return ckpt


def _resolve(run_cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_cli(*args, "--json")
    assert code in (0, 1), err
    value = json.loads(out)
    assert isinstance(value, dict)
    return code, value


def _reasons(part: dict[str, Any], status: str) -> list[str]:
    return [r["reason"] for r in part["reasons"] if r["status"] == status]


def test_resolve_by_path_warns_of_damage_and_rejects_what_cannot_load(
    run_cli: Cli, tmp_path: Path
) -> None:
    ckpt = _half_written_checkpoint(tmp_path / "sd15.safetensors")
    filling = _sd1_lora(tmp_path / "filling.safetensors")
    (tmp_path / "filling.safetensors.aria2").write_bytes(b"\0\1\0\0")
    trailing = _trailing(tmp_path / "trailing.safetensors")
    good = _sd1_lora(tmp_path / "good.safetensors", seed=4)
    args = ["resolve", str(ckpt), "--catalog", str(tmp_path / "none.db")]
    for lora in (filling, trailing, good):
        args += ["--lora", str(lora)]
    code, result = _resolve(run_cli, *args)
    assert code == 1 and result["compatible"] is False
    base = result["checkpoint"]
    assert base["status"] == "accepted"
    [warned] = _reasons(base, "warn")
    assert "the tensor data ends in 64 MiB or more of zeros" in warned and DAMAGE in warned
    by_path = {Path(p["path"]).name: p for p in result["parts"]}
    assert by_path["filling.safetensors"]["status"] == "rejected"
    assert (
        "aria2 has not finished downloading"
        in _reasons(by_path["filling.safetensors"], "reject")[0]
    )
    assert by_path["trailing.safetensors"]["status"] == "rejected"
    [refused] = _reasons(by_path["trailing.safetensors"], "reject")
    assert "100 bytes after the last tensor" in refused and "library refuses" in refused
    assert by_path["good.safetensors"]["status"] == "accepted"
    assert _reasons(by_path["good.safetensors"], "warn") == []


def test_resolve_by_catalog_name_shows_why_a_row_is_an_error(
    run_cli: Cli, tmp_path: Path, catalog_url: str, scan_json: Callable[..., dict[str, Any]]
) -> None:
    lib = tmp_path / "lib"
    ckpt = _half_written_checkpoint(lib / "sd15.safetensors")
    cut = _sd1_lora(lib / "cut_lora.safetensors")
    os.truncate(cut, cut.stat().st_size // 2)
    zeros = lib / "allzero_ckpt.safetensors"
    zeros.touch()
    os.truncate(zeros, 64 * MiB)
    summary = scan_json(str(lib))
    assert summary["errors"] == 2
    code, result = _resolve(
        run_cli, "--catalog", catalog_url, "resolve", "sd15", "--lora", "cut_lora"
    )
    assert code == 1
    [damaged] = _reasons(result["checkpoint"], "warn")
    assert "64 MiB or more of zeros" in damaged  # (the scan's warning, by name)
    [lora] = result["parts"]
    assert lora["status"] == "rejected"
    [why] = _reasons(lora, "reject")
    assert why.startswith("the file does not read: ") and "the file is truncated" in why
    assert "could not tell what this file is" not in json.dumps(lora)
    _code, result = _resolve(run_cli, "--catalog", catalog_url, "resolve", "allzero_ckpt")
    base = result["checkpoint"]
    assert base["status"] == "rejected"
    [why] = _reasons(base, "reject")
    assert "nothing but zero bytes" in why and "not a checkpoint" not in why
    assert ckpt.exists()


# -- 11. a file known to be all zeros is not read whole -----------------------------------------


def test_scan_does_not_hash_a_file_that_is_all_zeros(
    tmp_path: Path, scan_json: Callable[..., dict[str, Any]], cli_json: Callable[..., Any]
) -> None:
    lib = tmp_path / "big"
    lib.mkdir()
    flux = lib / "flux1-dev.safetensors"
    flux.touch()
    os.truncate(flux, 8 << 30)  # (8 GiB, sparse: hashing it would read 8 GiB of zeros)
    summary = scan_json(str(lib))
    [error] = summary["error_files"]
    assert "nothing but zero bytes" in error["reason"]
    [model] = cli_json("ls")
    assert model["sha256"] is None and model["autov2"] is None
    again = scan_json(str(lib))
    assert again["unchanged"] == 1 and again["errors"] == 1
