"""Builds the safety corpus in a folder: benign torch files of every shape, malicious files for
each evasion class (their payload would only create ``marker`` in the same folder), broken files.

Imported by the safety tests and by ``benchmarks/bench_audit.py``; needs torch.
"""

from __future__ import annotations

import io
import lzma
import os
import pickle
import random
import struct
import warnings
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "marker"


# -- benign ---------------------------------------------------------------------------------------


def _tensors(legacy: bool) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    out: dict[str, Any] = {
        "f32": torch.randn(3, 5, generator=g),
        "f16": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "f64": torch.randn(2, generator=g).double(),
        "i64": torch.arange(5),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
        "u8": torch.arange(6, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.complex(torch.randn(3, generator=g), torch.randn(3, generator=g)),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0),
        "empty2d": torch.zeros(3, 0),
        "base": base,
        "row": base[1],
        "col": base[:, 2],
        "transposed": base.t(),
        "stepped": base[::2, 1::2],
        "alias": base,
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
    }
    if not legacy:  # torch cannot load fp8 storages back from the legacy format
        out["f8e4"] = torch.randn(4, generator=g).to(torch.float8_e4m3fn)
        out["f8e5"] = torch.randn(4, generator=g).to(torch.float8_e5m2)
    return out


def _shapes(legacy: bool) -> dict[str, Callable[[], Any]]:
    def flat() -> Any:
        return _tensors(legacy)

    def ordered() -> Any:
        return OrderedDict(_tensors(legacy))

    def lightning() -> Any:
        return {
            "state_dict": OrderedDict(_tensors(legacy)),
            "epoch": 3,
            "global_step": 1200,
            "pytorch-lightning_version": "2.1.0",
        }

    def nested() -> Any:
        t = _tensors(legacy)
        return {"model": {"unet": {"w": t["f32"], "b": t["f16"]}}, "ema": [t["bf16"], t["i64"]]}

    def single_tensor_dict() -> Any:
        import torch

        return {"only": torch.ones(2, 2)}

    return {
        "flat": flat,
        "ordered": ordered,
        "lightning": lightning,
        "nested": nested,
        "one": single_tensor_dict,
    }


