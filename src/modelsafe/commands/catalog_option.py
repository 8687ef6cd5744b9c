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


def open_cli_catalog(ctx: click.Context) -> Catalog:
    """Open (creating and migrating as needed) the effective catalog of this command line."""
    from modelsafe.config import load_config
    from modelsafe.registry.catalog import open_catalog

    root = ctx.find_root().obj or {}
    return open_catalog(load_config({"catalog": root.get("catalog")}).catalog)
