"""The watcher: local RPM repositories (built by examples/pony/rpm/build-repo), feed files and
directories of real updateinfo XML, unreachable and hostile sources."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from alicorn.config import Settings, load_settings
from alicorn.errors import BadInput, NotFound
from alicorn.events.model import FAILED, NEW
from alicorn.events.store import EventStore
from alicorn.events.watch import BUILDS, FEED, RPM_REPO, USER, Watcher, classify
from alicorn.store.builds import DONE, BuildStore, Submission
from alicorn.store.db import session_factory
from alicorn.store.event_models import EventRow
from conftest import EXAMPLES, SHARED_DATA, require

UPDATEINFO = SHARED_DATA / "updateinfo"
BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<updates><update from="x" status="final" type="security" version="1">
<id>&lol3;</id></update></updates>
"""


def shared(name: str) -> Path:
    path = UPDATEINFO / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data set, ../shared/data/MANIFEST.tsv)")
    return path


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ALICORN_HOME", str(tmp_path / "home"))
    return load_settings(tmp_path / "home")


def build_repo(dest: Path, version: str) -> Path:
    require("rpmbuild", "createrepo_c", "busybox")
    subprocess.run([str(EXAMPLES / "pony" / "rpm" / "build-repo"), str(dest), "--version",
                    version], check=True, capture_output=True)
    return dest


