"""What the transparency log costs at a million entries, next to recomputing from all leaves.

    .venv/bin/python bench/translog_bench.py [--entries N] [--batch B] [--samples S] [--out FILE]

In a fresh temporary directory, one SQLite-backed :class:`TransparencyLog`:

append       N - 1000 build-record-like entries (about 300 bytes of canonical JSON each) by
             ``append_many`` in batches of B, then 1000 single ``append`` calls (one transaction
             and one commit each, as the worker does once per build); only the calls are timed,
             not making the records
disk         the database file after a WAL checkpoint, per entry
root         ``root()`` from the cached nodes, against the naive baseline: read every leaf hash
             and fold the whole tree (``merkle.root``)
inclusion    S random entries: generate the proof at size N from the store, then verify it
             offline against the signed head; the naive baseline builds the proof from all N
             leaf hashes held in memory (only --naive-samples of those: each is a whole-tree pass)
consistency  S random old sizes: the same, proving the old size's tree a prefix of size N
sign         ``sign_head`` at size N (root, signature, row), the bare signature, and
             ``verify_head``
integrity    ``check_integrity``: every leaf rehashed from its data, every node and the root
             recomputed, the heads checked: the full recomputation, for scale

Prints a table and writes every figure to a JSON file (default
``bench/results/translog-<UTC time>.json``; ``bench/results/`` is git-ignored).  Exits 0 when
done, 1 when a proof failed to verify, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from alicorn.chain import merkle
from alicorn.chain.keys import KeyRing
from alicorn.chain.translog import (
    LogError,
    TransparencyLog,
    entries,
    sign_tree_head,
    verify_consistency,
    verify_head,
    verify_inclusion,
)
from alicorn.digest import canonical_json

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SINGLE_APPENDS = 1000


def make_record(i: int) -> tuple[bytes, str, str]:
    """A stand-in for a sealed build record: its shape and size, not its content."""
    subject = f"sha256:{i:064x}"
    data = canonical_json({
        "_type": "alicorn.build-record/v1", "build": f"{i:032x}", "state": "done",
        "subject": subject, "recipe": {"name": "pony", "digest": f"sha256:{i * 7:064x}"},
        "packages": i % 97,
    })
    return data, "build-record", subject


def stats(seconds: list[float]) -> dict[str, float]:
    """Median, p99 and max, in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return {"median_ms": round(statistics.median(ms), 4), "p99_ms": round(p99, 4),
            "max_ms": round(ms[-1], 4), "n": len(ms)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def progress(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n, rng = args.entries, random.Random(args.seed)
    db_path = tmp / "log.db"
    log = TransparencyLog(f"sqlite:///{db_path}", KeyRing(tmp / "keys"))
    key = KeyRing(tmp / "keys").current()
    out: dict[str, Any] = {}

    # -- append ---------------------------------------------------------------------------------
    bulk_n = max(0, n - SINGLE_APPENDS)
    spent = 0.0
    t_wall = time.perf_counter()
    for start in range(0, bulk_n, args.batch):
        batch = [make_record(i) for i in range(start, min(start + args.batch, bulk_n))]
        t0 = time.perf_counter()
        log.append_many(batch)
        spent += time.perf_counter() - t0
        if (start // args.batch) % 20 == 0:
            progress(f"appended {start + len(batch):,} ({(start + len(batch)) / spent:,.0f}/s)")
    log.sign_head(key)          # warm: the timed sign_head below is not the first statement
    singles = []
    for i in range(bulk_n, n):
        data, kind, subject = make_record(i)
        t0 = time.perf_counter()
        log.append(data, kind=kind, subject=subject)
        singles.append(time.perf_counter() - t0)
    assert log.size() == n
    out["append"] = {
        "bulk_entries": bulk_n, "batch": args.batch, "bulk_seconds": round(spent, 3),
        "bulk_entries_per_s": round(bulk_n / spent) if spent else None,
        "wall_seconds_with_record_making": round(time.perf_counter() - t_wall, 3),
        "single_append": stats(singles),
    }
    progress(f"appended {n:,}: {out['append']}")

    # -- disk -----------------------------------------------------------------------------------
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        tables = {}
        try:
            for name, size in db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                if name.startswith(("translog", "ix_translog", "sqlite_autoindex_translog")):
                    tables[name] = size
        except sqlite3.OperationalError:      # SQLite built without the dbstat table
            pass
        node_rows = db.execute("SELECT count(*) FROM translog_nodes").fetchone()[0]
    disk = sum(p.stat().st_size for p in tmp.glob("log.db*"))
    out["disk"] = {"bytes": disk, "bytes_per_entry": round(disk / n, 1),
                   "node_rows": node_rows, "tables": tables}

    # -- root: cached against naive -------------------------------------------------------------
    cached = [timed(log.root)[0] for _ in range(100)]
    root = log.root()

    def naive_root() -> bytes:
        with log.engine.connect() as conn:
            leaves = [bytes(h) for h in conn.execute(
                select(entries.c.leaf_hash).order_by(entries.c.idx)).scalars()]
        return merkle.root(leaves)

    naive_runs = []
    for _ in range(args.naive_samples):
        seconds, naive = timed(naive_root)
        naive_runs.append(seconds)
        if naive != root:
            raise LogError("the naive root differs from the log's root")
    out["root"] = {"cached": stats(cached), "naive_all_leaves": stats(naive_runs)}
    progress(f"root: {out['root']}")

    # -- sign -----------------------------------------------------------------------------------
    sign_seconds, head = timed(lambda: log.sign_head(key))
    bare = [timed(lambda: sign_tree_head(n, root, key))[0] for _ in range(args.samples)]
    check = [timed(lambda: verify_head(head, key.public))[0] for _ in range(args.samples)]
    out["sign"] = {"sign_head_at_n_ms": round(sign_seconds * 1000, 3),
                   "signature_only": stats(bare), "verify_head": stats(check)}
    progress(f"sign: {out['sign']}")

    # -- inclusion ------------------------------------------------------------------------------
    gen, ver, total = [], [], []
    for index in (rng.randrange(n) for _ in range(args.samples)):
        entry = log.entry(index)       # the verifier holds the record; not timed
        t0 = time.perf_counter()
        proof = log.inclusion_proof(index, n)
        t1 = time.perf_counter()
        verify_inclusion(entry, index, proof, head)
        t2 = time.perf_counter()
        gen.append(t1 - t0)
        ver.append(t2 - t1)
        total.append(t2 - t0)
    out["inclusion"] = {"generate": stats(gen), "verify": stats(ver), "total": stats(total),
                        "proof_hashes": len(proof)}

    # -- consistency ----------------------------------------------------------------------------
    olds = [rng.randrange(1, n) for _ in range(args.samples)]
    old_heads = {old: sign_tree_head(old, log.root(old), key) for old in olds}  # not timed
    gen, ver, total = [], [], []
    for old in olds:
        t0 = time.perf_counter()
        proof = log.consistency_proof(old, n)
        t1 = time.perf_counter()
        verify_consistency(old_heads[old], head, proof)
        t2 = time.perf_counter()
        gen.append(t1 - t0)
        ver.append(t2 - t1)
        total.append(t2 - t0)
    out["consistency"] = {"generate": stats(gen), "verify": stats(ver), "total": stats(total)}
    progress(f"inclusion: {out['inclusion']['total']}, consistency: "
             f"{out['consistency']['total']}")

    # -- naive proofs: from all N leaf hashes in memory -----------------------------------------
    with log.engine.connect() as conn:
        leaves = [bytes(h) for h in conn.execute(
            select(entries.c.leaf_hash).order_by(entries.c.idx)).scalars()]

    def whole(start: int, end: int) -> bytes:
        return merkle.root(leaves[start:end])

    naive_inc, naive_con = [], []
    for _ in range(args.naive_samples):
        index, old = rng.randrange(n), rng.randrange(1, n)
        t0 = time.perf_counter()
        proof = merkle.inclusion_proof(index, n, whole)
        naive_inc.append(time.perf_counter() - t0)
        if proof != log.inclusion_proof(index, n):
            raise LogError(f"the naive inclusion proof of entry {index} differs from the log's")
        t0 = time.perf_counter()
        proof = merkle.consistency_proof(old, n, whole)
        naive_con.append(time.perf_counter() - t0)
        if proof != log.consistency_proof(old, n):
            raise LogError(f"the naive consistency proof from size {old} differs from the log's")
    out["naive_proofs"] = {"inclusion": stats(naive_inc), "consistency": stats(naive_con)}

    # -- integrity ------------------------------------------------------------------------------
    seconds, integrity = timed(log.check_integrity)
    if integrity.root_hash != root.hex():
        raise LogError("check_integrity recomputed another root")
    out["check_integrity_seconds"] = round(seconds, 3)
    progress(f"check_integrity: {seconds:.2f} s")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--naive-samples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=9162)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.entries <= SINGLE_APPENDS:
        parser.error(f"--entries must be above {SINGLE_APPENDS}")
    tmp = Path(tempfile.mkdtemp(prefix="translog-bench-"))
    try:
        results = run(args, tmp)
    except KeyboardInterrupt:
        return 130
    except LogError as e:
        print(f"translog_bench: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["run"] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "entries": args.entries,
        "samples": args.samples, "naive_samples": args.naive_samples,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
    }
    out = args.out or RESULTS / f"translog-{datetime.now(UTC):%Y-%m-%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nresults: {out}")
    return 0


def print_table(r: dict[str, Any]) -> None:
    a, d = r["append"], r["disk"]
    print(f"\n{r['run']['entries']:,} entries, {r['run']['machine']}, "
          f"SQLite {r['run']['sqlite']}")
    print(f"append_many ({a['batch']:,}/batch)   {a['bulk_entries_per_s']:>12,} entries/s   "
          f"({a['bulk_seconds']} s for {a['bulk_entries']:,})")
    s = a["single_append"]
    print(f"append (one per commit)    median {s['median_ms']} ms, p99 {s['p99_ms']} ms")
    print(f"disk                       {d['bytes'] / 2**20:,.1f} MiB, "
          f"{d['bytes_per_entry']} B/entry, {d['node_rows']:,} node rows")
    print(f"\n{'':28}{'median ms':>12}{'p99 ms':>12}   naive (all leaves) median ms")
    rows = [
        ("root", r["root"]["cached"], r["root"]["naive_all_leaves"]),
        ("inclusion gen+verify", r["inclusion"]["total"], r["naive_proofs"]["inclusion"]),
        ("  generate", r["inclusion"]["generate"], None),
        ("  verify", r["inclusion"]["verify"], None),
        ("consistency gen+verify", r["consistency"]["total"], r["naive_proofs"]["consistency"]),
        ("  generate", r["consistency"]["generate"], None),
        ("  verify", r["consistency"]["verify"], None),
        ("signature only", r["sign"]["signature_only"], None),
        ("verify_head", r["sign"]["verify_head"], None),
    ]
    for name, st, naive in rows:
        extra = f"{naive['median_ms']:>14,.1f}" if naive else ""
        print(f"{name:28}{st['median_ms']:>12.3f}{st['p99_ms']:>12.3f}{extra}")
    print(f"sign_head at size N        {r['sign']['sign_head_at_n_ms']} ms")
    print(f"check_integrity            {r['check_integrity_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
