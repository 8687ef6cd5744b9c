"""Convert's gather of strided views reads the source with ``pread`` only: byte for byte the
view in C order whatever way each block is read (by span, by runs, by slabs, or split smaller
first), and
a source truncated while a tensor is gathered is a clear error (exit 2, nothing left behind),
never a SIGBUS. Convert also parses the checkpoint once: the audit's read is the one converted,
and a file replaced between the first stat and the audit is refused."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import ConversionError
from modelsafe.registry import convert as convert_mod
from modelsafe.registry.convert import convert_file
from modelsafe.registry.pickle_vm.tensors import StorageRef, TensorRecord

np = pytest.importorskip("numpy")
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

PREFIX = 13  # the storage starts at an odd offset in the file
# numpy stand-ins for dtypes of each size (the bytes are compared, never the values)
DTYPES = {"U8": np.uint8, "I16": np.int16, "I32": np.int32, "I64": np.int64}

# The limits of the gather, small enough that every way of reading a block is taken.
LIMITS = {
    "BLOCK_BYTES": st.sampled_from([1, 2, 8, 24, 64, 1 << 20]),
    "BLOCK_SPAN": st.sampled_from([1, 2, 16, 200, 1 << 20]),
    "READ_COST": st.sampled_from([0, 4, 64, 4096]),
    "MAX_READS": st.sampled_from([1, 4, 1 << 18]),
}


def _gathered(
    view: Any, base: Any, path: Path, limits: dict[str, int], short: bool = False
) -> tuple[bytes, list[str]]:
    """_gather of ``view`` (a strided view of ``base``, which lies at PREFIX in ``path``), and
    the ways its blocks were read: "span" (one read), "runs" (several), "slabs" (several
    buffers), "split" (cut smaller first).
    ``short``: every read returns at most 3 bytes (as reads from a pipe-like or network file
    system may)."""
    itemsize = base.itemsize
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    dtype = next(k for k, v in DTYPES.items() if np.dtype(v) == base.dtype)
    ref = StorageRef("0", dtype, base.size, "cpu")
    record = TensorRecord(
        "t",
        ref,
        dtype,
        tuple(view.shape),
        tuple(s // itemsize for s in view.strides),
        offset // itemsize,
    )
    item = convert_mod._Planned(record, -1, PREFIX)
    ways: list[str] = []
    real_plan = convert_mod._read_plan

    def read_plan(block: Any) -> Any:
        plan = real_plan(block)
        if plan is None:
            ways.append("split")
        elif plan[0] and plan[2] < plan[0][-1][1]:
            ways.append("slabs")
        else:
            ways.append("span" if plan[1] == len(plan[0]) else "runs")
        return plan

    real_fill = convert_mod._BlockReader._fill

    def fill(self: Any, block: Any, dims: Any, inner: int, out: Any) -> None:
        """Within the bounds: at most MAX_READS preads and BLOCK_SPAN bytes at once (but for
        one element), and the output of a block at most BLOCK_BYTES (but for one element)."""
        reads = math.prod(n for _, n, _ in dims[inner:])
        slot = block.itemsize + sum((n - 1) * st for st, n, _ in dims[:inner])
        if reads > 1 or slot > block.itemsize:
            assert reads <= convert_mod.MAX_READS and reads * slot <= convert_mod.BLOCK_SPAN
        assert len(self.output) <= max(convert_mod.BLOCK_BYTES, block.itemsize)
        real_fill(self, block, dims, inner, out)

    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in limits.items():
                mp.setattr(convert_mod, name, value)
            mp.setattr(convert_mod, "_read_plan", read_plan)
            mp.setattr(convert_mod._BlockReader, "_fill", fill)
            if short:
                real_preadv = os.preadv

                def preadv(fd: int, buffers: list[Any], offset: int) -> int:
                    return real_preadv(fd, [memoryview(buffers[0])[:3]], offset)

                mp.setattr(convert_mod.os, "preadv", preadv)
            out = b"".join(bytes(p) for p in convert_mod._gather(fd, item, path))
    finally:
        os.close(fd)
    return out, ways


def _stored(base: Any) -> Path:
    fh = tempfile.NamedTemporaryFile(suffix=".bin", delete=False)  # noqa: SIM115
    with fh:
        fh.write(b"\xee" * PREFIX + base.tobytes() + b"\xee" * 7)
    return Path(fh.name)


def _base(size: int | list[int], dtype: str, seed: int) -> Any:
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    raw = np.random.default_rng(seed).integers(0, 256, size=int(np.prod(size)) * itemsize)
    return raw.astype(np.uint8).view(DTYPES[dtype]).reshape(size)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
    steps=st.lists(st.integers(1, 3), min_size=4, max_size=4),
    start=st.integers(0, 1),
    expand=st.booleans(),
    dtype=st.sampled_from(sorted(DTYPES)),
    limits=st.fixed_dictionaries(LIMITS),
    short=st.booleans(),
)
def test_gather_is_the_view_in_c_order_whatever_the_way(
    shape: list[int],
    seed: int,
    steps: list[int],
    start: int,
    expand: bool,
    dtype: str,
    limits: dict[str, int],
    short: bool,
) -> None:
    """Stepped, permuted (transposed) and broadcast (stride 0, as torch's expand() saves it)."""
    base = _base([s * 3 + 1 for s in shape], dtype, seed)
    view = base[tuple(slice(start, None, k) for k in steps[: len(shape)])]
    view = view.transpose(np.random.default_rng(seed + 1).permutation(view.ndim))
    if expand:
        view = np.broadcast_to(view[:, None], (view.shape[0], 3, *view.shape[1:]))
    path = _stored(base)
    try:
        out, ways = _gathered(view, base, path, limits, short)
    finally:
        path.unlink()
    assert out == np.ascontiguousarray(view).tobytes()
    assert ways or view.size == 0


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    dims=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9)), min_size=0, max_size=4),
    offset=st.integers(0, 5),
    seed=st.integers(0, 1000),
    dtype=st.sampled_from(sorted(DTYPES)),
    limits=st.fixed_dictionaries(LIMITS),
    short=st.booleans(),
)
def test_gather_of_any_strides_overlapping_or_zero(
    dims: list[tuple[int, int]],
    offset: int,
    seed: int,
    dtype: str,
    limits: dict[str, int],
    short: bool,
) -> None:
    """Any shape and non-negative strides torch's as_strided can save: elements read twice
    (overlapping windows), stride 0, empty dims, a 0-d tensor."""
    shape = tuple(n for n, _ in dims)
    strides = tuple(s for _, s in dims)
    size = offset + 1 + sum((n - 1) * s for n, s in dims if n)
    base = _base(size, dtype, seed)
    view = np.lib.stride_tricks.as_strided(
        base[offset:], shape=shape, strides=tuple(s * base.itemsize for s in strides)
    )
    path = _stored(base)
    try:
        out, _ways = _gathered(view, base, path, limits, short)
    finally:
        path.unlink()
    assert out == np.ascontiguousarray(view).tobytes()