def build_benign(folder: Path) -> dict[str, Path]:
    """Benign files: zip and legacy, protocols 2-5, every structure above."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for legacy in (False, True):
        for shape, make in _shapes(legacy).items():
            for proto in (2, 3, 4, 5):
                if shape != "flat" and proto in (3, 5):
                    continue  # keep the corpus small: every shape at 2 and 4, flat at all four
                kind = "legacy" if legacy else "zip"
                path = folder / f"benign-{kind}-{shape}-p{proto}.pt"
                torch.save(
                    make(),
                    path,
                    pickle_protocol=proto,
                    _use_new_zipfile_serialization=not legacy,
                )
                files[path.name] = path
    return files


def expected_tensors(obj: Any) -> dict[str, Any]:
    """Flatten a torch.load result the way modelsafe names tensors."""
    import torch

    out: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, torch.Tensor):
            out[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{prefix}.{i}" if prefix else str(i))

    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        walk(obj["state_dict"], "")
    else:
        walk(obj, "")
    return out


# -- malicious ------------------------------------------------------------------------------------


class _Shell:
    """Pickles as ``os.system("touch <marker>")``: the classic payload deny-lists look for."""

    def __init__(self, marker: Path) -> None:
        self.command = f"touch '{marker}'"

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class _Open:
    """Pickles as ``builtins.open(marker, "w")``: executing it would only create the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _str_op(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."  # (no PROTO)
# 1001 as a 65-byte LONG4: the int 1001 to CPython, whatever its length
LONG_1001 = b"\x80\x02\x8b" + (65).to_bytes(4, "little") + (1001).to_bytes(65, "little") + b"."


def legacy_stream(
    main: bytes,
    *,
    magic: bytes = b"\x80\x02" + LEGACY_MAGIC,
    protocol: bytes = b"\x80\x02M\xe9\x03.",
    sys_info: bytes = b"\x80\x02}.",
    keys: bytes = b"\x80\x02].",
) -> bytes:
    """A legacy torch file without storages: the five pickles torch.load reads in turn (magic
    number, protocol, sys info, the object, the storage keys)."""
    return magic + protocol + sys_info + main + keys


def open_call(marker: Path) -> bytes:
    """A protocol-2 pickle of ``{"x": builtins.open(marker, "w")}``: running it only creates the
    marker."""
    return (
        b"\x80\x02}"
        + _unicode("x")
        + b"cbuiltins\nopen\n"
        + _unicode(str(marker))
        + (_unicode("w") + b"\x86Rs.")
    )


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def bomb_after_stop(checkpoint: bytes, zeros: int = 65 << 20) -> bytes:
    """A torch zip whose data.pkl is followed by ``zeros`` zero bytes, deflated: a zip bomb by its
    sizes, a pickle torch reads up to its STOP."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(checkpoint)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                dst.writestr(info.filename, data + b"\0" * zeros, zipfile.ZIP_DEFLATED)
            else:
                dst.writestr(info.filename, data)
    return out.getvalue()


def _zip_from(members: list[tuple[str, bytes]], prefix: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are the point of some files
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name), data)
    return prefix + buf.getvalue()


def _benign_members(folder: Path) -> list[tuple[str, bytes]]:
    import torch

    path = folder / "_template.pt"
    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    path.unlink()
    return [(name.replace("_template/", "archive/"), data) for name, data in members]


def build_malicious(folder: Path) -> dict[str, Path]:
    """One file per evasion class; each payload would only create ``folder/marker``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    m = str(marker).encode()
    evil = _Open(marker)
    files: dict[str, bytes] = {}

    def save(name: str, obj: Any, **kw: Any) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf, **kw)
        files[name] = buf.getvalue()

    save("zip-reduce-p2.pt", {"w": torch.ones(2), "x": evil})
    save("zip-os-system.pt", {"w": torch.ones(2), "x": _Shell(marker)})
    save(
        "legacy-os-system.pt",
        {"w": torch.ones(2), "x": _Shell(marker)},
        _use_new_zipfile_serialization=False,
    )
    save("zip-stackglobal-p4.pt", {"w": torch.ones(2), "x": evil}, pickle_protocol=4)
    save("legacy-reduce.pt", {"w": torch.ones(2), "x": evil}, _use_new_zipfile_serialization=False)
    save(
        "legacy-p4.pt",
        {"w": torch.ones(2), "x": evil},
        _use_new_zipfile_serialization=False,
        pickle_protocol=4,
    )
    save("lightning-callback.ckpt", {"state_dict": {"w": torch.ones(2)}, "callbacks": {"c": evil}})
    for proto in range(6):
        files[f"plain-p{proto}.pkl"] = pickle.dumps({"x": evil}, protocol=proto)
    q = b"'" + m + b"'"
    files["inst.pkl"] = b"(S" + q + b"\nS'w'\nibuiltins\nopen\n."
    files["obj.pkl"] = b"(cbuiltins\nopen\nS" + q + b"\nS'w'\no."
    files["newobj.pkl"] = b"\x80\x02cbuiltins\nopen\nS" + q + b"\nS'w'\n\x86\x81."
    files["newobj-ex.pkl"] = (
        b"\x80\x04" + _str_op("builtins") + _str_op("open") + b"\x93S" + q + b"\nS'w'\n\x86}\x92."
    )
    files["py2-builtin.pkl"] = b"c__builtin__\nopen\n(S" + q + b"\nS'w'\ntR."
    files["memo-stackglobal.pkl"] = (
        b"\x80\x04" + _str_op("builtins") + b"\x94" + _str_op("open") + b"\x94"
        b"h\x00h\x01\x93S" + q + b"\nS'w'\n\x86R."
    )
    files["dynamic-global.pkl"] = (
        b"\x80\x04c_codecs\nencode\n(Vbuiltins\nVlatin1\ntR"
        + _str_op("open")
        + b"\x93S"
        + q
        + b"\nS'w'\n\x86R."
    )
    files["dotted-lookalike.pkl"] = (
        b"\x80\x04" + _str_op("torch._utils") + _str_op("_rebuild_tensor_v2.__globals__") + b"\x93."
    )
    files["build-on-global.pkl"] = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}S'__code__'\nNs\x86b."
    )
    files["ext1.pkl"] = b"\x80\x02\x82\x01S" + q + b"\nS'w'\n\x86R."
    files["persid.pkl"] = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(S" + q + b"\nQK\x00K\x01\x85K\x01\x85\x89"
        b"ccollections\nOrderedDict\n)RtR."
    )
    files["memo-overwrite.pkl"] = b"\x80\x02S'x'\np0\n0S'y'\np0\n0g0\n."
    files["frame-crossing.pkl"] = b"\x80\x04\x95\x01\x00\x00\x00\x00\x00\x00\x00K\x05."
    files["after-error.pkl"] = b"\x80\x02cbuiltins\nopen\nS" + q + b"\nS'w'\n\x86R\xff."
    payload = pickle.dumps(evil, protocol=2)
    files["plain-then-evil.pkl"] = pickle.dumps({"a": 1}, protocol=2) + payload

    members = _benign_members(folder)
    pkl = dict(members)["archive/data.pkl"]
    others = [(n, d) for n, d in members if n != "archive/data.pkl"]
    files["zip-after-stop.pt"] = _zip_from([("archive/data.pkl", pkl + payload), *others])
    files["zip-second-pickle.pt"] = _zip_from(
        [("archive/data.pkl", pkl), *others, ("archive/extra.pkl", payload)]
    )
    files["zip-duplicate.pt"] = _zip_from(
        [("archive/data.pkl", pkl), *others, ("archive/data.pkl", payload)]
    )
    files["zip-case.pt"] = _zip_from(
        [("archive/data.pkl", pkl), *others, ("archive/DATA.pkl", payload)]
    )
    files["zip-path-trick.pt"] = _zip_from(
        [("archive/data.pkl", pkl), *others, ("archive/../archive/data.pkl", payload)]
    )
    files["zip-outside.pt"] = _zip_from([*members, ("other/data.pkl", payload)])
    files["torchscript.pt"] = _zip_from([*members, ("archive/constants.pkl", pickle.dumps(()))])
    files["zip-prefixed.pt"] = _zip_from(members, prefix=payload)
    files["zip-junk-prefix.pt"] = _zip_from(members, prefix=b"\x00\x01junk" * 16)
    files["zip-evil-only-in-data.pt"] = _zip_from([("archive/data.pkl", payload), *others])
    legacy = io.BytesIO()
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    files["legacy-trailing-pickle.pt"] = legacy.getvalue() + payload
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    files["object-array.npy"] = (
        b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + pickle.dumps([evil])
    )
    # round 5: headers the audit must not stop at, a bomb-sized data.pkl, legacy .lzma
    main = open_call(marker)
    files["legacy-long-protocol.pt"] = legacy_stream(main, protocol=LONG_1001)
    files["legacy-complex-protocol.pt"] = legacy_stream(
        main, protocol=b"\x80\x02cbuiltins\ncomplex\nM\xe9\x03\x85R."
    )
    files["legacy-html-header.pt"] = legacy_stream(
        main, magic=LEGACY_MAGIC, protocol=LONG_1001, sys_info=b"\x80\x02X\x06\x00\x00\x00<html>."
    )
    files["legacy-header-limit.pt"] = legacy_stream(
        main, sys_info=b"\x80\x02" + b"(" * 100_001 + b"N."
    )
    files["zip-bomb-data-pkl.pt"] = bomb_after_stop(files["zip-reduce-p2.pt"])
    files["pickle.pkl.lzma"] = lzma.compress(payload, format=lzma.FORMAT_ALONE)
    files["safetensors-dup-key.safetensors"] = _safetensors_raw(
        b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        b'"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b"\0" * 4,
    )
    # round 7: a limit stop, then names fed from the memo, in files valid as something else
    past_limit = memo_fed_past_limit(marker)
    files["limit-safetensors-polyglot.safetensors"] = polyglot_safetensors(past_limit)
    files["limit-npy-storage.pt"] = npy_storage_checkpoint(past_limit)
    out: dict[str, Path] = {}
    for name, data in files.items():
        path = folder / f"evil-{name}"
        path.write_bytes(data)
        out[path.name] = path
    return out


