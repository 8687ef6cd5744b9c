"""CLI plumbing, round 2: reading commands never create a catalog, read-only and foreign or newer
catalogs, broken pipes, `serve` on a busy port, `export -o` over the catalog, NaN in JSON, size
and timeout settings, `demo --keep` where it cannot write."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsafe.errors import ConfigError, UsageError
from modelsafe.testing import write_safetensors
from modelsafe.testing.layouts import adapters as ad

Cli = Callable[..., tuple[int, str, str]]


def _strict_json(text: str) -> Any:
    """``json.loads`` as every strict parser reads JSON: NaN and Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _model(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors(path, [("w", "F16", (8, 8))], data="random", seed=seed)


def _catalog(run_cli: Cli, tmp_path: Path, catalog: Path) -> Path:
    """A catalog holding one model, ``alpha``, made by `scan` (which creates it)."""
    lib = tmp_path / "lib"
    _model(lib / "alpha.safetensors")
    catalog.parent.mkdir(parents=True, exist_ok=True)
    code, _, err = run_cli("--catalog", str(catalog), "scan", str(lib))
    assert code == 0, err
    return catalog


def _cli(*args: str, prefix: list[str] | None = None, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "modelsafe.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


# 1. Reading commands do not create a catalog ----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["ls", "--unsafe", "--json"], ["show", "alpha", "--json"], ["export", "--format", "json"]],
)
def test_a_reading_command_without_a_catalog_says_so_and_creates_none(
    tmp_path: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*args)
    assert code == 2, (out, err)
    assert os.listdir(tmp_path) == []  # (was: an empty catalog.db, and "nothing", exit 0)
    if "--json" in args:
        error = _strict_json(out)["error"]
        assert error["type"] == "NoCatalogError" and error["exit_code"] == 2
    assert f"no catalog at {tmp_path / 'catalog.db'}" in err
    assert "current folder" in err and "modelsafe scan DIR" in err and "--catalog" in err


def test_a_catalog_given_that_does_not_exist_is_named_and_not_created(
    tmp_path: Path, run_cli: Cli
) -> None:
    missing = tmp_path / "typo.db"
    code, _, err = run_cli("--catalog", str(missing), "ls")
    assert code == 2 and f"no catalog at {missing} (from --catalog)" in err
    code, _, err = run_cli("ls", env={"MODELSAFE_CATALOG": str(missing)})
    assert code == 2 and "(from MODELSAFE_CATALOG)" in err
    # An SQLite URI is named by its file, not garbled (file%3A...).
    code, _, err = run_cli("--catalog", f"sqlite:///file:{missing}?mode=ro&uri=true", "ls")
    assert code == 2 and f"no catalog at {missing}" in err and "%3A" not in err
    for name in ("resolve", "plan"):  # (they look names up in a catalog only when it exists)
        code, _, err = run_cli("--catalog", str(missing), name, "some-name", "--vram", "8GiB")
        assert code == 2, err
    assert not missing.exists()


def test_scan_still_creates_the_catalog_and_then_ls_reads_it(tmp_path: Path, run_cli: Cli) -> None:
    catalog = _catalog(run_cli, tmp_path, tmp_path / "new" / "catalog.db")
    code, out, err = run_cli("--catalog", str(catalog), "ls", "--json")
    assert code == 0, err
    assert [m["name"] for m in _strict_json(out)] == ["alpha"]


def test_another_applications_database_is_refused_and_left_alone(
    tmp_path: Path, run_cli: Cli
) -> None:
    other = tmp_path / "other_app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    before = other.read_bytes()
    (tmp_path / "lib").mkdir()
    for args in (["ls", "--json"], ["show", "x"], ["export"], ["scan", str(tmp_path / "lib")]):
        code, _, err = run_cli("--catalog", str(other), *args)
        assert code == 2, (args, err)
        assert f"{other} is not a modelsafe catalog: it holds other tables (users)" in err
    assert other.read_bytes() == before
    with sqlite3.connect(other) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["users"]


def test_an_empty_file_becomes_a_catalog_for_scan_only(tmp_path: Path, run_cli: Cli) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = run_cli("--catalog", str(empty), "ls")
    assert code == 2 and "no catalog in" in err and "it is empty" in err
    _catalog(run_cli, tmp_path, empty)
    code, out, err = run_cli("--catalog", str(empty), "ls", "--json")
    assert code == 0 and [m["name"] for m in _strict_json(out)] == ["alpha"], err


# 6. A catalog a newer modelsafe wrote -----------------------------------------------------------


def test_a_catalog_from_a_newer_modelsafe_is_a_clear_error(tmp_path: Path, run_cli: Cli) -> None:
    from modelsafe.registry.catalog.db import _revisions

    catalog = _catalog(run_cli, tmp_path, tmp_path / "catalog.db")
    with sqlite3.connect(catalog) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    head = _revisions()[0]
    for args in (["ls", "--json"], ["scan", str(tmp_path / "lib")]):
        code, out, err = run_cli("--catalog", str(catalog), *args)
        assert code == 2, err  # (was: exit 3, "unexpected CommandError: Can't locate revision")
        assert (
            "this catalog was written by a newer modelsafe "
            f"(schema revision 0099; this one knows up to {head})"
        ) in err
        assert "upgrade modelsafe" in err and "unexpected" not in err
    assert _strict_json(run_cli("--catalog", str(catalog), "ls", "--json")[1])["error"]["type"] == (
        "CatalogSchemaError"
    )


# 3. A catalog that may not be written -----------------------------------------------------------


def _ro_uri(path: Path) -> str:
    return f"sqlite:///file:{path}?mode=ro&uri=true"


def test_resolve_finds_a_model_by_name_through_a_read_only_uri(
    tmp_path: Path, run_cli: Cli
) -> None:
    """resolve/plan looked for the catalog file by the URL's text, so a `mode=ro` URL was
    "no catalog": the name was not found."""
    catalog = _catalog(run_cli, tmp_path, tmp_path / "catalog.db")
    code, out, err = run_cli("--catalog", _ro_uri(catalog), "resolve", "alpha", "--json")
    assert "no model in the catalog" not in err and "does not exist" not in err, err
    assert json.loads(out)["checkpoint"]["ref"] == "alpha", out


def test_a_read_only_uri_reads_a_catalog_in_rollback_journal_mode(
    tmp_path: Path, run_cli: Cli
) -> None:
    catalog = _catalog(run_cli, tmp_path, tmp_path / "catalog.db")
    with sqlite3.connect(catalog) as conn:  # (as a copy, a backup tool, `sqlite3 .backup` leave it)
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    before = catalog.read_bytes()
    for args in (["ls", "--json"], ["show", "alpha", "--json"], ["export"]):
        code, out, err = run_cli("--catalog", _ro_uri(catalog), *args)
        assert code == 0, (args, err)  # (was: "the catalog is read-only ... cannot be written")
        _strict_json(out)
    assert catalog.read_bytes() == before  # nothing written, not even the WAL switch
    assert sorted(os.listdir(tmp_path)) == ["catalog.db", "lib"]
    code, _, err = run_cli("--catalog", _ro_uri(catalog), "scan", str(tmp_path / "lib"))
    assert code == 2 and "the catalog is read-only" in err and "open it without mode=ro" in err


def test_a_read_only_catalog_with_an_older_schema_says_it_cannot_be_upgraded(
    tmp_path: Path, run_cli: Cli
) -> None:
    from alembic import command

    from modelsafe.registry.catalog.db import _revisions, alembic_config, catalog_url

    catalog = _catalog(run_cli, tmp_path, tmp_path / "catalog.db")
    head, known = _revisions()
    older = known[-2]
    command.downgrade(alembic_config(catalog_url(catalog)), older)
    code, out, err = run_cli("--catalog", _ro_uri(catalog), "ls", "--json")
    assert code == 2, err
    error = _strict_json(out)["error"]
    assert error["type"] == "CatalogSchemaError"
    assert f"older modelsafe (revision {older}; this one needs {head})" in err
    assert "cannot be upgraded: it is read-only" in err
    # Where it may be written, a reading command upgrades it, as before.
    code, out, err = run_cli("--catalog", str(catalog), "ls", "--json")
    assert code == 0 and [m["name"] for m in _strict_json(out)] == ["alpha"], err
    with sqlite3.connect(catalog) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (head,)


def _unprivileged(tmp_path: Path) -> list[str] | None:
    """A command prefix that runs without root's permission override ([] for a plain user), or
    None where this cannot be had (root without a working setpriv)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search,-fowner"
    prefix = [setpriv, "--bounding-set", caps, "--inh-caps", caps]
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    try:
        run = subprocess.run(
            [*prefix, sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"],
            capture_output=True,
            timeout=60,
        )
    except OSError:
        return None
    finally:
        probe.chmod(0o755)
        shutil.rmtree(probe)
    return prefix if run.returncode != 0 else None


def test_a_catalog_in_a_folder_this_user_may_not_write_still_reads(
    tmp_path: Path, run_cli: Cli
) -> None:
    prefix = _unprivileged(tmp_path)
    if prefix is None:
        pytest.skip("root reads and writes whatever the permissions (no setpriv to drop that)")
    folder = tmp_path / "ro"
    catalog = _catalog(run_cli, tmp_path, folder / "catalog.db")
    assert os.listdir(folder) == ["catalog.db"]  # (a WAL catalog: no -wal/-shm left after use)
    catalog.chmod(0o444)
    folder.chmod(0o555)
    try:
        for args in (["ls", "--json"], ["show", "alpha", "--json"], ["export"]):
            run = _cli("--catalog", str(catalog), *args, prefix=prefix)
            assert run.returncode == 0, (args, run.stderr)  # (was: "attempt to write a readonly")
            _strict_json(run.stdout)
        run = _cli("--catalog", _ro_uri(catalog), "ls", "--json", prefix=prefix)
        assert run.returncode == 0, run.stderr
        run = _cli("--catalog", str(catalog), "scan", str(tmp_path / "lib"), prefix=prefix)
        assert run.returncode == 2 and "the catalog is read-only" in run.stderr
        assert os.listdir(folder) == ["catalog.db"]
    finally:
        folder.chmod(0o755)
        catalog.chmod(0o644)


# 2. A reader that closes the pipe early ---------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["config", "show", "--json"]])
def test_a_closed_pipe_is_not_exit_1_and_says_nothing(tmp_path: Path, args: list[str]) -> None:
    """`modelsafe ... | head -1`: the reader goes before the command writes (exit 1 would read as
    "unsafe"; Python's flush at exit would add "Exception ignored ... BrokenPipeError")."""
    err = tmp_path / "stderr"
    with open(err, "w") as err_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelsafe.cli", *args], stdout=subprocess.PIPE, stderr=err_fh
        )
        assert proc.stdout is not None
        proc.stdout.close()  # (before the interpreter has even started the CLI)
        code = proc.wait(120)
    assert code == 0 and err.read_text() == ""


def test_head_on_a_long_listing_exits_0(tmp_path: Path, run_cli: Cli) -> None:
    catalog = _catalog(run_cli, tmp_path, tmp_path / "catalog.db")
    shell = f"{sys.executable} -m modelsafe.cli --catalog {catalog} export | head -c 1"
    run = subprocess.run(
        ["bash", "-c", f"{shell} >/dev/null; echo ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.stdout.strip() == "0" and "Error" not in run.stderr and "Exception" not in run.stderr


# 4. serve on a port in use ----------------------------------------------------------------------


def test_serve_on_a_port_in_use_says_so_with_exit_1(tmp_path: Path, run_cli: Cli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(
            "--catalog",
            str(tmp_path / "c.db"),
            "serve",
            "--port",
            str(port),
            "--log-level",
            "error",
        )
    assert code == 1, err  # (was: exit 3 after uvicorn's own log)
    assert f"Error: port {port} on 127.0.0.1 is in use" in err and "--port" in err
    assert not (tmp_path / "c.db").exists()  # refused before anything started


# 5. export -o over the catalog, over an existing file -------------------------------------------


def test_export_never_writes_over_the_catalog_it_reads(tmp_path: Path, run_cli: Cli) -> None:
    catalog = _catalog(run_cli, tmp_path, tmp_path / "catalog.db")
    link = tmp_path / "link.db"
    link.symlink_to(catalog)
    hard = tmp_path / "hard.db"
    os.link(catalog, hard)
    before = catalog.read_bytes()
    for target in (catalog, link, hard):
        for force in ([], ["--force"]):
            code, _, err = run_cli("--catalog", str(catalog), "export", "-o", str(target), *force)
            assert code == 2, err  # (was: the catalog replaced by its own JSON, exit 0)
            assert "is the catalog being exported" in err
    assert catalog.read_bytes() == before
    code, out, err = run_cli("--catalog", str(catalog), "ls", "--json")
    assert code == 0 and [m["name"] for m in _strict_json(out)] == ["alpha"], err


def test_export_replaces_an_existing_file_only_with_force(tmp_path: Path, run_cli: Cli) -> None:
    catalog = _catalog(run_cli, tmp_path, tmp_path / "catalog.db")
    target = tmp_path / "notes.json"
    target.write_text("my notes")
    code, _, err = run_cli("--catalog", str(catalog), "export", "-o", str(target))
    assert code == 2 and f"{target} already exists" in err and "--force" in err
    assert target.read_text() == "my notes"
    code, _, err = run_cli("--catalog", str(catalog), "export", "-o", str(target), "--force")
    assert code == 0, err
    assert [m["name"] for m in _strict_json(target.read_text())] == ["alpha"]
    fresh = tmp_path / "fresh.csv"
    code, _, err = run_cli("--catalog", str(catalog), "export", "--format", "csv", "-o", str(fresh))
    assert code == 0 and fresh.read_text().startswith("model_id,"), err


# 7. NaN and Infinity in JSON --------------------------------------------------------------------


def _nan_lora(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    specs = ad.kohya_lora(
        [("lora_unet_", ad.sd1_unet_modules()), ("lora_te_text_model_encoder_", ad.clip_modules())],
        rank=4,
    )
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": "4",
        "ss_network_alpha": "nan",
        "ss_base_model_version": "sd_v1",
    }
    return write_safetensors(path, specs, meta)


def test_json_output_has_no_nan_or_infinity(tmp_path: Path, run_cli: Cli) -> None:
    from modelsafe.output import json_text

    value = _strict_json(json_text({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": "nan"}))
    assert value == {"a": None, "b": [None, None, 1.5], "c": "nan"}

    lora = _nan_lora(tmp_path / "lib" / "nan-alpha.safetensors")
    code, out, err = run_cli("inspect", str(lora), "--json")
    assert code == 0, err
    assert "NaN" not in out
    _strict_json(out)  # (was: "alpha": NaN)
    catalog = tmp_path / "catalog.db"
    code, _, err = run_cli("--catalog", str(catalog), "scan", str(tmp_path / "lib"))
    assert code == 0, err
    for args in (["export"], ["show", "nan-alpha", "--json"], ["ls", "--json"]):
        code, out, err = run_cli("--catalog", str(catalog), *args)
        assert code == 0, err
        assert "NaN" not in out  # one such file made the whole export invalid JSON
        _strict_json(out)
    with sqlite3.connect(catalog) as conn:  # stored as null: every JSON reader takes it
        (details,) = conn.execute("SELECT details FROM models").fetchone()
    assert "NaN" not in details


# 8. vram settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(("toml", "shown"), [("8", "8"), ("true", "true"), ("8.5", "8.5")])
def test_a_vram_setting_that_is_not_a_size_in_quotes_is_refused(
    tmp_path: Path, run_cli: Cli, toml: str, shown: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"vram = {toml}\n")
    code, out, err = run_cli("config", "show", "--json", env={"MODELSAFE_CONFIG": str(config)})
    assert code == 2, err  # (was: 8 bytes, a budget of `true`, an internal-sounding error)
    assert _strict_json(out)["error"]["type"] == "ConfigError"
    assert f"vram from file {config} must be a size with its unit, in quotes: {shown}" in err
    assert 'write vram = "8GiB"' in err and "a number without a unit is a count of bytes" in err
    config.write_text('vram = "8GiB"\n')
    code, out, err = run_cli("config", "show", "--json", env={"MODELSAFE_CONFIG": str(config)})
    assert code == 0, err


def test_parse_size_refuses_what_is_not_a_size() -> None:
    from modelsafe.units import parse_size

    assert parse_size("8GiB") == 8 << 30 and parse_size(1024) == 1024
    for bad in (True, 8.5, None):
        with pytest.raises(UsageError, match="is not a size"):
            parse_size(bad)  # type: ignore[arg-type]


# 9. plugin import timeout, demo --keep ----------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan"])
def test_a_bad_plugin_import_timeout_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from modelsafe.plugin_manager import build_plugin_manager

    monkeypatch.setenv("MODELSAFE_PLUGIN_IMPORT_TIMEOUT", value)
    with pytest.raises(ConfigError, match="MODELSAFE_PLUGIN_IMPORT_TIMEOUT") as info:
        build_plugin_manager()
    assert "above 0" in info.value.reason and "unset it" in info.value.hint


def test_a_bad_plugin_import_timeout_exits_2_from_the_cli(tmp_path: Path) -> None:
    run = _cli("plugins", env={**os.environ, "MODELSAFE_PLUGIN_IMPORT_TIMEOUT": "abc"})
    assert run.returncode == 2, run.stderr  # (was: exit 3, "unexpected ValueError")
    assert "MODELSAFE_PLUGIN_IMPORT_TIMEOUT='abc' is not a number of seconds" in run.stderr


def test_demo_keep_where_it_cannot_write_is_a_clean_error(tmp_path: Path, run_cli: Cli) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli("demo", "--keep", str(blocker / "demo"))
    assert code == 2, err  # (was: exit 3, "unexpected NotADirectoryError")
    assert f"cannot build the demo library in {blocker / 'demo'}" in err
    assert "pass --keep with a folder you may write to" in err and "unexpected" not in err
