"""The transparency log: an append-only Merkle tree over every build record (RFC 9162 style).

Every sealed build record is appended as one entry; its leaf hash is ``SHA-256(0x00 || data)``
over the record's canonical JSON bytes, and the log's state is the Merkle Tree Hash of all
leaves (:mod:`alicorn.chain.merkle`).  The build service signs tree heads; anyone holding a
signed head and the service's public key can then check, with no database and no network:

- :func:`verify_head`: the head was signed by that key;
- :func:`verify_inclusion`: a record is entry ``i`` of the tree that head describes;
- :func:`verify_consistency`: an older head's tree is a prefix of a newer head's tree, i.e.
  nothing logged before was changed, removed or reordered since.

Witnesses keep heads (:meth:`SignedTreeHead.to_json`) and ask for consistency proofs; a log
that was rewritten cannot produce one.

Signed tree head payload
    The signature (ECDSA P-256 over SHA-256, DER, base64 in JSON) is over exactly the bytes of
    :func:`head_payload`: the canonical JSON (sorted keys, no spaces, UTF-8) of
    ``{"log": "alicorn", "root_hash": <64 lowercase hex>, "timestamp": <ms since the epoch>,
    "tree_size": <n>}``, e.g. ``{"log":"alicorn","root_hash":"5dc9…","timestamp":1795000000000,
    "tree_size":8}``.

Storage (own tables, in whatever database ``database_url`` names)
    ``translog_entries(idx, leaf_hash, data, kind, subject, created)``: one row per entry;
    ``translog_nodes(level, idx, hash)``: every *complete* subtree of two or more leaves, kept
    when its last leaf is appended (node ``(level, idx)`` covers leaves
    ``[idx * 2**level, (idx+1) * 2**level)``; level 0 is ``translog_entries.leaf_hash``);
    ``translog_heads(tree_size, key_id, root_hash, timestamp, signature)``.
    An append writes one entry and on average one node (at most ``log2 n``); a root or a proof
    reads O(log n) nodes in one or two queries.  Nothing is ever recomputed from all leaves,
    except by :meth:`TransparencyLog.check_integrity`, which exists to do exactly that.
    On SQLite, triggers abort any UPDATE or DELETE on the three tables; on PostgreSQL, a trigger
    function does the same (and refuses TRUNCATE).  Appenders serialise on ``BEGIN IMMEDIATE``
    (SQLite) or ``LOCK TABLE … IN EXCLUSIVE MODE`` (PostgreSQL; readers go on), and the entry
    index is the primary key, so two appenders can never both write one index.

``kind`` and ``subject`` are lookup columns only and are not hashed: whatever they say must also
be in the record itself, which is.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    func,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from alicorn.chain import merkle
from alicorn.chain.keys import KeyRing, PublicKey, SigningKey
from alicorn.digest import canonical_json
from alicorn.errors import EXIT_BAD_INPUT, BadInput, Error, NotFound, StoreError
from alicorn.store.db import engine_for

LOG_ID = "alicorn"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Rows per INSERT batch, and leaves per slice that check_integrity holds in memory (2**14).
_BATCH = 5000
_CHECK_LEVEL = 14


class LogError(Error):
    """A proof, a tree head or the log's own contents do not hold."""


class MalformedHead(LogError):
    """A tree head handed in (by a witness, a file) is not one."""

    exit_code = EXIT_BAD_INPUT


# -- tables -------------------------------------------------------------------------------------

metadata = MetaData()
# INTEGER PRIMARY KEY makes the index SQLite's rowid: no separate index, appends at the end.
_Index = BigInteger().with_variant(Integer(), "sqlite")

entries = Table(
    "translog_entries", metadata,
    Column("idx", _Index, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(256), nullable=True, index=True),
    Column("created", BigInteger, nullable=False),          # ms since the epoch
)
nodes = Table(
    "translog_nodes", metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    sqlite_with_rowid=False,
)
heads = Table(
    "translog_heads", metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    # One head per size per key: after a rotation the new key can sign the current size too.
    Column("key_id", String(64), primary_key=True),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("timestamp", BigInteger, nullable=False),         # ms since the epoch
    Column("signature", LargeBinary, nullable=False),
)
_TABLES = (entries, nodes, heads)
_SQLITE_INSERT = {
    t.name: f"INSERT INTO {t.name} ({', '.join(c.name for c in t.columns)}) "
            f"VALUES ({', '.join('?' for _ in t.columns)})"
    for t in (entries, nodes)
}


