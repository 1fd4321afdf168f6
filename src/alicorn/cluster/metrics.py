"""Health and Prometheus metrics of the cluster: queue depth, builds running, done and failed,
their durations and queue waits, retries.

The figures are the database's (the single source of truth), computed when scraped by one
aggregate query per family, so every worker and the API host report the same cluster-wide
numbers whichever of them is scraped, and nothing is lost when a worker dies.  A worker adds
what only it can see: its broker queues' lengths (Redis) and its own health.

``alicorn worker --listen HOST:PORT`` serves, from the Celery worker's main process:

- ``GET /healthz``: JSON ``{"ok", "worker", "queues", "database", "broker", "running"}``, 200
  when both the database and the broker answer, else 503; ``running`` is the builds this
  worker's pool processes run (their ``host:pid`` is the build's ``worker``), so several
  workers on one host each tell their own;
- ``GET /metrics``: the Prometheus text format; 503 with the reason when the database cannot
  be reached (a scrape that fails, not figures that lie).

The API host serves the same ``/metrics`` and ``GET /api/v1/cluster`` (:func:`cluster_view`:
the workers seen lately, their running builds, the queue depths) (:mod:`alicorn.web.metrics`).

Idle workers leave no trace in the database, so the figures count the workers running a build
(``alicorn_workers_busy``); asking every worker over the broker (Celery's ping) would cost a
scrape seconds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import DateTime, case, distinct, extract, func, select, text, type_coerce
from sqlalchemy.exc import SQLAlchemyError

from alicorn.cluster.config import QueueConfig
from alicorn.config import Settings
from alicorn.daemon import processes
from alicorn.errors import BadInput, Error, StoreError, Unavailable
from alicorn.store.builds import DONE, FAILED, QUEUED, RUNNING, now
from alicorn.store.db import engine_for
from alicorn.store.models import BuildRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: a small build takes a few, a Debian image with its checks a minute or more.
DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800)


def _seconds(dialect: str, start: Any, end: Any) -> Any:
    """``end - start`` in seconds, in the database's own arithmetic."""
    if dialect == "postgresql":
        return extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


class ClusterCollector(Collector):
    """The cluster's figures from the database ``database_url``."""

    def __init__(self, database_url: str, lease: float = 60.0):
        self.database_url = database_url
        self.lease = lease

    def _histogram(self, conn: Any, name: str, doc: str, start: Any, end: Any,
                   buckets: Sequence[float]) -> HistogramMetricFamily:
        seconds = _seconds(conn.dialect.name, start, end)
        columns = [func.sum(case((seconds <= b, 1), else_=0)) for b in buckets]
        row = conn.execute(select(func.count(), func.sum(seconds), *columns).where(
            BuildRow.state.in_((DONE, FAILED)), start.is_not(None), end.is_not(None))).one()
        count, total = int(row[0] or 0), float(row[1] or 0.0)
        cumulative = [(f"{b:g}", float(row[2 + i] or 0)) for i, b in enumerate(buckets)]
        family = HistogramMetricFamily(name, doc)
        family.add_metric([], [*cumulative, ("+Inf", float(count))], sum_value=total)
        return family

    def collect(self) -> Iterator[Metric]:
        """The figures; :class:`~alicorn.errors.Unavailable` when the database cannot be
        reached (no family is half-told)."""
        try:
            families = list(self._families())
        except (SQLAlchemyError, StoreError) as e:
            raise Unavailable(f"the database cannot be reached: {_first_line(e)}",
                              where="ALICORN_DATABASE_URL",
                              hint="the figures come from the database; start it, or "
                                   "check the URL") from e
        yield from families

    def _families(self) -> Iterator[Metric]:
        engine = engine_for(self.database_url)
        with engine.connect() as conn:
            depth = GaugeMetricFamily("alicorn_queue_depth", "Builds queued, by queue",
                                      labels=["queue"])
            for queue, n in conn.execute(select(BuildRow.queue, func.count())
                                         .where(BuildRow.state == QUEUED)
                                         .group_by(BuildRow.queue)):
                depth.add_metric([queue or "local"], n)
            yield depth
            states = dict(conn.execute(select(BuildRow.state, func.count())
                                       .group_by(BuildRow.state)).all())
            yield GaugeMetricFamily("alicorn_builds_running", "Builds running now",
                                    value=states.get(RUNNING, 0))
            ended = CounterMetricFamily("alicorn_builds", "Builds that ended, by state",
                                        labels=["state"])
            for state in (DONE, FAILED):
                ended.add_metric([state], states.get(state, 0))
            yield ended
            yield CounterMetricFamily("alicorn_build_failures", "Builds that failed",
                                      value=states.get(FAILED, 0))
            retries = conn.execute(select(func.count()).where(
                BuildRow.retry_of.is_not(None))).scalar_one()
            yield CounterMetricFamily("alicorn_build_retries", "Attempts queued again after "
                                      "their worker was lost", value=retries)
            fresh = now() - timedelta(seconds=self.lease)
            busy = conn.execute(select(func.count(distinct(BuildRow.worker))).where(
                BuildRow.state == RUNNING, BuildRow.heartbeat_at >= fresh)).scalar_one()
            yield GaugeMetricFamily("alicorn_workers_busy", "Worker processes running a "
                                    "build with a fresh heartbeat", value=busy)
            stale = conn.execute(select(func.count()).where(
                BuildRow.state == RUNNING,
                func.coalesce(BuildRow.heartbeat_at, BuildRow.started_at) < fresh)).scalar_one()
            yield GaugeMetricFamily("alicorn_builds_stale", "Running builds whose heartbeat "
                                    "is older than the lease (the reaper's)", value=stale)
            yield self._histogram(conn, "alicorn_build_duration_seconds",
                                  "How long ended builds ran", BuildRow.started_at,
                                  BuildRow.finished_at, DURATION_BUCKETS)
            yield self._histogram(conn, "alicorn_queue_wait_seconds",
                                  "How long ended builds waited for a worker",
                                  BuildRow.created_at, BuildRow.started_at, WAIT_BUCKETS)


