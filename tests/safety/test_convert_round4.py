"""Convert, fourth finder round: a header over the format's limit, a source name that is not
UTF-8, the output's permissions, a DST written as a folder, a signal after the rename, tensors
outside an empty state_dict, a checkpoint saved without its data, values kept as placeholders.
Every checkpoint is a real ``torch.save`` file built in the test."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import ConversionError, UsageError
from modelsafe.registry import convert as convert_mod
from modelsafe.registry.convert import convert_file

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
safe_open = pytest.importorskip("safetensors").safe_open

RunCli = Callable[..., tuple[int, str, str]]


def _save(path: Path, value: object) -> Path:
    torch.save(value, path)
    return path


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as fh:  # (the Rust parser: as strict as the format)
        meta = fh.metadata()
    assert isinstance(meta, dict)
    return meta


# -- 1. a header over safetensors' 100,000,000-byte limit ---------------------------------------


def test_a_header_over_the_format_limit_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    # (the limit made small: a real 100 MB header needs a 100 MB source)
    monkeypatch.setattr(convert_mod, "MAX_HEADER_BYTES", 4096)
    src = _save(tmp_path / "long.pt", {f"{i}." + "k" * 1000: torch.zeros(1) for i in range(5)})
    code, _out, err = run_cli("convert", str(src))
    assert code == 2, err
    assert "over the 4,096-byte limit of the format" in err
    assert "5 tensors whose names take 5,0" in err
    assert "Hint: save the tensors under shorter names" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.pt"]  # no temp file either


# -- 2. a source name that is not UTF-8 ----------------------------------------------------------


def _latin1_source(tmp_path: Path) -> Path:
    name = os.fsdecode(b"mod\xe8le.pt")  # 'modele' with a Latin-1 e-grave: a surrogate escape
    return _save(tmp_path / name, {"w": torch.arange(4.0)})


def test_a_source_name_that_is_not_utf8_gives_a_file_safetensors_opens(
    tmp_path: Path, run_cli: RunCli
) -> None:
    src = _latin1_source(tmp_path)
    dst = tmp_path / "out.safetensors"
    code, out, err = run_cli("convert", str(src), str(dst), "--json")
    assert code == 0, err
    meta = _metadata(dst)  # (raised "lone leading surrogate in hex escape" before)
    assert meta["modelsafe.source_name"] == "mod\ufffdle.pt"
    assert json.loads(out)["source"].endswith(meta["modelsafe.source_name"])  # the same name
    assert safetensors_torch.load_file(dst)["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_verify_refuses_a_header_safetensors_would_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the name written as it was before the fix: the verification alone must catch it
    monkeypatch.setattr(convert_mod, "printable", lambda text: text)
    src = _latin1_source(tmp_path)
    dst = tmp_path / "out.safetensors"
    with pytest.raises(ConversionError, match="verification failed.*lone surrogate"):
        convert_file(src, dst)
    assert not dst.exists()


def test_values_with_lone_surrogates_are_strict_json(tmp_path: Path) -> None:
    src = _save(tmp_path / "m.pt", {"w": torch.ones(2), "note": "a\udce8b", "k\udce9": 3})
    dst = tmp_path / "m.safetensors"
    convert_file(src, dst)
    values = _metadata(dst)["modelsafe.values"]
    assert "\\ud" not in values  # (no surrogate escape a strict reader refuses)
    assert json.loads(values) == {"note": "a\ufffdb", "k\ufffd": 3}


# -- 3. permissions ------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_output_takes_the_source_permissions(tmp_path: Path) -> None:
    src = _save(tmp_path / "private.pt", {"w": torch.ones(2)})
    os.chmod(src, 0o600)
    dst = tmp_path / "private.safetensors"
    convert_file(src, dst)
    assert _mode(dst) == 0o600  # (0o644, readable by all, before)


def test_the_output_takes_the_source_permissions_less_the_umask(tmp_path: Path) -> None:
    src = _save(tmp_path / "open.pt", {"w": torch.ones(2)})
    os.chmod(src, 0o666)
    old = os.umask(0o002)
    try:
        convert_file(src, tmp_path / "open.safetensors")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "open.safetensors") == 0o664  # (as cp gives it)


def test_force_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path, run_cli: RunCli) -> None:
    src = _save(tmp_path / "m.pt", {"w": torch.ones(2)})
    os.chmod(src, 0o644)
    dst = tmp_path / "kept.safetensors"
    dst.write_bytes(b"old")
    os.chmod(dst, 0o600)
    code, _out, err = run_cli("convert", str(src), str(dst), "--force")
    assert code == 0, err
    assert _mode(dst) == 0o600
    assert safetensors_torch.load_file(dst)["w"].tolist() == [1.0, 1.0]


# -- 4. a DST written as a folder ----------------------------------------------------------------


def test_a_dst_with_a_trailing_slash_and_no_such_folder_is_refused(
    tmp_path: Path, run_cli: RunCli
) -> None:
    src = _save(tmp_path / "m.pt", {"w": torch.ones(2)})
    code, _out, err = run_cli("convert", str(src), f"{tmp_path}/newdir/")
    assert code == 2, err
    assert "newdir/: not a directory" in err
    assert "Hint: give the path of the file to write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no file named newdir


def test_a_dst_with_a_trailing_slash_that_is_a_folder_is_refused(
    tmp_path: Path, run_cli: RunCli
) -> None:
    src = _save(tmp_path / "m.pt", {"w": torch.ones(2)})
    (tmp_path / "out").mkdir()
    code, _out, err = run_cli("convert", str(src), f"{tmp_path}/out/")
    assert code == 2, err
    assert "out is a folder" in err
    assert "Hint: give the path of the file to write" in err
    assert list((tmp_path / "out").iterdir()) == []


# -- 5. a termination signal once the output is in place ----------------------------------------


def _run_with_signal_at_rename(src: Path, dst: Path, *, rename_fails: bool) -> Any:
    """``modelsafe convert --force`` in a child whose rename of the temp file sends SIGTERM to
    the child itself (just after the rename, or just before a rename that fails)."""
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        real = os.replace
        def replace(a, b):
            if {rename_fails!r}:
                signal.raise_signal(signal.SIGTERM)
                raise OSError(5, "Input/output error")
            real(a, b)
            signal.raise_signal(signal.SIGTERM)  # (the handler runs right after this)
        os.replace = replace
        from modelsafe.cli import main
        sys.argv = ["modelsafe", "convert", {str(src)!r}, {str(dst)!r}, "--force"]
        main()
        """
    )
    return subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False
    )


