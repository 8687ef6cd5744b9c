"""Open a catalog by URL or path: engine set-up (SQLite WAL + busy timeout) and migrations.

A command that only reads opens with ``create=False``: it never creates a catalog (a SQLite file
that does not exist, a database without modelsafe's schema is an error) and writes nothing to one
whose schema is current, so a read-only file, folder or mount still reads. Every opening refuses
a database that holds another application's tables, and one a newer modelsafe wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
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
    rest = url[len("sqlite:///") :].split("?", 1)[0]
    if rest.startswith("file:"):
        from urllib.parse import unquote

        rest = rest[len("file:") :]
        if rest.startswith("//"):  # (file://host/path, file:///path: the host is left out)
            rest = rest[rest.find("/", 2) :] if rest.find("/", 2) >= 0 else ""
        rest = unquote(rest)
    return rest


def shown_url(url: str) -> str:
    """``url`` as messages show it: a SQLite one as written (SQLAlchemy would escape the ``:``
    of ``file:``), another one without its password."""
    if url.startswith("sqlite"):
        return url
    return make_url(url).render_as_string(hide_password=True)


def _psycopg3_only() -> bool:
    from importlib.util import find_spec

    return find_spec("psycopg2") is None and find_spec("psycopg") is not None


def _is_readonly(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == SQLITE_READONLY


def _sqlite_connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Connect as SQLAlchemy would; where SQLite cannot read the file at all because it may not
    create the WAL index beside it (a WAL catalog in a folder this user may not write, on a
    read-only mount: "attempt to write a readonly database"), open it read-only and immutable
    instead: nothing can write to it then, and what a command reads is the file as it is."""
    connect = dialect.loaded_dbapi.connect
    connection = connect(*cargs, **cparams)
    try:
        connection.execute("PRAGMA journal_mode").fetchone()  # (reads the header: WAL or not)
    except dialect.loaded_dbapi.OperationalError as exc:
        connection.close()
        if not _is_readonly(exc) or not cargs:
            raise
        immutable = _immutable_uri(str(cargs[0]), bool(cparams.get("uri")))
        return connect(immutable, **{**cparams, "uri": True})
    return connection


def _immutable_uri(database: str, uri: bool) -> str:
    """An SQLite URI opening ``database`` (a path, or an SQLite URI when ``uri``) read-only and
    immutable."""
    from urllib.parse import parse_qsl, quote, urlencode

    if uri and database.startswith("file:"):
        base, _, query = database.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
    else:
        base, params = "file:" + quote(os.path.abspath(database)), {}
    params.update(mode="ro", immutable="1")
    return f"{base}?{urlencode(params)}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy say when transactions begin (see _sqlite_begin), not the sqlite3 module.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
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


def _json_serializer(value: Any) -> str:
    """JSON columns as JSON: a float that is not finite (NaN from a file's metadata) is stored
    as null. (PostgreSQL refuses ``NaN`` in a json value; SQLite would keep text no other
    JSON reader takes.)"""
    from modelsafe.output import finite_json

    return json.dumps(finite_json(value), allow_nan=False)


def create_catalog_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            json_serializer=_json_serializer,
        )
        event.listen(engine, "do_connect", _sqlite_connect)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, json_serializer=_json_serializer)


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
    shown = sqlite_path(url) if sqlite else shown_url(url)
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


class NoCatalogError(CatalogError):
    """A command that only reads was pointed at a catalog that does not exist (yet)."""


class CatalogSchemaError(CatalogError):
    """The database holds no modelsafe catalog this version can use: another application's
    tables, a newer modelsafe's schema, or an older one that cannot be upgraded (read-only)."""


NO_CATALOG_HINT = (
    "`modelsafe scan DIR` creates it; --catalog PATH|URL or MODELSAFE_CATALOG (or `catalog` in "
    "the config file) chooses another"
)


