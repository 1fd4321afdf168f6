"""The JSON report: the command-line contract's object, exact, in a stable order."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from alicorn.advisories.model import Advisory, PackageRef, Reference
from alicorn.advisories.rubysec import parse_rubysec
from alicorn.errors import BadInput
from alicorn.inventory.model import Distro, Inventory, Package
from alicorn.match.model import Finding, Scan
from alicorn.report.formats import FORMATS, reporter, reporter_class
from alicorn.report.json_ import JsonReporter, advisory_url, level, purl_of
from conftest import SHARED_DATA

DEBIAN = Distro(id="debian", version_id="12", codename="bookworm",
                pretty_name="Debian GNU/Linux 12 (bookworm)")
LIBC = Package(type="deb", name="libc6", version="2.36-9+deb12u3", arch="amd64",
               source="glibc", path="var/lib/dpkg/status")
REQUESTS = Package(type="pypi", name="requests", version="2.19.0",
                   path="usr/lib/python3/dist-packages/requests-2.19.0.dist-info",
                   purl="pkg:pypi/requests@2.19.0")
DSA = Advisory(id="DSA-5514-1", type="security", severity="high", title="glibc security update",
               description="", issued=datetime(2023, 10, 3, tzinfo=UTC), updated=None,
               release=None, status=None, format="debian",
               references=(Reference("cve", "CVE-2023-4911"),))
PYSEC_2018 = Advisory(id="PYSEC-2018-28", type="security", severity=None, title="",
                      description="Requests before 2.20.0 sends an Authorization header",
                      issued=None, updated=None, release=None, status=None, format="osv",
                      aliases=("CVE-2018-18074", "GHSA-x84v-xcm2-53pg"))
PYSEC_2023 = Advisory(id="PYSEC-2023-74", type="security", severity="MODERATE", title="",
                      description="", issued=None, updated=None, release=None, status=None,
                      format="osv", aliases=("CVE-2023-32681", "GHSA-j8r2-6x86-q33q"))


def _scan(errors: tuple[str, ...] = ()) -> Scan:
    inv = Inventory(target="/srv/root", kind="rootfs", packages=(LIBC, REQUESTS),
                    distro=DEBIAN, warnings=("usr/lib/x.dist-info: no METADATA",),
                    errors=errors)
    # Deliberately out of order: the report sorts by package, then advisory.
    return Scan(inv, (Finding(PYSEC_2023, REQUESTS, "2.31.0"),
                      Finding(DSA, LIBC, "2.36-9+deb12u4"),
                      Finding(PYSEC_2018, REQUESTS, "2.20.0")))


def test_one_target_is_one_object_on_one_line() -> None:
    text = JsonReporter().render([_scan()])
    assert "\n" not in text  # scripts read the last line of stdout
    doc = json.loads(text)
    assert doc["target"] == "/srv/root"
    assert doc["kind"] == "rootfs"
    assert doc["complete"] is True
    assert doc["errors"] == []
    assert doc["warnings"] == ["usr/lib/x.dist-info: no METADATA"]
    assert doc["packages_scanned"] == 2
    assert doc["distro"] == {"id": "debian", "version_id": "12", "id_like": [],
                             "codename": "bookworm",
                             "pretty_name": "Debian GNU/Linux 12 (bookworm)"}
    assert doc["summary"] == {"Critical": 0, "Important": 1, "Moderate": 1, "Low": 0,
                              "Unknown": 1}
    assert [(f["package"]["name"], f["advisory"]) for f in doc["findings"]] == [
        ("libc6", "DSA-5514-1"), ("requests", "PYSEC-2018-28"), ("requests", "PYSEC-2023-74")]


def test_finding_records_are_exact() -> None:
    doc = json.loads(JsonReporter().render([_scan()]))
    assert doc["findings"][0] == {
        "advisory": "DSA-5514-1",
        "aliases": [],
        "cves": ["CVE-2023-4911"],
        "bugzilla": [],
        "severity": "high",
        "severity_level": "Important",
        "type": "security",
        "title": "glibc security update",
        "url": "https://security-tracker.debian.org/tracker/DSA-5514-1",
        "package": {"name": "libc6", "version": "2.36-9+deb12u3", "type": "deb",
                    "source": "glibc", "arch": "amd64",
                    "purl": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u3?arch=amd64&distro=debian-12",
                    "path": "var/lib/dpkg/status"},
        "fixed_version": "2.36-9+deb12u4",
        "update": None,
    }
    assert doc["findings"][1] == {
        "advisory": "PYSEC-2018-28",
        "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"],
        "cves": ["CVE-2018-18074"],
        "bugzilla": [],
        "severity": None,
        "severity_level": "Unknown",
        "type": "security",
        "title": "",
        "url": "https://osv.dev/vulnerability/PYSEC-2018-28",
        "package": {"name": "requests", "version": "2.19.0", "type": "pypi", "source": None,
                    "arch": None, "purl": "pkg:pypi/requests@2.19.0",
                    "path": "usr/lib/python3/dist-packages/requests-2.19.0.dist-info"},
        "fixed_version": "2.20.0",
        "update": None,
    }


def test_several_targets_are_a_list_of_scans() -> None:
    empty = Scan(Inventory(target="host", kind="host", packages=()), ())
    doc = json.loads(JsonReporter().render([_scan(), empty]))
    assert list(doc) == ["scans"]
    assert [s["target"] for s in doc["scans"]] == ["/srv/root", "host"]
    assert doc["scans"][1]["findings"] == []
    assert doc["scans"][1]["distro"] is None


def test_an_incomplete_scan_says_so() -> None:
    doc = json.loads(JsonReporter().render([_scan(("var/lib/rpm/rpmdb.sqlite: corrupt",))]))
    assert doc["complete"] is False
    assert doc["errors"] == ["var/lib/rpm/rpmdb.sqlite: corrupt"]


def test_rpm_update_and_self_link() -> None:
    ssl = Package(type="rpm", name="openssl", version="1:3.0.8-1.fc39", arch="x86_64",
                  epoch=1, release="1.fc39", source="openssl")
    adv = Advisory(id="FEDORA-2024-1", type="security", severity="Important", title="t",
                   description="", issued=None, updated=None, release=None, status=None,
                   references=(Reference("cve", "", title="CVE-2023-5678"),
                               Reference("self", "FEDORA-2024-1",
                                         "https://bodhi.fedoraproject.org/updates/X")),
                   packages=(PackageRef("openssl", "1", "3.0.9", "1.fc39", "x86_64"),))
    inv = Inventory(target="host", kind="host", packages=(ssl,),
                    distro=Distro(id="fedora", version_id="39"))
    doc = json.loads(JsonReporter().render([Scan(inv, (Finding(
        adv, ssl, "1:3.0.9-1.fc39", "openssl-1:3.0.9-1.fc39.x86_64"),))]))
    f = doc["findings"][0]
    assert f["url"] == "https://bodhi.fedoraproject.org/updates/X"
    assert f["cves"] == ["CVE-2023-5678"]
    assert f["update"] == "openssl-1:3.0.9-1.fc39.x86_64"
    # The epoch is a purl qualifier, not part of the version.
    assert f["package"]["purl"] == \
        "pkg:rpm/fedora/openssl@3.0.8-1.fc39?arch=x86_64&distro=fedora-39&epoch=1"
    assert f["package"]["source"] == "openssl"


@pytest.mark.parametrize(("severity", "expected"), [
    ("Critical", "Critical"), ("CRITICAL", "Critical"), ("Important", "Important"),
    ("HIGH", "Important"), ("high", "Important"), ("Moderate", "Moderate"),
    ("MODERATE", "Moderate"), ("medium", "Moderate"), ("Low", "Low"),
    ("unimportant", "Low"), (None, "Unknown"), ("", "Unknown"), ("None", "Unknown"),
    ("Unspecified", "Unknown"), ("bogus", "Unknown"),
])
def test_severity_levels(severity: str | None, expected: str) -> None:
    assert level(severity) == expected


def test_purls_made_for_packages_that_have_none() -> None:
    assert purl_of(Package(type="maven", name="org.apache.logging.log4j:log4j-core",
                           version="2.14.1")) == \
        "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"
    assert purl_of(Package(type="npm", name="@babel/core", version="7.0.0")) == \
        "pkg:npm/%40babel/core@7.0.0"
    assert purl_of(Package(type="gem", name="nokogiri", version="1.13.1")) == \
        "pkg:gem/nokogiri@1.13.1"
    # A recorded purl is used as it is.
    assert purl_of(REQUESTS) == "pkg:pypi/requests@2.19.0"


def test_advisory_urls() -> None:
    ghsa = Advisory(id="GHSA-j8r2-6x86-q33q", type="security", severity=None, title="",
                    description="", issued=None, updated=None, release=None, status=None,
                    format="osv", references=(Reference("web", "", "https://example.org/a"),))
    assert advisory_url(ghsa) == "https://github.com/advisories/GHSA-j8r2-6x86-q33q"
    plain = Advisory(id="SL-1", type="security", severity=None, title="", description="",
                     issued=None, updated=None, release=None, status=None,
                     references=(Reference("bugzilla", "1", "https://bugs.example.org/1"),))
    assert advisory_url(plain) == "https://bugs.example.org/1"
    # An OSV record's ADVISORY references are other vendors' pages: the id's own page wins,
    # and an ADVISORY reference is used only when the id names no page.
    osv = Advisory(id="PYSEC-2018-28", type="security", severity=None, title="",
                   description="", issued=None, updated=None, release=None, status=None,
                   format="osv",
                   references=(Reference("ADVISORY", "", "https://access.redhat.com/x"),))
    assert advisory_url(osv) == "https://osv.dev/vulnerability/PYSEC-2018-28"
    vendor = Advisory(id="SL-3", type="security", severity=None, title="", description="",
                      issued=None, updated=None, release=None, status=None,
                      references=(Reference("web", "", "https://example.org/web"),
                                  Reference("ADVISORY", "", "https://example.org/adv")))
    assert advisory_url(vendor) == "https://example.org/adv"
    bare = Advisory(id="SL-2", type="security", severity=None, title="", description="",
                    issued=None, updated=None, release=None, status=None)
    assert advisory_url(bare) is None


def test_a_rubysec_advisory_links_to_its_own_url() -> None:
    """A rubysec id is the database's file name, no osv.dev record: its url is the page."""
    path = SHARED_DATA / "rubysec" / "gems" / "nokogiri" / "CVE-2019-5477.yml"
    if not path.is_file():
        pytest.skip(f"the shared rubysec data is not at {path}")
    rubysec = parse_rubysec(path.read_bytes(),
                            source="gems/nokogiri/CVE-2019-5477.yml").advisories[0]
    assert rubysec.id == "nokogiri/CVE-2019-5477"
    assert advisory_url(rubysec) == "https://github.com/sparklemotion/nokogiri/issues/1915"


def test_registry() -> None:
    assert sorted(FORMATS) == ["json", "sarif", "text", "vex"]
    assert all(reporter_class(name).name == name for name in FORMATS)
    assert isinstance(reporter("json"), JsonReporter)
    with pytest.raises(BadInput, match="unknown report format 'xml'"):
        reporter("xml")