def test_sigterm_after_the_rename_reports_the_success_it_is(tmp_path: Path) -> None:
    src = _save(tmp_path / "m.pt", {"w": torch.ones(2)})
    dst = tmp_path / "m.safetensors"
    dst.write_bytes(b"OLD")
    proc = _run_with_signal_at_rename(src, dst, rename_fails=False)
    assert proc.returncode == 0, proc.stderr  # (143, "terminated (SIGTERM)", before)
    assert "converted" in proc.stdout and "verified" in proc.stdout
    assert safetensors_torch.load_file(dst)["w"].tolist() == [1.0, 1.0]


def test_sigterm_during_a_rename_that_fails_still_terminates(tmp_path: Path) -> None:
    src = _save(tmp_path / "m.pt", {"w": torch.ones(2)})
    dst = tmp_path / "m.safetensors"
    dst.write_bytes(b"OLD")
    proc = _run_with_signal_at_rename(src, dst, rename_fails=True)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "terminated (SIGTERM)" in proc.stderr
    assert dst.read_bytes() == b"OLD"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.safetensors"]


# -- 6. tensors outside an empty state_dict ------------------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "where"),
    [
        ({"state_dict": {}, "model": {"w": torch.ones(2), "b": torch.ones(1)}}, "model"),
        ({"state_dict": {"step": 3}, "ema": {"w": torch.zeros(2)}}, "ema"),
    ],
)
def test_tensors_outside_an_empty_state_dict_are_named(
    tmp_path: Path, run_cli: RunCli, checkpoint: dict[str, Any], where: str
) -> None:
    src = _save(tmp_path / "m.pt", checkpoint)
    code, _out, err = run_cli("convert", str(src))
    assert code == 2, err
    assert "its 'state_dict' holds no tensors" in err
    assert f"outside it: '{where}.w'" in err
    assert "Hint: convert converts the state_dict only" in err
    assert f"[{where!r}]" in err  # (the part to save on its own)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_checkpoint_without_tensors_says_so(tmp_path: Path) -> None:
    src = _save(tmp_path / "m.pt", {"step": 3})
    with pytest.raises(ConversionError, match="it holds no tensors") as caught:
        convert_file(src)
    assert caught.value.hint


