"""The cluster's test bed: a PostgreSQL, a Redis and a registry started by the suite, worker
processes with homes of their own, and a submitter's home (the "API host", holding no signing
key).  Everything is real: Celery workers over Redis, builds of the RPM pony with dnf.

``cluster`` is per test (its own database and Redis, so state never leaks between tests);
``rpm_pony`` is one locally built RPM repository for the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from alicorn.cluster.compose import (
    Postgres,
    Redis,
    start_postgres,
    start_redis,
    stop_gpg_agent,
)
from conftest import ALICORN, EXAMPLES, Cli, require


@dataclass
class Worker:
    name: str
    home: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker's whole process group (its Celery pool and their tools)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)


@dataclass
class Cluster:
    root: Path
    postgres: Postgres
    redis: Redis
    registry: str
    workers: list[Worker] = field(default_factory=list)
    queue_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"ALICORN_DATABASE_URL": self.postgres.url, "ALICORN_QUEUE": "celery",
                "ALICORN_BROKER_URL": self.redis.url, "ALICORN_REGISTRY": self.registry,
                **self.queue_env}

    def cli(self, name: str = "api") -> Cli:
        """The command line on a host of its own (default: the submitter's, "api")."""
        return Cli(self.root / "homes" / name, env=self.env)

    def start_worker(self, name: str, *args: str, env: dict[str, str] | None = None) -> Worker:
        home = self.root / "homes" / name
        home.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        out = open(log, "ab")  # noqa: SIM115 (the worker's)
        proc = subprocess.Popen(
            [*ALICORN, "worker", *args],
            env={**os.environ, "ALICORN_HOME": str(home), **self.env, **(env or {})},
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        worker = Worker(name, home, proc, log)
        self.workers.append(worker)
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return worker

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        # GPG signing starts a gpg-agent per home, out of the worker's process group.
        for home in (self.root / "homes").glob("*"):
            stop_gpg_agent(home)
        self.redis.stop()
        self.postgres.remove()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One local registry (Debian's docker-registry) every cluster pushes to."""
    require("docker-registry")
    home = tmp_path_factory.mktemp("registry-home")
    c = Cli(home, env={"ALICORN_QUEUE": "local"})
    c("registry", "start", check=True, timeout=120)
    port = json.loads((home / "config.json").read_text())["registry_port"]
    yield f"127.0.0.1:{port}"
    c("registry", "stop", timeout=60)
    stop_gpg_agent(home)


@pytest.fixture
def cluster(tmp_path: Path, registry: str) -> Iterator[Cluster]:
    require("redis-server", "initdb", "pg_ctl")
    root = tmp_path / "cluster"
    c = Cluster(root, start_postgres(root / "pg"), start_redis(root / "redis"), registry)
    try:
        yield c
    finally:
        c.stop()


@dataclass
class RpmPony:
    """The RPM pony's recipe directory, with its repository built."""

    dir: Path

    def recipe(self, name: str, *, extra: str = "") -> Path:
        """A copy of the pony's recipe named ``name`` (its own image), beside the repo."""
        text = (self.dir / "pony.yaml").read_text().replace("name: pony-rpm", f"name: {name}",
                                                             1) + extra
        path = self.dir / f"{name}.yaml"
        path.write_text(text)
        return path


@pytest.fixture(scope="session")
def rpm_pony(tmp_path_factory: pytest.TempPathFactory) -> RpmPony:
    require("rpmbuild", "createrepo_c", "dnf", "busybox")
    d = tmp_path_factory.mktemp("rpm-pony") / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", d, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(d / "build-repo"), str(d / "repo"), "--version", "1"], check=True,
                   capture_output=True)
    return RpmPony(d)


def wait_final(cluster: Cluster, build_ids: list[str], timeout: float = 600) -> dict[str, Any]:
    """Wait for the builds (following retries) to end; returns the last attempt's row of
    each, by the id submitted."""
    from alicorn.store.builds import FINAL, BuildStore

    store = BuildStore(cluster.postgres.url)
    deadline = time.monotonic() + timeout
    while True:
        rows = {b: store.latest_attempt(b) for b in build_ids}
        if all(r.state in FINAL for r in rows.values()):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError("builds not final: " + ", ".join(
                f"{b}={r.state}" for b, r in rows.items()))
        time.sleep(0.5)


@dataclass
class Compose:
    """A cluster started by `alicorn cluster up` in ``dir`` (the compose of issue 8), driven
    through the command line as a user would."""

    dir: Path
    admin: Cli   # the home `alicorn cluster ...` runs from

    def __call__(self, *args: str, check: bool = False, timeout: float = 300,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.admin("cluster", *args, "--dir", str(self.dir), check=check,
                          timeout=timeout, env=env)

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / "cluster.json").read_text())
        return data

    def env(self) -> dict[str, str]:
        """What ``. DIR/env`` exports, read from the file itself."""
        out = subprocess.run(["sh", "-c", f". {self.dir / 'env'} && env -0"],
                             capture_output=True, check=True, env={"PATH": "/usr/bin:/bin"})
        pairs = (item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)
        return {k: v for k, v in pairs if k.startswith("ALICORN_")}

    def cli(self, name: str) -> Cli:
        """A home of its own pointed at the cluster by DIR/env (a user's)."""
        return Cli(self.dir.parent / f"user-{name}", env=self.env())

    def pids(self) -> list[int]:
        """Every process the cluster recorded (services, workers, forwarders)."""
        if not (self.dir / "cluster.json").exists():
            return []
        state = self.state()
        found = []
        for entry in [*state["services"].values(), *state["workers"]]:
            found += [entry[k] for k in ("pid", "epmd_pid", "proxy_pid") if entry.get(k)]
        return found


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[Compose]:
    """A directory for `alicorn cluster up`; whatever runs there at the end is stopped and
    its data removed."""
    require("redis-server", "initdb", "pg_ctl", "docker-registry")
    c = Compose(tmp_path / "cluster", Cli(tmp_path / "admin"))
    try:
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c("down", "--remove", timeout=180)


__all__ = ["ALICORN", "Cluster", "Compose", "RpmPony", "Worker", "sys", "wait_final"]
