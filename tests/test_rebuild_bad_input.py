"""The rebuild service when things go wrong: a dry run, a crash mid-event, bad requests.

One ALICORN_HOME for the file, driven with ``alicorn serve`` processes this test starts itself
(the background service ``alicorn build`` starts is stopped first with ``alicorn down``):

1. the RPM pony built at ``--version 1``; the repository rewritten with ``--version both``;
2. ``alicorn serve --once --dry-run`` prints the plan and writes nothing (no event, no build,
   the tag where it was);
3. ``alicorn serve`` is killed with SIGKILL (its whole process group) while the rebuild's
   build is in its security gate: nothing is published, the event is not final; a new
   ``alicorn serve`` fails the dead build, builds it again (attempt 2) and publishes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import ALICORN, EXAMPLES, Cli, require

pytestmark = pytest.mark.integration

ADVISORY = "FEDORA-2024-b7e1c3d2a9"
TIMEOUT = float(os.environ.get("ALICORN_TEST_REBUILD_TIMEOUT", "240"))


def build_repo(example: Path, version: str) -> None:
    subprocess.run([str(example / "build-repo"), str(example / "repo"), "--version", version],
                   check=True, capture_output=True)


def manifest_digest(registry: str, name: str, tag: str = "latest") -> str:
    req = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/{tag}", method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.headers["Docker-Content-Digest"])


def events(cli: Cli) -> list[dict[str, Any]]:
    proc = cli("events", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, list)
    return data


@dataclass
class Serve:
    """An ``alicorn serve`` process of this test, in a process group of its own."""

    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, cli: Cli, log: Path, *args: str) -> Serve:
        with log.open("ab") as out:
            proc = subprocess.Popen([*ALICORN, "serve", *args], env=cli.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        return cls(proc, log)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"alicorn serve exited with {self.proc.returncode}:\n{self.text()}")

    def kill(self) -> None:
        """SIGKILL to its process group: the service and whatever it was running."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@dataclass
class Home:
    cli: Cli
    example: Path
    pony: dict[str, Any]
    registry: str
    logs: Path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    require("podman", "skopeo", "docker-registry", "rpmbuild", "createrepo_c", "dnf", "busybox")
    base = tmp_path_factory.mktemp("rebuild-bad")
    example = base / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", example, ignore=shutil.ignore_patterns("repo"))
    build_repo(example, "1")
    cli = Cli(base / "home")
    try:
        rc, pony = cli.json("build", str(example / "pony.yaml"))
        assert rc == 0, pony
        # The background service the build started: stopped, so that this test alone says
        # when the service runs.  (The registry is started again by the next command.)
        cli("down", check=True, timeout=120)
        cli("registry", "start", check=True, timeout=120)
        build_repo(example, "both")
        yield Home(cli=cli, example=example, pony=pony,
                   registry=pony["image"].split("/")[0], logs=base)
    finally:
        cli.down()


@pytest.fixture(scope="module")
def dry_run(home: Home) -> subprocess.CompletedProcess[str]:
    return home.cli("serve", "--once", "--dry-run", timeout=300)


def test_a_dry_run_prints_the_plan_and_writes_nothing(home: Home,
                                                      dry_run: subprocess.CompletedProcess[str]
                                                      ) -> None:
    assert dry_run.returncode == 0, dry_run.stderr
    out = dry_run.stdout + dry_run.stderr
    assert ADVISORY in out and "pony-rpm" in out, out
    assert "busybox 1.35.0-1.fc40 < 1.35.0-2.fc40" in out, out
    assert events(home.cli) == []
    builds = json.loads(home.cli("builds", "--json", check=True).stdout)
    assert [b["build_id"] for b in builds] == [home.pony["build_id"]]
    assert manifest_digest(home.registry, "pony-rpm") == home.pony["digest"]


@dataclass(frozen=True)
class Crash:
    killed_build: str
    step: str
    tag_after_kill: str
    event_after_kill: dict[str, Any]
    containers_before: set[str]
    containers_after_kill: set[str]
    event: dict[str, Any]
    restart_log: str
    stopped: int


