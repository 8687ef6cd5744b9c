"""Audit red-team pass 5 (pickle streams the audit stopped reading too early): legacy headers
whose values the VM held as stand-ins (a 65-byte LONG4 1001, ``complex(1001)``, a numpy scalar),
an early header pickle past a VM limit, a wrong header with code after it, a legacy file that
sniffs as HTML, a compressed legacy file in a folder, a zip-bomb-sized data.pkl and the legacy
``.lzma`` format. Each payload would only create ``marker``; the audit never does."""

from __future__ import annotations

import gzip
import lzma
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from safety_corpus import (
    LEGACY_MAGIC,
    LONG_1001,
    bomb_after_stop,
    legacy_stream,
    open_call,
)

from modelsafe.registry.pickle_vm.limits import Limits
from modelsafe.registry.pickle_vm.machine import run_pickle
from modelsafe.registry.sniff import is_lzma_alone

RunCli = Callable[..., tuple[int, str, str]]
OPEN = "builtins.open"


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "auditing ran the payload"


def _unsafe(run_cli: RunCli, path: Path, name: str = OPEN) -> str:
    code, out, err = run_cli("audit", str(path))
    assert code == 1, (out, err)
    assert name in out, out
    return out


def _folder(tmp_path: Path, name: str, data: bytes) -> Path:
    """A model folder: a valid safetensors model and ``name`` holding ``data`` beside it."""
    from safetensors.numpy import save_file

    np = pytest.importorskip("numpy")
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": np.ones(2, dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / name).write_bytes(data)
    return folder


def _numpy_1001() -> bytes:
    np = pytest.importorskip("numpy")
    return pickle.dumps(np.int64(1001), protocol=2)  # (an allowed numpy helper call)


# -- 1. header values that equal 1001 to CPython -----------------------------------------------


@pytest.mark.parametrize(
    "protocol",
    [
        LONG_1001,
        b"\x80\x02cbuiltins\ncomplex\nM\xe9\x03\x85R.",
        None,  # a numpy int64 scalar
        b"\x80\x02I" + b" " * ((1 << 20) + 16) + b"1001\n.",  # a text INT past the VM's line limit
    ],
    ids=["long4", "complex", "numpy-scalar", "long-text-int"],
)
def test_a_legacy_protocol_torch_reads_as_1001_does_not_hide_the_payload(
    tmp_path: Path, marker: Path, run_cli: RunCli, protocol: bytes | None
) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(legacy_stream(open_call(marker), protocol=protocol or _numpy_1001()))
    out = _unsafe(run_cli, path)
    assert "Call(" not in out and "LargeBytes(" not in out


def test_a_long_magic_number_does_not_hide_the_payload(
    tmp_path: Path, marker: Path, run_cli: RunCli
) -> None:
    """The usual magic LONG1, popped, then the magic number as an 80-byte LONG4."""
    long_magic = b"\x8bP\0\0\0" + 0x1950A86A20F9469CFC6C.to_bytes(80, "little") + b"."
    path = tmp_path / "model.pt"
    path.write_bytes(
        legacy_stream(open_call(marker), magic=b"\x80\x02" + LEGACY_MAGIC[:-1] + b"0" + long_magic)
    )
    _unsafe(run_cli, path)


def test_a_header_torch_refuses_still_has_its_later_pickles_run(
    tmp_path: Path, marker: Path, run_cli: RunCli
) -> None:
    """torch stops at a wrong protocol; a reader that goes on runs the rest: the code there is
    named, and the header error says what the protocol is, not how the VM holds it."""
    path = tmp_path / "model.pt"
    path.write_bytes(legacy_stream(open_call(marker), protocol=b"\x80\x02X\x04\0\0\0abcd."))
    out = _unsafe(run_cli, path)
    assert "legacy protocol 'abcd', torch expects 1001" in out


# -- 1b. a legacy file that sniffs as HTML, alone, in a folder, compressed -----------------------


def _html_legacy(marker: Path) -> bytes:
    return legacy_stream(
        open_call(marker),
        magic=LEGACY_MAGIC,
        protocol=LONG_1001,
        sys_info=b"\x80\x02X\x06\0\0\0<html>.",
    )


def test_a_legacy_file_that_sniffs_as_html_is_unsafe(
    tmp_path: Path, marker: Path, run_cli: RunCli
) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(_html_legacy(marker))
    _unsafe(run_cli, path)
    folder = _folder(tmp_path, "model.ckpt.old", _html_legacy(marker))
    _unsafe(run_cli, folder)


def test_a_compressed_legacy_file_in_a_folder_is_unsafe(
    tmp_path: Path, marker: Path, run_cli: RunCli
) -> None:
    data = legacy_stream(open_call(marker), protocol=LONG_1001)
    folder = _folder(tmp_path, "extra.pt.gz", gzip.compress(data))
    _unsafe(run_cli, folder)


