"""Audit red-team pass 10: pickles a loader runs that the audit dropped or could not read.

1. a compressed pickle whose stream end is broken (gzip without its trailer or with a wrong CRC,
   bz2 / xz cut short): ``pickle.load(gzip.open(f))`` runs the payload before the break;
2. compressions joblib / lzma read that were not recognised: joblib's old ``ZF`` format, the
   ``.lzma`` "alone" format with other properties or a small dictionary, an LZ4 frame;
3. a FRAME longer than the data left (``pickle._Unpickler``, which joblib uses, runs it);
4. the scan after a stop forgetting memo slots past 65,536, and an INT padded with spaces;
5. ``.npz`` members named like folders, and a member with a bad CRC before an object array.

Each payload only creates a marker file. The audit never creates it; where it is cheap, the real
loader (in a subprocess) shows that it does."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from safety_corpus import open_call

from modelsafe.registry.audit import audit_path
from modelsafe.registry.pickle_vm.limits import Limits
from modelsafe.registry.pickle_vm.machine import run_pickle
from modelsafe.registry.sniff import is_lzma_alone
from modelsafe.types import Verdict

OPEN = "builtins.open"


def _folder(tmp_path: Path, name: str, data: bytes) -> Path:
    """A model folder: a valid safetensors model and ``name`` holding ``data`` beside it."""
    from safetensors.numpy import save_file

    np = pytest.importorskip("numpy")
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": np.ones(2, dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / name).write_bytes(data)
    return folder


def _names_open(verdict: Verdict) -> bool:
    return verdict.status == "unsafe" and any(
        f.severity == "unsafe" and OPEN in f.message for f in verdict.findings
    )


def _dynamic(verdict: Verdict) -> bool:
    return verdict.status == "unsafe" and any(f.code == "dynamic-global" for f in verdict.findings)


def _audited_unsafe(
    tmp_path: Path,
    name: str,
    data: bytes,
    marker: Path,
    judged: Callable[[Verdict], bool] = _names_open,
) -> None:
    """``data`` alone and in a model folder audits ``unsafe`` (naming builtins.open, unless
    ``judged`` says otherwise); the audit did not run it."""
    alone = tmp_path / name
    alone.write_bytes(data)
    for target in (alone, _folder(tmp_path, name, data)):
        verdict = audit_path(target)
        assert judged(verdict), (target, verdict.findings)
    assert not marker.exists(), "auditing ran the payload"


def _loader_runs(tmp_path: Path, code: str, marker: Path) -> None:
    """The real loader (``code``, with ``path`` the file) creates the marker, in a subprocess."""
    assert not marker.exists()
    subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, str(tmp_path / "load.bin")],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert marker.exists(), "the real loader did not run the payload: the case proves nothing"


def _prove(tmp_path: Path, data: bytes, code: str, marker: Path) -> None:
    (tmp_path / "load.bin").write_bytes(data)
    _loader_runs(tmp_path, "import sys\npath = sys.argv[1]\n" + code, marker)


# -- 1. a compressed pickle whose stream end is broken ------------------------------------------


def _gzip_bad_crc(data: bytes) -> bytes:
    packed = bytearray(gzip.compress(data))
    packed[-8] ^= 1  # (the CRC-32 in the trailer)
    return bytes(packed)


BROKEN = {
    "gzip-no-trailer": (lambda d: gzip.compress(d)[:-8], "scaler.pkl.gz", "gzip"),
    "gzip-bad-crc": (_gzip_bad_crc, "scaler.pkl.gz", "gzip"),
    "bz2-cut": (lambda d: bz2.compress(d)[:-4], "scaler.pkl.bz2", "bz2"),
    "xz-cut": (lambda d: lzma.compress(d)[:-12], "scaler.pkl.xz", "lzma"),
    "lzma-alone-cut": (
        lambda d: lzma.compress(d + b"\0" * 64, format=lzma.FORMAT_ALONE)[:-6],
        "scaler.pkl.lzma",
        "lzma",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_compressed_pickle_with_a_broken_end_is_audited(tmp_path: Path, case: str) -> None:
    pack, name, module = BROKEN[case]
    marker = tmp_path / "marker"
    data = pack(open_call(marker))
    _audited_unsafe(tmp_path, name, data, marker)
    _prove(tmp_path, data, f"import pickle, {module}\npickle.load({module}.open(path))", marker)


def test_a_benign_compressed_pickle_cut_short_is_an_error_that_says_so(tmp_path: Path) -> None:
    data = gzip.compress(pickle.dumps({"mean": [0.5] * 100}, protocol=4))[:-8]
    path = tmp_path / "scaler.pkl.gz"
    path.write_bytes(data)
    verdict = audit_path(path)
    assert verdict.status == "error", verdict.findings
    messages = " ".join(f.message for f in verdict.findings)
    assert "gzip-compressed file holding a pickle whose compressed stream breaks" in messages
    assert "extract it" not in messages  # (it is no packed model: it is the pickle)
    assert audit_path(_folder(tmp_path, "scaler.pkl.gz", data)).status == "error"


def test_a_whole_compressed_data_pickle_is_still_safe(tmp_path: Path) -> None:
    data = gzip.compress(pickle.dumps({"mean": [0.5] * 100}, protocol=4))
    assert audit_path(_folder(tmp_path, "scaler.pkl.gz", data)).status == "safe"


def test_a_broken_csv_gz_beside_a_model_is_not_read_as_a_pickle(tmp_path: Path) -> None:
    data = gzip.compress(b"a,b,c\n" + b"1,2,3\n" * 2000)[:-8]
    assert audit_path(_folder(tmp_path, "table.csv.gz", data)).status == "safe"


# -- 2. compressions joblib and lzma read -------------------------------------------------------


def _zfile(data: bytes, extra_space: bool = False) -> bytes:
    """joblib's old ``ZF`` format (``numpy_pickle_compat.write_zfile``)."""
    length = f"{len(data):#x}".ljust(19) + (" " if extra_space else "")
    return b"ZF" + length.encode() + zlib.compress(data)


