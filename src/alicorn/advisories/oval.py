"""Read OVAL 5 definitions (Red Hat, Debian, Ubuntu, SUSE and OpenSCAP write them) as
advisories: the import side; generating OVAL from updateinfo is another module's job.

Each ``patch`` or ``vulnerability`` definition is an advisory.  Its package tests are found by
walking its ``<criteria>``: an ``rpminfo_test`` whose state says ``evr`` *less than* ``E:V-R``
is a fixed RPM build (a :class:`PackageRef` in ``packages``; the arch comes from the state's
``<arch>``, one ref per arch of a ``a|b|c`` pattern, else ``""`` = any); a ``dpkginfo_test``
the same way is a Debian package fixed in that version (an :class:`Affected` of ecosystem
``Debian``, or ``Debian:N`` when the definition names one Debian release as its platform).
Tests of anything else (the release package, a signing key, a file) are conditions, not
packages, and are ignored.  XML goes through defusedxml, as :mod:`updateinfo` does.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from alicorn.advisories.documents import DEFAULT_MAX_SIZE, DocumentReader, decompress
from alicorn.advisories.interface import FeedResult
from alicorn.advisories.model import (
    Advisory,
    Affected,
    FeedError,
    PackageRef,
    Range,
    Reference,
)
from alicorn.advisories.updateinfo import _child, _children, _local, _parse_xml, parse_date

__all__ = ["OvalReader", "parse_oval"]

_ADVISORY_CLASSES = ("patch", "vulnerability")
# reference sources that are an advisory's own id rather than what it is about
_NOT_ADVISORY_SOURCES = {"CVE", "CPE", "CWE", "BUGZILLA", "URL", "WEB"}
_RH_ERRATUM = re.compile(r"^(RH[SBE]A-\d{4}:\d+)-\d+$")
_SEVERITY_IN_TITLE = re.compile(r"\((Critical|Important|Moderate|Low)\)\s*$", re.IGNORECASE)
_DEBIAN_PLATFORM = re.compile(r"^Debian GNU/Linux (\d+)\b")
_SIMPLE_ARCHES = re.compile(r"^\^?\(?([A-Za-z0-9_]+(?:\|[A-Za-z0-9_]+)*)\)?\$?$")
_OVAL_ROOT = re.compile(rb"<(?:[A-Za-z0-9_-]+:)?oval_definitions[\s>]")


def parse_oval(data: bytes, *, source: str, max_size: int = DEFAULT_MAX_SIZE) -> FeedResult:
    """The advisories of an OVAL definitions document (plain or compressed).

    Raises :class:`FeedError` for unsafe or malformed XML, or a root that is not
    ``<oval_definitions>``; a definition that cannot be used is a warning.
    """
    root = _parse_xml(decompress(data, source=source, max_size=max_size), source=source)
    if _local(root.tag) != "oval_definitions":
        raise FeedError(f"not an OVAL definitions document: the root element is "
                        f"<{_local(root.tag)}>, not <oval_definitions>", where=source)
    index = _Index(root)
    warnings: list[str] = []
    advisories: list[Advisory] = []
    other_classes: dict[str, int] = {}
    for definitions in _children(root, "definitions"):
        for definition in _children(definitions, "definition"):
            kind = (definition.get("class") or "").strip()
            if kind not in _ADVISORY_CLASSES:
                other_classes[kind or "(none)"] = other_classes.get(kind or "(none)", 0) + 1
                continue
            advisory = _advisory(definition, index, source=source, warnings=warnings)
            if advisory is not None:
                advisories.append(advisory)
    for kind, count in sorted(other_classes.items()):
        warnings.append(f"{source}: {count} definition(s) of class {kind!r} skipped (only "
                        "patch and vulnerability definitions are advisories)")
    return FeedResult(tuple(advisories), tuple(warnings))


class _Index:
    """The document's tests, objects and states by id."""

    def __init__(self, root: ET.Element):
        self.tests = _by_id(root, "tests")
        self.objects = _by_id(root, "objects")
        self.states = _by_id(root, "states")


def _by_id(root: ET.Element, section: str) -> dict[str, ET.Element]:
    return {e.get("id", ""): e for s in _children(root, section) for e in s if e.get("id")}


