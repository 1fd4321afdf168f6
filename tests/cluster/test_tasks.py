"""Scans, rebuild rounds and builds as Celery tasks, through the code paths of the embedded
default: a scan run by a worker prints what the same scan prints in the worker's own home; an
advisory affecting a built image ends, after `alicorn serve --once` rounds, in a rebuild built
by a Celery worker; a deb-only worker never takes an RPM build (a git build reaching it on the
``any`` queue is sent on to the RPM queue without being claimed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from alicorn.cluster.config import queue_name
from alicorn.events.model import DONE
from alicorn.events.store import EventStore
from alicorn.store.builds import QUEUED, BuildStore
from cluster.conftest import Cluster, RpmPony, Worker, wait_final
from conftest import Cli

pytestmark = pytest.mark.integration

ADVISORY = "FEDORA-2024-b7e1c3d2a9"


def _pony(rpm_pony: RpmPony, tmp_path: Path, name: str) -> Path:
    """A copy of the RPM pony of its own (its repository is changed by the test), named
    ``name``; its repository holds busybox 1.35.0-1 only."""
    d = tmp_path / "pony"
    shutil.copytree(rpm_pony.dir, d, ignore=shutil.ignore_patterns("repo", "*.yaml"))
    shutil.copy(rpm_pony.dir / "pony.yaml", d / "pony.yaml")
    subprocess.run([str(d / "build-repo"), str(d / "repo"), "--version", "1"], check=True,
                   capture_output=True)
    recipe = d / f"{name}.yaml"
    recipe.write_text((d / "pony.yaml").read_text().replace("name: pony-rpm", f"name: {name}",
                                                            1))
    return recipe


def _build(api: Cli, cluster: Cluster, recipe: Path) -> str:
    build_id = api("build", str(recipe), "--no-wait", "--skip-checks", check=True).stdout.strip()
    row = wait_final(cluster, [build_id], timeout=600)[build_id]
    assert row.state == "done" and row.published, row.error
    assert row.digest
    return str(row.digest)


def _ran_in(worker: Worker, identity: str | None) -> bool:
    """Whether ``host:pid`` is a process of ``worker`` (its Celery pool is in its group)."""
    assert identity is not None
    pid = int(identity.split(":")[1])
    try:
        return os.getpgid(pid) == worker.proc.pid
    except ProcessLookupError:
        return False


def _poll(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_a_scan_by_a_worker_prints_what_the_embedded_scan_prints(
        cluster: Cluster, rpm_pony: RpmPony, tmp_path: Path) -> None:
    worker = cluster.start_worker("w1", "--capability", "rpm")
    api = cluster.cli()
    recipe = _pony(rpm_pony, tmp_path, "pony-scan")
    digest = _build(api, cluster, recipe)
    subprocess.run([str(recipe.parent / "build-repo"), str(recipe.parent / "repo"),
                    "--version", "both"], check=True, capture_output=True)
    api("advisories", "import", str(recipe.parent / "repo"), check=True)

    # The image is in the worker's store only: the API host scans it through the worker.
    embedded = Cli(worker.home, env={**cluster.env, "ALICORN_QUEUE": "local"})
    for args in (["--json"], [], ["--format", "sarif"]):
        remote = api("scan", digest, *args, timeout=300)
        local = embedded("scan", digest, *args, timeout=300)
        assert remote.returncode == local.returncode == 1, (remote.stderr, local.stderr)
        assert remote.stdout == local.stdout
        assert remote.stderr == local.stderr
    report = json.loads(api("scan", digest, "--json", timeout=300).stdout)
    assert ADVISORY in json.dumps(report)
    # Without the Celery backend the API host, which holds no image, cannot read it.
    here = api("scan", digest, env={"ALICORN_QUEUE": "local"}, timeout=120)
    assert here.returncode == 2, here.stderr

    # A bad input found by the worker comes back as the same error.
    missing = "sha256:" + "0" * 64
    remote_bad = api("scan", missing, timeout=120)
    local_bad = embedded("scan", missing, timeout=120)
    assert remote_bad.returncode == local_bad.returncode == 2
    assert remote_bad.stderr == local_bad.stderr

    # Broker down: a clear error, exit 69 (EX_UNAVAILABLE), nothing printed on stdout.
    cluster.redis.stop()
    down = api("scan", digest, timeout=120)
    assert down.returncode == 69, down.stderr
    assert "broker" in down.stderr and not down.stdout


def test_a_rebuild_round_sends_the_rebuild_to_a_celery_worker(
        cluster: Cluster, rpm_pony: RpmPony, tmp_path: Path) -> None:
    worker = cluster.start_worker("w1", "--capability", "rpm")
    api = cluster.cli()
    recipe = _pony(rpm_pony, tmp_path, "pony-round")
    old_digest = _build(api, cluster, recipe)
    subprocess.run([str(recipe.parent / "build-repo"), str(recipe.parent / "repo"),
                    "--version", "both"], check=True, capture_output=True)
    api("advisories", "import", str(recipe.parent / "repo"), check=True)

    # Rounds until every rebuild ended; the service itself builds nothing.
    served = api("serve", "--once", "--no-watch", timeout=900)
    assert served.returncode == 0, served.stdout + served.stderr
    assert "this service watches, ticks and reaps" in served.stdout

    events = EventStore(cluster.postgres.url)
    event = next(e for e in events.events() if e.advisory_id == ADVISORY)
    data = events.event_json(event)
    assert event.state == DONE, json.dumps(data, indent=2)
    rebuild = data["builds"][0]
    assert (rebuild["image"], rebuild["old_digest"]) == ("pony-round", old_digest)
    new = BuildStore(cluster.postgres.url).latest_attempt(rebuild["build_id"])
    assert new.state == "done" and new.published and new.digest == rebuild["new_digest"]
    assert new.queue == queue_name("rpm") and (new.dispatches or 0) >= 1
    assert _ran_in(worker, new.worker), new.worker
    assert {p.name: p.version for p in new.packages}["busybox"].endswith("1.35.0-2.fc40")
    assert new.trigger is not None and new.trigger["advisories"] == [ADVISORY]
    # Nothing is left: another round submits nothing.
    again = api("serve", "--once", "--no-watch", timeout=300)
    assert again.returncode == 0 and "submitted" not in again.stdout, again.stdout


def _git_pony(recipe: Path, tmp_path: Path) -> Path:
    """A git repository holding the pony's recipe and its repository."""
    repo = tmp_path / "pony-git"
    shutil.copytree(recipe.parent, repo, ignore=shutil.ignore_patterns("specs"))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "pony"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True,
                       env=env)
    return repo


