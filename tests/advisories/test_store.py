"""The advisory store: idempotent imports, newer replaces older, one transaction per import."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from alicorn.advisories import codec
from alicorn.advisories.model import Advisory, Affected, PackageRef, Range, Reference
from alicorn.advisories.store import AdvisoryStore, ImportStats
from alicorn.advisories.updateinfo import parse_updateinfo
from alicorn.errors import StoreError
from alicorn.store.schema import head_revision
from conftest import SHARED_DATA

T0 = datetime(2024, 4, 1, tzinfo=UTC)


def _advisory(n: int, *, updated: datetime | None = T0, release: str = "2.fc40",
              fmt: str = "updateinfo", **kw: object) -> Advisory:
    fields: dict[str, object] = dict(
        id=f"FEDORA-2024-{n:06d}", type="security", severity="Important",
        title=f"pkg{n}-1.0-{release}", description="fix", issued=T0 - timedelta(days=1),
        updated=updated, release="Fedora 40", status="stable",
        references=(Reference("cve", f"CVE-2024-{n:05d}", None, None),
                    Reference("self", f"FEDORA-2024-{n:06d}", "https://bodhi/x", None)),
        packages=(PackageRef(f"pkg{n}", "0", "1.0", release, "x86_64"),
                  PackageRef(f"pkg{n}-libs", "0", "1.0", release, "x86_64")),
        source="feed.xml", format=fmt)
    fields.update(kw)
    return Advisory(**fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> AdvisoryStore:
    return AdvisoryStore(f"sqlite:///{tmp_path / 'alicorn.db'}")


def test_a_fresh_database_gets_the_tables(store: AdvisoryStore, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'alicorn.db'}")
    names = set(inspect(engine).get_table_names())
    assert {"advisories", "advisory_packages", "advisory_cves", "builds"} <= names
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert version == head_revision()
    assert store.count() == 0
    assert list(store.all()) == []


def test_a_database_at_0003_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("alicorn.store").joinpath("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    with engine.begin() as conn:
        assert "advisories" not in inspect(conn).get_table_names()
        conn.execute(text(
            "INSERT INTO builds (id, state, created_at, argv, submitter, source_kind, "
            "recipe_path, options, published) VALUES ('b1', 'done', '2026-01-01', '[]', 'me', "
            "'file', 'r.yaml', '{}', 0)"))
    engine.dispose()

    store = AdvisoryStore(url)  # opening migrates
    assert store.import_advisories([_advisory(1)], source="x").added == 1
    with create_engine(url).connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert version == head_revision()
        assert conn.execute(text("SELECT id FROM builds")).scalars().all() == ["b1"]


def test_advisories_stored_at_0004_get_their_lookup_keys(tmp_path: Path) -> None:
    """Migration 0005 computes the lookup key of every package row already stored, so a
    store filled before it answers for_packages like one filled after."""
    from alembic import command
    from alembic.config import Config

    from alicorn.inventory.model import Package

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("alicorn.store").joinpath("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(text(
            "INSERT INTO advisories (id, format, type, source, digest, body, imported_at) "
            "VALUES ('PYSEC-1', 'osv', 'security', 's', 'd', :body, '2026-01-01')"),
            {"body": codec.dumps(_advisory(7, fmt="osv", id="PYSEC-1", packages=(),
                                           affected=(Affected("PyPI", "PyYAML"),)))})
        conn.execute(text(
            "INSERT INTO advisory_packages (advisory_id, advisory_format, kind, ecosystem, name)"
            " VALUES ('PYSEC-1', 'osv', 'ecosystem', 'PyPI', 'PyYAML'),"
            " ('PYSEC-1', 'osv', 'ecosystem', 'Go', 'x/y')"))
    engine.dispose()

    store = AdvisoryStore(url)  # opening migrates to 0005
    with create_engine(url).connect() as conn:
        rows = conn.execute(text("SELECT name, lookup FROM advisory_packages ORDER BY name"))
        assert rows.all() == [("PyYAML", "pypi:pyyaml"), ("x/y", None)]
    found = store.for_packages([Package(type="pypi", name="pyyaml", version="5.3")])
    assert [a.id for a in found] == ["PYSEC-1"]


def test_a_corrupt_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not an sqlite database" * 200)
    with pytest.raises(StoreError, match="cannot migrate the database"):
        AdvisoryStore(f"sqlite:///{path}")


def test_import_is_idempotent_and_stores_exact_values(store: AdvisoryStore) -> None:
    advisories = [_advisory(n) for n in range(5)]
    assert store.import_advisories(advisories, source="feed.xml") == ImportStats(added=5)
    assert store.import_advisories(advisories, source="feed.xml") == ImportStats(unchanged=5)
    # The same content from another copy of the feed is unchanged too (source is provenance).
    moved = [dataclasses.replace(a, source="/mirror/feed.xml") for a in advisories]
    assert store.import_advisories(moved, source="/mirror") == ImportStats(unchanged=5)
    assert store.count() == 5
    assert list(store.all()) == advisories
    assert store.get("FEDORA-2024-000003") == advisories[3]
    assert store.get("FEDORA-2024-999999") is None


def test_newer_replaces_older_is_skipped(store: AdvisoryStore) -> None:
    store.import_advisories([_advisory(1), _advisory(2)], source="a")
    newer = _advisory(1, updated=T0 + timedelta(days=2), release="3.fc40")
    older = _advisory(2, updated=T0 - timedelta(days=2), release="1.fc40")
    stats = store.import_advisories([newer, older, _advisory(3)], source="b")
    assert stats == ImportStats(added=1, replaced=1, older_skipped=1)
    assert stats.read == 3
    assert store.get(newer.id) == newer
    assert store.get(older.id) == _advisory(2)
    # The package index follows the replacement: the old name is gone with the old version.
    assert [a.id for a in store.search(package="pkg1")] == [newer.id]


def test_undated_advisories_are_replaced_by_a_later_import(store: AdvisoryStore) -> None:
    first = _advisory(1, updated=None, issued=None)
    second = dataclasses.replace(first, severity="Critical")
    store.import_advisories([first], source="a")
    assert store.import_advisories([second], source="b") == ImportStats(replaced=1)
    assert store.get(first.id) == second
    # The same date with other content: the later import wins too (a reference fixed in
    # place, the date not bumped).
    dated = _advisory(5)
    fixed = dataclasses.replace(dated, description="better words")
    store.import_advisories([dated], source="a")
    assert store.import_advisories([fixed], source="b") == ImportStats(replaced=1)
    assert store.get(dated.id) == fixed


def test_duplicates_inside_one_import(store: AdvisoryStore) -> None:
    a = _advisory(1)
    newer = _advisory(1, updated=T0 + timedelta(hours=1), release="9.fc40")
    stats = store.import_advisories([a, a, newer, a], source="x")
    assert stats == ImportStats(added=1, unchanged=1, replaced=1, older_skipped=1)
    assert store.count() == 1 and store.get(a.id) == newer


def test_the_same_id_in_two_feeds_is_kept_twice(store: AdvisoryStore) -> None:
    ghsa = Advisory(id="GHSA-xxxx-yyyy-zzzz", type="security", severity="HIGH", title="t",
                    description="", issued=T0, updated=T0, release=None, status=None,
                    format="osv", aliases=("CVE-2024-1",),
                    affected=(Affected("RubyGems", "rack", (Range("ECOSYSTEM", (
                        ("introduced", "0"), ("fixed", "2.2.8"))),)),))
    rubysec = dataclasses.replace(ghsa, format="rubysec", updated=T0 + timedelta(days=1),
                                  affected=(Affected("RubyGems", "rack",
                                                     unaffected=(">= 2.2.8",)),))
    store.import_advisories([ghsa, rubysec], source="x")
    assert store.count() == 2
    assert {a.format for a in store.search(id=ghsa.id)} == {"osv", "rubysec"}
    assert store.get(ghsa.id) == rubysec  # the latest dated
    assert store.get(ghsa.id, format="osv") == ghsa
    assert len(store.search(cve="cve-2024-1")) == 2
    assert len(store.search(package="rack", ecosystem="RubyGems")) == 2
    assert store.search(package="rack", ecosystem="PyPI") == []


def test_search_by_cve_package_and_ecosystem(store: AdvisoryStore) -> None:
    deb = Advisory(id="DSA-5500-1", type="security", severity=None, title="openssl",
                   description="", issued=T0, updated=None, release=None, status=None,
                   format="debian", references=(Reference("cve", "CVE-2023-4807"),),
                   affected=(Affected("Debian:12", "openssl", (Range("ECOSYSTEM", (
                       ("introduced", "0"), ("fixed", "3.0.11-1~deb12u1"))),)),))
    store.import_advisories([_advisory(1), _advisory(2), deb], source="x")
    assert [a.id for a in store.search(cve="CVE-2024-00002")] == ["FEDORA-2024-000002"]
    assert [a.id for a in store.search(package="pkg1-libs")] == ["FEDORA-2024-000001"]
    assert [a.id for a in store.search(ecosystem="Debian")] == ["DSA-5500-1"]
    assert [a.id for a in store.search(ecosystem="Debian:12", package="openssl")] == \
        ["DSA-5500-1"]
    assert store.search(ecosystem="Deb") == []  # a prefix only at the ":" boundary
    assert [a.id for a in store.search(cve="CVE-2023-4807", type="security")] == ["DSA-5500-1"]
    assert store.search(cve="CVE-2023-4807", package="pkg1") == []


def _failing(advisories: list[Advisory], after: int) -> Iterator[Advisory]:
    for i, a in enumerate(advisories):
        if i == after:
            raise RuntimeError("the feed broke off")
        yield a


def test_a_failed_import_writes_nothing(store: AdvisoryStore) -> None:
    store.import_advisories([_advisory(0)], source="x")
    before = list(store.all())
    # Past the first chunk of rows (2000) so that rows were already sent to the database.
    batch = [_advisory(n, updated=T0 + timedelta(days=1)) for n in range(2600)]
    with pytest.raises(RuntimeError, match="broke off"):
        store.import_advisories(_failing(batch, 2500), source="x")
    assert store.count() == 1 and list(store.all()) == before
    assert store.search(package="pkg5") == []

    # not a str: a reader bug
    broken = dataclasses.replace(_advisory(2300), title=None)  # type: ignore[arg-type]
    with pytest.raises(codec.CodecError, match=r"FEDORA-2024-002300.*advisory\.title"):
        store.import_advisories([*batch[:2200], broken, *batch[2200:]], source="x")
    assert store.count() == 1 and list(store.all()) == before


def test_every_shared_updateinfo_advisory_is_stored_exactly(store: AdvisoryStore) -> None:
    files = sorted((SHARED_DATA / "updateinfo").glob("*.xml"))
    if not files:
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(f"the shared advisory data is missing at {SHARED_DATA}")
        pytest.skip(f"the shared advisory data is not at {SHARED_DATA}")
    advisories = [a for f in files for a in parse_updateinfo(f.read_bytes(), source=str(f))]
    stats = store.import_advisories(advisories, source="shared")
    assert stats.read == len(advisories) and stats.added == store.count()
    for a in advisories:
        assert a in store.search(id=a.id)


def test_bulk_import_is_fast(store: AdvisoryStore) -> None:
    """20k advisories (100k take about 10 s here, on a loaded machine; see the report)."""
    batch = [_advisory(n) for n in range(20_000)]
    start = time.monotonic()
    assert store.import_advisories(batch, source="bulk").added == 20_000
    took = time.monotonic() - start
    start = time.monotonic()
    assert sum(1 for _ in store.all()) == 20_000
    streamed = time.monotonic() - start
    assert took < 30 and streamed < 15, (took, streamed)


def test_text_no_utf8_encoder_takes_is_stored_exactly(store: AdvisoryStore) -> None:
    """JSON feeds may carry lone surrogates ("\\ud800"); the body is ASCII JSON, so the
    database takes it and gives it back."""
    odd = _advisory(7, title="\ud800 half a pair", description="\x00 nul \U0001f984")
    assert store.import_advisories([odd], source="x").added == 1
    assert store.get(odd.id) == odd


def test_for_packages_gives_every_advisory_a_scan_could_match(store: AdvisoryStore) -> None:
    """The store's lookup by installed packages returns exactly the advisories the matcher's
    index names as candidates for them: a scan reading only these misses nothing."""
    from alicorn.advisories.feeds import load
    from alicorn.inventory.model import Distro, Package
    from alicorn.match.index import AdvisoryIndex

    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared advisory data is absent ({SHARED_DATA})")
    advisories = [*load(SHARED_DATA / "ghsa").advisories,
                  *load(SHARED_DATA / "osv" / "pypi" / "vulns" / "pyyaml").advisories,
                  *load(SHARED_DATA / "rubysec" / "gems" / "nokogiri").advisories,
                  *load(SHARED_DATA / "updateinfo").advisories,
                  _advisory(1, affected=(Affected("Debian:12", "openssl", ranges=(Range(
                      "ECOSYSTEM", (("introduced", "0"), ("fixed", "3.0.15-1~deb12u1"))),)),))]
    store.import_advisories(advisories, source="test")
    packages = [
        Package(type="pypi", name="pyyaml", version="5.3"),           # the feed says PyYAML
        Package(type="maven", name="org.apache.logging.log4j:log4j-core", version="2.14.1"),
        Package(type="gem", name="nokogiri", version="1.10.0"),
        Package(type="npm", name="lodash", version="4.17.15"),
        Package(type="rpm", name="pkg1", version="1.0-1.fc40", arch="x86_64"),
        Package(type="deb", name="libssl3", version="3.0.11-1~deb12u2", source="openssl"),
        Package(type="pypi", name="not-in-any-feed", version="1"),
    ]
    found = store.for_packages(packages)
    index = AdvisoryIndex(advisories)
    debian = Distro(id="debian", version_id="12")
    expected = {(c.advisory.id, c.advisory.format) for p in packages
                for c in index.candidates(p, debian)}
    assert {(a.id, a.format) for a in found} == expected
    assert {"PYSEC-2020-96", "FEDORA-2024-000001"} <= {a.id for a in found}
    assert len(found) < store.count(), "only what the packages name is read"
    assert store.for_packages([]) == []


def test_coverage_names_what_the_store_covers(store: AdvisoryStore) -> None:
    from alicorn.inventory.model import Distro

    assert not store.coverage().covers("rpm")
    store.import_advisories([_advisory(1), _advisory(2, fmt="osv", packages=(), affected=(
        Affected("Debian:12", "openssl"), Affected("PyPI", "requests")))], source="t")
    coverage = store.coverage()
    assert coverage.covers("rpm") and coverage.covers("pypi")
    assert coverage.covers("deb", Distro(id="debian", version_id="12"))
    assert not coverage.covers("deb", Distro(id="debian", version_id="11"))
    assert not coverage.covers("gem") and not coverage.covers("maven")


def test_0005_accepts_a_0004_database_that_has_the_column_already(tmp_path: Path) -> None:
    """A development snapshot of 0004 created advisory_packages.lookup itself; 0005 must not
    fail on such a database ("duplicate column name")."""
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'dev.db'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("alicorn.store").joinpath("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(text("ALTER TABLE advisory_packages ADD COLUMN lookup VARCHAR(600)"))
        conn.execute(text("CREATE INDEX ix_advisory_packages_lookup "
                          "ON advisory_packages (lookup)"))
    engine.dispose()
    store = AdvisoryStore(url)
    assert store.import_advisories([_advisory(3)], source="x").added == 1
    with create_engine(url).connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert version == head_revision()
