"""Watching repositories and feeds: what changed since the last look is imported.

The sources are rows of ``watch_sources``:

* origin ``builds``: every repository a current image's recipe uses (the newest published build
  of each recipe; its ``inputs["repositories"]``), found again on every poll, so a new image's
  repositories are watched from its first build on and a retired one's are dropped;
* origin ``user``: what ``alicorn watch add`` was given (a feed file, a directory of feeds, an
  RPM repository, a feed or repository URL, a Debian suite ``MIRROR/dists/SUITE``).

Each poll looks at each source cheaply and imports its advisories only when that look differs
from the last one (or on first sight):

=============  ==========================================  ===============================
kind           the look (its sha256 is the digest)           the import
=============  ==========================================  ===============================
rpm-repo       ``repodata/repomd.xml``                     the updateinfo repomd.xml names
debian-repo    ``dists/SUITE/InRelease``                   the security suite's uploads for
                                                           the images' source packages
feed (file)    the file's bytes                            the file, as ``advisories import``
feed (dir)     names, sizes, m/ctimes of its files         every feed file under it
feed (URL)     the body (size-capped)                      the URL
=============  ==========================================  ===============================

A source that cannot be looked at or imported is an error recorded on its row and reported;
it never stops the other sources, and its digest is kept as it was, so the import is tried
again on the next poll.  Advisories read from a changed source are handed to the event store,
which makes one event per new security advisory (the same advisory twice makes one event).
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from alicorn.advisories.model import Advisory, FeedError
from alicorn.config import Settings
from alicorn.errors import BadInput, Error, NotFound, StoreError
from alicorn.recipe.model import Repository
from alicorn.store.db import session_factory
from alicorn.store.event_models import WatchSourceRow
from alicorn.store.models import BuildRow, PackageRow

RPM_REPO, DEBIAN_REPO, FEED = "rpm-repo", "debian-repo", "feed"
KINDS = (RPM_REPO, DEBIAN_REPO, FEED)
BUILDS, USER = "builds", "user"

#: how long one look at a remote source may take
TIMEOUT = 30.0
#: seconds after which a conditional look fetches the whole body anyway
REFRESH = 300.0
#: cap on a feed URL's body when it is digested (the import applies the feeds' own caps)
MAX_BODY = 64 * 1024 * 1024


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Source:
    """One watched source, as the table holds it."""

    id: int
    kind: str
    url: str
    origin: str
    digest: str | None
    checked_at: datetime | None
    changed_at: datetime | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() + "Z" if value else None
        return {"id": self.id, "kind": self.kind, "url": self.url, "origin": self.origin,
                "digest": self.digest, "checked_at": iso(self.checked_at),
                "changed_at": iso(self.changed_at), "error": self.error}


def _source(row: WatchSourceRow) -> Source:
    return Source(id=row.id, kind=row.kind, url=row.url, origin=row.origin, digest=row.digest,
                  checked_at=row.checked_at, changed_at=row.changed_at, error=row.error)


@dataclass(frozen=True)
class SourceReport:
    """What one poll saw at one source.

    ``changed``: its digest differs from the last one recorded (True on first sight);
    ``imported``: its advisories were read and stored (``added``/``replaced``/``unchanged``
    count them); ``error``: why it could not be looked at or imported (the rest is then
    meaningless); ``events``: how many new events its advisories made.
    """

    url: str
    kind: str
    origin: str
    changed: bool = False
    imported: bool = False
    digest: str | None = None
    read: int = 0
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    events: int = 0
    warnings: tuple[str, ...] = ()
    error: str | None = None
    #: the error differs from the one recorded before (a log says it once)
    new_error: bool = False
    #: the source had an error recorded and now has none
    recovered: bool = False

    @property
    def news(self) -> bool:
        """Whether a log should say something about this source."""
        # A source whose import keeps failing is "changed" at every look (its digest is not
        # recorded, so the import is tried again): its error is news once, not at every look.
        return (self.changed and self.error is None) or self.new_error or self.recovered

    def line(self) -> str:
        """One line for a log: what happened at this source."""
        if self.error:
            return f"watch {self.url}: error: {self.error}"
        if not self.changed:
            return f"watch {self.url}: unchanged" + (" (no error any more)"
                                                      if self.recovered else "")
        if not self.imported:
            return f"watch {self.url}: changed ({self.digest})"
        return (f"watch {self.url}: changed: {self.read} advisories read: {self.added} added, "
                f"{self.replaced} replaced, {self.unchanged} unchanged; "
                f"{self.events} new events"
                + (f" ({len(self.warnings)} warnings)" if self.warnings else ""))

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "kind": self.kind, "origin": self.origin,
                "changed": self.changed, "imported": self.imported, "digest": self.digest,
                "read": self.read, "added": self.added, "replaced": self.replaced,
                "unchanged": self.unchanged, "events": self.events,
                "warnings": list(self.warnings), "error": self.error}


@dataclass(frozen=True)
class PollReport:
    sources: tuple[SourceReport, ...] = ()
    added_sources: tuple[str, ...] = field(default=())
    dropped_sources: tuple[str, ...] = field(default=())
    # Failed events planned again because a repository changed (see Watcher.poll).
    retried: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> tuple[SourceReport, ...]:
        """The sources a log should mention (changed, failing anew, or recovered)."""
        return tuple(s for s in self.sources if s.news)

    @property
    def events(self) -> int:
        return sum(s.events for s in self.sources)


# -- locations ----------------------------------------------------------------------------------


def _local_path(url: str) -> Path | None:
    """The path of a ``file://`` URL (or a plain path); None for a remote URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "":
        return Path(url)
    return None


