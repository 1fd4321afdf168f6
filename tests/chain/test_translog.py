"""The transparency log's store: proofs from cached nodes, signed heads, tampering, concurrency."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from test_merkle import LEAVES, ROOTS, mth, path, proof

from alicorn.chain import merkle
from alicorn.chain.keys import KeyRing, SigningKey
from alicorn.chain.translog import (
    LogError,
    MalformedHead,
    SignedTreeHead,
    TransparencyLog,
    head_payload,
    sign_tree_head,
    verify_consistency,
    verify_head,
    verify_inclusion,
)
from alicorn.digest import Digest, canonical_json
from alicorn.errors import BadInput, NotFound


def record(i: int) -> bytes:
    return canonical_json({"_type": "test-record", "build": f"b{i:04d}",
                           "subject": str(Digest.of_bytes(b"%d" % i))})


def url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'log.db'}"


def raw(tmp: Path) -> sqlite3.Connection:
    """The database file opened the way an intruder would: sqlite3, around the application."""
    return sqlite3.connect(tmp / "log.db", isolation_level=None)


def drop_triggers(db: sqlite3.Connection) -> None:
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return KeyRing(tmp_path_factory.mktemp("keys")).current()


@pytest.fixture(scope="module")
def log64(tmp_path_factory: pytest.TempPathFactory) -> tuple[TransparencyLog, list[bytes]]:
    """64 entries: the RFC 6962 reference leaves, then records; appended one at a time."""
    tmp = tmp_path_factory.mktemp("log64")
    log = TransparencyLog(url(tmp))
    data = [*LEAVES, *(record(i) for i in range(8, 64))]
    for i, x in enumerate(data):
        assert log.append(x, kind="test", subject=f"s{i % 5}") == i
    return log, data


def fresh(tmp: Path, n: int) -> TransparencyLog:
    log = TransparencyLog(url(tmp))
    log.append_many((record(i), "build", f"sha256:{i:064x}") for i in range(n))
    return log


# -- proofs from the store ----------------------------------------------------------------------

def test_store_matches_the_reference_vectors(log64: tuple[TransparencyLog, list[bytes]]) -> None:
    log, _ = log64
    for size, want in enumerate(ROOTS):
        assert log.root(size) == want
    assert log.inclusion_proof(5, 8)[0].hex().startswith("bc1a0643")
    assert [h.hex()[:8] for h in log.consistency_proof(6, 8)] == ["0ebc5d34", "ca854ea1",
                                                                  "d37ee418"]


def test_every_inclusion_proof_up_to_64(log64: tuple[TransparencyLog, list[bytes]],
                                        key: SigningKey) -> None:
    log, data = log64
    for n in range(1, 65):
        root = log.root(n)
        assert root == mth(data[:n])
        head = sign_tree_head(n, root, key)
        for index in range(n):
            got = log.inclusion_proof(index, n)
            assert got == path(index, data[:n])
            verify_inclusion(data[index], index, got, head, public_key=key.public)


def test_every_consistency_proof_up_to_64(log64: tuple[TransparencyLog, list[bytes]],
                                          key: SigningKey) -> None:
    log, data = log64
    signed = [sign_tree_head(n, log.root(n), key) for n in range(65)]
    for new in range(65):
        for old in range(new + 1):
            got = log.consistency_proof(old, new)
            assert got == proof(old, data[:new])
            verify_consistency(signed[old], signed[new], got)


def test_reads(log64: tuple[TransparencyLog, list[bytes]]) -> None:
    log, data = log64
    assert log.size() == 64 and log.root() == mth(data)
    assert log.entry(9) == data[9]
    assert log.find("s3") == list(range(3, 64, 5)) and log.find("nothing") == []
    assert log.inclusion_proof(10) == path(10, data)
    assert log.consistency_proof(10) == proof(10, data)
    with pytest.raises(NotFound, match="no entry 64; it holds 64"):
        log.entry(64)
    with pytest.raises(BadInput, match="no tree of size 65"):
        log.root(65)
    with pytest.raises(BadInput, match="entry 8 is not in the tree of size 8"):
        log.inclusion_proof(8, 8)
    with pytest.raises(BadInput, match="size 9 does not precede the tree of size 8"):
        log.consistency_proof(9, 8)


def test_append_many_is_one_transaction(tmp_path: Path) -> None:
    log = fresh(tmp_path, 0)
    assert log.append_many([]) == range(0, 0)
    assert log.append_many((record(i), "build", None) for i in range(3)) == range(0, 3)
    with pytest.raises(BadInput, match="kind"):
        log.append_many([(record(3), "build", None), (record(4), "", None)])
    with pytest.raises(BadInput, match="bytes"):
        log.append("text", kind="build")  # type: ignore[arg-type]
    assert log.size() == 3
    assert log.append(record(3), kind="build") == 3


def test_batches_and_single_appends_make_one_tree(tmp_path: Path) -> None:
    data = [record(i) for i in range(300)]
    one = TransparencyLog(f"sqlite:///{tmp_path / 'one.db'}")
    for x in data[:37]:
        one.append(x, kind="build")
    one.append_many((x, "build", None) for x in data[37:290])
    # a second handle on the same file appends behind the first one's cached right edge
    TransparencyLog(f"sqlite:///{tmp_path / 'one.db'}").append_many(
        (x, "build", None) for x in data[290:299])
    one.append(data[299], kind="build")
    assert one.root() == merkle.root([merkle.leaf_hash(x) for x in data])
    assert one.check_integrity().tree_size == 300


# -- tree heads ---------------------------------------------------------------------------------

def test_signed_heads(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path / "keys")
    log = TransparencyLog(url(tmp_path), keys)
    assert log.latest_head() is None and log.heads() == []
    empty = log.sign_head()
    assert empty.tree_size == 0 and empty.root == merkle.EMPTY_ROOT
    log.append_many((record(i), "build", None) for i in range(40))
    head = log.sign_head()
    assert log.sign_head() == head                   # same size, same key: the kept head
    verify_head(head, keys.find(head.key_id))
    assert head.payload() == head_payload(40, head.root_hash, head.timestamp)
    assert head.payload() == (b'{"log":"alicorn","root_hash":"%s","timestamp":%d,"tree_size":40}'
                              % (head.root_hash.encode(), head.timestamp))
    log.append(record(40), kind="build")
    newer = log.sign_head()
    assert log.latest_head() == newer and log.heads() == [empty, head, newer]
    verify_consistency(head, newer, log.consistency_proof(40, 41), public_key=keys.find(
        head.key_id))
    # after a rotation the new key signs the same size; the old heads still verify
    rotated = log.sign_head(keys.rotate())
    assert rotated.tree_size == 41 and rotated.key_id != newer.key_id
    assert len(log.heads()) == 4 and log.check_integrity().heads_checked == 4


def test_head_json_round_trip_and_checks(tmp_path: Path, key: SigningKey) -> None:
    head = sign_tree_head(40, ROOTS[8], key)
    text = json.dumps(head.to_json())
    assert SignedTreeHead.from_json(text) == head
    assert SignedTreeHead.from_json(text.encode()) == head
    assert SignedTreeHead.from_json(head.to_json()) == head
    good = head.to_json()
    bad: list[tuple[Any, str]] = [
        ("{", "not JSON"), ("[]", "JSON object"),
        ({**good, "extra": 1}, "unknown fields extra"),
        ({k: v for k, v in good.items() if k != "signature"}, "no signature"),
        ({**good, "log": "other"}, "of the log 'other'"),
        ({**good, "tree_size": -1}, "tree_size"), ({**good, "tree_size": True}, "tree_size"),
        ({**good, "timestamp": 1.5}, "timestamp"),
        ({**good, "root_hash": good["root_hash"].upper()}, "root_hash"),
        ({**good, "key_id": "abc"}, "key_id"), ({**good, "signature": "!!"}, "base64"),
    ]
    for data, message in bad:
        with pytest.raises(MalformedHead, match=message):
            SignedTreeHead.from_json(data)


def test_a_head_signed_by_another_key_fails(tmp_path: Path, key: SigningKey) -> None:
    other = KeyRing(tmp_path / "other").current()
    head = sign_tree_head(40, ROOTS[8], key)
    forged = sign_tree_head(40, ROOTS[8], other)
    verify_head(head, key.public)
    with pytest.raises(LogError, match=r"tree head of size 40 is not signed by key "
                                       rf"{key.key_id[:16]}…: it names key {other.key_id[:16]}"):
        verify_head(forged, key.public)
    # the right key id, someone else's signature
    claimed = SignedTreeHead(40, forged.root_hash, forged.timestamp, key.key_id,
                             forged.signature)
    with pytest.raises(LogError, match=r"is not signed by key .*signature does not hold"):
        verify_head(claimed, key.public)
    # a signed head whose size or root was changed afterwards
    for altered in (SignedTreeHead(41, head.root_hash, head.timestamp, head.key_id,
                                   head.signature),
                    SignedTreeHead(40, ROOTS[7].hex(), head.timestamp, head.key_id,
                                   head.signature)):
        with pytest.raises(LogError, match="signature does not hold"):
            verify_head(altered, key.public)
    with pytest.raises(LogError, match="not signed by key"):
        verify_inclusion(LEAVES[0], 0, [], head, public_key=other.public)


# -- tampering ----------------------------------------------------------------------------------

def test_triggers_refuse_update_and_delete(tmp_path: Path, key: SigningKey) -> None:
    log = fresh(tmp_path, 10)
    log.sign_head(key)
    db = raw(tmp_path)
    for stmt in ("UPDATE translog_entries SET data = x'00' WHERE idx = 3",
                 "UPDATE translog_entries SET subject = 'x'",
                 "DELETE FROM translog_entries WHERE idx = 9",
                 "UPDATE translog_nodes SET hash = x'00'", "DELETE FROM translog_nodes",
                 "UPDATE translog_heads SET tree_size = 99", "DELETE FROM translog_heads"):
        with pytest.raises(sqlite3.IntegrityError, match="is append-only"):
            db.execute(stmt)
    assert log.check_integrity().tree_size == 10


def test_an_edited_entry_is_found(tmp_path: Path, key: SigningKey) -> None:
    log = fresh(tmp_path, 40)
    head = log.sign_head(key)
    original, evidence = log.entry(12), log.inclusion_proof(12, 40)
    db = raw(tmp_path)
    drop_triggers(db)
    flipped = original[:5] + bytes([original[5] ^ 1]) + original[6:]
    db.execute("UPDATE translog_entries SET data = ? WHERE idx = 12", (flipped,))
    edited = log.entry(12)
    assert edited != original and len(edited) == len(original)
    with pytest.raises(LogError, match="entry 12 was changed"):
        log.check_integrity()
    verify_inclusion(original, 12, evidence, head, public_key=key.public)
    with pytest.raises(LogError, match=r"entry 12 is not included in the tree of size 40 "
                                       rf"with root {head.root_hash[:16]}…"):
        verify_inclusion(edited, 12, log.inclusion_proof(12, 40), head, public_key=key.public)


def test_an_edit_that_also_rewrites_the_leaf_hash_is_found(tmp_path: Path,
                                                           key: SigningKey) -> None:
    log = fresh(tmp_path, 40)
    head = log.sign_head(key)
    db = raw(tmp_path)
    drop_triggers(db)
    forged = record(999)
    db.execute("UPDATE translog_entries SET data = ?, leaf_hash = ? WHERE idx = 13",
               (forged, merkle.leaf_hash(forged)))
    with pytest.raises(LogError, match="entries 12 to 13 do not hold together"):
        log.check_integrity()
    with pytest.raises(LogError, match="entry 13 is not included in the tree of size 40"):
        verify_inclusion(forged, 13, log.inclusion_proof(13, 40), head)


def test_a_deleted_entry_is_found(tmp_path: Path, key: SigningKey) -> None:
    log = fresh(tmp_path, 40)
    db = raw(tmp_path)
    drop_triggers(db)
    db.execute("DELETE FROM translog_entries WHERE idx = 17")
    with pytest.raises(LogError, match="entry 17 is missing: the entries jump from 16 to 18"):
        log.check_integrity()
    # deleted, and the rest moved down to close the gap
    db.execute("UPDATE translog_entries SET idx = -idx WHERE idx > 17")
    db.execute("UPDATE translog_entries SET idx = -idx - 1 WHERE idx < 0")
    with pytest.raises(LogError, match="entries 16 to 17 do not hold together"):
        log.check_integrity()


def test_a_truncated_log_is_found(tmp_path: Path, key: SigningKey) -> None:
    log = fresh(tmp_path, 40)
    log.sign_head(key)
    db = raw(tmp_path)
    drop_triggers(db)
    db.execute("DELETE FROM translog_entries WHERE idx >= 35")
    with pytest.raises(LogError, match="more level-1 subtree hashes than its 35 entries"):
        log.check_integrity()
    db.execute("DELETE FROM translog_nodes WHERE (idx + 1) << level > 35")
    with pytest.raises(LogError, match=r"signed a tree of size 40 .* holds only 35 entries"):
        log.check_integrity()


def test_a_rewritten_log_fails_consistency_with_an_earlier_head(tmp_path: Path,
                                                                 key: SigningKey) -> None:
    """A log that drops or reorders entries and re-signs cannot prove its old heads."""
    honest = fresh(tmp_path, 30)
    witnessed = SignedTreeHead.from_json(json.dumps(honest.sign_head(key).to_json()))
    data = [honest.entry(i) for i in range(30)]
    rewrites = {
        "deleted": [*data[:12], *data[13:]],
        "reordered": [*data[:12], data[13], data[12], *data[14:]],
        "edited": [*data[:12], record(12000), *data[13:]],
    }
    for name, entries in rewrites.items():
        other = TransparencyLog(f"sqlite:///{tmp_path / name}.db")
        more = map(record, range(100, 140 - len(entries)))
        other.append_many((x, "build", None) for x in [*entries, *more])
        new = other.sign_head(key)
        verify_head(new, key.public)                  # the new head itself is genuine
        with pytest.raises(LogError, match="tree of size 30 is not a prefix of the tree of "
                                           "size 40: the log was rewritten"):
            verify_consistency(witnessed, new, other.consistency_proof(30, 40),
                               public_key=key.public)
        # nor can it show the witnessed head a proof from the honest log
        with pytest.raises(LogError, match="not a prefix"):
            verify_consistency(witnessed, new, merkle.consistency_proof(
                30, 40, lambda s, e: honest.root(e) if s == 0 else merkle.EMPTY_ROOT))
    # the same size with another root is a fork
    forked = TransparencyLog(f"sqlite:///{tmp_path / 'fork'}.db")
    forked.append_many((x, "build", None) for x in rewrites["edited"])
    with pytest.raises(LogError, match="two tree heads of size 30 have different roots"):
        verify_consistency(witnessed, forked.sign_head(key), [])
    with pytest.raises(LogError, match="cannot be a prefix of the smaller"):
        verify_consistency(forked.sign_head(key), sign_tree_head(29, honest.root(29), key), [])


# -- concurrency --------------------------------------------------------------------------------

def _appender(database_url: str, who: str, count: int, ready: Any) -> None:
    log = TransparencyLog(database_url)
    ready.wait()            # both processes are up: now race
    for i in range(count):
        log.append(canonical_json({"by": who, "n": i}), kind="test", subject=who)
        # Between its appends a worker does other things. Without this pause one process
        # holds on to SQLite's lock, the other's busy handler backs off, and they barely mix.
        time.sleep(0.001)


def test_two_processes_append_concurrently(tmp_path: Path) -> None:
    log = TransparencyLog(url(tmp_path))           # tables and migrations exist before the race
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(2)
    procs = [ctx.Process(target=_appender, args=(url(tmp_path), who, 500, ready))
             for who in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    assert log.size() == 1000
    a, b = log.find("a"), log.find("b")
    assert len(a) == len(b) == 500 and sorted(a + b) == list(range(1000))
    by_a = set(a)
    order = ["a" if i in by_a else "b" for i in range(1000)]
    switches = sum(x != y for x, y in itertools.pairwise(order))
    assert switches >= 10, f"the appenders hardly ran together ({switches} switches)"
    assert [json.loads(log.entry(i))["n"] for i in a] == list(range(500))
    integrity = log.check_integrity()
    assert integrity.tree_size == 1000
    assert integrity.root_hash == merkle.root(
        [merkle.leaf_hash(log.entry(i)) for i in range(1000)]).hex()
