"""The catalog: SQLAlchemy 2 models, engine set-up and Alembic migrations."""

from modelsafe.registry.catalog.db import Catalog, catalog_url, open_catalog

__all__ = ["Catalog", "catalog_url", "open_catalog"]
