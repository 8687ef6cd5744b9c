"""``modelsafe export``: the whole catalog as JSON (models with locations) or CSV (locations)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelsafe.commands.catalog_option import catalog_option


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "csv"]),
    default="json",
    show_default=True,
    help="json: one object per model with every fact; csv: one row per location.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to this file instead of stdout.",
)
@catalog_option
@click.pass_context
def export(ctx: click.Context, fmt: str, output: Path | None) -> int:
    """Export the catalog (read from the catalog only; no model file is opened).

    Exit codes: 0 exported, 2 the catalog or the output file could not be used.
    """
    import csv
    import json

    from modelsafe.commands.catalog_option import open_cli_catalog
    from modelsafe.errors import UsageError
    from modelsafe.registry.catalog import queries
    from modelsafe.types import to_jsonable

    catalog = open_cli_catalog(ctx)
    try:
        with catalog.session() as session:
            if fmt == "json":
                text = json.dumps(to_jsonable(queries.export_models(session)), indent=2) + "\n"
            else:
                import io

                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, fieldnames=list(queries.EXPORT_COLUMNS))
                writer.writeheader()
                writer.writerows(queries.export_rows(session))
                text = buffer.getvalue()
    finally:
        catalog.close()
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot write {output}: {exc.strerror or exc}", hint="check the folder exists"
        ) from exc
    click.echo(f"wrote {output}", err=True)
    return 0
