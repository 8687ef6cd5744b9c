"""Open a catalog by URL or path: engine set-up (SQLite WAL + busy timeout) and migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from modelsafe.errors import CatalogError
from modelsafe.paths import user_path

SQLITE_BUSY_TIMEOUT_MS = 60_000
# Database errors that refuse every write, whatever is written: SQLite's primary result codes
# (sqlite3 gives the extended code; its low byte is the primary one) and PostgreSQL's SQLSTATEs.
SQLITE_READONLY, SQLITE_FULL = 8, 13
PG_READ_ONLY, PG_DISK_FULL = "25006", "53100"  # read_only_sql_transaction, disk_full
MIGRATION_LOCK_ID = 0x6D6F64656C  # PostgreSQL advisory lock held while migrating ("model")


def catalog_url(value: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL for ``value``: a URL stays as it is, a path becomes ``sqlite:///path``."""
    text = os.fspath(value)
    if "://" in text:
        try:
            url = make_url(text)
        except ArgumentError as exc:
            raise CatalogError(
                f"{text!r} is not a database URL", hint="e.g. postgresql+psycopg://host/db"
            ) from exc
        if url.drivername in ("postgresql", "postgres") and _psycopg3_only():
            # A plain postgresql:// means psycopg2 to SQLAlchemy; modelsafe installs psycopg 3.
            # (postgres:// is how Heroku and others write it; SQLAlchemy refuses that name.)
            return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        return text
    return f"sqlite:///{user_path(text).resolve()}"


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` URL, also when written as an SQLite URI
    (``sqlite:///file:/data/catalog.db?mode=ro&uri=true``: a catalog opened read-only)."""
    rest = url[len("sqlite:///") :]
    if rest.startswith("file:"):
        rest = rest[len("file:") :].split("?", 1)[0]
    return rest


def _psycopg3_only() -> bool:
    from importlib.util import find_spec

    return find_spec("psycopg2") is None and find_spec("psycopg") is not None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy say when transactions begin (see _sqlite_begin), not the sqlite3 module.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # SQLite's own lower() folds ASCII only: `show Äpfel` compared "Äpfel" with Python's
    # "äpfel" and found nothing. Python's lower, as PostgreSQL folds (and the query's side).
    dbapi_connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _sqlite_begin(connection: Any) -> None:
    # Take the write lock when the transaction starts: a deferred transaction that reads and
    # then writes fails at once with "database is locked" when another process wrote in between
    # (the busy timeout does not apply to that upgrade); an immediate one waits its turn.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_catalog_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "modelsafe.registry.catalog:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (no-op when it is there already)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Two processes opening a new catalog at once: the second waits, then finds it done.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


class CatalogWriteError(CatalogError):
    """The catalog cannot take any write: it is read-only, or the disk holding it is full."""


def refused_write(exc: DBAPIError, url: str) -> CatalogWriteError | None:
    """``exc`` told as what it is when the database refuses every write (a read-only file or
    server, a full disk), so that the command stops at the first write with a reason and a hint
    instead of failing each one; None for any other database error."""
    orig = exc.orig
    detail = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
    code = getattr(orig, "sqlite_errorcode", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    sqlite = url.startswith("sqlite:///")
    shown = sqlite_path(url) if sqlite else make_url(url).render_as_string(hide_password=True)
    if (isinstance(code, int) and code & 0xFF == SQLITE_READONLY) or state == PG_READ_ONLY:
        if not sqlite:
            hint = (
                "connect to the primary server (this one is a read-only replica, or "
                "default_transaction_read_only is on), or pass --catalog with another URL"
            )
        elif "mode=ro" in url:
            hint = "open it without mode=ro in its URL"
        else:
            hint = (
                "make the file and its folder writable (chmod u+w; chattr -i when it is "
                "immutable; remount the drive read-write), or pass --catalog with a writable path"
            )
        return CatalogWriteError(
            f"the catalog is read-only: {shown} cannot be written ({detail})",
            hint=hint + "; ls, show and export only read it and still work",
        )
    if (isinstance(code, int) and code & 0xFF == SQLITE_FULL) or state == PG_DISK_FULL:
        return CatalogWriteError(
            f"the disk holding the catalog is full: {shown} cannot grow ({detail})",
            hint="free space on that disk, then run the command again (what was written "
            "before is kept), or pass --catalog with a path on another disk",
        )
    return None


@dataclass
class Catalog:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error (one transaction).

        A write the database refuses outright (read-only, disk full) is a
        :class:`CatalogWriteError` (:func:`refused_write`), for every command."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException as exc:
                session.rollback()
                refused = refused_write(exc, self.url) if isinstance(exc, DBAPIError) else None
                if refused is not None:
                    raise refused from exc
                raise

    def close(self) -> None:
        self.engine.dispose()


def open_catalog(value: str | os.PathLike[str], *, migrate: bool = True) -> Catalog:
    """Open (creating and migrating as needed) the catalog at a URL or path."""
    url = catalog_url(value)
    if url.startswith("sqlite:///"):
        parent = Path(sqlite_path(url)).parent
        if not parent.is_dir():
            raise CatalogError(
                f"folder {parent} for the catalog does not exist",
                hint="create it, or pass --catalog with another path",
            )
    try:
        engine = create_catalog_engine(url)
        if migrate:
            _upgrade_when_free(engine, url)
    except ImportError as exc:  # the URL's database driver is not installed
        shown = make_url(url)
        raise CatalogError(
            f"cannot open catalog {shown.render_as_string(hide_password=True)}: its database "
            f"driver is not installed ({exc})",
            hint=f"install the driver for {shown.drivername} in modelsafe's environment "
            "(PostgreSQL: pip install 'psycopg[binary]' with a postgresql+psycopg:// URL); "
            "modelsafe is tested on SQLite and PostgreSQL",
        ) from exc
    except DBAPIError as exc:
        refused = refused_write(exc, url)  # (a migration to write into a read-only catalog)
        if refused is not None:
            raise refused from exc
        raise _cannot_open(url, exc) from exc
    except SQLAlchemyError as exc:
        raise _cannot_open(url, exc) from exc
    return Catalog(url, engine, sessionmaker(engine, expire_on_commit=False))


SQLITE_BUSY, SQLITE_LOCKED = 5, 6


def _upgrade_when_free(engine: Engine, url: str) -> None:
    """:func:`upgrade`, waiting out another process that holds the SQLite file at that moment:
    two commands started at once on a new catalog race to create it, and switching it to WAL
    or a read before the write lock can fail at once ("database is locked") where the busy
    timeout does not apply. Tried again for up to the busy timeout; other errors go up."""
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.05
    while True:
        try:
            upgrade(engine)
            return
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlite_errorcode", None)
            busy = isinstance(code, int) and code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
            if not (url.startswith("sqlite") and busy) or time.monotonic() > deadline:
                raise
            engine.dispose()  # (a connection left mid-pragma is not reused)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _cannot_open(url: str, exc: SQLAlchemyError) -> CatalogError:
    return CatalogError(
        f"cannot open catalog {make_url(url).render_as_string(hide_password=True)}: "
        f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}",
        hint="check the path/URL and that the database server is running",
    )
