"""Audit red-team pass 7 (a VM limit that dropped out of the verdict): a pickle stops the VM on
its object budget, exhausts the scan after the stop, then imports a name fed from the memo. Hidden
in a valid safetensors file, in a torch checkpoint whose storage is an object ``.npy``, or in a
folder's ``scaler.joblib``, it audited ``safe``. Bytes a loader would unpickle that hit a limit
are never ``safe`` now, and the byte search past the scan names memo-fed and non-listed
STACK_GLOBALs. Also: a plain pickle is no longer run through twice (the legacy-shape probe).
Each payload would only create ``marker``; the audit never does."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safety_corpus import memo_fed_past_limit, npy_storage_checkpoint, polyglot_safetensors

from modelsafe.registry import torch_archive
from modelsafe.registry.audit import audit_path
from modelsafe.registry.pickle_vm import machine
from modelsafe.registry.pickle_vm.limits import Limits
from modelsafe.registry.pickle_vm.machine import run_pickle
from modelsafe.types import Verdict

OPEN = "builtins.open"
FLOOD = b"}0" * 2_300_000  # 2.3M empty dicts pushed and popped: past the VM's object budget
PAD = b"N0" * 1_050_000  # past the 2M-opcode scan that runs after the VM stopped


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "auditing ran the payload"


def _text(value: str | Path) -> bytes:
    return b"V" + str(value).encode() + b"\n"


def _stack_fed(marker: Path) -> bytes:
    """The names left on the stack below the flood: the STACK_GLOBAL past the pad is a bare
    byte the search cannot tie to them (only the limit tells)."""
    names = _text("builtins") + _text("open")
    return names + FLOOD + PAD + b"\x93" + _text(marker) + _text("w") + b"\x86R."


def _audit(path: Path) -> Verdict:
    return audit_path(path)


def _names(verdict: Verdict, name: str) -> bool:
    return any(f.severity == "unsafe" and name in f.message for f in verdict.findings)


def _limited(verdict: Verdict) -> bool:
    return any(f.severity == "error" and f.code == "limit" for f in verdict.findings)


# -- 1. a valid safetensors file that is also a pickle past a limit -----------------------------


def test_a_safetensors_polyglot_past_a_limit_is_unsafe(tmp_path: Path, marker: Path) -> None:
    from safetensors.numpy import load_file

    path = tmp_path / "model.safetensors"
    path.write_bytes(polyglot_safetensors(memo_fed_past_limit(marker)))
    assert load_file(str(path))["w"].size > 1 << 20  # (a valid file: safetensors reads it)
    for name in ("model.safetensors", "model.ckpt"):
        copy = tmp_path / name
        copy.write_bytes(path.read_bytes())
        verdict = _audit(copy)
        assert verdict.status == "unsafe", verdict.findings
        assert _names(verdict, OPEN) and _limited(verdict)


def test_a_limit_alone_makes_a_safetensors_polyglot_an_error(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(polyglot_safetensors(_stack_fed(marker)))
    verdict = _audit(path)
    assert verdict.status == "error" and _limited(verdict), verdict.findings
    assert any(f.code == "unread-pickle" for f in verdict.findings)


# -- 2. a torch checkpoint whose storage is an object .npy --------------------------------------


def _npy_checkpoint(path: Path, body: bytes) -> None:
    pytest.importorskip("torch")
    path.write_bytes(npy_storage_checkpoint(body))
    with zipfile.ZipFile(path) as zf:  # (numpy.load reads that member as an object array)
        members = [zf.read(name) for name in zf.namelist()]
        assert any(m.startswith(b"\x93NUMPY\x01\x00") and m.endswith(body) for m in members)


@pytest.mark.parametrize("memo", [True, False], ids=["memo-fed", "stack-fed"])
def test_a_checkpoint_storage_that_is_an_object_npy_keeps_its_findings(
    tmp_path: Path, marker: Path, memo: bool
) -> None:
    path = tmp_path / "model.pt"
    _npy_checkpoint(path, memo_fed_past_limit(marker) if memo else _stack_fed(marker))
    verdict = _audit(path)
    assert verdict.status == ("unsafe" if memo else "error"), verdict.findings
    assert _limited(verdict) and any(f.code == "npy-pickle" for f in verdict.findings)
    assert _names(verdict, OPEN) == memo


# -- 3. a folder's stray file that starts as text ----------------------------------------------


def _model_folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    from safetensors.numpy import save_file

    np = pytest.importorskip("numpy")
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": np.ones(2, dtype=np.float32)}, str(folder / "model.safetensors"))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_a_text_started_pickle_past_a_limit_in_a_folder_is_unsafe(
    tmp_path: Path, marker: Path
) -> None:
    readme = b"# model\n\nWeights for (((tests))).\n" * 200  # (text beside them stays quiet)
    data = memo_fed_past_limit(marker)
    files = {"scaler.joblib": data, "model_best.pth.tar": data, "README": readme}
    folder = _model_folder(tmp_path, {**files, "notes.md": readme})
    verdict = _audit(folder)
    assert verdict.status == "unsafe", verdict.findings
    for name in ("scaler.joblib", "model_best.pth.tar"):
        assert any(
            f.severity == "unsafe" and OPEN in f.message and f.location.startswith(name)
            for f in verdict.findings
        ), name
    assert not [f for f in verdict.findings if f.location.startswith(("README", "notes.md"))]


@pytest.mark.parametrize("name", ["scaler.joblib", "notes.md"])
def test_a_limit_alone_makes_the_folder_an_error(tmp_path: Path, marker: Path, name: str) -> None:
    verdict = _audit(_model_folder(tmp_path, {name: _stack_fed(marker)}))
    assert verdict.status == "error" and _limited(verdict), verdict.findings
    assert all(f.location.startswith(name) for f in verdict.findings if f.severity == "error")


# -- 4. the byte search past the scan ------------------------------------------------------------

_SMALL = Limits(max_object_bytes=1 << 16)
_SMALL_FLOOD = b"]0" * 2000


def _su(text: bytes) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text


def _searched(data: bytes, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    monkeypatch.setattr(machine, "_SCAN_OPCODES", 100)
    result = run_pickle(b"\x80\x04" + data, limits=_SMALL)
    assert not result.completed
    assert any(
        f.code == "limit" and "after the pickle VM stopped" in f.message for f in result.findings
    )
    return [f for f in result.findings if f.severity == "unsafe"]


CALL = _su(b"x") + b"\x85R."


@pytest.mark.parametrize(
    ("names", "tail"),
    [
        (_su(b"builtins") + b"\x94" + _su(b"open") + b"\x94", b"h\x00h\x01\x93"),  # BINGET
        (_su(b"builtins") + b"\x94" + _su(b"open") + b"\x94", b"j\0\0\0\0j\1\0\0\0\x93"),
        (_su(b"builtins") + b"p0\n" + _su(b"open") + b"p1\n", b"g0\ng1\n\x93"),  # GET
        (b"", b"T\x08\0\0\0builtinsT\x04\0\0\0open\x93"),  # BINSTRING
        (b"", b"\x8d\x08" + b"\0" * 7 + b"builtins\x8d\x04" + b"\0" * 7 + b"open\x93"),
        (b"", _su(b"builtins") + b"q\x05N0(1" + _su(b"open") + b"N0\x93"),  # with PUT, POPs
    ],
    ids=["binget", "long-binget", "get", "binstring", "binunicode8", "between"],
)
def test_the_byte_search_names_memo_fed_and_string_pushed_names(
    monkeypatch: pytest.MonkeyPatch, names: bytes, tail: bytes
) -> None:
    data = names + _SMALL_FLOOD + b"N0" * 200 + tail + CALL
    found = _searched(data, monkeypatch)
    assert any(f.code == "global" and OPEN in f.message for f in found), found


def test_the_byte_search_has_no_list_of_dangerous_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    tail = b"U\x06timeitU\x06timeit\x93"  # (timeit is no "dangerous" module; it runs code)
    found = _searched(_SMALL_FLOOD + b"N0" * 200 + tail + CALL, monkeypatch)
    assert any("timeit.timeit (STACK_GLOBAL)" in f.message for f in found), found


def test_an_unknown_memo_slot_is_a_dynamic_global(monkeypatch: pytest.MonkeyPatch) -> None:
    found = _searched(_SMALL_FLOOD + b"N0" * 200 + b"h\x07h\x08\x93" + CALL, monkeypatch)
    assert [f.code for f in found] == ["dynamic-global"]


def test_allowed_names_past_the_scan_are_not_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    literal = _su(b"collections") + _su(b"OrderedDict") + b"\x93"
    memo = _su(b"torch") + b"\x94" + _su(b"Size") + b"\x94"
    data = memo + _SMALL_FLOOD + b"N0" * 200 + literal + b")R0h\x00h\x01\x93)R."
    assert _searched(data, monkeypatch) == []


# -- 7. a plain pickle is run once, not twice ---------------------------------------------------


def _count_opcodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    counts: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        result = run_pickle(*args, **kwargs)
        counts.append(result.opcodes)
        return result

    monkeypatch.setattr(torch_archive, "run_pickle", counting)
    return counts


def test_a_plain_pickle_is_run_through_once(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safety_corpus import LEGACY_MAGIC, legacy_stream, open_call

    counts = _count_opcodes(monkeypatch)
    data = b"\x80\x02" + b"N0" * 200_000 + b"N."
    tf = torch_archive.read_torch_data(Path("x.pkl"), "pickle", data)
    assert tf.format == "pickle" and tf.vm is not None and tf.vm.completed
    assert sum(counts) < 400_000 + 5_000, counts  # (before: the legacy-shape probe ran it all)
    # the probe still finds a legacy file by its shape: the magic number after 40 no-ops, not in
    # the first 32 bytes
    magic = b"\x80\x02" + b"N0" * 40 + LEGACY_MAGIC
    stream = legacy_stream(b"\x80\x02}.", magic=magic)
    assert torch_archive.read_torch_data(Path("x.pt"), "pickle", stream).format == "legacy-torch"
    # a first pickle past the probe's budget is read as a plain pickle: the rest is still run
    path = tmp_path / "model.pt"
    magic = b"\x80\x02" + b"N0" * 5000 + LEGACY_MAGIC
    path.write_bytes(legacy_stream(open_call(marker), magic=magic))
    verdict = _audit(path)
    assert verdict.status == "unsafe" and _names(verdict, OPEN), verdict.findings
