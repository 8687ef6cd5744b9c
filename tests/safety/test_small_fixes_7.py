"""Small fixes 7: numpy scalars kept as numbers in ``modelsafe.values``; a zip checkpoint with no
version record is a warning in the audit (torch.load refuses it; nothing in it runs)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from modelsafe.registry.audit import audit_path
from modelsafe.registry.convert import convert_file
from modelsafe.registry.pickle_vm.symbols import Call, Global
from modelsafe.registry.pickle_vm.tensors import _NOT_CONSTANT, _numpy_scalar

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def test_numpy_scalars_become_numbers_in_values(tmp_path: Path) -> None:
    src = tmp_path / "lightning.ckpt"
    torch.save(
        {
            "w": torch.zeros(2),
            "loss": np.float64(0.25),
            "epoch": np.int64(7),
            "best": np.bool_(True),
            "half": np.float16(1.5),
            "small": np.uint8(200),
            "neg": np.int32(-3),
            "lr": np.float32(0.5),
        },
        src,
    )
    meta = _metadata(convert_file(src, tmp_path / "out.safetensors").destination)
    values = json.loads(meta["modelsafe.values"])
    assert values == {
        "loss": 0.25,
        "epoch": 7,
        "best": True,
        "half": 1.5,
        "small": 200,
        "neg": -3,
        "lr": 0.5,
    }
    assert type(values["epoch"]) is int and type(values["best"]) is bool


def _scalar(code: str, order: str, data: object, module: str = "numpy._core.multiarray") -> Call:
    state = (3, order, None, None, None, -1, -1, 0)
    dtype = Call(Global("numpy", "dtype", 0), (code, False, True), None, "REDUCE", 0, state)
    return Call(Global(module, "scalar", 0), (dtype, data), None, "REDUCE", 0)


def test_numpy_scalar_decoding_honours_byte_order_and_refuses_the_rest() -> None:
    assert _numpy_scalar(_scalar("i4", ">", b"\x00\x00\x01\x00")) == 256
    assert _numpy_scalar(_scalar("f8", ">", b"\x3f\xd0" + b"\x00" * 6)) == 0.25
    assert _numpy_scalar(_scalar("u2", "<", b"\x01\x00", "numpy.core.multiarray")) == 1
    # protocol 2 pickles bytes as _codecs.encode(text, 'latin1')
    encoded = Call(Global("_codecs", "encode", 0), ("\x07" + "\x00" * 7, "latin1"), None, "", 0)
    assert _numpy_scalar(_scalar("i8", "<", encoded)) == 7
    # not decoded: wrong length, complex, native/unknown order, strings, a structured dtype
    refused = [
        _scalar("i8", "<", b"\x00" * 4),
        _scalar("c16", "<", b"\x00" * 16),
        _scalar("f4", "=", b"\x00" * 4),
        _scalar("U1", "<", b"a\x00\x00\x00"),
        _scalar("V8", "|", b"\x00" * 8),
        _scalar("i" + "9" * 5000, "<", b"\x00" * 8),
        _scalar("i\u00b2", "<", b"\x00" * 2),
    ]
    structured = _scalar("i8", "<", b"\x00" * 8)
    structured.args[0].state = (3, "|", None, ("a",), {"a": None}, 8, 1, 16)
    refused.append(structured)
    for value in refused:
        assert _numpy_scalar(value) is _NOT_CONSTANT, value


def test_an_undecodable_numpy_scalar_keeps_its_description(tmp_path: Path) -> None:
    src = tmp_path / "c.pt"
    torch.save({"w": torch.zeros(1), "z": np.complex128(1 + 2j)}, src)
    meta = _metadata(convert_file(src, tmp_path / "out.safetensors").destination)
    assert json.loads(meta["modelsafe.values"]) == {"z": "<numpy._core.multiarray.scalar>"}


def _without_version(src: Path, dst: Path) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            if rel in ("version", ".data/version"):
                continue
            if rel == "data.pkl" or rel.startswith("data/"):
                zout.writestr(info, zin.read(info))
    return dst


def test_a_zip_without_version_record_is_a_safe_warning(tmp_path: Path) -> None:
    src = tmp_path / "full.pt"
    torch.save({"w": torch.arange(4.0)}, src)
    bare = _without_version(src, tmp_path / "bare.pt")
    names = zipfile.ZipFile(bare).namelist()
    assert not any(n.endswith("version") for n in names) and any("data.pkl" in n for n in names)
    with pytest.raises(RuntimeError, match="version"):
        torch.load(bare, weights_only=True)
    verdict = audit_path(bare)
    assert verdict.status == "safe"
    codes = {f.code: f for f in verdict.findings}
    assert codes["no-version-record"].severity == "warning"
    assert codes["no-version-record"].message == (
        "no version record: torch.load refuses this file (it is not a loadable checkpoint); "
        "nothing in it runs"
    )
    # a normal checkpoint has no such finding
    assert "no-version-record" not in {f.code for f in audit_path(src).findings}