# joblib's read_zfile, as joblib.load runs it on a file starting "ZF"
READ_ZFILE = (
    "import pickle, zlib\n"
    "raw = open(path, 'rb').read()\n"
    "start = 22 if raw[21:22] == b' ' else 21\n"
    "pickle.loads(zlib.decompress(raw[start:], 15, int(raw[2:21], 16)))\n"
)


@pytest.mark.parametrize("extra_space", [False, True], ids=["joblib", "joblib-0.8"])
def test_a_joblib_zf_file_is_audited(tmp_path: Path, extra_space: bool) -> None:
    marker = tmp_path / "marker"
    data = _zfile(open_call(marker), extra_space)
    _audited_unsafe(tmp_path, "model.joblib", data, marker)
    _prove(tmp_path, data, READ_ZFILE, marker)


@pytest.mark.parametrize(
    ("lc", "lp", "pb", "dict_size"),
    [(0, 0, 0, 1 << 20), (4, 0, 0, 1 << 16), (0, 4, 4, 1 << 16), (3, 0, 2, 4096)],
)
def test_lzma_alone_with_other_properties_is_audited(
    tmp_path: Path, lc: int, lp: int, pb: int, dict_size: int
) -> None:
    marker = tmp_path / "marker"
    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": lc, "lp": lp, "pb": pb}]
    data = lzma.compress(open_call(marker), format=lzma.FORMAT_ALONE, filters=filters)
    _audited_unsafe(tmp_path, "df.pkl.xz", data, marker)
    _prove(tmp_path, data, "import pickle, lzma\npickle.load(lzma.open(path))", marker)


