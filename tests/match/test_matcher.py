"""The matcher on real advisories: GitHub's OSV, rubysec, updateinfo; and against real dnf."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alicorn.advisories.model import Advisory, Affected, PackageRef, Range, Reference
from alicorn.advisories.osv import parse_osv
from alicorn.advisories.rubysec import parse_rubysec
from alicorn.advisories.updateinfo import parse_updateinfo
from alicorn.inventory.model import Distro, Inventory, Package
from alicorn.match.index import AdvisoryIndex
from alicorn.match.matcher import NOTHING_FOUND, match, scan
from alicorn.match.model import Finding
from conftest import EXAMPLES, SHARED_DATA, require

GHSA = SHARED_DATA / "ghsa" / "advisories" / "github-reviewed"
NOKOGIRI = SHARED_DATA / "rubysec" / "gems" / "nokogiri"
UPDATEINFO = SHARED_DATA / "updateinfo"

if not (GHSA.is_dir() and NOKOGIRI.is_dir() and UPDATEINFO.is_dir()):
    _reason = f"the shared advisory test data is absent ({SHARED_DATA})"
    if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
        pytest.fail(_reason, pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

BOOKWORM = Distro(id="debian", version_id="12", codename="bookworm")


def _inventory(*packages: Package, distro: Distro | None = None) -> Inventory:
    return Inventory(target="test", kind="rootfs", packages=packages, distro=distro)


def _found(findings: tuple[Finding, ...]) -> set[tuple[str, str, str, str | None]]:
    """(package name, version, advisory id, fixed version) of each finding."""
    return {(f.package.name, f.package.version, f.advisory.id, f.fixed_version)
            for f in findings}


@pytest.fixture(scope="module")
def ghsa() -> AdvisoryIndex:
    advisories = [a for p in sorted(GHSA.rglob("*.json"))
                  for a in parse_osv(p.read_bytes(), source=str(p)).advisories]
    assert len(advisories) == 15
    return AdvisoryIndex(advisories)


@pytest.fixture(scope="module")
def updateinfo() -> AdvisoryIndex:
    return AdvisoryIndex(a for p in sorted(UPDATEINFO.glob("*.xml"))
                         for a in parse_updateinfo(p.read_bytes(), source=str(p)))


# -- upstream ecosystems --------------------------------------------------------------------

def _maven(artifact: str, version: str) -> Package:
    group, _, _ = artifact.partition(":")
    return Package(type="maven", name=artifact, version=version, group=group)


def test_log4shell(ghsa: AdvisoryIndex) -> None:
    log4j = "org.apache.logging.log4j:log4j-core"
    findings = match(_inventory(_maven(log4j, "2.14.1"), _maven(log4j, "2.17.1"),
                                _maven(log4j, "2.0-beta9"), _maven(log4j, "2.12.1")), ghsa)
    assert _found(findings) == {
        (log4j, "2.14.1", "GHSA-jfh8-c2jp-5v3q", "2.15.0"),
        (log4j, "2.0-beta9", "GHSA-jfh8-c2jp-5v3q", "2.3.1"),
        (log4j, "2.12.1", "GHSA-jfh8-c2jp-5v3q", "2.12.2")}
    assert all(f.cves == ("CVE-2021-44228",) for f in findings)


def test_pypi(ghsa: AdvisoryIndex) -> None:
    def pypi(name: str, version: str) -> Package:
        return Package(type="pypi", name=name, version=version)
    findings = match(_inventory(
        pypi("requests", "2.30.0"), pypi("requests", "2.31.0"), pypi("requests", "2.2.1"),
        pypi("Jinja2", "3.1.2"), pypi("Jinja2", "3.1.3"),
        pypi("urllib3", "1.26.16"), pypi("urllib3", "2.0.5"), pypi("urllib3", "2.0.6"),
        pypi("PyYAML", "5.3.1"), pypi("pyyaml", "5.4")), ghsa)
    assert _found(findings) == {
        ("requests", "2.30.0", "GHSA-j8r2-6x86-q33q", "2.31.0"),
        ("Jinja2", "3.1.2", "GHSA-h5c8-rqwp-cp95", "3.1.3"),
        ("urllib3", "1.26.16", "GHSA-v845-jxx5-vc9f", "1.26.17"),
        ("urllib3", "2.0.5", "GHSA-v845-jxx5-vc9f", "2.0.6"),
        ("PyYAML", "5.3.1", "GHSA-8q59-q68h-6hv4", "5.4")}


def test_npm(ghsa: AdvisoryIndex) -> None:
    def npm(name: str, version: str) -> Package:
        return Package(type="npm", name=name, version=version)
    findings = match(_inventory(
        npm("lodash", "4.17.20"), npm("lodash", "4.17.21"), npm("minimist", "1.2.5"),
        npm("minimist", "0.2.3"), npm("minimist", "1.2.6"), npm("lodash.template", "4.5.0"),
        npm("express", "5.0.0-beta.1"), npm("express", "5.0.0")), ghsa)
    assert _found(findings) == {
        ("lodash", "4.17.20", "GHSA-35jh-r3h4-6jhm", "4.17.21"),
        ("minimist", "1.2.5", "GHSA-xvch-5gv4-984h", "1.2.6"),
        ("minimist", "0.2.3", "GHSA-xvch-5gv4-984h", "0.2.4"),
        ("lodash.template", "4.5.0", "GHSA-35jh-r3h4-6jhm", None),  # last_affected: no fix
        ("express", "5.0.0-beta.1", "GHSA-rv95-896h-c2vc", "5.0.0-beta.3")}


def test_one_finding_per_advisory_and_package(ghsa: AdvisoryIndex) -> None:
    # GHSA-wf5p-g6vw-rhxx names axios twice (two affected entries).
    axios = [Package(type="npm", name="axios", version=v) for v in ("0.27.0", "1.5.0")]
    findings = match(_inventory(*axios), ghsa)
    assert _found(findings) == {("axios", "0.27.0", "GHSA-wf5p-g6vw-rhxx", "0.28.0"),
                                ("axios", "1.5.0", "GHSA-wf5p-g6vw-rhxx", "1.6.0")}


def test_rubysec_nokogiri() -> None:
    advisories = [a for p in sorted(NOKOGIRI.glob("*.yml"))
                  for a in parse_rubysec(p.read_bytes(), source=str(p)).advisories]
    index = AdvisoryIndex(advisories)

    def findings(version: str) -> dict[str, str | None]:
        inventory = _inventory(Package(type="gem", name="nokogiri", version=version))
        return {f.advisory.id: f.fixed_version for f in match(inventory, index)}
    old = findings("1.13.9")
    # patched "~> 1.15.6", ">= 1.16.2": the lowest fix above 1.13.9 is 1.15.6.
    assert old["nokogiri/GHSA-xc9x-jj77-9p9j"] == "1.15.6"
    # unaffected "<= 1.13.7", patched ">= 1.13.10"
    assert old["nokogiri/CVE-2022-23476"] == "1.13.10"
    assert "nokogiri/CVE-2022-24836" not in old  # patched ">= 1.13.4"
    assert "nokogiri/CVE-2022-23476" not in findings("1.13.7")
    newer = findings("1.16.2")
    assert "nokogiri/GHSA-xc9x-jj77-9p9j" not in newer
    assert "nokogiri/GHSA-xc9x-jj77-9p9j" not in findings("1.15.6")
    assert set(newer) < set(old)
    assert all(old.values()), "every nokogiri advisory names its fix"


def test_rubysec_without_patched_versions_affects_every_version() -> None:
    advisory = Advisory(id="abandoned/CVE-2014-0001", type="security", severity=None,
                        title="", description="", issued=None, updated=None, release=None,
                        status=None, format="rubysec",
                        affected=(Affected("RubyGems", "abandoned"),))
    findings = match(_inventory(Package(type="gem", name="abandoned", version="9.9")),
                     AdvisoryIndex([advisory]))
    assert _found(findings) == {("abandoned", "9.9", "abandoned/CVE-2014-0001", None)}


def test_distro_packages_are_not_matched_against_upstream_ranges(
        ghsa: AdvisoryIndex) -> None:
    # Debian's and Fedora's builds of these carry backported fixes under the old version.
    distro = _inventory(
        Package(type="deb", name="python3-jinja2", version="3.1.2-1", source="jinja2"),
        Package(type="deb", name="jinja2", version="3.1.2-1", source="jinja2"),
        Package(type="rpm", name="python3-requests", version="2.28.1-1.fc40",
                release="1.fc40", arch="noarch", source="python-requests"),
        Package(type="rpm", name="requests", version="2.28.1-1", arch="noarch"),
        distro=BOOKWORM)
    assert match(distro, ghsa) == ()


def test_undecidable_versions_are_warned_about_not_dropped(
        ghsa: AdvisoryIndex, caplog: pytest.LogCaptureFixture) -> None:
    inventory = _inventory(Package(type="pypi", name="requests", version="2.30.0 custom"))
    with caplog.at_level(logging.WARNING, logger="alicorn.match.matcher"):
        assert match(inventory, ghsa) == ()
    assert any("GHSA-j8r2-6x86-q33q" in r.getMessage() and "PEP 440" in r.getMessage()
               for r in caplog.records)
    result = scan(inventory, ghsa)
    assert result.findings == ()
    [warning] = result.inventory.warnings
    assert "requests 2.30.0 custom" in warning and "GHSA-j8r2-6x86-q33q" in warning


def test_types_filter(ghsa: AdvisoryIndex) -> None:
    inventory = _inventory(Package(type="pypi", name="requests", version="2.30.0"))
    assert len(match(inventory, ghsa, types={"security"})) == 1
    assert len(match(inventory, ghsa, types={"Security"})) == 1
    assert match(inventory, ghsa, types={"bugfix"}) == ()


def test_withdrawn_advisories_never_match(ghsa: AdvisoryIndex) -> None:
    # Three candidates: the advisory names log4j-core in three affected entries.
    [log4shell] = {c.advisory for c in ghsa.candidates(
        _maven("org.apache.logging.log4j:log4j-core", "2.14.1"))}
    withdrawn = replace(log4shell, withdrawn=datetime(2024, 1, 1, tzinfo=UTC))
    inventory = _inventory(_maven("org.apache.logging.log4j:log4j-core", "2.14.1"))
    assert match(inventory, AdvisoryIndex([withdrawn])) == ()


# -- Debian source packages -----------------------------------------------------------------

def _openssl_advisory(ecosystem: str = "Debian:12") -> Advisory:
    return Advisory(
        id="DSA-5764-1", type="security", severity=None, title="openssl security update",
        description="", issued=None, updated=None, release="12", status=None, format="osv",
        aliases=("CVE-2024-5535",),
        affected=(Affected(ecosystem, "openssl", (Range("ECOSYSTEM", (
            ("introduced", "0"), ("fixed", "3.0.15-1~deb12u1"))),)),))


def _libssl3(source_version: str) -> Package:
    return Package(type="deb", name="libssl3", version=source_version, arch="amd64",
                   source="openssl", source_version=source_version)


def test_debian_by_source_package_and_source_version() -> None:
    index = AdvisoryIndex([_openssl_advisory()])
    old = match(_inventory(_libssl3("3.0.11-1~deb12u2"), distro=BOOKWORM), index)
    assert _found(old) == {("libssl3", "3.0.11-1~deb12u2", "DSA-5764-1", "3.0.15-1~deb12u1")}
    assert old[0].cves == ("CVE-2024-5535",)
    assert match(_inventory(_libssl3("3.0.15-1~deb12u1"), distro=BOOKWORM), index) == ()
    # The binary's version may differ from its source's (binNMUs): the source's counts.
    binnmu = replace(_libssl3("3.0.15-1~deb12u1"), version="3.0.15-1~deb12u1+b1")
    assert match(_inventory(binnmu, distro=BOOKWORM), index) == ()
    rebuilt = replace(_libssl3("3.0.11-1~deb12u2"), version="3.0.11-1~deb12u2+b1")
    assert len(match(_inventory(rebuilt, distro=BOOKWORM), index)) == 1


def test_debian_advisories_of_another_release_do_not_apply() -> None:
    index = AdvisoryIndex([_openssl_advisory("Debian:11")])
    assert match(_inventory(_libssl3("3.0.11-1~deb12u2"), distro=BOOKWORM), index) == ()
    plain = AdvisoryIndex([_openssl_advisory("Debian")])
    assert len(match(_inventory(_libssl3("3.0.11-1~deb12u2"), distro=BOOKWORM), plain)) == 1


def test_deb_packages_of_a_root_that_is_not_debian_are_named_unchecked() -> None:
    index = AdvisoryIndex([_openssl_advisory()])
    ubuntu = Distro(id="ubuntu", version_id="22.04", id_like=("debian",))
    result = scan(_inventory(_libssl3("3.0.11-1~deb12u2"), distro=ubuntu), index)
    assert result.findings == ()
    assert [(u.type, u.packages, u.reason) for u in result.unchecked] == [
        ("deb", 1, "Debian advisories do not apply: the root's os-release says 'ubuntu', "
                   "not Debian")]



def test_package_types_no_advisory_covers_are_named_unchecked() -> None:
    """A scan names the package types its advisories could not apply to (a Debian root and
    only Debian 11 or only PyPI advisories) rather than letting them pass for clean."""
    wheel = Package(type="pypi", name="requests", version="2.32.3")
    inventory = _inventory(_libssl3("3.0.15-1~deb12u1"), wheel, distro=BOOKWORM)
    bullseye_only = scan(inventory, AdvisoryIndex([_openssl_advisory("Debian:11")]))
    assert [(u.type, u.packages, u.reason) for u in bullseye_only.unchecked] == [
        ("deb", 1, "no Debian 12 advisories imported"),
        ("pypi", 1, "no PyPI advisories imported")]
    assert bullseye_only.checked == 0
    covered = scan(inventory, AdvisoryIndex([_openssl_advisory()]))
    assert ([u.type for u in covered.unchecked], covered.checked) == (["pypi"], 1)
    assert covered.complete
    # A root that is not Debian: the reason says so.
    ubuntu = Distro(id="ubuntu", version_id="22.04")
    other = scan(_inventory(_libssl3("3.0.11-1~deb12u2"), distro=ubuntu),
                 AdvisoryIndex([_openssl_advisory()]))
    assert "'ubuntu', not Debian" in other.unchecked[0].reason
    # Coverage may be judged on another index (the CLI's unfiltered one).
    filtered = scan(inventory, AdvisoryIndex([]), coverage=AdvisoryIndex([_openssl_advisory()]))
    assert [u.type for u in filtered.unchecked] == ["pypi"]
    rpm = Package(type="rpm", name="busybox", version="1.35.0-1.fc40", arch="x86_64",
                  release="1.fc40")
    assert [u.reason for u in scan(_inventory(rpm), AdvisoryIndex([])).unchecked] == [
        "no rpm (updateinfo, OVAL or Bodhi) advisories imported"]


def test_an_inventory_without_packages_is_not_complete() -> None:
    result = scan(_inventory(distro=BOOKWORM), AdvisoryIndex([_openssl_advisory()]))
    assert (result.findings, result.complete) == ((), False)
    assert result.inventory.errors == (NOTHING_FOUND,)

# -- rpm: dnf's rules -------------------------------------------------------------------------

def _rpm(name: str, evr: str, arch: str) -> Package:
    epoch, _, vr = evr.rpartition(":")
    release = vr.rsplit("-", 1)[1]
    return Package(type="rpm", name=name, version=f"{epoch}:{vr}" if epoch else vr,
                   arch=arch, epoch=int(epoch) if epoch else None, release=release)


def _updates(findings: tuple[Finding, ...]) -> set[tuple[str, str, str | None, str | None]]:
    return {(f.package.nevra, f.advisory.id, f.fixed_version, f.update) for f in findings}


def test_rpm_older_installed_gets_the_advisory(updateinfo: AdvisoryIndex) -> None:
    inventory = _inventory(
        _rpm("NetworkManager", "1:0.8.1-1.el6", "x86_64"),        # older: applies
        _rpm("NetworkManager-glib", "1:0.8.1-1.el6", "i686"),     # older, the i686 build
        _rpm("NetworkManager-gnome", "1:0.8.1-5.el6_0.1", "x86_64"),  # equal: no
        _rpm("NetworkManager-glib", "1:0.8.2-1.el6", "x86_64"),   # newer: no
        _rpm("guestfish", "1:1.7.17-26.el6", "ppc64"),            # an arch not listed: no
        _rpm("libguestfs", "0:1.7.18-1.el6", "x86_64"))           # epoch 0 < 1: applies
    assert _updates(match(inventory, updateinfo)) == {
        ("NetworkManager-1:0.8.1-1.el6.x86_64", "RHBA-2010:0836", "1:0.8.1-5.el6_0.1",
         "NetworkManager-1:0.8.1-5.el6_0.1.x86_64"),
        ("NetworkManager-glib-1:0.8.1-1.el6.i686", "RHBA-2010:0836", "1:0.8.1-5.el6_0.1",
         "NetworkManager-glib-1:0.8.1-5.el6_0.1.i686"),
        ("libguestfs-0:1.7.18-1.el6.x86_64", "SLBA-2011:1512-2", "1:1.7.17-26.el6",
         "libguestfs-1:1.7.17-26.el6.x86_64")}


def test_rpm_arch_must_be_the_same_as_libdnf_compares_it(updateinfo: AdvisoryIndex) -> None:
    # walrus-5.21-1 is a noarch build: libdnf's getAdvisoryPkgs compares name *and* arch.
    noarch = _inventory(_rpm("walrus", "5.20-1", "noarch"))
    x86 = _inventory(_rpm("walrus", "5.20-1", "x86_64"))
    assert _updates(match(noarch, updateinfo)) == {
        ("walrus-5.20-1.noarch", "RHEA-2012:0055", "5.21-1", "walrus-5.21-1.noarch")}
    assert match(x86, updateinfo) == ()


def test_rpm_types_filter_like_dnf_security(updateinfo: AdvisoryIndex) -> None:
    inventory = _inventory(_rpm("glibc", "2.28-25.fc29", "x86_64"),
                           _rpm("walrus", "5.20-1", "noarch"))
    assert {f.advisory.id for f in match(inventory, updateinfo)} == \
        {"FEDORA-2018-318f184000", "RHEA-2012:0055"}
    assert {f.advisory.id for f in match(inventory, updateinfo, types={"security"})} == \
        {"RHEA-2012:0055"}


def test_rpm_module_collections_need_an_enabled_stream(updateinfo: AdvisoryIndex) -> None:
    inventory = _inventory(_rpm("duck", "0.5-1", "noarch"))
    # RHEA-2012:0056 lists duck-0.6 outside any module; 0059 and 0060 inside module duck:0.
    assert {f.advisory.id for f in match(inventory, updateinfo)} == {"RHEA-2012:0056"}
    assert {f.advisory.id for f in match(inventory, updateinfo,
                                         enabled_modules={"duck:0"})} == \
        {"RHEA-2012:0056", "RHEA-2012:0059", "RHEA-2012:0060"}


def test_rpm_only_the_newest_installed_of_a_name_arch(updateinfo: AdvisoryIndex) -> None:
    # dnf's installed().latest(1): an old kernel beside the fixed one is not reported.
    both = _inventory(_rpm("kernel", "4.19.14-300.fc29", "x86_64"),
                      _rpm("kernel", "4.19.15-300.fc29", "x86_64"))
    assert match(both, updateinfo) == ()
    old = _inventory(_rpm("kernel", "4.19.14-300.fc29", "x86_64"))
    assert _updates(match(old, updateinfo)) == {
        ("kernel-4.19.14-300.fc29.x86_64", "FEDORA-2019-348e185000", "4.19.15-300.fc29",
         "kernel-4.19.15-300.fc29.x86_64")}


def test_rpm_advisory_package_without_arch_matches_any_arch() -> None:
    def advisory(advisory_id: str, *arches: str) -> Advisory:
        return Advisory(id=advisory_id, type="security", severity="Important", title="",
                        description="", issued=None, updated=None, release=None, status=None,
                        format="oval", packages=tuple(
                            PackageRef("busybox", "0", "1.35.0", "2.fc40", arch)
                            for arch in arches))
    index = AdvisoryIndex([advisory("OVAL-1", ""), advisory("OVAL-2", "", "x86_64")])
    inventory = _inventory(_rpm("busybox", "1.35.0-1.fc40", "x86_64"),
                           _rpm("busybox", "1.35.0-1.fc40", "aarch64"))
    # One finding per advisory and installed package; the build of its own arch preferred.
    assert _updates(match(inventory, index)) == {
        ("busybox-1.35.0-1.fc40.x86_64", "OVAL-1", "1.35.0-2.fc40",
         "busybox-1.35.0-2.fc40.x86_64"),
        ("busybox-1.35.0-1.fc40.aarch64", "OVAL-1", "1.35.0-2.fc40",
         "busybox-1.35.0-2.fc40.aarch64"),
        ("busybox-1.35.0-1.fc40.x86_64", "OVAL-2", "1.35.0-2.fc40",
         "busybox-1.35.0-2.fc40.x86_64"),
        ("busybox-1.35.0-1.fc40.aarch64", "OVAL-2", "1.35.0-2.fc40",
         "busybox-1.35.0-2.fc40.aarch64")}


def test_scan_keeps_the_inventory_errors(updateinfo: AdvisoryIndex) -> None:
    broken = replace(_inventory(_rpm("kernel", "4.19.14-300.fc29", "x86_64")),
                     errors=("usr/lib/sysimage/rpm/rpmdb.sqlite: database disk image is "
                             "malformed",))
    result = scan(broken, updateinfo)
    assert not result.complete and len(result.findings) == 1


# -- the same answers as dnf itself -----------------------------------------------------------

# Advisories against the example repository's installed busybox-1.35.0-1.fc40.x86_64 and
# pony-filesystem-3.18-1.fc40.noarch: which apply is what `dnf updateinfo list` decides.
_CASES = [
    ("T-NEWER", "security", [("busybox", "0", "1.35.0", "2.fc40", "x86_64")]),
    ("T-EQUAL", "security", [("busybox", "0", "1.35.0", "1.fc40", "x86_64")]),
    ("T-OLDER", "security", [("busybox", "0", "1.35.0", "0.fc40", "x86_64")]),
    ("T-NOARCH", "security", [("busybox", "0", "1.35.0", "3.fc40", "noarch")]),
    ("T-OTHER-ARCH", "security", [("pony-filesystem", "0", "3.18", "2.fc40", "x86_64")]),
    ("T-CARET", "security", [("pony-filesystem", "0", "3.18^git1", "1.fc40", "noarch")]),
    ("T-TILDE", "security", [("pony-filesystem", "0", "3.18~rc1", "9.fc40", "noarch")]),
    ("T-EPOCH", "security", [("busybox", "1", "1.0", "1.fc40", "x86_64")]),
    ("T-BUGFIX", "bugfix", [("busybox", "0", "1.36.0", "1.fc40", "x86_64")]),
    ("T-TWO-ARCHES", "security", [("busybox", "0", "1.35.0", "4.fc40", "i686"),
                                  ("busybox", "0", "1.35.0", "4.fc40", "x86_64")]),
    ("T-ABSENT", "security", [("no-such-package", "0", "9", "9", "x86_64")]),
]
_MODULAR = ("T-MODULE", "security", [("busybox", "0", "1.35.0", "5.fc40", "x86_64")])


def _updateinfo_xml() -> str:
    def package(name: str, epoch: str, version: str, release: str, arch: str) -> str:
        return (f'<package name="{name}" epoch="{epoch}" version="{version}" '
                f'release="{release}" arch="{arch}" src="{name}-{version}-{release}.src.rpm">'
                f"<filename>{name}-{version}-{release}.{arch}.rpm</filename></package>")

    def update(advisory_id: str, kind: str, packages: list[tuple[str, str, str, str, str]],
               module: str = "") -> str:
        return (f'<update from="test" status="stable" type="{kind}" version="2.0">'
                f"<id>{advisory_id}</id><title>{advisory_id}</title>"
                '<issued date="2024-04-01 00:00:00"/><severity>Important</severity>'
                f'<pkglist><collection short="c"><name>c</name>{module}'
                + "".join(package(*p) for p in packages) + "</collection></pkglist></update>")
    module = ('<module name="busybox" stream="1.35" version="1" context="c" '
              'arch="x86_64"/>')
    return ("<?xml version='1.0' encoding='UTF-8'?><updates>"
            + "".join(update(*case) for case in _CASES)
            + update(*_MODULAR, module=module) + "</updates>")


_DNF_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)$")


@pytest.mark.integration
def test_the_same_answers_as_dnf_updateinfo_list(tmp_path: Path) -> None:
    require("dnf", "rpm", "rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    repo = tmp_path / "repo"
    subprocess.run([str(EXAMPLES / "pony" / "rpm" / "build-repo"), str(repo), "--version",
                    "1"], check=True, capture_output=True)
    advisories_repo = tmp_path / "advisories"
    shutil.copytree(repo, advisories_repo)
    xml = tmp_path / "updateinfo.xml"
    xml.write_text(_updateinfo_xml())
    subprocess.run(["modifyrepo_c", "--mdtype=updateinfo", str(xml),
                    str(advisories_repo / "repodata")], check=True, capture_output=True)

    home = tmp_path / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text("%_dbpath /usr/lib/sysimage/rpm\n")
    env = {**os.environ, "HOME": str(home)}
    root = tmp_path / "root"
    dnf = ["dnf", "-q", f"--installroot={root}", "--releasever=40",
           "--setopt=reposdir=/dev/null", "--nogpgcheck", "--noplugins"]
    subprocess.run([*dnf, f"--repofrompath=p,{repo}", "--repo=p", "-y", "install", "busybox",
                    "pony-filesystem"], check=True, env=env, capture_output=True)

    def dnf_list(*options: str) -> set[tuple[str, str]]:
        out = subprocess.run([*dnf, f"--repofrompath=a,{advisories_repo}", "--repo=a",
                              "updateinfo", "list", *options], check=True, env=env,
                             capture_output=True, text=True).stdout
        rows = [_DNF_LINE.match(line.strip()) for line in out.splitlines() if line.strip()]
        assert all(rows), out
        return {(m.group(1), m.group(3)) for m in rows if m}

    queried = subprocess.run(
        ["rpm", "--dbpath", str(root / "usr/lib/sysimage/rpm"), "-qa", "--qf",
         "%{NAME} %{EPOCHNUM} %{VERSION} %{RELEASE} %{ARCH}\\n"],
        check=True, capture_output=True, text=True).stdout
    packages = []
    for line in queried.splitlines():
        name, epoch, version, release, arch = line.split()
        evr = f"{epoch}:{version}-{release}" if epoch != "0" else f"{version}-{release}"
        packages.append(_rpm(name, evr, arch))
    assert {p.nevra for p in packages} >= {"busybox-1.35.0-1.fc40.x86_64",
                                            "pony-filesystem-3.18-1.fc40.noarch"}
    index = AdvisoryIndex(parse_updateinfo(xml.read_bytes(), source=str(xml)))
    inventory = _inventory(*packages)

    def ours(**kw: set[str]) -> set[tuple[str, str]]:
        return {(f.advisory.id, f.update or "") for f in match(inventory, index, **kw)}

    expected = {("T-NEWER", "busybox-1.35.0-2.fc40.x86_64"),
                ("T-CARET", "pony-filesystem-3.18^git1-1.fc40.noarch"),
                ("T-EPOCH", "busybox-1:1.0-1.fc40.x86_64"),
                ("T-TWO-ARCHES", "busybox-1.35.0-4.fc40.x86_64")}
    assert dnf_list("--security") == ours(types={"security"}) == expected
    assert dnf_list() == ours() == expected | {("T-BUGFIX", "busybox-1.36.0-1.fc40.x86_64")}



def _pypi_advisory(ident: str, severity: str | None, fixed: str, *aliases: str) -> Advisory:
    return Advisory(id=ident, type="security", severity=severity, title="", description="",
                    issued=None, updated=None, release=None, status=None, format="osv",
                    aliases=aliases, references=(Reference("web", "", f"https://x/{ident}"),),
                    affected=(Affected("PyPI", "requests", (Range("ECOSYSTEM", (
                        ("introduced", "0"), ("fixed", fixed))),)),))


def test_advisories_naming_each_other_are_one_finding() -> None:
    """PYSEC-2023-74 names GHSA-j8r2-6x86-q33q as its alias: one vulnerability, one finding
    (the rated GHSA, carrying the PYSEC id, the lowest fix); advisories that only share a
    CVE stay two."""
    pysec = _pypi_advisory("PYSEC-2023-74", None, "2.31.0", "CVE-2023-32681",
                           "GHSA-j8r2-6x86-q33q")
    ghsa = _pypi_advisory("GHSA-j8r2-6x86-q33q", "MODERATE", "2.31.1", "CVE-2023-32681")
    other = _pypi_advisory("PYSEC-2099-1", None, "3.0", "CVE-2023-32681")
    wheel = Package(type="pypi", name="requests", version="2.19.0",
                    path="usr/lib/python3/site-packages/requests-2.19.0.dist-info")
    copy = replace(wheel, path="opt/venv/lib/python3/site-packages/requests-2.19.0.dist-info")
    found = match(_inventory(wheel, copy), AdvisoryIndex([pysec, ghsa, other]))
    assert [(f.package.path, f.advisory.id, f.fixed_version) for f in found] == [
        (copy.path, "GHSA-j8r2-6x86-q33q", "2.31.0"), (copy.path, "PYSEC-2099-1", "3.0"),
        (wheel.path, "GHSA-j8r2-6x86-q33q", "2.31.0"), (wheel.path, "PYSEC-2099-1", "3.0")]
    merged = found[0].advisory
    assert (merged.severity, merged.aliases) == ("MODERATE", ("CVE-2023-32681",
                                                              "PYSEC-2023-74"))
    assert merged.cves == ("CVE-2023-32681",)
    # Its own page stays first among the references.
    assert merged.references[0].href == "https://x/GHSA-j8r2-6x86-q33q"
    assert {r.href for r in merged.references} == {"https://x/GHSA-j8r2-6x86-q33q",
                                                   "https://x/PYSEC-2023-74"}
