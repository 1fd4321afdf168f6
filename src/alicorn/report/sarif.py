"""The SARIF 2.1.0 report: findings as code-scanning results (GitHub, GitLab, IDEs).

One run per target (one target, one run).  The tool's rules are the advisories found in that
target: ``id`` the advisory id, ``helpUri`` its page, ``properties.security-severity`` a
CVSS-like number from the severity level (GitHub's buckets: Critical >= 9.0, High 7.0-8.9,
Medium 4.0-6.9, Low 0.1-3.9; none for an unknown severity, rather than a made-up one) and
``tags`` the CVEs.  Each finding is a result: ``level`` from the severity, a message naming the
package and the fixed version, the package's path in the target as the physical location
(relative to the ``ROOTFS`` base, the target's root) and its purl as the logical location.

A scan that could not read a package database is recorded as an unsuccessful invocation with
one error notification per database, so a consumer sees that the run is incomplete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from alicorn import __version__
from alicorn.advisories.model import Advisory
from alicorn.match.matcher import NOTHING_FOUND
from alicorn.match.model import Finding, Scan
from alicorn.report.interface import Reporter
from alicorn.report.json_ import advisory_url, is_security, level, ordered, purl_of

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/" \
    "sarif-schema-2.1.0.json"
ROOT_BASE = "ROOTFS"

_SECURITY_SEVERITY = {"Critical": "9.5", "Important": "8.0", "Moderate": "5.5", "Low": "2.0"}
# An unknown severity is a warning, not a note: it may well be serious.
_RESULT_LEVEL = {"Critical": "error", "Important": "error", "Moderate": "warning",
                 "Low": "note", "Unknown": "warning"}


def _text(value: str) -> dict[str, str]:
    return {"text": value}


def _rule(advisory: Advisory) -> dict[str, Any]:
    name = level(advisory.severity)
    props: dict[str, Any] = {
        "tags": ["security" if is_security(advisory) else advisory.type, *advisory.cves],
        "severity": advisory.severity,
        "aliases": list(advisory.aliases),
    }
    if is_security(advisory) and name in _SECURITY_SEVERITY:
        props["security-severity"] = _SECURITY_SEVERITY[name]
    rule: dict[str, Any] = {
        "id": advisory.id,
        "shortDescription": _text(advisory.title or advisory.id),
        "defaultConfiguration": {"level": _RESULT_LEVEL[name]},
        "properties": props,
    }
    if advisory.description:
        rule["fullDescription"] = _text(advisory.description)
    url = advisory_url(advisory)
    if url:
        rule["helpUri"] = url
    return rule


def _message(f: Finding) -> str:
    p = f.package
    cves = f" ({', '.join(f.cves)})" if f.cves else ""
    fix = f"fixed in {f.fixed_version}" if f.fixed_version else "no fixed version yet"
    if f.update:
        fix += f" (update {f.update})"
    return f"{p.type} package {p.name} {p.version} is affected by {f.advisory.id}{cves}; {fix}"


def _result(f: Finding, scan: Scan, rule_index: int) -> dict[str, Any]:
    purl = purl_of(f.package, scan.inventory)
    location: dict[str, Any] = {
        "logicalLocations": [{"name": f.package.name, "fullyQualifiedName": purl,
                              "kind": "package"}],
    }
    if f.package.path:
        location["physicalLocation"] = {"artifactLocation": {
            "uri": quote(f.package.path.lstrip("/"), safe="/!"), "uriBaseId": ROOT_BASE}}
    fingerprint = hashlib.sha256(f"{f.advisory.id}\0{purl}".encode()).hexdigest()
    return {
        "ruleId": f.advisory.id,
        "ruleIndex": rule_index,
        "level": _RESULT_LEVEL[level(f.advisory.severity)],
        "message": _text(_message(f)),
        "locations": [location],
        "partialFingerprints": {"alicornFinding/v1": fingerprint},
        "properties": {"package": {"name": f.package.name, "version": f.package.version,
                                   "type": f.package.type, "purl": purl},
                       "fixed_version": f.fixed_version, "cves": list(f.cves)},
    }


def run_of(scan: Scan) -> dict[str, Any]:
    """The SARIF run of one target's scan."""
    findings = ordered(scan.findings)
    advisories = {f.advisory.id: f.advisory for f in findings}
    rule_ids = sorted(advisories)
    index = {rid: i for i, rid in enumerate(rule_ids)}
    inv = scan.inventory
    notifications = [{"level": "error", "message": _text(
        f"nothing scanned: {e}" if e == NOTHING_FOUND
        else f"could not read {e}; findings may be missing")} for e in inv.errors]
    notifications += [{"level": "warning", "message": _text(
        f"{u.packages} {u.type} package(s) not checked: {u.reason}")} for u in scan.unchecked]
    notifications += [{"level": "warning", "message": _text(w)}
                      for w in inv.warnings]
    invocation: dict[str, Any] = {"executionSuccessful": scan.complete}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return {
        "tool": {"driver": {
            "name": "alicorn",
            "version": __version__,
            "semanticVersion": __version__,
            "rules": [_rule(advisories[rid]) for rid in rule_ids],
        }},
        "invocations": [invocation],
        "originalUriBaseIds": {ROOT_BASE: {"description": _text(
            f"the root filesystem of {inv.target} ({inv.kind})")}},
        "results": [_result(f, scan, index[f.advisory.id]) for f in findings],
        "properties": {"target": inv.target, "kind": inv.kind, "digest": inv.digest,
                       "complete": scan.complete, "packages_scanned": len(inv.packages),
                       "packages_checked": scan.checked},
    }


class SarifReporter(Reporter):
    """A SARIF 2.1.0 log with one run per target."""

    name = "sarif"

    def render(self, scans: Sequence[Scan]) -> str:
        log = {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION,
               "runs": [run_of(s) for s in scans]}
        return json.dumps(log, indent=2, sort_keys=True, ensure_ascii=False)
