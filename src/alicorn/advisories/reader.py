"""Reading the advisory store quickly, for the commands that only read it.

``alicorn scan`` and ``dnf list-security`` ask the store three things: how many advisories it
holds, which package types they cover, and which advisories name a given set of installed
packages.  On the embedded default (SQLite) those are three indexed queries, and SQLAlchemy's
import alone costs more than all of them together; so for an SQLite database already at the
schema revision this code expects, they run on the standard library's :mod:`sqlite3`,
read-only.  Any other database (PostgreSQL, or an SQLite file that needs migrating) is read
through :class:`~alicorn.advisories.store.AdvisoryStore`, which answers the same questions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from alicorn.advisories import codec
from alicorn.advisories.model import Advisory
from alicorn.errors import StoreError
from alicorn.inventory.model import Package
from alicorn.match.index import EcosystemCoverage, lookup_keys
from alicorn.store.schema import head_revision

__all__ = ["AdvisoryReader", "open_reader"]

# Parameters per IN (...): well under SQLite's limit.
_CHUNK = 500


class AdvisoryReader(Protocol):
    """What the reading commands ask of the advisory store."""

    def count(self) -> int:
        """How many advisories are stored."""

    def coverage(self) -> EcosystemCoverage:
        """Which package types the stored advisories cover."""

    def for_packages(self, packages: Iterable[Package]) -> list[Advisory]:
        """The advisories that name any of ``packages`` the way the matcher looks them up."""

    def all(self) -> Iterator[Advisory]:
        """Every stored advisory."""


def open_reader(url: str) -> AdvisoryReader:
    """A reader of the advisory store at the SQLAlchemy ``url``: the standard library's
    sqlite3 for an SQLite file at the current schema revision, else the full store (which
    creates or migrates the database first)."""
    path = _sqlite_path(url)
    if path is not None and path.is_file():
        try:
            reader = _SqliteReader(path, url)
        except sqlite3.Error:
            reader = None  # not at our revision, or not readable as such: the store decides
        if reader is not None:
            return reader
    from alicorn.advisories.store import AdvisoryStore
    return AdvisoryStore(url)


def _sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///PATH`` URL (no driver, no query); None for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.query or parts.netloc or not parts.path:
        return None
    path = unquote(parts.path)
    # sqlite:///relative and sqlite:////absolute, as SQLAlchemy reads them
    return Path(path[1:]) if path.startswith("/") else None


class _SqliteReader:
    def __init__(self, path: Path, url: str):
        self.url = url
        self._conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                                     timeout=30)
        row = self._conn.execute("SELECT version_num FROM alembic_version").fetchone()
        if row is None or row[0] != head_revision():
            self._conn.close()
            raise sqlite3.DatabaseError("not at the current schema revision")

    def _rows(self, sql: str, params: Iterable[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the advisory store: {e}", where=self.url) from e

    def count(self) -> int:
        return int(str(self._rows("SELECT count(*) FROM advisories")[0][0]))

    def coverage(self) -> EcosystemCoverage:
        rows = self._rows("SELECT DISTINCT kind, ecosystem FROM advisory_packages")
        return EcosystemCoverage(rpm=any(kind == "rpm" for kind, _ in rows),
                                 ecosystems=frozenset(str(e) for _, e in rows if e))

    def for_packages(self, packages: Iterable[Package]) -> list[Advisory]:
        keys = sorted(lookup_keys(packages))
        # Which advisories first, then each body once: an advisory naming many of the
        # packages is decoded once, not once per chunk of keys.
        wanted: set[tuple[str, str]] = set()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self._rows("SELECT DISTINCT advisory_id, advisory_format FROM "
                              f"advisory_packages WHERE lookup IN ({marks})", chunk)
            wanted.update((str(i), str(f)) for i, f in rows)
        ids = sorted({i for i, _ in wanted})
        found: dict[tuple[str, str], Advisory] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            for ident, fmt, body in self._rows(
                    f"SELECT id, format, body FROM advisories WHERE id IN ({marks})", chunk):
                if (ident, fmt) in wanted:
                    found[(str(ident), str(fmt))] = codec.loads(str(body))
        return [found[k] for k in sorted(found)]

    def all(self) -> Iterator[Advisory]:
        for (body,) in self._rows("SELECT body FROM advisories ORDER BY id, format"):
            yield codec.loads(str(body))
