"""no-new-findings against advisories imported into a temporary database."""

from __future__ import annotations

from pathlib import Path

from gate_layouts import context, directory, make_layout

from alicorn.advisories.model import Advisory, Affected, PackageRef, Range
from alicorn.advisories.store import AdvisoryStore
from alicorn.compose.interface import Package
from alicorn.gate.run import run_gate


def _rpm(name: str, vr: str, arch: str = "x86_64") -> Package:
    return Package(type="rpm", name=name, version=vr, arch=arch,
                   source=f"{name}-{vr}.src.rpm",
                   purl=f"pkg:rpm/alicorn/{name}@{vr}?arch={arch}&distro=pony-40")


def _deb(name: str, version: str, source: str) -> Package:
    return Package(type="deb", name=name, version=version, arch="amd64", source=source,
                   purl=f"pkg:deb/debian/{name}@{version}?arch=amd64&distro=debian-12")


def _rpm_advisory(ident: str, severity: str | None, name: str, vr: str) -> Advisory:
    version, release = vr.split("-")
    return Advisory(id=ident, type="security", severity=severity, title=ident,
                    description="", issued=None, updated=None, release=None, status="stable",
                    packages=(PackageRef(name=name, epoch="0", version=version,
                                         release=release, arch="x86_64"),))


def _deb_advisory(ident: str, severity: str | None, source: str, fixed: str) -> Advisory:
    return Advisory(id=ident, type="security", severity=severity, title=ident, description="",
                    issued=None, updated=None, release=None, status=None, format="debian",
                    affected=(Affected(ecosystem="Debian:12", name=source, ranges=(
                        Range(type="ECOSYSTEM", events=(("introduced", "0"),
                                                        ("fixed", fixed))),)),))


def _store(tmp_path: Path, *advisories: Advisory) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{tmp_path / 'advisories.sqlite'}"
    AdvisoryStore(url).import_advisories(advisories, source="test")
    return url


def _layout(tmp_path: Path) -> Path:
    return make_layout(tmp_path / "layout", [[directory("etc")]])


def _run(tmp_path: Path, url: str, packages: list[Package],
         previous: list[Package] | None = None, gate: object = "no-new-findings"):  # type: ignore[no-untyped-def]
    ctx = context(_layout(tmp_path), tmp_path, gate=[gate], packages=packages,
                  previous=previous, database_url=url)
    (check,) = run_gate(ctx).checks
    return check


def test_a_first_build_fails_on_an_important_finding(tmp_path: Path) -> None:
    url = _store(tmp_path,
                 _rpm_advisory("FEDORA-2024-1", "Important", "busybox", "1.35.0-2.fc40"),
                 _rpm_advisory("FEDORA-2024-2", "Moderate", "pony-content", "1.0-2.fc40"),
                 _rpm_advisory("FEDORA-2024-3", None, "pony-content", "1.0-3.fc40"),
                 _rpm_advisory("FEDORA-2024-4", "Critical", "nginx", "9-1.fc40"))
    packages = [_rpm("busybox", "1.35.0-1.fc40"), _rpm("pony-content", "1.0-1.fc40", "x86_64")]
    check = _run(tmp_path, url, packages)
    assert not check.passed
    assert check.problems == ("FEDORA-2024-1 (Important): busybox 1.35.0-1.fc40, fixed in "
                              "1.35.0-2.fc40",)
    assert "1 new findings at or above important compared with nothing" in check.detail
    assert "1 new unrated" in check.detail
    assert check.data["findings"] == 3 and check.data["counted"] == 1
    assert [u.split(" ")[0] for u in check.data["unrated"]] == ["FEDORA-2024-3"]
    # The threshold is configurable, in any feed's words.
    for word in ("moderate", "medium"):
        lower = _run(tmp_path / word, url, packages, gate={"no-new-findings": {"severity": word}})
        assert not lower.passed and len(lower.problems) == 2
    only_critical = _run(tmp_path / "c", url, packages,
                         gate={"no-new-findings": {"severity": "critical"}})
    assert only_critical.passed


def test_findings_the_previous_image_had_are_not_new(tmp_path: Path) -> None:
    url = _store(tmp_path,
                 _rpm_advisory("FEDORA-2024-1", "Important", "busybox", "1.35.0-3.fc40"),
                 _rpm_advisory("FEDORA-2024-5", "Critical", "busybox", "1.35.0-9.fc40"))
    previous = [_rpm("busybox", "1.35.0-1.fc40")]
    # Both findings are old: the previous image had them too (same advisory and package).
    same = _run(tmp_path / "a", url, [_rpm("busybox", "1.35.0-2.fc40")], previous)
    assert same.passed
    assert "compared with the previous image (2 findings in all, 0 new)" in same.detail
    assert same.data["previous_findings"] == 2

    # Against an older store: the previous image had only one of them.
    url2 = _store(tmp_path / "b",
                  _rpm_advisory("FEDORA-2024-5", "Critical", "busybox", "1.35.0-9.fc40"),
                  _rpm_advisory("FEDORA-2024-6", "High", "pony-content", "2.0-1.fc40"))
    new = _run(tmp_path / "b", url2, [_rpm("busybox", "1.35.0-2.fc40"),
                                      _rpm("pony-content", "1.0-1.fc40")], previous)
    assert not new.passed
    assert new.problems == ("FEDORA-2024-6 (High): pony-content 1.0-1.fc40, fixed in "
                            "2.0-1.fc40",)


def test_debian_severities_and_sources(tmp_path: Path) -> None:
    url = _store(tmp_path,
                 _deb_advisory("DEBIAN-openssl-CVE-2024-1", "High", "openssl", "3.0.14-1~deb12u1"),
                 _deb_advisory("DEBIAN-zlib-CVE-2024-2", "Low", "zlib", "1:1.2.13.dfsg-2"))
    packages = [_deb("libssl3", "3.0.11-1~deb12u2", "openssl"),
                _deb("zlib1g", "1:1.2.13.dfsg-1", "zlib")]
    check = _run(tmp_path, url, packages)
    assert not check.passed
    assert check.problems == ("DEBIAN-openssl-CVE-2024-1 (High): libssl3 3.0.11-1~deb12u2, "
                              "fixed in 3.0.14-1~deb12u1",)
    # Fixed in the candidate: nothing left.
    fixed = _run(tmp_path / "f", url, [_deb("libssl3", "3.0.14-1~deb12u1", "openssl")])
    assert fixed.passed


def test_nothing_imported_passes_and_says_so(tmp_path: Path) -> None:
    url = _store(tmp_path)
    check = _run(tmp_path, url, [_rpm("busybox", "1.35.0-1.fc40")])
    assert check.passed
    assert "1 rpm packages unchecked: no rpm (updateinfo, OVAL or Bodhi) advisories imported" \
        in check.detail
