"""The advisory store: every imported advisory, in the project's database.

An advisory is keyed by ``(id, format)``: an id is unique within one feed's namespace, and two
feeds' records of the same advisory are both kept (see alicorn.store.advisory_models).  Each
row holds the whole advisory as canonical JSON (alicorn.advisories.codec) and its content
digest, so re-importing is cheap and exact:

* the same content again (whatever file it came from) is *unchanged* and not written;
* a version with a newer date (``updated``, else ``issued``) *replaces* the stored one; so does
  different content when either version lacks a date or both carry the same date (the later
  import wins: feeds fix a reference without touching the date);
* a version with an older date than the stored one is *skipped* and counted.

An import is one transaction: if anything fails half-way, nothing of it is written.  Rows are
written with executemany in chunks, so 100k advisories import in seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, delete, exists, func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from alicorn.advisories import codec
from alicorn.advisories.model import Advisory
from alicorn.errors import StoreError
from alicorn.inventory.model import Package
from alicorn.match.index import EcosystemCoverage, affected_key, lookup_keys
from alicorn.store.advisory_models import AdvisoryCveRow, AdvisoryPackageRow, AdvisoryRow
from alicorn.store.db import engine_for

_ADV = cast(Table, AdvisoryRow.__table__)
_PKG = cast(Table, AdvisoryPackageRow.__table__)
_CVE = cast(Table, AdvisoryCveRow.__table__)

# Rows per executemany, and ids per IN (...) look-up (SQLite allows 32766 parameters).
_CHUNK = 2000
_STREAM = 1000


@dataclass(frozen=True)
class ImportStats:
    """What one import did with each advisory it was given."""

    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    older_skipped: int = 0

    @property
    def read(self) -> int:
        return self.added + self.replaced + self.unchanged + self.older_skipped

    def __add__(self, other: ImportStats) -> ImportStats:
        return ImportStats(self.added + other.added, self.replaced + other.replaced,
                           self.unchanged + other.unchanged,
                           self.older_skipped + other.older_skipped)


@dataclass(frozen=True)
class _Prepared:
    key: tuple[str, str]
    advisory: Advisory
    body: str
    digest: str
    stamp: datetime | None


class AdvisoryStore:
    """The advisories in the database at ``url`` (an SQLAlchemy URL; migrated on open)."""

    def __init__(self, url: str):
        self.url = url
        self._engine = engine_for(url)

    # -- writing --------------------------------------------------------------------------------

    def import_advisories(self, advisories: Iterable[Advisory], *, source: str) -> ImportStats:
        """Store ``advisories`` (read from ``source``, a file or URL) in one transaction.

        Returns how many were added, replaced, unchanged, or skipped as older than the stored
        version.  Raises :class:`~alicorn.advisories.codec.CodecError` for a value that is not
        an advisory and :class:`StoreError` when the database fails; either way nothing of
        this import is written.
        """
        stats = ImportStats()
        imported_at = datetime.now(UTC).replace(tzinfo=None)
        try:
            with self._engine.begin() as conn:
                iterator = iter(advisories)
                while chunk := list(itertools.islice(iterator, _CHUNK)):
                    stats += self._import_chunk(conn, chunk, source=source,
                                                imported_at=imported_at)
        except SQLAlchemyError as e:
            raise StoreError(f"cannot write the advisories of {source}: {e}",
                             where=self.url) from e
        return stats

    def _import_chunk(self, conn: Connection, chunk: list[Advisory], *, source: str,
                      imported_at: datetime) -> ImportStats:
        prepared = [_prepare(a) for a in chunk]
        stored: dict[tuple[str, str], tuple[str, datetime | None]] = {}
        ids = sorted({p.key[0] for p in prepared})
        for i in range(0, len(ids), _CHUNK):
            rows = conn.execute(
                select(_ADV.c.id, _ADV.c.format, _ADV.c.digest, _ADV.c.updated, _ADV.c.issued)
                .where(_ADV.c.id.in_(ids[i:i + _CHUNK])))
            for row in rows:
                stored[(row.id, row.format)] = (row.digest, row.updated or row.issued)
        in_db = set(stored)

        added = replaced = unchanged = older = 0
        writes: dict[tuple[str, str], _Prepared] = {}
        for p in prepared:
            current = stored.get(p.key)
            if current is None:
                added += 1
            elif current[0] == p.digest:
                unchanged += 1
                continue
            elif p.stamp is not None and current[1] is not None and p.stamp < current[1]:
                older += 1
                continue
            else:
                replaced += 1
            stored[p.key] = (p.digest, p.stamp)
            writes[p.key] = p

        stale = [{"k_id": k[0], "k_format": k[1]} for k in writes if k in in_db]
        if stale:
            for table, id_col, fmt_col in ((_PKG, "advisory_id", "advisory_format"),
                                           (_CVE, "advisory_id", "advisory_format"),
                                           (_ADV, "id", "format")):
                conn.execute(delete(table).where(table.c[id_col] == bindparam("k_id"),
                                                 table.c[fmt_col] == bindparam("k_format")),
                             stale)
        if writes:
            conn.execute(_ADV.insert(), [_row(p, source, imported_at) for p in writes.values()])
            packages = [r for p in writes.values() for r in _package_rows(p)]
            if packages:
                conn.execute(_PKG.insert(), packages)
            cves = [r for p in writes.values() for r in _cve_rows(p)]
            if cves:
                conn.execute(_CVE.insert(), cves)
        return ImportStats(added, replaced, unchanged, older)

    # -- reading --------------------------------------------------------------------------------

    def all(self) -> Iterator[Advisory]:
        """Every stored advisory, ordered by id and format, streamed from the database."""
        yield from self._stream(select(_ADV.c.body).order_by(_ADV.c.id, _ADV.c.format))

    def __iter__(self) -> Iterator[Advisory]:
        return self.all()

    def count(self) -> int:
        """How many advisories are stored."""
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(_ADV)).scalar_one())
        except SQLAlchemyError as e:
            raise StoreError(f"cannot read the advisory store: {e}", where=self.url) from e

    def get(self, advisory_id: str, *, format: str | None = None) -> Advisory | None:
        """The advisory ``advisory_id`` (of feed ``format`` if given); None when not stored.

        When several feeds carry the id, the one dated latest (then by format) is returned;
        :meth:`search` with ``id=`` gives them all.
        """
        found = self.search(id=advisory_id, format=format)
        if not found:
            return None
        return max(found, key=lambda a: (_sort_stamp(a), a.format))

    def search(self, *, id: str | None = None, cve: str | None = None,
               package: str | None = None, ecosystem: str | None = None,
               type: str | None = None, format: str | None = None) -> list[Advisory]:
        """The advisories that satisfy every filter given, ordered by id and format.

        ``cve`` matches CVE references and aliases (case does not matter); ``package`` an RPM
        the advisory ships or an ecosystem package it affects; ``ecosystem`` (alone or with
        ``package``) the ecosystem of an affected package — ``Debian`` also matches
        ``Debian:12``.
        """
        query = select(_ADV.c.body)
        link_pkg = and_(_PKG.c.advisory_id == _ADV.c.id, _PKG.c.advisory_format == _ADV.c.format)
        if id is not None:
            query = query.where(_ADV.c.id == id)
        if format is not None:
            query = query.where(_ADV.c.format == format)
        if type is not None:
            query = query.where(_ADV.c.type == type)
        if cve is not None:
            query = query.where(exists().where(
                _CVE.c.advisory_id == _ADV.c.id, _CVE.c.advisory_format == _ADV.c.format,
                _CVE.c.cve == _cve_key(cve)))
        if package is not None or ecosystem is not None:
            conditions: list[Any] = [link_pkg]
            if package is not None:
                conditions.append(_PKG.c.name == package)
            if ecosystem is not None:
                conditions.append(or_(_PKG.c.ecosystem == ecosystem,
                                      _PKG.c.ecosystem.startswith(ecosystem + ":",
                                                                  autoescape=True)))
            query = query.where(exists().where(*conditions))
        return list(self._stream(query.order_by(_ADV.c.id, _ADV.c.format)))

    def coverage(self) -> EcosystemCoverage:
        """Which package types the stored advisories cover (rpm builds, and the ecosystems of
        affected packages), from the package index alone."""
        query = select(_PKG.c.kind, _PKG.c.ecosystem).distinct()
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as e:
            raise StoreError(f"cannot read the advisory store: {e}", where=self.url) from e
        return EcosystemCoverage(rpm=any(kind == "rpm" for kind, _ in rows),
                                 ecosystems=frozenset(e for kind, e in rows if e))

    def for_packages(self, packages: Iterable[Package]) -> list[Advisory]:
        """The advisories that name any of ``packages`` the way a scan matches them (an rpm
        by name, a deb by source package, PyPI names normalised, ...): everything the
        matcher could find for these packages, without reading the rest of the store."""
        keys = sorted(lookup_keys(packages))
        found: dict[tuple[str, str], Advisory] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            query = select(_ADV.c.body).where(exists().where(
                _PKG.c.advisory_id == _ADV.c.id, _PKG.c.advisory_format == _ADV.c.format,
                _PKG.c.lookup.in_(chunk)))
            for advisory in self._stream(query):
                found[(advisory.id, advisory.format)] = advisory
        return [found[k] for k in sorted(found)]

    def _stream(self, query: Any) -> Iterator[Advisory]:
        try:
            with self._engine.connect() as conn:
                result = conn.execution_options(yield_per=_STREAM).execute(query)
                for (body,) in result:
                    yield codec.loads(body)
        except SQLAlchemyError as e:
            raise StoreError(f"cannot read the advisory store: {e}", where=self.url) from e


# -- rows --------------------------------------------------------------------------------------


def _naive_utc(value: datetime | None) -> datetime | None:
    """The database keeps naive UTC; a naive date from a feed is taken to be UTC already."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _stamp(advisory: Advisory) -> datetime | None:
    return _naive_utc(advisory.updated or advisory.issued)


