"""OVAL 5.11 patch definitions from RPM advisories (updateinfo, Bodhi, imported OVAL).

Red Hat's OVAL style: one ``<definition class="patch">`` per advisory, its metadata (title,
``affected family="unix"`` with the release as platform, references ``SELF``/``CVE``/``BZ``,
description, and Red Hat's ``<advisory>`` block with severity, dates, CVEs and bugs), and
criteria that OR over the advisory's packages.  Each package is an AND of two
``linux-def:rpminfo_test``\\ s: "NAME.ARCH is installed" and "NAME.ARCH is earlier than E:V-R"
(``evr`` with ``datatype="evr_string"``, ``operation="less than"``: rpm's own comparison).

The semantics are dnf's (and :mod:`alicorn.match.matcher`'s), so that ``oscap oval eval`` with
this file, ``dnf updateinfo list`` and ``alicorn scan`` flag the same packages:

* the arch must be *the same* (libdnf compares arch ids; a noarch build does not update an
  x86_64 one).  The object collects the installed packages of the name, filtered to the arch
  (an ``oval-def:filter`` with an arch state);
* only the newest installed build of each name.arch counts: the "earlier than" test has
  ``check="all"``, so every installed build of that name.arch must be older than the fix —
  an older kernel installed beside a fixed one does not make the host vulnerable;
* an advisory package without an arch matches any arch, with ``check="at least one"``;
* packages listed in a module collection are left out: dnf applies them only when the module
  stream is enabled, which an offline check cannot know (the matcher assumes none is).  An
  advisory with nothing else is not exported, and :attr:`OvalExport.skipped` says so;
* withdrawn advisories and advisories without RPM packages (OSV and the like) are not exported.

Ids are deterministic: ``oval:org.alicorn:def:N`` with N from the sha256 of the advisory id
(tests, objects and states from the sha256 of what they check), so the same advisory keeps its
id from one export to the next; a collision takes the next hash of a counter.

**Evaluating against a root** (:func:`evaluate`): ``oscap-chroot ROOT oval eval`` runs the
rpminfo probe chrooted into ROOT; rpm's macro files (and ``~/.rpmmacros``) are read from the
host, and the database path is then taken inside ROOT.  Debian's rpm defines ``%_dbpath`` as
``%(bash -c 'echo ~/.rpmdb')``, whose shell runs inside the chroot and finds no bash (or the
wrong home), so no database: every rpminfo object is empty and every definition "false" — a
silent "nothing to update".  By hand, on Debian::

    mkdir -p /tmp/oscap-home
    echo '%_dbpath /usr/lib/sysimage/rpm' > /tmp/oscap-home/.rpmmacros
    HOME=/tmp/oscap-home oscap-chroot ROOT oval eval --results res.xml feed.oval.xml

:func:`evaluate` therefore runs oscap with a private ``HOME`` whose ``.rpmmacros`` sets
``%_dbpath`` to where the root keeps its database: ``/usr/lib/sysimage/rpm`` (Fedora 36 and
later, and roots Alicorn composes) or ``/var/lib/rpm`` (older releases).  Fedora ships
``var/lib/rpm -> ../../usr/lib/sysimage/rpm``; either path then works.  The path is looked up
inside the root with its own symlinks (alicorn.fs.resolve_in_root), never the host's.
"""

from __future__ import annotations

import hashlib
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from alicorn import proc
from alicorn.advisories.model import Advisory, PackageRef
from alicorn.errors import BadInput, ToolError
from alicorn.fs import resolve_in_root

OVAL_DEF = "http://oval.mitre.org/XMLSchema/oval-definitions-5"
OVAL_COMMON = "http://oval.mitre.org/XMLSchema/oval-common-5"
LINUX_DEF = "http://oval.mitre.org/XMLSchema/oval-definitions-5#linux"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NAMESPACE = "org.alicorn"
SCHEMA_VERSION = "5.11"
PRODUCT = "Alicorn advisory export"

# Characters XML 1.0 cannot carry at all; feeds are untrusted and may hold them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s\"<>\\^`{|}]+$")


@dataclass(frozen=True)
class OvalExport:
    """The OVAL document, how many definitions it holds, and the advisories left out (why)."""

    data: bytes
    definitions: int
    skipped: tuple[str, ...]


