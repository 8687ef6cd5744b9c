"""``modelsafe set``: correct what modelsafe detected; the correction survives re-scans."""

from __future__ import annotations

import click

from modelsafe.commands.catalog_option import catalog_option
from modelsafe.output import emit_json, printable


@click.command("set")
@click.argument("model")
@click.option("--family", default=None, help="The family (sd1, sdxl, flux1, ...); '' to clear.")
@click.option("--kind", default=None, help="The kind (checkpoint, lora, vae, ...); '' to clear.")
@click.option("--variant", default=None, help="The variant (e.g. inpaint, v-pred); '' to clear.")
@click.option("--prediction-type", default=None, help="eps, v_prediction, ...; '' to clear.")
@click.option("--note", default=None, help="A free-text note ('' to clear).")
@click.option("--reset", is_flag=True, help="Drop every override: detection applies again.")
@click.option("--json", "as_json", is_flag=True, help="The updated model as JSON on stdout.")
@catalog_option
@click.pass_context
def set_command(
    ctx: click.Context,
    model: str,
    family: str | None,
    kind: str | None,
    variant: str | None,
    prediction_type: str | None,
    note: str | None,
    reset: bool,
    as_json: bool,
) -> int:
    """Override the identification of MODEL (a path, hash prefix or name) in the catalog.

    Overrides are kept apart from what was detected: `ls` marks them with `*`, `show` prints
    both, and re-scans never undo them.

    Exit codes: 0 saved, 2 no such model, an unknown family/kind, or a catalog error.
    """
    from modelsafe.commands.catalog_option import open_cli_catalog
    from modelsafe.errors import UsageError
    from modelsafe.registry.catalog import queries

    values = {
        "family": family,
        "kind": kind,
        "variant": variant,
        "prediction_type": prediction_type,
    }
    if reset:
        given = [f"--{n.replace('_', '-')}" for n, v in values.items() if v is not None]
        if given:  # (--reset clears every value: one given beside it would be dropped)
            raise UsageError(
                f"--reset cannot be combined with {', '.join(given)}",
                hint="run `set MODEL --reset` first, then `set MODEL` with the new values",
            )
        values = {name: "" for name in values}
    if all(v is None for v in values.values()) and note is None:
        raise UsageError(
            "nothing to set", hint="give --family, --kind, --variant, --prediction-type or --note"
        )
    catalog = open_cli_catalog(ctx)
    try:
        with catalog.session() as session:
            found = queries.find_model(session, model)
            queries.set_overrides(session, found, values, note)
            session.flush()
            value = queries.model_json(found)
    finally:
        catalog.close()
    if as_json:
        emit_json(value)
    else:
        changed = ", ".join(f"{k}={v}" for k, v in value["overrides"].items()) or "none"
        click.echo(
            printable(
                f"{value['name']}: overrides {changed}"
                + (f"; note {value['note']!r}" if value["note"] else "")
            )
        )
    return 0
