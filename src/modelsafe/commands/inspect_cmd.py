"""``modelsafe inspect``: what a model file or folder is, with evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from modelsafe.output import emit_json, printable


@click.command("inspect")
# (readable=False: an unreadable file is an error with a reason and a hint, not a usage error)
@click.argument("path", type=click.Path(path_type=Path, readable=False))
@click.option(
    "--hash", "with_hashes", is_flag=True, help="Also compute every hash (reads the file)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object on stdout (see docs/cli.md)."
)
def inspect_command(path: Path, with_hashes: bool, as_json: bool) -> int:
    """Identify PATH from its headers: format, family, kind, variant, precision, size, VRAM.

    Exit codes: 0 read (even when the layout is unknown), 2 the file cannot be read.
    """
    from modelsafe.registry.inspect import inspect_path

    refuse_unreadable(path)
    report = inspect_path(path, with_hashes=with_hashes)
    if as_json:
        emit_json(report, plugin_failures=True)
    else:
        _print_summary(report)
    return 0


def refuse_unreadable(path: Path) -> None:
    """A FileReadError (reason and hint) for a file or folder that exists but that this user may
    not read, before a reader (a plugin) meets it as a failure of its own. A path that does not
    exist, or another OS error, is left to the reader, which names it in its own words."""
    import os
    import shlex

    from modelsafe.errors import FileReadError

    try:
        if path.is_dir():
            os.scandir(path).close()
        else:  # (O_NONBLOCK: a FIFO opens at once; nothing is read)
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except PermissionError as exc:
        raise FileReadError(
            f"cannot read {path}: permission denied",
            hint="check the permissions of it and of the folders above it "
            f"(ls -ld {shlex.quote(str(path))}); run modelsafe as a user who may read it",
        ) from exc
    except OSError:
        return


def _print_summary(report: Any) -> None:
    from modelsafe.units import format_count, format_size

    def echo(line: str, **style: Any) -> None:
        # (names come from the file system and tensor names from the file: a newline or an
        # escape sequence in them must not split a line or colour the terminal)
        click.secho(printable(line), **style)

    label = "/".join(x for x in (report.family, report.kind, report.variant) if x)
    echo(f"{report.path}")
    echo(f"  what       {label}  (confidence {report.confidence:.2f})")
    echo(f"  format     {report.format}")
    if report.prediction_type:
        echo(f"  prediction {report.prediction_type}")
    echo(
        f"  weights    {format_count(report.parameter_count)} parameters, "
        f"{format_size(report.weight_bytes)}, {report.tensor_count} tensors, "
        f"precision {report.precision}"
    )
    vram = ", ".join(f"{k} {format_size(v)}" for k, v in report.vram.items() if isinstance(v, int))
    if vram:
        echo(f"  vram       {vram}")
    for line in report.evidence:
        echo(f"  evidence   {line}")
    for cand in report.candidates[:3]:
        why = "; ".join(cand["why"][:2])
        echo(f"  not        {cand['family']}/{cand['kind']} ({cand['score']:.2f}): {why}")
    from modelsafe.registry.sidecars import civitai_line

    civitai = report.facts.get("civitai") or {}
    if civitai:
        echo(f"  civitai    {civitai_line(civitai)}")
        if civitai.get("trained_words"):
            echo(f"  triggers   {', '.join(civitai['trained_words'])}")
    for name, comp in report.components.items():
        echo(f"  component  {name}: {comp['family']}/{comp['kind']} {comp['precision']}")
    for warning in report.warnings:
        echo(f"  warning    {warning}", fg="yellow")
    if report.hashes:
        for name, value in report.hashes.items():
            echo(f"  {name:10} {value}")
