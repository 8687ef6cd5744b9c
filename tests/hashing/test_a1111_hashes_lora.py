"""A1111's LoRA hash (``a1111_lora``): what A1111/Forge write in ``Lora hashes`` and look a LoRA
up by (``extensions-builtin/Lora/network.py`` ``NetworkOnDisk``: the metadata's
``sshs_model_hash``, even when stale, else ``hashes.addnet_hash_safetensors``, which always skips
the 8 + N header bytes), recorded by the hashing pass and found by ``modelsafe show``; and a
ModelSpec ``0x`` hash given to ``show``."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from modelsafe.registry.hashing import A1111_LORA, AUTOV3_HEADER_LIMIT, hash_file
from modelsafe.registry.read import read_index
from modelsafe.testing import write_safetensors

LORA = [
    ("lora_unet_x.lora_down.weight", "F32", (16,)),
    ("lora_unet_x.lora_up.weight", "F32", (16,)),
]
STALE = "ab" * 32


def _addnet(path: Path) -> str:
    """A1111's ``addnet_hash_safetensors``: sha256 of everything after 8 + N bytes."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return hashlib.sha256(raw[8 + n :]).hexdigest()


def _stale(folder: Path) -> Path:
    meta = {"sshs_model_hash": STALE, "ss_output_name": "stale"}
    return write_safetensors(folder / "stale.safetensors", LORA, metadata=meta, data="random")


def _big_header(folder: Path) -> Path:
    meta = {"ss_tag_frequency": "x" * (AUTOV3_HEADER_LIMIT + 1024)}
    return write_safetensors(
        folder / "bighdr.safetensors", LORA, metadata=meta, data="random", seed=1
    )


def test_a_stale_embedded_sshs_model_hash_is_the_a1111_hash(tmp_path: Path) -> None:
    path = _stale(tmp_path)
    result = hash_file(path, read_index(path))
    assert result[A1111_LORA] == STALE  # what A1111 writes, though the data hashes otherwise
    assert result["autov3"] == _addnet(path) != STALE
    assert result["stale_embedded_hashes"] and "sshs_model_hash" in result["stale_embedded_hashes"]


def test_a_header_of_16_mib_or_more_is_skipped_for_the_a1111_hash(tmp_path: Path) -> None:
    path = _big_header(tmp_path)
    raw = path.read_bytes()
    result = hash_file(path, read_index(path))
    assert result[A1111_LORA] == _addnet(path)
    assert result["autov3"] == hashlib.sha256(raw[8:]).hexdigest() != _addnet(path)  # Civitai's


def test_a_plain_lora_has_its_autov3_as_a1111_hash_and_other_formats_none(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "plain.safetensors", LORA, data="random")
    result = hash_file(path, read_index(path))
    assert result[A1111_LORA] == result["autov3"] == _addnet(path)
    other = tmp_path / "lora.pt"
    other.write_bytes(b"\x80\x02}q\x00.")  # an empty pickled dict: A1111 uses its full sha256
    assert A1111_LORA not in hash_file(other)


def _show(run_cli: Any, catalog: str, ref: str) -> tuple[int, str, str]:
    code, out, err = run_cli("--catalog", catalog, "show", ref)
    return int(code), str(out), str(err)


def test_show_finds_a_lora_by_the_hash_a1111_wrote(run_cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "loras"
    folder.mkdir()
    stale, big = _stale(folder), _big_header(folder)
    catalog = f"sqlite:///{tmp_path / 'c.db'}"
    code, _out, err = run_cli("--catalog", catalog, "scan", str(folder))
    assert code == 0, err
    for path, digest in ((stale, STALE), (big, _addnet(big))):
        code, out, err = _show(run_cli, catalog, digest[:12])
        assert code == 0, err
        assert out.splitlines()[0].startswith(path.stem), out


def test_show_takes_a_modelspec_0x_hash(run_cli: Any, tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "spec.safetensors", LORA, data="random")
    catalog = f"sqlite:///{tmp_path / 'c.db'}"
    code, _out, err = run_cli("--catalog", catalog, "scan", str(tmp_path))
    assert code == 0, err
    for ref in ("0x" + _addnet(path), "0X" + _addnet(path)[:12].upper()):
        code, out, err = _show(run_cli, catalog, ref)
        assert code == 0, err
        assert out.splitlines()[0].startswith("spec"), out
