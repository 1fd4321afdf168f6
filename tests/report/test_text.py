"""The text report: dnf-like list and summary, the per-module view, and loud incompleteness."""

from __future__ import annotations

from alicorn.advisories.model import Advisory, Reference
from alicorn.inventory.model import Distro, Inventory, Package
from alicorn.match.model import Finding, Scan
from alicorn.report.text import TextReporter

SSL = Package(type="rpm", name="openssl", version="1:3.0.8-1.fc39", arch="x86_64", epoch=1,
              release="1.fc39", source="openssl", path="usr/lib/sysimage/rpm")
CURL = Package(type="rpm", name="libcurl", version="8.2.1-1.fc39", arch="x86_64",
               release="1.fc39", source="curl", path="usr/lib/sysimage/rpm")
REQUESTS = Package(type="pypi", name="requests", version="2.19.0",
                   path="usr/lib/python3.12/site-packages/requests-2.19.0.dist-info")


def _adv(ident: str, severity: str | None, *cves: str, kind: str = "security",
         url: str | None = None, title: str = "") -> Advisory:
    refs = tuple(Reference("cve", c) for c in cves)
    if url:
        refs += (Reference("self", ident, url),)
    return Advisory(id=ident, type=kind, severity=severity, title=title, description="",
                    issued=None, updated=None, release=None, status=None, references=refs)


F1 = _adv("FEDORA-2024-1", "Important", "CVE-2023-0001", "CVE-2023-0002",
          url="https://bodhi.fedoraproject.org/updates/FEDORA-2024-1", title="openssl fix")
F2 = _adv("FEDORA-2024-2", "Critical", "CVE-2023-0003")
F3 = _adv("FEDORA-2024-3", None, kind="bugfix")
PY = _adv("PYSEC-2018-28", None, "CVE-2018-18074")

FEDORA = Distro(id="fedora", version_id="39", pretty_name="Fedora Linux 39")


def _scan(*findings: Finding, errors: tuple[str, ...] = (),
          warnings: tuple[str, ...] = (), target: str = "pony") -> Scan:
    inv = Inventory(target=target, kind="podman-container", packages=(SSL, CURL, REQUESTS),
                    distro=FEDORA, digest="sha256:" + "ab" * 32, warnings=warnings,
                    errors=errors)
    return Scan(inv, findings)


FINDINGS = (Finding(PY, REQUESTS, "2.20.0"),
            Finding(F1, SSL, "1:3.0.9-1.fc39", "openssl-1:3.0.9-1.fc39.x86_64"),
            Finding(F2, SSL, "1:3.0.9-1.fc39", "openssl-1:3.0.9-1.fc39.x86_64"),
            Finding(F3, CURL, "8.2.1-2.fc39", "libcurl-8.2.1-2.fc39.x86_64"))


def test_list_view_is_exact() -> None:
    text = TextReporter().render([_scan(*FINDINGS)])
    assert text.splitlines() == [
        "pony (podman-container, Fedora Linux 39, sha256:abababababab): 3 packages scanned",
        "ADVISORY       SEVERITY        TYPE  PACKAGE         INSTALLED       FIXED IN"
        "        CVES",
        "FEDORA-2024-3  bugfix          rpm   libcurl.x86_64  8.2.1-1.fc39    8.2.1-2.fc39"
        "    -",
        "FEDORA-2024-1  Important/Sec.  rpm   openssl.x86_64  1:3.0.8-1.fc39  1:3.0.9-1.fc39"
        "  CVE-2023-0001, CVE-2023-0002",
        "FEDORA-2024-2  Critical/Sec.   rpm   openssl.x86_64  1:3.0.8-1.fc39  1:3.0.9-1.fc39"
        "  CVE-2023-0003",
        "PYSEC-2018-28  Unknown/Sec.    pypi  requests        2.19.0          2.20.0"
        "          CVE-2018-18074",
        "3 security advisories for 3 packages: 1 Critical, 1 Important, 1 Unknown "
        "(and 1 bugfix advisory)",
    ]


def test_a_clean_complete_scan_says_no_findings() -> None:
    text = TextReporter().render([_scan()])
    assert text.splitlines()[-1] == \
        "no findings: no advisory applies to the 3 packages scanned"
    assert "ADVISORY" not in text


