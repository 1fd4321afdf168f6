"""OSV (schema 1.6) records from stored advisories.

**RPM advisories** (updateinfo, Bodhi, OVAL: those with ``packages``) become one record each,
with one ``affected`` entry per binary package name and fixed build: ecosystem from the
advisory's release, range ``ECOSYSTEM`` from ``introduced: "0"`` to ``fixed: [E:]V-R`` (the
epoch written only when it is not 0, as Fedora's and Red Hat's OSV data do), the arches in
``ecosystem_specific.arches``.  The ecosystem, in OSV's spelling:

* ``Fedora 40`` → ``Fedora:40``; ``Red Hat Enterprise Linux 9`` → ``Red Hat:enterprise_linux:9``;
* no release: ``Fedora`` for ``FEDORA-`` ids, ``Red Hat`` for ``RHSA-``/``RHBA-``/``RHEA-``;
* anything else (a Scientific Linux erratum, a test feed): OSV has no ecosystem for it, so
  the record is left out and :attr:`OsvExport.skipped` says so — unless the caller names one
  (``rpm_ecosystem=``).

Packages of module streams are left out (dnf applies them only with the stream enabled, which
OSV cannot express); so are withdrawn advisories (OSV would keep them with ``withdrawn``, but
a feed generated for scanning should not carry what no longer applies).

**Ecosystem advisories** (OSV, GitHub, rubysec, Debian) are written as they were: their
``affected`` with the ranges of OSV's types (``ECOSYSTEM``, ``SEMVER``, ``GIT``) and versions.
What OSV cannot say — rubysec's requirement expressions (``unaffected``) and ranges of other
types — goes to ``database_specific.alicorn`` so that nothing is lost silently.

CVE ids named in references go to ``aliases`` (OSV's place for them); the severity word of the
feed goes to ``database_specific.severity`` (GitHub's convention), since OSV's ``severity``
holds only CVSS vectors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alicorn.advisories.export_oval import newest_per_id
from alicorn.advisories.model import Advisory, Affected, PackageRef
from alicorn.errors import BadInput

SCHEMA_VERSION = "1.6.0"
OSV_RANGE_TYPES = ("ECOSYSTEM", "SEMVER", "GIT")

_FEDORA = re.compile(r"^\s*Fedora\s+(\d+)\s*$", re.IGNORECASE)
_RHEL = re.compile(r"^\s*Red\s*Hat\s+Enterprise\s+Linux\s+(\d+)\b", re.IGNORECASE)
_REF_TYPES = {"self": "ADVISORY", "cve": "ADVISORY", "bugzilla": "REPORT", "fix": "FIX",
              "package": "PACKAGE", "article": "ARTICLE", "report": "REPORT",
              "advisory": "ADVISORY", "web": "WEB", "discussion": "DISCUSSION",
              "detection": "DETECTION", "introduced": "INTRODUCED", "git": "GIT",
              "evidence": "EVIDENCE"}
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:+-]")


@dataclass(frozen=True)
class OsvExport:
    """The OSV records (JSON-ready dicts, in id order) and the advisories left out (why)."""

    records: tuple[dict[str, Any], ...]
    skipped: tuple[str, ...]


def render(advisories: Iterable[Advisory], *, rpm_ecosystem: str | None = None,
           timestamp: datetime | None = None) -> bytes:
    """The OSV records of ``advisories`` as one JSON list (UTF-8, indented, sorted keys).

    A lone surrogate (untrusted feeds carry them) is written as its ``\\u`` escape, which
    keeps the output valid UTF-8 and valid JSON."""
    result = export(advisories, rpm_ecosystem=rpm_ecosystem, timestamp=timestamp)
    return (json.dumps(list(result.records), indent=2, sort_keys=True, ensure_ascii=False)
            .encode("utf-8", "backslashreplace") + b"\n")


def export(advisories: Iterable[Advisory], *, rpm_ecosystem: str | None = None,
           timestamp: datetime | None = None) -> OsvExport:
    """One OSV record per advisory that OSV can express, and a note per one left out.

    ``rpm_ecosystem`` is the ecosystem of RPM advisories whose release says none (see the
    module docstring).  ``timestamp`` stands in for ``modified`` when an advisory has no date
    (OSV requires one): by default ``SOURCE_DATE_EPOCH`` when set, else now.
    """
    stamp = _timestamp(timestamp)
    records: list[dict[str, Any]] = []
    chosen, skipped = newest_per_id(advisories)
    for advisory in chosen:
        record, reason = _record(advisory, rpm_ecosystem=rpm_ecosystem, stamp=stamp)
        if record is None:
            skipped.append(f"{advisory.id}: {reason}")
        else:
            records.append(record)
    return OsvExport(tuple(records), tuple(skipped))


def write_directory(result: OsvExport, directory: Path) -> list[Path]:
    """Write each record of ``result`` to ``directory/<id>.json`` (OSV's layout); the paths.

    Ids come from feeds: characters a file name should not hold become ``_`` (so ``../x``
    cannot leave the directory), and a name taken twice (one id in two feeds) gets a counter.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"cannot create the output directory: {e.strerror or e}",
                       where=str(directory)) from e
    written: list[Path] = []
    taken: set[str] = set()
    for record in result.records:
        stem = _FILENAME_UNSAFE.sub("_", record["id"]).lstrip(".") or "advisory"
        name, n = f"{stem}.json", 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}.{n}.json"
        taken.add(name.lower())
        path = directory / name
        data = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False)
        try:
            path.write_bytes(data.encode("utf-8", "backslashreplace") + b"\n")
        except OSError as e:
            raise BadInput(f"cannot write {name}: {e.strerror or e}",
                           where=str(directory)) from e
        written.append(path)
    return written


