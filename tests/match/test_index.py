"""AdvisoryIndex: advisories looked up by installed package, over the real shared feeds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alicorn.advisories.model import Advisory, Affected, PackageRef, Range
from alicorn.advisories.osv import parse_osv
from alicorn.advisories.rubysec import parse_rubysec
from alicorn.advisories.updateinfo import parse_updateinfo
from alicorn.inventory.model import Distro, Package
from alicorn.match.index import AdvisoryIndex, debian_ecosystems
from conftest import SHARED_DATA

PYPA = SHARED_DATA / "osv" / "pypi" / "vulns"
RUBYSEC = SHARED_DATA / "rubysec" / "gems"
GHSA = SHARED_DATA / "ghsa" / "advisories" / "github-reviewed"
UPDATEINFO = SHARED_DATA / "updateinfo"

if not (PYPA.is_dir() and RUBYSEC.is_dir() and GHSA.is_dir() and UPDATEINFO.is_dir()):
    _reason = f"the shared advisory test data is absent ({SHARED_DATA})"
    if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
        pytest.fail(_reason, pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

BOOKWORM = Distro(id="debian", version_id="12", codename="bookworm")


def _osv(paths: Iterator[Path]) -> list[Advisory]:
    return [a for p in sorted(paths) for a in parse_osv(p.read_bytes(),
                                                        source=str(p)).advisories]


@pytest.fixture(scope="module")
def feed() -> list[Advisory]:
    """All of PyPA's and rubysec's advisories, the 15 GitHub ones, the updateinfo files."""
    advisories = _osv(PYPA.rglob("*.yaml")) + _osv(GHSA.rglob("*.json"))
    for path in sorted(RUBYSEC.rglob("*.yml")):
        advisories += parse_rubysec(path.read_bytes(), source=str(path)).advisories
    for path in sorted(UPDATEINFO.glob("*.xml")):
        advisories += parse_updateinfo(path.read_bytes(), source=str(path))
    return advisories


@pytest.fixture(scope="module")
def index(feed: list[Advisory]) -> AdvisoryIndex:
    return AdvisoryIndex(feed)


def _ids(index: AdvisoryIndex, package: Package, distro: Distro | None = None) -> set[str]:
    return {c.advisory.id for c in index.candidates(package, distro)}


def test_pypi_names_are_canonicalised(index: AdvisoryIndex) -> None:
    # GitHub writes "PyYAML", PyPA "pyyaml"; a dist-info may say either.
    for name in ("PyYAML", "pyyaml", "PyYaml"):
        ids = _ids(index, Package(type="pypi", name=name, version="5.3"))
        assert "GHSA-8q59-q68h-6hv4" in ids
        assert {"PYSEC-2018-49", "PYSEC-2020-96", "PYSEC-2021-142"} <= ids
    assert _ids(index, Package(type="pypi", name="jw_util", version="1.0")) == \
        {"PYSEC-2020-341"}
    assert "GHSA-h5c8-rqwp-cp95" in _ids(index, Package(type="pypi", name="Jinja2",
                                                        version="3.1.2"))


def test_ecosystems_do_not_mix(index: AdvisoryIndex) -> None:
    # "requests" has PyPI advisories; a gem or npm package of that name gets none of them.
    assert "GHSA-j8r2-6x86-q33q" in _ids(index, Package(type="pypi", name="requests",
                                                        version="2.30.0"))
    assert not _ids(index, Package(type="npm", name="requests", version="2.30.0"))
    assert not _ids(index, Package(type="gem", name="requests", version="2.30.0"))


def test_maven_by_group_and_artifact(index: AdvisoryIndex) -> None:
    log4j = Package(type="maven", name="org.apache.logging.log4j:log4j-core", version="2.14.1",
                    group="org.apache.logging.log4j")
    assert _ids(index, log4j) == {"GHSA-jfh8-c2jp-5v3q"}
    # Another group's artifact of the same name is another package.
    other = Package(type="maven", name="com.example:log4j-core", version="2.14.1")
    assert not _ids(index, other)
    # A package that gives the group apart is looked up as group:artifact.
    split = Package(type="maven", name="log4j-core", version="2.14.1",
                    group="org.apache.logging.log4j")
    assert _ids(index, split) == {"GHSA-jfh8-c2jp-5v3q"}


def test_gems_and_npm_as_written(index: AdvisoryIndex) -> None:
    nokogiri = _ids(index, Package(type="gem", name="nokogiri", version="1.13.0"))
    assert "GHSA-crjr-9rc5-ghw8" in nokogiri            # GitHub's OSV
    assert "nokogiri/CVE-2022-24836" in nokogiri        # the same issue in rubysec
    assert len(nokogiri) >= len(list((RUBYSEC / "nokogiri").glob("*.yml")))
    assert _ids(index, Package(type="npm", name="lodash", version="4.17.20")) == \
        {"GHSA-35jh-r3h4-6jhm"}
    assert _ids(index, Package(type="npm", name="lodash.template", version="4.5.0")) == \
        {"GHSA-35jh-r3h4-6jhm"}


def test_withdrawn_advisories_are_left_out(feed: list[Advisory],
                                           index: AdvisoryIndex) -> None:
    withdrawn = [a for a in feed if a.withdrawn is not None]
    assert len(withdrawn) == 10  # PyPA's snapshot holds ten
    assert index.stats.withdrawn == 10
    redis = next(a for a in withdrawn if a.id == "PYSEC-2023-73")
    name = redis.affected[0].name
    assert "PYSEC-2023-73" not in _ids(index, Package(type="pypi", name=name, version="4.0"))


def test_rpm_advisories_by_binary_package_name(index: AdvisoryIndex) -> None:
    nm = Package(type="rpm", name="NetworkManager", version="1:0.8.1-1.el6", epoch=1,
                 release="1.el6", arch="x86_64")
    candidates = index.candidates(nm)
    assert {c.advisory.id for c in candidates} == {"RHBA-2010:0836"}
    assert all(c.package is not None and c.package.name == "NetworkManager"
               for c in candidates)
    glib = index.candidates(Package(type="rpm", name="NetworkManager-glib", version="1",
                                    arch="i686"))
    # Both arches' builds are candidates; which arch applies is the matcher's decision.
    assert sorted(c.package.arch for c in glib if c.package) == ["i686", "x86_64"]


def test_debian_by_source_package_and_release() -> None:
    def deb(ecosystem: str, advisory_id: str) -> Advisory:
        return Advisory(id=advisory_id, type="security", severity=None, title="",
                        description="", issued=None, updated=None, release=None, status=None,
                        format="osv", affected=(Affected(ecosystem, "openssl", (Range(
                            "ECOSYSTEM", (("introduced", "0"),
                                          ("fixed", "3.0.15-1~deb12u1"))),)),))
    index = AdvisoryIndex([deb("Debian:12", "DSA-12"), deb("Debian:11", "DSA-11"),
                           deb("Debian", "DEB-any"), deb("PyPI", "PYPI-openssl")])
    libssl3 = Package(type="deb", name="libssl3", version="3.0.11-1~deb12u2",
                      source="openssl", source_version="3.0.11-1~deb12u2")
    assert _ids(index, libssl3, BOOKWORM) == {"DSA-12", "DEB-any"}
    assert _ids(index, libssl3, Distro(id="debian", version_id="11")) == {"DSA-11", "DEB-any"}
    # Looked up by source: the binary's own name finds nothing.
    assert not _ids(index, Package(type="deb", name="libssl3", version="1"), BOOKWORM)
    # Not Debian, or unknown: Debian's versions say nothing about Ubuntu's builds.
    assert not _ids(index, libssl3, Distro(id="ubuntu", version_id="22.04",
                                           id_like=("debian",)))
    assert not _ids(index, libssl3, None)
    assert debian_ecosystems(Distro(id="debian", version_id="12.7")) == \
        {"Debian", "Debian:12"}


def test_the_latest_of_an_advisory_id_wins() -> None:
    def version(n: int) -> Advisory:
        return Advisory(id="FEDORA-1", type="security", severity=None, title=f"v{n}",
                        description="", issued=None,
                        updated=datetime(2024, 1, n, tzinfo=UTC), release=None, status=None,
                        packages=(PackageRef("busybox", "0", "1.35.0", str(n), "x86_64"),))
    index = AdvisoryIndex([version(3), version(1), version(2)])
    [candidate] = index.candidates(Package(type="rpm", name="busybox", version="1.35.0-1",
                                           arch="x86_64"))
    assert candidate.advisory.title == "v3"
    assert index.stats.replaced == 2 and len(index) == 1


def test_other_ecosystems_are_counted_not_indexed() -> None:
    go = Advisory(id="GO-1", type="security", severity=None, title="", description="",
                  issued=None, updated=None, release=None, status=None, format="osv",
                  affected=(Affected("Go", "golang.org/x/net"),
                            Affected("npm", "left-pad")))
    index = AdvisoryIndex([go])
    assert index.stats.other_ecosystems == {"Go": 1}
    assert index.stats.affected == 1
    assert _ids(index, Package(type="npm", name="left-pad", version="1.0.0")) == {"GO-1"}


def test_the_whole_feed_is_indexed(feed: list[Advisory], index: AdvisoryIndex) -> None:
    live = {a.id for a in feed if a.withdrawn is None}
    assert len(index) == len(live) > 3800
    assert index.stats.affected == sum(len(a.affected) for a in feed
                                       if a.withdrawn is None)
