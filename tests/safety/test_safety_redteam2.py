"""Second red-team round: hostile files that were called safe (or error) before their fix.

Every payload only creates a marker file in ``tmp_path``; no test ever loads a hostile file, and
each checks that the marker never appears.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import pickle
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from modelsafe.registry.audit import audit_path
from modelsafe.registry.pickle_vm import machine
from modelsafe.registry.pickle_vm.limits import Limits
from modelsafe.registry.pickle_vm.machine import run_pickle
from modelsafe.types import Verdict

MARKER = "marker_redteam2"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _payload(tmp_path: Path) -> bytes:
    """Protocol-0 opcodes for builtins.open(<tmp_path>/marker, 'w'), leaving its result pushed."""
    return f"cbuiltins\nopen\n(S'{tmp_path / MARKER}'\nS'w'\ntR".encode()


def _su(text: bytes) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text


def _call_open(tmp_path: Path) -> bytes:
    """After a callable on the stack: call it with (marker, 'w')."""
    return _su(str(tmp_path / MARKER).encode()) + _su(b"w") + b"\x86R."


def _audit(path: Path) -> Verdict:
    verdict = audit_path(path)
    marker_dir = path if path.is_dir() else path.parent
    assert not (marker_dir / MARKER).exists(), "a payload ran!"
    return verdict


def _codes(verdict: Verdict) -> set[str]:
    return {f.code for f in verdict.findings}


def _names(findings: list, name: str = "builtins.open") -> bool:
    return any(name in f.message and f.severity == "unsafe" for f in findings)


# -- 1. a STOP inside its FRAME -----------------------------------------------------------------


def test_stop_before_the_end_of_its_frame_is_ambiguous() -> None:
    data = b"\x80\x04\x95" + struct.pack("<Q", 12) + b"K\x01." + b"N" * 9 + b"."
    result = run_pickle(data)
    assert result.completed
    assert any(f.code == "ambiguous-frame" and f.severity == "unsafe" for f in result.findings)
    # a frame that ends with its STOP (what pickle.dumps writes) is fine
    assert not run_pickle(pickle.dumps({"a": 1}, protocol=4)).findings


def test_legacy_frame_desync_is_unsafe(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    size = 200_000
    head = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")
    head += b"\x95" + struct.pack("<Q", size) + b"."
    frame_end = 23 + size  # where torch's next pickle.load starts
    real = (
        pickle.dumps(1001, protocol=2)
        + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
        + b"\x80\x02"
        + _payload(tmp_path)
        + b"."
    )
    count = 300_000
    for _ in range(5):  # a decoy whose uint8 storage swallows the real streams
        buf = io.BytesIO()
        torch.save(
            {"w": torch.zeros(count, dtype=torch.uint8)}, buf, _use_new_zipfile_serialization=False
        )
        saved = buf.getvalue()
        decoy = saved[15 : len(saved) - count - 8]
        start = len(head) + len(decoy) + 8
        if frame_end - start + len(real) == count:
            break
        count = frame_end - start + len(real)
    data = bytearray(head + decoy + struct.pack("<q", count) + b"\0" * count)
    data[frame_end : frame_end + len(real)] = real
    path = tmp_path / "model.pt"
    path.write_bytes(bytes(data))
    verdict = _audit(path)
    assert verdict.status == "unsafe"
    assert "ambiguous-frame" in _codes(verdict)


# -- 2. safetensors that are also pickles -------------------------------------------------------


def _safetensors_polyglot(tmp_path: Path) -> bytes:
    """A valid safetensors file: its header length is b'NG' (NONE, BINFLOAT over the rest of the
    length and '{"'), the tensor name hops (SHORT_BINSTRING) into a metadata filler of NONEs,
    the last one hops over the JSON's end into the tensor data, which holds the payload."""
    hlen = 0x474E
    data = b"z" * 124 + _payload(tmp_path) + b"."
    n = len(data)
    pre = (
        '{"NU\x7f":{"dtype":"U8","shape":[' + str(n) + '],"data_offsets":[0,' + str(n) + "]},"
        '"__metadata__":{"p":"'
    )
    post = '"}}'
    fill = hlen - len(pre.encode()) - len(post) - 2
    raw = (pre + "N" * fill + "U\x7f" + post).encode()
    assert len(raw) == hlen
    return struct.pack("<Q", hlen) + raw + data


