"""``alicorn serve`` and ``alicorn watch`` as a user runs them: real processes on a temporary
ALICORN_HOME, stopped with SIGTERM, exiting when idle, one per ALICORN_HOME."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alicorn.config import load_settings
from alicorn.store.builds import BuildStore
from alicorn.store.db import session_factory
from alicorn.store.event_models import EventRow
from alicorn.worker.local import worker_running
from conftest import ALICORN, EXAMPLES, SHARED_DATA, Cli, require

UPDATEINFO = SHARED_DATA / "updateinfo"


def shared(name: str) -> Path:
    path = UPDATEINFO / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data set, ../shared/data/MANIFEST.tsv)")
    return path


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Served:
    """``alicorn serve ARGS`` in its own session, its stdout in a file."""

    def __init__(self, cli: Cli, *args: str):
        self.log = cli.home.parent / f"serve-{time.monotonic_ns()}.log"
        cli.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*ALICORN, "serve", *args], env=cli.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 60.0) -> None:
        try:
            wait_for(f"{needle!r} in the service's log", lambda: needle in self.text()
                     or self.proc.poll() is not None, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}; the log:\n{self.text()}") from None
        assert needle in self.text(), self.text()

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def served(cli: Cli) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*args: str) -> Served:
        s = Served(cli, *args)
        started.append(s)
        return s
    yield start
    for s in started:
        s.kill()


def test_sigterm_stops_it_cleanly(cli: Cli, served: Callable[..., Served],
                                  tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    cli("watch", "add", str(feeds), check=True)
    service = served("--interval", "0.2")
    service.wait_log("alicorn service started")
    settings = load_settings(cli.home)
    wait_for("the worker lock", lambda: worker_running(settings))
    pid = int((settings.run_dir / "worker.pid").read_text())
    assert pid == service.proc.pid

    shutil.copy(shared("libdnf-updateinfo.xml"), feeds / "new.xml")
    service.wait_log(f"watch {feeds.as_uri()}: changed")
    assert "added" in service.text()

    assert service.stop() == 0
    assert "alicorn service stopped (SIGTERM)" in service.text()
    assert not (settings.run_dir / "worker.pid").exists()
    assert not worker_running(settings)
    listed = json.loads(cli("watch", "list", "--json", check=True).stdout)
    assert listed[0]["url"] == feeds.as_uri() and listed[0]["digest"].startswith("sha256:")
    assert listed[0]["changed_at"] and listed[0]["error"] is None


def test_idle_exit(cli: Cli, served: Callable[..., Served]) -> None:
    service = served("--no-watch", "--idle-exit", "1", "--interval", "0.2")
    assert service.proc.wait(30) == 0
    assert "idle for 1 s; exiting" in service.text()


def test_one_service_per_home_and_detach_and_down(cli: Cli,
                                                   served: Callable[..., Served]) -> None:
    first = served("--no-watch")
    first.wait_log("alicorn service started")
    settings = load_settings(cli.home)
    wait_for("the worker lock", lambda: worker_running(settings))
    second = cli("serve", "--no-watch", timeout=30)
    assert second.returncode == 1
    assert "another alicorn service (or worker) is running" in second.stderr
    assert f"pid {first.proc.pid}" in second.stderr
    detached = cli("serve", "--detach", timeout=30)
    assert detached.returncode == 1 and "already running" in detached.stderr
    assert first.stop() == 0

    started = cli("serve", "--detach", "--interval", "0.5", check=True, timeout=30)
    pid = int(started.stdout.split("pid ")[1].split(")")[0])
    wait_for("the detached service's lock", lambda: worker_running(settings))
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"serve" in cmdline and b"--idle-exit" not in cmdline
    down = cli("down", check=True, timeout=60)
    assert "worker stopped" in down.stdout
    wait_for("the service to end", lambda: not Path(f"/proc/{pid}").exists()
             or b") Z" in Path(f"/proc/{pid}/stat").read_bytes())
    assert not worker_running(settings)
    assert "alicorn service stopped (SIGTERM)" in (settings.run_dir / "worker.log").read_text()


def test_build_starts_the_full_service_in_the_background(cli: Cli, tmp_path: Path) -> None:
    recipe = tmp_path / "pony.yaml"
    text = (EXAMPLES / "pony" / "rpm" / "pony.yaml").read_text()
    recipe.write_text(text.replace("url: repo", "url: http://127.0.0.1:9/none"))
    build_id = cli("build", str(recipe), "--no-wait", check=True, timeout=60).stdout.strip()
    settings = load_settings(cli.home)
    pid = int((settings.run_dir / "worker.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    # The full service (events, watching, builds), without the HTTP API: a build asked for
    # no web server (`alicorn serve --api-only --detach` serves one beside it).
    assert cmdline[-5:-1] == [b"serve", b"--no-api", b"--idle-exit", b"900"], cmdline
    store = BuildStore(settings.database_url)
    wait_for("the build to fail", lambda: store.get(build_id).state == "failed", 120)
    assert "not reachable" in (store.get(build_id).error or "")
    log = (settings.run_dir / "worker.log").read_text()
    assert f"build {build_id}: failed" in log


def test_once_dry_run_prints_the_plan_and_writes_no_event(cli: Cli, tmp_path: Path) -> None:
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from eventdata import build, busybox

    require("rpmbuild", "createrepo_c", "busybox")
    settings = load_settings(cli.home)
    store = BuildStore(settings.database_url)
    build(store, "pony-rpm", [busybox("1.fc40")])
    repo = tmp_path / "repo"
    subprocess.run([str(EXAMPLES / "pony" / "rpm" / "build-repo"), str(repo), "--version",
                    "both"], check=True, capture_output=True)
    cli("watch", "add", str(repo), check=True)
    proc = cli("serve", "--once", "--dry-run", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"watch {repo.as_uri()}: changed: 1 advisories read: 1 added" in proc.stdout
    assert "FEDORA-2024-b7e1c3d2a9: would rebuild pony-rpm" in proc.stdout
    assert "plan: rebuild pony-rpm" in proc.stdout
    assert "busybox 1.35.0-1.fc40 < 1.35.0-2.fc40" in proc.stdout
    with session_factory(settings.database_url)() as s:
        assert s.query(EventRow).count() == 0
    assert [b.state for b in store.recent()] == ["done"]       # nothing queued
    [source] = json.loads(cli("watch", "list", "--json", check=True).stdout)
    assert source["digest"] is None                              # nothing recorded


def test_watch_commands(cli: Cli, tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    shutil.copy(shared("libdnf-updateinfo.xml"), feed)
    missing = cli("watch", "add", str(tmp_path / "missing.xml"))
    assert missing.returncode == 2 and "missing.xml: cannot watch it" in missing.stderr
    added = json.loads(cli("watch", "add", str(feed), "--json", check=True).stdout)
    assert added["kind"] == "feed" and added["origin"] == "user"
    checked = cli("watch", "check", check=True)
    assert f"watch {feed.as_uri()}: changed:" in checked.stdout
    assert "unchanged" in cli("watch", "check", check=True).stdout
    listed = cli("watch", "list", check=True).stdout
    assert feed.as_uri() in listed and "feed\tuser" in listed
    feed.unlink()
    failing = cli("watch", "check")
    assert failing.returncode == 1 and "error:" in failing.stdout
    assert "error:" in cli("watch", "list", check=True).stdout
    cli("watch", "remove", str(added["id"]), check=True)
    assert json.loads(cli("watch", "list", "--json", check=True).stdout) == []
    gone = cli("watch", "remove", str(feed))
    assert gone.returncode == 2 and "is not watched" in gone.stderr


def test_a_stale_lock_file_does_not_block(cli: Cli, served: Callable[..., Served]) -> None:
    """A service killed with -9 leaves its lock file and pid file; the next one starts."""
    first = served("--no-watch")
    first.wait_log("alicorn service started")
    settings = load_settings(cli.home)
    wait_for("the worker lock", lambda: worker_running(settings))
    first.kill()
    assert (settings.run_dir / "worker.pid").exists()
    second = served("--no-watch")
    second.wait_log("alicorn service started")
    wait_for("the new lock", lambda: worker_running(settings))
    assert int((settings.run_dir / "worker.pid").read_text()) == second.proc.pid
    assert second.stop() == 0
    assert os.path.exists(settings.run_dir / "worker.lock")


def test_idle_exit_counts_from_the_last_activity(cli: Cli, served: Callable[..., Served],
                                                 tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    cli("watch", "add", str(feeds), check=True)
    service = served("--idle-exit", "5", "--interval", "0.2")
    service.wait_log("alicorn service started")
    started = time.monotonic()
    time.sleep(2.5)
    shutil.copy(shared("libdnf-updateinfo.xml"), feeds / "new.xml")
    service.wait_log(f"watch {feeds.as_uri()}: changed")
    active = time.monotonic()
    time.sleep(max(0.0, started + 6 - time.monotonic()))
    if time.monotonic() - active < 4.5:
        assert service.proc.poll() is None, service.text()   # 6 s after start, still up
    assert service.proc.wait(30) == 0
    assert time.monotonic() - active >= 4.5
    assert "idle for 5 s; exiting" in service.text()


def test_once_carries_an_event_through_and_exits(cli: Cli, tmp_path: Path) -> None:
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from eventdata import build, busybox

    require("rpmbuild", "createrepo_c", "busybox")
    settings = load_settings(cli.home)
    store = BuildStore(settings.database_url)
    build(store, "pony-rpm", [busybox("1.fc40")])
    repo = tmp_path / "repo"
    subprocess.run([str(EXAMPLES / "pony" / "rpm" / "build-repo"), str(repo), "--version",
                    "both"], check=True, capture_output=True)
    cli("watch", "add", str(repo), check=True)
    proc = cli("serve", "--once", timeout=300)
    assert proc.returncode == 0, proc.stderr
    # The old build's recipe is a stub that cannot build: the rebuild fails, and says so.
    rebuilt = [b for b in store.recent() if b.trigger]
    assert len(rebuilt) == 1 and rebuilt[0].state == "failed"
    assert f"build {rebuilt[0].id}: failed" in proc.stdout
    assert "rebuild failed" in proc.stdout
    with session_factory(settings.database_url)() as s:
        [event] = s.query(EventRow).all()
    assert event.state == "failed" and "pony-rpm" in (event.reason or "")
    assert "alicorn service stopped" in proc.stdout