class BrokerCollector(Collector):
    """The broker's own length of each of ``queues`` (Redis: the list of each queue)."""

    def __init__(self, broker: str | None, queues: Sequence[str]):
        self.broker = broker
        self.queues = list(queues)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("alicorn_broker_queue_length",
                                   "Messages waiting in the broker, by queue", labels=["queue"])
        if self.broker and self.broker.startswith(("redis://", "rediss://")):
            import redis
            try:
                client = redis.Redis.from_url(self.broker, socket_timeout=2,
                                              socket_connect_timeout=2)
                for queue in self.queues:
                    family.add_metric([queue], client.llen(queue))
            except redis.RedisError:
                pass  # /healthz says the broker is down; the family stays empty
        yield family


def _worker_entry(name: str, last_seen: datetime | None) -> dict[str, Any]:
    host, _, pid = name.rpartition(":")
    return {"worker": name, "host": host, "pid": int(pid) if pid.isdigit() else None,
            "last_seen": last_seen.isoformat() + "Z" if last_seen else None,
            "running": [], "alive": False}


def cluster_view(database_url: str, lease: float = 60.0,
                 seen_within: float = 900.0) -> dict[str, Any]:
    """The cluster as the database sees it: the worker processes that ran a build within
    ``seen_within`` seconds (``host:pid``, when last seen, their running builds, ``alive``:
    a running build's heartbeat is within ``lease``), and the builds queued per queue.
    :class:`~alicorn.errors.Unavailable` when the database cannot be reached."""
    stamp = now()
    fresh = stamp - timedelta(seconds=lease)
    # type_coerce: SQLite hands MAX(COALESCE(...)) back as text; the type makes it a datetime.
    seen = type_coerce(func.max(func.coalesce(BuildRow.finished_at, BuildRow.heartbeat_at,
                                              BuildRow.started_at)), DateTime)
    try:
        with engine_for(database_url).connect() as conn:
            last = conn.execute(select(BuildRow.worker, seen).where(
                BuildRow.worker.is_not(None)).group_by(BuildRow.worker).having(
                seen >= stamp - timedelta(seconds=seen_within))).all()
            running = conn.execute(select(BuildRow.worker, BuildRow.id, BuildRow.heartbeat_at)
                                   .where(BuildRow.state == RUNNING)
                                   .order_by(BuildRow.started_at)).all()
            depth = dict(conn.execute(select(BuildRow.queue, func.count())
                                      .where(BuildRow.state == QUEUED)
                                      .group_by(BuildRow.queue)).all())
    except (SQLAlchemyError, StoreError) as e:
        raise Unavailable(f"the database cannot be reached: {_first_line(e)}",
                          where="ALICORN_DATABASE_URL",
                          hint="start it, or check the URL") from e
    workers: dict[str, dict[str, Any]] = {}
    for name, when in last:
        workers[str(name)] = _worker_entry(str(name), when)
    for name, build_id, beat in running:
        entry = workers.setdefault(str(name), _worker_entry(str(name), None))
        entry["running"].append(build_id)
        entry["alive"] = entry["alive"] or (beat is not None and beat >= fresh)
    return {"workers": sorted(workers.values(), key=lambda w: (w["host"], w["worker"])),
            "queues": {(q or "local"): n for q, n in sorted(depth.items(),
                                                            key=lambda i: i[0] or "")},
            "lease": lease}