def open_catalog(
    value: str | os.PathLike[str], *, migrate: bool = True, create: bool = True
) -> Catalog:
    """Open the catalog at a URL or path, bringing its schema to this modelsafe's.

    ``create`` (commands that write: scan, set): a SQLite file that does not exist is created
    and an empty database given the schema. Without it (commands that only read) either is a
    :class:`NoCatalogError`, and nothing is written where the schema is current. ``migrate``
    False: the engine only (no schema check).
    """
    url = catalog_url(value)
    if url.startswith("sqlite:///"):
        _check_sqlite_file(url, create)
    try:
        engine = create_catalog_engine(url)
        if migrate:
            _when_free(lambda: _bring_schema(engine, url, create), engine, url)
    except ImportError as exc:  # the URL's database driver is not installed
        shown = make_url(url)
        raise CatalogError(
            f"cannot open catalog {shown_url(url)}: its database driver is not installed ({exc})",
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


def _check_sqlite_file(url: str, create: bool) -> None:
    path = sqlite_path(url)
    if path in ("", ":memory:"):
        return
    if not create:
        if not os.path.exists(path):
            raise NoCatalogError(f"no catalog at {path}", hint=NO_CATALOG_HINT)
        if os.path.isdir(path):
            raise CatalogError(
                f"{path} is a folder, not a catalog file", hint="pass --catalog with the file"
            )
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise CatalogError(
            f"folder {parent} for the catalog does not exist",
            hint="create it, or pass --catalog with another path",
        )


@cache
def _revisions() -> tuple[str, list[str]]:
    """This modelsafe's newest schema revision and every one it knows, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    known = [r.revision for r in script.walk_revisions()][::-1]
    head = script.get_current_head()
    assert head is not None
    return head, known


def _schema_state(engine: Engine) -> tuple[str | None, list[str]]:
    """The database's schema revision (None: no modelsafe schema) and its tables."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
        tables = sorted(inspect(connection).get_table_names())
    return revision, tables


def _bring_schema(engine: Engine, url: str, create: bool) -> None:
    """Check the schema and migrate it to the newest revision where it is older (or absent and
    ``create``); a current one is left alone (nothing written)."""
    revision, tables = _schema_state(engine)
    head, known = _revisions()
    if revision == head:
        if create:
            _use_wal(engine)
        return
    shown = sqlite_path(url) if url.startswith("sqlite:///") else shown_url(url)
    ours = "models" in tables
    if (revision is None and tables and not ours) or (revision not in (None, *known) and not ours):
        listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise CatalogSchemaError(
            f"{shown} is not a modelsafe catalog: it holds other tables ({listed})",
            hint="pass --catalog with a modelsafe catalog, or a new file or empty database "
            "for a new one (`modelsafe scan DIR` creates it)",
        )
    if revision is not None and revision not in known:
        raise CatalogSchemaError(
            f"this catalog was written by a newer modelsafe (schema revision {revision}; this "
            f"one knows up to {head}): {shown}",
            hint="upgrade modelsafe (pip install -U modelsafe) to read it, or pass --catalog "
            "with another catalog",
        )
    if revision is None and not create:
        raise NoCatalogError(f"no catalog in {shown} yet: it is empty", hint=NO_CATALOG_HINT)
    try:
        upgrade(engine)
        _use_wal(engine)
    except DBAPIError as exc:
        if revision is None or refused_write(exc, url) is None:
            raise
        raise CatalogSchemaError(
            f"the catalog {shown} has the schema of an older modelsafe (revision {revision}; "
            f"this one needs {head}) and cannot be upgraded: it is read-only",
            hint="run any modelsafe command once where the catalog may be written (that "
            "upgrades it), or read it with the modelsafe version that wrote it",
        ) from exc


def _use_wal(engine: Engine) -> None:
    """Switch a SQLite catalog to WAL (once: the mode stays in the file), after its schema was
    found to be modelsafe's (another application's database is not touched). Done by commands
    that write; one that only reads leaves the file as it is, and a file that may not be
    written keeps its mode (its first write says it is read-only)."""
    if engine.dialect.name != "sqlite":
        return
    from sqlalchemy.exc import OperationalError

    connection = engine.raw_connection()  # (no transaction: the mode cannot change in one)
    statement = "PRAGMA journal_mode"
    try:
        cursor = connection.cursor()
        (mode,) = cursor.execute(statement).fetchone()
        if str(mode).lower() != "wal":
            statement = "PRAGMA journal_mode=WAL"
            cursor.execute(statement)
        cursor.close()
    except engine.dialect.loaded_dbapi.Error as exc:
        if not _is_readonly(exc):  # ("database is locked": as SQLAlchemy's, to be waited out)
            raise OperationalError(statement, {}, exc) from exc
    finally:
        connection.close()


SQLITE_BUSY, SQLITE_LOCKED = 5, 6


def _when_free(step: Callable[[], None], engine: Engine, url: str) -> None:
    """``step`` (the schema check and :func:`upgrade`), waiting out another process that holds
    the SQLite file at that moment: two commands started at once on a new catalog race to
    create it, and switching it to WAL or a read before the write lock can fail at once
    ("database is locked") where the busy timeout does not apply. Tried again for up to the
    busy timeout; other errors go up."""
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.05
    while True:
        try:
            step()
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
        f"cannot open catalog {shown_url(url)}: "
        f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}",
        hint="check the path/URL and that the database server is running",
    )