def test_safetensors_pickle_polyglot_is_unsafe(tmp_path: Path) -> None:
    from modelsafe.plugins.builtin.scanner_safetensors import validate_safetensors

    path = tmp_path / "model.safetensors"
    path.write_bytes(_safetensors_polyglot(tmp_path))
    assert validate_safetensors(path) == []  # the premise: a valid safetensors file
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names(verdict.findings)
    assert "disguised-pickle" in _codes(verdict)


@pytest.mark.parametrize("low", range(0, 256, 3))
def test_real_safetensors_headers_stay_safe(tmp_path: Path, low: int) -> None:
    """Whatever the header length's first byte (an opcode or not), a real file is safe: the data
    is full of newlines and opcode bytes, so a probe that read on would find things."""
    data = bytes(range(256)) * 4 + b"cos\nsystem\n" * 4
    header = {"t": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}
    raw = json.dumps(header).encode()
    raw += b" " * ((low - len(raw)) % 256 + 256)
    assert len(raw) & 0xFF == low
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    verdict = _audit(path)
    assert verdict.status == "safe", [f.message for f in verdict.findings]


@pytest.mark.parametrize("low", [0x50, 0x70, 0x63, 0x49, 0x53, 0x46])
def test_big_sparse_safetensors_probe_is_cheap(tmp_path: Path, low: int) -> None:
    """A 4 GiB sparse file whose header length starts with a text opcode (PERSID, PUT, GLOBAL,
    INT, STRING, FLOAT: an argument that runs to the first newline, none in zeros): the probe
    sees in the first bytes that CPython's pickle.load fails there, and reads no further."""
    size = 4 << 30
    header = {"t": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}
    raw = json.dumps(header).encode()
    raw += b" " * ((low - len(raw)) % 256)
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + size)
    started = time.perf_counter()
    verdict = _audit(path)
    assert verdict.status == "safe"
    assert time.perf_counter() - started < 2


def test_gguf_and_other_valid_formats_stay_safe(tmp_path: Path) -> None:
    numpy = pytest.importorskip("numpy")
    path = tmp_path / "plain.npy"
    numpy.save(path, numpy.arange(4))
    assert _audit(path).status == "safe"


# -- 3. folders ---------------------------------------------------------------------------------


def _folder(tmp_path: Path, name: str, data: bytes) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "README.md").write_text("# a model\n")
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "notes.txt").write_text("cat\ndog\nnot a pickle\n")
    (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("model_best.pth.tar", b"K\x010"),  # unknown binary
        ("scaler.joblib", b"S'<html>'\n0"),  # an "HTML page"
        ("finalized_model.sav", b"S'" + b"a" * 5000 + b"'\n0"),  # text, first string > 4 KiB
        ("weights", b"S'" + b"a" * 5000 + b"'\n0"),
    ],
)
def test_folder_probes_every_file(tmp_path: Path, name: str, prefix: bytes) -> None:
    folder = tmp_path / "repo"
    data = prefix + _payload(folder) + b"."
    folder = _folder(tmp_path, name, data)
    verdict = _audit(folder)
    assert verdict.status == "unsafe" and _names(verdict.findings)
    assert all(f.location.startswith(name) for f in verdict.findings if f.severity == "unsafe")


@pytest.mark.parametrize(
    ("name", "pack"),
    [
        ("scaler.pkl.gz", gzip.compress),
        ("model.joblib", zlib.compress),
        ("model.pkl.bz2", bz2.compress),
        ("model.pkl.xz", lzma.compress),
    ],
)
def test_folder_audits_compressed_pickles(tmp_path: Path, name: str, pack: object) -> None:
    folder = tmp_path / "repo"
    data = pack(b"\x80\x02" + _payload(folder) + b".")  # type: ignore[operator]
    folder = _folder(tmp_path, name, data)
    verdict = _audit(folder)
    assert verdict.status == "unsafe" and _names(verdict.findings)
    assert "compressed-pickle" in _codes(verdict)
    single = _audit(folder / name)  # a single file too
    assert single.status == "unsafe"


def test_folder_with_benign_extras_stays_safe(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "data.csv.gz", gzip.compress(b"a,b\n1,2\n"))
    (folder / "vocab.json").write_text('{"cat": 1}')
    (folder / "data.pkl.gz").write_bytes(gzip.compress(pickle.dumps({"a": [1, 2]})))
    (folder / "blob.bin.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    (folder / "w.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 6) + b"{}    ")
    verdict = _audit(folder)
    assert verdict.status != "unsafe", [f.message for f in verdict.findings]
    # the zstd file cannot be opened: named, not passed over
    assert any(f.code == "unaudited-archive" for f in verdict.findings)
    assert not any("notes.txt" in f.location for f in verdict.findings)