def render(advisories: Iterable[Advisory], *, timestamp: datetime | None = None) -> bytes:
    """The OVAL 5.11 document (UTF-8 XML) of the RPM advisories among ``advisories``."""
    return export(advisories, timestamp=timestamp).data


def export(advisories: Iterable[Advisory], *, timestamp: datetime | None = None) -> OvalExport:
    """:func:`render`, with the count of definitions and a note per advisory left out.

    ``timestamp`` is the generator's timestamp: by default ``SOURCE_DATE_EPOCH`` when set
    (reproducible output), else now.
    """
    doc = _Document()
    chosen, skipped = newest_per_id(advisories)
    for advisory in chosen:
        reason = doc.add(advisory)
        if reason:
            skipped.append(f"{advisory.id}: {reason}")
    return OvalExport(data=doc.serialise(_timestamp(timestamp)), definitions=doc.count,
                      skipped=tuple(skipped))


#: which feed's record of an advisory wins when several carry the same id and date: the
#: advisory's own feed before what others made of it
FORMAT_PREFERENCE = ("updateinfo", "bodhi", "osv", "debian", "rubysec", "oval")


def newest_per_id(advisories: Iterable[Advisory]) -> tuple[list[Advisory], list[str]]:
    """One advisory per id, in id order: the latest dated (``updated``, else ``issued``), then
    by :data:`FORMAT_PREFERENCE`; and a note for each one passed over.

    The store keeps each feed's record of an advisory (Bodhi's and updateinfo's, or an OVAL
    export imported back); an exported feed names each advisory once.
    """
    def rank(a: Advisory) -> tuple[datetime, int, str]:
        stamp = a.updated or a.issued
        if stamp is not None and stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        order = FORMAT_PREFERENCE.index(a.format) if a.format in FORMAT_PREFERENCE \
            else len(FORMAT_PREFERENCE)
        return (stamp or datetime.min.replace(tzinfo=UTC), -order, a.format)

    best: dict[str, Advisory] = {}
    notes: list[str] = []
    for advisory in advisories:
        current = best.get(advisory.id)
        if current is None:
            best[advisory.id] = advisory
            continue
        keep, drop = (advisory, current) if rank(advisory) > rank(current) \
            else (current, advisory)
        best[advisory.id] = keep
        notes.append(f"{drop.id}: the {drop.format} record; the {keep.format} one is exported")
    return [best[k] for k in sorted(best)], sorted(notes)


def _timestamp(value: datetime | None) -> datetime:
    if value is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
        value = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() \
            else datetime.now(UTC)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.replace(microsecond=0)


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def evr(ref: PackageRef) -> str:
    """``E:V-R`` with the epoch always written (0 when the feed gives none), as oscap and
    rpm compare ``evr_string`` values."""
    epoch = ref.epoch.strip() if ref.epoch and ref.epoch.strip() else "0"
    return f"{epoch}:{ref.version}-{ref.release}"


