"""Scale-out on one machine: N small builds on 1, 2 and 4 Celery workers, beside the embedded
default, and the queue's latency beside a bare Celery task on the same Redis.

    .venv/bin/python bench/cluster_bench.py [--builds N] [--workers 1,2,4] [--concurrency 2,4]
                                            [--latency K] [--quick] [--out FILE] [--keep]

In a fresh temporary directory: a PostgreSQL and a Redis (:mod:`alicorn.cluster.compose`), a
registry (``alicorn registry start``, as tests/cluster/conftest.py starts it), and the RPM pony's
package repository (``examples/pony/rpm/build-repo``), built once.  Every build is the RPM pony
under an image name of its own, ``--skip-checks --no-cache`` (about 2 s of work here), submitted
from a submitter's home holding no key: with the real CLI (``alicorn build --no-wait``) in the
latency phases, in-process through the same dispatcher and Submission in the throughput phases
(the CLI's ~0.7 s Python start-up per build would otherwise be what a makespan measures).

warm-up      each worker home builds one image first (its signing keys, its dnf cache), and so
             does the embedded default's home; not measured
latency      K builds, one at a time, on one idle worker: created_at (the row, written by the
             submitter) to started_at (the claim), from the database; each is then cancelled
             and waited for, so the worker is idle again for the next.  The same on the embedded
             default (its local worker polls the database every 0.3 s)
noop         the peer of the latency: a bare Celery application on the same Redis (another
             database number), the same acks_late/prefetch settings, one prefork worker and a
             task that returns the time it started: send to start, and send to result (result
             backend: that Redis)
workers=W    W ``alicorn worker`` processes (concurrency 1, each its own ALICORN_HOME) ; N builds:
             makespan from the first submit to the last build's finished_at, builds/min, the
             builds' own durations, the peak of PostgreSQL connections, and the database
             transactions and Redis commands of the phase, net of the idle rate measured
             before it (per build)
concurrency  one worker process with ``--concurrency C`` (prefork pool), N builds, the same
local        the peer: the embedded default (SQLite, the local worker, one build at a time),
             the same N builds, the same registry

Prints a table and writes every figure to a JSON file (default
``bench/results/cluster-<UTC time>.json``; ``bench/results/`` is git-ignored).  Every process it
started is stopped at the end, whatever happened.  Exits 0 when done, 1 when a build did not end
done, 2 when a tool is missing, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alicorn.cluster.compose import Postgres, Redis, start_postgres, start_redis
from alicorn.store.builds import DONE, FINAL, BuildStore
from alicorn.store.models import BuildRow

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
ALICORN = [sys.executable, "-m", "alicorn"]
TOOLS = ("redis-server", "docker-registry", "rpmbuild", "createrepo_c", "dnf", "busybox")


class BenchError(Exception):
    pass


def progress(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def utcnow() -> datetime:
    """The store's clock: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"median": round(statistics.median(v), 4), "min": round(v[0], 4),
            "max": round(v[-1], 4), "n": len(v)}


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class Bed:
    """Everything the bench started, so that ``close`` can stop it all."""

    root: Path
    postgres: Postgres | None = None
    redis: Redis | None = None
    registry: str | None = None
    procs: list[Proc] = field(default_factory=list)
    local_homes: list[Path] = field(default_factory=list)

    @property
    def registry_home(self) -> Path:
        return self.root / "homes" / "registry"

    @property
    def env(self) -> dict[str, str]:
        assert self.postgres and self.redis and self.registry
        return {"ALICORN_DATABASE_URL": self.postgres.url, "ALICORN_QUEUE": "celery",
                "ALICORN_BROKER_URL": self.redis.url, "ALICORN_REGISTRY": self.registry}

    def local_env(self) -> dict[str, str]:
        assert self.registry
        return {"ALICORN_QUEUE": "local", "ALICORN_REGISTRY": self.registry}

    def home(self, name: str) -> Path:
        path = self.root / "homes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cli(self, home: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> str:
        proc = subprocess.run([*ALICORN, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "ALICORN_HOME": str(home),
                                   **(self.env if env is None else env)})
        if proc.returncode != 0:
            raise BenchError(f"alicorn {' '.join(args)} exited {proc.returncode}: "
                             f"{proc.stderr.strip()[-1500:]}")
        return proc.stdout.strip()

    def spawn(self, name: str, argv: list[str], env: dict[str, str], *,
              cwd: Path | None = None, ready: bytes = b" ready.") -> Proc:
        log = self.root / f"{name}.log"
        out = open(log, "ab")  # noqa: SIM115 (the process's)
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
        out.close()
        p = Proc(name, proc, log)
        self.procs.append(p)
        deadline = time.monotonic() + 90
        while ready not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        return p

    def start_worker(self, name: str, *args: str) -> Proc:
        home = self.home(name)
        return self.spawn(name, [*ALICORN, "worker", *args],
                          {"ALICORN_HOME": str(home), **self.env})

    def stop_workers(self) -> None:
        for p in self.procs:
            p.stop()
        self.procs = [p for p in self.procs if p.proc.poll() is None]

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        for home in self.local_homes:
            subprocess.run([*ALICORN, "down"], capture_output=True, timeout=120, check=False,
                           env={**os.environ, "ALICORN_HOME": str(home), **self.local_env()})
        if self.registry:
            subprocess.run([*ALICORN, "registry", "stop"], capture_output=True, timeout=60,
                           check=False, env={**os.environ, "ALICORN_HOME": str(
                               self.registry_home), "ALICORN_QUEUE": "local"})
            port = self.registry.rsplit(":", 1)[1]
            with contextlib.suppress(OSError):
                Path(f"/etc/containers/registries.conf.d/50-alicorn-127.0.0.1-{port}.conf"
                     ).unlink()
        if self.redis:
            self.redis.stop()
        if self.postgres:
            self.postgres.remove()


