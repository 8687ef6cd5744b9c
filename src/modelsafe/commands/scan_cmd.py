"""``modelsafe scan``: walk model folders into the catalog (incremental, one transaction a file)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from modelsafe.commands.catalog_option import catalog_option
from modelsafe.errors import UsageError
from modelsafe.output import emit_json, printable, show_error


@click.command()
# (readable=False here and below: a path that cannot be read is reported by the scan, after the
# other paths are scanned, never a usage error that stops them all)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, readable=False))
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Files read at once [default: the number of CPU cores].",
)
@click.option("--no-hash", is_flag=True, help="Skip hashing (identity by path until hashed).")
@click.option("--force", is_flag=True, help="Read every file again, even unchanged ones.")
@click.option(
    "--hf-cache",
    is_flag=True,
    help="Also scan the Hugging Face hub cache (HF_HUB_CACHE, ~/.cache/huggingface/hub).",
)
@click.option(
    "--hf-cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Scan this Hugging Face hub cache folder (implies --hf-cache).",
)
@click.option(
    "--model-root",
    "model_roots",
    multiple=True,
    type=click.Path(path_type=Path, readable=False),
    help="Scan this folder when no PATHS are given, instead of the config's model_roots "
    "(repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object on stdout.")
@catalog_option
@click.pass_context
def scan(
    ctx: click.Context,
    paths: tuple[Path, ...],
    jobs: int | None,
    no_hash: bool,
    force: bool,
    hf_cache: bool,
    hf_cache_dir: Path | None,
    model_roots: tuple[Path, ...],
    as_json: bool,
) -> int:
    """Scan model files and folders into the catalog: identify, hash, audit each one.

    Only files that changed since the last scan (size, mtime, ctime, inode, device) are read. A
    file stored twice is one model with two locations, each with its own audit; files gone from
    disk are marked missing. Without PATHS the model roots are scanned (--model-root, else
    MODELSAFE_MODEL_ROOTS, else the config file's model_roots).

    Exit codes: 0 done (even with unreadable files: they are error rows), 1 an unsafe file is in
    the scanned paths (changed or not), 2 the catalog could not be used, or a PATH does not
    exist or cannot be read (the other paths are scanned first).
    """
    from modelsafe.commands.catalog_option import open_cli_catalog
    from modelsafe.config import load_config
    from modelsafe.registry.scan import scan as run_scan

    roots = [str(p) for p in paths]
    if not roots and (model_roots or not (hf_cache or hf_cache_dir)):
        roots = load_config({"model_roots": [str(p) for p in model_roots]}).model_roots
        if not roots:
            raise UsageError(
                "nothing to scan",
                hint="give folders (modelsafe scan ~/models), use --model-root or --hf-cache, "
                "or set model_roots in the config file",
            )
    extra_for = None
    missing_roots = list(roots)
    if hf_cache or hf_cache_dir:
        from modelsafe.registry.hf_cache import hf_cache_roots

        cache = hf_cache_roots(hf_cache_dir)
        roots += cache.snapshots
        missing_roots.append(cache.cache_dir)
        extra_for = cache.extra_for
    catalog = open_cli_catalog(ctx)
    try:
        with _progress() as progress:
            summary = run_scan(
                catalog,
                roots,
                jobs=jobs or os.cpu_count() or 2,
                with_hash=not no_hash,
                force=force,
                extra_for=extra_for,
                missing_roots=missing_roots,
                progress=progress,
            )
    finally:
        catalog.close()
    if hf_cache or hf_cache_dir:
        summary.skipped.extend({"path": cache.cache_dir, "reason": w} for w in cache.warnings)
        summary.sort()
    if as_json:
        from dataclasses import asdict

        emit_json(asdict(summary), plugin_failures=True)
    else:
        _print_summary(summary, with_hash=not no_hash)
    problem = _unusable_roots_error(summary.unusable_roots, len(roots))
    if problem is not None and summary.unsafe:
        # (1 wins, as for `audit`: an unsafe file is the finding that matters most)
        show_error(problem.reason, problem.hint)
    if summary.unsafe:
        return 1
    if problem is not None:
        raise problem
    return 0


def _unusable_roots_error(roots: list[dict[str, str]], given: int) -> UsageError | None:
    """Exit 2 with the reason when a path given could not be scanned at all."""
    if not roots:
        return None
    unreachable = ("does not exist", "broken symlink", "cannot read", "cannot list")
    if any(word in r["reason"] for r in roots for word in unreachable):
        hint = "check the spelling, that the drive is mounted and that you may read it"
    else:  # (an unfinished download, a name that is not UTF-8: the reason says what to do)
        hint = "do what the reason says, then scan again"
    if given > len(roots):
        hint += "; the other paths were scanned"
    what = "; ".join(f"{r['path']}: {r['reason']}" for r in roots[:5])
    more = f" (and {len(roots) - 5} more)" if len(roots) > 5 else ""
    counted = "a path given" if len(roots) == 1 else f"{len(roots)} paths given"
    return UsageError(
        f"{counted} could not be scanned: {what}{more}",
        hint=hint,
    )


@contextmanager
def _progress() -> Iterator[Any]:
    """files/bytes/ETA on a TTY (stderr), nothing otherwise."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from modelsafe.output import stderr_console

    console = stderr_console()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with bar:
        task = bar.add_task("scanning", total=None)

        def update(files: int, total_files: int, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)
            bar.update(task, description=f"{files}/{total_files} files")

        yield update


def _print_summary(summary: Any, with_hash: bool = True) -> None:
    from modelsafe.units import format_size

    # (each list is in path order already: ScanSummary.sort)
    for item in summary.unsafe_files:
        click.secho(printable(f"UNSAFE  {item}"), fg="red")
    for item in summary.error_files:
        path, reason = item["path"], item["reason"]
        text = reason if reason.startswith(path) else f"{path}: {reason}"
        click.secho(printable(f"ERROR   {text}"), fg="yellow")
    for item in summary.wrong_folder:
        click.secho(printable(f"FOLDER  {item['path']}: {item['problem']}"), fg="yellow")
    for item in summary.warnings:
        click.secho(printable(f"WARNING {item['path']}: {item['warning']}"), fg="yellow")
    for item in summary.notices:
        click.echo(printable(f"NOTE    {item['path']}: {item['message']}"))
    for item in summary.skipped:
        click.echo(printable(f"SKIPPED {item['path']}: {item['reason']}"), err=True)
    read = "read" if with_hash else "of files, headers read"
    click.echo(
        f"{summary.files} files: {summary.new} new, {summary.changed} changed, "
        f"{summary.unchanged} unchanged, {summary.removed} removed, {summary.unsafe} unsafe, "
        f"{summary.errors} errors ({format_size(summary.bytes_read)} {read} in "
        f"{summary.seconds:.1f} s)"
    )
