"""Shared fixtures.

Integration tests use the real tools.  A test skips only when a tool is truly absent, and with
ALICORN_TEST_REQUIRE_ALL=1 (set by .ci/run, where everything is installed) such a skip fails.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED_DATA = ROOT.parent / "shared" / "data"
ALICORN = [sys.executable, "-m", "alicorn"]


def require(*tools: str) -> None:
    """Skip unless every tool is on PATH (fail instead under ALICORN_TEST_REQUIRE_ALL)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    reason = f"needs {', '.join(missing)} (run scripts/bootstrap)"
    if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_network_archive() -> None:
    """Debian's package archive is one of the registries this project installs from."""
    require("mmdebstrap")


class Cli:
    """Runs the real `alicorn` command line against one ALICORN_HOME."""

    def __init__(self, home: Path, env: dict[str, str] | None = None):
        self.home = home
        # `alicorn serve` answers HTTP too: on a port of its own per home, never the default
        # one (which a user's service, or a demo, may hold).
        self.env = {**os.environ, "ALICORN_HOME": str(home),
                    "ALICORN_API_LISTEN": f"127.0.0.1:{free_port()}", **(env or {})}

    def __call__(self, *args: str, check: bool = False, timeout: float = 900,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*ALICORN, *args], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"alicorn {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def json(self, *args: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        proc = self(*args, "--json", **kw)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        assert lines, f"no output from alicorn {' '.join(args)}: {proc.stderr}"
        return proc.returncode, json.loads(lines[-1])

    def down(self) -> None:
        self("down", timeout=60)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    c = Cli(tmp_path / "home")
    yield c
    c.down()


@pytest.fixture(scope="session")
def shared_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """One ALICORN_HOME for the tests that build the pony, so they share caches and registry."""
    c = Cli(tmp_path_factory.mktemp("shared-home"))
    yield c
    c.down()


