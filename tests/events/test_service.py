"""The service end to end through a crash: an advisory lands in the image's repository, the
service rebuilds, is killed with -9 in the middle of the rebuild's package download, and on
restart fails the dead build, builds it again, and publishes; the tag never names a
half-published image."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alicorn.config import load_settings
from alicorn.events.store import EventStore
from alicorn.registry.client import RegistryClient
from alicorn.store.builds import BuildStore
from conftest import EXAMPLES, Cli, require

sys.path.insert(0, str(Path(__file__).parent))
from test_serve_cli import Served, wait_for

pytestmark = pytest.mark.integration


class _Repo(http.server.SimpleHTTPRequestHandler):
    """Serves the repository; while ``stall`` is set, a package download hangs (as a slow
    mirror would) until ``release`` is set."""

    stall = threading.Event()
    stalled = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path.endswith(".rpm") and self.stall.is_set():
            self.stalled.set()
            self.release.wait(120)
        super().do_GET()

    def log_message(self, *_args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass    # a download cut short by the killed dnf is expected here


@pytest.fixture
def repo_server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "pony" / "repo"
    root.mkdir(parents=True)

    def handler(*args: Any) -> _Repo:
        return _Repo(*args, directory=str(root))
    for e in (_Repo.stall, _Repo.stalled, _Repo.release):
        e.clear()
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, int(server.server_address[1])
    _Repo.release.set()
    server.shutdown()
    server.server_close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_9_mid_rebuild_then_restart(cli: Cli, repo_server: tuple[Path, int],
                                         tmp_path: Path) -> None:
    require("rpmbuild", "createrepo_c", "busybox", "dnf", "podman", "skopeo",
            "docker-registry")
    root, port = repo_server
    build_repo = [str(EXAMPLES / "pony" / "rpm" / "build-repo"), str(root)]
    subprocess.run([*build_repo, "--version", "1"], check=True, capture_output=True)
    shutil.copytree(EXAMPLES / "pony" / "rpm", tmp_path / "pony", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("repo"))
    recipe = tmp_path / "pony" / "pony.yaml"
    text = recipe.read_text()
    assert "url: repo\n" in text
    recipe.write_text(text.replace("url: repo\n", f"url: http://127.0.0.1:{port}\n"))
    settings = load_settings(cli.home)
    store = BuildStore(settings.database_url)

    first = Served(cli, "--interval", "0.5")
    try:
        first.wait_log("alicorn service started")
        rc, built = cli.json("build", str(recipe), timeout=600)   # run by the service
        assert rc == 0, built
        old = built["digest"]
        registry = RegistryClient(settings.registry)

        def tag() -> str | None:
            found = registry.get_manifest("pony-rpm", "latest")
            return str(found[2]) if found else None
        assert tag() == old
        first.wait_log(f"watch http://127.0.0.1:{port}: watching")

        # The security update lands; the mirror is slow to hand out its packages.
        _Repo.stall.set()
        subprocess.run([*build_repo, "--version", "both"], check=True, capture_output=True)
        first.wait_log("FEDORA-2024-b7e1c3d2a9", timeout=60)
        wait_for("dnf to ask for the new busybox", _Repo.stalled.is_set, 120)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.kill()
    [rebuild] = EventStore(settings.database_url).rebuilds()
    dead = store.get(rebuild.build_id or "")
    assert dead.state == "running" and dead.worker and dead.worker.endswith(":group")
    assert _group_alive(first.proc.pid)          # its dnf still hangs on the download
    assert tag() == old

    _Repo.stall.clear()
    _Repo.release.set()
    second = Served(cli, "--interval", "0.5")
    try:
        second.wait_log("build(s) of a dead worker marked failed")
        failed = store.get(dead.id)
        assert failed.state == "failed" and "died during the build" in (failed.error or "")
        assert not _group_alive(first.proc.pid)
        assert not (settings.work_dir / dead.id).exists()
        second.wait_log("submitting it again", timeout=60)
        second.wait_log("done: rebuilt pony-rpm", timeout=300)
        assert second.stop() == 0
    finally:
        second.kill()
    [event] = EventStore(settings.database_url).events()
    assert event.state == "done" and event.advisory_id == "FEDORA-2024-b7e1c3d2a9"
    [rebuild] = EventStore(settings.database_url).rebuilds()
    assert rebuild.state == "done" and rebuild.attempt == 2
    new = store.get(rebuild.build_id or "")
    assert new.id != dead.id and new.state == "done" and new.digest == rebuild.new_digest
    assert {p.name: p.version for p in new.packages}["busybox"] == "1.35.0-2.fc40"
    assert tag() == new.digest != old
    text = second.text()
    assert "submitting it again" in text and f"build {new.id}: done" in text
