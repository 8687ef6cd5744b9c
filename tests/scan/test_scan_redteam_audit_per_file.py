"""A hostile .ckpt holding the same tensors as a safe .safetensors is one model (one content id),
but the audit belongs to each file: whichever was scanned last, in whatever order, the model is
unsafe while the .ckpt is on disk, `show` says which path, export gives each file its own
audit, and a re-scan that reads nothing still counts the unsafe file and exits 1.

The payload's only effect, were it ever run, would be creating a marker file in ``tmp_path``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from modelsafe.registry.catalog import open_catalog
from modelsafe.registry.catalog.models import Location
from modelsafe.testing import write_safetensors

Scan = Callable[..., dict[str, Any]]
Cli = Callable[..., Any]


class _Payload:
    """Pickled as a call of ``open(marker, "w")``: it would create the marker when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _same_tensors_two_files(lib: Path, marker: Path) -> tuple[Path, Path]:
    """lib/a_style.safetensors (safe) and lib/z_style.ckpt: the same tensors plus a payload."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    lib.mkdir(parents=True, exist_ok=True)
    safe = write_safetensors(
        lib / "a_style.safetensors",
        [
            ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "F16", (4, 320)),
            ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", "F16", (320, 4)),
        ],
        data="random",
        seed=14,
    )
    evil = lib / "z_style.ckpt"
    torch.save({**load_file(str(safe)), "x": _Payload(marker)}, evil)
    return safe, evil


def _code(run_cli: Callable[..., Any], url: str, *args: str) -> tuple[int, Any]:
    code, out, err = run_cli("--catalog", url, *args, "--json")
    assert code in (0, 1), err
    return code, json.loads(out)


@pytest.mark.parametrize("order", ["both", "safe-first", "evil-first"])
def test_one_unsafe_copy_makes_the_model_unsafe_in_any_order(
    order: str, tmp_path: Path, run_cli: Callable[..., Any], cli_json: Cli, catalog_url: str
) -> None:
    marker = tmp_path / "PWNED"
    lib = tmp_path / "lib"
    safe, evil = _same_tensors_two_files(lib, marker)
    if order == "both":
        code, summary = _code(run_cli, catalog_url, "scan", str(lib))
        assert code == 1 and summary["unsafe_files"] == [str(evil)]
    else:
        first, second = (safe, evil) if order == "safe-first" else (evil, safe)
        _code(run_cli, catalog_url, "scan", str(first))
        code, summary = _code(run_cli, catalog_url, "scan", str(second))
        # Only the file scanned decides the exit code; the catalog keeps both audits.
        assert code == (1 if second == evil else 0)

    [model] = cli_json("ls")
    assert model["audit"] == "unsafe"
    assert model["unsafe_paths"] == [str(evil)]
    assert [m["id"] for m in cli_json("ls", "--unsafe")] == [model["id"]]
    for ref in (str(evil), str(safe)):
        shown = cli_json("show", ref)
        assert shown["audit"] == "unsafe"
        audits = {loc["path"]: loc["audit"] for loc in shown["locations"]}
        assert audits == {str(evil): "unsafe", str(safe): "safe"}
        assert shown["audit_verdict"]["status"] == "unsafe"
    code, out, _ = run_cli("--catalog", catalog_url, "show", str(safe))
    assert code == 0 and f"unsafe: {evil}" in out and "audit unsafe]" in out

    code, out, _ = run_cli("--catalog", catalog_url, "export", "--format", "csv")
    table = {r["path"]: r for r in csv.DictReader(io.StringIO(out))}
    assert table[str(evil)]["audit"] == "unsafe" and table[str(safe)]["audit"] == "safe"
    assert {r["model_audit"] for r in table.values()} == {"unsafe"}

    # A re-scan reads nothing and still finds the unsafe file.
    code, again = _code(run_cli, catalog_url, "scan", str(lib))
    assert code == 1
    assert (again["unchanged"], again["unsafe"], again["unsafe_files"]) == (2, 1, [str(evil)])

    # The hostile copy deleted: the model is as safe as what is left on disk.
    evil.unlink()
    code, last = _code(run_cli, catalog_url, "scan", str(lib))
    assert code == 0 and last["removed"] == 1 and last["unsafe"] == 0
    assert cli_json("ls", "--unsafe") == []
    assert cli_json("ls")[0]["audit"] == "safe"
    assert not marker.exists()


def test_upgrade_does_not_trust_an_audit_a_shared_model_row_held(
    tmp_path: Path, run_cli: Callable[..., Any], cli_json: Cli, catalog_url: str
) -> None:
    """A catalog from before 0004 (one audit per model, the last file's) upgrades in place:
    the audit of a model with several files is not trusted, so the next scan reads them again;
    a model with one file keeps its audit and is not read again."""
    from alembic import command

    from modelsafe.registry.catalog.db import alembic_config

    marker = tmp_path / "PWNED"
    lib = tmp_path / "lib"
    safe, evil = _same_tensors_two_files(lib, marker)
    single = write_safetensors(lib / "single.safetensors", [("w", "F16", (8, 8))], seed=3)
    _code(run_cli, catalog_url, "scan", str(lib))

    # Back to 0003 and to what the old scan left: the model row says "safe" (last file won).
    catalog = open_catalog(catalog_url)
    try:
        with catalog.engine.begin() as conn:
            cfg = alembic_config(catalog.url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0003")
            conn.execute(text("UPDATE models SET audit_status = 'safe'"))
    finally:
        catalog.close()
    assert cli_json("ls", "--unsafe") == []  # (reopening upgrades to head again)

    catalog = open_catalog(catalog_url)
    try:
        with catalog.session() as session:
            audits = dict(session.execute(select(Location.path, Location.audit_status)).all())
    finally:
        catalog.close()
    assert audits == {str(safe): None, str(evil): None, str(single): "safe"}

    code, summary = _code(run_cli, catalog_url, "scan", str(lib))
    assert code == 1 and summary["unsafe_files"] == [str(evil)]
    assert (summary["changed"], summary["unchanged"]) == (2, 1)
    assert [m["name"] for m in cli_json("ls", "--unsafe")] == ["a_style"]
    assert not marker.exists()
