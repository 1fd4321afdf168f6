"""Serving the web application with uvicorn: in the foreground (``alicorn serve --api-only``)
or in a thread beside the rebuild service (``alicorn serve``)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from alicorn.config import Settings
from alicorn.errors import Error
from alicorn.web.model import ApiConfig, load_api_config


@dataclass
class ApiServer:
    """One uvicorn server for one ALICORN_HOME."""

    settings: Settings
    config: ApiConfig = field(default_factory=ApiConfig)
    _server: object | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def for_home(cls, settings: Settings, *, listen: str | None = None) -> ApiServer:
        config = load_api_config(settings)
        if listen is not None:
            config.set("listen", listen, where="--listen")
        return cls(settings, config)

    @property
    def url(self) -> str:
        host, port = self.config.address()
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def _uvicorn(self) -> object:
        import uvicorn

        from alicorn.web.app import create_app

        host, port = self.config.address()
        app = create_app(self.settings, self.config)
        return uvicorn.Server(uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False,
            lifespan="off", server_header=False, timeout_graceful_shutdown=5))

    def run(self) -> None:
        """Serve in the foreground until SIGINT/SIGTERM."""
        server = self._uvicorn()
        self._check_port()
        self._claim()
        try:
            server.run()  # type: ignore[attr-defined]
        finally:
            self._release()

    def _claim(self) -> None:
        """One API per ALICORN_HOME (its rate limits and caches are its own): write
        ``run/api.pid`` and ``run/api.url``, refusing when another live process holds them."""
        import os

        from alicorn import daemon

        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.settings.run_dir / "api.pid"
        holder = daemon.read_pid(pidfile)
        if holder is not None and holder != os.getpid():
            raise Error(f"the API of {self.settings.home} is already served (pid {holder}"
                        + (f", {self.detached_url(self.settings)}" if self.detached_url(
                            self.settings) else "") + ")",
                        hint="`alicorn down` stops it; one API serves one ALICORN_HOME")
        pidfile.write_text(f"{os.getpid()}\n")
        (self.settings.run_dir / "api.url").write_text(self.url + "\n")

    def _release(self) -> None:
        import os

        pidfile = self.settings.run_dir / "api.pid"
        try:
            if int(pidfile.read_text().strip() or 0) == os.getpid():
                pidfile.unlink()
                (self.settings.run_dir / "api.url").unlink(missing_ok=True)
        except (OSError, ValueError):
            pass

    def start(self, *, timeout: float = 15.0) -> None:
        """Serve in a background thread; returns once it listens (Error if it cannot)."""
        self._check_port()
        self._claim()
        server = self._uvicorn()
        self._server = server

        def run() -> None:
            # A thread of its own, with its own event loop; uvicorn installs no signal
            # handlers outside the main thread, so SIGTERM stays the service's.
            asyncio.run(server.serve())  # type: ignore[attr-defined]

        self._thread = threading.Thread(target=run, name="alicorn-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not getattr(server, "started", False):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise Error(f"the API did not start on {self.config.listen}",
                            hint="the service's log says why; --listen picks another "
                                 "address, --no-api serves none")
            time.sleep(0.05)

    def spawn(self, *, timeout: float = 20.0) -> int:
        """Start ``alicorn serve --api-only`` detached (pid file ``run/api.pid``, log
        ``run/api.log``); returns its pid once it answers (Error naming the log if not)."""
        import sys
        import urllib.request

        from alicorn import daemon

        pidfile = self.settings.run_dir / "api.pid"
        running = daemon.read_pid(pidfile)
        if running is not None:
            raise Error(f"the API of {self.settings.home} is already served (pid {running})",
                        hint="`alicorn down` stops it")
        self._check_port()
        log = self.settings.run_dir / "api.log"
        pid = daemon.spawn([sys.executable, "-m", "alicorn", "serve", "--api-only",
                            "--listen", self.config.listen], pidfile=pidfile, logfile=log,
                           env={"ALICORN_HOME": str(self.settings.home)})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return pid
            except OSError:
                pass
            if not daemon.alive(pid):
                break
            time.sleep(0.2)
        daemon.stop(pidfile)
        raise Error(f"the API did not start on {self.config.listen}", where=str(log),
                    hint="its log says why")

    @staticmethod
    def detached_url(settings: Settings) -> str | None:
        """The URL of the API ``spawn`` started for ``settings``, if it still runs."""
        from alicorn import daemon

        if daemon.read_pid(settings.run_dir / "api.pid") is None:
            return None
        try:
            return (settings.run_dir / "api.url").read_text().strip() or None
        except OSError:
            return None

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._release()

    def _check_port(self) -> None:
        import socket

        host, port = self.config.address()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                raise Error(f"cannot listen on {self.config.listen}: {e.strerror}",
                            hint="--listen HOST:PORT picks another address (or `alicorn api "
                                 "config listen HOST:PORT`); --no-api serves none") from e