def test_an_incomplete_scan_is_loud_and_never_says_no_findings() -> None:
    error = "usr/lib/sysimage/rpm/rpmdb.sqlite: file is not a database"
    for view in (TextReporter(), TextReporter(summary=True), TextReporter(verbose=True)):
        text = view.render([_scan(errors=(error,))])
        lines = text.splitlines()
        assert lines[1] == (f"INCOMPLETE SCAN: could not read {error}; "
                            "findings may be missing")
        assert "no findings" not in text
        assert "INCOMPLETE: this is not a clean result" in text
    # With findings the notice comes first too, and the summary says more may be missing.
    text = TextReporter().render([_scan(FINDINGS[0], errors=(error,))])
    assert text.splitlines()[1].startswith("INCOMPLETE SCAN: could not read")
    assert text.splitlines()[-1] == ("1 security advisory for 1 package: 1 Unknown; "
                                     "the scan is INCOMPLETE, more may be missing")


def test_summary_view_like_dnf_updateinfo_summary() -> None:
    text = TextReporter(summary=True).render([_scan(*FINDINGS)])
    assert text.splitlines() == [
        "pony (podman-container, Fedora Linux 39, sha256:abababababab): 3 packages scanned",
        "    3 Security notice(s)",
        "        1 Critical Security notice(s)",
        "        1 Important Security notice(s)",
        "        1 Unknown Security notice(s)",
        "    1 Bugfix notice(s)",
    ]


def test_summary_counts_advisories_not_findings() -> None:
    other = Package(type="rpm", name="openssl-libs", version="1:3.0.8-1.fc39", arch="x86_64")
    text = TextReporter(summary=True).render([_scan(
        Finding(F1, SSL, "1:3.0.9-1.fc39"), Finding(F1, other, "1:3.0.9-1.fc39"))])
    assert "    1 Security notice(s)" in text.splitlines()


def test_verbose_view_lists_modules_with_their_packages() -> None:
    clean = _scan(target="web")
    text = TextReporter(verbose=True).render([_scan(*FINDINGS[:3]), clean])
    assert text.splitlines() == [
        "pony (podman-container, Fedora Linux 39, sha256:abababababab): 3 packages scanned",
        "  openssl 1:3.0.8-1.fc39 (rpm, x86_64) at usr/lib/sysimage/rpm",
        "    FEDORA-2024-1  Important/Sec.  fixed in 1:3.0.9-1.fc39 "
        "(update openssl-1:3.0.9-1.fc39.x86_64)",
        "        CVE-2023-0001, CVE-2023-0002",
        "        openssl fix",
        "        https://bodhi.fedoraproject.org/updates/FEDORA-2024-1",
        "    FEDORA-2024-2  Critical/Sec.  fixed in 1:3.0.9-1.fc39 "
        "(update openssl-1:3.0.9-1.fc39.x86_64)",
        "        CVE-2023-0003",
        "  requests 2.19.0 (pypi) at usr/lib/python3.12/site-packages/"
        "requests-2.19.0.dist-info",
        "    PYSEC-2018-28  Unknown/Sec.  fixed in 2.20.0",
        "        CVE-2018-18074",
        "        https://osv.dev/vulnerability/PYSEC-2018-28",
        "3 security advisories for 2 packages: 1 Critical, 1 Important, 1 Unknown",
        "",
        "web (podman-container, Fedora Linux 39, sha256:abababababab): 3 packages scanned",
        "no findings: no advisory applies to the 3 packages scanned",
        "",
        "1 of 2 targets need updates",
    ]


def test_verbose_names_the_source_package_when_it_differs() -> None:
    text = TextReporter(verbose=True).render([_scan(FINDINGS[3])])
    assert "  libcurl 8.2.1-1.fc39 (rpm, x86_64, source curl) at usr/lib/sysimage/rpm" \
        in text.splitlines()


def test_many_warnings_are_counted_not_listed() -> None:
    warnings = tuple(f"site-packages/p{i}.dist-info: no METADATA" for i in range(8))
    lines = TextReporter().render([_scan(warnings=warnings)]).splitlines()
    listed = [line for line in lines if line.startswith("warning: site-packages")]
    assert len(listed) == 5
    assert "warning: ... and 3 more warnings (--verbose lists them all)" in lines
    verbose = TextReporter(verbose=True).render([_scan(warnings=warnings)]).splitlines()
    assert len([line for line in verbose if line.startswith("warning: site-packages")]) == 8


def test_several_targets_end_with_the_overall_line() -> None:
    broken = _scan(target="db", errors=("var/lib/dpkg/status: not UTF-8",))
    text = TextReporter().render([_scan(*FINDINGS), broken])
    assert text.splitlines()[-1] == ("1 of 2 targets need updates; INCOMPLETE scans "
                                     "(findings may be missing): db")