@pytest.mark.parametrize(
    ("make", "limits", "way"),
    [
        # a transposed matrix, by blocks of 4 of its rows: a run of 4 elements per source row
        (lambda b: b.T, {"BLOCK_BYTES": 512, "READ_COST": 16}, {"runs"}),
        (lambda b: b[:, ::2], {}, {"span"}),  # dense: one read of its span
        (lambda b: b[::3, ::5], {"READ_COST": 0}, {"runs"}),  # reads cost nothing: no gaps read
        # runs of one element (1024 preads) cost more than 6 slabs of 1 KiB spans
        (lambda b: b.T, {"BLOCK_BYTES": 128, "BLOCK_SPAN": 1024}, {"slabs"}),
        # too many reads for the whole block, and too long ones: cut until a way fits
        (lambda b: b.T, {"MAX_READS": 4, "BLOCK_SPAN": 64}, "split"),
    ],
)
def test_each_way_is_taken_where_it_costs_least(
    make: Any, limits: dict[str, int], way: Any
) -> None:
    base = np.arange(64 * 48, dtype=np.int16).reshape(64, 48)
    path = _stored(base)
    try:
        out, ways = _gathered(make(base), base, path, limits)
    finally:
        path.unlink()
    assert out == make(base).tobytes()
    if way == "split":  # the pieces of a split block are read some other way
        assert "split" in ways and set(ways) - {"split"}
    else:
        assert set(ways) == way


