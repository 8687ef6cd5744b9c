"""The catalog a command uses: --catalog > MODELSAFE_CATALOG > config file > ./catalog.db."""

from __future__ import annotations

import click

from modelsafe.registry.catalog.db import Catalog


def open_cli_catalog(ctx: click.Context) -> Catalog:
    """Open (creating and migrating as needed) the effective catalog of this command line."""
    from modelsafe.config import load_config
    from modelsafe.registry.catalog import open_catalog

    root = ctx.find_root().obj or {}
    return open_catalog(load_config({"catalog": root.get("catalog")}).catalog)
