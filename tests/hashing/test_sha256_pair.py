"""sha256 + AutoV3 from one object: the compiled interleaved pair, its hashlib fallback, and the
pass that runs the two streams side by side for part of each window and interleaved for the rest."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modelsafe.registry.hashing as hashing
from modelsafe.registry import sha256_pair
from modelsafe.registry.hashing import LanePlan, hash_file, plan_pass
from modelsafe.registry.read import read_index
from modelsafe.registry.sha256_pair import Sha256AutoV3
from modelsafe.testing import write_safetensors

try:
    from modelsafe.registry import _sha256x2
except ImportError:  # pragma: no cover - only where the extension was not compiled
    _sha256x2 = None  # type: ignore[assignment]

native = pytest.mark.skipif(
    not sha256_pair.NATIVE, reason="no compiled _sha256x2 or no SHA extensions on this CPU"
)


def test_the_extension_was_built() -> None:
    """It is optional for users (no compiler: hashlib does the work); CI must build it."""
    if _sha256x2 is None and os.environ.get("MODELSAFE_TEST_REQUIRE_SERVICES") != "1":
        pytest.skip("modelsafe.registry._sha256x2 was not compiled at install time")
    assert _sha256x2 is not None
    assert isinstance(_sha256x2.AVAILABLE, bool)


@native
@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
    a_skip=st.integers(0, 300),
    b_skip=st.integers(0, 3000),
)
def test_pair_streams_equal_hashlib(data: bytes, cuts: list[int], a_skip: int, b_skip: int) -> None:
    """Any split into pieces, any start of either stream: the FIPS SHA-256 of what each got."""
    pair = _sha256x2.Sha256Pair()
    want_a, want_b = hashlib.sha256(), hashlib.sha256()
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
        piece = data[begin:end]
        a = min(len(piece), max(0, a_skip - begin))
        b = min(len(piece), max(0, b_skip - begin))
        pair.update(memoryview(piece), a, b)
        want_a.update(piece[a:])
        want_b.update(piece[b:])
    got_a, got_b = pair.digests()
    assert (got_a, got_b) == (want_a.digest(), want_b.digest())


@native
def test_pair_rejects_a_start_outside_the_data() -> None:
    pair = _sha256x2.Sha256Pair()
    with pytest.raises(ValueError, match="within the data"):
        pair.update(b"abc", 0, 4)
    with pytest.raises(ValueError, match="within the data"):
        pair.update(b"abc", -1, 0)


def _safetensors_bytes(header_length: int, data: bytes) -> bytes:
    return struct.pack("<Q", header_length) + b" " * header_length + data


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize(("header", "limit"), [(100, 1 << 24), (5000, 4096), (37, None)])
def test_sha256_autov3_values(use_native: bool, header: int, limit: int | None) -> None:
    if use_native and not sha256_pair.NATIVE:
        pytest.skip("no compiled pair on this machine")
    raw = _safetensors_bytes(header, os.urandom(20_000))
    start = 8 + header if limit is None or header < limit else 8
    for mode in ("both", "split", "mixed"):
        h = Sha256AutoV3(limit, native=use_native)
        assert h.native is use_native
        for offset in range(0, len(raw), 777):
            piece = memoryview(raw)[offset : offset + 777]
            if mode == "both" or (mode == "mixed" and offset % 2):
                h.update(offset, piece)
            else:
                h.update_first(offset, piece)
                h.update_second(offset, piece)
        assert h.hexdigest() == hashlib.sha256(raw).hexdigest()
        assert h.extra_hexdigests() == {"autov3": hashlib.sha256(raw[start:]).hexdigest()}


def test_autov3_is_none_for_a_file_too_short_for_a_header() -> None:
    h = Sha256AutoV3(1 << 24)
    h.update(0, b"abc")
    assert h.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    assert h.extra_hexdigests() == {"autov3": None}


@pytest.mark.parametrize("split", [False, True])
def test_autov3_when_the_header_runs_past_the_end(split: bool) -> None:
    """N < 16 MiB but past the end: Civitai's scanner fails to read it; modelsafe says None.
    A header that ends exactly at the end of the file is an empty tensor region."""
    for length, want in ((500, None), (92, hashlib.sha256(b"").hexdigest())):
        raw = _safetensors_bytes(length, b"")[:100]
        h = Sha256AutoV3(1 << 24)
        if split:
            h.update_first(0, raw)
            h.update_second(0, raw)
        else:
            h.update(0, raw)
        assert h.extra_hexdigests() == {"autov3": want}


class _Named:
    def __init__(self, name: str, cost: float) -> None:
        self.name, self.cost = name, cost

    def update(self, offset: int, data: bytes | memoryview) -> None:
        pass

    def hexdigest(self) -> str | None:
        return None


def test_plan_pass_on_two_lanes_balances_the_split_share() -> None:
    pair = Sha256AutoV3(1 << 24, native=False)  # cost 2.0: two plain streams
    others = [_Named("blake3", 0.24), _Named("content_id", 0.24), _Named("crc32", 0.04)]
    plan = plan_pass([pair, *others], 2)
    assert plan.split is pair and len(plan.groups) == 2
    assert plan.groups[0] == [] and {h.name for h in plan.groups[1]} == {
        "blake3",
        "content_id",
        "crc32",
    }
    # lane 1 carries the others and the reading, so it runs the second stream for less than
    # the whole window; both lanes end up equally loaded once lane 1 also reads
    assert 0.0 < plan.split_fraction < 1.0
    assert plan.loads[0] == pytest.approx(plan.loads[1] + hashing.READ_COST)
    assert plan_pass([pair], 1).split is None  # one lane: the pair's own update() does both
    wide = plan_pass([pair, *others], 4)
    assert wide.split is pair and wide.split_fraction == 1.0 and len(wide.groups) >= 2
    heavy = plan_pass([pair, _Named("slow", 3.0)], 2)  # others heavier than the pair
    assert heavy.split_fraction == 0.0


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("use_native", [True, False])
def test_parallel_pass_with_any_split_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fraction: float, use_native: bool
) -> None:
    if use_native and not sha256_pair.NATIVE:
        pytest.skip("no compiled pair on this machine")
    monkeypatch.setattr(sha256_pair, "NATIVE", use_native)
    specs = [(f"t{i}", "F16", (100, 170 + i)) for i in range(12)]
    path = write_safetensors(tmp_path / "m.safetensors", specs, data="random")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    index = read_index(path)
    real_plan = hashing.plan_pass

    def forced(hashers: list, lanes: int) -> LanePlan:  # type: ignore[type-arg]
        plan = real_plan(hashers, lanes)
        plan.split_fraction = fraction
        return plan

    monkeypatch.setattr(hashing, "plan_pass", forced)
    monkeypatch.setattr(hashing._Pass, "_rebalance", lambda self: None)  # keep that share
    monkeypatch.setattr(hashing, "LANES", 2)
    monkeypatch.setattr(hashing, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 4096)
    monkeypatch.setattr(hashing, "WINDOW_CHUNKS", 4)  # 16 KiB windows: the share cuts inside
    result = hash_file(path, index)
    assert result["sha256"] == hashlib.sha256(raw).hexdigest()
    assert result["autov3"] == hashlib.sha256(raw[8 + n :]).hexdigest()
    assert result["autov2"] == result["sha256"][:10]
    assert result["content_id"]


def test_a_split_hasher_that_fails_on_lane_1_does_not_stall_lane_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(Sha256AutoV3):
        def update_second(self, offset: int, data: bytes | memoryview) -> None:
            if offset >= 20_000:
                raise OSError("gone")
            super().update_second(offset, data)

    path = tmp_path / "f.safetensors"
    path.write_bytes(_safetensors_bytes(64, os.urandom(200_000)))
    monkeypatch.setattr(hashing, "LANES", 2)
    monkeypatch.setattr(hashing, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 4096)
    # lane 1 runs the second stream over most of each window, and keeps doing so (the share is
    # not re-balanced by timing here, so the test does not depend on the machine's speed)
    monkeypatch.setattr(hashing._Pass, "_rebalance", lambda self: None)
    broken = Broken(1 << 24)
    other = hashing.TensorDataSha256("other")
    other.cost = 0.0
    size, failures = hashing.stream_hashers(path, [broken, other])
    assert size == 200_072 and failures == {"sha256": "OSError: gone"}
    assert other.hexdigest() == hashlib.sha256(path.read_bytes()[72:]).hexdigest()


def test_the_split_share_moves_toward_the_lane_that_waited(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    pair = Sha256AutoV3(1 << 24)
    plan = LanePlan([[], [_Named("blake3", 0.24)]], [1.0, 1.0], pair, 0.5)
    fd = os.open(path, os.O_RDONLY)
    try:
        job = hashing._Pass(fd, plan, 1 << 20)
        start = job.split_bytes
        assert job.adaptive and start == 2 << 20
        job.released, job.arrived = 0.0, [1.0, 0.8]  # lane 0 arrived last: give lane 1 more
        job._rebalance()
        grown = job.split_bytes
        assert start < grown <= start + job.window // 8 and grown % 4096 == 0
        job.arrived = [job.released + 0.5, job.released + 1.0]
        job._rebalance()
        assert job.split_bytes < grown  # lane 1 arrived last: take some back
        for _ in range(100):  # never outside [0, window]
            job.arrived = [job.released + 1.0, job.released]
            job._rebalance()
        assert job.split_bytes == job.window
    finally:
        os.close(fd)


@native
def test_two_threads_feeding_one_stream_each() -> None:
    """The pass feeds the first stream from lane 0 and the second from lane 1 at the same time:
    a call that feeds one stream must not write to the other (an earlier build re-stored the
    other stream's pending-byte count and now and then lost bytes: wrong digests)."""
    import random
    import threading

    rng = random.Random(3)
    data = os.urandom(4 << 20)
    want = hashlib.sha256(data).digest()
    wrong = 0
    for _ in range(60):
        pair = _sha256x2.Sha256Pair()
        cuts = sorted(rng.sample(range(1, len(data)), 400))
        view = memoryview(data)
        pieces = [view[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

        def first(pair: _sha256x2.Sha256Pair = pair, pieces: list[memoryview] = pieces) -> None:
            for piece in pieces:
                pair.update(piece, 0, len(piece))

        def second(pair: _sha256x2.Sha256Pair = pair, pieces: list[memoryview] = pieces) -> None:
            for piece in pieces:
                pair.update(piece, len(piece), 0)

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wrong += sum(digest != want for digest in pair.digests())
    assert wrong == 0
