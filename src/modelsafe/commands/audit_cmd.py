"""``modelsafe audit``: can these files run code when loaded? Nothing in them is executed."""

from __future__ import annotations

from pathlib import Path

import click

from modelsafe.output import emit_json, printable


@click.command()
# (readable=False: an unreadable file is an error verdict of its own, never a usage error that
# hides the verdicts of the other files)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, readable=False))
@click.option("--json", "as_json", is_flag=True, help="A JSON list of verdicts on stdout.")
def audit(paths: tuple[Path, ...], as_json: bool) -> int:
    """Audit model files without loading them: safe, unsafe (names each callable) or error.

    Exit codes: 0 every file safe, 1 at least one unsafe, 2 at least one could not be read
    (and none unsafe).
    """
    from modelsafe.registry.audit import audit_path

    verdicts = [audit_path(p) for p in paths]
    if as_json:
        emit_json(verdicts)
    else:
        colours = {"safe": "green", "unsafe": "red", "error": "yellow"}
        for v in verdicts:
            # (a file name, and what a finding quotes from the file, may hold an escape
            # sequence or a newline: shown escaped, so no name can fake a verdict line)
            line = f"{v.status.upper():7} {v.path}  ({v.format})"
            click.secho(printable(line), fg=colours.get(v.status))
            for f in v.findings:
                where = f" at {f.location}" if f.location else ""
                click.echo(printable(f"        {f.severity}: {f.message}{where}"))
    codes = {v.exit_code for v in verdicts}
    return 1 if 1 in codes else max(codes, default=0)
