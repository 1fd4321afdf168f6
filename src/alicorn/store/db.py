"""Opening the database: SQLite by default, anything SQLAlchemy speaks otherwise.

The schema is owned by Alembic; every open brings the database to the newest revision.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from alicorn.errors import StoreError
from alicorn.store.schema import head_revision

_engines: dict[str, Engine] = {}


def engine_for(url: str) -> Engine:
    if url in _engines:
        return _engines[url]
    try:
        engine = create_engine(url, future=True)
    except (SQLAlchemyError, ImportError) as e:
        raise StoreError(f"cannot open the database {url}: {e}") from e
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
    except SQLAlchemyError as e:
        raise StoreError(f"cannot migrate the database {engine.url!r}: {e}") from e


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)
