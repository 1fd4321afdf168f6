"""HAProxy in front of a module (the :class:`~alicorn.rollout.interface.Proxy` here).

One HAProxy per module, in master-worker mode (``-W``), every file of it in one directory:
``haproxy.cfg`` (always the current servers, so a restarted HAProxy comes back as it was),
``haproxy.pid`` (the master), ``admin.sock`` (the runtime API), ``master.sock`` (the master
CLI) and ``haproxy.log`` (its own output; only abnormal requests are logged).

Changes go through the runtime API (``add server``, ``set server … state``, ``del server``):
no reload, so no listener is ever closed and no client connection dropped.  A failed request
is retried on another server (``retry-on all-retryable-errors``, ``option redispatch 1``) and a
server that fails one real request is marked down at once (``observe layer7``, ``error-limit
1``, ``on-error mark-down``), so when every active server fails, requests reach the backups
without a single failure reaching a client.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import re
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from alicorn import daemon
from alicorn.fs import replace_file
from alicorn.proc import run, which
from alicorn.rollout.interface import Proxy, ProxyError, ServerState
from alicorn.rollout.model import Backend, Readiness

BACKEND = "replicas"
FRONTEND = "module"
#: A server keeps its replica's name when active; as a backup it gets this suffix (HAProxy
#: cannot turn an active server into a backup at runtime, so the backup is another server).
BACKUP_SUFFIX = ":backup"
#: What HAProxy accepts as a server name (``invalid_char``), ':' kept for the suffix.
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
HOST = re.compile(r"^[A-Za-z0-9_.:-]+$")
_SERVER_LINE = re.compile(r"^\s+server\s+(\S+)\s+(\S+):(\d+)\s.*?(\bbackup\b)?\s*$")
_SOCKET_TIMEOUT = 5.0
# Unix socket paths longer than this do not fit sun_path (108 bytes with the NUL).
_SUN_PATH_MAX = 100


class HAProxy(Proxy):
    """One HAProxy (master-worker) per module, its files in ``directory``: listens on
    ``address:port``, checks every server with the module's readiness (``GET path``).

    ``drain_timeout``: how long :meth:`set_backends` waits for a removed server's connections
    to finish before it closes them."""

    def __init__(self, directory: Path, *, module: str, address: str, port: int,
                 readiness: Readiness, drain_timeout: float = 10.0):
        self.directory = Path(directory)
        self.module = module
        self.address = address
        self.port = port
        self.readiness = readiness
        self.drain_timeout = drain_timeout
        self.config = self.directory / "haproxy.cfg"
        self.pidfile = self.directory / "haproxy.pid"
        self.admin_socket = self.directory / "admin.sock"
        self.master_socket = self.directory / "master.sock"
        self.logfile = self.directory / "haproxy.log"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start HAProxy unless it runs, with the servers the configuration on disk names.
        :class:`ProxyError` when the port is taken, the configuration refused, or HAProxy
        exits or does not answer on its runtime socket within 10 s."""
        if self.is_running():
            return
        haproxy = which("haproxy")
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.config.exists():
            replace_file(self.config, self._render([]), mode=0o600)
        self._check_port()
        self._validate(self.config)
        for stale in (self.admin_socket, self.master_socket, self.pidfile):
            stale.unlink(missing_ok=True)
        # Relative socket paths (cwd = directory) so a deep directory still fits sun_path.
        pid = daemon.spawn([haproxy, "-W", "-f", self.config.name, "-S", "unix@master.sock"],
                           pidfile=self.pidfile, logfile=self.logfile, cwd=self.directory)
        deadline = time.monotonic() + 10.0
        while True:
            if not daemon.alive(pid):
                self.pidfile.unlink(missing_ok=True)
                raise ProxyError(f"HAProxy for module {self.module} exited at start: "
                                 f"{self._log_tail()}", where=str(self.logfile),
                                 hint=f"see {self.logfile}")
            with contextlib.suppress(ProxyError):
                if "Name: HAProxy" in self._command("show info", expect=None):
                    return
            if time.monotonic() > deadline:
                self._stop_pid(pid)
                raise ProxyError(f"HAProxy for module {self.module} does not answer on "
                                 f"{self.admin_socket} 10 s after it started",
                                 where=str(self.logfile), hint=f"see {self.logfile}")
            time.sleep(0.05)

    def is_running(self) -> bool:
        return self._master_pid() is not None

    def stop(self) -> None:
        """Stop HAProxy (idempotent): a soft stop (in-flight requests finish, up to 5 s),
        then a hard one; its sockets and pid file go, its configuration stays."""
        pid = self._master_pid()
        if pid is not None:
            self._stop_pid(pid)
        for path in (self.pidfile, self.admin_socket, self.master_socket):
            path.unlink(missing_ok=True)

    # -- servers ---------------------------------------------------------------------------------

    def set_backends(self, active: Sequence[Backend], backup: Sequence[Backend] = ()) -> None:
        """See :meth:`Proxy.set_backends`.  The new configuration is validated first (nothing
        changes if HAProxy refuses it), then applied through the runtime API (undone if a
        command fails), then written to disk; removed servers are drained, then deleted."""
        wanted = self._wanted(active, backup)
        text = self._render(list(wanted.values()))
        self.directory.mkdir(parents=True, exist_ok=True)
        candidate = self.directory / ".haproxy.cfg.new"
        try:
            candidate.write_text(text, encoding="utf-8")
            self._validate(candidate)
        finally:
            candidate.unlink(missing_ok=True)
        if not self.is_running():
            replace_file(self.config, text, mode=0o600)
            return
        current = {row["svname"]: row for row in self._stat()}
        added: list[str] = []
        try:
            for name, (b, is_backup) in wanted.items():
                row = current.get(name)
                if row is None:
                    opts = " ".join(self._server_options(is_backup))
                    self._command(f"add server {BACKEND}/{name} {b.host}:{b.port} {opts}",
                                  expect="New server registered")
                    added.append(name)
                    self._command(f"enable health {BACKEND}/{name}")
                elif row.get("addr") != f"{b.host}:{b.port}":
                    # HAProxy reports what it changed ("IP changed from …", "no need to
                    # change the addr, port changed from …"); an error says neither.
                    said = self._command(
                        f"set server {BACKEND}/{name} addr {b.host} port {b.port}", expect=None)
                    if "changed" not in said and "no need to change" not in said:
                        raise ProxyError(f"HAProxy refused to move server {name} to "
                                         f"{b.host}:{b.port}: {said.strip()}",
                                         where=str(self.admin_socket))
                self._command(f"set server {BACKEND}/{name} state ready")
        except ProxyError:
            for name in reversed(added):
                with contextlib.suppress(ProxyError):
                    self._command(f"set server {BACKEND}/{name} state maint")
                    self._command(f"del server {BACKEND}/{name}", expect="Server deleted")
            raise
        replace_file(self.config, text, mode=0o600)
        gone = [name for name in current if name not in wanted]
        if gone:
            self._remove(gone)

    def drain(self, names: Sequence[str]) -> None:
        """See :meth:`Proxy.drain` (its active and its backup server alike).  Not persisted:
        a restarted HAProxy serves with every server its configuration names."""
        if not self.is_running():
            return
        wanted = set(names)
        for row in self._stat():
            if _public_name(row["svname"]) in wanted:
                self._command(f"set server {BACKEND}/{row['svname']} state drain")

    def servers(self) -> list[ServerState]:
        """Every server of the running HAProxy (``show stat``); those of the configuration
        on disk, status DOWN, when it does not run."""
        if not self.is_running():
            return [ServerState(name=b.name, host=b.host, port=b.port, backup=bk,
                                status="DOWN", sessions=0)
                    for b, bk in self._configured()]
        out = []
        for row in self._stat():
            host, _, port = (row.get("addr") or ":0").rpartition(":")
            status = (row.get("status") or "").strip()
            word = "UP" if status == "no check" else (status.split() or ["DOWN"])[0]
            check = (row.get("check_status") or "").lstrip("* ").strip()
            detail = (row.get("last_chk") or "").strip()
            out.append(ServerState(
                name=_public_name(row["svname"]), host=host, port=int(port or 0),
                backup=row.get("bck") == "1", status=word,
                sessions=int(row.get("scur") or 0),
                check=(f"{check} {detail}".strip() or None)))
        return out

    # -- internals -------------------------------------------------------------------------------

    def _wanted(self, active: Sequence[Backend],
                backup: Sequence[Backend]) -> dict[str, tuple[Backend, bool]]:
        wanted: dict[str, tuple[Backend, bool]] = {}
        for b, is_backup in [*((a, False) for a in active), *((k, True) for k in backup)]:
            if not SERVER_NAME.match(b.name):
                raise ProxyError(f"server name {b.name!r} is not valid for HAProxy",
                                 where=str(self.config),
                                 hint="letters, digits, '.', '_' and '-'")
            if not HOST.match(b.host) or not 0 < b.port < 65536:
                raise ProxyError(f"server {b.name}: {b.host}:{b.port} is not an address",
                                 where=str(self.config))
            name = b.name + (BACKUP_SUFFIX if is_backup else "")
            if name in wanted:
                raise ProxyError(f"server {b.name} is named twice", where=str(self.config))
            wanted[name] = (b, is_backup)
        return wanted

    def _server_options(self, backup: bool) -> list[str]:
        r = self.readiness
        inter = max(100, int(r.interval * 1000))
        # Dynamic servers do not inherit default-server in 2.6: every option is spelled out.
        # observe layer7 + error-limit 1 + on-error mark-down: one failed real request (refused,
        # reset, empty, 5xx) takes the server out at once instead of after `fall` checks.
        # A server marked down checks again every `fastinter`, not `inter`: on an overloaded
        # host one refused connection takes a good server out too, and it must come back in
        # half a second (rise 2), not after two full intervals.
        fast = str(min(inter, 250))
        opts = ["check", "inter", str(inter), "fastinter", fast,
                "downinter", fast, "rise", "2", "fall", str(max(1, r.retries)),
                "observe", "layer7", "error-limit", "1", "on-error", "mark-down"]
        return [*opts, "backup"] if backup else opts

    def _render(self, servers: list[tuple[Backend, bool]]) -> str:
        r = self.readiness
        bind = f"{self.address}:{self.port}"  # HAProxy takes the last ':' (so ":::80" works)
        lines = [
            f"# HAProxy for the Alicorn module {self.module}.  Written by Alicorn on every change",
            "# (which it applies through admin.sock, without a reload); edits here are lost.",
            "global",
            "    stats socket unix@admin.sock mode 600 level admin expose-fd listeners",
            "    stats timeout 30s",
            "    log stdout format raw local0 notice",
            "    hard-stop-after 30s",
            "",
            "defaults",
            "    mode http",
            "    log global",
            "    option httplog",
            # Only abnormal requests are logged: the log is for finding failures, not traffic.
            "    option dontlog-normal",
            # No idle server-side connection: nothing stale to reuse after a replica goes, and
            # nothing that keeps a removed server from being deleted.
            "    option http-server-close",
            # Every retry goes to another server (backups when no active one is up).
            "    retries 5",
            "    option redispatch 1",
            "    retry-on all-retryable-errors",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    timeout queue 10s",
            "    timeout http-request 10s",
            "    timeout http-keep-alive 10s",
            f"    timeout check {max(100, int(r.timeout * 1000))}ms",
            "",
            f"frontend {FRONTEND}",
            f"    bind {bind}",
            f"    default_backend {BACKEND}",
            "",
            f"backend {BACKEND}",
            "    balance roundrobin",
            # Spread over every backup when the active servers are all down, not the first one.
            "    option allbackups",
            f"    option httpchk GET {r.path}",
        ]
        for b, is_backup in servers:
            name = b.name + (BACKUP_SUFFIX if is_backup else "")
            lines.append(f"    server {name} {b.host}:{b.port} "
                         + " ".join(self._server_options(is_backup)))
        return "\n".join(lines) + "\n"

    def _configured(self) -> list[tuple[Backend, bool]]:
        """The servers the configuration on disk names."""
        try:
            text = self.config.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            m = _SERVER_LINE.match(line)
            if m:
                name, host, port, bk = m.groups()
                out.append((Backend(name=_public_name(name), host=host, port=int(port)),
                            bk is not None))
        return out

    def _validate(self, path: Path) -> None:
        """``haproxy -c``; :class:`ProxyError` with HAProxy's own words when it refuses."""
        result = run([which("haproxy"), "-c", "-f", path.name], cwd=path.parent, check=False,
                     what="haproxy -c", timeout=30)
        if result.returncode == 0:
            return
        output = (result.stdout + result.stderr).splitlines()
        alerts = [re.sub(r"^\[ALERT\]\s*\(\d+\)\s*:\s*", "", line).strip()
                  for line in output if "[ALERT]" in line]
        useful = [a for a in alerts if "rror(s) found" not in a and "Fatal errors" not in a]
        reason = "; ".join(useful or alerts or output[-3:]) or "no output"
        raise ProxyError(f"HAProxy refuses the configuration for module {self.module}: "
                         f"{reason}", where=str(path),
                         hint="the servers HAProxy had keep serving; check the backend "
                              "addresses")

    def _check_port(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        # A HAProxy of ours killed a moment ago may not have released its listener yet.
        deadline = time.monotonic() + 1.0
        while True:
            try:
                self._try_bind(family)
                return
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    self._port_error(e)
            time.sleep(0.1)

    def _try_bind(self, family: socket.AddressFamily) -> None:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # SO_REUSEADDR as HAProxy sets it: a port in TIME_WAIT is free, a listener is not.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.address, self.port))

    def _port_error(self, e: OSError) -> NoReturn:
        if e.errno == errno.EADDRINUSE:
            raise ProxyError(
                f"port {self.port} on {self.address} is already in use by another "
                f"process; HAProxy for module {self.module} cannot listen there",
                where=str(self.config),
                hint=f"choose another port, or stop what listens there "
                     f"(ss -ltnp 'sport = :{self.port}')") from e
        raise ProxyError(f"HAProxy for module {self.module} cannot listen on "
                         f"{self.address}:{self.port}: {e.strerror}",
                         where=str(self.config)) from e

    def _master_pid(self) -> int | None:
        pid = daemon.read_pid(self.pidfile)
        if pid is None:
            return None
        # After a reboot the pid may belong to something else.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"haproxy" in cmdline else None

    def _stop_pid(self, pid: int) -> None:
        workers = _children(pid)
        # SIGUSR1: soft stop, in-flight requests finish; then SIGTERM, then SIGKILL.
        for sig, wait in ((signal.SIGUSR1, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            for p in [pid, *workers]:
                if daemon.alive(p):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(daemon.alive(p) for p in [pid, *workers]):
                time.sleep(0.05)
            if not any(daemon.alive(p) for p in [pid, *workers]):
                return

    def _remove(self, names: list[str]) -> None:
        """Drain ``names``, delete each once it has no connection (closed after
        ``drain_timeout``)."""
        for name in names:
            self._command(f"set server {BACKEND}/{name} state drain")
        deadline = time.monotonic() + self.drain_timeout
        pending = set(names)
        while pending:
            busy = {row["svname"] for row in self._stat()
                    if row["svname"] in pending and int(row.get("scur") or 0) > 0}
            for name in pending - busy:
                self._delete(name)
            pending = busy
            if not pending:
                break
            if time.monotonic() > deadline:
                for name in pending:
                    self._command(f"set server {BACKEND}/{name} state maint")
                    self._command(f"shutdown sessions server {BACKEND}/{name}")
                    self._delete(name, wait=2.0)
                break
            time.sleep(0.1)

    def _delete(self, name: str, *, wait: float = 1.0) -> None:
        self._command(f"set server {BACKEND}/{name} state maint")
        deadline = time.monotonic() + wait
        while True:
            out = self._command(f"del server {BACKEND}/{name}", expect=None)
            if "Server deleted" in out or "No such server" in out:
                return
            if time.monotonic() > deadline:
                raise ProxyError(f"HAProxy did not delete server {name}: {out.strip()}",
                                 where=str(self.admin_socket))
            time.sleep(0.05)

    def _stat(self) -> list[dict[str, str]]:
        text = self._command("show stat", expect=None)
        if not text.startswith("# "):
            raise ProxyError(f"unexpected answer to 'show stat': {text[:200]!r}",
                             where=str(self.admin_socket))
        rows = csv.DictReader(io.StringIO(text[2:]))
        return [row for row in rows if row.get("pxname") == BACKEND
                and row.get("svname") not in ("FRONTEND", "BACKEND")]

    def _command(self, command: str, *, expect: str | None = "") -> str:
        """One runtime API command.  ``expect``: "" when success prints nothing, a text the
        answer must contain, None to take any answer."""
        try:
            with self._connect() as s:
                s.sendall(command.encode() + b"\n")
                chunks = []
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
        except OSError as e:
            raise ProxyError(f"the HAProxy runtime socket does not answer "
                             f"({command.split()[0]} …): {e}", where=str(self.admin_socket),
                             hint="is HAProxy running? `alicorn status` / its log "
                                  f"{self.logfile}") from e
        out = b"".join(chunks).decode("utf-8", "replace")
        if expect is not None and (out.strip() if expect == "" else expect not in out):
            raise ProxyError(f"HAProxy refused '{command}': {out.strip()}",
                             where=str(self.admin_socket))
        return out

    @contextlib.contextmanager
    def _connect(self) -> Iterator[socket.socket]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(_SOCKET_TIMEOUT)
        try:
            path = str(self.admin_socket)
            if len(path) < _SUN_PATH_MAX:
                s.connect(path)
            else:
                # A deep directory: reach the socket through a short /proc/self/fd path.
                fd = os.open(self.directory, os.O_PATH)
                try:
                    s.connect(f"/proc/self/fd/{fd}/{self.admin_socket.name}")
                finally:
                    os.close(fd)
            yield s
        finally:
            s.close()

    def _log_tail(self) -> str:
        try:
            lines = self.logfile.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "no log"
        alerts = [line for line in lines[-30:] if "[ALERT]" in line]
        return (alerts or lines[-3:] or ["no log"])[-1].strip()


def _public_name(server: str) -> str:
    return server.removesuffix(BACKUP_SUFFIX)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (HAProxy's workers)."""
    from alicorn import daemon
    return [p.pid for p in daemon.processes() if p.ppid == pid]
