"""One pass of the rebuild state machine: discover, observe, plan, submit, settle.

:func:`tick` is idempotent and crash-safe: each step reads the database, decides, and writes
its decision in one transaction, so a process killed anywhere leaves either all of a step or
none of it, and the next tick resumes from what is recorded.  The one write outside a
transaction of ours is submitting a build (``BuildStore.submit``); the build records which
rebuild and attempt it is for (``BuildRow.trigger``), and a tick that finds such a build
unrecorded adopts it instead of submitting another.

The steps, in order (so that one tick can carry an event as far as it can go):

1. **discover** — one NEW event per stored security advisory not seen at its digest;
2. **observe** — a QUEUED rebuild whose build ended becomes DONE (new digest, tests and gate
   from ``BuildRow.checks``, the fixed versions checked to be in the image) or FAILED (the
   build's error; its children fail with "base image X failed to rebuild").  A build reaped
   because its worker died is submitted once more (attempt 2) before the rebuild fails;
3. **plan** — the NEW events together (concurrent advisories coalesce into one rebuild per
   image); an event touching an image whose rebuild is already submitted waits for it; one
   affecting no image is SKIPPED with the reason;
4. **submit** — each PLANNED rebuild whose parent rebuild is DONE (or that has none): a build
   of the old build's recipe and source (a git build at its resolved commit), asking for the
   fixed versions; its events become BUILDING;
5. **settle** — an event whose rebuilds all ended is DONE, or FAILED naming the images that
   failed and why.

The submitted build's ``argv`` is the exact command of the process that submitted it
(``alicorn serve ...``); why is its trigger.  Its options carry ``trigger`` {``advisories``,
``events``, ``rebuild``, ``attempt``, ``previous_build``, ``previous_digest``},
``expect_fixed`` (advisory ids) and, for an image layered on a rebuilt one, ``base_digest``
(the parent's new digest).

With the Celery backend (``queue.backend`` "celery") the builds go to the broker
(:func:`alicorn.cluster.dispatch.dispatcher_for`), a broker that is down leaves the rebuild
planned for a later tick, and a rebuild follows its build's attempts
(``BuildStore.latest_attempt``): a build of a dead worker the reaper retried as another build
is decided by the last attempt's end, and is not submitted again here.  One tick at a time
runs over one database: a file lock per ALICORN_HOME, and on PostgreSQL an advisory lock
(several ``alicorn serve`` hosts, or ``alicorn.tick`` tasks, share the database).

A failed event is planned again with
:meth:`~alicorn.events.store.EventStore.retry` (``alicorn events retry``, or the watcher when
a repository changes and the event lacked a fixed version).
"""

from __future__ import annotations

import fcntl
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from alicorn.advisories import codec
from alicorn.advisories.model import Advisory
from alicorn.config import Settings
from alicorn.errors import Error, Unavailable
from alicorn.events.model import (
    BUILDING,
    CHECK_FAILED,
    DONE,
    FAILED,
    MISSING_FIX,
    NEW,
    PASSED,
    PLANNED,
    QUEUED,
    REBUILD_FINAL,
    RETRIED,
    SKIPPED,
    Plan,
)
from alicorn.events.planner import plan
from alicorn.events.store import EventKey, EventStore, parents_first
from alicorn.inventory.model import Inventory
from alicorn.match.affected import _distro, package_from_row
from alicorn.match.index import AdvisoryIndex
from alicorn.match.matcher import match
from alicorn.store import builds as build_states
from alicorn.store.advisory_models import AdvisoryRow
from alicorn.store.builds import BuildStore, Submission
from alicorn.store.event_models import EventRow, RebuildRow
from alicorn.store.models import BuildRow

__all__ = ["MAX_ATTEMPTS", "TickReport", "tick"]

#: A rebuild whose worker died is built this many times in all before it fails.
MAX_ATTEMPTS = 2
# The error alicorn.worker.local.reap records for a build whose worker died.
_WORKER_DIED = re.compile(r"^the worker \(.*\) died during the build")


