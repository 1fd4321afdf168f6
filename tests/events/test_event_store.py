"""Events in the database: idempotent discovery, a newer advisory version is a new event,
listing, look-up by prefix, the JSON view."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from eventdata import import_feed, updateinfo

from alicorn.advisories.feeds import load
from alicorn.advisories.store import AdvisoryStore
from alicorn.errors import BadInput, NotFound
from alicorn.events.model import NEW, SKIPPED
from alicorn.events.store import EventStore
from conftest import SHARED_DATA


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'alicorn.db'}"


def test_discovery_is_idempotent_and_a_newer_version_is_a_new_event(url: str,
                                                                    tmp_path: Path) -> None:
    feed = updateinfo(tmp_path / "u.xml", [("FEDORA-2024-1", "busybox", "1.35.0", "2.fc40"),
                                           ("FEDORA-2024-2", "curl", "8.6.0", "2.fc40")])
    import_feed(url, feed)
    store = EventStore(url)
    made = store.discover()
    assert [(e.advisory_id, e.state, e.severity) for e in made] == [
        ("FEDORA-2024-1", NEW, "Important"), ("FEDORA-2024-2", NEW, "Important")]
    assert made[0].cves and made[0].cves[0].startswith("CVE-2024-")
    # The same feed again (another copy of it, even): the same events, none new.
    copy = tmp_path / "copy.xml"
    copy.write_bytes(feed.read_bytes())
    import_feed(url, copy)
    assert store.discover() == []
    assert len(store.events()) == 2
    # A newer version of one advisory replaces it in the store: a new event for it.
    updateinfo(tmp_path / "u2.xml", [("FEDORA-2024-1", "busybox", "1.35.0", "3.fc40")],
               updated="2024-05-01 00:00:00")
    import_feed(url, tmp_path / "u2.xml")
    again = store.discover()
    assert [e.advisory_id for e in again] == ["FEDORA-2024-1"]
    assert again[0].advisory_digest != made[0].advisory_digest
    assert len(store.events()) == 3


def test_only_security_advisories_make_events(url: str, tmp_path: Path) -> None:
    feed = updateinfo(tmp_path / "u.xml", [("FEDORA-2024-1", "busybox", "1.35.0", "2.fc40")])
    feed.write_text(feed.read_text().replace('type="security"', 'type="bugfix"'))
    import_feed(url, feed)
    store = EventStore(url)
    assert store.discover() == []
    assert [e.advisory_type for e in store.discover(types=("bugfix",))] == ["bugfix"]


def test_listing_lookup_and_json(url: str, tmp_path: Path) -> None:
    import_feed(url, updateinfo(tmp_path / "u.xml", [
        (f"FEDORA-2024-{n}", "busybox", "1.35.0", f"{n}.fc40") for n in range(1, 6)]))
    store = EventStore(url)
    made = store.discover()
    assert len({e.id for e in made}) == 5
    newest = store.events(limit=2)
    assert len(newest) == 2
    assert newest[0].created_at >= newest[1].created_at
    store.set_state([made[0].id], SKIPPED, "no published image contains busybox")
    assert [e.id for e in store.events(state=SKIPPED)] == [made[0].id]
    assert len(store.events(state=NEW)) == 4

    # Ids hold the time, a sequence, then randomness: 20 characters are unique here.
    assert store.get(made[0].id[:20]).id == made[0].id
    assert store.get(made[0].id).id == made[0].id
    with pytest.raises(NotFound, match="no event 'nope'"):
        store.get("nope")
    with pytest.raises(BadInput, match="ambiguous"):
        store.get(made[0].id[:4])
    with pytest.raises(BadInput, match="no event state 'sleeping'"):
        store.events(state="sleeping")

    data = store.event_json(store.get(made[0].id))
    assert {"id", "advisory", "state", "reason", "created", "updated", "cves", "severity",
            "builds"} <= set(data)
    assert (data["advisory"], data["state"], data["reason"], data["builds"]) == (
        "FEDORA-2024-1", SKIPPED, "no published image contains busybox", [])
    assert data["created"].endswith("Z")


def test_discovery_of_many_advisories_is_set_based(url: str) -> None:
    from alicorn.advisories.model import Advisory, PackageRef, Reference

    advisories = [Advisory(
        id=f"FEDORA-2024-{n:06d}", type="security", severity="Moderate", title="t",
        description="", issued=None, updated=None, release=None, status="stable",
        references=(Reference("cve", f"CVE-2024-{n:05d}", None, None),),
        packages=(PackageRef(f"pkg{n}", "0", "1", "1.fc40", "x86_64"),))
        for n in range(20000)]
    AdvisoryStore(url).import_advisories(advisories, source="bulk")
    store = EventStore(url)
    start = time.monotonic()
    made = store.discover()
    took = time.monotonic() - start
    assert len(made) == 20000 and len({e.id for e in made}) == 20000
    assert made[123].cves == ["CVE-2024-00123"]
    assert took < 20, f"discovering 20k advisories took {took:.1f}s"
    start = time.monotonic()
    assert store.discover() == []
    assert time.monotonic() - start < 5


def test_shared_updateinfo_files_make_one_event_per_security_advisory(url: str) -> None:
    folder = SHARED_DATA / "updateinfo"
    if not folder.is_dir():
        pytest.skip(f"the shared advisory data is not at {SHARED_DATA}")
    advisories = AdvisoryStore(url)
    for path in sorted(folder.glob("*.xml")):
        result = load(path)
        advisories.import_advisories(result.advisories, source=str(path))
    security = {(a.id, a.format) for a in advisories.all() if a.type == "security"}
    assert security, "the shared updateinfo files hold security advisories"
    store = EventStore(url)
    made = store.discover()
    assert {(e.advisory_id, e.advisory_format) for e in made} == security
    for path in sorted(folder.glob("*.xml")):
        advisories.import_advisories(load(path).advisories, source=str(path))
    assert store.discover() == []
