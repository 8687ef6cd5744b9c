"""Fifth red-team round: zip archives torch's miniz reads one way and modelsafe read another, and
folders whose loaders read files the audit never saw. Payloads only create a marker file in
``tmp_path``. Where it is cheap, one torch.load(weights_only=False) in a child process proves the
premise (the marker appears); the audit itself never loads anything."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from modelsafe.errors import ConversionError, UnsafeFileError
from modelsafe.registry.audit import audit_path
from modelsafe.registry.convert import convert_file
from modelsafe.registry.torch_archive import read_torch_file
from modelsafe.types import Verdict

FAR = 0xFFFFFFFF  # a local header at 4 GiB - 1: its offset needs a zip64 field


def _payload(marker: Path) -> bytes:
    """A protocol-2 pickle calling builtins.open(marker, 'w')."""
    return b"\x80\x02" + f"cbuiltins\nopen\n(S'{marker}'\nS'w'\ntR".encode() + b"."


def _benign() -> bytes:
    return pickle.dumps({"w": "benign"}, protocol=2)


def _same_length(evil: bytes, benign: bytes) -> tuple[bytes, bytes]:
    """Pad the shorter pickle (NONE/POP pairs, BININT1/POP to fix the parity) to the other's
    length: torch takes the sizes from the central directory and checks no CRC."""
    if (len(evil) - len(benign)) % 2:
        evil = evil[:2] + b"K\x000" + evil[2:]
    if len(evil) < len(benign):
        evil = evil[:2] + b"N0" * ((len(benign) - len(evil)) // 2) + evil[2:]
    else:
        benign = benign[:2] + b"N0" * ((len(evil) - len(benign)) // 2) + benign[2:]
    assert len(evil) == len(benign)
    return evil, benign


_OTHERS = [
    (b"archive/byteorder", b"little"),
    (b"archive/.data/version", b"3\n"),
    (b"archive/.data/serialization_id", b"0123456789" * 4),
]


def _local(name: bytes, data: bytes, crc: int | None = None, flags: int = 0, method: int = 0):
    crc = zlib.crc32(data) if crc is None else crc
    return (
        struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 45, flags, method, 0, 0x21, crc, len(data), len(data),
            len(name), 0,
        )
        + name
        + data
    )  # fmt: skip


def _central(
    name: bytes,
    crc: int,
    csize: int,
    usize: int,
    header: int,
    extra: bytes = b"",
    flags: int = 0,
    method: int = 0,
) -> bytes:
    return (
        struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, flags, method, 0, 0x21, crc, csize, usize,
            len(name), len(extra), 0, 0, 0, 0, header,
        )
        + name
        + extra
    )  # fmt: skip


def _eocd(count: int, cd_size: int, cd_offset: int, comment: bytes = b"") -> bytes:
    return (
        struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_offset, len(comment))
        + comment
    )


def _zip64_end(f: io.BufferedWriter | io.BytesIO, count: int, cd: bytes, cd_offset: int) -> None:
    at = f.tell()
    f.write(
        struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(cd), cd_offset)
    )
    f.write(struct.pack("<IIQI", 0x07064B50, 0, at, 1))
    f.write(_eocd(0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF))


def _plain_zip(
    pkl: bytes,
    extra_members: list[dict] | None = None,
    comment: bytes = b"",
    pkl_crc: int | None = None,
) -> bytearray:
    """A torch-like zip (data.pkl, byteorder, version, serialization_id) written by hand."""
    body = bytearray()
    cds = []
    members = [dict(name=b"archive/data.pkl", data=pkl, crc=pkl_crc)]
    members += [dict(name=n, data=d) for n, d in _OTHERS] + (extra_members or [])
    for m in members:
        crc = zlib.crc32(m["data"]) if m.get("crc") is None else m["crc"]
        flags, method = m.get("flags", 0), m.get("method", 0)
        off = len(body)
        body += _local(m["name"], m["data"], crc, flags, method)
        size = len(m["data"])
        cds.append(_central(m["name"], crc, size, size, off, flags=flags, method=method))
    cd = b"".join(cds)
    return bytearray(bytes(body) + cd + _eocd(len(cds), len(cd), len(body), comment))


def _torch_runs(tmp_path: Path, paths: list[Path]) -> dict[str, str]:
    """torch.load(weights_only=False) of each path in one child process: what it printed."""
    pytest.importorskip("torch")
    child = (
        "import sys, warnings, torch\n"
        "warnings.filterwarnings('ignore')\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        torch.load(p, weights_only=False); print(p, 'LOADED')\n"
        "    except Exception as e:\n"
        "        print(p, 'FAILED', type(e).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", child, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _audit(path: Path) -> Verdict:
    return audit_path(path)


def _names_open(verdict: Verdict) -> bool:
    return any(
        f.severity == "unsafe" and f.code == "global" and "builtins.open" in f.message
        for f in verdict.findings
    )


def _codes(verdict: Verdict) -> set[str]:
    return {f.code for f in verdict.findings}


def _refused(path: Path) -> None:
    with pytest.raises(UnsafeFileError):
        convert_file(path, path.with_name(path.name + ".safetensors"))
    assert not path.with_name(path.name + ".safetensors").exists()


# -- 1. two zip64 fields: miniz reads the first, modelsafe read the last ------------------------


def _two_field_zip(path: Path, marker: Path, fields: bytes | None = None) -> None:
    """data.pkl's central entry says 'local header at 0xFFFFFFFF' twice over: its first zip64
    field says FAR (the payload there), a second says 0 (a benign pickle there)."""
    evil, benign = _same_length(_payload(marker), _benign())
    crc = zlib.crc32(benign)
    if fields is None:
        fields = struct.pack("<HHQ", 1, 8, FAR) + struct.pack("<HHQ", 1, 8, 0)
    with open(path, "wb") as f:
        f.write(_local(b"archive/data.pkl", benign, crc))
        cds = [_central(b"archive/data.pkl", crc, len(benign), len(benign), FAR, fields)]
        for name, data in _OTHERS:
            off = f.tell()
            f.write(_local(name, data))
            cds.append(_central(name, zlib.crc32(data), len(data), len(data), off))
        f.seek(FAR)
        f.write(_local(b"archive/data.pkl", evil, crc))
        cd_offset = f.tell()
        cd = b"".join(cds)
        f.write(cd)
        _zip64_end(f, len(cds), cd, cd_offset)


@pytest.mark.slow
def test_two_zip64_fields_torch_reads_the_first(tmp_path: Path) -> None:
    path = tmp_path / "two-fields.pt"
    marker = tmp_path / "marker-two"
    _two_field_zip(path, marker)
    assert _torch_runs(tmp_path, [path])[str(path)] == "LOADED"
    assert marker.exists()  # the premise: torch ran the pickle at 4 GiB
    marker.unlink()
    verdict = _audit(path)
    assert verdict.status == "unsafe"
    assert "ambiguous-member" in _codes(verdict)
    assert _names_open(verdict)  # the pickle torch runs is the one audited
    _refused(path)
    assert not marker.exists()


def test_two_zip64_fields_are_read_as_miniz_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "two-fields.pt"
    _two_field_zip(path, tmp_path / "marker")
    tf = read_torch_file(path, "zip")
    assert tf.pickle_label == "archive/data.pkl" and tf.vm is not None
    assert tf.vm.start == 0 and any(g.dotted == "builtins.open" for g in tf.vm.globals)
    assert any(f.code == "ambiguous-member" for f in tf.findings)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    "fields",
    [
        struct.pack("<HHI", 1, 4, 0),  # too short for the offset it must hold
        struct.pack("<HHQ", 1, 8, FAR) + struct.pack("<HH", 0x5455, 40),  # runs past the end
        struct.pack("<HHQ", 1, 8, FAR) + b"\x00",  # a stray byte
    ],
    ids=["short", "overrun", "stray"],
)
def test_malformed_zip64_extra_is_ambiguous(tmp_path: Path, fields: bytes) -> None:
    path = tmp_path / "extra.pt"
    _two_field_zip(path, tmp_path / "marker", fields)
    verdict = _audit(path)
    assert verdict.status == "unsafe"
    assert "ambiguous-member" in _codes(verdict)
    assert not (tmp_path / "marker").exists()


def test_real_zip64_offsets_are_safe(tmp_path: Path) -> None:
    """A well-formed zip64 archive (a 4 GiB member, data.pkl past 4 GiB, one zip64 field each,
    as miniz writes them) is no finding."""
    pkl = _benign()
    blob_size = 1 << 32
    path = tmp_path / "big.pt"
    with open(path, "wb") as f:
        cds = []
        f.write(_local(b"archive/data.pkl", pkl))
        cds.append(_central(b"archive/data.pkl", zlib.crc32(pkl), len(pkl), len(pkl), 0))
        blob_at = f.tell()
        name = b"archive/extra/blob"
        f.write(
            struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, 0, FAR, FAR, len(name), 20)
            + name
            + struct.pack("<HHQQ", 1, 16, blob_size, blob_size)
        )
        f.seek(f.tell() + blob_size)
        extra = struct.pack("<HHQQ", 1, 16, blob_size, blob_size)
        cds.append(_central(name, 0, FAR, FAR, blob_at, extra))
        for name, data in _OTHERS:
            off = f.tell()
            f.write(_local(name, data))
            extra = struct.pack("<HHQ", 1, 8, off)
            cds.append(_central(name, zlib.crc32(data), len(data), len(data), FAR, extra))
        cd_offset = f.tell()
        cd = b"".join(cds)
        f.write(cd)
        _zip64_end(f, len(cds), cd, cd_offset)
    verdict = _audit(path)
    assert verdict.status == "safe", verdict.findings
    with zipfile.ZipFile(path) as zf:  # (the premise: zipfile reads it too)
        assert zf.getinfo("archive/byteorder").header_offset > FAR


# -- 2. bytes no member covers -----------------------------------------------------------------


def test_a_pickle_hidden_between_members_is_named(tmp_path: Path) -> None:
    evil = _payload(tmp_path / "marker")
    hidden = _local(b"archive/data.pkl", evil)
    pkl = _benign()
    body = bytearray(_local(b"archive/data.pkl", pkl))
    cds = [_central(b"archive/data.pkl", zlib.crc32(pkl), len(pkl), len(pkl), 0)]
    body += hidden  # covered by no central-directory entry
    for name, data in _OTHERS:
        cds.append(_central(name, zlib.crc32(data), len(data), len(data), len(body)))
        body += _local(name, data)
    cd = b"".join(cds)
    path = tmp_path / "hidden.pt"
    path.write_bytes(bytes(body) + cd + _eocd(len(cds), len(cd), len(body)))
    verdict = _audit(path)
    assert verdict.status == "unsafe"
    assert "hidden-member" in _codes(verdict) and _names_open(verdict)
    assert not (tmp_path / "marker").exists()


def test_real_torch_save_zips_have_no_hidden_bytes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    for i, obj in enumerate(
        [
            {"w": torch.zeros(3), "b": torch.ones(5, dtype=torch.float16)},
            {"layers": [torch.zeros(64, 64) for _ in range(5)], "step": 3},
            torch.zeros(1),
        ]
    ):
        path = tmp_path / f"real{i}.pt"
        torch.save(obj, path)
        verdict = _audit(path)
        assert verdict.status == "safe", verdict.findings
        buf = io.BytesIO()  # zipfile's own archives (no data descriptors; deflated; zip64)
        with zipfile.ZipFile(path) as src:
            for kwargs in ({}, {"compression": zipfile.ZIP_DEFLATED}):
                with zipfile.ZipFile(buf, "w", **kwargs) as dst:
                    for info in src.infolist():
                        with dst.open(info.filename, "w", force_zip64=True) as fh:
                            fh.write(src.read(info))
                again = tmp_path / f"again{i}.pt"
                again.write_bytes(buf.getvalue())
                assert _audit(again).status == "safe", _audit(again).findings
                buf = io.BytesIO()


# -- 3. odd members torch never reads, a wrong CRC, odd end records -----------------------------


def _variant(kind: str, pkl: bytes) -> bytes:
    notes = dict(name=b"archive/extra/notes", data=b"x" * 10)
    if kind == "crc":
        return bytes(_plain_zip(pkl, pkl_crc=0xDEADBEEF))
    if kind == "fake-eocd":
        return bytes(_plain_zip(pkl, comment=b"hello PK\x05\x06xyz"))
    if kind == "encrypted":
        return bytes(_plain_zip(pkl, [dict(notes, flags=1)]))
    if kind == "method-12":
        return bytes(_plain_zip(pkl, [dict(notes, method=12)]))
    data = _plain_zip(pkl, [notes])
    cd_at = data.find(b"PK\x01\x02")
    last = data.rfind(b"PK\x03\x04", 0, cd_at)
    if kind == "broken-local":
        data[last : last + 4] = b"XX\x03\x04"
    elif kind == "huge-local-extra":
        data[last + 28 : last + 30] = struct.pack("<H", 0xFFFF)
    elif kind == "locator-to-nowhere":
        eocd = data.rfind(b"PK\x05\x06")
        data[eocd:eocd] = struct.pack("<IIQI", 0x07064B50, 0, 0, 1)
    return bytes(data)


KINDS = [
    "crc",
    "fake-eocd",
    "encrypted",
    "method-12",
    "broken-local",
    "huge-local-extra",
    "locator-to-nowhere",
]


@pytest.mark.slow
def test_torch_runs_data_pkl_despite_odd_members(tmp_path: Path) -> None:
    """The premise of the next test: torch.load reads past every one of these."""
    paths = []
    for kind in KINDS:
        marker = tmp_path / f"marker-{kind}"
        path = tmp_path / f"{kind}.pt"
        path.write_bytes(_variant(kind, _payload(marker)))
        paths.append(path)
    ran = _torch_runs(tmp_path, paths)
    for kind, path in zip(KINDS, paths, strict=True):
        assert (tmp_path / f"marker-{kind}").exists(), (kind, ran.get(str(path)))


@pytest.mark.parametrize("kind", KINDS)
def test_odd_members_do_not_stop_the_audit_of_data_pkl(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(_variant(kind, _payload(marker)))
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names_open(verdict), verdict.findings
    _refused(path)
    benign = tmp_path / f"benign-{kind}.pt"
    benign.write_bytes(_variant(kind, _benign()))
    assert _audit(benign).status in ("error", "unsafe")  # as severe as before, never safe
    with pytest.raises((UnsafeFileError, ConversionError)):
        convert_file(benign, tmp_path / "out.safetensors")
    assert not marker.exists()


def test_a_short_signature_after_the_end_record_is_skipped(tmp_path: Path) -> None:
    """miniz ignores a signature with less than 22 bytes after it; zipfile does not."""
    path = tmp_path / "fake.pt"
    path.write_bytes(_variant("fake-eocd", _benign()))
    tf = read_torch_file(path, "zip")
    assert tf.pickle_label == "archive/data.pkl"
    assert {f.code for f in tf.findings if f.severity == "unsafe"} == {"ambiguous-zip"}


# -- 4. folders: symlinked subfolders, link loops, shard indexes --------------------------------


def _hostile_bin(path: Path, marker: Path) -> None:
    path.write_bytes(bytes(_plain_zip(_payload(marker))))


def test_a_symlinked_component_folder_is_audited(tmp_path: Path) -> None:
    from modelsafe.testing import write_safetensors

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _hostile_bin(elsewhere / "diffusion_pytorch_model.bin", tmp_path / "marker")
    pipe = tmp_path / "pipe"
    (pipe / "vae").mkdir(parents=True)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "X"}))
    write_safetensors(pipe / "vae" / "diffusion_pytorch_model.safetensors", [("w", "F16", (4,))])
    os.symlink(elsewhere, pipe / "unet")
    verdict = _audit(pipe)
    assert verdict.status == "unsafe" and _names_open(verdict)
    assert any(
        f.location.startswith(str(Path("unet") / "diffusion_pytorch_model.bin"))
        for f in verdict.findings
    )
    assert not (tmp_path / "marker").exists()


def test_symlink_loops_end(tmp_path: Path) -> None:
    from modelsafe.testing import write_safetensors

    folder = tmp_path / "loop"
    (folder / "a").mkdir(parents=True)
    write_safetensors(folder / "a" / "model.safetensors", [("w", "F16", (4,))])
    os.symlink(folder, folder / "a" / "up")
    os.symlink(folder / "a", folder / "again")
    os.symlink(folder / "missing", folder / "dangling")
    verdict = _audit(folder)
    assert verdict.status == "safe", verdict.findings


@pytest.mark.parametrize(
    "shard", ["../elsewhere/evil.bin", "/abs/evil.bin", "sub/../../evil.bin", "..\\evil.bin"]
)
def test_a_shard_index_pointing_outside_is_unsafe(tmp_path: Path, shard: str) -> None:
    from modelsafe.testing import write_safetensors

    folder = tmp_path / "model"
    folder.mkdir()
    write_safetensors(folder / "model-00001-of-00002.safetensors", [("w", "F16", (4,))])
    index = folder / "pytorch_model.bin.index.json"
    weight_map = {"w": "model-00001-of-00002.safetensors", "v": shard}
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    verdict = _audit(folder)
    assert verdict.status == "unsafe"
    assert "shard-outside" in _codes(verdict)
    assert _audit(index).status == "unsafe"


def test_a_shard_index_inside_the_folder_is_safe(tmp_path: Path) -> None:
    from modelsafe.testing import write_safetensors

    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    write_safetensors(folder / "model-00001-of-00002.safetensors", [("w", "F16", (4,))])
    write_safetensors(folder / "sub" / "model-00002-of-00002.safetensors", [("v", "F16", (4,))])
    weight_map = {
        "w": "model-00001-of-00002.safetensors",
        "v": "sub/model-00002-of-00002.safetensors",
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert _audit(folder).status == "safe"


def test_a_link_into_proc_is_not_walked(tmp_path: Path) -> None:
    from modelsafe.registry.audit import folder_files

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"x")
    os.symlink("/proc", folder / "proc")
    os.symlink("/proc/self/root" + str(tmp_path / "elsewhere"), folder / "via-proc")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "evil.bin").write_bytes(b"y")
    rels = [str(rel) for _, rel in folder_files(folder)]
    assert rels == ["model.bin", str(Path("via-proc") / "evil.bin")]