def git_repo(src: Path, dest: Path, *, branch: str = "main") -> str:
    """A git repository at ``dest`` holding the files of ``src``; returns its commit."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    shutil.copytree(src, dest, dirs_exist_ok=True)
    for args in (["init", "-q", "-b", branch], ["add", "-A"], ["commit", "-q", "-m", "recipe"]):
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env)
    return subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    from alicorn.config import free_port as fp
    return fp()


# -- signed pony images for the rollout tests -----------------------------------------------------

ROLLOUT_GOOD_PAGE = "Hello from pony"


class PonyImages:
    """Signed, published RPM pony images in one ALICORN_HOME (``cli``), all in the repository
    ``pony-rpm`` of its local registry (``registry``):

    - ``v1``: busybox 1.35.0-1 (which FEDORA-2024-b7e1c3d2a9 fixes), tag ``latest`` at first;
    - ``v2``: busybox 1.35.0-2, built after the repository got the update; tag ``latest`` now;
    - ``broken``: v1's packages, but its web server answers 404 for every page (it serves
      /etc, which has no index.html), from the start; tag ``broken``;
    - ``soured``: serves the page for ``SOURED_AFTER`` seconds after it starts, then its web
      server stops (connections refused; the container keeps running): it passes readiness
      and fails during a soak; tag ``soured``.

    Each value is the ``alicorn build --json`` result (``digest``, ``image`` =
    ``addr/pony-rpm@sha256:…``, ``build_id``).  ``example`` is the copy of examples/pony/rpm
    whose ``repo`` the builds used (now at ``--version both``).
    """

    SOURED_AFTER = 6

    def __init__(self, cli: Cli, example: Path, builds: dict[str, dict[str, Any]]):
        self.cli = cli
        self.example = example
        self.v1, self.v2 = builds["v1"], builds["v2"]
        self.broken, self.soured = builds["broken"], builds["soured"]
        self.registry = self.v1["image"].split("/", 1)[0]
        self.repository = self.v1["image"].split("@", 1)[0]


def _pony_variant(example: Path, name: str, tag: str, entrypoint: list[str]) -> Path:
    text = (example / "pony.yaml").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("entrypoint:"):
            line = "entrypoint: " + json.dumps(entrypoint)
        lines.append(line)
    lines.append(f"tag: {tag}")
    path = example / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def pony_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PonyImages]:
    require("rpmbuild", "createrepo_c", "dnf", "busybox", "podman", "skopeo", "docker-registry")
    cli = Cli(tmp_path_factory.mktemp("rollout-home"))
    example = tmp_path_factory.mktemp("rollout-pony") / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", example, ignore=shutil.ignore_patterns("repo"))

    def build_repo(version: str) -> None:
        subprocess.run([str(example / "build-repo"), str(example / "repo"), "--version",
                        version], check=True, capture_output=True)

    def build(recipe: Path, *extra: str) -> dict[str, Any]:
        rc, result = cli.json("build", str(recipe), *extra)
        assert rc == 0, result
        return result

    bb = "/usr/bin/busybox"
    broken = _pony_variant(example, "broken", "broken",
                           [bb, "httpd", "-f", "-v", "-p", "80", "-h", "/etc"])
    soured = _pony_variant(example, "soured", "soured", [
        bb, "sh", "-c",
        f"{bb} httpd -f -p 80 -h /var/www/html & {bb} sleep {PonyImages.SOURED_AFTER}; "
        f"kill $!; exec {bb} sleep 1000000"])
    build_repo("1")
    builds = {"broken": build(broken, "--skip-checks"), "soured": build(soured, "--skip-checks"),
              "v1": build(example / "pony.yaml")}
    build_repo("both")
    builds["v2"] = build(example / "pony.yaml")
    try:
        yield PonyImages(cli, example, builds)
    finally:
        cli.down()


# -- what podman has of a module (the rollout tests) ----------------------------------------------

ROLLOUT_LABEL = "org.alicorn.module"


def podman_containers(module: str | None = None) -> list[dict[str, Any]]:
    """``podman ps -a --format json``: every container, or only ``module``'s (its
    ``org.alicorn.module`` label), running or not."""
    args = ["podman", "ps", "-a", "--format", "json"]
    if module is not None:
        args += ["--filter", f"label={ROLLOUT_LABEL}={module}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    found: list[dict[str, Any]] = json.loads(out or "[]") or []
    return found


def images_used_elsewhere(module: str) -> set[str]:
    """The ids of the images a container that is not one of ``module``'s runs (another
    test's, from the same bytes: podman keeps that image, and list-security rightly lists
    it, under whichever of its names comes first)."""
    return {str(c.get("ImageID")) for c in podman_containers()
            if (c.get("Labels") or {}).get(ROLLOUT_LABEL) != module}


def remove_module(cli: Cli, name: str) -> None:
    """``alicorn undeploy``, then whatever container of the module is left, by force."""
    cli("undeploy", name, timeout=180)
    ids = [str(c["Id"]) for c in podman_containers(name)]
    if ids:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True)


def page(port: int, *, timeout: float = 10) -> str:
    """The body ``GET http://127.0.0.1:PORT/`` answers."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as resp:
        return str(resp.read().decode("utf-8", "replace"))


class StallingRepo(http.server.ThreadingHTTPServer):
    """Serves an RPM repository (the RPM pony's), but holds every package download until
    :attr:`release` is set: a build that stays in dnf's download as long as a test needs."""

    daemon_threads = True

    def __init__(self, root: Path):
        self.root = root
        self.stalled = threading.Event()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), partial(_StallingHandler, directory=str(root)))


class _StallingHandler(http.server.SimpleHTTPRequestHandler):
    server: StallingRepo

    def do_GET(self) -> None:
        if self.path.endswith(".rpm") and not self.server.release.is_set():
            self.server.stalled.set()
            self.server.release.wait(300)
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stalling_repo(tmp_path: Path) -> Iterator[StallingRepo]:
    require("rpmbuild", "createrepo_c", "dnf", "busybox")
    example = tmp_path / "stall-pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", example, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(example / "build-repo"), str(example / "repo"), "--version", "1"],
                   check=True, capture_output=True)
    server = StallingRepo(example / "repo")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
