"""Opening the database: SQLite by default, anything SQLAlchemy speaks otherwise.

The schema is owned by Alembic; every open brings the database to the newest revision.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from alicorn.errors import StoreError, Unavailable
from alicorn.store.schema import head_revision

_engines: dict[str, Engine] = {}


def engine_for(url: str) -> Engine:
    if url in _engines:
        return _engines[url]
    try:
        # pre_ping: a connection the pool kept across a database restart is replaced, not
        # handed out to fail once.
        engine = create_engine(url, future=True,
                               pool_pre_ping=not url.startswith("sqlite"))
    except (SQLAlchemyError, ImportError) as e:
        hint = None
        if url.startswith("postgres:") or url.startswith("postgres+"):
            hint = "SQLAlchemy names PostgreSQL postgresql+psycopg://USER@HOST:PORT/DB"
        raise StoreError(f"cannot open the database {_shown(url)}: {e}",
                         where="ALICORN_DATABASE_URL", hint=hint) from e
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # Several processes (CLI, worker) share the file: WAL lets readers go on while
            # the worker writes, and the busy timeout turns lock contention into waiting.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    migrate(engine)
    _engines[url] = engine
    return engine


def _shown(url: str) -> str:
    """``url`` without its password."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "(an unreadable URL)"


def _fresh_engines_after_fork() -> None:
    """A process forked from one holding database connections (Celery's prefork pool forks
    from a worker whose janitor has some) must not use those sockets: it drops the inherited
    pools, without closing them under the parent, and opens its own."""
    for engine in list(_engines.values()):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_fresh_engines_after_fork)


def _current(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except SQLAlchemyError:
        return None
    return str(row[0]) if row else None


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema revision.

    Alembic is imported only when there is something to do: every command opens the database,
    and most find it at the newest revision already.
    """
    if _current(engine) == head_revision():
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("alicorn.store").joinpath("migrations")))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except OperationalError as e:
        if engine.dialect.name == "sqlite":
            raise StoreError(f"cannot migrate the database {engine.url!r}: {e.orig}") from e
        first = str(e.orig).strip().splitlines()[0] if str(e.orig).strip() else type(e).__name__
        raise Unavailable(f"the database {engine.url!r} cannot be reached: {first}",
                          where="ALICORN_DATABASE_URL",
                          hint="start it, or check the host, port and user in the URL") from e
    except SQLAlchemyError as e:
        raise StoreError(f"cannot migrate the database {engine.url!r}: {e}") from e


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)
