"""Starting the services of a multi-host setup on one machine: PostgreSQL, Redis and worker
processes, each a process of its own under one directory (for tests, benchmarks, and
``alicorn cluster up``).

PostgreSQL refuses to run as root, so its cluster belongs to the ``postgres`` user when this
runs as root (Debian's postgresql package makes that user).  Every service listens on a port
given or picked free, on 127.0.0.1 unless told otherwise.  Redis keeps an append-only file, so
a restart loses no queued message.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from alicorn.config import free_port
from alicorn.errors import ToolError, ToolMissing


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    raise ToolMissing(f"PostgreSQL's {name} is not installed",
                      hint="apt-get install postgresql (scripts/bootstrap does)")


def wait_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise ToolError(f"nothing answers on {host}:{port} after {timeout:g} s")


@dataclass
class Postgres:
    """A PostgreSQL cluster of its own in ``directory``."""

    directory: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "alicorn"
    database: str = "alicorn"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def state(self) -> Path:
        """Where the cluster's files are: ``directory``, or, as root, a directory under
        /var/tmp named after it that the postgres user can reach (a test's temporary
        directory is root's alone)."""
        if os.getuid() != 0:
            return self.directory
        tag = hashlib.sha256(str(self.directory.absolute()).encode()).hexdigest()[:16]
        return Path("/var/tmp") / f"alicorn-postgres-{tag}"

    @property
    def data(self) -> Path:
        return self.state / "data"

    def _as_owner(self) -> list[str]:
        if os.getuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self._as_owner() + argv, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise ToolError(f"{' '.join(argv[:2])} failed: {proc.stderr.strip()[-800:]}")
        return proc

    def start(self) -> Postgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        sockets = self.state / "sockets"
        sockets.mkdir(exist_ok=True)
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in (self.state, sockets):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(self.state, 0o700)
        if not (self.data / "PG_VERSION").exists():
            self._run([_pg_bin("initdb"), "-D", str(self.data), "-U", self.user,
                       "--auth=trust", "-E", "UTF8", "--no-sync"])
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-l",
                   str(self.state / "postgres.log"), "-w", "-t", "60", "-o",
                   f"-p {self.port} -h {self.host} -k {sockets} -c fsync=off "
                   "-c max_connections=200", "start"])
        wait_port(self.host, self.port)
        exists = self._run([_pg_bin("psql"), "-h", self.host, "-p", str(self.port), "-U",
                            self.user, "-d", "postgres", "-tAc",
                            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"])
        if exists.stdout.strip() != "1":
            self._run([_pg_bin("createdb"), "-h", self.host, "-p", str(self.port), "-U",
                       self.user, self.database])
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self._as_owner(), _pg_bin("pg_ctl"), "-D", str(self.data),
                            "-m", mode, "-w", "stop"], capture_output=True, check=False)

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop(mode="immediate")
        shutil.rmtree(self.state, ignore_errors=True)


@dataclass
class Redis:
    """A Redis server of its own in ``directory``, with an append-only file."""

    directory: Path
    port: int
    host: str = "127.0.0.1"
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> Redis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise ToolMissing("redis-server is not installed",
                              hint="apt-get install redis-server (scripts/bootstrap does)")
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 (the server's)
        proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", self.host, "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--daemonize", "no", "--protected-mode", "no"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.pid = proc.pid
        wait_port(self.host, self.port)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.05)
        self.pid = None


def start_postgres(directory: Path, port: int | None = None) -> Postgres:
    return Postgres(directory, port or free_port()).start()


def start_redis(directory: Path, port: int | None = None) -> Redis:
    return Redis(directory, port or free_port()).start()
