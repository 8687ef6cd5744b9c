"""The parallel pass (lanes, windows, shared reading) gives the same values as the serial one."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import blake3
import pytest

import modelsafe.registry.hashing as hashing
from modelsafe.errors import FileReadError
from modelsafe.registry.hashing import hash_file, plan_pass, read_shares
from modelsafe.registry.read import read_index
from modelsafe.testing import write_safetensors

SPECS = [("a.weight", "F16", (600, 1000)), ("b", "F32", (5000,)), ("c", "BF16", (0,))]


class _Cost:
    def __init__(self, name: str, cost: float | None) -> None:
        self.name = name
        if cost is not None:
            self.cost = cost

    def update(self, offset: int, data: bytes | memoryview) -> None:
        pass

    def hexdigest(self) -> str | None:
        return None


class _Sha(_Cost):
    def __init__(self) -> None:
        super().__init__("sha256", 1.0)
        self._h = hashlib.sha256()

    def update(self, offset: int, data: bytes | memoryview) -> None:
        self._h.update(data)

    def hexdigest(self) -> str | None:
        return self._h.hexdigest()


def _check(path: Path, result: dict[str, str | None]) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    sha = hashlib.sha256(raw).hexdigest()
    assert result["sha256"] == sha
    assert result["autov1"] == hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8]
    assert result["autov3"] == hashlib.sha256(raw[8 + n :]).hexdigest()
    assert result["blake3"] == blake3.blake3(raw).hexdigest()
    assert result["crc32"] == struct.pack("<I", zlib.crc32(raw)).hex()


@pytest.mark.parametrize(
    ("lanes", "chunk", "window"), [(2, 1 << 20, 4), (2, 1000, 3), (3, 4096, 2), (4, 65536, 1)]
)
def test_parallel_pass_matches_serial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lanes: int, chunk: int, window: int
) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", SPECS, data="random")  # ~1.2 MB
    index = read_index(path)
    monkeypatch.setattr(hashing, "LANES", 1)
    serial = hash_file(path, index)
    monkeypatch.setattr(hashing, "LANES", lanes)
    monkeypatch.setattr(hashing, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "CHUNK_SIZE", chunk)
    monkeypatch.setattr(hashing, "WINDOW_CHUNKS", window)
    parallel = hash_file(path, index)
    assert parallel == serial
    _check(path, parallel)
    assert parallel["content_id"]


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 8192, 3 * 8192 + 17])
def test_parallel_pass_at_window_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Files ending exactly on, just before and just after a window (here 8 KiB) boundary."""
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(size))
    monkeypatch.setattr(hashing, "LANES", 2)
    monkeypatch.setattr(hashing, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 4096)
    monkeypatch.setattr(hashing, "WINDOW_CHUNKS", 2)
    raw = path.read_bytes()
    result = hash_file(path)
    assert result["sha256"] == hashlib.sha256(raw).hexdigest()
    assert result["blake3"] == blake3.blake3(raw).hexdigest()
    assert result["crc32"] == struct.pack("<I", zlib.crc32(raw)).hex()


def test_a_hasher_that_raises_in_a_lane_loses_only_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(_Cost):
        def update(self, offset: int, data: bytes | memoryview) -> None:
            if offset > 5000:
                raise ValueError("bad chunk")

    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(50_000))
    monkeypatch.setattr(hashing, "LANES", 2)
    monkeypatch.setattr(hashing, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 4096)
    sha = _Sha()
    size, failures = hashing.stream_hashers(path, [sha, Broken("broken", 1.0)])
    assert size == 50_000 and failures == {"broken": "ValueError: bad chunk"}
    assert sha.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_directory_is_a_read_error_in_both_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for min_bytes in (0, 1 << 40):
        monkeypatch.setattr(hashing, "LANES", 2)
        monkeypatch.setattr(hashing, "PARALLEL_MIN_BYTES", min_bytes)
        with pytest.raises(FileReadError):
            hash_file(tmp_path)