def create_schema(conn: Connection) -> None:
    """Create the log's tables and the triggers that make them append-only (idempotent).

    Called by the Alembic migration that introduces the log.
    """
    metadata.create_all(conn)
    triggers = {"sqlite": _sqlite_triggers,
                "postgresql": _postgresql_triggers}.get(conn.dialect.name)
    for stmt in triggers() if triggers else []:
        conn.execute(text(stmt))


def _sqlite_triggers() -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {t.name}_no_{op.lower()} BEFORE {op} ON {t.name} "
        f"BEGIN SELECT RAISE(ABORT, '{t.name} is append-only: {op} refused'); END"
        for t in _TABLES for op in ("UPDATE", "DELETE")
    ]


def _postgresql_triggers() -> list[str]:
    stmts = [
        "CREATE OR REPLACE FUNCTION translog_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP; END $$",
    ]
    for t in _TABLES:
        stmts.append(f"CREATE OR REPLACE TRIGGER {t.name}_append_only BEFORE UPDATE OR DELETE "
                     f"ON {t.name} FOR EACH ROW EXECUTE FUNCTION translog_append_only()")
        stmts.append(f"CREATE OR REPLACE TRIGGER {t.name}_no_truncate BEFORE TRUNCATE "
                     f"ON {t.name} FOR EACH STATEMENT EXECUTE FUNCTION translog_append_only()")
    return stmts


# -- signed tree heads --------------------------------------------------------------------------

def head_payload(tree_size: int, root_hash: str, timestamp: int) -> bytes:
    """The exact bytes a tree head's signature is over (see the module's docstring)."""
    return canonical_json({"log": LOG_ID, "tree_size": tree_size, "root_hash": root_hash,
                           "timestamp": timestamp})