def test_a_deb_worker_never_takes_an_rpm_build(cluster: Cluster, rpm_pony: RpmPony,
                                               tmp_path: Path) -> None:
    deb = cluster.start_worker("deb", "--capability", "deb")
    api = cluster.cli()
    recipe = _pony(rpm_pony, tmp_path, "pony-cap")
    file_build = api("build", str(recipe), "--no-wait", "--skip-checks",
                     check=True).stdout.strip()
    git = _git_pony(recipe, tmp_path)
    git_build = api("build", str(git), "--ref", "main", "--recipe", recipe.name, "--no-wait",
                    "--skip-checks", check=True).stdout.strip()
    store = BuildStore(cluster.postgres.url)
    assert store.get(file_build).queue == queue_name("rpm")
    assert store.get(git_build).queue == queue_name("any")
    # The deb worker takes the git build from the any queue, reads its recipe, and sends it
    # on to the RPM queue without claiming it.
    _poll("the git build to be sent on to the rpm queue",
          lambda: store.get(git_build).queue == queue_name("rpm"), timeout=120)
    for build_id in (file_build, git_build):
        row = store.get(build_id)
        assert row.state == QUEUED and row.worker is None, (row.state, row.worker)

    rpm = cluster.start_worker("rpm", "--capability", "rpm")
    rows = wait_final(cluster, [file_build, git_build], timeout=600)
    for row in rows.values():
        assert row.state == "done", row.error
        assert _ran_in(rpm, row.worker) and not _ran_in(deb, row.worker), row.worker
        assert row.attempt == 1
