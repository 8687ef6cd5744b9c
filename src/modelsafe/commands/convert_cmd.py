"""``modelsafe convert``: a verified safetensors copy of a safe torch checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from modelsafe.output import emit_json, printable


@click.command()
# (readable=False: an unreadable file is an error with a reason and a hint, not a usage error)
@click.argument("src", type=click.Path(path_type=Path, readable=False))
# (DST as given, not a Path: pathlib drops a trailing slash, which says "a folder")
@click.argument("dst", required=False, type=click.Path(readable=False))
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="The result as JSON on stdout.")
def convert(src: Path, dst: str | None, force: bool, as_json: bool) -> int:
    """Convert a .ckpt/.pt/.bin (zip, legacy or pickle) to safetensors without running it.

    Only files the audit calls safe are converted. Tensors are streamed into a temp file beside
    DST (default: SRC with the .safetensors suffix), re-read and compared bit for bit, fsynced and
    renamed into place; the source is never written. A tensor whose zip member fails its CRC-32
    check is an error. Views of one storage become separate tensors; exact aliases (tied weights)
    are listed in the metadata key ``modelsafe.aliases``. Arrays left out (tensors outside a
    top-level state_dict, numpy arrays) are listed under "dropped" in --json; numpy arrays are
    also named in a warning on stderr. DST gets the permission bits of the file it replaces
    (--force), else SRC's less the umask, as cp gives them (a 0600 checkpoint gives a 0600 copy).
    Temp files of converts that were killed (SIGKILL) in DST's folder are removed first.

    Exit codes: 0 converted, 1 refused because the file is unsafe, 2 error (nothing written).
    """
    from modelsafe.commands.inspect_cmd import refuse_unreadable
    from modelsafe.registry.convert import convert_file
    from modelsafe.registry.pickle_vm.tensors import NUMPY_ARRAY_REASON

    refuse_unreadable(src)
    result = convert_file(src, dst, overwrite=force)
    numpy_arrays = [d.name for d in result.dropped if d.reason == NUMPY_ARRAY_REASON]
    if numpy_arrays:
        shown = ", ".join(printable(n) for n in numpy_arrays[:5])
        more = f" and {len(numpy_arrays) - 5} more" if len(numpy_arrays) > 5 else ""
        click.echo(
            f"warning: {len(numpy_arrays)} numpy array{'s' if len(numpy_arrays) > 1 else ''} "
            f"left out (pickled inside data.pkl, not torch tensors): {shown}{more}",
            err=True,
        )
    for warning in result.warnings:
        click.echo(f"warning: {printable(warning)}", err=True)
    for name in result.removed_stale_temps:
        click.echo(f"removed {printable(name)}, left by a convert that was killed", err=True)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            printable(
                f"converted {result.source} -> {result.destination}: {result.tensors} tensors, "
                f"{result.bytes_written} bytes, verified, in {result.seconds:.2f} s"
            )
        )
        click.echo(f"  source sha256 {result.source_sha256}")
        if result.aliases:
            click.echo(f"  {len(result.aliases)} aliased tensors stored as copies")
        outside = len(result.dropped) - len(numpy_arrays)
        if outside:
            click.echo(f"  {outside} tensors outside state_dict left out")
    return 0
