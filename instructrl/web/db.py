"""Engines, sessions and migrations. SQLite (the default) gets WAL, a busy timeout and
`BEGIN IMMEDIATE` transactions so concurrent writers queue instead of failing; PostgreSQL is
used as it is (`postgresql+psycopg://user:password@host/db`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

from instructrl.errors import UserError

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # one connection per process: SQLite has one writer at a time anyway, and queueing in
        # the pool is fair where SQLite's busy handler polls with sleeps (long latency tails)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None  # let the "begin" hook below open transactions
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:
            # a deferred transaction that later writes can fail with "database is locked" when
            # another writer got there first; taking the write lock up front makes them queue
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    raise UserError(
        f"db: expected sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST/DB, got {url!r}"
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back on any error."""
    with factory() as session, session.begin():
        yield session


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def check_schema(engine: Engine, *, create_if_empty: bool = True) -> None:
    """A new, empty database is created at the newest schema; an older schema is refused with
    the command that upgrades it (migrating a database in use should be a deliberate step)."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None and not inspect(engine).get_table_names() and create_if_empty:
        upgrade(engine)
        return
    raise UserError(
        f"db: {engine.url.render_as_string(hide_password=True)} is at schema revision "
        f"{current or 'none'}, expected {head}; run `instructrl db upgrade db=...` first"
    )
