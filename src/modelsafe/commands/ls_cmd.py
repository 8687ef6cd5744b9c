"""``modelsafe ls``: list the catalog, filtered; ``--duplicates`` shows what can be reclaimed."""

from __future__ import annotations

from typing import Any

import click

from modelsafe.commands.catalog_option import catalog_option
from modelsafe.output import emit_json, printable


@click.command("ls")
@click.option("--family", "-f", default=None, help="Only this family (sd1, sdxl, flux1, ...).")
@click.option("--kind", "-k", default=None, help="Only this kind (checkpoint, lora, vae, ...).")
@click.option(
    "--unsafe",
    is_flag=True,
    help="Only models with a file on disk whose audit found code that would run.",
)
@click.option("--missing", is_flag=True, help="Only models with no copy left on disk.")
@click.option(
    "--duplicates", is_flag=True, help="Models stored more than once, with reclaimable bytes."
)
@click.option(
    "--compatible-with",
    "compatible_with",
    metavar="CHECKPOINT",
    default=None,
    help="Only models that fit this checkpoint (name, path or hash prefix), with the reasons.",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list on stdout.")
@catalog_option
@click.pass_context
def ls(
    ctx: click.Context,
    family: str | None,
    kind: str | None,
    unsafe: bool,
    missing: bool,
    duplicates: bool,
    compatible_with: str | None,
    as_json: bool,
) -> int:
    """List the models in the catalog (read from the catalog only; no file is opened).

    A user's correction (`modelsafe set`) is shown with a `*` after the overridden value.

    Exit codes: 0 listed (even when nothing matches), 2 the catalog could not be read.
    """
    from modelsafe.commands.catalog_option import open_cli_catalog
    from modelsafe.registry.catalog import queries

    _refuse_conflicts(duplicates, compatible_with, missing)
    catalog = open_cli_catalog(ctx)
    try:
        with catalog.session() as session:
            if compatible_with:
                filters = {"family": family, "unsafe": unsafe, "missing": missing}
                return _show_compatible(catalog, compatible_with, kind, as_json, filters)
            if duplicates:
                groups = _filtered(queries.duplicates(session), family, kind, unsafe)
                _show_duplicates(groups, as_json)
                return 0
            models = queries.list_models(
                session, family=family, kind=kind, unsafe=unsafe, missing=missing
            )
            if as_json:
                emit_json([queries.model_json(m) for m in models])
            elif models:
                _show_table([queries.model_json(m) for m in models])
            else:
                filters = {"family": family, "kind": kind, "unsafe": unsafe, "missing": missing}
                why = _nothing_matches(*queries.catalog_labels(session), filters)
                click.echo(printable(why), err=True)
    finally:
        catalog.close()
    return 0


def _refuse_conflicts(duplicates: bool, compatible_with: str | None, missing: bool) -> None:
    """Options that cannot apply together are refused, never silently ignored."""
    from modelsafe.errors import UsageError

    if duplicates and compatible_with:
        raise UsageError(
            "--duplicates and --compatible-with cannot be combined",
            hint="run `ls --duplicates` and `ls --compatible-with CHECKPOINT` separately",
        )
    if duplicates and missing:
        raise UsageError(
            "--duplicates and --missing cannot be combined: a model with no copy left on disk "
            "is stored nowhere, so never more than once",
            hint="run `ls --duplicates` and `ls --missing` separately",
        )


def _filtered(groups: list[Any], family: str | None, kind: str | None, unsafe: bool) -> list[Any]:
    """The duplicate groups whose model passes ``--family``, ``--kind`` and ``--unsafe``, as
    the plain list filters them (the values a user's `set` gave win over detected ones)."""
    from modelsafe.registry.catalog import queries

    for name, value in (("--family", family), ("--kind", kind)):
        queries.check_utf8(name, value)
    return [
        g
        for g in groups
        if (not family or g.model.family == family)
        and (not kind or g.model.kind == kind)
        and (not unsafe or queries.model_audit(g.model) == "unsafe")
    ]


def _show_compatible(
    catalog: Any, checkpoint: str, kind: str | None, as_json: bool, filters: dict[str, Any]
) -> int:
    """Catalog models that fit ``checkpoint``, answered from stored facts (no file reads);
    ``--family``, ``--unsafe`` and ``--missing`` filter them as they filter the plain list."""
    from modelsafe.runtime.resolve import compatible_models

    fits = compatible_models(catalog, checkpoint, kind, **filters)
    if as_json:
        emit_json([{"model": f.model, "status": f.status, "reasons": f.reasons} for f in fits])
        return 0
    if not fits:
        click.echo(printable(f"nothing in the catalog fits {checkpoint}"), err=True)
    for f in fits:
        model = f.model
        click.echo(printable(f"{model.get('family')}/{model.get('kind')}  {model.get('name')}"))
        for reason in f.reasons:
            click.echo(printable(f"    {reason.status}: {reason.reason}"))
    return 0


def _mark(row: dict[str, Any], name: str) -> str:
    value = row.get(name) or "-"
    return f"{value}*" if name in row["overrides"] else str(value)


def _nothing_matches(
    total: int, families: list[str], kinds: list[str], filters: dict[str, Any]
) -> str:
    """Why ``ls`` lists nothing: an empty catalog, or filters that match none of its models."""
    if not total:
        return "the catalog is empty: run `modelsafe scan PATH` to fill it"
    given = [f"--{k} {v}" if isinstance(v, str) else f"--{k}" for k, v in filters.items() if v]
    if not given:
        return f"no model has a copy on disk ({total} in the catalog; `--missing` lists them)"
    text = f"no models match {' '.join(given)} ({total} in the catalog"
    if filters.get("family") and filters["family"] not in families:
        text += f"; families: {', '.join(families)}"
    if filters.get("kind") and filters["kind"] not in kinds:
        text += f"; kinds: {', '.join(kinds)}"
    return text + ")"


def _show_table(rows: list[dict[str, Any]]) -> None:
    from modelsafe.units import format_size

    header = ("STATUS", "AUDIT", "FAMILY", "KIND", "PRECISION", "SIZE", "AUTOV2", "NAME")
    table = [header]
    for r in rows:
        table.append(
            (
                r["status"],
                r["audit"] or "-",
                _mark(r, "family"),
                _mark(r, "kind"),
                r["precision"] or "-",
                format_size(r["size"]),
                r["autov2"] or "-",
                printable(r["name"]),
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        click.echo("  ".join([*cells, str(row[-1])]))


def _show_duplicates(groups: list[Any], as_json: bool) -> None:
    from modelsafe.units import format_size

    total = sum(g.reclaimable for g in groups)
    if as_json:
        emit_json(
            {
                "reclaimable": total,
                "groups": [
                    {
                        "id": g.model.id,
                        "name": g.model.name,
                        "content_key": g.model.content_key,
                        "keep": g.keep.path,
                        "others": [o.path for o in g.others],
                        "reclaimable": g.reclaimable,
                    }
                    for g in groups
                ],
            }
        )
        return
    for g in groups:
        click.echo(printable(f"{g.model.name}  ({format_size(g.reclaimable)} reclaimable)"))
        click.echo(printable(f"  keep    {g.keep.path}"))
        for other in g.others:
            click.echo(printable(f"  also    {other.path}"))
    click.echo(f"{len(groups)} models stored more than once; {format_size(total)} reclaimable")