def rpm_ecosystem_of(advisory: Advisory) -> str | None:
    """OSV's ecosystem for an RPM advisory, from its release or id; None when unknown."""
    release = advisory.release or ""
    if m := _FEDORA.match(release):
        return f"Fedora:{m.group(1)}"
    if m := _RHEL.match(release):
        return f"Red Hat:enterprise_linux:{m.group(1)}"
    ident = advisory.id.upper()
    if ident.startswith("FEDORA-"):
        return "Fedora"
    if ident.startswith(("RHSA-", "RHBA-", "RHEA-")):
        return "Red Hat"
    return None


def fixed_version(ref: PackageRef) -> str:
    """``[E:]V-R`` of ``ref``: the epoch only when it is not 0."""
    epoch = (ref.epoch or "").strip()
    vr = f"{ref.version}-{ref.release}" if ref.release else ref.version
    return f"{epoch}:{vr}" if epoch and epoch != "0" else vr


# -- one record ------------------------------------------------------------------------------


def _timestamp(value: datetime | None) -> datetime:
    if value is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
        value = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() \
            else datetime.now(UTC)
    return value


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat() + "Z"


def _record(advisory: Advisory, *, rpm_ecosystem: str | None,
            stamp: datetime) -> tuple[dict[str, Any] | None, str]:
    if advisory.withdrawn is not None:
        return None, "withdrawn"
    affected: list[dict[str, Any]] = []
    if advisory.packages:
        ecosystem = rpm_ecosystem_of(advisory) or rpm_ecosystem
        if ecosystem is None:
            return None, (f"no OSV ecosystem for the release {advisory.release!r}; "
                          "give one (--rpm-ecosystem)")
        affected = _rpm_affected(advisory, ecosystem)
        if not affected:
            return None, "only packages of module streams, which OSV cannot express"
    affected += [_ecosystem_affected(a) for a in advisory.affected]
    if not affected:
        return None, "names no package"

    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": advisory.id,
        "modified": _rfc3339(advisory.updated or advisory.issued or stamp),
    }
    if advisory.issued:
        record["published"] = _rfc3339(advisory.issued)
    aliases = dict.fromkeys(a for a in advisory.aliases if a != advisory.id)
    for cve in advisory.cves:
        if cve != advisory.id and cve.upper().startswith("CVE-"):
            aliases.setdefault(cve, None)
    if aliases:
        record["aliases"] = list(aliases)
    if advisory.title:
        record["summary"] = advisory.title
    if advisory.description:
        record["details"] = advisory.description
    record["affected"] = affected
    references = _references(advisory)
    if references:
        record["references"] = references
    specific: dict[str, Any] = {"format": advisory.format}
    if advisory.severity:
        specific["severity"] = advisory.severity
    if advisory.type != "security":
        specific["type"] = advisory.type
    if advisory.release:
        specific["release"] = advisory.release
    record["database_specific"] = specific
    return record, ""


def _rpm_affected(advisory: Advisory, ecosystem: str) -> list[dict[str, Any]]:
    by_fix: dict[tuple[str, str], list[str]] = {}
    for ref in advisory.packages:
        if ref.modules or not ref.name:
            continue
        arches = by_fix.setdefault((ref.name, fixed_version(ref)), [])
        if ref.arch and ref.arch not in arches:
            arches.append(ref.arch)
    out = []
    for (name, fixed), arches in by_fix.items():
        entry: dict[str, Any] = {
            "package": {"ecosystem": ecosystem, "name": name},
            "ranges": [{"type": "ECOSYSTEM",
                        "events": [{"introduced": "0"}, {"fixed": fixed}]}],
        }
        if arches:
            entry["ecosystem_specific"] = {"arches": arches}
        out.append(entry)
    return out


def _ecosystem_affected(affected: Affected) -> dict[str, Any]:
    entry: dict[str, Any] = {"package": {"ecosystem": affected.ecosystem, "name": affected.name}}
    ranges = [{"type": r.type, "events": [{kind: version} for kind, version in r.events]}
              for r in affected.ranges if r.type in OSV_RANGE_TYPES]
    if ranges:
        entry["ranges"] = ranges
    if affected.versions:
        entry["versions"] = list(affected.versions)
    others = [{"type": r.type, "events": [[k, v] for k, v in r.events]}
              for r in affected.ranges if r.type not in OSV_RANGE_TYPES]
    extra: dict[str, Any] = {}
    if others:
        extra["ranges"] = others
    if affected.unaffected:
        extra["unaffected"] = list(affected.unaffected)
    if extra:
        entry["database_specific"] = {"alicorn": extra}
    return entry


def _references(advisory: Advisory) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for ref in advisory.references:
        url = (ref.href or "").strip()
        if not url or url in seen or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", url):
            continue
        seen.add(url)
        out.append({"type": _REF_TYPES.get(ref.type.lower(), "WEB"), "url": url})
    return out