def _advisory(definition: ET.Element, index: _Index, *, source: str,
              warnings: list[str]) -> Advisory | None:
    definition_id = (definition.get("id") or "").strip()
    if not definition_id:
        warnings.append(f"{source}: a definition has no id; skipped")
        return None
    metadata = _child(definition, "metadata")
    if metadata is None:
        warnings.append(f"{source}: {definition_id}: no <metadata>; skipped")
        return None
    title = _text(metadata, "title")
    references = list(_references(metadata))
    advisory_id = _advisory_id(metadata) or definition_id
    advisory_meta = _child(metadata, "advisory")
    severity = _text(advisory_meta, "severity") if advisory_meta is not None else ""
    if not severity:
        match = _SEVERITY_IN_TITLE.search(title)  # "RHSA-2010:0449: ... update (Moderate)"
        severity = match.group(1).capitalize() if match else ""
    issued, updated = _dates(metadata)
    platform = _debian_platform(metadata)
    packages: list[PackageRef] = []
    affected: list[Affected] = []
    criteria = _child(definition, "criteria")
    for test in _tests(criteria, index) if criteria is not None else ():
        _package(test, index, platform=platform, packages=packages, affected=affected,
                 label=f"{source}: {definition_id}", warnings=warnings)
    if not packages and not affected:
        warnings.append(f"{source}: {definition_id}: no rpminfo or dpkginfo test with an "
                        "\"evr less than\" state; the advisory names no package")
    if advisory_meta is not None:
        references.extend(_redhat_refs(advisory_meta))
    return Advisory(
        id=advisory_id,
        type="security",
        severity=severity or None,
        title=title,
        description=_text(metadata, "description"),
        issued=issued,
        updated=updated,
        release=None,
        status=None,
        references=tuple(dict.fromkeys(references)),
        packages=tuple(dict.fromkeys(packages)),
        source=source,
        format="oval",
        aliases=(definition_id,) if advisory_id != definition_id else (),
        affected=tuple(dict.fromkeys(affected)),
    )


def _text(element: ET.Element | None, name: str) -> str:
    child = _child(element, name) if element is not None else None
    return (child.text or "").strip() if child is not None else ""


def _references(metadata: ET.Element) -> Iterator[Reference]:
    for ref in _children(metadata, "reference"):
        source = (ref.get("source") or "").strip()
        ref_id = (ref.get("ref_id") or "").strip()
        kind = "cve" if source.upper() == "CVE" else source.lower() or "other"
        if source.upper() in ("RHSA", "RHBA", "RHEA"):
            kind = "self"
        yield Reference(type=kind, id=ref_id, href=ref.get("ref_url"))


def _redhat_refs(advisory: ET.Element) -> Iterator[Reference]:
    """Red Hat's ``<advisory>`` also lists ``<cve>`` and ``<bugzilla>`` (with the bug title)."""
    for cve in _children(advisory, "cve"):
        name = (cve.text or "").strip()
        if name:
            yield Reference(type="cve", id=name, href=cve.get("href"))
    for bug in _children(advisory, "bugzilla"):
        bug_id = (bug.get("id") or "").strip()
        if bug_id:
            yield Reference(type="bugzilla", id=bug_id, href=bug.get("href"),
                            title=(bug.text or "").strip() or None)


def _advisory_id(metadata: ET.Element) -> str | None:
    """The erratum a definition stands for (``RHSA-2010:0449``, ``DSA-5000-1``), if any.

    Red Hat's OVAL writes ``RHSA-2010:0449-01``; its updateinfo says ``RHSA-2010:0449``, the
    id dnf shows, so the revision suffix is dropped.
    """
    for ref in _children(metadata, "reference"):
        source = (ref.get("source") or "").strip().upper()
        ref_id = (ref.get("ref_id") or "").strip()
        if ref_id and source and source not in _NOT_ADVISORY_SOURCES:
            match = _RH_ERRATUM.match(ref_id)
            return match.group(1) if match else ref_id
    return None