@pytest.mark.parametrize(
    ("rows", "columns", "way", "reads", "biggest"),
    [
        # 32 rows of the view (512 B each) a block, spanning all 2 MiB: a run of 32 elements
        # per source row (256 preads of 64 bytes a block, 128 blocks), never the span
        (256, 4096, "runs", 128 * 256, 64),
        # 16 source columns: one row of the view a block, whose runs would be one element each;
        # read by 4 slabs of 64 KiB spans a block instead (16 blocks)
        (8192, 16, "slabs", 16 * 4, 64 << 10),
    ],
)
def test_reads_of_a_transposed_matrix_stay_few_and_bounded(
    monkeypatch: pytest.MonkeyPatch, rows: int, columns: int, way: str, reads: int, biggest: int
) -> None:
    base = np.arange(rows * columns, dtype=np.int16).reshape(rows, columns)
    path = _stored(base)
    sizes: list[int] = []
    real = os.preadv

    def preadv(fd: int, buffers: list[Any], offset: int) -> int:
        sizes.append(sum(len(b) for b in buffers))
        return real(fd, buffers, offset)

    monkeypatch.setattr(convert_mod.os, "preadv", preadv)
    try:
        limits = {"BLOCK_BYTES": 16 << 10, "BLOCK_SPAN": 64 << 10}
        out, ways = _gathered(base.T, base, path, limits)
    finally:
        path.unlink()
    assert out == base.T.tobytes()
    assert set(ways) == {way}
    assert len(sizes) == reads and biggest - 64 < max(sizes) <= biggest


torch = pytest.importorskip("torch")


def _transposed_checkpoint(folder: Path, legacy: bool) -> tuple[Path, int]:
    """A checkpoint whose only tensor is gathered, and a size that cuts its storage in two."""
    from modelsafe.registry.torch_archive import read_torch_file

    src = folder / "model.ckpt"
    weight = torch.arange(256 * 96, dtype=torch.float32).reshape(256, 96)
    torch.save({"state_dict": {"wt": weight.t()}}, src, _use_new_zipfile_serialization=not legacy)
    tf = read_torch_file(src, "legacy-torch" if legacy else "zip")
    (blob,) = tf.storages.values()
    return src, blob.offset + blob.nbytes // 2


# Run in a child process: a regression to a mapped read would kill it with SIGBUS (and would
# kill pytest itself in-process). Its _blocks truncates the source once ``after`` blocks were
# given out.
CHILD = """
import os, sys
from modelsafe.registry import convert
src, size, after, dst = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
real = convert._blocks
def blocks(view, *args, **kwargs):
    given = 0
    if after == 0:
        os.truncate(src, size)
    for block in real(view, *args, **kwargs):
        yield block
        given += 1
        if given == after:
            os.truncate(src, size)
convert._blocks = blocks
convert.BLOCK_BYTES = 4096  # many blocks: the source is cut between two
from modelsafe.cli import main
sys.argv = ["modelsafe", "convert", src, dst, "--force"]
main()
"""


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("after", [0, 1, 3])
def test_a_source_truncated_mid_gather_exits_2_not_sigbus(
    tmp_path: Path, legacy: bool, after: int
) -> None:
    src, size = _transposed_checkpoint(tmp_path, legacy)
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"previous")  # replaced only by a verified file
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(size), str(after), str(dst)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {proc.stderr}"
    assert proc.returncode == 2, proc.stderr
    assert "ended before its last tensor" in proc.stderr
    assert "nothing was written at the destination" in proc.stderr
    assert dst.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt", "out.safetensors"]


