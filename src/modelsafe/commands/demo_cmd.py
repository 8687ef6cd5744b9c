"""``modelsafe demo``: the whole product in one command, on a sample library it builds."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from modelsafe.errors import UsageError
from modelsafe.output import emit_json


@click.command()
@click.option(
    "--keep",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Build the library (and its catalog.db) in this new or empty folder and keep it.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable results on stdout.")
def demo(keep: Path | None, as_json: bool) -> int:
    """Build a sample model library, scan it into a catalog, and print what was found.

    The library holds full-size (sparse) layouts of real models, a legacy torch pickle, a hostile
    pickle whose payload never runs, and broken downloads.

    Exit codes: 0 done, 2 the library could not be built there (a folder you may not write, or
    one that is not empty).
    """
    from modelsafe.demo import build_library
    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.scan import scan

    with _temp_dir() as tmp:
        root = keep.resolve() if keep is not None else Path(tmp)
        try:
            root.mkdir(parents=True, exist_ok=True)
            files = build_library(root)
        except OSError as exc:
            raise _cannot_build(root, exc, kept=keep is not None) from exc
        catalog = open_catalog(root / "catalog.db")
        try:
            summary = scan(catalog, [root / "models"], jobs=2)
            rows = _rows(catalog, root, {str(f.path): f.what for f in files})
        finally:
            catalog.close()
    counts = {k: getattr(summary, k) for k in ("files", "new", "unsafe", "errors", "seconds")}
    if as_json:
        emit_json({"summary": counts, "files": rows, "wrong_folder": summary.wrong_folder})
        return 0
    for row in rows:
        click.echo(row["file"])
        click.echo(f"    built as    {row['built as']}")
        click.echo(f"    identified  {row['identified']}")
        if row["precision"]:
            click.echo(f"    weights     {row['weights']}")
        colour = {"safe": "green", "unsafe": "red"}.get(row["audit"], "yellow")
        click.secho(f"    audit       {row['audit']}", fg=colour)
        for line in row["notes"][:2]:
            click.echo(f"                {line}")
    for item in summary.wrong_folder:
        where = Path(item.get("path", "")).relative_to(root)
        click.secho(f"{where}: {item.get('problem', '')}", fg="yellow")
    click.echo(
        f"\nscanned {counts['files']} files in {counts['seconds']:.1f} s: "
        f"{counts['unsafe']} unsafe, {counts['errors']} unreadable."
    )
    if keep is not None:
        click.echo(f"The library and its catalog are in {keep}: `cd {keep} && modelsafe ls`.")
    else:
        click.echo(
            "The library was temporary: `modelsafe demo --keep DIR` keeps it to explore with "
            "`modelsafe ls`, `show`, `inspect`, `audit`."
        )
    return 0


def _temp_dir() -> Any:
    try:
        return tempfile.TemporaryDirectory(prefix="modelsafe-demo-")
    except OSError as exc:
        raise _cannot_build(Path(tempfile.gettempdir()), exc, kept=False) from exc


def _cannot_build(root: Path, exc: OSError, *, kept: bool) -> UsageError:
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(root) else ""
    return UsageError(
        f"cannot build the demo library in {root}: {exc.strerror or exc}{where}",
        hint="pass --keep with a folder you may write to, on a disk with some room"
        if kept
        else "set TMPDIR to a folder you may write to, or pass --keep DIR",
    )


def _rows(catalog: Any, root: Path, built: dict[str, str]) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from modelsafe.registry.catalog.models import Location
    from modelsafe.units import format_count, format_size

    rows: list[dict[str, Any]] = []
    with catalog.session() as session:
        for loc in session.scalars(select(Location).order_by(Location.path)):
            model = loc.model
            details = (model.details if model else {}) or {}
            audit = details.get("audit") or {}
            notes = [f.get("message", "") for f in audit.get("findings", []) if f]
            if loc.error:  # the reader's reason says it best; the audit repeats it
                notes = [loc.error.replace(f"{loc.path}: ", "")]
            label = "unreadable"
            weights = ""
            if model is not None and model.family:
                label = "/".join(x for x in (model.family, model.kind, model.variant) if x)
                weights = (
                    f"{format_count(model.parameter_count or 0)} parameters, "
                    f"{format_size(model.weight_bytes or 0)}, {model.precision}"
                )
            rows.append(
                {
                    "file": str(Path(loc.path).relative_to(root)),
                    "built as": built.get(loc.path, ""),
                    "identified": label if loc.status != "error" else "unreadable",
                    "precision": model.precision if model else None,
                    "weights": weights,
                    "audit": (model.audit_status if model else None) or loc.status,
                    "notes": [n for n in notes if n],
                    "sha256": model.sha256 if model else None,
                }
            )
    return rows