def _sort_stamp(advisory: Advisory) -> datetime:
    return _stamp(advisory) or datetime.min


def _cve_key(name: str) -> str:
    name = name.strip()
    return name.upper() if name.upper().startswith("CVE-") else name


def _prepare(advisory: Advisory) -> _Prepared:
    try:
        body, digest = codec.dumps_with_digest(advisory)
    except codec.CodecError as e:
        ident = getattr(advisory, "id", None)
        raise codec.CodecError(e.message, where=f"advisory {ident!r}" if ident else None,
                               hint="a feed reader produced a malformed advisory (a bug)") from e
    return _Prepared(key=(advisory.id, advisory.format), advisory=advisory, body=body,
                     digest=digest, stamp=_stamp(advisory))


def _row(p: _Prepared, source: str, imported_at: datetime) -> dict[str, Any]:
    a = p.advisory
    return {"id": a.id, "format": a.format, "type": a.type, "severity": a.severity,
            "issued": _naive_utc(a.issued), "updated": _naive_utc(a.updated),
            "withdrawn": _naive_utc(a.withdrawn), "source": source, "digest": p.digest,
            "body": p.body, "imported_at": imported_at}


def _package_rows(p: _Prepared) -> list[dict[str, Any]]:
    names: dict[tuple[str, str | None, str], str | None] = {}
    for ref in p.advisory.packages:
        names.setdefault(("rpm", None, ref.name), f"rpm:{ref.name}")
    for affected in p.advisory.affected:
        key = affected_key(affected)
        names.setdefault(("ecosystem", affected.ecosystem, affected.name),
                         f"{key[0]}:{key[1]}" if key else None)
    return [{"advisory_id": p.key[0], "advisory_format": p.key[1], "kind": kind,
             "ecosystem": ecosystem, "name": name, "lookup": lookup}
            for (kind, ecosystem, name), lookup in names.items()]




def _cve_rows(p: _Prepared) -> list[dict[str, Any]]:
    cves = dict.fromkeys(_cve_key(c) for c in p.advisory.cves if c.strip())
    return [{"advisory_id": p.key[0], "advisory_format": p.key[1], "cve": c} for c in cves]
