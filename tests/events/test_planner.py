"""The plan: affected current published images and their layered children, parents first,
coalesced, with skip reasons; fast over 10k images."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from eventdata import build, busybox, import_feed, rpm, updateinfo
from sqlalchemy import insert

from alicorn.advisories.store import AdvisoryStore
from alicorn.events.planner import plan
from alicorn.store.builds import BuildStore, new_build_id, now
from alicorn.store.db import engine_for
from alicorn.store.models import BuildRow, PackageRow


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'alicorn.db'}"


def _advisories(url: str, tmp_path: Path, updates: list[tuple[str, str, str, str]]) -> list:
    import_feed(url, updateinfo(tmp_path / "feed.xml", updates))
    return list(AdvisoryStore(url).all())


def test_layered_images_follow_their_base_parents_first(url: str, tmp_path: Path) -> None:
    store = BuildStore(url)
    base = build(store, "base", [busybox(), rpm("glibc", "2.39", "1.fc40")])
    base_digest = store.get(base).digest
    assert base_digest
    # web is layered on base by digest, app on web by name only; other is unrelated.
    web = build(store, "web", [busybox(), rpm("nginx", "1.24", "1.fc40")],
                base=("base", base_digest))
    web_digest = store.get(web).digest
    assert web_digest
    build(store, "app", [rpm("python3", "3.12", "1.fc40")], base=("web", "sha256:" + "9" * 64))
    build(store, "other", [rpm("nginx", "1.24", "1.fc40")])
    advisories = _advisories(url, tmp_path, [
        ("FEDORA-2024-bb", "busybox", "1.35.0", "2.fc40"),
        ("FEDORA-2024-ng", "nginx", "1.24", "2.fc40"),
        ("FEDORA-2024-zz", "zlib", "1.3", "2.fc40")])
    result = plan(url, advisories)

    names = [r.image for r in result.rebuilds]
    assert names.index("base") < names.index("web") < names.index("app")
    assert set(names) == {"base", "web", "app", "other"}
    by_name = {r.image: r for r in result.rebuilds}
    # Coalesced: one rebuild of web for both advisories.
    assert by_name["web"].advisories == ("FEDORA-2024-bb", "FEDORA-2024-ng")
    assert by_name["web"].parent == "base"
    assert by_name["app"].parent == "web" and by_name["app"].advisories == ()
    assert "layered on web" in by_name["app"].reason
    assert by_name["base"].parent is None and by_name["base"].old_build_id == base
    assert by_name["base"].reason == "busybox 1.35.0-1.fc40 < 1.35.0-2.fc40 (FEDORA-2024-bb)"
    assert result.affects["FEDORA-2024-bb"] == ("base", "web", "app")
    assert set(result.affects["FEDORA-2024-ng"]) == {"web", "app", "other"}
    assert result.skipped == {"FEDORA-2024-zz": "no published image contains zlib"}

    # Excluding base leaves out what is layered only through it.
    partial = plan(url, advisories, exclude_images=["base"])
    assert [r.image for r in partial.rebuilds if r.image == "base"] == []
    assert {r.image for r in partial.rebuilds} == {"web", "app", "other"}
    assert {r.image: r.parent for r in partial.rebuilds}["web"] is None


def test_only_the_current_published_build_counts(url: str, tmp_path: Path) -> None:
    store = BuildStore(url)
    build(store, "pony", [busybox("1.fc40")])
    build(store, "pony", [busybox("2.fc40")])               # rebuilt since: fixed
    build(store, "unpushed", [busybox("1.fc40")], published=False)
    old = build(store, "kept", [busybox("1.fc40")])
    build(store, "kept", [busybox("1.fc40")], published=False)  # newer, never published
    advisories = _advisories(url, tmp_path, [("FEDORA-2024-bb", "busybox", "1.35.0", "2.fc40")])
    result = plan(url, advisories)
    assert [(r.image, r.old_build_id) for r in result.rebuilds] == [("kept", old)]

    store2 = BuildStore(url)
    assert store2.get(old).published
    only_fixed = plan(url, advisories, exclude_images=["kept"])
    assert only_fixed.rebuilds == ()
    assert "kept" in only_fixed.skipped["FEDORA-2024-bb"]


def test_skip_reason_when_every_image_has_the_fix(url: str, tmp_path: Path) -> None:
    store = BuildStore(url)
    build(store, "pony", [busybox("2.fc40")])
    advisories = _advisories(url, tmp_path, [("FEDORA-2024-bb", "busybox", "1.35.0", "2.fc40")])
    result = plan(url, advisories)
    assert result.rebuilds == ()
    assert result.skipped["FEDORA-2024-bb"] == (
        "no published image holds a vulnerable version of busybox (they already have the "
        "fixed version)")


def test_planning_over_10k_images_is_fast(url: str, tmp_path: Path) -> None:
    """10k current images (each a base or layered on one), a busybox advisory affecting a
    tenth of them directly: the plan takes seconds, not minutes."""
    engine = engine_for(url)
    builds, packages = [], []
    stamp = now()
    for n in range(10000):
        build_id = new_build_id() + f"{n:05d}"
        base = n % 10 != 0 and n >= 10
        parent = (n // 10) * 10
        builds.append({
            "id": build_id, "state": "done", "created_at": stamp, "argv": [], "submitter": "t",
            "source_kind": "file", "recipe_path": f"/r/img{n}.yaml", "recipe_name": f"img{n}",
            "recipe_content": f"recipe: 1\nname: img{n}\n", "options": {},
            "digest": f"sha256:{n:064x}", "published": True,
            "base_digest": f"sha256:{parent:064x}" if base else None,
            "inputs": {"base": {"name": f"img{parent}"}} if base else {}})
        release = "1.fc40" if n % 10 == 0 else "2.fc40"
        for name, version in (("busybox", f"1.35.0-{release}"), ("glibc", "2.39-1.fc40"),
                              (f"pkg{n}", "1-1.fc40")):
            packages.append({"build_id": build_id, "type": "rpm", "name": name,
                             "version": version, "arch": "x86_64",
                             "source": f"{name}-{version}.src.rpm",
                             "purl": f"pkg:rpm/fedora/{name}@{version}?arch=x86_64"})
    with engine.begin() as conn:
        conn.execute(insert(BuildRow), builds)
        conn.execute(insert(PackageRow), packages)
    advisories = _advisories(url, tmp_path, [("FEDORA-2024-bb", "busybox", "1.35.0", "2.fc40")])
    start = time.monotonic()
    result = plan(url, advisories)
    took = time.monotonic() - start
    # Every tenth image holds the old busybox; the nine after it (from img11 on) are
    # layered on it: 1000 direct + 8991 children; img1..img9 are fixed and no children.
    assert len(result.rebuilds) == 9991
    direct = {f"img{n}" for n in range(0, 10000, 10)}
    chosen = {r.image for r in result.rebuilds}
    assert direct <= chosen
    children = {f"img{n}" for n in range(10, 10000) if n % 10}
    assert chosen == direct | children
    order = {r.image: i for i, r in enumerate(result.rebuilds)}
    assert all(order[f"img{(n // 10) * 10}"] < order[f"img{n}"] for n in range(10, 10000, 7)
               if n % 10)
    assert took < 30, f"planning over 10k images took {took:.1f}s"
    print(f"plan over 10k images: {took:.2f}s, {len(result.rebuilds)} rebuilds")
