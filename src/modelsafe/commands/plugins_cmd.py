"""``modelsafe plugins``: every registered plugin with its package, version and hooks."""

from __future__ import annotations

import click

from modelsafe.output import emit_json, printable


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def plugins(as_json: bool) -> int:
    """List plugins (built-in and installed), their hooks, and any that are broken.

    Exit code 0, even when some plugins are broken (they are listed with the reason).
    """
    from modelsafe.plugin_manager import get_plugin_manager
    from modelsafe.plugins.hookspecs import HOOKSPEC_VERSION

    pm = get_plugin_manager()
    records = sorted(pm.records.values(), key=lambda r: (not r.builtin, r.name))
    if as_json:
        emit_json(
            {
                "hookspec_version": HOOKSPEC_VERSION,
                "plugins": records,
                "failures": pm.failures,
            }
        )
        return 0
    from rich.table import Table

    from modelsafe.output import stdout_console

    table = Table(title=f"modelsafe plugins (hookspec {HOOKSPEC_VERSION})")
    for column in ("name", "package", "version", "status", "hooks"):
        table.add_column(column)
    broken = [r for r in records if r.status == "broken" and r.reason]
    for r in records:
        if r.status == "broken" and r.reason:
            status = f"{r.status} (see below)"  # (the reason in full, not cut to the column)
        else:
            status = r.status if not r.reason else f"{r.status}: {r.reason}"
        table.add_row(r.name, r.package, r.version, status, ", ".join(r.hooks))
    stdout_console().print(table)
    for r in broken:
        click.secho(printable(f"broken: {r.name}: {r.reason}"), fg="red")
    for failure in pm.failures:  # (hooks that ran in this process; commands warn as they fail)
        click.secho(f"failed: {failure.message()}", fg="yellow")
    return 0