def test_copies_of_a_package_are_one_row() -> None:
    venv = Package(type="pypi", name="requests", version="2.19.0",
                   path="opt/venv/lib/python3.12/site-packages/requests-2.19.0.dist-info")
    text = TextReporter().render([_scan(Finding(PY, REQUESTS, "2.20.0"),
                                        Finding(PY, venv, "2.20.0"))])
    rows = [line for line in text.splitlines() if line.startswith("PYSEC-2018-28")]
    assert rows == ["PYSEC-2018-28  Unknown/Sec.  pypi  requests (2 copies)  2.19.0     "
                    "2.20.0    CVE-2018-18074"]
    assert text.splitlines()[-1] == "1 security advisory for 2 packages: 1 Unknown"
    verbose = TextReporter(verbose=True).render([_scan(Finding(PY, REQUESTS, "2.20.0"),
                                                       Finding(PY, venv, "2.20.0"))])
    assert f"  requests 2.19.0 (pypi) at {venv.path}" in verbose.splitlines()
    assert f"  requests 2.19.0 (pypi) at {REQUESTS.path}" in verbose.splitlines()


def test_hostile_text_cannot_drive_the_terminal() -> None:
    """Titles come from untrusted feeds, paths from untrusted images."""
    evil = _adv("EVIL-1", "Low", title="\x1b]0;owned\x07\x1b[2Jgone\rover \u202eesrever")
    pkg = Package(type="pypi", name="x\x1b[31m", version="1\x9b0", path="a\x00b")
    for view in (TextReporter(), TextReporter(verbose=True), TextReporter(summary=True)):
        text = view.render([_scan(Finding(evil, pkg, "2"),
                                  errors=("var/lib/\x1b[8mhidden: bad",))])
        assert not any(c in text for c in "\x1b\x07\r\x00\x9b\u202e"), repr(text)
        assert "\\x1b" in text
    verbose = TextReporter(verbose=True).render([_scan(Finding(evil, pkg, "2"))])
    assert "        \\x1b]0;owned\\x07\\x1b[2Jgone\\rover \\u202eesrever" in verbose.splitlines()


def test_packages_no_advisory_covered_are_said_to_be_unchecked() -> None:
    """Every view names the package types that were not checked; a scan of only such packages
    is "nothing checked", never "no findings"; the overall line names such targets."""
    from alicorn.match.model import Unchecked

    pypi = Unchecked(type="pypi", packages=1, reason="no PyPI advisories imported")
    some = Scan(_scan().inventory, FINDINGS[1:3], unchecked=(pypi,))
    lines = TextReporter().render([some]).splitlines()
    assert lines[1] == "NOT CHECKED: 1 pypi package: no PyPI advisories imported"
    assert lines[-1] == ("2 security advisories for 1 package: 1 Critical, 1 Important; "
                         "1 package NOT CHECKED (no advisories for them)")
    clean = Scan(_scan().inventory, (), unchecked=(pypi,))
    assert TextReporter().render([clean]).splitlines()[-1] == (
        "no findings in the 2 packages checked; 1 package NOT CHECKED (no advisories for them)")
    rpms = Unchecked(type="rpm", packages=2, reason="no rpm advisories imported")
    nothing = Scan(_scan(target="db").inventory, (), unchecked=(rpms, pypi))
    assert TextReporter(summary=True).render([nothing]).splitlines() == [
        "db (podman-container, Fedora Linux 39, sha256:abababababab): 3 packages scanned",
        "NOT CHECKED: 2 rpm packages: no rpm advisories imported",
        "NOT CHECKED: 1 pypi package: no PyPI advisories imported",
        "    nothing checked: no advisory covers any of the 3 packages scanned; this is not a "
        "clean result"]
    assert TextReporter().render([_scan(*FINDINGS), nothing]).splitlines()[-1] == (
        "1 of 2 targets need updates; packages NOT CHECKED (no advisories for them) in: db")


def test_a_target_without_packages_says_nothing_was_scanned() -> None:
    from alicorn.match.matcher import NOTHING_FOUND

    inv = Inventory(target="empty", kind="rootfs", packages=(), errors=(NOTHING_FOUND,))
    lines = TextReporter().render([Scan(inv, ())]).splitlines()
    assert lines[1].startswith("NOTHING SCANNED: no packages found (no rpm database")
    assert lines[-1] == "no packages found: nothing was scanned; this is not a clean result"