@dataclass
class TickReport:
    """What one tick did: events discovered and planned (or skipped), builds submitted,
    rebuilds finished, and a line per thing it did or waited for.  ``plan`` is the plan
    computed (the dry run's answer; None when nothing was planned)."""

    discovered: int = 0
    planned: int = 0
    submitted: int = 0
    finished: int = 0
    messages: list[str] = field(default_factory=list)
    skipped: int = 0
    deferred: int = 0
    plan: Plan | None = None

    def say(self, text: str) -> None:
        self.messages.append(text)

    def to_json(self) -> dict[str, Any]:
        """The counts and messages (not the plan): the answer of the Celery task
        ``alicorn.tick``."""
        return {"discovered": self.discovered, "planned": self.planned,
                "submitted": self.submitted, "finished": self.finished,
                "skipped": self.skipped, "deferred": self.deferred,
                "messages": list(self.messages)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TickReport:
        return cls(**{k: data[k] for k in ("discovered", "planned", "submitted", "finished",
                                           "skipped", "deferred", "messages") if k in data})


def tick(settings: Settings, *, dry_run: bool = False) -> TickReport:
    """One pass of the state machine over the database of ``settings`` (see the module
    docstring).  ``dry_run``: compute what the next pass would plan, write nothing."""
    events = EventStore(settings.database_url)
    builds = BuildStore(settings.database_url)
    report = TickReport()
    if dry_run:
        _dry_run(events, report)
        return report
    with _tick_lock(settings) as held:
        if not held:
            report.say("another tick is running for this ALICORN_HOME; nothing done")
            return report
        report.discovered = len(events.discover_values())
        if report.discovered:
            report.say(f"{report.discovered} new advisory event(s)")
        _observe(events, builds, report, cluster=_celery(settings))
        _plan_new(events, report)
        _submit(events, builds, report, submit=_submitter(settings, builds))
        _settle(events, report)
    return report


def _celery(settings: Settings) -> bool:
    from alicorn.cluster.config import load_queue_config

    return load_queue_config(settings).celery


def _submitter(settings: Settings, builds: BuildStore) -> Callable[[Submission], BuildRow]:
    """How a rebuild's build is submitted: with the Celery backend through its dispatcher
    (the row and the broker message together); in the embedded default the row, which the
    service ticking runs itself (its LocalDispatcher would start a second service)."""
    from alicorn.cluster.config import load_queue_config
    from alicorn.cluster.dispatch import dispatcher_for

    if load_queue_config(settings).celery:
        return dispatcher_for(settings, builds).submit
    return builds.submit


# The key of the PostgreSQL advisory lock one tick holds (any constant shared by all hosts).
_TICK_LOCK_KEY = 0x616C69636F726E01


@contextmanager
def _tick_lock(settings: Settings) -> Iterator[bool]:
    """Hold ``run/events.lock`` for the tick, and on PostgreSQL the database's advisory lock
    too: two ticks over one database would plan the same events twice.  Both die with their
    process (or its connection), so a crash never leaves them held."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / "events.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            with _database_lock(settings.database_url) as held:
                yield held
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _database_lock(url: str) -> Iterator[bool]:
    """A session-level ``pg_try_advisory_lock`` on a connection of its own for the tick
    (always held on SQLite: one host, and the file lock covers it)."""
    if not url.startswith("postgresql"):
        yield True
        return
    from alicorn.store.db import engine_for

    with engine_for(url).connect() as conn:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                 {"key": _TICK_LOCK_KEY}).scalar())
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _TICK_LOCK_KEY})
                conn.commit()


# -- planning ----------------------------------------------------------------------------------


def _advisories(events: EventStore, keys: Sequence[tuple[str, str, str]]
                ) -> dict[tuple[str, str, str], Advisory]:
    bodies = events.advisory_bodies(keys)
    return {key: codec.loads(body) for key, body in bodies.items()}


def _key(event: EventRow | EventKey) -> tuple[str, str, str]:
    return (event.advisory_id, event.advisory_format, event.advisory_digest)


def _busy_images(events: EventStore) -> set[str]:
    """Images whose rebuild is submitted and not over: a new plan for them must wait (it
    would replace the image being built, not the one it makes)."""
    return {r.image for r in events.rebuilds(states=[QUEUED])}


def _dry_run(events: EventStore, report: TickReport) -> None:
    keys = events.undiscovered()
    report.discovered = len(keys)
    keys += [_key(e) for e in events.new_events()]
    unheld = events.unheld({(k[0], k[1]) for k in keys})
    advisories = list(_advisories(events, [k for k in keys if (k[0], k[1]) not in unheld])
                      .values())
    if not advisories and not unheld:
        report.plan = Plan()
        report.say("no advisories without a plan")
        return
    busy = _busy_images(events)
    result = plan(events.database_url, advisories)
    skipped = {k[0]: f"no published image contains {', '.join(names)}"
               for k, names in unheld.items()}
    result = Plan(rebuilds=result.rebuilds, affects=result.affects,
                  skipped={**skipped, **result.skipped})
    report.plan = result
    report.skipped += len(unheld)
    if len(unheld) > 20:
        report.say(f"{len(unheld)} advisories would be skipped: no image contains what "
                   "they name")
    else:
        for advisory_id, reason in sorted(skipped.items()):
            report.say(f"{advisory_id}: would be skipped: {reason}")
    for advisory in advisories:
        images = result.affects.get(advisory.id)
        if not images:
            report.skipped += 1
            report.say(f"{advisory.id}: would be skipped: "
                       f"{result.skipped.get(advisory.id, 'affects no image')}")
        elif busy & set(images):
            report.deferred += 1
            report.say(f"{advisory.id}: would wait for the rebuild of "
                       f"{', '.join(sorted(busy & set(images)))} to finish")
        else:
            report.planned += 1
            report.say(f"{advisory.id}: would rebuild {', '.join(images)}")


def _plan_new(events: EventStore, report: TickReport) -> None:
    new = events.new_events()
    if not new:
        return
    # Advisories that name only rpms no build holds affect no image: skipped without being
    # read (what makes a first tick over 100k advisories quick).
    unheld = events.unheld({(e.advisory_id, e.advisory_format) for e in new})
    if unheld:
        changes: list[tuple[str, str, str | None]] = []
        for e in new:
            looked_for = unheld.get((e.advisory_id, e.advisory_format))
            if looked_for is not None:
                changes.append((e.id, SKIPPED,
                                f"no published image contains {', '.join(looked_for)}"))
        events.set_states(changes, only_from=[NEW])
        report.skipped += len(changes)
        if len(changes) > 20:
            report.say(f"{len(changes)} events skipped: no image contains what they name")
        else:
            for event_id, _, reason in changes:
                report.say(f"event {event_id} skipped: {reason}")
        new = [e for e in new if (e.advisory_id, e.advisory_format) not in unheld]
    retried = [e for e in new if (e.reason or "").startswith(RETRIED)]
    if retried and (len(retried) < len(new) or events.rebuilds(states=[PLANNED, QUEUED])):
        # A retried event may still lack its fix: planned with others, it would fail their
        # rebuilds too.  It waits until it can be planned alone.
        report.deferred += len(retried)
        new = [e for e in new if not (e.reason or "").startswith(RETRIED)]
        if not new:
            return
    by_key = _advisories(events, [_key(e) for e in new])
    gone = [e for e in new if _key(e) not in by_key]
    if gone:
        # A newer version of the advisory replaced it before it was planned: the newer
        # version is an event of its own.
        events.set_state([e.id for e in gone], SKIPPED,
                         "superseded: a newer version of the advisory replaced this one "
                         "before it was planned", only_from=[NEW])
        report.skipped += len(gone)
    new = [e for e in new if _key(e) in by_key]
    if not new:
        return
    advisories = {by_key[_key(e)].id: by_key[_key(e)] for e in new}
    busy = _busy_images(events)
    result = plan(events.database_url, list(advisories.values()))
    ready, deferred = [], []
    for e in new:
        images = set(result.affects.get(e.advisory_id, ()))
        if images & busy:
            deferred.append(e)
            report.say(f"event {e.id} ({e.advisory_id}) waits for the rebuild of "
                       f"{', '.join(sorted(images & busy))} to finish")
        else:
            ready.append(e)
    report.deferred += len(deferred)
    if deferred:
        if not ready:
            return
        # Plan again without the deferred ones, so their advisories are not folded into
        # the rebuilds made now.
        result = plan(events.database_url,
                      list({e.advisory_id: advisories[e.advisory_id] for e in ready}.values()))
    report.plan = result

    with events.transaction() as s:
        # Rebuilds not yet submitted take the new advisories in (one rebuild per image).
        joinable = {r.image: r for r in events.rebuilds(states=[PLANNED], session=s)}
        rebuild_of: dict[str, RebuildRow] = {}
        for planned in result.rebuilds:
            parent = rebuild_of.get(planned.parent) if planned.parent else None
            row = joinable.get(planned.image)
            if row is not None:
                merged = sorted(set(row.advisories or ()) | set(planned.advisories))
                values: dict[str, Any] = {"advisories": merged,
                                          "old_build_id": planned.old_build_id,
                                          "old_digest": planned.old_digest,
                                          "reason": planned.reason or row.reason}
                if parent is not None:
                    values["parent_id"] = parent.id
                events.set_rebuild(s, row, PLANNED, **values)
            else:
                row = events.add_rebuild(
                    s, image=planned.image, old_build_id=planned.old_build_id,
                    old_digest=planned.old_digest, advisories=planned.advisories,
                    parent_id=parent.id if parent else None, reason=planned.reason)
            rebuild_of[planned.image] = row
        s.flush()
        changes = []
        links: list[tuple[str, str]] = []
        for e in ready:
            names = result.affects.get(e.advisory_id, ())
            if not names:
                reason = result.skipped.get(e.advisory_id, "affects no published image")
                changes.append((e.id, SKIPPED, reason))
                report.skipped += 1
                report.say(f"event {e.id} ({e.advisory_id}) skipped: {reason}")
                continue
            links += [(e.id, rebuild_of[name].id) for name in names]
            changes.append((e.id, PLANNED, f"rebuilding {', '.join(names)}"))
            report.planned += 1
            report.say(f"event {e.id} ({e.advisory_id}) planned: rebuild {', '.join(names)}")
        events.link(s, links)
        events.set_states(changes, only_from=[NEW], session=s)


# -- submitting --------------------------------------------------------------------------------


def _submit(events: EventStore, builds: BuildStore, report: TickReport, *,
            submit: Callable[[Submission], BuildRow] | None = None) -> None:
    submit = submit or builds.submit
    planned = events.rebuilds(states=[PLANNED])
    if not planned:
        return
    parent_ids = {r.parent_id for r in planned if r.parent_id}
    parents = {r.id: r for r in events.rebuilds(ids=parent_ids)} if parent_ids else {}
    linked = events.events_of([r.id for r in planned])
    for rebuild in parents_first(planned):
        parent = parents.get(rebuild.parent_id or "")
        if parent is not None and parent.state in (FAILED, SKIPPED):
            with events.transaction() as s:
                row = s.get(RebuildRow, rebuild.id)
                if row is not None and row.state == PLANNED:
                    reason = f"base image {parent.image} failed to rebuild"
                    events.set_rebuild(s, row, FAILED, reason=reason)
                    _fail_children(events, s, row)
                    report.finished += 1
                    report.say(f"{row.image}: {reason}")
            parents[rebuild.id] = rebuild
            rebuild.state = FAILED
            continue
        if parent is not None and parent.state != DONE:
            continue
        attempt = rebuild.attempt + 1
        try:
            build = events.build_for_attempt(rebuild.id, attempt)
            if build is None:
                build = submit(_submission(builds, rebuild, parent, attempt,
                                           linked.get(rebuild.id, [])))
        except Unavailable as e:
            # Nothing was recorded (the broker is down): the rebuild stays planned, and a
            # later tick submits it.
            report.say(f"{rebuild.image}: its rebuild waits: {e.message}")
            return
        except Error as e:
            with events.transaction() as s:
                row = s.get(RebuildRow, rebuild.id)
                if row is not None and row.state == PLANNED:
                    events.set_rebuild(s, row, FAILED, reason=f"cannot submit: {e.message}")
                    _fail_children(events, s, row)
            report.finished += 1
            report.say(f"{rebuild.image}: cannot submit its rebuild: {e.message}")
            rebuild.state = FAILED
            parents[rebuild.id] = rebuild
            continue
        with events.transaction() as s:
            row = s.get(RebuildRow, rebuild.id)
            if row is None or row.state != PLANNED:
                continue
            events.set_rebuild(s, row, QUEUED, build_id=build.id, attempt=attempt)
            events.set_state(linked.get(rebuild.id, []), BUILDING,
                             f"building {rebuild.image}", only_from=[PLANNED, BUILDING],
                             session=s)
        report.submitted += 1
        report.say(f"{rebuild.image}: build {build.id} submitted (attempt {attempt})")


def _submission(builds: BuildStore, rebuild: RebuildRow, parent: RebuildRow | None,
                attempt: int, event_ids: Sequence[str]) -> Submission:
    """The build of ``rebuild``: the old build's recipe and source, the git source pinned at
    the commit it resolved to, and the trigger."""
    if not rebuild.old_build_id:
        raise Error(f"the rebuild of {rebuild.image} names no build to replace")
    old = builds.get(rebuild.old_build_id)
    advisories = list(rebuild.advisories or ())
    trigger = {"advisories": advisories, "events": list(event_ids), "rebuild": rebuild.id,
               "attempt": attempt, "previous_build": old.id,
               "previous_digest": rebuild.old_digest or old.digest}
    options: dict[str, Any] = {
        k: v for k, v in (old.options or {}).items()
        if k in ("compression_level", "source_date_epoch")}
    options.update(trigger=trigger, expect_fixed=advisories)
    argv = _service_argv()
    if parent is not None:
        if not parent.new_digest:
            raise Error(f"the rebuild of base image {parent.image} recorded no digest")
        options["base_digest"] = parent.new_digest
    if old.source_kind == "git":
        ref = old.source_commit or old.source_ref
        if not old.source_url or not ref:
            raise Error(f"build {old.id} of {rebuild.image} records no git source to rebuild")
        return Submission(argv=argv, source_kind="git", source_url=old.source_url,
                          source_ref=ref, recipe_path=old.recipe_path, options=options,
                          trigger=trigger)
    if old.recipe_content is None:
        raise Error(f"build {old.id} of {rebuild.image} records no recipe to rebuild")
    return Submission(argv=argv, source_kind="file", recipe_path=old.recipe_path,
                      recipe_content=old.recipe_content, options=options, trigger=trigger)


def _service_argv() -> list[str]:
    """The exact command of the process that asked for the rebuild (``alicorn serve ...``);
    why it did is the build's trigger.  A program that calls :func:`tick` itself is named
    by its own argv."""
    path = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    if path.name == "alicorn" or (path.name == "__main__.py" and path.parent.name == "alicorn"):
        return ["alicorn", *sys.argv[1:]]
    return [path.parent.name if path.name == "__main__.py" else path.name, *sys.argv[1:]]


# -- observing ---------------------------------------------------------------------------------


def _check(value: Any) -> str | None:
    """A check's summary as the rebuild keeps it: passed, failed, or None (not run)."""
    if value in (PASSED, CHECK_FAILED):
        return str(value)
    if isinstance(value, dict):
        return _check(value.get("result") or value.get("state") or value.get("status"))
    if value is True:
        return PASSED
    if value is False:
        return CHECK_FAILED
    return None


def _observe(events: EventStore, builds: BuildStore, report: TickReport, *,
             cluster: bool = False) -> None:
    """Record the end of each queued rebuild whose build ended.  The build that decides is
    the submission's last attempt (``BuildStore.latest_attempt``): one failed by a dead
    worker may have been retried as another build, whose end is the rebuild's."""
    queued = events.rebuilds(states=[QUEUED])
    if not queued:
        return
    rows = events.builds({r.build_id for r in queued if r.build_id})
    for rebuild in queued:
        build = rows.get(rebuild.build_id or "")
        if build is not None and build.retried_as:
            build = builds.latest_attempt(build.id)
        if build is None or build.state not in build_states.FINAL:
            continue
        if build.state == build_states.DONE:
            # Read the packages now, outside the transaction that records the outcome.
            build = builds.get(build.id)
            problem = _problem(events, build, rebuild)
        else:
            problem = None
        with events.transaction() as s:
            row = s.get(RebuildRow, rebuild.id)
            if row is None or row.state != QUEUED or row.build_id != rebuild.build_id:
                continue
            checks = build.checks or {}
            tests, gate = _check(checks.get("tests")), _check(checks.get("gate"))
            if build.state == build_states.DONE and problem is None:
                events.set_rebuild(s, row, DONE, new_digest=build.digest, tests=tests,
                                   gate=gate, reason=row.reason)
                report.finished += 1
                report.say(f"{row.image}: rebuilt as {build.digest} (build {build.id})")
                continue
            error = problem or build.error or "the build failed"
            # A build the queue retried itself (attempts of its own, the cluster's
            # max_attempts) is not submitted again: its last attempt's end is the rebuild's.
            retried_by_queue = cluster or build.id != rebuild.build_id or \
                (build.attempt or 1) > 1
            if (build.state == build_states.FAILED and _WORKER_DIED.match(error)
                    and row.attempt < MAX_ATTEMPTS and not retried_by_queue):
                events.set_rebuild(s, row, PLANNED,
                                   reason=f"attempt {row.attempt}: {error}; submitting again")
                report.say(f"{row.image}: {error}; submitting it again")
                continue
            events.set_rebuild(s, row, FAILED, tests=tests, gate=gate, reason=error,
                               new_digest=build.digest if build.state == build_states.DONE
                               else None)
            _fail_children(events, s, row)
            report.finished += 1
            report.say(f"{row.image}: rebuild failed: {error}")


def _problem(events: EventStore, build: BuildRow, rebuild: RebuildRow) -> str | None:
    """Why a finished build cannot stand as the rebuild (None: it can): a check failed, it
    was not published, or the image still holds a version the advisories fix."""
    checks = build.checks or {}
    failed = [name for name in ("tests", "gate") if _check(checks.get(name)) == CHECK_FAILED]
    if failed:
        return f"the {' and '.join(failed)} failed; the image was not published"
    if not build.published:
        return "the image was built but not published"
    if checks.get("fixed") in (False, CHECK_FAILED):
        return str(checks.get("fixed_detail") or "the image does not hold the fixed versions")
    wanted = list(rebuild.advisories or ())
    if not wanted:
        return None
    with events.transaction() as s:
        bodies = s.scalars(select(AdvisoryRow.body).where(AdvisoryRow.id.in_(wanted))).all()
    advisories = [codec.loads(b) for b in bodies]
    if not advisories:
        return None
    packages = tuple(package_from_row(p) for p in build.packages)
    inventory = Inventory(target=build.digest or build.id, kind="alicorn", packages=packages,
                          distro=_distro(build.packages), digest=build.digest,
                          name=build.image_ref)
    findings = match(inventory, AdvisoryIndex(advisories))
    if not findings:
        return None
    still = sorted({f"{f.package.name} {f.package.version} (fixed in "
                    f"{f.fixed_version or '?'}, {f.advisory.id})" for f in findings})
    return ("the rebuilt image still holds " + ", ".join(still)
            + f": the repositories {MISSING_FIX}")


def _fail_children(events: EventStore, session: Session, failed: RebuildRow) -> None:
    """Fail every not-yet-submitted rebuild layered (transitively) on ``failed``."""
    frontier = [failed]
    while frontier:
        parent = frontier.pop()
        children = session.scalars(select(RebuildRow).where(
            RebuildRow.parent_id == parent.id, RebuildRow.state == PLANNED)).all()
        for child in children:
            events.set_rebuild(session, child, FAILED,
                               reason=f"base image {parent.image} failed to rebuild")
            frontier.append(child)


# -- settling events ---------------------------------------------------------------------------


def _settle(events: EventStore, report: TickReport) -> None:
    active = events.events(states=[PLANNED, BUILDING])
    if not active:
        return
    linked = events.rebuilds_of([e.id for e in active])
    changes: list[tuple[str, str, str | None]] = []
    for e in active:
        rebuilds = linked.get(e.id, [])
        if not rebuilds or any(r.state not in REBUILD_FINAL for r in rebuilds):
            continue
        failed = [r for r in rebuilds if r.state == FAILED]
        if failed:
            reason = "; ".join(f"{r.image}: {r.reason or 'failed'}" for r in failed)
            changes.append((e.id, FAILED, reason))
            report.say(f"event {e.id} ({e.advisory_id}) failed: {reason}")
        else:
            done = [r.image for r in parents_first(rebuilds) if r.state == DONE]
            changes.append((e.id, DONE, f"rebuilt {', '.join(done)}"))
            report.say(f"event {e.id} ({e.advisory_id}) done: rebuilt {', '.join(done)}")
    events.set_states(changes, only_from=[PLANNED, BUILDING])
