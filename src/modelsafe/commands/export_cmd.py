"""``modelsafe export``: the whole catalog as JSON (models with locations) or CSV (locations)."""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from modelsafe.commands.catalog_option import catalog_option
from modelsafe.errors import UsageError


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
    help="Write to this file instead of stdout (an existing file only with --force).",
)
@click.option("--force", is_flag=True, help="Replace the -o file if it exists.")
@catalog_option
@click.pass_context
def export(ctx: click.Context, fmt: str, output: Path | None, force: bool) -> int:
    """Export the catalog (read from the catalog only; no model file is opened).

    -o never writes over the catalog being exported, and replaces an existing file only with
    --force.

    Exit codes: 0 exported, 2 the catalog or the output file could not be used.
    """
    import csv
    import json

    from modelsafe.commands.catalog_option import open_cli_catalog
    from modelsafe.output import finite_json
    from modelsafe.registry.catalog import queries
    from modelsafe.types import to_jsonable

    catalog = open_cli_catalog(ctx)
    try:
        if output is not None:
            check_output(output, catalog.url, force)
        with catalog.session() as session:
            if fmt == "json":
                value = finite_json(to_jsonable(queries.export_models(session)))
                text = json.dumps(value, indent=2, allow_nan=False) + "\n"
            else:
                import io

                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, fieldnames=list(queries.EXPORT_COLUMNS))
                writer.writeheader()
                writer.writerows(csv_safe(queries.export_rows(session)))
                text = buffer.getvalue()
    finally:
        catalog.close()
    if output is None:
        sys.stdout.write(text)
        return 0
    write_output(output, text)
    click.echo(f"wrote {output}", err=True)
    return 0


# A spreadsheet (Excel, LibreOffice, Google Sheets) runs a cell that starts with one of these as
# a formula: a file named `=HYPERLINK(...).safetensors` or such a note must stay text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(rows: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """``rows`` with each text cell that a spreadsheet would read as a formula prefixed with
    ``'`` (as OWASP advises against CSV injection); numbers and other text are unchanged."""
    for row in rows:
        yield {k: _csv_cell(v) for k, v in row.items()}


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def check_output(output: Path, catalog_url: str, force: bool) -> None:
    """Refuse an ``-o`` file that is the catalog itself (or its -wal, -shm, -journal file; also
    through a symlink or a hard link), and an existing file (a link too, even to nothing)
    without ``force``. A device or a pipe (``-o /dev/stdout``) is written as it is."""
    from modelsafe.registry.catalog.db import sqlite_path

    try:
        entry = os.lstat(output)
    except OSError:
        return  # (a new file; a folder that is not one is the write's error, with its hint)
    if catalog_url.startswith("sqlite:///"):
        database = sqlite_path(catalog_url)
        for suffix in ("", "-wal", "-shm", "-journal"):
            if _same_file(output, database + suffix):
                raise UsageError(
                    f"{output} is the catalog being exported ({database}{suffix})",
                    hint="give -o another file",
                )
    if stat.S_ISDIR(entry.st_mode) or (stat.S_ISLNK(entry.st_mode) and output.is_dir()):
        raise UsageError(f"{output} is a folder", hint="give -o the path of the file to write")
    regular = stat.S_ISREG(entry.st_mode) or (
        stat.S_ISLNK(entry.st_mode) and (not output.exists() or output.is_file())
    )
    if regular and not force:
        dangling = "" if output.exists() else " (a link to a file that does not exist)"
        raise UsageError(
            f"{output} already exists{dangling}", hint="remove it, or pass --force to replace it"
        )


def _same_file(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_output(output: Path, text: str) -> None:
    """Write ``text`` to ``output`` whole or not at all: into a temp file in the same folder,
    renamed over ``output`` once on disk (:func:`modelsafe.atomic.replacing`), so a full disk or
    an interruption leaves the previous file as it was (and no temp file). The new file keeps
    the old one's mode, and its owner and group where that is permitted. A folder that takes
    no new entry (read-only to this user, immutable) while ``output`` may be written is
    written in place instead (not atomic then); a device or pipe (``-o /dev/stdout``) too."""
    try:
        old: os.stat_result | None = os.stat(output)
    except OSError:
        old = None
    regular = old is None or stat.S_ISREG(old.st_mode)
    # (through a symlink: its target is replaced, the link stays)
    target = Path(os.path.realpath(output)) if regular else output
    in_place = not regular
    try:
        tmp = _temp_beside(target) if regular else None
        if tmp is None:
            in_place = True
            _write_in_place(target, text)
        else:
            _replace_atomically(target, tmp, text, old)
    except OSError as exc:
        raise _write_error(output, exc, kept=old is not None and not in_place) from exc


def _temp_beside(output: Path) -> Path | None:
    """A new temp file in ``output``'s folder, or None where the folder takes no new entry
    (permission denied, immutable, read-only file system): then ``output`` is written in place."""
    import tempfile

    try:
        # (a short fixed name: OUTPUT's own name may be near the file system's limit)
        fd, tmp = tempfile.mkstemp(prefix=".modelsafe-export-", suffix=".tmp", dir=output.parent)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return None
        raise
    os.close(fd)
    return Path(tmp)


def _write_in_place(output: Path, text: str) -> None:
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(text)


def _replace_atomically(output: Path, tmp: Path, text: str, old: os.stat_result | None) -> None:
    from modelsafe.atomic import replacing

    with replacing(tmp, output):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if old is not None:
            _keep_owner(tmp, old)
        os.chmod(tmp, stat.S_IMODE(old.st_mode) if old is not None else _default_mode())


def _keep_owner(tmp: Path, old: os.stat_result) -> None:
    """Give ``tmp`` the owner and group of the file it replaces, where permitted (root; a user
    in the file's group may keep the group only)."""
    for uid, gid in ((old.st_uid, old.st_gid), (-1, old.st_gid)):
        try:
            os.chown(tmp, uid, gid)
            return
        except OSError:
            continue


def _default_mode() -> int:
    """The mode a new file gets (0o666 less the umask), as a plain ``open`` would give it."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_error(output: Path, exc: OSError, *, kept: bool) -> UsageError:
    """Why ``output`` could not be written, with a hint that fits the cause."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        hint = "free some disk space (or quota), or give -o a file on another disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "check that you may write in that folder (and that it is not read-only)"
    elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = "check the folder exists"
    elif exc.errno == errno.ENAMETOOLONG:
        hint = "give a shorter file name"
    else:
        hint = "check the folder exists, that you may write in it and that its disk has room"
    unchanged = f" ({output} is as it was)" if kept else ""
    return UsageError(f"cannot write {output}: {exc.strerror or exc}{unchanged}", hint=hint)
