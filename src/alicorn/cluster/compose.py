"""Starting the services of a multi-host setup on one machine: PostgreSQL, Redis and worker
processes, each a process of its own under one directory (for tests, benchmarks, and
``alicorn cluster up``, which also starts a registry and an API host, and can put every worker
in a network namespace of its own, as if each were a host of its own).

PostgreSQL refuses to run as root, so its cluster belongs to the ``postgres`` user when this
runs as root (Debian's postgresql package makes that user).  Every service listens on a port
given or picked free, on 127.0.0.1 unless told otherwise.  Redis keeps an append-only file, so
a restart loses no queued message.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicorn.config import free_port
from alicorn.errors import BadInput, ToolError, ToolMissing


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
        if not self.host.startswith("127."):
            # Hosts on the server's own networks (a cluster's bridge and its namespaces).
            hba = self.data / "pg_hba.conf"
            line = "host all all samenet trust\n"
            if line not in hba.read_text():
                with open(hba, "a") as f:
                    f.write(line)
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


@dataclass
class RabbitMQ:
    """A RabbitMQ node of its own in ``directory`` (Debian's rabbitmq-server), with an Erlang
    port mapper of its own on ``epmd_port`` so that two clusters on one machine never share
    one.  The guest user may connect from any address (the workers in network namespaces
    are not on loopback)."""

    directory: Path
    port: int
    host: str = "127.0.0.1"
    epmd_port: int = 0
    pid: int | None = None
    epmd_pid: int | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}//"

    @staticmethod
    def binary() -> str:
        # The one in /usr/sbin switches to the rabbitmq user; this one runs as the caller.
        for candidate in ("/usr/lib/rabbitmq/bin/rabbitmq-server",
                          shutil.which("rabbitmq-server")):
            if candidate and Path(candidate).exists():
                return candidate
        raise ToolMissing("rabbitmq-server is not installed",
                          hint="apt-get install rabbitmq-server, or use --broker redis")

    def start(self) -> RabbitMQ:
        exe = self.binary()
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.epmd_port = self.epmd_port or free_port()
        (self.directory / "rabbitmq.conf").write_text(
            "loopback_users = none\n"
            f"listeners.tcp.default = {self.host}:{self.port}\n")
        env = {**os.environ, "ERL_EPMD_PORT": str(self.epmd_port),
               "RABBITMQ_NODENAME": f"alicorn-{self.port}@localhost",
               "RABBITMQ_NODE_PORT": str(self.port),
               "RABBITMQ_NODE_IP_ADDRESS": self.host,
               "RABBITMQ_DIST_PORT": str(free_port()),
               "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq"),
               "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.directory / "log"),
               "RABBITMQ_PID_FILE": str(self.directory / "rabbitmq.pid"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
               "RABBITMQ_FEATURE_FLAGS_FILE": str(self.directory / "feature_flags"),
               "RABBITMQ_QUORUM_DIR": str(self.directory / "quorum")}
        with open(self.directory / "rabbitmq.log", "ab") as log:
            self.epmd_pid = subprocess.Popen(
                [epmd, "-port", str(self.epmd_port)], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True).pid
            self.pid = subprocess.Popen(
                [exe], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.directory).pid
        wait_port(self.host, self.port, timeout=90)
        return self


# -- the cluster of `alicorn cluster up` ------------------------------------------------------

STATE_FILE = "cluster.json"
ENV_FILE = "env"
SERVICES = ("postgres", "redis", "rabbitmq", "registry", "api")
# The Python that runs this one: the workers and the API host run the same Alicorn.
ALICORN = [sys.executable, "-m", "alicorn"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ip")
    if exe is None:
        raise ToolMissing("ip (iproute2) is not installed; --netns needs it",
                          hint="apt-get install iproute2, or leave out --netns")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ToolError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}",
                        argv=[exe, *args], returncode=proc.returncode, output=proc.stderr)
    return proc


@dataclass
class Netns:
    """The network of a cluster whose workers run in network namespaces of their own: a
    bridge on the host holding the services' address (``subnet``.1/24) and, per worker, a
    namespace ``alicorn-<tag>-wI`` joined to the bridge by a veth pair (``subnet``.I+1).
    The services listen on the bridge's address, which the host reaches as well."""

    tag: str
    subnet: str

    @classmethod
    def for_dir(cls, directory: Path) -> Netns:
        """The network of the cluster in ``directory``: its tag from the directory's path,
        its /24 the first under 10.200-249 that no address of this host is in."""
        digest = hashlib.sha256(str(directory.absolute()).encode()).digest()
        tag = digest.hex()[:6]
        taken = _ip("-4", "-o", "addr", "show").stdout
        for k in range(64):
            a, b = 200 + (digest[k % 32] + k) % 50, (digest[(k + 1) % 32] + 7 * k) % 256
            subnet = f"10.{a}.{b}"
            if f" {subnet}." not in taken:
                return cls(tag, subnet)
        raise ToolError("no free 10.200-249.x.0/24 network for the cluster's bridge")

    @property
    def bridge(self) -> str:
        return f"alc{self.tag}"

    @property
    def address(self) -> str:
        return f"{self.subnet}.1"

    def name(self, index: int) -> str:
        return f"alicorn-{self.tag}-w{index}"

    def worker_address(self, index: int) -> str:
        return f"{self.subnet}.{index + 1}"

    def create_bridge(self) -> None:
        if os.getuid() != 0:
            raise ToolError("network namespaces need root",
                            hint="run `alicorn cluster up --netns` as root, or without --netns")
        if _ip("link", "show", self.bridge, check=False).returncode != 0:
            _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "replace", f"{self.address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add(self, index: int) -> str:
        """Make worker ``index``'s namespace, joined to the bridge; returns its name."""
        if not 1 <= index <= 250:
            raise BadInput(f"a cluster in namespaces has at most 250 workers, not {index}")
        ns, host_end, ns_end = self.name(index), f"{self.bridge}h{index}", f"{self.bridge}n{index}"
        self.remove(index)
        _ip("netns", "add", ns)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip("link", "set", ns_end, "netns", ns)
        _ip("link", "set", host_end, "master", self.bridge)
        _ip("link", "set", host_end, "up")
        _ip("-n", ns, "addr", "add", f"{self.worker_address(index)}/24", "dev", ns_end)
        _ip("-n", ns, "link", "set", ns_end, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def remove(self, index: int) -> None:
        _ip("netns", "delete", self.name(index), check=False)
        _ip("link", "delete", f"{self.bridge}h{index}", check=False)

    def namespaces(self) -> list[str]:
        """This cluster's namespaces that exist now."""
        out = _ip("netns", "list", check=False).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        return [n for n in names if n.startswith(f"alicorn-{self.tag}-w")]

    def remove_all(self) -> list[str]:
        """Delete every namespace, veth and the bridge of this cluster; returns the
        namespaces deleted."""
        gone = self.namespaces()
        for ns in gone:
            self.remove(int(ns.rsplit("-w", 1)[1]))
        links = _ip("-o", "link", "show", check=False).stdout
        for line in links.splitlines():
            name = line.split(":", 2)[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(self.bridge):
                _ip("link", "delete", name, check=False)
        return gone


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    from alicorn import daemon
    return [p.pid for p in daemon.processes() if p.state != "Z" and p.pgid == pgid]


def alive(pid: int | None) -> bool:
    from alicorn import daemon
    return pid is not None and daemon.alive(pid)


def stop_group(pgid: int | None, *, timeout: float = 30.0) -> bool:
    """SIGTERM the process group ``pgid`` (a process started in a session of its own, with
    its children), SIGKILL what is left after ``timeout``; True if anything ran."""
    if pgid is None or not (group_members(pgid) or alive(pgid)):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_members(pgid) and not alive(pgid):
                return True
            time.sleep(0.1)
    return True


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _check_free(service: str, host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise BadInput(f"port {port} for {service} is taken on {host} ({e.strerror})",
                           hint=f"pick another with --port {service}=PORT, or leave it out "
                                "to use a free one") from e


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _trust_file(tag: str) -> Path:
    from alicorn.registry.local import REGISTRIES_CONF_D
    return REGISTRIES_CONF_D / f"50-alicorn-cluster-{tag}.conf"


def read_state(directory: Path) -> dict[str, Any] | None:
    """What ``alicorn cluster up`` recorded in ``directory``, None if nothing."""
    path = directory / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise BadInput(f"the cluster's state is unreadable: {e}", where=str(path),
                       hint="`alicorn cluster down` cleans up what it can, then remove it") from e
    return state


def _save(state: dict[str, Any]) -> None:
    directory = Path(state["dir"])
    tmp = directory / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(directory / STATE_FILE)


def env_text(state: dict[str, Any]) -> str:
    """Shell lines that point Alicorn at the cluster (``. DIR/env``)."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in state["env"].items())


def running(state: dict[str, Any]) -> list[str]:
    """The cluster's processes that are alive, as ``name (pid N)``."""
    procs = [(name, s.get("pid")) for name, s in state.get("services", {}).items()]
    procs += [(name, s.get("epmd_pid")) for name, s in state.get("services", {}).items()]
    procs += [(w["name"], w.get("pid")) for w in state.get("workers", [])]
    procs += [(f"{w['name']}'s forwarder", w.get("proxy_pid")) for w in state.get("workers", [])]
    return [f"{name} (pid {pid})" for name, pid in procs if alive(pid)]


def _postgres_pid(pg: Postgres) -> int | None:
    try:
        return int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def up(directory: Path, *, workers: int = 2, concurrency: int = 1, netns: bool = False,
       broker: str = "redis", ports: dict[str, int] | None = None) -> dict[str, Any]:
    """Start a cluster in ``directory``: PostgreSQL, the broker, a registry, an API host and
    ``workers`` Celery workers, each host with an ALICORN_HOME of its own under
    ``directory/homes``; returns (and writes to ``directory/cluster.json``) its state.  On
    any failure what was started is stopped again."""
    from alicorn.proc import which
    from alicorn.registry.local import CONFIG

    directory = directory.absolute()
    ports = dict(ports or {})
    unknown = set(ports) - set(SERVICES)
    if unknown:
        raise BadInput(f"no service named {', '.join(sorted(unknown))}",
                       hint=f"--port takes one of {', '.join(SERVICES)}, e.g. api=8441")
    if broker not in ("redis", "rabbitmq"):
        raise BadInput(f"unknown broker {broker!r}", hint="redis or rabbitmq")
    previous = read_state(directory)
    if previous is not None:
        live = running(previous)
        if live:
            raise BadInput(f"a cluster is already running in {directory}: {', '.join(live)}",
                           where=str(directory / STATE_FILE),
                           hint=f"`alicorn cluster down --dir {directory}` stops it, or "
                                "give another --dir")
        down(directory)   # what a cluster that died left behind (namespaces, links)
    # Every tool first, so that a missing one starts nothing.
    _pg_bin("initdb")
    _pg_bin("pg_ctl")
    if broker == "redis" and shutil.which("redis-server") is None:
        raise ToolMissing("redis-server is not installed",
                          hint="apt-get install redis-server, or use --broker rabbitmq")
    if broker == "rabbitmq":
        RabbitMQ.binary()
    registry_bin = which("docker-registry", package="docker-registry")
    net = Netns.for_dir(directory) if netns else None
    if net is not None:
        if os.getuid() != 0:
            raise ToolError("network namespaces need root",
                            hint="run `alicorn cluster up --netns` as root, or without --netns")
        _forwarder(0, "")
        if shutil.which("nsenter") is None:
            raise ToolMissing("nsenter is not installed; --netns needs it",
                              hint="apt-get install util-linux, or leave out --netns")

    directory.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"dir": str(directory), "broker": broker, "netns": netns,
                             "concurrency": concurrency, "services": {}, "workers": [],
                             "env": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime())}
    if net is not None:
        state.update(tag=net.tag, subnet=net.subnet)
    try:
        host = "127.0.0.1"
        if net is not None:
            net.create_bridge()
            host = net.address
        state["address"] = host
        for service, port in ports.items():
            _check_free(service, host, port)
        _save(state)

        pg = Postgres(directory / "postgres", ports.get("postgres") or free_port(host),
                      host=host)
        state["services"]["postgres"] = {"port": pg.port, "url": pg.url,
                                         "data": str(pg.data), "log": str(pg.state /
                                                                          "postgres.log")}
        _save(state)
        pg.start()
        state["services"]["postgres"]["pid"] = _postgres_pid(pg)
        _save(state)

        if broker == "redis":
            redis = Redis(directory / "redis", ports.get("redis") or free_port(host), host=host)
            redis.start()
            state["services"]["redis"] = {"port": redis.port, "url": redis.url,
                                          "pid": redis.pid,
                                          "log": str(redis.directory / "redis.log")}
            broker_url = redis.url
        else:
            rabbit = RabbitMQ(directory / "rabbitmq", ports.get("rabbitmq") or free_port(host),
                              host=host)
            try:
                rabbit.start()
            finally:
                state["services"]["rabbitmq"] = {
                    "port": rabbit.port, "url": rabbit.url, "pid": rabbit.pid,
                    "epmd_pid": rabbit.epmd_pid, "epmd_port": rabbit.epmd_port,
                    "log": str(rabbit.directory / "rabbitmq.log")}
                _save(state)
            broker_url = rabbit.url
        _save(state)

        reg_dir = directory / "homes" / "registry"
        reg_dir.mkdir(parents=True, exist_ok=True)
        reg_port = ports.get("registry") or free_port(host)
        addr = f"{host}:{reg_port}"
        (reg_dir / "config.yml").write_text(CONFIG.format(data=reg_dir / "data", addr=addr))
        log = reg_dir / "registry.log"
        state["services"]["registry"] = {
            "port": reg_port, "url": f"http://{addr}/v2/", "addr": addr, "log": str(log),
            "pid": _spawn([registry_bin, "serve", str(reg_dir / "config.yml")], log, {})}
        _save(state)
        _wait_service(state, "registry", host, reg_port)
        if net is not None:
            # Alicorn speaks plain HTTP to a registry on loopback only (and podman is told
            # to): every host reaches this one as 127.0.0.1:PORT, through a forwarder on the
            # host and one in each namespace, so image references read the same everywhere.
            log = directory / "logs" / "registry-proxy.log"
            state["services"]["registry-proxy"] = {
                "port": reg_port, "host": "127.0.0.1", "url": f"http://127.0.0.1:{reg_port}/v2/",
                "log": str(log), "pid": _spawn(_forwarder(reg_port, addr), log, {})}
            _save(state)
            _wait_service(state, "registry-proxy", "127.0.0.1", reg_port)
            addr = f"127.0.0.1:{reg_port}"
        _trust_registry(state, addr)

        state["env"] = {"ALICORN_DATABASE_URL": pg.url, "ALICORN_QUEUE": "celery",
                        "ALICORN_BROKER_URL": broker_url, "ALICORN_REGISTRY": addr,
                        "ALICORN_CLUSTER_DIR": str(directory)}
        (directory / ENV_FILE).write_text(env_text(state))
        _save(state)

        api_home = directory / "homes" / "api"
        api_port = ports.get("api") or free_port(host)
        log = directory / "logs" / "api.log"
        state["services"]["api"] = {
            "port": api_port, "url": f"http://{host}:{api_port}", "home": str(api_home),
            "log": str(log),
            "pid": _spawn([*ALICORN, "serve", "--api-only", "--listen", f"{host}:{api_port}"],
                          log, {**state["env"], "ALICORN_HOME": str(api_home)})}
        _save(state)
        _wait_service(state, "api", host, api_port, timeout=90)

        for _ in range(workers):
            start_worker(state)
    except BaseException:
        with contextlib.suppress(Exception):
            down(directory)
        raise
    return state


def _wait_service(state: dict[str, Any], name: str, host: str, port: int,
                  timeout: float = 30.0) -> None:
    service = state["services"][name]
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if not alive(service["pid"]) or time.monotonic() > deadline:
            raise ToolError(f"the cluster's {name} did not start on {host}:{port}:\n"
                            + _tail(Path(service["log"])), hint=f"see {service['log']}")
        time.sleep(0.1)


def _forwarder(port: int, target: str) -> list[str]:
    """A TCP forwarder from 127.0.0.1:``port`` (where it runs) to ``target``."""
    socat = shutil.which("socat")
    if socat is None:
        raise ToolMissing("socat is not installed; --netns needs it (the registry's "
                          "forwarders)", hint="apt-get install socat, or leave out --netns")
    return [socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"TCP:{target}"]


def _trust_registry(state: dict[str, Any], addr: str) -> None:
    """Let podman on this host (and in the namespaces, which share its files) use the
    cluster's registry over plain HTTP, as Alicorn's own registry does (written where
    /etc/containers is writable)."""
    tag = hashlib.sha256(state["dir"].encode()).hexdigest()[:6]
    path = _trust_file(tag)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Written by alicorn cluster up ({state['dir']}).\n"
                        f'[[registry]]\nlocation = "{addr}"\ninsecure = true\n')
        state["trust_file"] = str(path)


def start_worker(state: dict[str, Any]) -> dict[str, Any]:
    """Start the cluster's next worker (its own home, in a namespace of its own with
    --netns) and wait until Celery says it is ready; records it in the state."""
    directory = Path(state["dir"])
    index = max((w["index"] for w in state["workers"]), default=0) + 1
    name = f"worker-{index}"
    home = directory / "homes" / name
    home.mkdir(parents=True, exist_ok=True)
    log = directory / "logs" / f"{name}.log"
    prefix: list[str] = []
    address = "127.0.0.1"
    ns = None
    proxy = None
    if state.get("netns"):
        net = Netns(state["tag"], state["subnet"])
        ns = net.add(index)
        address = net.worker_address(index)
        # nsenter switches the network namespace only: `ip netns exec` also mounts a /sys of
        # its own, without the cgroup file system podman's runtime needs.
        nsenter = shutil.which("nsenter")
        if nsenter is None:
            raise ToolMissing("nsenter is not installed; --netns needs it",
                              hint="apt-get install util-linux, or leave out --netns")
        prefix = [nsenter, f"--net=/run/netns/{ns}", "--"]
        registry = state["services"]["registry"]
        proxy = _spawn([*prefix, *_forwarder(registry["port"], registry["addr"])],
                       directory / "logs" / f"{name}-registry-proxy.log", {})
    # Another namespace has all ports free; on the host one is picked free.
    listen = f"{address}:{free_port()}"
    offset = log.stat().st_size if log.exists() else 0
    worker: dict[str, Any] = {"name": name, "index": index, "home": str(home), "log": str(log),
              "listen": listen, "netns": ns, "address": address, "proxy_pid": proxy,
              "pid": _spawn([*prefix, *ALICORN, "worker", "--concurrency",
                             str(state["concurrency"]), "--listen", listen], log,
                            {**state["env"], "ALICORN_HOME": str(home)})}
    state["workers"].append(worker)
    _save(state)
    deadline = time.monotonic() + 90
    while True:
        with open(log, "rb") as f:
            f.seek(offset)
            if b" ready." in f.read():
                return worker
        if not alive(worker["pid"]) or time.monotonic() > deadline:
            raise ToolError(f"{name} did not start:\n{_tail(log)}", hint=f"see {log}")
        time.sleep(0.2)


def stop_gpg_agent(home: Path) -> None:
    """Stop the gpg-agent a host's GPG signing started (it daemonizes, out of the
    worker's process group)."""
    gpgconf = shutil.which("gpgconf")
    keys = home / "keys" / "gpg"
    if gpgconf and keys.is_dir():
        subprocess.run([gpgconf, "--homedir", str(keys), "--kill", "all"],
                       capture_output=True, check=False, timeout=30)


def stop_worker(state: dict[str, Any], worker: dict[str, Any]) -> None:
    """SIGTERM the worker's process group (Celery finishes or gives back its builds),
    SIGKILL after 30 s; deletes its namespace."""
    stop_group(worker.get("pid"))
    stop_group(worker.get("proxy_pid"))
    stop_gpg_agent(Path(worker["home"]))
    if worker.get("netns"):
        Netns(state["tag"], state["subnet"]).remove(worker["index"])


def scale(directory: Path, workers: int) -> dict[str, Any]:
    """Start or stop workers (the newest first) until ``workers`` run."""
    directory = directory.absolute()
    state = read_state(directory)
    if state is None or not running(state):
        raise BadInput(f"no cluster runs in {directory}",
                       hint=f"`alicorn cluster up --dir {directory}` starts one")
    state["workers"] = [w for w in state["workers"] if alive(w.get("pid"))]
    while len(state["workers"]) > workers:
        stop_worker(state, state["workers"][-1])
        state["workers"].pop()
        _save(state)
    while len(state["workers"]) < workers:
        start_worker(state)
    _save(state)
    return state


def status(directory: Path) -> dict[str, Any]:
    """Each service and worker of the cluster in ``directory``: its pid, whether it runs
    and whether its port answers (a service is up when both hold; a worker when it runs)."""
    directory = directory.absolute()
    state = read_state(directory)
    if state is None:
        raise BadInput(f"no cluster was started in {directory}",
                       hint=f"`alicorn cluster up --dir {directory}` starts one")
    host = state.get("address", "127.0.0.1")
    rows = []
    for name, s in state["services"].items():
        running_ = alive(s.get("pid"))
        answers = port_open(s.get("host", host), s["port"])
        rows.append({"name": name, "kind": "service", "pid": s.get("pid"), "running": running_,
                     "port": s["port"], "answers": answers, "up": running_ and answers,
                     "url": s.get("url")})
    for w in state["workers"]:
        running_ = alive(w.get("pid"))
        lhost, lport = w["listen"].rsplit(":", 1)
        rows.append({"name": w["name"], "kind": "worker", "pid": w.get("pid"),
                     "running": running_, "port": int(lport),
                     "answers": running_ and port_open(lhost, int(lport)), "up": running_,
                     "netns": w.get("netns"), "home": w["home"]})
    return {"dir": str(directory), "up": bool(rows) and all(r["up"] for r in rows),
            "netns": state.get("netns", False), "services": rows, "env": state["env"]}


def down(directory: Path, *, remove: bool = False) -> list[str]:
    """Stop the cluster in ``directory``: the workers first (SIGTERM, then SIGKILL), the API
    host, the registry, the broker, PostgreSQL; delete its namespaces and links.  With
    ``remove``, its data too (the database's cluster included).  Returns what was stopped."""
    directory = directory.absolute()
    state = read_state(directory)
    if state is None:
        raise BadInput(f"no cluster was started in {directory}",
                       hint="nothing to stop; `alicorn cluster up` starts one")
    stopped = []
    for w in reversed(state.get("workers", [])):
        if w.get("pid") and (alive(w["pid"]) or group_members(w["pid"])):
            stopped.append(w["name"])
        stop_worker(state, w)
    services = state.get("services", {})
    for name in ("api", "registry-proxy", "registry", "redis", "rabbitmq"):
        s = services.get(name)
        if s and stop_group(s.get("pid")):
            stopped.append(name)
        if s and s.get("epmd_pid"):
            stop_group(s["epmd_pid"])
        if s and s.get("home"):
            stop_gpg_agent(Path(s["home"]))
    if "postgres" in services:
        pg = Postgres(directory / "postgres", services["postgres"]["port"],
                      host=state.get("address", "127.0.0.1"))
        if alive(_postgres_pid(pg)):
            stopped.append("postgres")
        (pg.remove if remove else pg.stop)()
    if state.get("trust_file"):
        with contextlib.suppress(OSError):
            Path(state["trust_file"]).unlink(missing_ok=True)
    if state.get("netns"):
        Netns(state["tag"], state["subnet"]).remove_all()
    if remove:
        for sub in ("homes", "logs", "redis", "rabbitmq", "postgres", ENV_FILE, STATE_FILE):
            path = directory / sub
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    else:
        # A pid kept would name another process once the number is used again.
        pids = []
        for entry in [*services.values(), *state.get("workers", [])]:
            for key in ("pid", "epmd_pid", "proxy_pid"):
                if entry.get(key):
                    pids.append(entry[key])
                    entry[key] = None
        state["stopped"] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "pids": pids}
        _save(state)
    return stopped
