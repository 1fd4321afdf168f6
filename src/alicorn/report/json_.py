"""The JSON report, and the one view of a finding that every report format derives from.

``alicorn scan TARGET --json`` prints ONE object for one target (the command-line contract:
at least ``target`` and ``findings``); several targets print ``{"scans": [...]}``.  The
output is a single line (scripts read the last line of stdout) with sorted keys, and the
findings are in a stable order: by package, then advisory.

The helpers here (:func:`ordered`, :func:`level`, :func:`advisory_url`, :func:`purl_of`,
:func:`finding_record`) are shared by the text, SARIF and VEX reporters, so that every format
names the same severity, URL and package identity for a finding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from packageurl import PackageURL

from alicorn.advisories.model import Advisory
from alicorn.inventory.model import Inventory, Package
from alicorn.match.model import Finding, Scan
from alicorn.report.interface import Reporter

#: Severity levels, most severe first, named as dnf names them (``--sec-severity``).
LEVELS = ("Critical", "Important", "Moderate", "Low", "Unknown")

# Every feed's word for a severity -> the level.  Fedora/Red Hat write Critical/Important/
# Moderate/Low, GitHub CRITICAL/HIGH/MODERATE/LOW, Debian high/medium/low/unimportant.
_LEVEL_OF = {
    "critical": "Critical",
    "important": "Important",
    "high": "Important",
    "moderate": "Moderate",
    "medium": "Moderate",
    "low": "Low",
    "minor": "Low",
    "negligible": "Low",
    "unimportant": "Low",
}


def level(severity: str | None) -> str:
    """The severity level (one of :data:`LEVELS`) of a feed's severity word; ``Unknown`` when
    the feed gives none (``None``, ``""``, ``"None"``, ``"Unspecified"``) or one we do not
    know, so that it is never mistaken for a low one."""
    return _LEVEL_OF.get((severity or "").strip().lower(), "Unknown")


def level_rank(name: str) -> int:
    """0 for Critical ... 4 for Unknown: sorts the most severe first."""
    return LEVELS.index(name) if name in LEVELS else len(LEVELS) - 1


def is_security(advisory: Advisory) -> bool:
    return advisory.type.strip().lower() == "security"


def package_key(pkg: Package) -> tuple[str, str, str, str, str]:
    return (pkg.name, pkg.type, pkg.version, pkg.arch or "", pkg.path or "")


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Findings in the order every report lists them: by package, then advisory."""
    return sorted(findings, key=lambda f: (*package_key(f.package), f.advisory.id,
                                           f.fixed_version or "", f.update or ""))


def advisory_url(advisory: Advisory) -> str | None:
    """Where a person reads the advisory: its own page (updateinfo's ``self`` reference),
    else the page its id names (GitHub, OSV, Debian's tracker), else its first ``ADVISORY``
    reference, else its first link.  (An OSV record's ``ADVISORY`` references are mostly
    other vendors' advisories — NVD, Red Hat — so the id's own page comes first.)"""
    own = next((r.href for r in advisory.references if r.type.lower() == "self" and r.href),
               None)
    return own or _id_url(advisory.id, advisory.format) or next(
        (r.href for r in advisory.references if r.type.lower() == "advisory" and r.href),
        None) or next((r.href for r in advisory.references if r.href), None)


def _id_url(ident: str, fmt: str) -> str | None:
    upper = ident.upper()
    safe = quote(ident, safe="")
    if upper.startswith("GHSA-"):
        return f"https://github.com/advisories/{safe}"
    if upper.startswith(("DSA-", "DLA-")):
        return f"https://security-tracker.debian.org/tracker/{safe}"
    if upper.startswith("CVE-"):
        return f"https://nvd.nist.gov/vuln/detail/{safe}"
    # Not rubysec: its ids ("rack/CVE-2024-1") are the database's file names, which osv.dev
    # does not know; its own ``url`` (an ADVISORY reference) is the page.
    if fmt == "osv" or upper.startswith(("PYSEC-", "RUSTSEC-", "GO-", "OSV-")):
        return f"https://osv.dev/vulnerability/{safe}"
    return None


def alias_url(ident: str) -> str | None:
    """The page of another id of an advisory (a CVE at NVD, a GHSA at GitHub, ...)."""
    return _id_url(ident, "")