def test_lzma_alone_with_a_dictionary_under_4_kib_is_audited(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    packed = lzma.compress(open_call(marker), format=lzma.FORMAT_ALONE)
    data = packed[:1] + struct.pack("<I", 2048) + packed[5:]  # (liblzma takes it: 2^n)
    _audited_unsafe(tmp_path, "scaler.joblib", data, marker)
    _prove(tmp_path, data, "import pickle, lzma\npickle.load(lzma.open(path))", marker)


def test_lzma_alone_headers_are_those_liblzma_takes() -> None:
    for props in range(256):
        pb, rest = divmod(props, 45)
        lp, lc = divmod(rest, 9)
        header = bytes([props]) + struct.pack("<IQ", 1 << 16, 100) + b"\0"
        assert is_lzma_alone(header) == (props < 225 and lc + lp <= 4), props
        if props < 225 and lc + lp <= 4 and pb <= 4:
            filters = [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb}]
            assert is_lzma_alone(lzma.compress(b"x", format=lzma.FORMAT_ALONE, filters=filters))
    for size in (0, 1, 2, 3, 6, 2048, 4096, 3 << 20, 0xFFFFFFFF):
        assert is_lzma_alone(b"\x5d" + struct.pack("<IQ", size, 100) + b"\0"), size
    for size in (5, 7, 12345, 4097):
        assert not is_lzma_alone(b"\x5d" + struct.pack("<IQ", size, 100) + b"\0"), size
    assert not is_lzma_alone(b"\0" * 64)  # (a declared size of 0: nothing in it)
    assert not is_lzma_alone(b"\x5d" + struct.pack("<IQ", 4096, 1 << 38) + b"\0")
    assert not is_lzma_alone(b"\x5d" + struct.pack("<IQ", 4096, 100) + b"\1")  # (range coder)


def _xxh32(data: bytes) -> int:
    """xxHash32 (seed 0) of fewer than 16 bytes: the LZ4 frame header's checksum."""
    mask, p1, p2, p3, p4, p5 = 0xFFFFFFFF, 2654435761, 2246822519, 3266489917, 668265263, 374761393

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & mask

    h = (p5 + len(data)) & mask
    i = 0
    while i + 4 <= len(data):
        h = rotl((h + int.from_bytes(data[i : i + 4], "little") * p3) & mask, 17) * p4 & mask
        i += 4
    for byte in data[i:]:
        h = rotl((h + byte * p5) & mask, 11) * p1 & mask
    h = (h ^ h >> 15) * p2 & mask
    h = (h ^ h >> 13) * p3 & mask
    return h ^ h >> 16


def _lz4_frame(data: bytes) -> bytes:
    """An LZ4 frame (what ``lz4.frame.compress`` and joblib's ``compress="lz4"`` write) of
    uncompressed blocks, built by hand: no lz4 package needed."""
    descriptor = bytes([0x60, 0x40])  # version 1, independent blocks; 64 KiB blocks
    out = b"\x04\x22\x4d\x18" + descriptor + bytes([_xxh32(descriptor) >> 8 & 0xFF])
    for start in range(0, len(data), 1 << 16):
        block = data[start : start + (1 << 16)]
        out += struct.pack("<I", len(block) | 0x80000000) + block  # (high bit: stored as is)
    return out + b"\0\0\0\0"


def _lz4_installed() -> bool:
    try:
        import lz4.frame  # type: ignore[import-not-found,import-untyped,unused-ignore] # noqa: F401
    except ImportError:
        return False
    return True