def _debian_suite(url: str) -> tuple[str, str]:
    """``(mirror, suite)`` of a debian-repo source URL ``MIRROR/dists/SUITE``."""
    mirror, _, suite = url.rstrip("/").rpartition("/dists/")
    return mirror, suite


def classify(location: str) -> tuple[str, str]:
    """``(kind, url)`` of something given to ``alicorn watch add``, checked to be usable.

    Raises :class:`BadInput` naming ``location`` when it is not a feed file, a directory, an
    RPM repository, a Debian suite or a reachable feed URL.
    """
    from alicorn.compose.fetch import fetch_bytes

    hint = ("give a feed file, a directory of feeds, an RPM repository (a directory or URL "
            "holding repodata/), a feed URL, or a Debian suite as MIRROR/dists/SUITE")
    parts = urlsplit(location)
    if "://" in location and parts.scheme not in ("http", "https", "file"):
        raise BadInput(f"unsupported URL scheme {parts.scheme!r}", where=location, hint=hint)
    path = _local_path(location) if parts.scheme in ("", "file") else None
    if path is not None:
        path = path.expanduser().absolute()
        try:
            mode = path.stat().st_mode
        except OSError as e:
            raise BadInput(f"cannot watch it: {e.strerror or e}", where=location,
                           hint=hint) from e
        url = path.as_uri()
        if stat.S_ISDIR(mode):
            if not os.access(path, os.R_OK | os.X_OK):
                raise BadInput("cannot watch it: the directory is not readable",
                               where=location)
            return (RPM_REPO if (path / "repodata" / "repomd.xml").is_file() else FEED), url
        if not stat.S_ISREG(mode):
            raise BadInput("cannot watch it: not a regular file or directory", where=location)
        _check_feed(url, location, hint)
        return FEED, url
    url = location
    if "/dists/" in url:
        mirror, suite = _debian_suite(url)
        try:
            fetch_bytes(f"{mirror}/dists/{suite}/InRelease", what=f"suite {suite}",
                        timeout=TIMEOUT)
        except Error as e:
            raise BadInput(f"cannot watch it: {e.message}", where=location, hint=hint) from e
        return DEBIAN_REPO, f"{mirror}/dists/{suite}"
    try:
        fetch_bytes(url.rstrip("/") + "/repodata/repomd.xml", what="the repository",
                    timeout=TIMEOUT)
    except Error:
        _check_feed(url, location, hint)
        return FEED, url
    return RPM_REPO, url.rstrip("/")


def _check_feed(url: str, location: str, hint: str) -> None:
    from alicorn.advisories.feeds import load

    try:
        load(url, timeout=TIMEOUT)
    except FeedError as e:
        inner = f"{e.where}: " if e.where and e.where not in (location, url) else ""
        raise BadInput(f"cannot watch it: {inner}{e.message}", where=location,
                       hint=e.hint or hint) from e


# -- looking at a source ------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _dir_digest(root: Path) -> str:
    """Of every file under ``root`` (dot-files and dot-directories passed over, as the feed
    loader does): its relative name, size, mtime, ctime and inode, so that no file is read
    on a poll that finds nothing new."""
    if not root.is_dir():
        raise FileNotFoundError(2, "No such directory", str(root))
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:
                continue   # removed while we looked: the next poll sees the new state
            rel = path.relative_to(root).as_posix()
            # ctime too: a reproducible rewrite pins the mtime, but no one can pin the ctime.
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n"
                     .encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


