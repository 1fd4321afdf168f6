"""Read Bodhi's JSON update records (Fedora and EPEL updates, as ``bodhi.fedoraproject.org``
serves them): one record, ``{"update": {...}}`` (``GET /updates/<alias>``), or a page of the
API's ``{"updates": [...]}`` (``GET /updates/?...``), or a plain list of records.

The values follow what Bodhi itself writes into ``updateinfo.xml`` for the same update, so an
update read here and the same update read from a repository agree:

* ``id`` is the ``alias`` (``FEDORA-2023-6d4055d482``); ``title`` is the ``display_name`` when
  set, else Bodhi's ``title`` (the builds' NVRs); ``description`` is ``notes``.
* ``issued`` is ``date_pushed`` (``date_submitted`` for an update not pushed yet); ``updated``
  is the latest of ``date_modified``, ``date_pushed`` and ``date_stable``.
* ``severity`` is Bodhi's, capitalised (``medium`` → ``Medium``); ``unspecified`` → None.
* references: the update's page (``self``), each bug (``bugzilla``, with its title), and each
  CVE named in a bug title, the ``display_name`` or the ``title`` (``cve``).
* each ``builds[].nvr`` is a :class:`PackageRef`, split at its last two dashes; the epoch is
  the build's ``epoch`` (``null`` → ``0``).  The arch is ``""``: a Bodhi update names source
  builds (koji NVRs), and every binary package of every arch built from them carries the fix;
  ``src`` is the source RPM's file name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from alicorn.advisories.documents import DocumentReader, load_document
from alicorn.advisories.interface import FeedResult
from alicorn.advisories.model import Advisory, FeedError, PackageRef, Reference
from alicorn.advisories.updateinfo import parse_date

__all__ = ["BodhiReader", "parse_bodhi", "split_nvr"]

_CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b", re.IGNORECASE)
_BUGZILLA = "https://bugzilla.redhat.com/show_bug.cgi?id={}"
_SNIFF_ALIAS = re.compile(rb'"alias"\s*:\s*"[A-Z][A-Z0-9-]*-\d{4}-[0-9a-f]+"')
_SNIFF_BUILDS = re.compile(rb'"(builds|updates|update)"\s*:')


def parse_bodhi(data: bytes, *, source: str) -> FeedResult:
    """Every update in a Bodhi JSON document (``format="bodhi"``).

    A record without an ``alias`` is skipped with a warning; a document that holds no Bodhi
    update at all is a :class:`FeedError`.
    """
    document = load_document(data, source=source, yaml_ok=False)
    if isinstance(document, dict) and isinstance(document.get("updates"), list):
        records: list[Any] = document["updates"]
    elif isinstance(document, dict) and isinstance(document.get("update"), dict):
        records = [document["update"]]
    elif isinstance(document, list):
        records = document
    else:
        records = [document]
    if not all(isinstance(r, dict) and ("alias" in r or "builds" in r) for r in records):
        raise FeedError("not a Bodhi update record: expected objects with \"alias\" and "
                        "\"builds\", or a page with \"updates\": [...]", where=source)
    warnings: list[str] = []
    advisories = []
    for position, record in enumerate(records, start=1):
        advisory = _advisory(record, source=source, position=position, warnings=warnings)
        if advisory is not None:
            advisories.append(advisory)
    return FeedResult(tuple(advisories), tuple(warnings))


def split_nvr(nvr: str) -> tuple[str, str, str] | None:
    """``"httpd-2.4.55-1.fc36"`` → ``("httpd", "2.4.55", "1.fc36")``; None if not N-V-R."""
    parts = nvr.strip().rsplit("-", 2)
    if len(parts) != 3 or not all(parts):
        return None
    name, version, release = parts
    return name, version, release


def _str(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _advisory(record: Mapping[str, Any], *, source: str, position: int,
              warnings: list[str]) -> Advisory | None:
    alias = _str(record.get("alias"))
    if not alias:
        warnings.append(f"{source}: update #{position} has no \"alias\"; skipped")
        return None
    label = f"{source}: {alias}"
    dates = {k: _date(record.get(k), field=k, label=label, warnings=warnings)
             for k in ("date_submitted", "date_pushed", "date_modified", "date_stable")}
    latest = [d for d in (dates["date_modified"], dates["date_pushed"], dates["date_stable"])
              if d is not None]
    severity = _str(record.get("severity"))
    release = record.get("release")
    packages = tuple(_packages(record.get("builds"), label=label, warnings=warnings))
    if not packages:
        warnings.append(f"{label}: no usable builds; the update names no package")
    return Advisory(
        id=alias,
        type=_str(record.get("type")) or "unknown",
        severity=None if severity.lower() in ("", "unspecified", "none") else
        severity.capitalize(),
        title=_str(record.get("display_name")) or _str(record.get("title")),
        description=_str(record.get("notes")),
        issued=dates["date_pushed"] or dates["date_submitted"],
        updated=max(latest) if latest else None,
        release=_str(release.get("name")) or None if isinstance(release, dict) else None,
        status=_str(record.get("status")) or None,
        references=tuple(_references(record, alias=alias)),
        packages=packages,
        source=source,
        format="bodhi",
    )


def _date(value: object, *, field: str, label: str, warnings: list[str]) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = parse_date(value) if isinstance(value, str) else None
    if parsed is None:
        warnings.append(f"{label}: unreadable {field} {value!r}; left empty")
    return parsed


def _references(record: Mapping[str, Any], *, alias: str) -> Iterator[Reference]:
    url = _str(record.get("url")) or f"https://bodhi.fedoraproject.org/updates/{alias}"
    yield Reference(type="self", id=alias, href=url,
                    title=_str(record.get("title")) or None)
    texts = [_str(record.get("display_name")), _str(record.get("title"))]
    bugs = record.get("bugs")
    for bug in bugs if isinstance(bugs, list) else []:
        if not isinstance(bug, dict):
            continue
        bug_id = bug.get("bug_id")
        if isinstance(bug_id, int | str) and str(bug_id).strip():
            title = _str(bug.get("title"))
            texts.append(title)
            yield Reference(type="bugzilla", id=str(bug_id).strip(),
                            href=_BUGZILLA.format(str(bug_id).strip()), title=title or None)
    cves = dict.fromkeys(m.upper() for text in texts for m in _CVE.findall(text))
    for cve in cves:
        yield Reference(type="cve", id=cve, href=None, title=cve)


def _packages(builds: object, *, label: str, warnings: list[str]) -> Iterator[PackageRef]:
    for build in builds if isinstance(builds, list) else []:
        nvr = _str(build.get("nvr")) if isinstance(build, dict) else ""
        parts = split_nvr(nvr) if nvr else None
        if parts is None:
            warnings.append(f"{label}: build {build!r} has no name-version-release; skipped")
            continue
        kind = _str(build.get("type")) or "rpm"
        if kind != "rpm":
            # module and container builds are not RPMs an rpmdb holds; kept out of packages
            warnings.append(f"{label}: build {nvr} is of type {kind!r}, not rpm; skipped")
            continue
        epoch = build.get("epoch")
        name, version, release = parts
        yield PackageRef(name=name, epoch=str(epoch) if isinstance(epoch, int) else "0",
                         version=version, release=release, arch="",
                         src=f"{nvr}.src.rpm")


def sniff_bodhi(head: bytes) -> bool:
    """True when ``head`` looks like Bodhi JSON (an update ``alias`` and builds/updates)."""
    text = head.lstrip()
    return text[:1] in (b"{", b"[") and bool(_SNIFF_ALIAS.search(text)
                                             and _SNIFF_BUILDS.search(text))


class BodhiReader(DocumentReader):
    """Bodhi update records in JSON."""

    name = "bodhi"

    def sniff(self, path: Path, head: bytes) -> bool:
        return sniff_bodhi(head)

    def parse(self, data: bytes, *, source: str) -> FeedResult:
        """The updates of ``data`` (already decompressed)."""
        return parse_bodhi(data, source=source)
