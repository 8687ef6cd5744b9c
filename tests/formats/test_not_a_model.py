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
    "json": (b'{"_class_name": "UNet2DConditionModel", "in_channels": 4}', "the file is JSON"),
    "text": (b"this is not a model, just some words\n" * 3, "plain text"),
    # server answers saved in a model's place (curl -L -o, wget --content-on-error): quoted
    "server-error": (
        b'{"error": "Invalid credentials in Authorization header"}',
        'error answer (JSON, "Invalid credentials in Authorization header")',
    ),
    "storage-error": (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        b"<Message>Request has expired</Message></Error>",
        'cloud storage error answer (XML, "AccessDenied: Request has expired")',
    ),
}
HINTS = {
    "server-error": "check your access token",
    "storage-error": "the download link had expired",
}


@pytest.mark.parametrize("code", sorted(FILES))
def test_inspect_and_audit_say_the_same(code: str, tmp_path: Path, run_cli: Any) -> None:
    data, phrase = FILES[code]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    exit_code, _out, err = run_cli("inspect", str(path))
    assert exit_code == 2 and phrase in err and "Traceback" not in err
    assert HINTS.get(code, "Hint: ") in err
    exit_code, out, _err = run_cli("audit", str(path), "--json")
    assert exit_code == 2
    (verdict,) = json.loads(out)
    assert verdict["status"] == "error"
    messages = [f["message"] for f in verdict["findings"] if f["code"] == f"not-a-model:{code}"]
    assert messages and phrase in messages[0]


@pytest.mark.parametrize(
    ("body", "phrase", "hint"),
    [
        (b'{"error":"Model not found"}', '(JSON, "Model not found")', "no file at that address"),
        (b'{"detail":"Not Found"}', '(JSON, "Not Found")', "no file at that address"),
        (b"Entry not found", 'it says "Entry not found"', "no file at that address"),
        (b"Too Many Requests", 'it says "Too Many Requests"', "rate-limiting"),
        (
            b'{"error": {"code": 403, "message": "Forbidden"}}',
            '(JSON, "Forbidden")',
            "refused the download",
        ),
    ],
)
def test_a_server_answer_saved_as_the_model_is_quoted(
    body: bytes, phrase: str, hint: str, tmp_path: Path, run_cli: Any
) -> None:
    """It was "the file is JSON (a config or an API error)" with the hint "look for the weights
    file beside it", or "plain text ... download it again": the answer itself was never shown."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(body)
    exit_code, _out, err = run_cli("inspect", str(path))
    assert exit_code == 2 and phrase in err and hint in err, err