def _raise(error: OSError) -> None:
    raise error


class WatchError(Error):
    """A watched source cannot be looked at."""


@dataclass(frozen=True)
class _Seen:
    """What an HTTP server said about a body last time: its validators, and its digest."""

    etag: str | None
    modified: str | None
    digest: str
    fetched: float      # time.monotonic() of the whole body


def _remote_digest(url: str, *, what: str, limit: int, seen: dict[str, _Seen] | None) -> str:
    """The sha256 of the body at the http(s) ``url``, at most ``limit`` bytes.

    With ``seen`` (the watcher's memory of earlier answers), a conditional GET: a server that
    answers 304 Not Modified sends nothing and the digest is the one seen last, so a poll
    every few seconds costs the mirror a few hundred bytes, not its whole InRelease.  Only
    for Debian's suites: their InRelease carries a fresh date on every change, so its
    validators change with it, whereas a reproducibly built repository or feed (every mtime
    pinned, the same size) can change under the same Last-Modified and ETag.  Every
    :data:`REFRESH` seconds the body is fetched whole regardless.
    """
    headers = {"User-Agent": "alicorn"}
    last = seen.get(url) if seen is not None else None
    if last is not None and time.monotonic() - last.fetched > REFRESH:
        last = None
    if last is not None:
        if last.etag:
            headers["If-None-Match"] = last.etag
        if last.modified:
            headers["If-Modified-Since"] = last.modified
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=TIMEOUT) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise WatchError(f"{what}: {url} announces {length} bytes, more than the "
                                 f"{limit}-byte cap")
            data = response.read(limit + 1)
            etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    except urllib.error.HTTPError as e:
        if e.code == 304 and last is not None:
            return last.digest
        raise WatchError(f"{what} is not reachable: {url} answered HTTP {e.code} {e.reason}",
                         hint="check the URL") from e
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise WatchError(f"{what} is not reachable: {url}: {reason}",
                         hint="check the URL and the network") from e
    if len(data) > limit:
        raise WatchError(f"{what}: {url} is larger than the {limit}-byte cap")
    digest = _sha256(data)
    if seen is not None and (etag or modified):
        seen[url] = _Seen(etag, modified, digest, time.monotonic())
    return digest


def look(kind: str, url: str, *, seen: dict[str, _Seen] | None = None) -> str:
    """The digest of the source's current state (see the module's table); ``seen`` makes
    the look at a Debian suite over http(s) a conditional GET.

    Raises :class:`Error` (or ``OSError``) when the source cannot be looked at.
    """
    from alicorn.compose.fetch import MAX_METADATA_BYTES

    if kind == RPM_REPO:
        target, what, limit = (f"{url.rstrip('/')}/repodata/repomd.xml",
                               f"repository {url}", MAX_METADATA_BYTES)
    elif kind == DEBIAN_REPO:
        mirror, suite = _debian_suite(url)
        target, what, limit = (f"{mirror}/dists/{suite}/InRelease", f"suite {suite} at {mirror}",
                               MAX_METADATA_BYTES)
    else:
        target, what, limit = url, "the feed", MAX_BODY
    path = _local_path(target)
    if path is None:
        return _remote_digest(target, what=what, limit=limit,
                              seen=seen if kind == DEBIAN_REPO else None)
    try:
        if kind == FEED and path.is_dir():
            return _dir_digest(path)
        return _file_digest(path)
    except OSError as e:
        raise WatchError(f"{what} cannot be read: {e.strerror or e}", where=str(path)) from e


# -- the sources of the current images ----------------------------------------------------------


@dataclass(frozen=True)
class _Wanted:
    """A repository the current images use, and what importing from it needs."""

    kind: str
    url: str
    gpgcheck: bool = True
    base: tuple[str, str] | None = None    # Debian: (mirror, suite) the security suite tops


@dataclass
class _Images:
    """What the watcher needs to know of the current images."""

    repos: dict[str, _Wanted] = field(default_factory=dict)
    deb_sources: set[str] = field(default_factory=set)