class _Ids:
    """Stable numbers per kind (def, tst, obj, ste): the sha256 of a key, collisions probed."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._taken: set[tuple[str, int]] = set()

    def get(self, kind: str, key: str) -> tuple[str, bool]:
        """The id of ``key`` and whether it is new."""
        known = self._by_key.get((kind, key))
        if known:
            return known, False
        for attempt in range(1000):
            seed = key if attempt == 0 else f"{key}\x00{attempt}"
            n = int(hashlib.sha256(f"{kind}:{seed}".encode()).hexdigest()[:13], 16) + 1
            if (kind, n) not in self._taken:
                break
        else:  # pragma: no cover - 1000 collisions of 52-bit numbers
            raise RuntimeError(f"no free OVAL id for {key!r}")
        self._taken.add((kind, n))
        ident = f"oval:{NAMESPACE}:{kind}:{n}"
        self._by_key[(kind, key)] = ident
        return ident, True


class _Document:
    def __init__(self) -> None:
        self.ids = _Ids()
        self.definitions: list[ET.Element] = []
        self.tests: list[ET.Element] = []
        self.objects: list[ET.Element] = []
        self.states: list[ET.Element] = []

    @property
    def count(self) -> int:
        return len(self.definitions)

    def add(self, advisory: Advisory) -> str | None:
        """Add ``advisory``'s definition; the reason when it is left out."""
        if advisory.withdrawn is not None:
            return "withdrawn"
        if not advisory.packages:
            return "no RPM packages (not an RPM advisory)"
        packages = [p for p in advisory.packages if not p.modules and p.name]
        if not packages:
            return "only packages of module streams, which OVAL cannot tell enabled"
        def_id, new = self.ids.get("def", f"{advisory.format}\x00{advisory.id}")
        if not new:
            return "already exported (the same id and format twice)"

        definition = ET.Element(_q(OVAL_DEF, "definition"),
                                {"class": "patch", "id": def_id, "version": "1"})
        definition.append(_metadata(advisory))
        criteria = ET.SubElement(definition, _q(OVAL_DEF, "criteria"), operator="OR")
        seen: set[tuple[str, str, str]] = set()
        for ref in packages:
            key = (ref.name, ref.arch, evr(ref))
            if key in seen:
                continue
            seen.add(key)
            both = ET.SubElement(criteria, _q(OVAL_DEF, "criteria"), operator="AND")
            label = f"{ref.name}.{ref.arch}" if ref.arch else ref.name
            ET.SubElement(both, _q(OVAL_DEF, "criterion"), comment=_text(f"{label} is installed"),
                          test_ref=self._installed_test(ref))
            ET.SubElement(both, _q(OVAL_DEF, "criterion"),
                          comment=_text(f"{label} is earlier than {evr(ref)}"),
                          test_ref=self._earlier_test(ref))
        self.definitions.append(definition)
        return None

    # -- tests, objects, states (shared between definitions) ------------------------------------

    def _object(self, ref: PackageRef) -> str:
        obj_id, new = self.ids.get("obj", f"{ref.name}\x00{ref.arch}")
        if new:
            obj = ET.Element(_q(LINUX_DEF, "rpminfo_object"), id=obj_id, version="1")
            ET.SubElement(obj, _q(LINUX_DEF, "name")).text = _text(ref.name)
            if ref.arch:
                ET.SubElement(obj, _q(OVAL_DEF, "filter"), action="include").text = \
                    self._arch_state(ref.arch)
            self.objects.append(obj)
        return obj_id

    def _arch_state(self, arch: str) -> str:
        ste_id, new = self.ids.get("ste", f"arch\x00{arch}")
        if new:
            state = ET.Element(_q(LINUX_DEF, "rpminfo_state"), id=ste_id, version="1")
            ET.SubElement(state, _q(LINUX_DEF, "arch"), datatype="string",
                          operation="equals").text = _text(arch)
            self.states.append(state)
        return ste_id

    def _evr_state(self, ref: PackageRef) -> str:
        ste_id, new = self.ids.get("ste", f"evr\x00{ref.arch}\x00{evr(ref)}")
        if new:
            state = ET.Element(_q(LINUX_DEF, "rpminfo_state"), id=ste_id, version="1")
            if ref.arch:
                # Redundant with the object's filter, but Red Hat's states carry the arch
                # beside the evr, and readers of OVAL (alicorn.advisories.oval) take it there.
                ET.SubElement(state, _q(LINUX_DEF, "arch"), datatype="string",
                              operation="equals").text = _text(ref.arch)
            ET.SubElement(state, _q(LINUX_DEF, "evr"), datatype="evr_string",
                          operation="less than").text = _text(evr(ref))
            self.states.append(state)
        return ste_id

    def _installed_test(self, ref: PackageRef) -> str:
        label = f"{ref.name}.{ref.arch}" if ref.arch else ref.name
        tst_id, new = self.ids.get("tst", f"installed\x00{ref.name}\x00{ref.arch}")
        if new:
            test = ET.Element(_q(LINUX_DEF, "rpminfo_test"), {
                "id": tst_id, "version": "1", "check": "at least one",
                "check_existence": "at_least_one_exists",
                "comment": _text(f"{label} is installed")})
            ET.SubElement(test, _q(LINUX_DEF, "object"), object_ref=self._object(ref))
            self.tests.append(test)
        return tst_id

    def _earlier_test(self, ref: PackageRef) -> str:
        label = f"{ref.name}.{ref.arch}" if ref.arch else ref.name
        tst_id, new = self.ids.get("tst", f"earlier\x00{ref.name}\x00{ref.arch}\x00{evr(ref)}")
        if new:
            test = ET.Element(_q(LINUX_DEF, "rpminfo_test"), {
                "id": tst_id, "version": "1",
                # Every installed build of the name.arch older: the newest is (dnf's rule).
                "check": "all" if ref.arch else "at least one",
                "check_existence": "at_least_one_exists",
                "comment": _text(f"{label} is earlier than {evr(ref)}")})
            ET.SubElement(test, _q(LINUX_DEF, "object"), object_ref=self._object(ref))
            ET.SubElement(test, _q(LINUX_DEF, "state"), state_ref=self._evr_state(ref))
            self.tests.append(test)
        return tst_id

    def serialise(self, timestamp: datetime) -> bytes:
        ET.register_namespace("", OVAL_DEF)
        ET.register_namespace("oval", OVAL_COMMON)
        ET.register_namespace("linux-def", LINUX_DEF)
        ET.register_namespace("xsi", XSI)
        root = ET.Element(_q(OVAL_DEF, "oval_definitions"), {
            _q(XSI, "schemaLocation"): (
                f"{OVAL_DEF} oval-definitions-schema.xsd "
                f"{LINUX_DEF} linux-definitions-schema.xsd "
                f"{OVAL_COMMON} oval-common-schema.xsd")})
        generator = ET.SubElement(root, _q(OVAL_DEF, "generator"))
        ET.SubElement(generator, _q(OVAL_COMMON, "product_name")).text = PRODUCT
        ET.SubElement(generator, _q(OVAL_COMMON, "schema_version")).text = SCHEMA_VERSION
        ET.SubElement(generator, _q(OVAL_COMMON, "timestamp")).text = timestamp.isoformat()
        # The schema allows each section to be absent but not empty.
        for name, items in (("definitions", self.definitions), ("tests", self.tests),
                            ("objects", self.objects), ("states", self.states)):
            if items:
                section = ET.SubElement(root, _q(OVAL_DEF, name))
                section.extend(items)
        ET.indent(root, space="  ")
        # Serialised to str and encoded once: ElementTree's own utf-8 writer encodes every
        # small write separately, twice as slow on a feed of 100k advisories.
        text = ET.tostring(root, encoding="unicode")
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text.encode("utf-8") + b"\n"