def test_plan_pass_balances_by_cost() -> None:
    hashers = [
        _Cost("sha256", 1.0),
        _Cost("autov3", 1.0),
        _Cost("blake3", 0.24),
        _Cost("content_id", 0.24),
        _Cost("crc32", 0.04),
        _Cost("autov1", 0.0),
    ]
    groups = plan_pass(hashers, 2).groups
    names = [{h.name for h in g} for g in groups]
    assert {"sha256", "autov3"} not in names  # the two SHA-256 streams run on different cores
    assert all(len(n & {"sha256", "autov3"}) == 1 for n in names)
    assert all(len(n & {"blake3", "content_id"}) == 1 for n in names)
    assert len(plan_pass(hashers, 1).groups) == 1
    assert len(plan_pass(hashers[:1], 8).groups) == 1  # one hasher: no idle threads
    assert plan_pass([], 4).groups == [[]]
    # unknown cost counts as a SHA-256
    assert len(plan_pass([_Cost("x", None), _Cost("y", None)], 2).groups) == 2


def test_read_shares_even_out_the_lanes() -> None:
    shares = read_shares([1.28, 1.24], 0.28)
    assert sum(shares) == pytest.approx(1.0)
    assert shares[1] > shares[0]  # the lighter lane reads more
    assert 1.28 + shares[0] * 0.28 == pytest.approx(1.24 + shares[1] * 0.28)
    assert read_shares([1.0, 0.0], 0.28) == [0.0, 1.0]  # all the reading to the idle lane
    assert read_shares([0.5, 0.5, 0.5], 0.3) == pytest.approx([1 / 3] * 3)


def test_autov3_of_a_non_safetensors_file_follows_civitai(tmp_path: Path) -> None:
    """A zip .ckpt: its first 8 bytes read as a header length are >= 16 MiB, so AutoV3 hashes
    from byte 8, as Civitai's scanner does for every file."""
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.arange(10, dtype=torch.float32)}, tmp_path / "m.ckpt")
    path = tmp_path / "m.ckpt"
    head = int.from_bytes(path.read_bytes()[:8], "little")
    assert head >= hashing.AUTOV3_HEADER_LIMIT  # "PK\x03\x04..." read as a length
    index = read_index(path)
    result = hash_file(path, index)
    raw = path.read_bytes()
    assert result["sha256"] == hashlib.sha256(raw).hexdigest()
    assert result["autov3"] == hashlib.sha256(raw[8:]).hexdigest() and result["content_id"]


@pytest.mark.parametrize("lanes", [2, 3])
def test_header_of_16_mib_in_the_parallel_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lanes: int
) -> None:
    """N >= 16 MiB: AutoV3 from byte 8 (Civitai), plus a third SHA-256 stream from 8 + N for the
    embedded kohya hash; all three on their lanes give the serial values."""
    data_region = os.urandom(3 << 20)
    kohya = hashlib.sha256(data_region).hexdigest()
    meta = {"blob": "x" * (16 << 20), "sshs_model_hash": kohya}
    path = write_safetensors(tmp_path / "big.safetensors", [("a", "U8", (3 << 20,))], metadata=meta)
    raw = bytearray(path.read_bytes())
    raw[-len(data_region) :] = data_region
    path.write_bytes(bytes(raw))
    index = read_index(path)
    monkeypatch.setattr(hashing, "LANES", lanes)
    monkeypatch.setattr(hashing, "PARALLEL_MIN_BYTES", 0)
    result = hash_file(path, index)
    assert result["sha256"] == hashlib.sha256(raw).hexdigest()
    assert result["autov3"] == hashlib.sha256(bytes(raw[8:])).hexdigest()
    assert result["stale_embedded_hashes"] is None  # the tensor-data stream matched kohya's hash
    assert result["blake3"] == blake3.blake3(bytes(raw)).hexdigest()


def test_a_lane_thread_that_cannot_start_leaves_no_thread_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(100_000))
    monkeypatch.setattr(hashing, "LANES", 3)
    monkeypatch.setattr(hashing, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 4096)
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name == "modelsafe-hash-2":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    hashers = [_Cost(name, 1.0) for name in ("a", "b", "c")]
    with pytest.raises(RuntimeError, match="can't start new thread"):
        hashing.stream_hashers(path, hashers)
    assert not [t for t in threading.enumerate() if t.name.startswith("modelsafe-hash-")]
