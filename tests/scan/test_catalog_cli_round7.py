"""Catalog commands (`ls`, `show`, `set`, `export`) after a red-team pass on odd file names and
failing disks: arguments that are not UTF-8, names that differ in case or Unicode normalisation,
`--json` errors for internal failures and interruptions, atomic `export -o` and CSV cells a
spreadsheet would run as formulas."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import signal
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.testing import write_safetensors

Scan = Callable[..., dict[str, Any]]
Cli = Callable[..., Any]
RunCli = Callable[..., tuple[int, str, str]]

NOT_UTF8 = os.fsdecode(b"x\xff.safetensors")  # what Python makes of such an argument


def model_file(path: Path, seed: int, meta: dict[str, str] | None = None) -> Path:
    """A small real safetensors file, readable by the test reader in tests/scan/conftest.py."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = meta or {"test_family": "unknown", "test_kind": "unknown"}
    return write_safetensors(path, [("w", "F16", (8, 8))], meta, data="random", seed=seed)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_object(out: str) -> dict[str, Any]:
    value = json.loads(out)
    assert set(value) == {"error"}, value
    assert set(value["error"]) == {"type", "reason", "hint", "exit_code"}
    error = value["error"]
    assert isinstance(error, dict)
    return error


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX byte file names")
@pytest.mark.parametrize(
    "args",
    [
        ("show", NOT_UTF8),
        ("show", NOT_UTF8, "--json"),
        ("set", NOT_UTF8, "--note", "hi"),
        ("set", "alpha", "--note", os.fsdecode(b"bad\xffbyte")),
        ("set", "alpha", "--family", os.fsdecode(b"\xff")),
        ("ls", "--family", os.fsdecode(b"\xff")),
        ("ls", "--kind", os.fsdecode(b"lo\xffra"), "--json"),
    ],
)
def test_an_argument_that_is_not_utf8_is_a_usage_error(
    tmp_path: Path, scan_json: Scan, run_cli: RunCli, catalog_url: str, args: tuple[str, ...]
) -> None:
    model_file(tmp_path / "lib" / "alpha.safetensors", seed=1)
    scan_json(str(tmp_path / "lib"))
    code, out, err = run_cli("--catalog", catalog_url, *args)
    assert code == 2, err
    assert "not valid UTF-8" in err and "Hint:" in err and "unexpected" not in err
    assert "\ufffd" in err  # the bad byte is shown, not an escape sequence
    if "--json" in args:
        error = error_object(out)
        assert error["exit_code"] == 2 and "not valid UTF-8" in error["reason"] and error["hint"]
    else:
        assert out == ""
    # Nothing was changed by a refused `set`.
    shown = json.loads(run_cli("--catalog", catalog_url, "show", "alpha", "--json")[1])
    assert shown["note"] is None and shown["overrides"] == {}