def _metadata(advisory: Advisory) -> ET.Element:
    metadata = ET.Element(_q(OVAL_DEF, "metadata"))
    title = advisory.title or advisory.id
    severity = f" ({advisory.severity})" if advisory.severity else ""
    ET.SubElement(metadata, _q(OVAL_DEF, "title")).text = \
        _text(f"{advisory.id}: {title}{severity}")
    affected = ET.SubElement(metadata, _q(OVAL_DEF, "affected"), family="unix")
    if advisory.release:
        ET.SubElement(affected, _q(OVAL_DEF, "platform")).text = _text(advisory.release)

    self_refs = [r for r in advisory.references if r.type.lower() == "self"]
    self_url = next((r.href for r in self_refs if r.href and _URL.fullmatch(r.href)), None)
    _reference(metadata, "SELF", advisory.id, self_url)
    for cve in advisory.cves:
        href = next((r.href for r in advisory.references if r.type.lower() == "cve"
                     and cve in (r.id.upper(), (r.title or "").upper())), None)
        _reference(metadata, "CVE", cve, href)
    for bug in advisory.bugzilla_ids:
        href = next((r.href for r in advisory.references
                     if r.type.lower() == "bugzilla" and r.id == bug), None)
        _reference(metadata, "BZ", bug, href)
    ET.SubElement(metadata, _q(OVAL_DEF, "description")).text = \
        _text(advisory.description or title)

    # Red Hat's advisory block (metadata ends in xsd:any, so the schema admits it).
    block = ET.SubElement(metadata, _q(OVAL_DEF, "advisory"))
    if advisory.severity:
        ET.SubElement(block, _q(OVAL_DEF, "severity")).text = _text(advisory.severity)
    for name, value in (("issued", advisory.issued), ("updated", advisory.updated)):
        if value is not None:
            ET.SubElement(block, _q(OVAL_DEF, name), date=value.date().isoformat())
    for cve in advisory.cves:
        ET.SubElement(block, _q(OVAL_DEF, "cve")).text = _text(cve)
    for ref in advisory.references:
        if ref.type.lower() == "bugzilla" and ref.id:
            attrs = {"id": _text(ref.id)}
            if ref.href and _URL.fullmatch(ref.href):
                attrs["href"] = _text(ref.href)
            ET.SubElement(block, _q(OVAL_DEF, "bugzilla"), attrs).text = \
                _text(ref.title or ref.id)
    return metadata