def _dates(metadata: ET.Element) -> tuple[datetime | None, datetime | None]:
    advisory = _child(metadata, "advisory")
    if advisory is not None:
        issued = _child(advisory, "issued")
        updated = _child(advisory, "updated")
        return (parse_date(issued.get("date")) if issued is not None else None,
                parse_date(updated.get("date")) if updated is not None else None)
    debian = _child(metadata, "debian")
    if debian is not None:
        return parse_date(_text(debian, "date")), None
    return None, None


def _debian_platform(metadata: ET.Element) -> str:
    releases = {m.group(1) for affected in _children(metadata, "affected")
                for platform in _children(affected, "platform")
                if (m := _DEBIAN_PLATFORM.match((platform.text or "").strip()))}
    return f"Debian:{releases.pop()}" if len(releases) == 1 else "Debian"


def _tests(criteria: ET.Element, index: _Index) -> Iterator[ET.Element]:
    """Every test the criteria tree names, depth first (iteratively: a hostile file may nest
    deeply), following ``extend_definition`` no further (those are other definitions)."""
    stack = [criteria]
    while stack:
        node = stack.pop()
        name = _local(node.tag)
        if name == "criterion":
            test = index.tests.get(node.get("test_ref") or "")
            if test is not None:
                yield test
        elif name == "criteria":
            stack.extend(reversed(list(node)))


def _package(test: ET.Element, index: _Index, *, platform: str, packages: list[PackageRef],
             affected: list[Affected], label: str, warnings: list[str]) -> None:
    kind = _local(test.tag)
    if kind not in ("rpminfo_test", "dpkginfo_test"):
        return
    obj_ref = _child(test, "object")
    obj = index.objects.get(obj_ref.get("object_ref", "")) if obj_ref is not None else None
    name = _text(obj, "name") if obj is not None else ""
    for state_ref in _children(test, "state"):
        state = index.states.get(state_ref.get("state_ref", ""))
        if state is None:
            continue
        evr = _child(state, "evr")
        if evr is None or (evr.get("operation") or "equals").strip() != "less than":
            continue
        fixed = (evr.text or "").strip()
        if not name or not fixed:
            warnings.append(f"{label}: test {test.get('id')} has no package name or no "
                            "version; skipped")
            continue
        if kind == "dpkginfo_test":
            version = fixed[2:] if fixed.startswith("0:") else fixed
            affected.append(Affected(ecosystem=platform, name=name, ranges=(
                Range(type="ECOSYSTEM", events=(("introduced", "0"), ("fixed", version))),)))
            continue
        epoch, version, release = _split_evr(fixed)
        if not version or not release:
            warnings.append(f"{label}: {name}: evr {fixed!r} is not E:V-R; skipped")
            continue
        for arch in _arches(state):
            packages.append(PackageRef(name=name, epoch=epoch, version=version,
                                       release=release, arch=arch))


def _split_evr(evr: str) -> tuple[str, str, str]:
    epoch, sep, rest = evr.partition(":")
    if not sep:
        epoch, rest = "0", evr
    version, _, release = rest.rpartition("-")
    return epoch or "0", version, release


def _arches(state: ET.Element) -> tuple[str, ...]:
    arch = _child(state, "arch")
    text = (arch.text or "").strip() if arch is not None else ""
    if not text:
        return ("",)
    operation = (arch.get("operation") or "equals").strip() if arch is not None else ""
    if operation == "equals":
        return (text,)
    match = _SIMPLE_ARCHES.match(text) if operation == "pattern match" else None
    return tuple(match.group(1).split("|")) if match else ("",)


def sniff_oval(head: bytes) -> bool:
    """True when ``head`` looks like an OVAL definitions document."""
    if not head.lstrip().removeprefix(b"\xef\xbb\xbf").startswith(b"<"):
        return False
    return bool(_OVAL_ROOT.search(head))


class OvalReader(DocumentReader):
    """OVAL 5 definitions files."""

    name = "oval"

    def sniff(self, path: Path, head: bytes) -> bool:
        return sniff_oval(head)

    def parse(self, data: bytes, *, source: str) -> FeedResult:
        """The advisories of ``data``."""
        return parse_oval(data, source=source, max_size=self.max_size)
