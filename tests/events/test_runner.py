"""The state machine, one tick at a time, over real database rows: builds through BuildStore
(the worker's part played by claim + finish), advisories through updateinfo XML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eventdata import build, busybox, finish, import_feed, rpm, run_queued, updateinfo, worker
from sqlalchemy import func, select

from alicorn.config import Settings, load_settings
from alicorn.events import runner
from alicorn.events.model import BUILDING, DONE, FAILED, NEW, PLANNED, QUEUED, SKIPPED
from alicorn.events.runner import tick
from alicorn.events.store import EventStore
from alicorn.store.builds import BuildStore
from alicorn.store.db import session_factory
from alicorn.store.event_models import EventRebuildRow, EventRow, RebuildRow
from alicorn.store.models import BuildRow
from alicorn.worker.local import reap

BB = ("FEDORA-2024-bb", "busybox", "1.35.0", "2.fc40")
CURL = ("FEDORA-2024-cu", "curl", "8.6.0", "2.fc40")
FIXED = [busybox("2.fc40"), rpm("curl", "8.6.0", "2.fc40")]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("ALICORN_DATABASE_URL", raising=False)
    return load_settings(tmp_path / "home")


def _feed(settings: Settings, tmp_path: Path, *updates: tuple[str, str, str, str],
          name: str = "feed.xml") -> None:
    import_feed(settings.database_url, updateinfo(tmp_path / name, list(updates)))


def _events(settings: Settings) -> dict[str, dict[str, Any]]:
    store = EventStore(settings.database_url)
    return {e["advisory"]: e for e in store.events_json(store.events())}


def _counts(settings: Settings) -> tuple[int, ...]:
    with session_factory(settings.database_url)() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) or 0
                     for t in (EventRow, RebuildRow, EventRebuildRow, BuildRow))


def test_two_advisories_coalesce_into_one_rebuild(settings: Settings, tmp_path: Path) -> None:
    store = BuildStore(settings.database_url)
    old = build(store, "pony", [busybox(), rpm("curl", "8.6.0", "1.fc40")])
    git_old = build(store, "gitpony", [busybox()], source_kind="git")
    _feed(settings, tmp_path, BB, CURL)

    report = tick(settings)
    assert (report.discovered, report.planned, report.submitted) == (2, 2, 2)
    events = _events(settings)
    assert {e["state"] for e in events.values()} == {BUILDING}
    pony = [b for b in events[BB[0]]["builds"] if b["image"] == "pony"]
    assert len(pony) == 1 and pony[0]["state"] == QUEUED
    assert [b["rebuild"] for b in events[CURL[0]]["builds"]] == [pony[0]["rebuild"]]
    assert pony[0]["advisories"] == [BB[0], CURL[0]]

    new = store.get(pony[0]["build_id"])
    old_row = store.get(old)
    assert (new.source_kind, new.recipe_path, new.recipe_content) == (
        "file", old_row.recipe_path, old_row.recipe_content)
    assert new.options["expect_fixed"] == [BB[0], CURL[0]]
    assert new.options["compression_level"] == 3 and "no_cache" not in new.options
    trigger = new.options["trigger"]
    assert trigger == new.trigger
    assert (trigger["advisories"], trigger["previous_build"], trigger["previous_digest"],
            trigger["rebuild"], trigger["attempt"]) == (
        [BB[0], CURL[0]], old, old_row.digest, pony[0]["rebuild"], 1)
    assert sorted(trigger["events"]) == sorted(e["id"] for e in events.values())
    # The exact command of the process that ticked (here pytest), not a made-up one.
    assert new.argv[1:] == sys.argv[1:] and new.argv[0] in (Path(sys.argv[0]).name, "pytest")
    # A git build is rebuilt from the commit it resolved to, not from the moving ref.
    git_new = store.get(next(b["build_id"] for b in events[BB[0]]["builds"]
                             if b["image"] == "gitpony"))
    assert (git_new.source_kind, git_new.source_url, git_new.source_ref) == (
        "git", "/src/repo.git", store.get(git_old).source_commit)

    # Nothing new: a second tick changes nothing.
    before = _counts(settings)
    again = tick(settings)
    assert (again.discovered, again.planned, again.submitted, again.finished) == (0, 0, 0, 0)
    assert _counts(settings) == before

    run_queued(store, {"pony": FIXED, "gitpony": [busybox("2.fc40")]})
    report = tick(settings)
    assert report.finished == 2
    events = _events(settings)
    assert {e["state"] for e in events.values()} == {DONE}
    pony = next(b for b in events[BB[0]]["builds"] if b["image"] == "pony")
    assert (pony["state"], pony["tests"], pony["gate"]) == (DONE, "passed", "passed")
    assert pony["new_digest"] == store.get(pony["build_id"]).digest != pony["old_digest"]
    assert events[CURL[0]]["reason"] == "rebuilt pony"


def test_layered_image_is_rebuilt_after_its_base(settings: Settings, tmp_path: Path) -> None:
    store = BuildStore(settings.database_url)
    base = build(store, "base", [busybox()])
    base_digest = store.get(base).digest
    assert base_digest
    build(store, "web", [busybox(), rpm("nginx", "1.24", "1.fc40")], base=("base", base_digest))
    _feed(settings, tmp_path, BB)
    report = tick(settings)
    assert report.submitted == 1
    builds = {b["image"]: b for b in _events(settings)[BB[0]]["builds"]}
    assert list(builds) == ["base", "web"]
    assert (builds["base"]["state"], builds["web"]["state"]) == (QUEUED, PLANNED)
    assert builds["web"]["parent"] == "base"

    # Only the base builds; once it is done, the child is built on its new digest.
    assert len(run_queued(store, [busybox("2.fc40")])) == 1
    report = tick(settings)
    assert (report.finished, report.submitted) == (1, 1)
    builds = {b["image"]: b for b in _events(settings)[BB[0]]["builds"]}
    child = store.get(builds["web"]["build_id"])
    assert child.options["base_digest"] == builds["base"]["new_digest"]
    run_queued(store, [busybox("2.fc40"), rpm("nginx", "1.24", "1.fc40")])
    tick(settings)
    event = _events(settings)[BB[0]]
    assert event["state"] == DONE and event["reason"] == "rebuilt base, web"


def test_a_failed_base_fails_its_children(settings: Settings, tmp_path: Path) -> None:
    store = BuildStore(settings.database_url)
    base = build(store, "base", [busybox()])
    digest = store.get(base).digest
    assert digest
    mid = build(store, "mid", [busybox()], base=("base", digest))
    build(store, "top", [busybox()], base=("mid", store.get(mid).digest or ""))
    _feed(settings, tmp_path, BB)
    tick(settings)
    queued = store.claim_next(worker())
    assert queued is not None and queued.options["trigger"]["advisories"] == [BB[0]]
    finish(store, queued.id, [], state="failed",
           error="dnf: no match for argument: busybox-1.35.0-2.fc40")
    tick(settings)
    event = _events(settings)[BB[0]]
    states = {b["image"]: (b["state"], b["reason"]) for b in event["builds"]}
    assert states == {
        "base": (FAILED, "dnf: no match for argument: busybox-1.35.0-2.fc40"),
        "mid": (FAILED, "base image base failed to rebuild"),
        "top": (FAILED, "base image mid failed to rebuild")}
    assert event["state"] == FAILED
    assert event["reason"].startswith("base: dnf: no match for argument")
    assert store.claim_next(worker()) is None, "no child build was submitted"


def test_an_advisory_no_image_needs_is_skipped(settings: Settings, tmp_path: Path) -> None:
    build(BuildStore(settings.database_url), "pony", [busybox()])
    _feed(settings, tmp_path, ("FEDORA-2024-zz", "zlib", "1.3", "2.fc40"))
    report = tick(settings)
    assert (report.planned, report.skipped, report.submitted) == (0, 1, 0)
    event = _events(settings)["FEDORA-2024-zz"]
    assert (event["state"], event["reason"], event["builds"]) == (
        SKIPPED, "no published image contains zlib", [])


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_build_whose_worker_died_is_submitted_once_more(settings: Settings,
                                                          tmp_path: Path) -> None:
    import socket

    store = BuildStore(settings.database_url)
    build(store, "pony", [busybox()])
    _feed(settings, tmp_path, BB)
    tick(settings)
    for attempt in (1, 2):
        row = store.claim_next(f"{socket.gethostname()}:{_dead_pid()}")
        assert row is not None and row.options["trigger"]["attempt"] == attempt
        assert reap(settings, store) == 1
        assert "died during the build" in (store.get(row.id).error or "")
        report = tick(settings)
        rebuild = _events(settings)[BB[0]]["builds"][0]
        if attempt == 1:
            assert report.submitted == 1
            assert (rebuild["state"], rebuild["attempt"]) == (QUEUED, 2)
            assert rebuild["build_id"] != row.id
    assert (rebuild["state"], rebuild["attempt"]) == (FAILED, 2)
    assert "died during the build" in rebuild["reason"]
    assert _events(settings)[BB[0]]["state"] == FAILED


def test_a_rebuild_still_holding_the_old_version_fails(settings: Settings,
                                                       tmp_path: Path) -> None:
    store = BuildStore(settings.database_url)
    build(store, "pony", [busybox()])
    _feed(settings, tmp_path, BB)
    tick(settings)
    run_queued(store, [busybox()])     # the repositories had no newer busybox
    tick(settings)
    event = _events(settings)[BB[0]]
    assert event["state"] == FAILED
    assert event["builds"][0]["reason"] == (
        "the rebuilt image still holds busybox 1.35.0-1.fc40 (fixed in 1.35.0-2.fc40, "
        "FEDORA-2024-bb): the repositories lack the fixed version")


def test_an_event_that_lacked_its_fix_is_planned_again(settings: Settings,
                                                      tmp_path: Path) -> None:
    """The advisory came before the update reached the repository: the event failed; once
    it is retried (as the watcher does when a repository changes) it is planned anew and
    done, and the failed rebuild stays on record."""
    store = BuildStore(settings.database_url)
    events = EventStore(settings.database_url)
    build(store, "pony", [busybox()])
    _feed(settings, tmp_path, BB)
    tick(settings)
    run_queued(store, [busybox()])
    tick(settings)
    failed = _events(settings)[BB[0]]
    assert failed["state"] == FAILED
    assert events.failed_for_missing_fixes() == [failed["id"]]
    assert events.retry([failed["id"]], why="planned again: repo changed") == [failed["id"]]
    again = _events(settings)[BB[0]]
    assert again["state"] == NEW and again["builds"] == []
    assert again["reason"].startswith("planned again: repo changed; before: pony: ")
    assert events.retry([failed["id"]], why="twice") == []     # only failed events move
    tick(settings)
    run_queued(store, [busybox("2.fc40")])
    tick(settings)
    done = _events(settings)[BB[0]]
    assert done["state"] == DONE
    assert [b["state"] for b in done["builds"]] == [DONE]
    assert done["builds"][0]["build_id"] != failed["builds"][0]["build_id"]
    with session_factory(settings.database_url)() as s:
        states = sorted(r.state for r in s.scalars(select(RebuildRow)))
    assert states == [DONE, FAILED]


def test_a_retried_event_is_not_folded_into_a_new_advisorys_rebuild(settings: Settings,
                                                                    tmp_path: Path) -> None:
    """busybox's fix is still missing when its event is retried and curl's advisory lands:
    curl's rebuild must not carry busybox's advisory (it would fail for lack of its fix)."""
    store = BuildStore(settings.database_url)
    events = EventStore(settings.database_url)
    build(store, "pony", [busybox(), rpm("curl", "8.6.0", "1.fc40")])
    _feed(settings, tmp_path, BB)
    tick(settings)
    run_queued(store, [busybox(), rpm("curl", "8.6.0", "1.fc40")])
    tick(settings)
    bb = _events(settings)[BB[0]]
    assert bb["state"] == FAILED
    events.retry([bb["id"]], why="planned again: repo changed")
    _feed(settings, tmp_path, CURL, name="curl.xml")
    report = tick(settings)
    assert report.deferred >= 1
    curl = _events(settings)[CURL[0]]
    assert [b["advisories"] for b in curl["builds"]] == [[CURL[0]]]
    assert _events(settings)[BB[0]]["state"] == NEW          # waits, alone
    run_queued(store, [busybox(), rpm("curl", "8.6.0", "2.fc40")])
    tick(settings)
    assert _events(settings)[CURL[0]]["state"] == DONE
    # Now nothing else is going on: the retried event is planned by itself, and fails again
    # while the repositories still lack busybox's fix, without touching curl's result.
    tick(settings)
    assert [b["advisories"] for b in _events(settings)[BB[0]]["builds"]] == [[BB[0]]]
    run_queued(store, [busybox(), rpm("curl", "8.6.0", "2.fc40")])
    tick(settings)
    assert _events(settings)[BB[0]]["state"] == FAILED
    assert _events(settings)[CURL[0]]["state"] == DONE


def test_failed_checks_fail_the_rebuild(settings: Settings, tmp_path: Path) -> None:
    store = BuildStore(settings.database_url)
    build(store, "pony", [busybox()])
    _feed(settings, tmp_path, BB)
    tick(settings)
    row = store.claim_next(worker())
    assert row is not None
    finish(store, row.id, [], state="failed", error="test 'the page is served' failed",
           checks={"fixed": "passed", "tests": "failed", "gate": "passed"})
    tick(settings)
    rebuild = _events(settings)[BB[0]]["builds"][0]
    assert (rebuild["state"], rebuild["tests"], rebuild["gate"], rebuild["reason"]) == (
        FAILED, "failed", "passed", "test 'the page is served' failed")


def test_an_event_for_a_busy_image_waits_for_its_rebuild(settings: Settings,
                                                         tmp_path: Path) -> None:
    store = BuildStore(settings.database_url)
    build(store, "pony", [busybox(), rpm("curl", "8.6.0", "1.fc40")])
    _feed(settings, tmp_path, BB)
    tick(settings)
    _feed(settings, tmp_path, CURL, name="curl.xml")
    report = tick(settings)
    assert (report.discovered, report.deferred, report.submitted) == (1, 1, 0)
    assert _events(settings)[CURL[0]]["state"] == NEW
    run_queued(store, [busybox("2.fc40"), rpm("curl", "8.6.0", "1.fc40")])
    report = tick(settings)
    events = _events(settings)
    assert events[BB[0]]["state"] == DONE
    assert events[CURL[0]]["state"] == BUILDING
    first, second = events[BB[0]]["builds"][0], events[CURL[0]]["builds"][0]
    assert first["rebuild"] != second["rebuild"]
    assert second["old_digest"] == first["new_digest"], "planned against the rebuilt image"


def test_dry_run_writes_nothing(settings: Settings, tmp_path: Path) -> None:
    store = BuildStore(settings.database_url)
    build(store, "pony", [busybox()])
    _feed(settings, tmp_path, BB, ("FEDORA-2024-zz", "zlib", "1.3", "2.fc40"))
    before = _counts(settings)
    report = tick(settings, dry_run=True)
    assert _counts(settings) == before
    assert report.plan is not None
    assert [r.image for r in report.plan.rebuilds] == ["pony"]
    assert report.plan.skipped == {"FEDORA-2024-zz": "no published image contains zlib"}
    assert (report.discovered, report.planned, report.skipped) == (2, 1, 1)


def test_a_crash_after_submitting_adopts_the_build(settings: Settings, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store = BuildStore(settings.database_url)
    build(store, "pony", [busybox()])
    _feed(settings, tmp_path, BB)
    real = EventStore.set_rebuild

    def crash(self: EventStore, session: Any, rebuild: RebuildRow, state: str,
              **values: Any) -> None:
        if state == QUEUED:
            raise RuntimeError("killed between submitting and recording")
        real(self, session, rebuild, state, **values)

    monkeypatch.setattr(runner.EventStore, "set_rebuild", crash)
    with pytest.raises(RuntimeError):
        tick(settings)
    monkeypatch.setattr(runner.EventStore, "set_rebuild", real)
    assert _events(settings)[BB[0]]["builds"][0]["state"] == PLANNED
    builds_before = _counts(settings)[3]
    report = tick(settings)
    assert report.submitted == 1
    assert _counts(settings)[3] == builds_before, "the orphaned build was adopted"
    rebuild = _events(settings)[BB[0]]["builds"][0]
    assert rebuild["state"] == QUEUED and rebuild["attempt"] == 1
    assert store.get(rebuild["build_id"]).trigger["rebuild"] == rebuild["rebuild"]
