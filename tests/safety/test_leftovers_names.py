"""File names at the edges: a name with terminal escapes in an error message is shown escaped
(never sent to the terminal), and convert writes to a destination whose name is near the file
system's 255-byte limit (its temp file's name is shortened)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelsafe.registry import convert as convert_mod
from modelsafe.registry.audit import audit_path

CLI = "from modelsafe.cli import main; main()"


def _modelsafe(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], cwd=cwd, capture_output=True, timeout=120
    )


# -- error messages ----------------------------------------------------------------------------

HOSTILE = [
    "x\x1b]0;pwned\x07.safetensors",  # sets the terminal's title
    "x\x1b[2J\x1b[31mred.safetensors",  # clears the screen, colours what follows
    "two\nlines\r.safetensors",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_control_character_in_a_name_never_reaches_stderr(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    proc = _modelsafe("inspect", name, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert b"\x1b" not in err and b"\x07" not in err and b"\r" not in err
    lines = err.decode().splitlines()
    assert [line.split(":")[0] for line in lines] == ["Error", "Hint"]
    assert "header is not valid JSON" in lines[0]
    shown = name.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    shown = shown.replace("\n", "\\n").replace("\r", "\\r")
    assert shown in lines[0]


def test_a_name_that_is_not_utf8_is_shown_with_a_replacement_character(tmp_path: Path) -> None:
    name = os.fsdecode(b"bad\xff\x1b[2J.safetensors")
    (tmp_path / name).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    proc = _modelsafe("inspect", name, cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.decode().splitlines()[0]  # (valid UTF-8)
    assert "bad\ufffd\\x1b[2J.safetensors" in line


def test_json_errors_keep_the_name_as_it_is(tmp_path: Path) -> None:
    import json

    name = HOSTILE[0]
    (tmp_path / name).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    proc = _modelsafe("inspect", "--json", name, cwd=tmp_path)
    assert proc.returncode == 2
    assert b"\x1b" not in proc.stderr
    assert name in json.loads(proc.stdout)["error"]["reason"]  # (JSON escapes it)


# -- convert to a long name --------------------------------------------------------------------


def _long_name(nbytes: int, char: str) -> str:
    """A name of exactly ``nbytes`` UTF-8 bytes ending in .safetensors."""
    stem = nbytes - len(".safetensors")
    width = len(char.encode())
    return char * (stem // width) + "a" * (stem % width) + ".safetensors"


@pytest.mark.parametrize("char", ["a", "é", "模"])
def test_the_temp_name_fits_and_stays_utf8(tmp_path: Path, char: str) -> None:
    for nbytes in (20, 150, 151, 200, 250, 255):
        dst = tmp_path / _long_name(nbytes, char)
        tmp = convert_mod._temp_path(dst)
        raw = os.fsencode(tmp.name)
        assert len(raw) <= 255
        assert tmp.parent == dst.parent and tmp.name.endswith(".modelsafe-tmp")
        assert tmp.name.startswith(".")
        raw.decode("utf-8")  # cut at a character boundary
        if nbytes <= convert_mod._TEMP_NAME_KEEP:
            assert tmp.name.startswith(f".{dst.name}.")


@pytest.mark.parametrize("char", ["a", "é"])
def test_convert_to_a_250_byte_name(tmp_path: Path, char: str) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    weights = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(3, dtype=torch.float16)}
    src = tmp_path / "model.ckpt"
    torch.save(weights, src)
    name = _long_name(250, char)
    proc = _modelsafe("convert", "model.ckpt", name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    dst = tmp_path / name
    loaded = load_file(dst)
    assert set(loaded) == {"w", "b"}
    assert torch.equal(loaded["w"], weights["w"]) and torch.equal(loaded["b"], weights["b"])
    assert audit_path(dst).status == "safe"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.ckpt", name])