def _containers() -> set[str]:
    out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                         text=True, check=True).stdout
    return {n for n in out.split() if n.startswith("alicorn-test-")}


def _last_step(progress: Path) -> str | None:
    try:
        lines = progress.read_text().splitlines()
    except OSError:
        return None
    steps = [json.loads(x) for x in lines if x.strip()]
    return next((s.get("name") or s["event"] for s in reversed(steps)
                 if s["event"] in ("step", "finish")), None)


def _running_rebuild(home: Home) -> str | None:
    db = home.cli.home / "alicorn.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute("SELECT id FROM builds WHERE state = 'running' AND trigger IS NOT "
                           "NULL ORDER BY created_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


@pytest.fixture(scope="module")
def crash(home: Home, dry_run: subprocess.CompletedProcess[str]) -> Crash:
    before = _containers()
    first = Serve.start(home.cli, home.logs / "serve-1.log", "--interval", "1")
    try:
        deadline = time.monotonic() + TIMEOUT
        killed, step = None, None
        # Kill it in the security gate: after the tests (their container is gone), before
        # anything is published.
        while time.monotonic() < deadline:
            first.alive()
            killed = _running_rebuild(home)
            if killed:
                step = _last_step(home.cli.home / "builds" / killed / "progress.jsonl")
                if step in ("gate", "publish", "finish"):
                    break
            time.sleep(0.05)
        else:
            pytest.fail(f"the rebuild never reached its gate:\n{first.text()}")
        first.kill()
    finally:
        first.kill()
    assert killed is not None and step is not None
    tag = manifest_digest(home.registry, "pony-rpm")
    [after_kill] = [e for e in events(home.cli) if e["advisory"] == ADVISORY]
    containers = _containers()
    second = Serve.start(home.cli, home.logs / "serve-2.log", "--interval", "1")
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            second.alive()
            [event] = [e for e in events(home.cli) if e["advisory"] == ADVISORY]
            if event["state"] in ("done", "failed", "skipped"):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the event did not end after the restart: {event}\n"
                            f"{second.text()}")
            time.sleep(1)
    finally:
        stopped = second.stop()
    return Crash(killed_build=killed, step=step, tag_after_kill=tag,
                 event_after_kill=after_kill, containers_before=before,
                 containers_after_kill=containers, event=event, restart_log=second.text(),
                 stopped=stopped)


def test_a_crash_mid_event_publishes_nothing(home: Home, crash: Crash) -> None:
    assert crash.step == "gate", f"killed in {crash.step}, not in the gate"
    assert crash.tag_after_kill == home.pony["digest"]
    assert crash.event_after_kill["state"] == "building", crash.event_after_kill
    assert crash.containers_after_kill - crash.containers_before == set()


def test_the_restarted_service_builds_again_and_publishes(home: Home, crash: Crash) -> None:
    event = crash.event
    assert event["state"] == "done", (event, crash.restart_log)
    [pony] = event["builds"]
    assert (pony["image"], pony["state"], pony["tests"], pony["gate"], pony["attempt"]) == \
        ("pony-rpm", "done", "passed", "passed", 2)
    assert pony["build_id"] != crash.killed_build
    assert pony["old_digest"] == home.pony["digest"]
    assert manifest_digest(home.registry, "pony-rpm") == pony["new_digest"]
    dead = json.loads(home.cli("show", crash.killed_build, "--json", check=True).stdout)
    assert dead["state"] == "failed" and "died" in (dead["error"] or ""), dead
    assert "alicorn service stopped (SIGTERM)" in crash.restart_log
    assert crash.stopped == 0


def test_bad_requests_are_named(home: Home) -> None:
    proc = home.cli("events", "show", "no-such-event")
    assert proc.returncode == 2
    assert "no event 'no-such-event'" in proc.stderr
    proc = home.cli("serve", "--detach", "--once")
    assert proc.returncode == 2
    assert "--detach" in proc.stderr and "--once" in proc.stderr
    proc = home.cli("advisories", "import", str(home.example / "no-such-feed.xml"))
    assert proc.returncode == 2 and "no-such-feed.xml" in proc.stderr
