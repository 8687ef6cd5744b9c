"""``modelsafe config``: show the effective settings and where each came from."""

from __future__ import annotations

import click

from modelsafe.output import emit_json


@click.group()
def config() -> None:
    """Settings: flags > environment (MODELSAFE_*) > config file > defaults."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--vram", default=None, metavar="SIZE", help="Override the default VRAM budget.")
@click.option("--model-root", "model_roots", multiple=True, help="Override the model roots.")
@click.pass_context
def show(ctx: click.Context, as_json: bool, vram: str | None, model_roots: tuple[str, ...]) -> int:
    """Print every setting's effective value and its source."""
    from modelsafe.config import config_path, load_config

    catalog = (ctx.find_root().obj or {}).get("catalog")
    cfg = load_config({"catalog": catalog, "vram": vram, "model_roots": list(model_roots)})
    if as_json:
        emit_json({"config_file": str(config_path()), "settings": list(cfg.settings.values())})
        return 0
    click.echo(f"config file: {config_path()}")
    for s in cfg.settings.values():
        click.echo(f"{s.name:12} = {s.value!r:40} ({s.source})")
    return 0


@config.command("path")
def path() -> None:
    """Print the config file's path (it may not exist yet)."""
    from modelsafe.config import config_path

    click.echo(str(config_path()))
