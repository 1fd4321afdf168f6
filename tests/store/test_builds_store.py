"""Build records: submission, claiming by exactly one worker, finality, the reaper."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from alicorn.compose import Package
from alicorn.config import load_settings
from alicorn.errors import BadInput, NotFound
from alicorn.store.builds import DONE, FAILED, QUEUED, RUNNING, BuildStore, Submission
from alicorn.worker.local import reap


def _store(tmp_path: Path) -> BuildStore:
    return BuildStore(f"sqlite:///{tmp_path / 'a.db'}")


def _sub(i: int = 0) -> Submission:
    return Submission(argv=["alicorn", "build", f"r{i}.yaml"], source_kind="file",
                      recipe_path=f"/x/r{i}.yaml", recipe_content="recipe: 1\n")


def test_submit_then_claim_in_order(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first, second = store.submit(_sub(1)), store.submit(_sub(2))
    assert store.get(first.id).state == QUEUED
    claimed = store.claim_next("host:1")
    assert claimed is not None and claimed.id == first.id and claimed.state == RUNNING
    assert claimed.worker == "host:1" and claimed.started_at is not None
    assert store.claim_next("host:1").id == second.id  # type: ignore[union-attr]
    assert store.claim_next("host:1") is None


def test_two_workers_never_claim_the_same_build(tmp_path: Path) -> None:
    store = _store(tmp_path)
    ids = {store.submit(_sub(i)).id for i in range(20)}
    got: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        own = BuildStore(f"sqlite:///{tmp_path / 'a.db'}")
        while (row := own.claim_next(name)) is not None:
            with lock:
                got.append(row.id)

    threads = [threading.Thread(target=worker, args=(f"w:{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids), "every build claimed exactly once"


def test_finished_records_are_final(tmp_path: Path) -> None:
    store = _store(tmp_path)
    row = store.submit(_sub())
    store.claim_next("w:1")
    pkgs = [Package(type="deb", name="nginx", version="1.22", arch="amd64", purl="pkg:deb/x")]
    store.finish(row.id, DONE, packages=pkgs, digest="sha256:" + "a" * 64)
    done = store.get(row.id)
    assert done.state == DONE and [p.name for p in done.packages] == ["nginx"]
    with pytest.raises(BadInput, match="already done"):
        store.finish(row.id, FAILED, error="late")
    assert store.get(row.id).state == DONE


def test_resolve_by_prefix_and_digest(tmp_path: Path) -> None:
    store = _store(tmp_path)
    row = store.submit(_sub())
    store.claim_next("w:1")
    digest = "sha256:" + "b" * 64
    store.finish(row.id, DONE, digest=digest)
    assert store.resolve(row.id[:8]).id == row.id
    assert store.resolve(digest).id == row.id
    assert store.resolve("b" * 64).id == row.id
    with pytest.raises(NotFound):
        store.resolve("sha256:" + "c" * 64)


def test_find_cached_takes_only_successful_builds(tmp_path: Path) -> None:
    store = _store(tmp_path)
    a, b, c = store.submit(_sub(1)), store.submit(_sub(2)), store.submit(_sub(3))
    for _ in range(3):
        store.claim_next("w:1")
    store.update(a.id, input_key="sha256:" + "1" * 64)
    store.update(b.id, input_key="sha256:" + "1" * 64)
    store.finish(a.id, FAILED, error="x")
    assert store.find_cached("sha256:" + "1" * 64, exclude=c.id) is None
    store.finish(b.id, DONE, digest="sha256:" + "d" * 64)
    found = store.find_cached("sha256:" + "1" * 64, exclude=c.id)
    assert found is not None and found.id == b.id


def test_reaper_fails_builds_of_dead_workers(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICORN_HOME", str(tmp_path / "home"))
    settings = load_settings()
    store = BuildStore(settings.database_url)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    a, b = store.submit(_sub(1)), store.submit(_sub(2))
    store.claim_next(f"{host}:{dead.pid}")
    store.claim_next(f"{host}:{os.getpid()}")
    assert reap(settings, store) == 1
    assert store.get(a.id).state == FAILED and "died" in (store.get(a.id).error or "")
    assert store.get(b.id).state == RUNNING


def test_reaper_stops_what_a_dead_worker_left_running(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import time

    monkeypatch.setenv("ALICORN_HOME", str(tmp_path / "home"))
    settings = load_settings()
    store = BuildStore(settings.database_url)
    # A "worker" leading its own process group, with a tool running under it.
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    time.sleep(0.3)
    row = store.submit(_sub())
    store.claim_next(f"{socket.gethostname()}:{leader.pid}:group")
    work = settings.work_dir / row.id / "rootfs"
    work.mkdir(parents=True)
    (work / "file").write_text("half written")
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait()
    os.killpg(leader.pid, 0)  # the orphaned tool is still there
    assert reap(settings, store) == 1
    with pytest.raises(ProcessLookupError):
        os.killpg(leader.pid, 0)
    assert not (settings.work_dir / row.id).exists()
    assert store.get(row.id).state == FAILED


def test_the_quick_head_check_agrees_with_alembic() -> None:
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from alicorn.store.schema import head_revision as _head

    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("alicorn.store").joinpath("migrations")))
    assert ScriptDirectory.from_config(cfg).get_current_head() == _head()


def test_a_new_database_is_migrated_and_reopened_cheaply(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    from alicorn.store.db import _current, migrate
    from alicorn.store.schema import head_revision as _head

    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert _current(engine) is None
    migrate(engine)
    assert _current(engine) == _head()
    assert {"builds", "build_packages"} <= set(inspect(engine).get_table_names())
    migrate(engine)  # already at head: nothing to do
    assert _current(engine) == _head()