# -- 4. tar checkpoints with 'storages' far in ------------------------------------------------


@pytest.mark.parametrize("layout", ["deep", "pax"])
def test_tar_storages_member_anywhere_is_unsafe(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "model.tar"
    data = b"\x80\x02" + _payload(tmp_path) + b"."
    fmt = tarfile.USTAR_FORMAT if layout == "deep" else tarfile.PAX_FORMAT
    with tarfile.open(path, "w", format=fmt) as tf:
        for i in range(70 if layout == "deep" else 1):
            info = tarfile.TarInfo(f"pad{i}" if layout == "deep" else "x" * 120)
            tf.addfile(info, io.BytesIO(b""))
        info = tarfile.TarInfo("storages")
        info.size = len(data)
        if layout == "pax":
            info.pax_headers = {"comment": "a"}
        tf.addfile(info, io.BytesIO(data))
    verdict = _audit(path)
    assert verdict.status == "unsafe"
    assert "tar-checkpoint" in _codes(verdict)


# -- 5. text integers as the C unpickler reads them -------------------------------------------


@pytest.mark.parametrize(
    "text",
    [b"01751", b"00", b"01", b"+1", b" 1", b"-0", b"0x10", b"011", b"1_000", b"0o17", b"12\0x"]
    + [b"99999999999999999999999", b"9223372036854775808", b" 12 ", b"\t7", b"09", b"0x", b"abc"]
    + [b"\0", b"1.5\0z", b" 1.5", b"1_0.5", b"-iNF", b".5"],
)
def test_text_numbers_match_cpython(text: bytes) -> None:
    for opcode in (b"I", b"L", b"F"):
        data = opcode + text + b"\n."
        try:
            expected: object = repr(pickle.loads(data))
        except Exception:  # noqa: BLE001 - CPython refuses it: so must the VM
            expected = None
        result = run_pickle(data)
        assert (repr(result.root) if result.completed else None) == expected, (opcode, text)


def test_legacy_protocol_in_octal_is_read_on(tmp_path: Path) -> None:
    data = (
        pickle.dumps(LEGACY_MAGIC, protocol=2)
        + b"I01751\n."  # 1001 to CPython
        + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
        + b"\x80\x02"
        + _payload(tmp_path)
        + b"."
    )
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names(verdict.findings)


# -- 6. shapes of huge numbers ------------------------------------------------------------------


def test_pickle_shape_of_huge_ints_is_quick(tmp_path: Path) -> None:
    def text(s: str) -> bytes:
        return b"X" + len(s).to_bytes(4, "little") + s.encode()

    big = b"\x8a\x40" + b"\xff" * 63 + b"\x3f"
    shape = b"(" + big * 20_000 + b"t"
    pk = (
        b"\x80\x02}("
        + text("w")
        + b"ctorch._utils\n_rebuild_tensor_v2\n(("
        + text("storage")
        + b"ctorch\nByteStorage\n"
        + text("0")
        + text("cpu")
        + b"K\x01tQK\x00"
        + shape
        + shape
        + b"\x89ccollections\nOrderedDict\n)RtRu."
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", pk)
        zf.writestr("archive/data/0", b"\0")
        zf.writestr("archive/version", "3\n")
    path = tmp_path / "shape.pt"
    path.write_bytes(buf.getvalue())
    started = time.perf_counter()
    verdict = _audit(path)
    assert time.perf_counter() - started < 10
    assert verdict.status == "error" and "scanner-failed" not in _codes(verdict)
    assert "bad-tensor" in _codes(verdict)


@pytest.mark.parametrize(
    "dims", [b"99999999999," * 40_000, b"1" * 4000 + b"," + b"7" * 4000 + b","]
)
def test_safetensors_shape_of_huge_ints_is_quick(tmp_path: Path, dims: bytes) -> None:
    header = b'{"a":{"dtype":"F32","shape":[' + dims + b'1],"data_offsets":[0,4]}}'
    path = tmp_path / "shape.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    started = time.perf_counter()
    verdict = _audit(path)
    assert time.perf_counter() - started < 10
    assert verdict.status == "error" and "scanner-failed" not in _codes(verdict)
    assert all(len(f.message) < 1000 for f in verdict.findings)


# -- 7. naming payloads after the VM stops ------------------------------------------------------

_SMALL = Limits(max_object_bytes=1 << 16)
_FLOOD = b"]0" * 2000  # past the small object budget


def _stops_then_names(data: bytes, name: str = "builtins.open", limits: Limits = _SMALL) -> None:
    result = run_pickle(data, limits=limits)
    assert not result.completed and any(f.code == "limit" for f in result.findings)
    assert _names(result.findings, name), [f.message for f in result.findings]


def test_names_memoized_before_the_stop(tmp_path: Path) -> None:
    _stops_then_names(
        b"\x80\x04" + _su(b"builtins") + b"\x94" + _su(b"open") + b"\x94" + b"00" + _FLOOD
        + b"h\x00h\x01\x93" + _call_open(tmp_path)
    )  # fmt: skip


@pytest.mark.parametrize(
    "tail",
    [
        _su(b"builtins") + _su(b"open") + b"N0\x93",  # NONE POP between the names
        _su(b"builtins") + b"(" + _su(b"x") + b"1" + _su(b"open") + b"\x93",  # MARK .. POP_MARK
        b"S'bu\\x69ltins'\nS'open'\n\x93",  # an escaped STRING
        _su(b"builtins") + _su(b"open") + b"\x860" + _su(b"builtins") + _su(b"open") + b"\x93",
    ],
)
def test_scan_after_a_stop_tracks_the_stack(tmp_path: Path, tail: bytes) -> None:
    _stops_then_names(b"\x80\x04" + _FLOOD + tail + _call_open(tmp_path))


def test_scan_after_a_stop_dup_and_computed_names(tmp_path: Path) -> None:
    _stops_then_names(
        b"\x80\x04" + _FLOOD + _su(b"timeit") + b"2\x93" + _su(b"open('x','w')") + b"\x85R.",
        "timeit.timeit",
    )
    computed = (
        _su(b"_codecs") + _su(b"encode") + b"\x93" + _su(b"ohvygvaf") + _su(b"rot13") + b"\x86R"
        + _su(b"open") + b"\x93" + _call_open(tmp_path)
    )  # fmt: skip
    result = run_pickle(b"\x80\x04" + _FLOOD + computed, limits=_SMALL)
    assert any(f.code == "dynamic-global" and f.severity == "unsafe" for f in result.findings)


def test_opcode_limit_stop_is_scanned(tmp_path: Path) -> None:
    data = b"\x80\x02" + b"N0" * 600 + _payload(tmp_path) + b"."
    _stops_then_names(data, limits=Limits(max_opcodes=1000))


def test_byte_search_past_the_scan_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_SCAN_OPCODES", 100)
    limits = Limits(max_opcodes=1000)
    _stops_then_names(b"\x80\x02" + b"N0" * 2000 + _payload(tmp_path) + b".", limits=limits)
    hidden = b"\x80\x04" + b"N0" * 2000 + _su(b"posix") + _su(b"system") + b"\x93" + _su(b"x")
    result = run_pickle(hidden + b"\x85R.", limits=limits)
    assert any("'posix'" in f.message and f.severity == "unsafe" for f in result.findings)


def test_benign_stop_names_nothing() -> None:
    data = b"\x80\x04" + _FLOOD + _su(b"weight") + _su(b"bias") + b"\x86." + b"\x93" * 4
    result = run_pickle(data, limits=_SMALL)
    assert not any(f.severity == "unsafe" for f in result.findings)


@pytest.mark.slow
def test_deflated_opcode_flood_is_named(tmp_path: Path) -> None:
    """A tiny deflated data.pkl of 25M+ NONE/POP pairs, then the payload: the opcode limit."""
    data = b"\x80\x02" + b"N0" * 25_000_001 + _payload(tmp_path) + b"."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/version", b"3\n")
    path = tmp_path / "flood.pt"
    path.write_bytes(buf.getvalue())
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names(verdict.findings)


# -- 8. .npz ------------------------------------------------------------------------------------


def _object_npy(body: bytes) -> bytes:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


@pytest.mark.parametrize("member", ["arr_0.npy", "weights", "archive/data/0"])
def test_npz_object_member_is_unsafe(tmp_path: Path, member: str) -> None:
    path = tmp_path / "weights.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.npy", _object_npy(b"\x80\x02K\x01\x85."))
        zf.writestr(member, _object_npy(b"\x80\x02(" + _payload(tmp_path) + b"l."))
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names(verdict.findings)


def test_plain_npz_is_not_unsafe(tmp_path: Path) -> None:
    numpy = pytest.importorskip("numpy")
    path = tmp_path / "plain.npz"
    numpy.savez(path, a=numpy.arange(3), b=numpy.zeros((2, 2)))
    verdict = _audit(path)
    assert verdict.status == "error"
    assert "not-a-checkpoint" in _codes(verdict)
