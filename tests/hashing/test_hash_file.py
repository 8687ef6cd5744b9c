"""hash_file: every hash checked against an independent computation, Civitai's known values,
chunk boundaries, content_id across formats, embedded-hash checks, third-party hashers."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import blake3
import pytest

import modelsafe.registry.hashing as hashing
from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.registry.hashing import hash_file
from modelsafe.registry.read import read_index
from modelsafe.testing import fresh_plugin_manager, write_safetensors

SPECS = [("a.weight", "F16", (600, 1000)), ("b", "F32", (50,)), ("c", "BF16", (0,))]


def _expected(raw: bytes) -> dict[str, Any]:
    (n,) = struct.unpack("<Q", raw[:8])
    sha = hashlib.sha256(raw).hexdigest()
    return {
        "sha256": sha,
        "autov1": hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8],
        "autov2": sha[:10],
        "autov3": hashlib.sha256(raw[8 + n :]).hexdigest(),
        "blake3": blake3.blake3(raw).hexdigest(),
        "crc32": struct.pack("<I", zlib.crc32(raw)).hex(),
    }


@pytest.mark.parametrize("chunk", [hashing.CHUNK_SIZE, 4096, 1000])
def test_every_hash_matches_an_independent_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(hashing, "CHUNK_SIZE", chunk)
    path = write_safetensors(tmp_path / "m.safetensors", SPECS, data="random")  # ~1.2 MB
    raw = path.read_bytes()
    result = hash_file(path, read_index(path))
    for name, value in _expected(raw).items():
        assert result[name] == value, name
    assert result["content_id"] and len(result["content_id"]) == 64
    assert result["stale_embedded_hashes"] is None


def test_civitai_known_values(tmp_path: Path) -> None:
    """civitai/model-scanner HashTaskTests: "hello world" -> these values (upper case there)."""
    path = tmp_path / "dummy.txt"
    path.write_bytes(b"hello world")
    result = hash_file(path)
    assert result["sha256"] == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert result["autov2"] == "b94d27b993"
    assert result["blake3"] == "d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"
    assert result["crc32"] == "85114a0d"  # little-endian bytes of zlib's 0x0d4a1185
    # A1111 seeks past the end and hashes nothing (Civitai lists no AutoV1 for such files)
    assert result["autov1"] == "e3b0c442"
    # AutoV3 as Civitai's scanner computes it for any file: "hello wo" read as a header length
    # is far over 16 MiB, so it hashes from byte 8
    assert result["autov3"] == hashlib.sha256(b"rld").hexdigest()
    assert result["content_id"] is None


def test_autov3_with_a_header_of_16_mib_or_more(tmp_path: Path) -> None:
    """Civitai does not skip such a header (it hashes from byte 8); kohya always skips it."""
    data_region = bytes(range(256)) * 4
    kohya = hashlib.sha256(data_region).hexdigest()
    meta = {
        "blob": "x" * (16 << 20),
        "sshs_model_hash": kohya,
        "modelspec.hash_sha256": "0x" + kohya,
    }
    path = write_safetensors(tmp_path / "big.safetensors", [("a", "U8", (1024,))], metadata=meta)
    raw = bytearray(path.read_bytes())
    raw[-1024:] = data_region
    path.write_bytes(bytes(raw))
    result = hash_file(path, read_index(path))
    assert result["autov3"] == hashlib.sha256(bytes(raw[8:])).hexdigest()
    assert result["stale_embedded_hashes"] is None  # checked against kohya's definition


def test_stale_embedded_hashes_are_reported(tmp_path: Path) -> None:
    meta = {"sshs_model_hash": "ab" * 32, "modelspec.hash_sha256": "0x" + "cd" * 32}
    path = write_safetensors(tmp_path / "lora.safetensors", SPECS[:2], metadata=meta, data="random")
    result = hash_file(path, read_index(path))
    stale = result["stale_embedded_hashes"]
    assert stale and "sshs_model_hash" in stale and "modelspec.hash_sha256" in stale


def test_fresh_embedded_hash_is_not_stale(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "x.safetensors", SPECS[:2], data="random")
    autov3 = hash_file(path, read_index(path))["autov3"]
    assert autov3
    tensors = path.read_bytes()[8 + struct.unpack("<Q", path.read_bytes()[:8])[0] :]
    path2 = write_safetensors(
        tmp_path / "y.safetensors", SPECS[:2], metadata={"sshs_model_hash": autov3.upper()}
    )
    raw = bytearray(path2.read_bytes())
    raw[-len(tensors) :] = tensors
    path2.write_bytes(bytes(raw))
    result = hash_file(path2, read_index(path2))
    assert result["autov3"] == autov3 and result["stale_embedded_hashes"] is None


def test_content_id_same_for_ckpt_and_converted_safetensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import safetensors.torch

    state = {
        "w": torch.randn(30, 40, dtype=torch.float16),
        "b": torch.arange(5, dtype=torch.float32),
        "view": torch.randn(8, 8)[2:5],  # a contiguous view into a larger storage
    }
    torch.save(state, tmp_path / "m.ckpt")
    contiguous = {k: v.contiguous() for k, v in state.items()}
    safetensors.torch.save_file(contiguous, tmp_path / "m.safetensors")
    ids = [hash_file(p, read_index(p))["content_id"] for p in tmp_path.iterdir()]
    assert ids[0] is not None and ids[0] == ids[1]
    contiguous["b"][0] = 42
    safetensors.torch.save_file(contiguous, tmp_path / "changed.safetensors")
    changed = tmp_path / "changed.safetensors"
    assert hash_file(changed, read_index(changed))["content_id"] != ids[0]


def test_content_id_none_when_an_offset_is_unknown(tmp_path: Path) -> None:
    from dataclasses import replace

    path = write_safetensors(tmp_path / "m.safetensors", SPECS[:2], data="random")
    index = read_index(path)
    broken = replace(index, tensors=(replace(index.tensors[0], offset=-1), *index.tensors[1:]))
    assert hash_file(path, broken)["content_id"] is None
    no_bytes = replace(index, tensors=(replace(index.tensors[0], nbytes=0), *index.tensors[1:]))
    assert hash_file(path, no_bytes)["content_id"] is None


class _Md5:
    name = "md5"

    def __init__(self) -> None:
        self._h = hashlib.md5()

    def update(self, offset: int, data: bytes | memoryview) -> None:
        self._h.update(data)

    def hexdigest(self) -> str | None:
        return self._h.hexdigest()


class _Broken:
    name = "broken"

    def update(self, offset: int, data: bytes | memoryview) -> None:
        raise RuntimeError("boom")

    def hexdigest(self) -> str | None:
        return "never"


class _ThirdParty:
    @hookimpl
    def modelsafe_hashers(self, index: object) -> list[object]:
        return [_Md5(), _Broken()]


def test_third_party_hashers_join_the_same_pass(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 100_000)
    with fresh_plugin_manager(_ThirdParty()):
        result = hash_file(path)
    assert result["md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert result["broken"] is None and "boom" in (result["hash_failures"] or "")
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_inspect_hash_shows_hashes_and_stale_embedded(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    meta = {"sshs_model_hash": "00" * 32}
    path = write_safetensors(tmp_path / "l.safetensors", SPECS[:2], metadata=meta, data="random")
    code, out, err = run_cli("inspect", str(path), "--hash", "--json")
    assert code == 0, err
    hashes = json.loads(out)["hashes"]
    assert set(hashing.HASH_NAMES) <= set(hashes)
    assert hashes["autov3"] and "sshs_model_hash" in hashes["stale_embedded_hashes"]
    code, out, err = run_cli("inspect", str(path), "--hash")
    assert code == 0 and "stale" in out


class _OwnSha:
    """A third-party hasher that takes the name ``sha256``."""

    name = "sha256"

    def update(self, offset: int, data: bytes | memoryview) -> None:
        pass

    def hexdigest(self) -> str | None:
        return "mine"


class _ShaPlugin:
    @hookimpl
    def modelsafe_hashers(self, index: object) -> list[object]:
        return [_OwnSha()]


def test_autov3_survives_another_hasher_taking_the_sha256_name(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", SPECS[:2], data="random")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    from modelsafe.registry.read import read_index

    with fresh_plugin_manager(_ShaPlugin()):
        names = [h.name for h in hashing.collect_hashers(read_index(path))]
        result = hash_file(path, read_index(path))
    # plugins registered later answer first: the third party takes the name, autov3 is hashed
    # alone (before, it was lost with the built-in pair)
    assert names.count("sha256") == 1 and "autov3" in names
    assert result["sha256"] == "mine"
    assert result["autov3"] == hashlib.sha256(raw[8 + n :]).hexdigest()