def test_an_lz4_joblib_file_is_never_safe(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = _lz4_frame(open_call(marker))
    path = tmp_path / "model.joblib"
    path.write_bytes(data)
    folder = _folder(tmp_path, "model.joblib", data)
    if _lz4_installed():
        assert _names_open(audit_path(path))
        assert _names_open(audit_path(folder))
    else:
        verdict = audit_path(path)
        assert verdict.status == "error", verdict.findings
        text = " ".join(f.message for f in verdict.findings)
        assert "LZ4" in text and "joblib" in text and "pickle" in text and "lz4" in text
        assert audit_path(folder).status == "error"
        assert any(f.code == "unaudited-archive" for f in audit_path(folder).findings)
    assert not marker.exists()


def test_the_hand_built_lz4_frame_is_one_lz4_reads(tmp_path: Path) -> None:
    frame = pytest.importorskip("lz4.frame")
    data = bytes(range(256)) * 600
    assert frame.decompress(_lz4_frame(data)) == data


# -- 3. a FRAME longer than the data left -------------------------------------------------------


def _short_frame(marker: Path) -> bytes:
    body = open_call(marker)[2:]  # (no PROTO)
    return b"\x95" + (len(body) + 4096).to_bytes(8, "little") + body


def test_a_frame_longer_than_the_file_is_still_run(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = _short_frame(marker)
    _audited_unsafe(tmp_path, "model.joblib", data, marker)
    result = run_pickle(b"\x80\x04" + data)
    assert result.completed and result.unsafe
    assert any(f.code == "truncated" and "FRAME" in f.message for f in result.findings)
    # joblib.load unpickles with the pure-Python unpickler, which takes the short frame
    _prove(tmp_path, data, "import pickle\npickle._Unpickler(open(path, 'rb')).load()", marker)


def test_a_cut_protocol_4_pickle_is_still_an_error(tmp_path: Path) -> None:
    data = pickle.dumps({"w": list(range(50_000))}, protocol=4)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    verdict = audit_path(path)
    assert verdict.status == "error", verdict.findings


# -- 4. the scan after a stop, and text integers -------------------------------------------------


def _str(text: bytes) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text


def _memo_fed(marker: Path, stop: bytes) -> bytes:
    """``stop`` (where the VM stops and scans on), 65,536 memo writes, then builtins.open
    taken by STACK_GLOBAL from memo slots written past them (LONG_BINGET)."""
    out = [b"\x80\x02", stop, b"N"]
    out += [b"r" + struct.pack("<I", k) for k in range(65_536)]
    out += [b"0", _str(b"builtins"), b"r" + struct.pack("<I", 70_000), b"0"]
    out += [_str(b"open"), b"r" + struct.pack("<I", 70_001), b"0"]
    out += [b"j" + struct.pack("<I", 70_000), b"j" + struct.pack("<I", 70_001), b"\x93"]
    out += [_str(str(marker).encode()), _str(b"w"), b"\x86R."]
    return b"".join(out)


def test_a_stack_global_on_memo_slots_the_scan_dropped_is_unsafe(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = _memo_fed(marker, b"")
    result = run_pickle(data, limits=Limits(max_opcodes=3))  # (stops at once, then scans)
    assert any(f.code == "dynamic-global" and "memo slot" in f.message for f in result.findings)
    # A text INT strtol reads (octal 1 after 5,000 zeros) that the VM does not: it scans on.
    data = _memo_fed(marker, b"I" + b"0" * 5000 + b"1\n0")
    _audited_unsafe(tmp_path, "scaler.joblib", data, marker, _dynamic)
    _prove(tmp_path, data, "import pickle\npickle.load(open(path, 'rb'))", marker)


@pytest.mark.parametrize(
    "number",
    [
        b"I" + b" " * 5000 + b"1\n",
        b"I1" + b" " * 5000 + b"\n",
        b"L" + b"\t" * 5000 + b"12L\n",
        b"I" + b" " * ((1 << 20) + 16) + b"7\n",  # (a text argument past max_line)
    ],
    ids=["int-lead", "int-trail", "long-lead", "int-past-max-line"],
)
def test_whitespace_around_a_text_integer_is_taken_as_cpython_takes_it(number: bytes) -> None:
    result = run_pickle(b"\x80\x02" + number + b".")
    assert result.completed, result.findings
    assert pickle.loads(b"\x80\x02" + number + b".") in (1, 7, 12)


def test_a_get_padded_past_max_line_reads_its_slot() -> None:
    data = b"\x80\x02" + _str(b"x") + b"p" + b" " * ((1 << 20) + 8) + b"5\n0g  5\n."
    result = run_pickle(data)
    assert result.completed and result.root == "x", result.findings
    assert pickle.loads(data) == "x"


def test_a_padded_int_before_a_payload_is_unsafe(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = b"\x80\x02I" + b" " * 5000 + b"1\n0" + open_call(marker)[2:]
    _audited_unsafe(tmp_path, "scaler.joblib", data, marker)
    _prove(tmp_path, data, "import pickle\npickle.load(open(path, 'rb'))", marker)


# -- 5. .npz members ---------------------------------------------------------------------------


class _Open:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.marker, "w"))


def _object_npy(marker: Path) -> bytes:
    np = pytest.importorskip("numpy")
    array = np.empty(1, dtype=object)
    array[0] = _Open(marker)
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    return out.getvalue()


def _checkpoint_members() -> list[tuple[zipfile.ZipInfo, bytes]]:
    torch = pytest.importorskip("torch")
    out = io.BytesIO()
    torch.save({"w": torch.ones(3)}, out)
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def test_an_npz_member_named_like_a_folder_is_read(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in _checkpoint_members():
            zf.writestr(info, data)
        zf.writestr("archive/emb/", _object_npy(marker))
    verdict = audit_path(path)
    assert verdict.status == "unsafe", verdict.findings
    assert any("archive/emb/" in f.location for f in verdict.findings if f.severity == "unsafe")
    assert not marker.exists()
    code = "import numpy\nd = numpy.load(path, allow_pickle=True)\n[d[k] for k in d.files]"
    _loader_runs_file(tmp_path, path, code, marker)


def _bad_crc(data: bytes, member: bytes) -> bytes:
    """``data`` (a zip) with the CRC-32 of the member holding ``member`` flipped, in its local
    and central headers."""
    out = bytearray(data)
    good = zlib.crc32(member)
    for signature, offset in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):
        at = out.find(signature)
        while at >= 0:
            if struct.unpack("<I", out[at + offset : at + offset + 4])[0] == good:
                out[at + offset : at + offset + 4] = struct.pack("<I", good ^ 1)
            at = out.find(signature, at + 4)
    return bytes(out)


def test_an_npz_member_with_a_bad_crc_does_not_hide_the_next_ones(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    members = _checkpoint_members()
    filler = b"0123456789"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(*members[0])
        zf.writestr("archive/aaaa", filler)
        for info, data in members[1:]:
            zf.writestr(info, data)
        zf.writestr("archive/emb.npy", _object_npy(marker))
    path = tmp_path / "model.pt"
    path.write_bytes(_bad_crc(buffer.getvalue(), filler))
    verdict = audit_path(path)
    assert verdict.status == "unsafe", verdict.findings
    assert not marker.exists()
    code = "import numpy\nnumpy.load(path, allow_pickle=True)['archive/emb']"
    _loader_runs_file(tmp_path, path, code, marker)


def test_an_npz_member_zipfile_cannot_open_is_an_error_and_the_next_ones_are_read(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "marker"
    filler = b"0123456789-deflate64"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("odd.bin", filler)
        zf.writestr("emb.npy", _object_npy(marker))
    data = bytearray(buffer.getvalue())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(signature)  # (the first entry: odd.bin, now "deflate64", method 9)
        data[at + offset : at + offset + 2] = (9).to_bytes(2, "little")
    path = tmp_path / "arrays.npz"
    path.write_bytes(bytes(data))
    verdict = audit_path(path)
    assert verdict.status == "unsafe", verdict.findings
    assert any(f.code == "bad-npz" and "odd.bin" in f.location for f in verdict.findings)
    assert not marker.exists()
    code = "import numpy\nnumpy.load(path, allow_pickle=True)['emb']"
    _loader_runs_file(tmp_path, path, code, marker)


def test_an_object_npz_member_with_a_bad_crc_is_audited_and_named(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    member = _object_npy(marker)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("emb.npy", member)
    path = tmp_path / "arrays.npz"
    path.write_bytes(_bad_crc(buffer.getvalue(), member))
    verdict = audit_path(path)
    assert verdict.status == "unsafe", verdict.findings
    assert any(f.code == "bad-npz" and "CRC" in f.message for f in verdict.findings)
    assert not marker.exists()


def _loader_runs_file(tmp_path: Path, path: Path, code: str, marker: Path) -> None:
    (tmp_path / "load.bin").write_bytes(path.read_bytes())
    _loader_runs(tmp_path, "import sys\npath = sys.argv[1]\n" + code, marker)