# -- 7. a checkpoint saved without its data (torch.serialization.skip_data) ----------------------


def test_a_skip_data_checkpoint_is_refused_for_what_it_is(tmp_path: Path, run_cli: RunCli) -> None:
    skip_data = getattr(torch.serialization, "skip_data", None)
    if skip_data is None:
        pytest.skip("torch.serialization.skip_data is newer than this torch")
    src = tmp_path / "skeleton.pt"
    with skip_data():
        torch.save({"w": torch.randn(8, 8), "b": torch.randn(8)}, src)
    code, _out, err = run_cli("convert", str(src))
    assert code == 2, err
    assert "saved without its data (torch.serialization.skip_data())" in err
    assert "bit rot" not in err and "download" not in err
    assert "Hint: nothing was written; such a file is a skeleton" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skeleton.pt"]


def test_a_zeroed_member_with_a_real_crc_is_still_corruption(tmp_path: Path) -> None:
    src = _save(tmp_path / "m.pt", {"w": torch.ones(64)})
    raw = bytearray(src.read_bytes())
    at = raw.find(torch.ones(64).numpy().tobytes())
    raw[at : at + 256] = bytes(256)  # (bytes lost, CRC-32 kept: not what skip_data writes)
    src.write_bytes(bytes(raw))
    with pytest.raises(ConversionError, match="bit rot or a broken download"):
        convert_file(src)


# -- 8. values kept as placeholders --------------------------------------------------------------


def test_values_are_kept_as_text_or_named_as_left_out(tmp_path: Path) -> None:
    values = {
        "cplx": 1 + 2j,
        "dev": torch.device("cpu"),
        "cuda": torch.device("cuda", 1),
        "set": {1, 2},
        "bytes": b"\x00\xff",
    }
    src = _save(tmp_path / "m.pt", {"w": torch.ones(2), **values})
    dst = tmp_path / "m.safetensors"
    convert_file(src, dst)
    meta = _metadata(dst)
    kept = json.loads(meta["modelsafe.values"])
    assert kept["cplx"] == "(1+2j)" and kept["dev"] == "cpu" and kept["cuda"] == "cuda:1"
    omitted = json.loads(meta["modelsafe.values_omitted"])
    assert omitted == {
        "bytes": "2 bytes, kept as their size",
        "set": "a builtins.set object, kept as its type",
    }
    assert kept["bytes"] == "<2 bytes>" and kept["set"] == "<builtins.set>"


def test_a_usage_error_for_a_trailing_slash_in_the_library_too(tmp_path: Path) -> None:
    src = _save(tmp_path / "m.pt", {"w": torch.ones(2)})
    with pytest.raises(UsageError, match="not a directory"):
        convert_file(src, f"{tmp_path}/newdir/")
    assert not (tmp_path / "newdir").exists()
