"""The CycloneDX VEX report validates against the strict 1.6 schema and says what it must."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cyclonedx.model.bom import Bom
from cyclonedx.model.bom_ref import BomRef
from cyclonedx.model.dependency import Dependency
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from alicorn.advisories.model import Advisory, Reference
from alicorn.inventory.model import Distro, Inventory, Package
from alicorn.match.model import Finding, Scan
from alicorn.report import vex
from alicorn.report.vex import VexReporter

CREATED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
LIBC = Package(type="deb", name="libc6", version="2.36-9+deb12u3", arch="amd64",
               source="glibc", path="var/lib/dpkg/status",
               purl="pkg:deb/debian/libc6@2.36-9%2Bdeb12u3?arch=amd64&distro=debian-12")
LIBC_BIN = Package(type="deb", name="libc-bin", version="2.36-9+deb12u3", arch="amd64",
                   source="glibc", path="var/lib/dpkg/status",
                   purl="pkg:deb/debian/libc-bin@2.36-9%2Bdeb12u3?arch=amd64&distro=debian-12")
REQUESTS = Package(type="pypi", name="requests", version="2.19.0",
                   path="usr/lib/python3/dist-packages/requests-2.19.0.dist-info")
# The same wheel again in a virtualenv: one purl, one component, two paths.
REQUESTS_VENV = Package(type="pypi", name="requests", version="2.19.0",
                        path="opt/venv/lib/python3.11/site-packages/requests-2.19.0.dist-info")
DSA = Advisory(id="DSA-5514-1", type="security", severity="high", title="glibc security update",
               description="Buffer overflow in ld.so", issued=datetime(2023, 10, 3, tzinfo=UTC),
               updated=None, release=None, status=None, format="debian",
               references=(Reference("cve", "CVE-2023-4911"), Reference("cve", "CVE-2023-4806")))
PYSEC = Advisory(id="PYSEC-2018-28", type="security", severity=None, title="",
                 description="", issued=None, updated=None, release=None, status=None,
                 format="osv", aliases=("CVE-2018-18074", "GHSA-x84v-xcm2-53pg"))
NOFIX = Advisory(id="DLA-1-1", type="security", severity="low", title="", description="",
                 issued=None, updated=None, release=None, status=None, format="debian")


def _scan(target: str = "app", errors: tuple[str, ...] = ()) -> Scan:
    inv = Inventory(target=target, kind="oci-archive", packages=(LIBC, LIBC_BIN, REQUESTS,
                                                                 REQUESTS_VENV),
                    distro=Distro(id="debian", version_id="12"), digest="sha256:" + "ef" * 32,
                    errors=errors)
    return Scan(inv, (Finding(PYSEC, REQUESTS, "2.20.0"), Finding(PYSEC, REQUESTS_VENV, "2.20.0"),
                      Finding(DSA, LIBC, "2.36-9+deb12u4"), Finding(DSA, LIBC_BIN,
                                                                    "2.36-9+deb12u4"),
                      Finding(NOFIX, LIBC, None)))


def _render(*scans: Scan) -> tuple[str, dict[str, Any]]:
    text = VexReporter(created=CREATED).render(list(scans))
    return text, json.loads(text)


def test_valid_cyclonedx_16() -> None:
    text, doc = _render(_scan())
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert doc["bomFormat"] == "CycloneDX"
    assert doc["specVersion"] == "1.6"
    assert doc["metadata"]["timestamp"] == "2024-05-06T07:08:09+00:00"
    # Equal inputs, equal bytes (the serial number comes from the content).
    assert VexReporter(created=CREATED).render([_scan()]) == text
    other, _ = _render(_scan(target="other"))
    assert json.loads(other)["serialNumber"] != doc["serialNumber"]


def test_components_are_the_scanned_packages_by_purl() -> None:
    _, doc = _render(_scan())
    refs = [c["bom-ref"] for c in doc["components"]]
    assert refs == sorted([LIBC.purl or "", LIBC_BIN.purl or "", "pkg:pypi/requests@2.19.0"])
    assert all(c["purl"] == c["bom-ref"] for c in doc["components"])
    req = next(c for c in doc["components"] if c["name"] == "requests")
    assert req["properties"] == [
        {"name": "alicorn:path", "value": REQUESTS_VENV.path},
        {"name": "alicorn:path", "value": REQUESTS.path}]
    libc = next(c for c in doc["components"] if c["name"] == "libc6")
    assert {"name": "alicorn:source", "value": "glibc"} in libc["properties"]
    target = doc["metadata"]["component"]
    assert target["type"] == "container"
    assert target["version"] == "sha256:" + "ef" * 32
    (dep,) = [d for d in doc["dependencies"] if d["ref"] == target["bom-ref"]]
    assert sorted(dep["dependsOn"]) == sorted(refs)


def test_one_vulnerability_per_advisory() -> None:
    _, doc = _render(_scan())
    vulns = {v["id"]: v for v in doc["vulnerabilities"]}
    assert sorted(vulns) == ["DLA-1-1", "DSA-5514-1", "PYSEC-2018-28"]
    dsa = vulns["DSA-5514-1"]
    assert dsa["source"] == {"name": "Debian",
                             "url": "https://security-tracker.debian.org/tracker/DSA-5514-1"}
    assert [(r["id"], r["source"]["name"]) for r in dsa["references"]] == [
        ("CVE-2023-4806", "NVD"), ("CVE-2023-4911", "NVD")]
    assert dsa["ratings"][0]["severity"] == "high"
    assert dsa["affects"] == [
        {"ref": LIBC_BIN.purl, "versions": [{"version": "2.36-9+deb12u3",
                                             "status": "affected"}]},
        {"ref": LIBC.purl, "versions": [{"version": "2.36-9+deb12u3", "status": "affected"}]}]
    assert dsa["analysis"]["state"] == "exploitable"
    assert dsa["analysis"]["response"] == ["update"]
    assert dsa["recommendation"] == \
        "upgrade libc-bin to 2.36-9+deb12u4; upgrade libc6 to 2.36-9+deb12u4"
    assert dsa["published"] == "2023-10-03T00:00:00+00:00"
    assert dsa["detail"] == "Buffer overflow in ld.so"

    py = vulns["PYSEC-2018-28"]
    assert [(r["id"], r["source"]["name"]) for r in py["references"]] == [
        ("CVE-2018-18074", "NVD"), ("GHSA-x84v-xcm2-53pg", "GitHub")]
    assert py["ratings"][0]["severity"] == "unknown"  # no severity given, none invented
    assert py["affects"] == [{"ref": "pkg:pypi/requests@2.19.0",
                              "versions": [{"version": "2.19.0", "status": "affected"}]}]
    assert py["recommendation"] == "upgrade requests to 2.20.0"

    nofix = vulns["DLA-1-1"]
    assert "recommendation" not in nofix
    assert "response" not in nofix["analysis"]
    assert nofix["analysis"]["state"] == "exploitable"


def test_an_incomplete_scan_is_marked() -> None:
    _, doc = _render(_scan(errors=("var/lib/dpkg/status: truncated",)))
    props = doc["metadata"]["component"]["properties"]
    assert {"name": "alicorn:complete", "value": "false"} in props
    assert {"name": "alicorn:error", "value": "var/lib/dpkg/status: truncated"} in props
    _, clean = _render(_scan())
    assert {"name": "alicorn:complete", "value": "true"} in \
        clean["metadata"]["component"]["properties"]
    # Packages no advisory covered are marked too (the document stays valid CycloneDX).
    from alicorn.match.model import Unchecked

    partial = dataclasses.replace(_scan(), unchecked=(
        Unchecked(type="deb", packages=2, reason="no Debian 12 advisories imported"),))
    text, doc = _render(partial)
    assert {"name": "alicorn:unchecked",
            "value": "2 deb package(s): no Debian 12 advisories imported"} in \
        doc["metadata"]["component"]["properties"]
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None


def test_several_targets_share_components() -> None:
    text, doc = _render(_scan("a"), _scan("b"))
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert "component" not in doc["metadata"]
    targets = [c for c in doc["components"] if c["type"] == "container"]
    assert [t["name"] for t in targets] == ["a", "b"]
    libs = [c for c in doc["components"] if c["type"] == "library"]
    assert len(libs) == 3  # the same purls in both targets are one component each
    for t in targets:
        (dep,) = [d for d in doc["dependencies"] if d["ref"] == t["bom-ref"]]
        assert len(dep["dependsOn"]) == 3


def test_the_linear_checks_still_reject() -> None:
    """The reporter replaces two quadratic checks of cyclonedx-python-lib with linear ones;
    both must still catch what they are there for."""
    _, doc = _render(_scan())
    assert vex._validator() is not None  # the fast path is the one in use
    assert vex._first_error(doc, json.dumps(doc)) is None
    doc["components"].append(dict(doc["components"][0]))  # a duplicate component
    error = vex._first_error(doc, json.dumps(doc))
    assert error is not None and "non-unique" in error.message
    bom = Bom()
    bom.dependencies.add(Dependency(ref=BomRef("pkg:pypi/ghost@1")))
    with pytest.raises(vex.VexError, match=r"unknown components.*ghost"):
        vex._check_graph(bom, frozenset({"pkg:pypi/other@1"}))
