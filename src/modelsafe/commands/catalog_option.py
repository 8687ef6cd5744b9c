"""The catalog a command uses: --catalog > MODELSAFE_CATALOG > config file > ./catalog.db."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # (SQLAlchemy is imported when a catalog is opened, not for --help)
    from modelsafe.registry.catalog.db import Catalog

F = TypeVar("F", bound=Callable[..., Any])


def _set_catalog(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        root = ctx.find_root()
        root.ensure_object(dict)
        root.obj["catalog"] = value


def catalog_option(command: F) -> F:
    """``--catalog`` after the command name too (``modelsafe scan DIR --catalog URL``): the same
    setting as ``modelsafe --catalog URL scan DIR``."""
    return click.option(
        "--catalog",
        metavar="URL|PATH",
        default=None,
        expose_value=False,
        callback=_set_catalog,
        help="Catalog database (same as `modelsafe --catalog`).",
    )(command)


# Commands that write to the catalog, and so may create it; every other command only reads it.
CREATING_COMMANDS = frozenset({"scan", "set", "generate", "worker"})


def open_cli_catalog(ctx: click.Context, *, create: bool | None = None) -> Catalog:
    """Open (migrating as needed) the effective catalog of this command line.

    ``create``: whether a catalog that does not exist is created; by default only for the
    commands in :data:`CREATING_COMMANDS`. A command that only reads (ls, show, export) is
    told there is no catalog, never answers "nothing" from an empty one it made."""
    from modelsafe.config import load_config
    from modelsafe.registry.catalog import open_catalog
    from modelsafe.registry.catalog.db import NoCatalogError

    root = ctx.find_root().obj or {}
    if create is None:
        create = ctx.command.name in CREATING_COMMANDS
    setting = load_config({"catalog": root.get("catalog")}).settings["catalog"]
    try:
        return open_catalog(setting.value, create=create)
    except NoCatalogError as exc:
        raise NoCatalogError(f"{exc.reason} ({_source(setting.source)})", exc.hint) from exc


def _source(source: str) -> str:
    """Where the catalog setting came from, as the error says it."""
    if source == "default":
        return "the default: catalog.db in the current folder"
    if source == "flag":
        return "from --catalog"
    return f"from {source.replace('env ', '').replace('file ', 'the config file ')}"
