"""Cancelling builds: a queued one ends at once and is never claimed; a running one is stopped
by its worker (the tool it runs gets SIGTERM), ends failed "cancelled by WHO" with a sealed
record, and leaves no work dir and no process behind; an ended build cannot be cancelled."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from alicorn.build.pipeline import Build
from alicorn.config import load_settings
from alicorn.errors import Conflict, NotFound
from alicorn.proc import Cancelled, Stopper, run
from alicorn.store.builds import FAILED, QUEUED, BuildStore, Submission
from conftest import EXAMPLES, Cli, StallingRepo

RECIPE = """\
recipe: 1
name: never-built
distribution: {type: rpm, release: "40", architecture: x86_64}
repositories: [{name: r, url: /nonexistent, gpgcheck: false}]
packages: [busybox]
"""


def _store(cli: Cli) -> BuildStore:
    return BuildStore(load_settings(cli.home).database_url)


def _queue(store: BuildStore, tmp_path: Path) -> str:
    """A build queued with no worker to run it (the CLI would start one)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    row = store.submit(Submission(argv=["test"], source_kind="file", recipe_path=str(recipe),
                                  recipe_content=RECIPE))
    assert row.state == QUEUED
    return row.id


# -- the store and the command line, no build running --------------------------------------

def test_a_queued_build_is_cancelled_at_once_and_never_claimed(cli: Cli,
                                                               tmp_path: Path) -> None:
    store = _store(cli)
    build_id = _queue(store, tmp_path)
    proc = cli("cancel", build_id[:12])
    assert proc.returncode == 0, proc.stderr
    assert f"build {build_id}: cancelled (it had not started)" in proc.stdout
    row = store.get(build_id)
    assert row.state == FAILED and row.finished_at is not None
    assert row.cancel_requested_by and row.cancel_requested_at is not None
    assert row.error == f"cancelled by {row.cancel_requested_by} before it started"
    # No worker takes it: neither a claim nor a worker run.
    assert store.claim_next("test:1") is None
    cli("worker", "--once", check=True, timeout=120)
    row = store.get(build_id)
    assert row.state == FAILED and row.worker is None and row.started_at is None
    assert not load_settings(cli.home).build_dir(build_id).exists()
    # Ended: cancelling again is refused, exit 2, naming the state.
    again = cli("cancel", build_id)
    assert again.returncode == 2, again.stdout + again.stderr
    assert f"build {build_id} has ended (failed); its record is final" in again.stderr
    with pytest.raises(Conflict, match="has ended"):
        store.request_cancel(build_id, "bob@test")


