"""The read-only advisory reader gives the store's answers, without SQLAlchemy on SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alicorn.advisories.model import Advisory, Affected, PackageRef, Range
from alicorn.advisories.reader import _SqliteReader, open_reader
from alicorn.advisories.store import AdvisoryStore
from alicorn.errors import StoreError
from alicorn.inventory.model import Distro, Package


def _advisories() -> list[Advisory]:
    def adv(i: str, **kw: object) -> Advisory:
        return Advisory(id=i, type="security", severity="Low", title=i, description="",
                        issued=None, updated=None, release=None, status=None, **kw)  # type: ignore[arg-type]
    fixed = (Range("ECOSYSTEM", (("introduced", "0"), ("fixed", "9"))),)
    return [adv("FEDORA-1", packages=(PackageRef("busybox", "0", "1.36", "1", "x86_64"),)),
            adv("PYSEC-1", format="osv", affected=(Affected("PyPI", "PyYAML", fixed),)),
            adv("DEB-1", format="debian", affected=(Affected("Debian:12", "openssl", fixed),)),
            adv("GO-1", format="osv", affected=(Affected("Go", "x/net", fixed),))]


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'alicorn.db'}"
    AdvisoryStore(url).import_advisories(_advisories(), source="test")
    return url


PACKAGES = [Package(type="rpm", name="busybox", version="1.35-1", arch="x86_64"),
            Package(type="pypi", name="pyyaml", version="5.3"),
            Package(type="deb", name="libssl3", version="3.0", source="openssl"),
            Package(type="npm", name="lodash", version="4")]


def test_the_sqlite_reader_answers_as_the_store_does(url: str) -> None:
    fast, store = open_reader(url), AdvisoryStore(url)
    assert isinstance(fast, _SqliteReader)
    assert fast.count() == store.count() == 4
    assert fast.coverage() == store.coverage()
    debian = Distro(id="debian", version_id="12")
    assert fast.coverage().covers("deb", debian) and not fast.coverage().covers("npm")
    assert [a.id for a in fast.for_packages(PACKAGES)] == \
        [a.id for a in store.for_packages(PACKAGES)] == ["DEB-1", "FEDORA-1", "PYSEC-1"]
    assert fast.for_packages(PACKAGES) == store.for_packages(PACKAGES)  # the same values
    assert [a.id for a in fast.all()] == [a.id for a in store.all()]


def test_reading_loads_no_sqlalchemy(url: str) -> None:
    code = ("import sys; from alicorn.advisories.reader import open_reader; "
            f"from alicorn.inventory.model import Package; r = open_reader({url!r}); "
            "print(r.count(), len(r.for_packages([Package(type='pypi', name='pyyaml', "
            "version='1')])), 'sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["4", "1", "False"]


def test_other_databases_go_through_the_store(tmp_path: Path, url: str) -> None:
    """A database the store must create or migrate first is read through the store."""
    from importlib import resources

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    fresh = f"sqlite:///{tmp_path / 'new.db'}"
    assert isinstance(open_reader(fresh), AdvisoryStore)
    assert open_reader(fresh).count() == 0
    old = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(resources.files("alicorn.store").joinpath("migrations")))
    with create_engine(old).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    reader = open_reader(old)
    assert isinstance(reader, AdvisoryStore)  # which migrated it: now the fast path reads it
    assert isinstance(open_reader(old), _SqliteReader)
    assert isinstance(open_reader(f"{url}?timeout=5"), AdvisoryStore)  # options: SQLAlchemy's


def test_a_damaged_database_is_a_store_error(tmp_path: Path, url: str) -> None:
    reader = open_reader(url)
    import sqlite3
    with sqlite3.connect(tmp_path / "alicorn.db") as conn:
        conn.execute("DROP TABLE advisory_packages")
    with pytest.raises(StoreError, match="cannot read the advisory store"):
        reader.coverage()