def test_an_unreadable_compressed_checkpoint_keeps_its_folder_from_being_safe(
    tmp_path: Path, run_cli: RunCli
) -> None:
    wrong = legacy_stream(pickle.dumps({"a": 1}, protocol=2), magic=pickle.dumps(7, protocol=2))
    folder = _folder(tmp_path, "extra.pt.gz", gzip.compress(wrong))
    code, out, _ = run_cli("audit", str(folder))
    assert code == 2, out
    assert "wrong magic number" in out


# -- 2. a limit in an early pickle --------------------------------------------------------------


@pytest.mark.parametrize(
    "part",
    [
        "sys_info",  # 2.3M empty dicts pushed and popped: past the object budget
        "magic",  # 100k nested MARKs before the magic number: past the MARK limit
    ],
)
def test_a_limit_in_a_header_pickle_does_not_hide_the_main_pickle(
    tmp_path: Path, marker: Path, run_cli: RunCli, part: str
) -> None:
    if part == "sys_info":
        data = legacy_stream(open_call(marker), sys_info=b"\x80\x02" + b"}0" * 2_300_000 + b"}.")
    else:
        magic = b"\x80\x02" + b"(" * 100_001 + LEGACY_MAGIC
        data = legacy_stream(open_call(marker), magic=magic)
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    out = _unsafe(run_cli, path)
    assert "limit" in out or "MARK" in out


def test_the_vm_says_where_the_next_pickle_starts_after_a_limit() -> None:
    first = b"\x80\x02" + b"}0" * 1000 + b"}."
    result = run_pickle(first + b"\x80\x02N.", limits=Limits(max_object_bytes=1 << 16))
    assert not result.completed and result.findings[-1].code == "limit"
    assert result.resume == len(first)
    framed = b"\x80\x04\x95\x10\0\0\0\0\0\0\0" + b"(" * 5 + b"N." + b"N" * 9  # STOP mid-frame
    result = run_pickle(framed, limits=Limits(max_marks=3))
    assert result.resume == len(framed)
    assert any(f.code == "ambiguous-frame" for f in result.findings)


def test_long_integers_that_only_pad_a_small_number_are_that_number() -> None:
    for value in (1001, -1001, 0):
        for size in (65, 300, (1 << 20) + 3):
            raw = value.to_bytes(size, "little", signed=True)
            data = b"\x80\x02\x8b" + size.to_bytes(4, "little") + raw + b"."
            assert pickle.loads(data) == value
            assert run_pickle(data).root == value
    huge = (1 << 600).to_bytes(80, "little")
    result = run_pickle(b"\x80\x02\x8b" + (80).to_bytes(4, "little") + huge + b".")
    assert type(result.root).__name__ == "LargeBytes"


def test_code_after_a_thousand_empty_pickles_is_named(
    tmp_path: Path, marker: Path, run_cli: RunCli
) -> None:
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2) + b"N." * 2000 + open_call(marker))
    _unsafe(run_cli, path)


# -- 3. a data.pkl followed by a zip bomb's zeros ------------------------------------------------


def test_a_bomb_sized_data_pkl_is_audited_up_to_its_stop(
    tmp_path: Path, marker: Path, run_cli: RunCli
) -> None:
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("archive/data.pkl", open_call(marker))
        zf.writestr("archive/version", b"3\n")
    path = tmp_path / "model.pt"
    path.write_bytes(bomb_after_stop(plain.read_bytes()))
    assert path.stat().st_size < 1 << 20
    out = _unsafe(run_cli, path)
    assert "zip bomb" in out


# -- 4. the legacy .lzma ("alone") format --------------------------------------------------------


def test_a_pickle_in_the_legacy_lzma_format_is_audited(
    tmp_path: Path, marker: Path, run_cli: RunCli
) -> None:
    blob = lzma.compress(open_call(marker), format=lzma.FORMAT_ALONE)
    path = tmp_path / "features.pkl.lzma"
    path.write_bytes(blob)
    _unsafe(run_cli, path)
    _unsafe(run_cli, _folder(tmp_path, "features.pkl.xz", blob))


def test_only_real_lzma_headers_read_as_lzma() -> None:
    for preset in (0, 6, 9):
        assert is_lzma_alone(lzma.compress(b"x", format=lzma.FORMAT_ALONE, preset=preset))
    assert not is_lzma_alone(b"\0" * 64)
    for protocol in (0, 1, 2):  # a list pickle starts with "]" (0x5D) too
        assert not is_lzma_alone(pickle.dumps([1, 2, 3] * 10, protocol=protocol))
    assert not is_lzma_alone(b"]" + (4097).to_bytes(4, "little") + b"\xff" * 8)