# -- counters: what the database and the broker did ------------------------------------------

# The bench's own transactions on the shared database (its counters and its polling), taken
# off the phases' figures: autocommit statements end as commits, read sessions as rollbacks.
OWN = {"xact_commit": 0, "xact_rollback": 0}


def pg_dsn(pg: Postgres) -> str:
    return pg.url.replace("postgresql+psycopg://", "postgresql://")


def pg_counters(pg: Postgres) -> dict[str, int]:
    import psycopg

    OWN["xact_commit"] += 1
    with psycopg.connect(pg_dsn(pg), autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, "
            "tup_updated, tup_deleted FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    names = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
             "tup_updated", "tup_deleted")
    return dict(zip(names, (int(v) for v in row), strict=True))


def pg_connections(pg: Postgres) -> int:
    import psycopg

    OWN["xact_commit"] += 1
    with psycopg.connect(pg_dsn(pg), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND backend_type = 'client backend'").fetchone()
    return int(row[0]) - 1 if row else 0     # not this one


def redis_counters(redis: Redis) -> dict[str, int]:
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    try:
        info = client.info("stats")
        commands = client.info("commandstats")
    finally:
        client.close()
    out = {"commands": int(info["total_commands_processed"]),
           "net_input_bytes": int(info["total_net_input_bytes"]),
           "net_output_bytes": int(info["total_net_output_bytes"])}
    for name, value in commands.items():
        out[name.removeprefix("cmdstat_")] = int(value["calls"])
    return out


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def settle_pg_stats() -> None:
    """PostgreSQL 15's backends flush their statistics at most once a second, and an idle one
    within ten: wait for them before reading the counters."""
    time.sleep(11)


# -- submitting and waiting ------------------------------------------------------------------

@dataclass
class Pony:
    dir: Path

    def recipe(self, name: str) -> Path:
        text = (self.dir / "pony.yaml").read_text().replace("name: pony-rpm", f"name: {name}", 1)
        path = self.dir / f"{name}.yaml"
        path.write_text(text)
        return path


def submit(bed: Bed, home: Path, recipe: Path, env: dict[str, str] | None = None) -> str:
    return bed.cli(home, "build", str(recipe), "--no-wait", "--skip-checks", "--no-cache",
                   env=env).splitlines()[-1].strip()


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment for a while (the settings and the local
    dispatcher, which may start a worker, read it)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Submitter:
    """What ``alicorn build RECIPE --no-wait --skip-checks --no-cache`` does, in this process
    (the CLI's Python start-up, ~0.7 s here, would otherwise be what the makespan measures):
    the same Submission, through the same dispatcher."""

    def __init__(self, home: Path, env: dict[str, str]):
        from alicorn.cluster.dispatch import dispatcher_for
        from alicorn.config import load_settings

        self.env = {"ALICORN_HOME": str(home), **env}
        for k in ("ALICORN_DATABASE_URL", "ALICORN_BROKER_URL"):
            self.env.setdefault(k, "")
        with environment(self.env):
            self.settings = load_settings(home)
            self.store = BuildStore(self.settings.database_url)
            self.dispatcher = dispatcher_for(self.settings, self.store)

    def __call__(self, recipe: Path) -> str:
        from alicorn.store.builds import Submission

        argv = ["build", str(recipe), "--no-wait", "--skip-checks", "--no-cache"]
        sub = Submission(argv=argv, source_kind="file", recipe_path=str(recipe.resolve()),
                         recipe_content=recipe.read_text(),
                         options={"no_cache": True, "no_push": False, "compression_level": 1,
                                  "skip_checks": True})
        with environment(self.env):
            return self.dispatcher.submit(sub).id


def wait_final(store: BuildStore, url: str, ids: list[str], timeout: float,
               sample: Any = None) -> dict[str, BuildRow]:
    from sqlalchemy import select

    from alicorn.store.db import session_factory

    sessions = session_factory(url)
    deadline = time.monotonic() + timeout
    while True:
        # One read transaction a turn (the store's latest_attempt would be one per build).
        with sessions() as s:
            found = {r.id: r for r in s.scalars(select(BuildRow).where(BuildRow.id.in_(ids)))}
        OWN["xact_rollback"] += 1
        rows = {b: store.latest_attempt(b) if found[b].retried_as else found[b] for b in ids}
        if all(r.state in FINAL for r in rows.values()):
            return rows
        if time.monotonic() > deadline:
            raise BenchError("builds not final: " + ", ".join(
                f"{b}={r.state}" for b, r in rows.items()))
        if sample is not None:
            sample()
        time.sleep(0.25)


def check_done(rows: dict[str, BuildRow], what: str) -> None:
    bad = {b: (r.state, r.error) for b, r in rows.items() if r.state != DONE}
    if bad:
        raise BenchError(f"{what}: builds did not end done: {bad}")


def throughput(bed: Bed, pony: Pony, store: BuildStore, submitter: Submitter, tag: str,
               n: int, *, cluster: bool = True,
               idle_window: float = 10.0) -> dict[str, Any]:
    """N builds submitted one after the other; their makespan and what they cost."""
    assert bed.postgres and bed.redis
    recipes = [pony.recipe(f"pony-{tag}-{i}") for i in range(n)]
    idle: dict[str, Any] = {}
    if cluster:
        settle_pg_stats()
        pg0, r0, t0 = pg_counters(bed.postgres), redis_counters(bed.redis), time.monotonic()
        time.sleep(idle_window)
        settle_pg_stats()
        spent = time.monotonic() - t0
        idle_pg = delta(pg_counters(bed.postgres), pg0)
        idle = {"seconds": round(spent, 1),
                "pg_xact_per_s": round(idle_pg.get("xact_commit", 0) / spent, 2),
                "pg_read_xact_per_s": round(idle_pg.get("xact_rollback", 0) / spent, 2),
                "redis_commands_per_s": round(delta(redis_counters(bed.redis), r0)
                                              .get("commands", 0) / spent, 2)}
        pg_before, redis_before = pg_counters(bed.postgres), redis_counters(bed.redis)
        own_before = dict(OWN)
    peak = [0]

    def sample() -> None:
        if cluster:
            assert bed.postgres
            peak[0] = max(peak[0], pg_connections(bed.postgres))

    start_wall, start = utcnow(), time.monotonic()
    submit_seconds = []
    ids = []
    for r in recipes:
        t = time.monotonic()
        ids.append(submitter(r))
        submit_seconds.append(time.monotonic() - t)
        sample()
    rows = wait_final(store, submitter.settings.database_url, ids, timeout=120 + 60 * n,
                      sample=sample)
    wall = time.monotonic() - start
    check_done(rows, tag)
    end = max(r.finished_at for r in rows.values() if r.finished_at)
    makespan = (end - start_wall).total_seconds()
    durations = [(r.finished_at - r.started_at).total_seconds() for r in rows.values()
                 if r.finished_at and r.started_at]
    waits = [(r.started_at - r.created_at).total_seconds() for r in rows.values()
             if r.started_at]
    out: dict[str, Any] = {
        "builds": n, "makespan_s": round(makespan, 2), "wall_s": round(wall, 2),
        "builds_per_min": round(60 * n / makespan, 2),
        "build_duration_s": stats(durations), "queued_s": stats(waits),
        "submit_s": stats(submit_seconds),
        "workers_seen": len({":".join((r.worker or "").split(":")[:2]) for r in rows.values()}),
        "attempts_above_1": sum(1 for r in rows.values() if r.attempt != 1),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    if cluster:
        assert bed.postgres and bed.redis
        settle_pg_stats()
        spent = time.monotonic() - start
        pg = delta(pg_counters(bed.postgres), pg_before)
        rd = delta(redis_counters(bed.redis), redis_before)
        own = {k: OWN[k] - own_before[k] for k in OWN}
        net_xact = pg.get("xact_commit", 0) - own["xact_commit"] - idle["pg_xact_per_s"] * spent
        net_reads = pg.get("xact_rollback", 0) - own["xact_rollback"] - \
            idle["pg_read_xact_per_s"] * spent
        net_cmds = rd.get("commands", 0) - idle["redis_commands_per_s"] * spent
        out.update({
            "idle": idle, "pg_peak_connections": peak[0], "pg": pg, "redis": rd,
            "bench_own_pg": own,
            "per_build": {
                "pg_xact": round(net_xact / n, 1),
                "pg_read_xact": round(net_reads / n, 1),
                "pg_rows_inserted": round(pg.get("tup_inserted", 0) / n, 1),
                "pg_rows_updated": round(pg.get("tup_updated", 0) / n, 1),
                "redis_commands": round(net_cmds / n, 1),
                "redis_lpush": round(rd.get("lpush", 0) / n, 2),
            },
            "pg_xact_per_s_running": round(pg.get("xact_commit", 0) / spent, 1),
        })
    return out


def latency(bed: Bed, pony: Pony, store: BuildStore, url: str, home: Path, tag: str, k: int, *,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """K builds one at a time on an idle pool: created_at to started_at; each is cancelled
    once it started, and waited for."""
    samples, submits = [], []
    for i in range(k):
        recipe = pony.recipe(f"pony-{tag}-{i}")
        t = time.monotonic()
        build_id = submit(bed, home, recipe, env=env)
        submits.append(time.monotonic() - t)
        deadline = time.monotonic() + 60
        while (row := store.get(build_id)).started_at is None and row.state not in FINAL:
            if time.monotonic() > deadline:
                raise BenchError(f"{tag}: build {build_id} not claimed within 60 s "
                                 f"({row.state})")
            time.sleep(0.05)
        if row.started_at is None:
            raise BenchError(f"{tag}: build {build_id} ended unclaimed: {row.error}")
        samples.append((row.started_at - row.created_at).total_seconds())
        with contextlib.suppress(Exception):    # it may have ended already
            store.request_cancel(build_id, "cluster-bench")
        wait_final(store, url, [build_id], timeout=120)
        time.sleep(1)
    return {"submit_to_claim_ms": stats([s * 1000 for s in samples]),
            "submit_cli_s": stats(submits)}


NOOP_APP = '''
import os, time
from celery import Celery

app = Celery("noop", broker=os.environ["NOOP_BROKER"], backend=os.environ["NOOP_BACKEND"])
app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True,
                worker_prefetch_multiplier=1, task_serializer="json",
                result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True)


@app.task(name="noop")
def noop(sent):
    return {"started": time.time(), "sent": sent}
'''


def noop_latency(bed: Bed, k: int) -> dict[str, Any]:
    """The broker's own cost: a bare Celery task's send-to-start and round trip."""
    assert bed.redis
    base = bed.redis.url.rsplit("/", 1)[0]
    broker, backend = f"{base}/2", f"{base}/3"
    d = bed.root / "noop"
    d.mkdir(exist_ok=True)
    (d / "noop_app.py").write_text(NOOP_APP)
    env = {"NOOP_BROKER": broker, "NOOP_BACKEND": backend, "PYTHONPATH": str(d)}
    worker = bed.spawn("noop-worker", [sys.executable, "-m", "celery", "-A", "noop_app",
                                       "worker", "--pool=prefork", "--concurrency=1", "-Q",
                                       "noop", "--without-gossip", "--without-mingle",
                                       "--loglevel=INFO"], env, cwd=d)
    from celery import Celery
    app = Celery("noop-client", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    one_way, round_trip = [], []
    try:
        app.send_task("noop", args=[time.time()], queue="noop").get(timeout=30)  # warm
        for _ in range(k):
            time.sleep(0.5)     # idle again, as a build's submit finds the pool
            sent = time.time()
            answer = app.send_task("noop", args=[sent], queue="noop").get(timeout=30)
            round_trip.append((time.time() - sent) * 1000)
            one_way.append((answer["started"] - sent) * 1000)
    finally:
        worker.stop()
        bed.procs.remove(worker)
    return {"send_to_start_ms": stats(one_way), "round_trip_ms": stats(round_trip)}


def _seal_cycles(url: str, keys: str, n: int, start_at: float) -> list[float]:
    """In a process of its own (a builder): ``n`` times what sealing does to the log per
    record (``Sealer.seal``: one append, then one signed head), timed each."""
    from alicorn.chain.keys import KeyRing
    from alicorn.chain.translog import TransparencyLog
    from alicorn.digest import canonical_json

    log = TransparencyLog(url, KeyRing(Path(keys)))
    key = KeyRing(Path(keys)).current()
    pid = os.getpid()
    while time.time() < start_at:
        time.sleep(0.01)
    spent = []
    for i in range(n):
        data = canonical_json({"_type": "alicorn.build-record/v1", "build": f"{pid:08x}{i:024x}",
                               "state": "done", "subject": f"sha256:{pid:032x}{i:032x}"})
        t0 = time.perf_counter()
        log.append(data, kind="build", subject=f"sha256:{pid:032x}{i:032x}")
        log.sign_head(key)
        spent.append(time.perf_counter() - t0)
    return spent


def translog_lock(bed: Bed, cycles: int, writers: list[int]) -> dict[str, Any]:
    """How many append + sign-head cycles a second the log's write lock lets through on this
    PostgreSQL, from 1..P writer processes at once; with fsync off (the test bed's setting)
    and on (a real server's)."""
    import multiprocessing

    import psycopg

    assert bed.postgres
    with psycopg.connect(pg_dsn(bed.postgres), autocommit=True) as conn:
        conn.execute("CREATE DATABASE translog_bench")
    url = bed.postgres.url.rsplit("/", 1)[0] + "/translog_bench"
    keys = bed.root / "translog-keys"
    from alicorn.chain.keys import KeyRing
    from alicorn.chain.translog import TransparencyLog
    TransparencyLog(url, KeyRing(keys)).sign_head(KeyRing(keys).current())   # migrate, key
    out: dict[str, Any] = {}
    ctx = multiprocessing.get_context("spawn")
    for fsync in ("off", "on"):
        with psycopg.connect(pg_dsn(bed.postgres), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET fsync = {fsync}")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        for p in writers:
            with ctx.Pool(p) as pool:
                start_at = time.time() + 3      # the processes' imports are not timed
                t0 = start_at
                jobs = [pool.apply_async(_seal_cycles, (url, str(keys), cycles, start_at))
                        for _ in range(p)]
                spent = [s for j in jobs for s in j.get(timeout=600)]
                wall = time.time() - t0
            out[f"fsync={fsync},writers={p}"] = {
                "cycles": len(spent), "cycles_per_s": round(len(spent) / wall, 1),
                "cycle_ms": stats([s * 1000 for s in spent])}
            progress(f"  translog fsync={fsync} writers={p}: "
                     f"{out[f'fsync={fsync},writers={p}']['cycles_per_s']} cycles/s")
    with psycopg.connect(pg_dsn(bed.postgres), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM RESET fsync")
        conn.execute("SELECT pg_reload_conf()")
    return out


# -- the run ---------------------------------------------------------------------------------

def run(args: argparse.Namespace, bed: Bed) -> dict[str, Any]:
    out: dict[str, Any] = {"phases": {}}
    if args.translog_only:
        bed.postgres = start_postgres(bed.root / "pg")
        progress(f"translog: {args.translog} append + sign-head cycles per writer process")
        out["translog"] = translog_lock(bed, args.translog, [1, 2, 4])
        return out
    progress("registry, PostgreSQL, Redis, the RPM pony's repository")
    reg_home = bed.home("registry")
    subprocess.run([*ALICORN, "registry", "start"], capture_output=True, check=True,
                   timeout=120, env={**os.environ, "ALICORN_HOME": str(reg_home),
                                     "ALICORN_QUEUE": "local"})
    port = json.loads((reg_home / "config.json").read_text())["registry_port"]
    bed.registry = f"127.0.0.1:{port}"
    bed.postgres = start_postgres(bed.root / "pg")
    bed.redis = start_redis(bed.root / "redis")
    pony_dir = bed.root / "pony"
    shutil.copytree(REPO / "examples" / "pony" / "rpm", pony_dir,
                    ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(pony_dir / "build-repo"), str(pony_dir / "repo"), "--version", "1"],
                   check=True, capture_output=True)
    pony = Pony(pony_dir)
    store = BuildStore(bed.postgres.url)
    api = bed.home("api")
    max_w = max(args.workers)

    progress(f"translog: {args.translog} append + sign-head cycles per writer process")
    out["translog"] = translog_lock(bed, args.translog, [1, 2, 4])

    progress(f"warm-up: one build in each of {max_w} worker homes")
    for i in range(max_w):
        bed.start_worker(f"w{i + 1}")
        rows = wait_final(store, bed.postgres.url,
                          [submit(bed, api, pony.recipe(f"pony-warm-w{i + 1}"))], 300)
        check_done(rows, "warm-up")
        bed.stop_workers()

    progress(f"latency: {args.latency} builds, one at a time, on one idle worker")
    bed.start_worker("w1")
    out["phases"]["latency"] = latency(bed, pony, store, bed.postgres.url, api, "lat",
                                       args.latency)
    bed.stop_workers()
    progress(f"  {out['phases']['latency']['submit_to_claim_ms']}")
    progress(f"noop: {args.noop} bare Celery tasks on the same Redis")
    out["phases"]["noop"] = noop_latency(bed, args.noop)
    progress(f"  {out['phases']['noop']}")

    cluster_submit = Submitter(api, bed.env)
    for w in args.workers:
        progress(f"workers={w}: {args.builds} builds")
        for i in range(w):
            bed.start_worker(f"w{i + 1}")
        out["phases"][f"workers={w}"] = r = throughput(
            bed, pony, store, cluster_submit, f"w{w}", args.builds, idle_window=args.idle_window)
        bed.stop_workers()
        progress(f"  makespan {r['makespan_s']} s, {r['builds_per_min']}/min, "
                 f"per build {r['per_build']}")
    for c in args.concurrency:
        progress(f"concurrency={c}: one worker, {args.builds} builds")
        bed.start_worker("w1", "--concurrency", str(c))
        out["phases"][f"concurrency={c}"] = r = throughput(
            bed, pony, store, cluster_submit, f"c{c}", args.builds, idle_window=args.idle_window)
        bed.stop_workers()
        progress(f"  makespan {r['makespan_s']} s, {r['builds_per_min']}/min")

    progress("local: the embedded default (SQLite, the local worker)")
    local = bed.home("local")
    bed.local_homes.append(local)
    lenv = bed.local_env()
    lurl = f"sqlite:///{local / 'alicorn.db'}"
    lstore = BuildStore(lurl)
    rows = wait_final(lstore, lurl, [submit(bed, local, pony.recipe("pony-warm-local"),
                                            env=lenv)], 300)
    check_done(rows, "local warm-up")
    out["phases"]["local-latency"] = latency(bed, pony, lstore, lurl, local, "llat",
                                             args.latency, env=lenv)
    progress(f"  {out['phases']['local-latency']['submit_to_claim_ms']}")
    out["phases"]["local"] = r = throughput(bed, pony, lstore, Submitter(local, lenv), "local",
                                            args.builds, cluster=False)
    progress(f"  makespan {r['makespan_s']} s, {r['builds_per_min']}/min")
    return out


def ratios(results: dict[str, Any]) -> dict[str, float]:
    p = results["phases"]
    if "local" not in p:
        return {}
    local = p["local"]["builds_per_min"]
    out = {f"{k}/local": round(v["builds_per_min"] / local, 2) for k, v in p.items()
           if k.startswith(("workers=", "concurrency="))}
    if "workers=1" in p:
        out.update({f"{k}/workers=1": round(v["builds_per_min"] / p["workers=1"]
                                            ["builds_per_min"], 2)
                    for k, v in p.items() if k.startswith(("workers=", "concurrency="))})
    lat = p["latency"]["submit_to_claim_ms"]["median"]
    out["latency/noop"] = round(lat / p["noop"]["send_to_start_ms"]["median"], 1)
    out["latency/local-latency"] = round(lat / p["local-latency"]["submit_to_claim_ms"]
                                         ["median"], 2)
    return out


def print_table(r: dict[str, Any]) -> None:
    for name, v in r.get("translog", {}).items():
        print(f"translog {name:22} {v['cycles_per_s']:>8.1f} append+sign-head cycles/s, "
              f"cycle p50 {v['cycle_ms']['median']:.1f} ms, max {v['cycle_ms']['max']:.1f} ms")
    p = r["phases"]
    if "local" not in p:
        return
    print(f"\n{r['run']['builds']} builds of the RPM pony (--skip-checks --no-cache), "
          f"{r['run']['machine']}")
    print(f"{'phase':16}{'makespan s':>11}{'builds/min':>11}{'build s p50':>12}"
          f"{'queued s p50':>13}{'pg conns':>9}{'pg xact/b':>10}{'reads/b':>8}{'redis cmd/b':>12}")
    for name, v in p.items():
        if "makespan_s" not in v:
            continue
        pb = v.get("per_build", {})
        print(f"{name:16}{v['makespan_s']:>11.1f}{v['builds_per_min']:>11.2f}"
              f"{v['build_duration_s']['median']:>12.1f}{v['queued_s']['median']:>13.1f}"
              f"{v.get('pg_peak_connections', '-'):>9}{pb.get('pg_xact', '-'):>10}"
              f"{pb.get('pg_read_xact', '-'):>8}"
              f"{pb.get('redis_commands', '-'):>12}")
    lat, loc, noop = (p["latency"]["submit_to_claim_ms"], p["local-latency"]
                      ["submit_to_claim_ms"], p["noop"])
    print(f"\nsubmit to claim, idle pool (ms):  celery p50 {lat['median']:.0f} "
          f"(min {lat['min']:.0f}, max {lat['max']:.0f});  local p50 {loc['median']:.0f}"
          f" (min {loc['min']:.0f}, max {loc['max']:.0f})")
    print(f"bare Celery no-op on the same Redis: send to start p50 "
          f"{noop['send_to_start_ms']['median']:.1f} ms, round trip p50 "
          f"{noop['round_trip_ms']['median']:.1f} ms")
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in r["ratios"].items()))


def parse_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--builds", type=int, default=24)
    parser.add_argument("--workers", type=parse_list, default=[1, 2, 4])
    parser.add_argument("--concurrency", type=parse_list, default=[2, 4],
                        help="one worker with --concurrency C (empty: none)")
    parser.add_argument("--latency", type=int, default=5, help="builds in the latency phase")
    parser.add_argument("--noop", type=int, default=50, help="bare Celery tasks")
    parser.add_argument("--translog", type=int, default=200,
                        help="append + sign-head cycles per writer in the translog phase")
    parser.add_argument("--translog-only", action="store_true",
                        help="only the translog phase (PostgreSQL alone)")
    parser.add_argument("--idle-window", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true",
                        help="4 builds, 1 and 2 workers, no --concurrency phase, 3 latency "
                             "samples (about 4 minutes)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.quick:
        args.builds, args.workers, args.concurrency = 4, [1, 2], []
        args.latency, args.noop, args.idle_window, args.translog = 3, 20, 5.0, 50
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"cluster_bench: needs {', '.join(missing)} (run scripts/bootstrap)",
              file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    bed = Bed(tmp)
    started = time.monotonic()
    ok = False
    try:
        results = run(args, bed)
        ok = True
    except KeyboardInterrupt:
        return 130
    except (BenchError, subprocess.CalledProcessError) as e:
        print(f"cluster_bench: {e}", file=sys.stderr)
        return 1
    finally:
        with _quiet_interrupts():
            bed.close()
        if args.keep or not ok:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["ratios"] = ratios(results)
    results["run"] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "builds": args.builds,
        "workers": args.workers, "concurrency": args.concurrency, "quick": args.quick,
        "seconds": round(time.monotonic() - started),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
    }
    out = args.out or RESULTS / f"cluster-{datetime.now(UTC):%Y-%m-%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(results)
    print(f"\nresults: {out}")
    return 0


@contextlib.contextmanager
def _quiet_interrupts() -> Iterator[None]:
    """Cleaning up is not to be interrupted by a second Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


if __name__ == "__main__":
    sys.exit(main())