def purl_of(pkg: Package, inventory: Inventory | None = None) -> str:
    """The package's purl: the one its source recorded, else one made from its fields (the
    distro's id as the rpm/deb namespace, the Maven group as the maven namespace)."""
    if pkg.purl:
        return pkg.purl
    namespace: str | None = None
    qualifiers: dict[str, str] = {}
    name = pkg.name
    if pkg.type in ("rpm", "deb"):
        distro = inventory.distro if inventory else None
        namespace = distro.id if distro else None
        if pkg.arch:
            qualifiers["arch"] = pkg.arch
        if pkg.type == "rpm" and pkg.epoch:
            qualifiers["epoch"] = str(pkg.epoch)
        if distro and distro.version_id:
            qualifiers["distro"] = f"{distro.id}-{distro.version_id}"
    elif pkg.type == "maven":
        group, sep, artifact = pkg.name.partition(":")
        namespace, name = (group, artifact) if sep else (pkg.group, pkg.name)
    elif pkg.type == "npm" and pkg.name.startswith("@") and "/" in pkg.name:
        namespace, name = pkg.name.split("/", 1)
    version = pkg.version
    if pkg.type == "rpm" and ":" in version.split("-", 1)[0]:
        version = version.split(":", 1)[1]  # the epoch is a qualifier in rpm purls
    try:
        return str(PackageURL(type=pkg.type, namespace=namespace, name=name, version=version,
                              qualifiers=qualifiers or None).to_string())
    except ValueError:
        # A package type purl does not know: a stable, readable id is still better than none.
        return f"pkg:generic/{quote(pkg.name, safe='')}@{quote(pkg.version, safe='')}"


def package_record(pkg: Package, inventory: Inventory | None = None) -> dict[str, Any]:
    return {
        "name": pkg.name,
        "version": pkg.version,
        "type": pkg.type,
        # The contract: the source package for rpm/deb, null for everything else.
        "source": pkg.source if pkg.type in ("rpm", "deb") else None,
        "arch": pkg.arch,
        "purl": purl_of(pkg, inventory),
        "path": pkg.path,
    }


def finding_record(f: Finding, inventory: Inventory | None = None) -> dict[str, Any]:
    """One finding as the JSON report (and ``dnf list-security --json``'s modules) print it."""
    a = f.advisory
    return {
        "advisory": a.id,
        "aliases": list(a.aliases),
        "cves": list(a.cves),
        "bugzilla": list(a.bugzilla_ids),
        "severity": a.severity,
        "severity_level": level(a.severity),
        "type": a.type,
        "title": a.title,
        "url": advisory_url(a),
        "package": package_record(f.package, inventory),
        "fixed_version": f.fixed_version,
        "update": f.update,
    }


def summary(findings: Iterable[Finding]) -> dict[str, int]:
    """How many distinct security advisories of each level apply (every level, zeros too)."""
    seen: dict[str, str] = {}
    for f in findings:
        if is_security(f.advisory):
            seen.setdefault(f.advisory.id, level(f.advisory.severity))
    counts = dict.fromkeys(LEVELS, 0)
    for name in seen.values():
        counts[name] += 1
    return counts


def scan_record(scan: Scan) -> dict[str, Any]:
    """The JSON object of one target's scan."""
    inv = scan.inventory
    distro = None
    if inv.distro is not None:
        d = inv.distro
        distro = {"id": d.id, "version_id": d.version_id, "id_like": list(d.id_like),
                  "pretty_name": d.pretty_name, "codename": d.codename}
    return {
        "target": inv.target,
        "kind": inv.kind,
        "name": inv.name,
        "digest": inv.digest,
        "distro": distro,
        "complete": scan.complete,
        "errors": list(inv.errors),
        "warnings": list(inv.warnings),
        "packages_scanned": len(inv.packages),
        # Packages of a type no advisory covered (a Debian root without Debian advisories):
        # not checked, so an empty "findings" says nothing about them.
        "packages_checked": scan.checked,
        "unchecked": [{"type": u.type, "packages": u.packages, "reason": u.reason}
                      for u in scan.unchecked],
        "summary": summary(scan.findings),
        "findings": [finding_record(f, inv) for f in ordered(scan.findings)],
    }


class JsonReporter(Reporter):
    """One JSON object per target; ``{"scans": [...]}`` for several."""

    name = "json"

    def render(self, scans: Sequence[Scan]) -> str:
        records = [scan_record(s) for s in scans]
        document: dict[str, Any] = records[0] if len(records) == 1 else {"scans": records}
        return json.dumps(document, sort_keys=True, ensure_ascii=False)