def _reference(metadata: ET.Element, source: str, ref_id: str, href: str | None) -> None:
    attrs = {"source": source, "ref_id": _text(ref_id)}
    if href and _URL.fullmatch(href):
        attrs["ref_url"] = _text(href)
    ET.SubElement(metadata, _q(OVAL_DEF, "reference"), attrs)


# -- evaluation with OpenSCAP ------------------------------------------------------------------

#: where rpm databases live in a root, newest convention first
RPMDB_PATHS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
_RPMDB_FILES = ("rpmdb.sqlite", "Packages.db", "Packages")
OVAL_RESULTS = "http://oval.mitre.org/XMLSchema/oval-results-5"


def rpmdb_path(root: Path) -> str:
    """The rpm database directory of ``root``, as an absolute path inside it.

    Raises :class:`BadInput` when the root holds no rpm database (an evaluation would then
    report every definition false: "no findings" that are not true).
    """
    for candidate in RPMDB_PATHS:
        directory = resolve_in_root(root, candidate)
        if any((directory / name).is_file() for name in _RPMDB_FILES):
            return "/" + candidate
    raise BadInput(f"no rpm database in {root}", where=str(root),
                   hint=f"expected one of {', '.join('/' + p for p in RPMDB_PATHS)}")


def evaluate(oval: Path, *, root: Path, workdir: Path) -> dict[str, str]:
    """Evaluate the OVAL file ``oval`` against the root filesystem ``root`` with
    ``oscap-chroot``; every definition id with its result (``true`` = the package is older
    than the advisory's fix: the root needs the update).  ``workdir`` receives the results
    file (``oval-results.xml``) and the private HOME for rpm's macros."""
    home = workdir / "oscap-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / ".rpmmacros").write_text(f"%_dbpath {rpmdb_path(root)}\n", encoding="utf-8")
    results = workdir / "oval-results.xml"
    proc.run([proc.which("oscap-chroot", package="openscap-utils"), str(root), "oval", "eval",
              "--results", str(results), str(oval)],
             env={"HOME": str(home), "LC_ALL": "C.UTF-8"}, what="oscap-chroot")
    return parse_results(results.read_bytes(), source=str(results))


def validate(oval: Path) -> None:
    """Check ``oval`` against the OVAL schemas and Schematron rules with ``oscap``; raises
    :class:`ToolError` with oscap's complaint when it is not valid."""
    oscap = proc.which("oscap", package="openscap-scanner")
    for extra in ([], ["--schematron"]):
        result = proc.run([oscap, "oval", "validate", *extra, str(oval)], check=False,
                          what="oscap oval validate")
        # oscap 1.3 exits 0 even for some invalid documents but then prints the errors.
        complaint = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or complaint:
            raise ToolError(f"{oval} is not valid OVAL: {complaint or 'oscap says so'}",
                            argv=result.args, returncode=result.returncode, output=complaint)


def parse_results(data: bytes, *, source: str) -> dict[str, str]:
    """``{definition id: result}`` of an OVAL results document (``oscap ... --results``)."""
    try:
        root = SafeET.fromstring(data)
    except (ET.ParseError, DefusedXmlException) as e:
        raise BadInput(f"not an OVAL results document: {e}", where=source) from e
    found: dict[str, str] = {}
    for element in root.iter(_q(OVAL_RESULTS, "definition")):
        ident, result = element.get("definition_id"), element.get("result")
        if ident and result:
            found[ident] = result
    return found