def current_builds(settings: Settings) -> list[BuildRow]:
    """The newest done, published build of each recipe (the images in use, as the planner
    sees them)."""
    with session_factory(settings.database_url)() as session:
        rows = session.execute(
            select(BuildRow).where(BuildRow.state == "done", BuildRow.published.is_(True),
                                   BuildRow.digest.is_not(None))
        ).scalars().all()
        newest: dict[str, BuildRow] = {}
        for row in rows:
            key = row.recipe_name or row.recipe_path
            best = newest.get(key)
            if best is None or (row.created_at, row.id) > (best.created_at, best.id):
                newest[key] = row
        return sorted(newest.values(), key=lambda r: r.id)


@functools.lru_cache(maxsize=1024)
def _recipe_repositories(text: str, path: str) -> tuple[bool, tuple[Repository, ...]]:
    """Whether the recipe is Debian's, and its repositories (parsed once per content: every
    poll looks at them)."""
    from alicorn.recipe.loader import parse_recipe

    if not text:
        return False, ()
    try:
        recipe = parse_recipe(text, file=path, base_dir=Path(path).parent)
    except Error:
        return False, ()
    return recipe.distribution == "debian", recipe.repositories


def _images(settings: Settings) -> _Images:
    found = _Images()
    builds = current_builds(settings)
    for row in builds:
        repos = (row.inputs or {}).get("repositories") or []
        debian, specs = _recipe_repositories(row.recipe_content or "", row.recipe_path)
        suites: dict[str, str] = {}
        for i, repo in enumerate(repos):
            url = str(repo.get("url") or "").rstrip("/")
            if not url:
                continue
            spec = specs[i] if i < len(specs) and specs[i].name == repo.get("name") else None
            if debian:
                if spec is None or spec.suite is None:
                    continue
                suites[spec.suite] = url
                wanted = _Wanted(DEBIAN_REPO, f"{url}/dists/{spec.suite}",
                                 gpgcheck=spec.gpgcheck)
            else:
                wanted = _Wanted(RPM_REPO, url)
            found.repos.setdefault(wanted.url, wanted)
        for suite, url in suites.items():
            # bookworm-security tops bookworm: only uploads newer than bookworm's versions
            # are advisories for an image built from both.
            base = suite.removesuffix("-security")
            key = f"{url}/dists/{suite}"
            if base != suite and base in suites and key in found.repos:
                found.repos[key] = _Wanted(DEBIAN_REPO, key, found.repos[key].gpgcheck,
                                           (suites[base], base))
    if builds:
        with session_factory(settings.database_url)() as session:
            for name, source in session.execute(
                    select(PackageRow.name, PackageRow.source)
                    .where(PackageRow.type == "deb",
                           PackageRow.build_id.in_([b.id for b in builds]))):
                found.deb_sources.add(source or name)
    return found


# -- the watcher --------------------------------------------------------------------------------


Discover = Callable[[], int]


