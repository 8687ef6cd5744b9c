"""Zeros that are there by design are no unfinished download, and a checkpoint stored twice is
no polyglot without zip64 records either.

A freshly initialised LoRA (every ``lora_up`` / PEFT ``lora_B`` weight zero) was reported as
"pieces an unfinished torrent or download never wrote", and a fresh ControlNet (its zero
convolutions last in the file) as a zero tail "an unfinished or preallocated download?". A LoRA
whose every up factor is zero now gets one warning that says it is untrained. A torch checkpoint
re-zipped without zip64 records and stored twice was ``unsafe`` ("bytes sit between the central
directory and its end record ... polyglot"), while the zip64 copy was a warning.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.registry.audit import audit_path
from modelsafe.registry.inspect import ZERO_TAIL_MIN_FILE, zero_tail_warnings
from modelsafe.registry.read import read_index
from modelsafe.testing.safetensors_writer import safetensors_header

MiB = 1 << 20
ZEROS = "zeros in"  # the zero-run warning
UNTRAINED = "untrained LoRA"
Spec = tuple[str, str, tuple[int, ...]]


def _write(path: Path, specs: list[Spec], fill: Callable[[str], str]) -> Path:
    """A safetensors file whose tensors hold what ``fill(name)`` says: "data" (non-zero bytes),
    "zeros" (written), "hole" (never written) or "tail" (a hole but for its last MiB of data)."""
    head, size = safetensors_header(specs)
    offsets = json.loads(head[8:])
    with open(path, "wb") as fh:
        fh.write(head)
        for name, _dtype, _shape in specs:
            begin, end = offsets[name]["data_offsets"]
            what = fill(name)
            at = len(head) + begin
            if what == "tail":
                at = len(head) + max(begin, end - MiB)
                what = "data"
            fh.seek(at)
            n = len(head) + end - at
            if what != "hole":
                fh.write(
                    bytes(n) if what == "zeros" else b"\x3c\x11" * (n // 2) + b"\x01" * (n % 2)
                )
        fh.truncate(len(head) + size)
    return path


def _lora(peft: bool) -> list[Spec]:
    """A rank-4 LoRA of 16 modules: each up factor 4 MiB, each down factor 64 KiB."""
    specs: list[Spec] = []
    for i in range(16):
        if peft:
            stem = f"base_model.model.unet.blocks.{i:02}.to_q"
            specs += [(f"{stem}.lora_A.weight", "F16", (4, 8192))]
            specs += [(f"{stem}.lora_B.weight", "F16", (524288, 4))]
        else:
            stem = f"lora_unet_blocks_{i:02}_to_q"
            specs += [(f"{stem}.alpha", "F16", ())]
            specs += [(f"{stem}.lora_down.weight", "F16", (4, 8192))]
            specs += [(f"{stem}.lora_up.weight", "F16", (524288, 4))]
    return specs


def _fresh_lora(path: Path, peft: bool, ups: str) -> Path:
    """A LoRA fresh from its initialisation: every up factor zero (``ups``: written or holes)."""
    return _write(path, _lora(peft), lambda n: ups if "lora_up" in n or "lora_B" in n else "data")


def _inspect(run_cli: Any, path: Path, *flags: str) -> list[str]:
    code, out, err = run_cli("inspect", str(path), "--json", *flags)
    assert code == 0, err
    warnings = json.loads(out)["warnings"]
    assert isinstance(warnings, list)
    return warnings


@pytest.mark.parametrize("peft", [False, True], ids=["kohya", "peft"])
def test_a_fresh_lora_is_untrained_not_an_unfinished_download(
    run_cli: Any, tmp_path: Path, peft: bool
) -> None:
    path = _fresh_lora(tmp_path / "fresh.safetensors", peft, "zeros")
    warnings = _inspect(run_cli, path, "--hash")
    assert not [w for w in warnings if ZEROS in w or "ends in" in w], warnings
    up = "lora_B" if peft else "lora_up"
    assert f"untrained LoRA: every {up} weight is zero, so it changes nothing" in warnings


def test_a_fresh_lora_copied_sparse_has_no_holes_warning(run_cli: Any, tmp_path: Path) -> None:
    """(``cp --sparse=always`` makes its zero up factors holes, seen without reading.)"""
    path = _fresh_lora(tmp_path / "fresh.safetensors", False, "hole")
    assert not [w for w in _inspect(run_cli, path) if ZEROS in w]


def test_a_trained_lora_gets_no_untrained_warning(run_cli: Any, tmp_path: Path) -> None:
    path = _write(tmp_path / "trained.safetensors", _lora(False), lambda n: "data")
    assert not [w for w in _inspect(run_cli, path, "--hash") if UNTRAINED in w]


def test_missing_pieces_of_a_lora_outside_its_up_factors_still_count(
    run_cli: Any, tmp_path: Path
) -> None:
    """A LoRA whose up factors are trained (data) and whose down factors, padded here to 4 MiB,
    a download never wrote: the zeros are not by design."""
    specs = [(n, d, (4, 524288) if "lora_down" in n else s) for n, d, s in _lora(False)]
    path = _write(
        tmp_path / "cut.safetensors", specs, lambda n: "zeros" if "lora_down" in n else "data"
    )
    warnings = _inspect(run_cli, path, "--hash")
    assert [w for w in warnings if ZEROS in w], warnings
    assert not [w for w in warnings if UNTRAINED in w]


def _controlnet(diffusers: bool) -> list[Spec]:
    """A ControlNet of at least ZERO_TAIL_MIN_FILE whose zero convolutions (6 of 4 MiB) come last
    in the sorted keys, after a big trained tensor (a hole but for its last MiB)."""
    big = (ZERO_TAIL_MIN_FILE // 2,)
    if diffusers:
        zero = [f"controlnet_down_blocks.{i}.weight" for i in range(5)]
        zero += ["controlnet_mid_block.weight"]
        return [("conv_in.weight", "F16", big), *((n, "F16", (2 * MiB,)) for n in zero)]
    zero = ["control_model.middle_block_out.0.weight"]
    zero += [f"control_model.zero_convs.{i}.0.weight" for i in range(5)]
    return [("control_model.input_blocks.0.0.weight", "F16", big)] + [
        (n, "F16", (2 * MiB,)) for n in zero
    ]


@pytest.mark.parametrize("diffusers", [False, True], ids=["ldm", "diffusers"])
def test_a_fresh_controlnet_has_no_zero_tail(tmp_path: Path, diffusers: bool) -> None:
    path = _write(
        tmp_path / "controlnet.safetensors",
        _controlnet(diffusers),
        lambda n: "tail" if n.endswith(("conv_in.weight", "input_blocks.0.0.weight")) else "zeros",
    )
    assert path.stat().st_size >= ZERO_TAIL_MIN_FILE
    assert zero_tail_warnings(read_index(path)) == []


def test_a_controlnet_whose_last_trained_tensors_are_zeros_has_a_zero_tail(
    tmp_path: Path,
) -> None:
    """Zeros of trained tensors before the zero convolutions count, and only they."""
    specs = _controlnet(False)
    specs[1:1] = [(f"control_model.time_embed.{i}.weight", "F16", (2 * MiB,)) for i in (0, 2)]
    path = _write(
        tmp_path / "controlnet.safetensors",
        specs,
        lambda n: "tail" if n.endswith("input_blocks.0.0.weight") else "zeros",
    )
    [found] = zero_tail_warnings(read_index(path))
    assert "the last 8.0 MiB of tensor data (2 tensors) are all zeros" in found


# A torch checkpoint re-zipped by Python's zipfile: no zip64 records.


def _nozip64_checkpoint() -> bytes:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.arange(16, dtype=torch.float32)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for info in src.infolist():
            zf.writestr(info.filename, src.read(info.filename))
    data = out.getvalue()
    assert b"PK\x06\x06" not in data
    return data


def test_a_checkpoint_without_zip64_stored_twice_is_a_warning(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    full = _nozip64_checkpoint()
    path = tmp_path / "twice.pt"
    path.write_bytes(full + full)
    assert torch.load(path, weights_only=True)["w"][3] == 3
    verdict = audit_path(path)
    assert verdict.status == "safe", verdict.findings
    [warning] = [f for f in verdict.findings if f.severity == "warning"]
    assert "holds the archive twice" in warning.message


def test_a_gap_before_the_end_record_stored_twice_stays_unsafe(tmp_path: Path) -> None:
    """The first copy's own bytes between its central directory and its end record are still
    seen (zipfile shifts every offset by them)."""
    full = _nozip64_checkpoint()
    eocd = full.rfind(b"PK\x05\x06")
    gapped = full[:eocd] + os.urandom(64).replace(b"PK", b"pk") + full[eocd:]
    path = tmp_path / "twice.pt"
    path.write_bytes(gapped + gapped)
    verdict = audit_path(path)
    assert verdict.status == "unsafe"
    assert "polyglot" in {f.code for f in verdict.findings if f.severity == "unsafe"}