def memo_fed_past_limit(marker: Path) -> bytes:
    """``open(marker, "w")`` after the VM's object budget (2.3M empty dicts) and the scan's
    opcode budget (1.05M NONE/POP pairs), through a STACK_GLOBAL on two memo reads."""

    def text(value: str | Path) -> bytes:
        return b"V" + str(value).encode() + b"\n"

    names = text("builtins") + b"p0\n0" + text("open") + b"p1\n0"
    flood = b"}0" * 2_300_000 + b"N0" * 1_050_000
    return names + flood + b"g0\ng1\n\x93" + text(marker) + text("w") + b"\x86R."


def polyglot_safetensors(body: bytes) -> bytes:
    """A valid safetensors file whose U8 tensor is ``body`` and whose bytes are a pickle too: the
    header length starts with ``V`` (UNICODE to the header's closing newline), the header ends
    ``\\n}`` (EMPTY_DICT), and a POP leads into ``body``."""
    import json

    body = b"0" + body
    entry = {"w": {"dtype": "U8", "shape": [len(body)], "data_offsets": [0, len(body)]}}
    core = json.dumps(entry, separators=(",", ":"))[:-1]
    for pad in range(512):
        header = (core + " " * pad + "\n}").encode()
        size = struct.pack("<Q", len(header))
        if size[0] == ord("V") and b"\n" not in size:
            return size + header + body
    raise AssertionError("no header length starts with V")