def events(settings: Settings) -> list[EventRow]:
    with session_factory(settings.database_url)() as s:
        return list(s.query(EventRow).all())


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_rpm_repo_changed_and_unchanged(settings: Settings, tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", "1")
    watcher = Watcher(settings)
    added = watcher.add(str(repo))
    assert (added.kind, added.url, added.origin) == (RPM_REPO, repo.as_uri(), USER)

    first = watcher.poll().sources[0]
    assert first.changed and first.imported and first.error is None
    assert first.read == 0                       # version 1 has no updateinfo
    assert first.digest == sha256(repo / "repodata" / "repomd.xml")
    again = watcher.poll().sources[0]
    assert not again.changed and not again.imported and again.digest == first.digest

    build_repo(repo, "both")                     # the security update lands
    update = watcher.poll().sources[0]
    assert update.changed and update.added == 1 and update.events == 1
    assert update.digest == sha256(repo / "repodata" / "repomd.xml") != first.digest
    [event] = events(settings)
    assert event.advisory_id == "FEDORA-2024-b7e1c3d2a9" and event.state == "new"
    [row] = watcher.sources()
    assert row.digest == update.digest and row.error is None
    assert row.changed_at is not None and row.checked_at is not None

    # The same state again is nothing new: no second import, no second event.
    assert not watcher.poll().sources[0].changed
    assert len(events(settings)) == 1


def _published(settings: Settings, name: str, repo_url: str, recipe: str) -> str:
    store = BuildStore(settings.database_url)
    row = store.submit(Submission(argv=["alicorn", "build", f"/r/{name}.yaml"],
                                  source_kind="file", recipe_path=f"/r/{name}.yaml",
                                  recipe_content=recipe))
    claimed = store.claim_next(f"test:{os.getpid()}")
    assert claimed is not None
    store.update(row.id, recipe_name=name, inputs={"repositories": [
        {"name": "pony", "url": repo_url, "metadata": "sha256:" + "0" * 64}]})
    store.finish(row.id, DONE, digest="sha256:" + row.id.ljust(64, "0")[:64],
                 image_ref="127.0.0.1:1/x", published=True)
    return row.id


def test_the_builds_repositories_are_watched_by_themselves(settings: Settings,
                                                          tmp_path: Path) -> None:
    recipe = (EXAMPLES / "pony" / "rpm" / "pony.yaml").read_text()
    old = build_repo(tmp_path / "old", "1")
    _published(settings, "pony-rpm", old.as_uri(), recipe)
    watcher = Watcher(settings)
    report = watcher.poll()
    assert report.added_sources == (old.as_uri(),)
    [source] = watcher.sources()
    assert (source.kind, source.origin, source.url) == (RPM_REPO, BUILDS, old.as_uri())
    assert source.digest == sha256(old / "repodata" / "repomd.xml")
    with pytest.raises(BadInput, match="an image's recipe uses it"):
        watcher.remove(old.as_uri())

    # A newer build of the same recipe from another repository: that one is watched now.
    new = build_repo(tmp_path / "new", "both")
    _published(settings, "pony-rpm", new.as_uri(), recipe)
    report = watcher.poll()
    assert report.added_sources == (new.as_uri(),)
    assert report.dropped_sources == (old.as_uri(),)
    [source] = watcher.sources()
    assert source.url == new.as_uri() and source.digest is not None
    assert report.sources[0].added == 1


def test_feed_file_and_directory(settings: Settings, tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    single = tmp_path / "one.xml"
    shutil.copy(shared("libdnf-updateinfo.xml"), single)
    watcher = Watcher(settings)
    assert watcher.add(str(feeds)).kind == FEED
    assert watcher.add(single.as_uri()).kind == FEED

    first = {r.url: r for r in watcher.poll().sources}
    assert first[feeds.as_uri()].changed and first[feeds.as_uri()].read == 0  # empty yet
    assert first[single.as_uri()].added > 0
    assert first[single.as_uri()].digest == sha256(single)
    assert not any(r.changed for r in watcher.poll().sources)

    shutil.copy(shared("ci-dnf-stack-updateinfo.xml"), feeds / "a.xml")
    second = {r.url: r for r in watcher.poll().sources}
    assert second[feeds.as_uri()].changed and second[feeds.as_uri()].added > 0
    assert not second[single.as_uri()].changed

    # A file rewritten in place (another size) is a change; a dot-file is no feed.
    (feeds / ".hidden").write_text("x")
    assert not any(r.changed for r in watcher.poll().sources)
    shutil.copy(shared("createrepo_c-updateinfo_03.xml"), feeds / "a.xml")
    third = {r.url: r for r in watcher.poll().sources}
    assert third[feeds.as_uri()].changed and third[feeds.as_uri()].imported
    # Rewritten with the same size and a pinned mtime (a reproducible build's output).
    stat = (feeds / "a.xml").stat()
    body = (feeds / "a.xml").read_bytes()
    (feeds / "a.xml").write_bytes(body[:-1] + b" ")
    os.utime(feeds / "a.xml", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert {r.url: r for r in watcher.poll().sources}[feeds.as_uri()].changed


class _Feed(http.server.SimpleHTTPRequestHandler):
    codes: ClassVar[list[int]] = []

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.codes.append(int(code))

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, http.server.ThreadingHTTPServer]]:
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args: Any) -> _Feed:
        return _Feed(*args, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, server
    server.shutdown()
    server.server_close()


def test_an_unreachable_source_is_an_error_recorded_not_a_crash(
        settings: Settings, tmp_path: Path,
        http_dir: tuple[Path, http.server.ThreadingHTTPServer]) -> None:
    root, server = http_dir
    shutil.copy(shared("libdnf-updateinfo.xml"), root / "updateinfo.xml")
    url = f"http://127.0.0.1:{server.server_address[1]}/updateinfo.xml"
    local = tmp_path / "local.xml"
    shutil.copy(shared("createrepo_c-updateinfo_01.xml"), local)
    watcher = Watcher(settings)
    assert watcher.add(url).kind == FEED
    watcher.add(str(local))
    first = {r.url: r for r in watcher.poll().sources}
    assert first[url].imported and first[url].added > 0
    digest = first[url].digest
    # A feed rewritten with other content of the same size and mtime (as a reproducible
    # build writes it): the server's Last-Modified cannot tell, the body's digest does.
    served = root / "updateinfo.xml"
    stamp = served.stat().st_mtime_ns
    body = served.read_bytes()
    assert body.endswith(b"\n")
    served.write_bytes(body[:-1] + b" ")
    assert served.stat().st_size == len(body)
    os.utime(served, ns=(stamp, stamp))
    _Feed.codes.clear()
    rewritten = {r.url: r for r in watcher.poll().sources}[url]
    assert rewritten.changed and rewritten.digest != digest and _Feed.codes[0] == 200
    digest = rewritten.digest

    server.shutdown()
    server.server_close()
    local.write_bytes(local.read_bytes().replace(b"</updates>", b"\n</updates>"))
    second = {r.url: r for r in watcher.poll().sources}
    assert second[url].error and "Connection refused" in second[url].error
    assert second[url].new_error
    assert second[local.as_uri()].changed and second[local.as_uri()].error is None
    rows = {s.url: s for s in watcher.sources()}
    assert rows[url].error == second[url].error
    assert rows[url].digest == digest            # kept: the next poll tries again
    third = {r.url: r for r in watcher.poll().sources}
    assert third[url].error and not third[url].new_error   # said once

    # A source that goes away on disk is an error too.
    local.unlink()
    fourth = {r.url: r for r in watcher.poll().sources}
    assert "No such file" in (fourth[local.as_uri()].error or "")


def test_a_hostile_feed_is_an_error_not_a_crash(settings: Settings, tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    good = tmp_path / "good.xml"
    shutil.copy(shared("libdnf-updateinfo.xml"), good)
    watcher = Watcher(settings)
    watcher.add(str(feeds))
    watcher.add(str(good))
    (feeds / "bomb.xml").write_bytes(BOMB)
    reports = {r.url: r for r in watcher.poll().sources}
    bad = reports[feeds.as_uri()]
    assert bad.error and "unsafe XML refused" in bad.error and not bad.imported
    assert reports[good.as_uri()].imported and reports[good.as_uri()].added > 0
    assert {s.url: s.error for s in watcher.sources()}[feeds.as_uri()] == bad.error
    # Beside a good feed, the bomb is a skipped file (a warning), not the directory's failure.
    shutil.copy(shared("ci-dnf-stack-updateinfo.xml"), feeds / "good.xml")
    again = {r.url: r for r in watcher.poll().sources}[feeds.as_uri()]
    assert again.error is None and again.imported and again.added > 0
    assert any("bomb.xml" in w and "unsafe XML" in w for w in again.warnings)
    assert again.recovered


def test_add_validates_and_remove(settings: Settings, tmp_path: Path) -> None:
    watcher = Watcher(settings)
    with pytest.raises(BadInput, match=r"nope.*No such file"):
        watcher.add(str(tmp_path / "nope"))
    (tmp_path / "junk.txt").write_text("hello\n")
    with pytest.raises(BadInput, match="not an advisory feed"):
        watcher.add(str(tmp_path / "junk.txt"))
    bomb = tmp_path / "bomb.xml"
    bomb.write_bytes(BOMB)
    with pytest.raises(BadInput, match="unsafe XML refused"):
        watcher.add(str(bomb))
    with pytest.raises(BadInput, match="unsupported URL scheme 'ftp'"):
        watcher.add("ftp://example.invalid/feed.xml")
    with pytest.raises(BadInput, match=r"127\.0\.0\.1:9.*cannot watch it"):
        classify("http://127.0.0.1:9/feed.xml")
    assert watcher.sources() == []

    good = tmp_path / "good.xml"
    shutil.copy(shared("libdnf-updateinfo.xml"), good)
    source = watcher.add(str(good))
    assert watcher.add(good.as_uri()).id == source.id     # the same source, not a second
    assert watcher.remove(str(good)).id == source.id
    assert watcher.sources() == []
    with pytest.raises(NotFound):
        watcher.remove(str(good))


def test_dry_run_poll_records_nothing_and_makes_no_event(settings: Settings,
                                                        tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo", "both")
    watcher = Watcher(settings)
    watcher.add(str(repo))
    dry = watcher.poll(record=False).sources[0]
    assert dry.changed and dry.added == 1 and dry.events == 0
    assert events(settings) == []
    assert watcher.sources()[0].digest is None
    real = watcher.poll().sources[0]
    assert real.changed and real.unchanged == 1 and real.events == 1


@pytest.mark.network
def test_debian_suites_of_an_image(settings: Settings) -> None:
    """A Debian image's suites are watched through their InRelease; the security suite's
    uploads for the image's source packages become advisories."""
    from alicorn.compose.debian import host_mirror
    from alicorn.compose.fetch import fetch_bytes
    from alicorn.compose.interface import Package
    from alicorn.events.watch import DEBIAN_REPO

    require("mmdebstrap", "gpgv")
    main, security = host_mirror("bookworm"), host_mirror("bookworm-security")
    store = BuildStore(settings.database_url)
    row = store.submit(Submission(argv=["alicorn", "build", "/r/pony.yaml"], source_kind="file",
                                  recipe_path=str(EXAMPLES / "pony" / "debian" / "pony.yaml"),
                                  recipe_content=(EXAMPLES / "pony" / "debian" / "pony.yaml")
                                  .read_text()))
    assert store.claim_next(f"test:{os.getpid()}") is not None
    store.update(row.id, recipe_name="pony", inputs={"repositories": [
        {"name": "bookworm", "url": main, "metadata": "sha256:" + "0" * 64},
        {"name": "bookworm-security", "url": security, "metadata": "sha256:" + "0" * 64}]})
    # An old openssl: bookworm-security has uploads newer than it.
    store.finish(row.id, DONE, digest="sha256:" + "1" * 64, image_ref="127.0.0.1:1/pony",
                 published=True, packages=[Package(
                     type="deb", name="libssl3", version="3.0.11-1~deb12u1", arch="amd64",
                     source="openssl", purl="pkg:deb/debian/libssl3@3.0.11-1~deb12u1")])
    watcher = Watcher(settings)
    report = {r.url: r for r in watcher.poll().sources}
    sec_url = f"{security}/dists/bookworm-security"
    assert set(report) == {f"{main}/dists/bookworm", sec_url}
    assert all(r.kind == DEBIAN_REPO and r.error is None for r in report.values()), report
    inrelease = fetch_bytes(f"{sec_url}/InRelease", what="InRelease")
    assert report[sec_url].digest == "sha256:" + hashlib.sha256(inrelease).hexdigest()
    assert report[sec_url].added > 0                       # openssl's security uploads
    assert report[f"{main}/dists/bookworm"].read == 0       # not a security suite
    from alicorn.advisories.store import AdvisoryStore
    found = AdvisoryStore(settings.database_url).search(package="openssl")
    assert len(found) == report[sec_url].added
    assert all(any(x.name == "openssl" and x.ecosystem == "Debian:12" for x in a.affected)
               for a in found)


def test_a_changed_repository_plans_again_what_lacked_its_fix(settings: Settings,
                                                              tmp_path: Path) -> None:
    """The advisory came first (by hand), the rebuild failed for lack of the fixed version;
    when the repository changes the event is new again, the other failed one stays."""
    repo = build_repo(tmp_path / "repo", "1")
    watcher = Watcher(settings)
    watcher.add(str(repo))
    watcher.poll()
    watcher.add(str(build_repo(tmp_path / "mirror", "both")))   # the advisory, elsewhere
    watcher.poll()
    [event] = events(settings)
    store = EventStore(settings.database_url)
    store.set_state([event.id], FAILED, "pony-rpm: the repositories lack the fixed version: …")
    assert store.get(event.id).state == FAILED

    unchanged = watcher.poll()
    assert unchanged.retried == ()              # nothing changed: nothing to retry
    build_repo(repo, "both")                    # the update reaches the repository
    report = watcher.poll()
    assert report.retried == (event.id,)
    again = store.get(event.id)
    assert again.state == NEW
    assert again.reason is not None and again.reason.startswith(
        f"planned again: {repo.as_uri()} changed; before: pony-rpm: the repositories lack")