def test_cancel_json_and_unknown_builds(cli: Cli, tmp_path: Path) -> None:
    store = _store(cli)
    build_id = _queue(store, tmp_path)
    proc = cli("cancel", build_id, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["build_id"] == build_id and result["state"] == "failed"
    assert result["cancelled"] is True and result["error"].startswith("cancelled by ")
    assert result["message"] == "cancelled (it had not started)"
    missing = cli("cancel", "ffffffffffff")
    assert missing.returncode == 2 and "no build or image 'ffffffffffff'" in missing.stderr
    with pytest.raises(NotFound):
        store.request_cancel("ffffffffffffffff", "bob@test")


def test_a_running_request_is_recorded_once(cli: Cli, tmp_path: Path) -> None:
    store = _store(cli)
    build_id = _queue(store, tmp_path)
    claimed = store.claim_next("test:1")
    assert claimed is not None and claimed.id == build_id
    first = store.request_cancel(build_id, "alice@test")
    assert first.state == "running" and first.cancel_requested_by == "alice@test"
    second = store.request_cancel(build_id, "bob@test")
    assert second.cancel_requested_by == "alice@test"
    assert second.cancel_requested_at == first.cancel_requested_at
    request = store.cancel_request(build_id)
    assert request is not None and request[1] == "alice@test"


# -- stopping the commands of a build --------------------------------------------------------

def test_stopper_terminates_then_kills_and_starts_nothing_more(tmp_path: Path) -> None:
    stopper = Stopper(grace=1.0)
    raised: list[BaseException] = []
    ignores_term = [sys.executable, "-c", "import signal, time; "
                    "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
                    "time.sleep(60)"]
    started = threading.Event()

    def work() -> None:
        with stopper.active():
            try:
                run(ignores_term, on_line=lambda _line: started.set())
            except BaseException as e:
                raised.append(e)

    t = threading.Thread(target=work)
    t.start()
    assert started.wait(30)
    begun = time.monotonic()
    assert stopper.stop("cancelled by alice@test") == 1
    t.join(10)
    assert not t.is_alive()
    # SIGTERM was ignored; SIGKILL came after the grace second.
    assert 0.9 < time.monotonic() - begun < 5
    assert len(raised) == 1 and isinstance(raised[0], Cancelled)
    assert raised[0].message == "cancelled by alice@test"
    marker = tmp_path / "ran"
    with stopper.active(), pytest.raises(Cancelled):
        run(["touch", str(marker)])
    assert not marker.exists()
    # Outside the stopper's scope, commands run as before.
    run(["touch", str(marker)])
    assert marker.exists()


# -- a real build, cancelled while dnf downloads -----------------------------------------------

def _processes_under(path: Path) -> list[str]:
    """The command lines of live processes that name ``path``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(path).encode() in cmdline:
            found.append(f"{pid}: {cmdline.decode('utf-8', 'replace')}")
    return found


def _wait_for(what: str, ok: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_running_build_is_stopped_and_sealed(cli: Cli, tmp_path: Path,
                                               stalling_repo: StallingRepo) -> None:
    text = (EXAMPLES / "pony" / "rpm" / "pony.yaml").read_text().replace(
        "url: repo", f"url: http://127.0.0.1:{stalling_repo.server_address[1]}")
    recipe = tmp_path / "pony-stall.yaml"
    recipe.write_text(text)
    rc, queued = cli.json("build", str(recipe), "--no-wait", "--skip-checks", "--no-push",
                          timeout=120)
    assert rc == 0, queued
    build_id = queued["build_id"]
    settings = load_settings(cli.home)
    store = _store(cli)
    work = settings.work_dir / build_id
    # dnf runs and is stuck downloading the packages.
    assert stalling_repo.stalled.wait(180), (settings.build_dir(build_id) / "build.log") \
        .read_text()
    assert any("dnf" in p for p in _processes_under(work)), _processes_under(work)

    begun = time.monotonic()
    proc = cli("cancel", build_id, timeout=60)
    took = time.monotonic() - begun
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"build {build_id}: cancel requested; the worker stops it" in proc.stderr
    row = store.get(build_id)
    by = row.cancel_requested_by
    assert by is not None and by.endswith("@" + os.uname().nodename)
    assert f"build {build_id}: failed: cancelled by {by}" in proc.stdout
    assert took < 15, took   # a CLI start, a poll of the row, dnf taking SIGTERM

    assert row.state == FAILED and row.error == f"cancelled by {by}"
    assert row.finished_at is not None and row.cancel_requested_at is not None
    # Sealed like any failed build: logs closed, the record in the transparency log.
    build_dir = settings.build_dir(build_id)
    log = (build_dir / "build.log").read_text()
    assert f"cancel requested by {by}" in log and "stopping pid" in log
    assert f"FAILED: cancelled by {by}" in log
    assert (build_dir / "build.log").stat().st_mode & 0o777 == 0o444
    record = json.loads((build_dir / "record.json").read_text())
    assert record["state"] == "failed" and record["error"] == f"cancelled by {by}"
    assert record["cancel"]["requested_by"] == by and record["cancel"]["stopped"] is True
    assert row.record_index is not None and row.record_digest is not None
    traced = cli("trace", build_id, "--json", "--offline")
    checks = {c["link"]: c["ok"] for c in json.loads(traced.stdout)["checks"]}
    assert checks["record"] is True and checks["transparency log"] is True, traced.stdout
    # Nothing left behind: no private root, no dnf.
    assert not work.exists()
    assert _processes_under(work) == []
    # And it stays ended.
    again = cli("cancel", build_id)
    assert again.returncode == 2
    assert (f"build {build_id} has ended (failed); its record is sealed in the transparency "
            f"log (entry {row.record_index}) and cannot change") in again.stderr
    with pytest.raises(Conflict, match=f"entry {row.record_index}"):
        store.request_cancel(build_id, "carol@test")


# -- where a cancel stops the build: step boundaries, and not once publishing began ------------

def _claimed_build(cli: Cli, tmp_path: Path) -> tuple[BuildStore, Build]:
    store = _store(cli)
    build_id = _queue(store, tmp_path)
    row = store.claim_next("test:1")
    assert row is not None and row.id == build_id
    build = Build(load_settings(cli.home), store, row)
    build._record = {}
    return store, build


def _watch(build: Build) -> None:
    """Run the build's cancel watcher until it acts on a request."""
    watcher = threading.Thread(target=build._watch_cancel, args=(threading.Event(),))
    watcher.start()
    watcher.join(10)
    assert not watcher.is_alive(), "the watcher did not see the request"


def test_a_cancel_stops_the_build_at_its_next_step(cli: Cli, tmp_path: Path) -> None:
    store, build = _claimed_build(cli, tmp_path)
    store.request_cancel(build.row.id, "alice@test")
    _watch(build)
    assert build.stopper.stopped
    with pytest.raises(Cancelled, match="cancelled by alice@test"):
        build.monitor.step("compose")
    with pytest.raises(Cancelled, match="cancelled by alice@test"):
        build._begin_publishing()
    build.log.close()
    assert "cancel requested by alice@test" in build.log.path.read_text()


def test_a_cancel_during_publishing_is_recorded_and_the_build_finishes(
        cli: Cli, tmp_path: Path) -> None:
    store, build = _claimed_build(cli, tmp_path)
    build._begin_publishing()
    store.request_cancel(build.row.id, "alice@test")
    _watch(build)
    assert not build.stopper.stopped
    build.monitor.step("publish")   # goes on
    assert build._record["cancel"]["requested_by"] == "alice@test"
    assert build._record["cancel"]["stopped"] is False
    build.publish_log.close()
    assert "cancel requested by alice@test during publishing: finishing" in \
        build.publish_log.path.read_text()
