"""``modelsafe convert``: a verified safetensors copy of a safe torch checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from modelsafe.output import emit_json


@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", required=False, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="The result as JSON on stdout.")
def convert(src: Path, dst: Path | None, force: bool, as_json: bool) -> int:
    """Convert a .ckpt/.pt/.bin (zip, legacy or pickle) to safetensors without running it.

    Only files the audit calls safe are converted. Tensors are streamed into a temp file beside
    DST (default: SRC with the .safetensors suffix), re-read and compared bit for bit, fsynced and
    renamed into place; the source is never written. Views of one storage become separate
    tensors; exact aliases (tied weights) are listed in the metadata key ``modelsafe.aliases``.

    Exit codes: 0 converted, 1 refused because the file is unsafe, 2 error (nothing written).
    """
    from modelsafe.registry.convert import convert_file

    result = convert_file(src, dst, overwrite=force)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"converted {result.source} -> {result.destination}: {result.tensors} tensors, "
            f"{result.bytes_written} bytes, verified, in {result.seconds:.2f} s"
        )
        click.echo(f"  source sha256 {result.source_sha256}")
        if result.aliases:
            click.echo(f"  {len(result.aliases)} aliased tensors stored as copies")
        if result.dropped_tensors:
            click.echo(f"  {result.dropped_tensors} tensors outside state_dict left out")
    return 0
