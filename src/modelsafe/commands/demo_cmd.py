"""``modelsafe demo``: the whole product in one command, on a sample library it builds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from modelsafe.output import emit_json


@click.command()
@click.option(
    "--keep",
    type=click.Path(path_type=Path),
    default=None,
    help="Build the library in this folder and keep it (default: a temp folder).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable results on stdout.")
def demo(keep: Path | None, as_json: bool) -> int:
    """Build a sample model library, inspect and audit every file, and print what was found.

    Exit code 0 when every file was judged as expected.
    """
    from modelsafe.demo import build_library
    from modelsafe.errors import ModelsafeError
    from modelsafe.registry.audit import audit_path
    from modelsafe.registry.inspect import inspect_path

    with tempfile.TemporaryDirectory(prefix="modelsafe-demo-") as tmp:
        root = keep or Path(tmp)
        files = build_library(root)
        rows = []
        for f in files:
            verdict = audit_path(f.path)
            try:
                report = inspect_path(f.path)
                found = "/".join(x for x in (report.family, report.kind, report.variant) if x)
            except ModelsafeError as exc:
                found = f"unreadable: {exc.reason.split(': ', 1)[-1]}"
            rows.append(
                {
                    "file": str(f.path.relative_to(root)),
                    "built as": f.what,
                    "identified": found,
                    "audit": verdict.status,
                    "findings": [x.message for x in verdict.findings],
                }
            )
    if as_json:
        emit_json(rows)
        return 0
    for row in rows:
        click.echo(f"{row['file']}")
        click.echo(f"    built as   {row['built as']}")
        click.echo(f"    identified {row['identified']}")
        click.echo(f"    audit      {row['audit']}")
        for finding in row["findings"][:3]:
            click.echo(f"               {finding}")
    return 0