def npy_storage_checkpoint(body: bytes) -> bytes:
    """A torch checkpoint whose storage member is an object ``.npy`` holding ``body``:
    numpy.load(allow_pickle=True) of the file unpickles it."""
    import torch

    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body
    buf = io.BytesIO()
    torch.save({"w": torch.frombuffer(bytearray(npy), dtype=torch.uint8)}, buf)
    return buf.getvalue()


def _safetensors_raw(header: bytes, data: bytes) -> bytes:
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


# -- broken ---------------------------------------------------------------------------------------


def build_broken(folder: Path) -> dict[str, Path]:
    """Files that cannot be read: each must be an ``error`` verdict."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1234)
    files: dict[str, bytes] = {}
    buf = io.BytesIO()
    torch.save({"w": torch.ones(64)}, buf)
    good_zip = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"w": torch.ones(64)}, buf, _use_new_zipfile_serialization=False)
    good_legacy = buf.getvalue()
    files["truncated-zip.pt"] = good_zip[: len(good_zip) // 2]
    files["truncated-zip-tail.pt"] = good_zip[:-10]
    files["truncated-legacy.pt"] = good_legacy[: len(good_legacy) - 100]
    files["truncated-legacy-pickle.pt"] = good_legacy[:200]
    files["empty.ckpt"] = b""
    files["zip-without-data-pkl.pt"] = _zip_from([("archive/version", b"3\n")])
    files["plain-zip.ckpt"] = _zip_from([("readme.txt", b"hello")])
    wrong = bytearray(good_legacy)
    wrong[5] ^= 0xFF
    files["wrong-magic.pt"] = bytes(wrong)
    files["random.ckpt"] = bytes(rng.getrandbits(8) for _ in range(4096))
    files["random-pickle-start.pt"] = b"\x80\x02" + bytes(rng.getrandbits(8) for _ in range(512))
    files["lfs-pointer.safetensors"] = (
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 123\n"
    )
    files["login.ckpt"] = b"<!DOCTYPE html><html><body>Please log in</body></html>"
    files["api-error.safetensors"] = b'{"error": "Repository not found"}'
    files["bomb.ckpt"] = _zip_bomb()
    files["bad-crc.pt"] = _flip_pickle_byte(good_zip)
    files["st-header-too-long.safetensors"] = struct.pack("<Q", 10_000) + b'{"a":1}'
    files["st-trailing.safetensors"] = _safetensors_raw(
        b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 12
    )
    files["st-overlap.safetensors"] = _safetensors_raw(
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
        b"\0" * 12,
    )
    files["st-bad-dtype.safetensors"] = _safetensors_raw(
        b'{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4
    )
    files["st-shape-mismatch.safetensors"] = _safetensors_raw(
        b'{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}}', b"\0" * 4
    )
    files["st-bad-json.safetensors"] = _safetensors_raw(b'{"w":{"dtype":', b"")
    out: dict[str, Path] = {}
    for name, data in files.items():
        path = folder / f"broken-{name}"
        path.write_bytes(data)
        out[path.name] = path
    return out


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("archive/data.pkl", "w", force_zip64=True) as fh:
            block = b"\0" * (1 << 20)
            for _ in range(200):
                fh.write(block)
    return buf.getvalue()


def _flip_pickle_byte(data: bytes) -> bytes:
    raw = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[0]
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + 5] ^= 0x01
    assert zlib.crc32(bytes(raw[start : start + info.file_size])) != info.CRC
    return bytes(raw)