def registry_for(settings: Settings, config: QueueConfig,
                 queues: Sequence[str] = ()) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(settings.database_url, config.lease))
    if queues:
        registry.register(BrokerCollector(config.broker, queues))
    return registry


def _first_line(e: BaseException) -> str:
    message = str(e).strip()
    return f"{type(e).__name__}: {message.splitlines()[0] if message else ''}"


def pool_workers(pid: int | None = None) -> list[str]:
    """The ``host:pid`` names of the Celery pool processes of the worker ``pid`` (default:
    this process) and its own: what a build they claim records as its ``worker``."""
    pid = os.getpid() if pid is None else pid
    host = socket.gethostname()
    return [f"{host}:{pid}", *(f"{host}:{p.pid}" for p in processes() if p.ppid == pid)]


def _database_ok(settings: Settings) -> str | None:
    """None when the database answers, else why not."""
    try:
        with engine_for(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # any driver's error, or a migration refused
        return _first_line(e)
    return None


def _broker_ok(config: QueueConfig) -> str | None:
    if not config.broker:
        return None
    from kombu.connection import Connection
    try:
        with Connection(config.broker, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as e:  # kombu's and the transports' many errors
        return f"{type(e).__name__}: {e}"
    return None


def health(settings: Settings, config: QueueConfig, queues: Sequence[str],
           worker: str) -> tuple[bool, dict[str, Any]]:
    """Whether this worker can work (database and broker answer), and the details."""
    db_error = _database_ok(settings)
    broker_error = _broker_ok(config)
    running: list[str] = []
    if db_error is None:
        try:
            with engine_for(settings.database_url).connect() as conn:
                running = list(conn.execute(select(BuildRow.id).where(
                    BuildRow.state == RUNNING, BuildRow.worker.in_(pool_workers()))
                    .order_by(BuildRow.started_at)).scalars())
        except (SQLAlchemyError, StoreError) as e:  # gone since it answered
            db_error = _first_line(e)
    doc = {"ok": db_error is None and broker_error is None, "worker": worker,
           "queues": list(queues),
           "database": {"ok": db_error is None, "error": db_error},
           "broker": {"ok": broker_error is None, "error": broker_error},
           "running": running}
    return bool(doc["ok"]), doc


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"{listen!r} is not HOST:PORT", where="--listen",
                       hint="e.g. 127.0.0.1:9464 or 0.0.0.0:9464")
    return host.strip("[]"), int(port)


def serve_worker_endpoints(settings: Settings, config: QueueConfig, listen: str | None,
                           *, queues: list[str]) -> ThreadingHTTPServer | None:
    """Start the worker's health and metrics server (a daemon thread) unless ``listen`` is
    None; returns it."""
    if listen is None:
        return None
    host, port = parse_listen(listen)
    registry = registry_for(settings, config, queues)
    worker = f"{socket.gethostname()}:{os.getpid()}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, status, kind = generate_latest(registry), 200, CONTENT_TYPE
                except Error as e:
                    body, status, kind = (e.diagnostics().encode() + b"\n", 503,
                                          "text/plain; charset=utf-8")
            elif path == "/healthz":
                ok, doc = health(settings, config, queues, worker)
                body = json.dumps(doc, sort_keys=True).encode() + b"\n"
                status, kind = (200 if ok else 503), "application/json"
            else:
                body, status, kind = b"not found: /healthz or /metrics\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass  # scrapes every few seconds would drown the worker's log

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise BadInput(f"cannot listen on {listen}: {e.strerror}", where="--listen",
                       hint="choose a free port") from e
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True,
                     name="alicorn-metrics").start()
    return server