# -- one parse ------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_the_checkpoint_is_parsed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    """The audit's read of the checkpoint is the one converted: its pickle is run once."""
    from modelsafe.registry import torch_archive

    src = tmp_path / "model.ckpt"
    state = {"a": torch.randn(8, 4).t(), "b": torch.randn(3)}
    torch.save({"state_dict": state, "epoch": 2}, src, _use_new_zipfile_serialization=not legacy)
    parses: list[str] = []
    real = torch_archive.read_torch_data

    def read_torch_data(path: Path, fmt: str, data: Any) -> Any:
        parses.append(fmt)
        return real(path, fmt, data)

    monkeypatch.setattr(torch_archive, "read_torch_data", read_torch_data)
    out = convert_file(src, tmp_path / "out.safetensors").destination
    assert len(parses) == 1
    from safetensors.torch import load_file

    back = load_file(out)
    assert all(torch.equal(back[k], v) for k, v in state.items())


def test_a_source_replaced_between_stat_and_audit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file stat'ed first, the file the audit read and the file copied must be one: a file
    renamed over the source before the audit (which finds it safe) is refused."""
    from modelsafe.registry import audit

    src = tmp_path / "model.ckpt"
    torch.save({"w": torch.zeros(4)}, src)
    other = tmp_path / "other.ckpt"
    torch.save({"renamed": torch.ones(4)}, other)
    real = audit.audit_path

    def replaced_first(path: Path | str) -> Any:
        os.replace(other, src)
        return real(path)

    monkeypatch.setattr(audit, "audit_path", replaced_first)
    with pytest.raises(ConversionError, match="changed while it was being audited"):
        convert_file(src, tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_a_read_of_its_own_is_checked_too(tmp_path: Path) -> None:
    """Where no scanner read the file as a torch file (a plugin set without the built-in one),
    convert reads it itself, and refuses it as well when it is not the file stat'ed first."""
    src = tmp_path / "model.ckpt"
    torch.save({"w": torch.zeros(4)}, src)
    before = os.stat(src)
    tf = convert_mod._audited_read(src, "zip", [], before)
    assert tf.content is not None and [r.name for r in tf.content.tensors] == ["w"]
    other = tmp_path / "other.ckpt"
    torch.save({"w": torch.ones(4)}, other)
    os.replace(other, src)
    with pytest.raises(ConversionError, match="changed while it was being audited"):
        convert_mod._audited_read(src, "zip", [], before)


def test_the_sha256_goes_in_its_place_whatever_the_names_and_values(tmp_path: Path) -> None:
    """The header is built once, with a placeholder for the source's SHA-256 that is filled in
    last: a file name, a value or a tensor name holding the placeholder's very text is left as
    it is."""
    import hashlib
    import json

    from safetensors import safe_open

    lookalike = '"modelsafe.source_sha256":"' + "0" * 64 + '"'
    src = tmp_path / f"x{lookalike}.ckpt"
    tensors = {lookalike: torch.ones(2), "w": torch.zeros(3)}
    torch.save({"state_dict": tensors, "note": lookalike}, src)
    out = convert_file(src, tmp_path / "out.safetensors")
    with safe_open(str(out.destination), framework="pt") as fh:
        meta = fh.metadata()
        names = set(fh.keys())
    assert meta["modelsafe.source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["modelsafe.source_name"] == src.name
    assert json.loads(meta["modelsafe.values"]) == {"note": lookalike}
    assert names == set(tensors)
