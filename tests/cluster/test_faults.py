"""Faults of the cluster, with the real parts: a worker killed mid-build (kill -9 of its
process group), the broker restarting (with its data, and without), the broker down at submit
time, the database down mid-build, and workers racing for one build.  Every submission ends
done exactly once or failed with a reason; none is left running; none is published twice."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alicorn.cluster.compose import Redis
from alicorn.cluster.config import QueueConfig
from alicorn.cluster.reaper import reap_stale
from alicorn.config import load_settings
from alicorn.store.builds import DONE, FAILED, QUEUED, RUNNING, BuildStore, Submission, now
from alicorn.store.db import engine_for
from alicorn.store.models import BuildRow
from cluster.conftest import Cluster, RpmPony, wait_final
from conftest import EXAMPLES, StallingRepo

FAST = {"ALICORN_QUEUE_LEASE": "6", "ALICORN_QUEUE_HEARTBEAT": "1",
        "ALICORN_QUEUE_MAX_ATTEMPTS": "2", "ALICORN_QUEUE_REDISPATCH_AFTER": "4"}


def _stalling_recipe(tmp_path: Path, repo: StallingRepo, name: str) -> Path:
    text = (EXAMPLES / "pony" / "rpm" / "pony.yaml").read_text().replace(
        "url: repo", f"url: http://127.0.0.1:{repo.server_address[1]}").replace(
        "name: pony-rpm", f"name: {name}", 1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _submit(cluster: Cluster, recipe: Path) -> str:
    proc = cluster.cli()("build", str(recipe), "--no-wait", "--skip-checks", check=True,
                         timeout=120)
    return proc.stdout.strip()


def _wait(what: str, ok: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _attempts(store: BuildStore, build_id: str) -> list[BuildRow]:
    rows = [store.get(build_id)]
    while rows[-1].retried_as:
        rows.append(store.get(rows[-1].retried_as))
    return rows


def _check_submissions(store: BuildStore, ids: list[str]) -> dict[str, list[BuildRow]]:
    """Every submission: its last attempt final, at most one attempt published, every failed
    attempt with a reason; and nothing running anywhere."""
    out = {}
    for b in ids:
        rows = _attempts(store, b)
        assert all(r.state in (DONE, FAILED) for r in rows), [(r.id, r.state) for r in rows]
        assert sum(1 for r in rows if r.published) <= 1, [(r.id, r.published) for r in rows]
        assert all(r.error for r in rows if r.state == FAILED)
        assert all(r.state == FAILED for r in rows[:-1])
        out[b] = rows
    assert store.running() == []
    return out


# -- a worker killed mid-build ------------------------------------------------------------------

def test_a_worker_killed_mid_build_is_retried_on_the_other(
        cluster: Cluster, rpm_pony: RpmPony, stalling_repo: StallingRepo,
        tmp_path: Path) -> None:
    cluster.queue_env = dict(FAST)
    w1 = cluster.start_worker("w1")
    w2 = cluster.start_worker("w2")
    store = BuildStore(cluster.postgres.url)
    held = _submit(cluster, _stalling_recipe(tmp_path, stalling_repo, "pony-held"))
    assert stalling_repo.stalled.wait(180), "the held build never reached its download"
    ids = [held] + [_submit(cluster, rpm_pony.recipe(f"pony-kill-{i}")) for i in range(3)]
    row = store.get(held)
    assert row.state == RUNNING and row.worker
    pid = int(row.worker.split(":")[1])
    victim = w1 if os.getpgid(pid) == w1.proc.pid else w2
    survivor = w2 if victim is w1 else w1
    victim.kill(signal.SIGKILL)
    stalling_repo.release.set()   # the retry downloads its packages

    rows = wait_final(cluster, ids, timeout=600)
    attempts = _check_submissions(store, ids)
    assert {r.state for r in rows.values()} == {DONE}, {b: r.error for b, r in rows.items()}
    first, *retries = attempts[held]
    assert first.state == FAILED and not first.published and len(retries) == 1
    assert f"the worker {first.worker} died during the build" in (first.error or "") or \
        f"the worker {first.worker} stopped answering" in (first.error or ""), first.error
    assert f"retried as build {retries[0].id} (attempt 2 of 2)" in (first.error or "")
    assert retries[0].retry_of == held and retries[0].attempt == 2
    assert retries[0].published and retries[0].worker
    assert os.getpgid(int(retries[0].worker.split(":")[1])) == survivor.proc.pid
    assert survivor.proc.poll() is None


# -- the broker ---------------------------------------------------------------------------------

def _restart_redis(cluster: Cluster, *, wipe: bool) -> None:
    directory, port = cluster.redis.directory, cluster.redis.port
    cluster.redis.stop()
    if wipe:
        for path in directory.iterdir():
            if path.name != "redis.log":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    cluster.redis = Redis(directory, port).start()


def test_a_broker_restart_loses_no_queued_build(cluster: Cluster, rpm_pony: RpmPony) -> None:
    cluster.queue_env = dict(FAST, ALICORN_QUEUE_REDISPATCH_AFTER="600")
    ids = [_submit(cluster, rpm_pony.recipe(f"pony-restart-{i}")) for i in range(2)]
    _restart_redis(cluster, wipe=False)
    cluster.start_worker("w1")
    rows = wait_final(cluster, ids, timeout=300)
    assert {r.state for r in rows.values()} == {DONE}, {b: r.error for b, r in rows.items()}
    assert all(r.attempt == 1 and r.dispatches == 1 for r in rows.values())


def test_a_broker_that_lost_everything_is_sent_the_builds_again(
        cluster: Cluster, rpm_pony: RpmPony) -> None:
    cluster.queue_env = dict(FAST, ALICORN_QUEUE_REDISPATCH_AFTER="3")
    ids = [_submit(cluster, rpm_pony.recipe(f"pony-wiped-{i}")) for i in range(2)]
    _restart_redis(cluster, wipe=True)
    cluster.start_worker("w1")
    rows = wait_final(cluster, ids, timeout=300)
    assert {r.state for r in rows.values()} == {DONE}, {b: r.error for b, r in rows.items()}
    assert all(r.attempt == 1 and r.dispatches >= 2 for r in rows.values())


def test_broker_down_at_submit_records_nothing(cluster: Cluster, rpm_pony: RpmPony) -> None:
    cluster.redis.stop()
    proc = cluster.cli()("build", str(rpm_pony.recipe("pony-nobroker")), "--no-wait",
                         "--skip-checks", timeout=120)
    assert proc.returncode == 69, proc.stdout + proc.stderr
    assert cluster.redis.url in proc.stderr and "nothing was recorded" in proc.stderr
    assert BuildStore(cluster.postgres.url).recent() == []


# -- the database -------------------------------------------------------------------------------

def test_database_down_mid_build_fails_it_cleanly_and_retries(
        cluster: Cluster, stalling_repo: StallingRepo, tmp_path: Path) -> None:
    cluster.queue_env = dict(FAST)
    w1 = cluster.start_worker("w1")
    store = BuildStore(cluster.postgres.url)
    held = _submit(cluster, _stalling_recipe(tmp_path, stalling_repo, "pony-nodb"))
    assert stalling_repo.stalled.wait(180)
    work = load_settings(w1.home).work_dir / held
    assert work.is_dir()
    cluster.postgres.stop()
    # The worker gives up on the database after the lease: the build stops, its private
    # root goes, and the worker notes why (the database is still away to record it).
    note = w1.home / "run" / "lost-builds" / held
    _wait("the worker to stop the build", note.exists, 60)
    assert not work.exists()
    assert "the database could not be reached" in note.read_text()
    stalling_repo.release.set()
    cluster.postgres.start()
    engine_for(cluster.postgres.url).dispose()   # this process's connections died with it
    rows = wait_final(cluster, [held], timeout=300)
    attempts = _check_submissions(store, [held])[held]
    assert rows[held].state == DONE, rows[held].error
    first = attempts[0]
    assert first.state == FAILED and not first.published
    assert "the database could not be reached from the worker" in (first.error or "")
    assert len(attempts) == 2 and attempts[1].published
    assert w1.proc.poll() is None   # the worker lived through it


# -- races --------------------------------------------------------------------------------------

def _queued(store: BuildStore) -> BuildRow:
    return store.submit(Submission(argv=["test"], source_kind="file", recipe_path="r.yaml",
                                   recipe_content="recipe: 1\n"))


def _race(n: int, work: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    raised: list[BaseException] = []

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as e:  # the race must raise nothing: losers just lose
            raised.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert raised == []
    return results


def test_of_workers_claiming_one_build_one_wins(cluster: Cluster) -> None:
    stores = [BuildStore(cluster.postgres.url) for _ in range(8)]
    for _ in range(5):
        build_id = _queued(stores[0]).id
        got = _race(8, lambda i, b=build_id: stores[i].claim(b, f"racer:{i}"))
        winners = [r for r in got if r is not None]
        assert len(winners) == 1
        assert stores[0].get(build_id).worker == winners[0].worker


def test_two_reapers_retry_a_build_once(cluster: Cluster) -> None:
    store = BuildStore(cluster.postgres.url)
    for _ in range(5):
        build_id = _queued(store).id
        assert store.claim(build_id, "gone-host:1") is not None
        got = _race(6, lambda i, b=build_id: store.abandon(b, reason=f"reaper {i}",
                                               worker="gone-host:1", max_attempts=2))
        retries = [r for r in got if r is not None]
        assert len(retries) == 1
        row = store.get(build_id)
        assert row.state == FAILED and row.retried_as == retries[0].id
        assert store.get(retries[0].id).state == QUEUED


def test_reap_stale_names_the_worker_and_its_last_heartbeat(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(cluster.root / "homes" / "janitor")
    store = BuildStore(cluster.postgres.url)
    build_id = _queued(store).id
    assert store.claim(build_id, "other-host:4242") is not None
    store.update(build_id, heartbeat_at=now() - timedelta(seconds=30))
    config = QueueConfig(backend="celery", broker=cluster.redis.url, lease=10, heartbeat=1,
                         max_attempts=1)
    assert reap_stale(settings, store, config) == [build_id]
    row = store.get(build_id)
    assert row.state == FAILED and row.retried_as is None
    assert row.error and row.error.startswith(
        "the worker other-host:4242 stopped answering: no heartbeat since ")
    assert "(lease 10 s); not retried: attempt 1 of 1 was the last" in row.error
    assert reap_stale(settings, store, config) == []
