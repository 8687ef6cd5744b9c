"""A file that is not a model at all: `inspect` and `audit` name what it really is, in the same
words (one table, registry/sniff.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FILES = {
    "empty": (b"", "the file is empty (0 bytes)"),
    "html": (b"<!DOCTYPE html><html><body>Please log in</body></html>", "an HTML page"),
    "git-lfs-pointer": (
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 42\n",
        "a git-lfs pointer (a 127-byte text stub)",
    ),
    "json": (b'{"error": "Unauthorized"}', "the file is JSON"),
    "text": (b"this is not a model, just some words\n" * 3, "plain text"),
}


@pytest.mark.parametrize("code", sorted(FILES))
def test_inspect_and_audit_say_the_same(code: str, tmp_path: Path, run_cli: Any) -> None:
    data, phrase = FILES[code]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    exit_code, _out, err = run_cli("inspect", str(path))
    assert exit_code == 2 and phrase in err and "Traceback" not in err
    exit_code, out, _err = run_cli("audit", str(path), "--json")
    assert exit_code == 2
    (verdict,) = json.loads(out)
    assert verdict["status"] == "error"
    messages = [f["message"] for f in verdict["findings"] if f["code"] == f"not-a-model:{code}"]
    assert messages and phrase in messages[0]