def _is_base64(text: str) -> bool:
    try:
        return bool(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        return False


def _when(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(hex_hash: str) -> str:
    return f"{hex_hash[:16]}…"


@dataclass(frozen=True)
class SignedTreeHead:
    """The log's state at ``tree_size`` entries, signed by the build service's key ``key_id``."""

    tree_size: int
    root_hash: str          # 64 lowercase hex
    timestamp: int          # ms since the epoch, UTC
    key_id: str
    signature: str          # base64 of the DER ECDSA signature over payload()

    def payload(self) -> bytes:
        return head_payload(self.tree_size, self.root_hash, self.timestamp)

    @property
    def root(self) -> bytes:
        return bytes.fromhex(self.root_hash)

    def to_json(self) -> dict[str, Any]:
        """The head as a witness keeps it (``json.dumps`` it; :meth:`from_json` reads it)."""
        return {"log": LOG_ID, "tree_size": self.tree_size, "root_hash": self.root_hash,
                "timestamp": self.timestamp, "key_id": self.key_id,
                "signature": self.signature}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> SignedTreeHead:
        """Read a head from untrusted JSON (text or parsed); every field is checked.

        This checks the form only: call :func:`verify_head` to check the signature.
        """
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except ValueError as e:
                raise MalformedHead(f"a tree head is not JSON: {e}") from e
        if not isinstance(data, Mapping):
            raise MalformedHead("a tree head is a JSON object, not "
                                f"{type(data).__name__}")
        want = {"log", "tree_size", "root_hash", "timestamp", "key_id", "signature"}
        if set(data) != want:
            extra, missing = sorted(set(data) - want), sorted(want - set(data))
            raise MalformedHead(
                "a tree head has " + "; ".join(
                    [*([f"unknown fields {', '.join(extra)}"] if extra else []),
                     *([f"no {', '.join(missing)}"] if missing else [])]))
        if data["log"] != LOG_ID:
            raise MalformedHead(f"the tree head is of the log {data['log']!r}, not {LOG_ID!r}")
        for name in ("tree_size", "timestamp"):
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MalformedHead(f"a tree head's {name} must be a whole number ≥ 0, "
                                    f"not {value!r}")
        for name in ("root_hash", "key_id"):
            if not isinstance(data[name], str) or not _HEX64.fullmatch(data[name]):
                raise MalformedHead(f"a tree head's {name} must be 64 lowercase hex digits, "
                                    f"not {data[name]!r}")
        signature = data["signature"]
        if not isinstance(signature, str) or not _is_base64(signature):
            raise MalformedHead(f"a tree head's signature must be base64, not {signature!r}")
        return cls(tree_size=data["tree_size"], root_hash=data["root_hash"],
                   timestamp=data["timestamp"], key_id=data["key_id"], signature=signature)


def sign_tree_head(tree_size: int, root_hash: bytes, key: SigningKey,
                   timestamp: int | None = None) -> SignedTreeHead:
    """Sign the state ``(tree_size, root_hash)`` with ``key`` now (or at ``timestamp`` ms)."""
    ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp
    hex_root = root_hash.hex()
    signature = key.sign(head_payload(tree_size, hex_root, ts))
    return SignedTreeHead(tree_size, hex_root, ts, key.key_id,
                          base64.b64encode(signature).decode())


# -- offline verification -----------------------------------------------------------------------

def verify_head(head: SignedTreeHead, public_key: PublicKey) -> None:
    """Raise :class:`LogError` unless ``head`` carries a good signature by ``public_key``."""
    what = f"tree head of size {head.tree_size} is not signed by key {_short(public_key.key_id)}"
    if head.key_id != public_key.key_id:
        raise LogError(f"{what}: it names key {_short(head.key_id)}",
                       hint="verify it with the public key it names, if that key is trusted")
    try:
        signature = base64.b64decode(head.signature, validate=True)
    except (ValueError, binascii.Error) as e:
        raise LogError(f"{what}: its signature is not base64") from e
    if not public_key.verify(signature, head.payload()):
        raise LogError(f"{what}: the signature does not hold for its size, root and time",
                       hint="the head was altered, or signed by another key")


def verify_inclusion(entry: bytes, index: int, proof: Sequence[bytes], head: SignedTreeHead,
                     *, public_key: PublicKey | None = None) -> None:
    """Raise :class:`LogError` unless ``proof`` shows ``entry`` (the record's bytes) to be entry
    ``index`` of the tree ``head`` describes.

    This trusts ``head``: check it with :func:`verify_head` first, or pass ``public_key``.
    """
    if public_key is not None:
        verify_head(head, public_key)
    if not 0 <= index < head.tree_size:
        raise LogError(f"entry {index} is not in the tree of size {head.tree_size}, which holds "
                       f"entries 0 to {head.tree_size - 1}")
    if not merkle.verify_inclusion(merkle.leaf_hash(entry), index, head.tree_size, proof,
                                   head.root):
        raise LogError(f"entry {index} is not included in the tree of size {head.tree_size} "
                       f"with root {_short(head.root_hash)}",
                       hint="the entry's bytes, its index or the proof are not the logged ones")


def verify_consistency(old: SignedTreeHead, new: SignedTreeHead, proof: Sequence[bytes],
                       *, public_key: PublicKey | None = None) -> None:
    """Raise :class:`LogError` unless ``proof`` shows ``old``'s tree to be a prefix of ``new``'s.

    This trusts both heads: check them with :func:`verify_head` first, or pass ``public_key``.
    """
    if public_key is not None:
        verify_head(old, public_key)
        verify_head(new, public_key)
    if old.tree_size > new.tree_size:
        raise LogError(f"the tree of size {old.tree_size} cannot be a prefix of the smaller "
                       f"tree of size {new.tree_size}",
                       hint="pass the older head first; a log that shrank was rewritten")
    if old.tree_size == new.tree_size and old.root_hash != new.root_hash:
        raise LogError(f"two tree heads of size {old.tree_size} have different roots "
                       f"({_short(old.root_hash)} and {_short(new.root_hash)}): the log was "
                       "rewritten, or forked for different viewers")
    if not merkle.verify_consistency(old.tree_size, new.tree_size, old.root, new.root, proof):
        raise LogError(f"tree of size {old.tree_size} is not a prefix of the tree of size "
                       f"{new.tree_size}: the log was rewritten",
                       hint=f"root {_short(old.root_hash)} (signed {_when(old.timestamp)}) "
                            f"and root {_short(new.root_hash)} (signed "
                            f"{_when(new.timestamp)}) do not share their first "
                            f"{old.tree_size} entries, or the proof is not the log's")


# -- the store ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Integrity:
    """What :meth:`TransparencyLog.check_integrity` found to hold."""

    tree_size: int
    root_hash: str
    heads_checked: int


NewEntry = tuple[bytes, str, str | None]     # (data, kind, subject)


class TransparencyLog:
    """The log in the database at ``database_url``; ``keys`` sign heads and check them."""

    def __init__(self, database_url: str, keys: KeyRing | None = None):
        self.url = database_url
        self.keys = keys
        self.engine = engine_for(database_url)
        self.dialect = self.engine.dialect.name
        # The right edge of the tree at some size. The log only grows, so it stays right for
        # as long as the size is what it was; appending from here skips reading it back.
        self._frontier: merkle.Frontier | None = None
        # The tables and their triggers come with the database's migrations (engine_for ran
        # them): see create_schema and migration 0003.

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def _writing(self, *, lock: bool = True) -> Iterator[Connection]:
        """A transaction that holds the log's write lock from its first statement.

        pysqlite begins a transaction lazily, at the first write: two appenders would both read
        the same size first. BEGIN IMMEDIATE takes SQLite's write lock up front (waiting up to
        the busy timeout); PostgreSQL's EXCLUSIVE table lock stops other writers, not readers.
        """
        with self._connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE" if lock else "BEGIN")
            elif self.dialect == "postgresql" and lock:
                conn.execute(text(f"LOCK TABLE {entries.name} IN EXCLUSIVE MODE"))
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection; the database's own errors come out as :class:`StoreError`."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except IntegrityError as e:
            raise StoreError(f"the transparency log in {self.engine.url!r} refused a write: "
                             f"{e.orig}", hint="another process may have appended at the same "
                                               "time: try again") from e
        except SQLAlchemyError as e:
            raise StoreError(f"the transparency log in {self.engine.url!r} is unusable: {e}"
                             ) from e

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction: every query in it sees the same state of the log."""
        with self._connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN")
            elif self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            try:
                yield conn
            finally:
                conn.rollback()

    # -- reading --------------------------------------------------------------------------------
    @staticmethod
    def _size(conn: Connection) -> int:
        last = conn.execute(select(func.max(entries.c.idx))).scalar()
        return 0 if last is None else int(last) + 1

    @staticmethod
    def _hashes(conn: Connection, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The hashes of complete nodes ``(level, idx)``; level 0 are the entries' leaf hashes.

        One query of point lookups, written out as SQL: SQLite answers a row-value IN by
        scanning the table, and building the same OR of ANDs as SQLAlchemy expressions costs
        more than running it.  Every number in it went through int().
        """
        keys = {(int(level), int(i)) for level, i in keys}
        parts = []
        leaves = sorted(i for level, i in keys if level == 0)
        inner = sorted(k for k in keys if k[0] > 0)
        if leaves:
            parts.append(f"SELECT 0, idx, leaf_hash FROM {entries.name} "
                         f"WHERE idx IN ({', '.join(map(str, leaves))})")
        if inner:
            parts.append(f"SELECT level, idx, hash FROM {nodes.name} WHERE " + " OR ".join(
                f"(level = {level} AND idx = {i})" for level, i in inner))
        got: dict[tuple[int, int], bytes] = {}
        if parts:
            got.update(((int(level), int(i)), bytes(h)) for level, i, h in
                       conn.exec_driver_sql(" UNION ALL ".join(parts)))
        missing = sorted(keys - got.keys())
        if missing:
            level, i = missing[0]
            raise LogError(f"the log has lost the hash of its subtree at level {level}, "
                           f"index {i} (entries {i << level} to {((i + 1) << level) - 1})",
                           hint="run the log's integrity check: its tables were changed")
        return got

    def _ranges(self, conn: Connection, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The hashes of the subtrees ``[start, end)``, from one or two queries."""
        got = self._hashes(conn, (k for r in ranges for k in merkle.subtrees(*r)))
        return [merkle.range_hash(s, e, lambda level, i: got[level, i]) for s, e in ranges]

    def _root(self, conn: Connection, size: int) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        got = self._hashes(conn, merkle.subtrees(0, size))
        return merkle.tree_root(size, lambda level, i: got[level, i])

    def size(self) -> int:
        """How many entries the log holds."""
        with self._connect() as conn:
            return self._size(conn)

    def entry(self, index: int) -> bytes:
        """The bytes of entry ``index`` (a record's canonical JSON)."""
        with self._connect() as conn:
            data = conn.execute(select(entries.c.data).where(entries.c.idx == index)).scalar()
            if data is None:
                raise NotFound(f"the transparency log has no entry {index}; it holds "
                               f"{self._size(conn)} entries")
        return bytes(data)

    def find(self, subject: str) -> list[int]:
        """The indices of the entries about ``subject`` (e.g. an image digest), oldest first."""
        with self._connect() as conn:
            return [int(i) for i in conn.execute(
                select(entries.c.idx).where(entries.c.subject == subject)
                .order_by(entries.c.idx)).scalars()]

    def _check_size(self, conn: Connection, tree_size: int | None) -> int:
        size = self._size(conn)
        if tree_size is None:
            return size
        if not 0 <= tree_size <= size:
            raise BadInput(f"the transparency log has no tree of size {tree_size}: it holds "
                           f"{size} entries")
        return tree_size

    def root(self, size: int | None = None) -> bytes:
        """The Merkle tree hash of the first ``size`` entries (all when None)."""
        with self._connect() as conn:
            return self._root(conn, self._check_size(conn, size))

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """The audit path of entry ``index`` in the tree of ``tree_size`` entries (default: all)."""
        with self._connect() as conn:
            n = self._check_size(conn, tree_size)
            if not 0 <= index < n:
                raise BadInput(f"entry {index} is not in the tree of size {n}")
            return self._ranges(conn, merkle.inclusion_path(index, n))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The proof that the tree of ``old_size`` entries is a prefix of that of ``new_size``."""
        with self._connect() as conn:
            n = self._check_size(conn, new_size)
            if not 0 <= old_size <= n:
                raise BadInput(f"a tree of size {old_size} does not precede the tree of size {n}")
            return self._ranges(conn, merkle.consistency_path(old_size, n))

    # -- appending ------------------------------------------------------------------------------
    def append(self, data: bytes, *, kind: str, subject: str | None = None) -> int:
        """Append one entry (a record's canonical JSON bytes); returns its index."""
        return self.append_many([(data, kind, subject)]).start

    def append_many(self, items: Iterable[NewEntry]) -> range:
        """Append ``(data, kind, subject)`` entries in one transaction; returns their indices.

        All or none are appended, at consecutive indices.  Batches of thousands are what this
        is for: the tree's right edge is read once, and rows go in by ``executemany``.
        """
        try:
            with self._writing() as conn:
                size = self._size(conn)
                frontier = self._frontier_at(conn, size)
                now = time.time_ns() // 1_000_000
                new_entries: list[tuple[Any, ...]] = []
                new_nodes: list[tuple[Any, ...]] = []
                for data, kind, subject in items:
                    _check_entry(data, kind, subject)
                    leaf = merkle.leaf_hash(data)
                    new_entries.append((frontier.size, leaf, data, kind, subject, now))
                    new_nodes.extend(frontier.append(leaf))
                    if len(new_entries) >= _BATCH:
                        self._insert(conn, new_entries, new_nodes)
                self._insert(conn, new_entries, new_nodes)
        except BaseException:
            self._frontier = None
            raise
        self._frontier = frontier
        return range(size, frontier.size)

    @staticmethod
    def _insert(conn: Connection, new_entries: list[tuple[Any, ...]],
                new_nodes: list[tuple[Any, ...]]) -> None:
        """Insert rows given as tuples in the tables' column order."""
        for table, rows in ((entries, new_entries), (nodes, new_nodes)):
            if not rows:
                continue
            if conn.dialect.name == "sqlite":
                # The driver's executemany with plain tuples: SQLAlchemy's per-value processing
                # would take more than half the time of a bulk append.
                conn.exec_driver_sql(_SQLITE_INSERT[table.name], rows)
            else:
                names = [c.name for c in table.columns]
                conn.execute(table.insert(), [dict(zip(names, r, strict=True)) for r in rows])
            rows.clear()

    def _frontier_at(self, conn: Connection, size: int) -> merkle.Frontier:
        cached = self._frontier
        self._frontier = None
        if cached is not None and cached.size == size:
            return cached
        keys = merkle.frontier_nodes(size)
        got = self._hashes(conn, keys)
        return merkle.Frontier(size, [got[k] for k in keys])

    # -- tree heads -----------------------------------------------------------------------------
    def sign_head(self, signing_key: SigningKey | None = None) -> SignedTreeHead:
        """Sign the log's current state (with the keyring's current key by default) and keep it.

        Signing again at an unchanged size with the same key gives back the head it signed.
        """
        if signing_key is None:
            if self.keys is None:
                raise LogError("cannot sign a tree head: this log was opened without keys")
            signing_key = self.keys.current()
        with self._writing() as conn:
            size = self._size(conn)
            kept = conn.execute(select(heads).where(heads.c.tree_size == size,
                                                    heads.c.key_id == signing_key.key_id)).first()
            if kept is not None:
                return _head_of(kept._mapping)
            head = sign_tree_head(size, self._root(conn, size), signing_key)
            conn.execute(heads.insert().values(
                tree_size=head.tree_size, key_id=head.key_id, root_hash=head.root,
                timestamp=head.timestamp, signature=base64.b64decode(head.signature)))
        return head

    def latest_head(self) -> SignedTreeHead | None:
        """The head of the largest tree signed (the newest of those), or None."""
        with self._connect() as conn:
            row = conn.execute(select(heads).order_by(heads.c.tree_size.desc(),
                                                      heads.c.timestamp.desc()).limit(1)).first()
        return None if row is None else _head_of(row._mapping)

    def head_covering(self, index: int) -> SignedTreeHead | None:
        """The first head signed over a tree holding entry ``index`` (the head signed when it
        was appended), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(heads).where(heads.c.tree_size > index)
                               .order_by(heads.c.tree_size, heads.c.timestamp).limit(1)).first()
        return None if row is None else _head_of(row._mapping)

    def heads(self) -> list[SignedTreeHead]:
        """Every head the log signed, by size, then time."""
        with self._connect() as conn:
            rows = conn.execute(select(heads).order_by(heads.c.tree_size, heads.c.timestamp))
            return [_head_of(r._mapping) for r in rows]

    # -- integrity ------------------------------------------------------------------------------
    def check_integrity(self) -> Integrity:
        """Recompute every leaf hash from the stored data, every subtree and the root from the
        leaves, and check them against the stored hashes and the signed heads.

        Raises :class:`LogError` naming the first entry that does not hold: one edited, deleted,
        inserted or moved by someone who went around the triggers.  With ``keys``, every stored
        head's signature is checked too.  Reads all entries, in slices of 16384.
        """
        with self._snapshot() as conn:
            n = self._size(conn)
            first = conn.execute(select(func.min(entries.c.idx))).scalar()
            if first is not None and first != 0:
                raise LogError(f"the log's first entry has index {first}, not 0: entries "
                               f"were removed or renumbered")
            edge_keys = set(merkle.frontier_nodes(n))
            edge: dict[tuple[int, int], bytes] = {}
            chunk = 1 << _CHECK_LEVEL
            tops: list[bytes] = []
            for start in range(0, n, chunk):
                leaves = self._check_leaves(conn, start, min(start + chunk, n))
                top = self._check_levels(conn, leaves, 0, start, _CHECK_LEVEL, edge_keys, edge)
                if top is not None:
                    tops.append(top)
            self._check_levels(conn, tops, _CHECK_LEVEL, 0, 64, edge_keys, edge)
            for level, count in conn.execute(select(nodes.c.level, func.count())
                                             .group_by(nodes.c.level)):
                if count > n >> level:
                    raise LogError(f"the log holds more level-{level} subtree hashes than its "
                                   f"{n} entries make: entries were removed from its end")
            root = merkle.tree_root(n, lambda level, i: edge[level, i])
            checked = self._check_heads(conn, n)
        return Integrity(n, root.hex(), checked)

    @staticmethod
    def _check_leaves(conn: Connection, start: int, end: int) -> list[bytes]:
        rows = conn.execute(select(entries.c.idx, entries.c.leaf_hash, entries.c.data)
                            .where(entries.c.idx >= start, entries.c.idx < end)
                            .order_by(entries.c.idx))
        leaves: list[bytes] = []
        for idx, stored, data in rows:
            expected = start + len(leaves)
            if idx != expected:
                raise LogError(f"entry {expected} is missing: the entries jump from "
                               f"{expected - 1} to {idx}")
            if not isinstance(data, bytes | bytearray | memoryview):
                raise LogError(f"entry {idx} was changed: its data is stored as "
                               f"{type(data).__name__}, not bytes")
            leaf = merkle.leaf_hash(bytes(data))
            if leaf != bytes(stored):
                raise LogError(f"entry {idx} was changed: its data no longer hashes to the "
                               f"leaf hash it was logged with")
            leaves.append(leaf)
        if len(leaves) != end - start:
            raise LogError(f"entry {start + len(leaves)} is missing")
        return leaves

    @staticmethod
    def _check_levels(conn: Connection, hashes: list[bytes], level: int, start: int,
                      top_level: int, edge_keys: set[tuple[int, int]],
                      edge: dict[tuple[int, int], bytes]) -> bytes | None:
        """Recompute the complete nodes above ``hashes`` (level ``level``, the first at leaf
        ``start``) up to ``top_level``, checking each against the stored one.  Returns the hash
        at ``top_level`` when the slice is complete."""
        cur = hashes
        while True:
            first = start >> level
            for i, h in enumerate(cur):
                if (level, first + i) in edge_keys:
                    edge[level, first + i] = h
            if level == top_level or len(cur) < 2:
                break
            cur = [merkle.node_hash(cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
            level += 1
            first = start >> level
            stored = {int(i): bytes(h) for i, h in conn.execute(
                select(nodes.c.idx, nodes.c.hash)
                .where(nodes.c.level == level, nodes.c.idx >= first,
                       nodes.c.idx < first + len(cur)))}
            for i, h in enumerate(cur):
                if stored.get(first + i) != h:
                    lo, hi = (first + i) << level, ((first + i + 1) << level) - 1
                    what = "is missing" if first + i not in stored else "does not match them"
                    raise LogError(f"entries {lo} to {hi} do not hold together: the stored hash "
                                   f"of their subtree (level {level}) {what}: an entry among "
                                   "them was changed, removed or reordered")
        return cur[0] if level == top_level and len(cur) == 1 else None

    def _check_heads(self, conn: Connection, n: int) -> int:
        rows = conn.execute(select(heads).order_by(heads.c.tree_size, heads.c.timestamp)).all()
        for row in rows:
            head = _head_of(row._mapping)
            if head.tree_size > n:
                raise LogError(f"the log signed a tree of size {head.tree_size} "
                               f"({_when(head.timestamp)}) but holds only {n} entries: "
                               "entries were removed")
            if self._root(conn, head.tree_size) != head.root:
                raise LogError(f"the tree head of size {head.tree_size} signed "
                               f"{_when(head.timestamp)} does not match the entries: the first "
                               f"{head.tree_size} entries were changed after it was signed")
            if self.keys is not None:
                verify_head(head, self.keys.find(head.key_id))
        return len(rows)


def _head_of(row: Mapping[Any, Any]) -> SignedTreeHead:
    return SignedTreeHead(tree_size=int(row["tree_size"]), root_hash=bytes(row["root_hash"]).hex(),
                          timestamp=int(row["timestamp"]), key_id=row["key_id"],
                          signature=base64.b64encode(bytes(row["signature"])).decode())


def _check_entry(data: Any, kind: Any, subject: Any) -> None:
    if not isinstance(data, bytes):
        raise BadInput(f"a log entry is bytes (a record's canonical JSON), not "
                       f"{type(data).__name__}")
    if not isinstance(kind, str) or not 0 < len(kind) <= 64:
        raise BadInput(f"a log entry's kind is a name of 1 to 64 characters, not {kind!r}")
    if subject is not None and (not isinstance(subject, str) or len(subject) > 256):
        raise BadInput(f"a log entry's subject is at most 256 characters, not {subject!r}")