def test_json_reports_an_internal_error_and_an_interruption(
    tmp_path: Path,
    scan_json: Scan,
    run_cli: RunCli,
    catalog_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelsafe.cli import Terminated
    from modelsafe.registry.catalog import queries

    model_file(tmp_path / "lib" / "alpha.safetensors", seed=1)
    scan_json(str(tmp_path / "lib"))
    cases: list[tuple[BaseException, int, str, str]] = [
        (RuntimeError("boom"), 3, "InternalError", "unexpected RuntimeError: boom"),
        (KeyboardInterrupt(), 130, "Interrupted", "interrupted"),
        (Terminated(signal.SIGTERM), 143, "Interrupted", "terminated (SIGTERM)"),
    ]
    for raised, exit_code, kind, reason in cases:

        def fail(*_a: object, _exc: BaseException = raised, **_k: object) -> None:
            raise _exc

        monkeypatch.setattr(queries, "list_models", fail)
        code, out, err = run_cli("--catalog", catalog_url, "ls", "--json")
        assert code == exit_code, err
        error = error_object(out)
        assert (error["type"], error["reason"], error["exit_code"]) == (kind, reason, exit_code)
        assert f"Error: {reason}" in err
        if kind == "InternalError":
            assert "MODELSAFE_DEBUG=1" in error["hint"]
        # Without --json, stdout stays empty.
        code, out, _ = run_cli("--catalog", catalog_url, "ls")
        assert (code, out) == (exit_code, "")


def test_an_exact_name_wins_over_one_in_another_case(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, run_cli: RunCli, catalog_url: str
) -> None:
    upper = model_file(tmp_path / "lib" / "Detail.safetensors", seed=1)
    lower = model_file(tmp_path / "lib" / "detail.safetensors", seed=2)
    model_file(tmp_path / "lib" / "other.safetensors", seed=3)
    scan_json(str(tmp_path / "lib"))
    assert cli_json("show", "Detail")["sha256"] == sha256(upper)
    assert cli_json("show", "detail")["sha256"] == sha256(lower)
    assert cli_json("set", "detail", "--note", "mine")["sha256"] == sha256(lower)
    # In a case that is neither's, both match: that is still an error listing them.
    code, _, err = run_cli("--catalog", catalog_url, "show", "DETAIL")
    assert code == 2 and "matches 2 models" in err
    # A name in another case still finds a model whose name is unique in any case.
    assert cli_json("show", "OTHER")["name"] == "other"


@pytest.mark.parametrize("stored", ["NFD", "NFC"])
def test_names_match_whatever_their_unicode_normalisation(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, stored: str
) -> None:
    name = unicodedata.normalize(stored, "Pokémon-style")
    path = model_file(tmp_path / "lib" / f"{name}.safetensors", seed=1)
    scan_json(str(tmp_path / "lib"))
    typed = {"NFD": "NFC", "NFC": "NFD"}[stored]
    for ref in (
        unicodedata.normalize(typed, "Pokémon-style"),
        unicodedata.normalize(typed, "POKÉMON-STYLE"),
        unicodedata.normalize(typed, "émon"),
    ):
        assert cli_json("show", ref)["sha256"] == sha256(path), ascii(ref)
    corrected = cli_json("set", unicodedata.normalize(typed, "Pokémon-style"), "--family", "sdxl")
    assert corrected["overrides"] == {"family": "sdxl"}
    assert corrected["name"] == name  # stored as scanned


def test_csv_export_neutralises_cells_a_spreadsheet_would_run(
    tmp_path: Path, scan_json: Scan, cli_json: Cli, run_cli: RunCli, catalog_url: str
) -> None:
    model_file(tmp_path / "lib" / "=cmd()+.safetensors", seed=1)
    model_file(tmp_path / "lib" / "plain.safetensors", seed=2)
    scan_json(str(tmp_path / "lib"))
    note = '=HYPERLINK("http://x","y")'
    cli_json("set", "plain", "--note", note)
    cli_json("set", "=cmd()+", "--note", "@SUM(A1)", "--variant", "-1+2")
    code, out, err = run_cli("--catalog", catalog_url, "export", "--format", "csv")
    assert code == 0, err
    rows = {r["note"]: r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"'" + note, "'@SUM(A1)"}
    evil = rows["'@SUM(A1)"]
    assert (evil["name"], evil["variant"]) == ("'=cmd()+", "'-1+2")
    assert evil["path"] == str(tmp_path / "lib" / "=cmd()+.safetensors")  # starts with /
    for row in rows.values():
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())
        assert int(row["size"]) > 0
    # JSON keeps every value exactly.
    code, out, _ = run_cli("--catalog", catalog_url, "export")
    exported = {m["name"]: m for m in json.loads(out)}
    assert exported["plain"]["note"] == note
    assert (exported["=cmd()+"]["note"], exported["=cmd()+"]["variant"]) == ("@SUM(A1)", "-1+2")


def test_export_to_a_full_disk_keeps_the_previous_file(
    tmp_path: Path,
    scan_json: Scan,
    run_cli: RunCli,
    catalog_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_file(tmp_path / "lib" / "alpha.safetensors", seed=1)
    scan_json(str(tmp_path / "lib"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "export.json"
    code, _, err = run_cli("--catalog", catalog_url, "export", "-o", str(target))
    assert code == 0, err
    previous = target.read_bytes()
    assert json.loads(previous)[0]["name"] == "alpha"
    model_file(tmp_path / "lib" / "beta.safetensors", seed=2)
    scan_json(str(tmp_path / "lib"))

    def full(_fd: int) -> None:  # the disk fills while the export is written out
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code, out, err = run_cli("--catalog", catalog_url, "export", "-o", str(target), "--force")
    assert code == 2 and out == ""
    assert "No space left on device" in err and "is as it was" in err
    assert "disk space" in err and "folder exists" not in err
    assert target.read_bytes() == previous
    assert sorted(p.name for p in out_dir.iterdir()) == ["export.json"]  # no temp file left
    monkeypatch.undo()
    code, _, err = run_cli("--catalog", catalog_url, "export", "-o", str(target), "--force")
    assert code == 0, err
    assert {m["name"] for m in json.loads(target.read_text())} == {"alpha", "beta"}
    assert sorted(p.name for p in out_dir.iterdir()) == ["export.json"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_export_errors_have_hints_that_fit_the_cause(
    tmp_path: Path, scan_json: Scan, run_cli: RunCli, catalog_url: str
) -> None:
    model_file(tmp_path / "lib" / "alpha.safetensors", seed=1)
    scan_json(str(tmp_path / "lib"))
    code, _, err = run_cli("--catalog", catalog_url, "export", "-o", "/dev/full")
    assert code == 2 and "No space left on device" in err and "disk space" in err, err
    code, _, err = run_cli("--catalog", catalog_url, "export", "-o", str(tmp_path / "no" / "x"))
    assert code == 2 and "folder exists" in err, err


def test_export_keeps_a_symlink_and_the_file_mode(
    tmp_path: Path, scan_json: Scan, run_cli: RunCli, catalog_url: str
) -> None:
    model_file(tmp_path / "lib" / "alpha.safetensors", seed=1)
    scan_json(str(tmp_path / "lib"))
    real = tmp_path / "real.csv"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    code, _, err = run_cli(
        "--catalog", catalog_url, "export", "--format", "csv", "-o", str(link), "--force"
    )
    assert code == 0, err
    assert link.is_symlink() and real.read_text().startswith("model_id,name,path")
    assert real.stat().st_mode & 0o777 == 0o640