class Watcher:
    """The watched sources of one ALICORN_HOME, and polling them."""

    def __init__(self, settings: Settings, *, discover: Discover | None = None):
        self.settings = settings
        self._sessions = session_factory(settings.database_url)
        self._discover = discover if discover is not None else _event_discover(settings)
        self._seen: dict[str, _Seen] = {}

    # -- the table ----------------------------------------------------------------------------

    def sources(self) -> list[Source]:
        """Every watched source, builds' first, then the user's, each in the order added."""
        with self._sessions() as session:
            rows = session.execute(select(WatchSourceRow)).scalars().all()
            return sorted((_source(r) for r in rows), key=lambda s: (s.origin != BUILDS, s.id))

    def add(self, location: str) -> Source:
        """Watch ``location`` (checked by :func:`classify`); a source watched already is
        returned as it is (and becomes the user's, so a rebuilt image no longer drops it)."""
        kind, url = classify(location)
        try:
            with self._sessions.begin() as session:
                row = session.execute(select(WatchSourceRow).where(WatchSourceRow.url == url)
                                      ).scalar_one_or_none()
                if row is None:
                    row = WatchSourceRow(kind=kind, url=url, origin=USER)
                    session.add(row)
                else:
                    row.origin = USER
                session.flush()
                return _source(row)
        except SQLAlchemyError as e:
            raise StoreError(f"cannot record the watched source {url}: {e}") from e

    def remove(self, location: str) -> Source:
        """Stop watching ``location`` (as given to add, its URL, or its id)."""
        with self._sessions.begin() as session:
            row = self._find(session, location)
            if row.origin == BUILDS:
                raise BadInput(f"{row.url} is watched because an image's recipe uses it",
                               where=location,
                               hint="it is found again on every poll while a current image "
                                    "is built from it")
            found = _source(row)
            session.delete(row)
            return found

    def _find(self, session: Any, location: str) -> WatchSourceRow:
        candidates = [location]
        if location.isdigit():
            row = session.get(WatchSourceRow, int(location))
            if row is not None:
                return row  # type: ignore[no-any-return]
        path = _local_path(location)
        if path is not None:
            candidates.append(path.expanduser().absolute().as_uri())
        candidates.append(location.rstrip("/"))
        for url in candidates:
            row = session.execute(select(WatchSourceRow).where(WatchSourceRow.url == url)
                                  ).scalar_one_or_none()
            if row is not None:
                return row  # type: ignore[no-any-return]
        raise NotFound(f"{location} is not watched", hint="alicorn watch list shows what is")

    def sync(self) -> tuple[_Images, tuple[str, ...], tuple[str, ...]]:
        """Bring the builds' sources up to date with the current images; returns what the
        images need and the URLs added and dropped."""
        images = _images(self.settings)
        for attempt in (1, 2):
            try:
                added, dropped = self._sync(images)
                break
            except IntegrityError:
                # Another process (`alicorn watch check` beside the service) added the same
                # source first: look again.
                if attempt == 2:
                    raise
        return images, added, dropped

    def _sync(self, images: _Images) -> tuple[tuple[str, ...], tuple[str, ...]]:
        added: list[str] = []
        dropped: list[str] = []
        with self._sessions.begin() as session:
            rows = {r.url: r for r in session.execute(select(WatchSourceRow)).scalars()}
            for url, wanted in images.repos.items():
                if url not in rows:
                    session.add(WatchSourceRow(kind=wanted.kind, url=url, origin=BUILDS))
                    added.append(url)
            gone = [u for u, r in rows.items() if r.origin == BUILDS and u not in images.repos]
            if gone:
                session.execute(delete(WatchSourceRow).where(WatchSourceRow.url.in_(gone)))
                dropped.extend(gone)
        return tuple(added), tuple(dropped)

    # -- polling --------------------------------------------------------------------------------

    def poll(self, *, record: bool = True, only: Iterable[str] | None = None) -> PollReport:
        """Look at every source; import what changed (or was never seen); record what was
        seen unless ``record`` is False (a dry run: advisories are still read and stored, so
        that a plan can be made from them, but no event is written and the sources' digests
        stay as they were, so the next real poll imports them again).

        Never raises for a source's failure: it is recorded on the source and in the report.
        """
        images, added, dropped = self.sync()
        wanted = set(only) if only is not None else None
        reports = []
        for source in self.sources():
            if wanted is not None and source.url not in wanted:
                continue
            reports.append(self._poll_one(source, images, record=record))
        retried: tuple[str, ...] = ()
        moved = [r.url for r in reports
                 if r.kind in (RPM_REPO, DEBIAN_REPO) and r.changed and r.error is None]
        if record and moved:
            retried = self._retry_missing_fixes(moved)
        return PollReport(tuple(reports), added, dropped, retried)

    def _retry_missing_fixes(self, urls: list[str]) -> tuple[str, ...]:
        """An advisory often lands before its update reaches the mirror: its rebuild fails
        for lack of the fixed version.  When a repository changes, such events are planned
        again (the next tick finds the image fixed, affected still, or skipped)."""
        from alicorn.events.model import RETRIED
        from alicorn.events.store import EventStore

        store = EventStore(self.settings.database_url)
        ids = store.failed_for_missing_fixes()
        if not ids:
            return ()
        return tuple(store.retry(ids, why=f"{RETRIED}: {', '.join(urls)} changed"))

    def _poll_one(self, source: Source, images: _Images, *, record: bool) -> SourceReport:
        base = SourceReport(url=source.url, kind=source.kind, origin=source.origin)
        checked = _now()
        try:
            digest = look(source.kind, source.url, seen=self._seen)
        except (Error, OSError) as e:
            return self._failed(source, base, _message(e), checked, record=record)
        changed = digest != source.digest
        if not changed:
            if record:
                self._record(source.id, checked_at=checked, error=None)
            return SourceReport(url=source.url, kind=source.kind, origin=source.origin,
                                digest=digest, recovered=source.error is not None)
        try:
            advisories, warnings = self._read(source, images.repos.get(source.url),
                                              images.deb_sources)
            from alicorn.advisories.store import AdvisoryStore

            stats = AdvisoryStore(self.settings.database_url).import_advisories(
                advisories, source=source.url)
            events = self._discover() if record else 0
        except (Error, OSError) as e:
            failed = self._failed(source, base, _message(e), checked, record=record)
            return replace(failed, changed=True, digest=digest)
        if record:
            self._record(source.id, checked_at=checked, changed_at=checked, digest=digest,
                         error=None)
        return SourceReport(url=source.url, kind=source.kind, origin=source.origin,
                            changed=True, imported=True, digest=digest, read=stats.read,
                            added=stats.added, replaced=stats.replaced,
                            unchanged=stats.unchanged, events=events,
                            warnings=tuple(warnings), recovered=source.error is not None)

    def _failed(self, source: Source, base: SourceReport, message: str, checked: datetime,
                *, record: bool) -> SourceReport:
        if record:
            self._record(source.id, checked_at=checked, error=message)
        return SourceReport(url=base.url, kind=base.kind, origin=base.origin, error=message,
                            new_error=message != source.error)

    def _record(self, source_id: int, **values: Any) -> None:
        with self._sessions.begin() as session:
            row = session.get(WatchSourceRow, source_id)
            if row is None:   # removed meanwhile
                return
            for key, value in values.items():
                setattr(row, key, value)

    def _read(self, source: Source, wanted: _Wanted | None,
              deb_sources: set[str]) -> tuple[list[Advisory], list[str]]:
        """The advisories of a source whose look changed."""
        from alicorn.advisories.feeds import load

        if source.kind == DEBIAN_REPO:
            return self._read_debian(source, wanted, deb_sources)
        location = source.url
        if source.kind == RPM_REPO and _local_path(location) is None:
            location = location.rstrip("/") + "/"   # read through its repodata
        try:
            result = load(location, timeout=TIMEOUT)
        except FeedError:
            path = _local_path(location)
            if path is not None and path.is_dir() and not any(
                    not p.name.startswith(".") for p in path.iterdir()):
                return [], []   # a feed directory not filled yet
            raise
        if source.kind == FEED and not result.advisories and result.warnings:
            raise FeedError(f"none of its records could be read ({len(result.warnings)} "
                            f"skipped: {result.warnings[0]})", where=source.url)
        return list(result.advisories), list(result.warnings)

    def _read_debian(self, source: Source, wanted: _Wanted | None,
                     deb_sources: set[str]) -> tuple[list[Advisory], list[str]]:
        from alicorn.advisories.debian import DEBIAN_KEYRING, fetch_security_advisories

        mirror, suite = _debian_suite(source.url)
        if not suite.endswith("-security"):
            # Point releases carry what the security suite carried before them; the
            # advisories are read from the security suite only.
            return [], []
        if not deb_sources:
            return [], []
        base = wanted.base if wanted is not None else None
        if base is None:
            base = ("http://deb.debian.org/debian", suite.removesuffix("-security"))
        gpgcheck = wanted.gpgcheck if wanted is not None else True
        release = _DEBIAN_RELEASES.get(base[1], "12")
        result = fetch_security_advisories(
            suite=suite, base_suite=base[1], mirror_security=mirror, mirror=base[0],
            packages=sorted(deb_sources), release=release,
            cache_dir=self.settings.cache_dir / "advisories-debian",
            keyring=DEBIAN_KEYRING if gpgcheck else None, timeout=TIMEOUT)
        return list(result.advisories), list(result.warnings)


_DEBIAN_RELEASES = {"bookworm": "12", "trixie": "13", "bullseye": "11", "forky": "14"}


def _message(error: BaseException) -> str:
    if isinstance(error, Error):
        return error.diagnostics().replace("\n  hint: ", " (hint: ") + (
            ")" if error.hint else "")
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    return str(error)


def _event_discover(settings: Settings) -> Discover:
    """Stored advisories → events, through the event store: one NEW event for every security
    advisory (id, format, content) that has none yet, wherever it was imported from."""
    def discover() -> int:
        from alicorn.events.store import EventStore

        return len(EventStore(settings.database_url).discover_values())
    return discover


__all__ = ["BUILDS", "DEBIAN_REPO", "FEED", "KINDS", "RPM_REPO", "USER", "PollReport",
           "Source", "SourceReport", "WatchError", "Watcher", "classify", "current_builds",
           "look"]
