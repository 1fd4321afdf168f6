"""Read OSV, the Open Source Vulnerability format: JSON (osv.dev, GitHub advisories) and YAML
(the PyPA advisory database), one object or a list per file, or a ``.zip`` of them (osv.dev's
``all.zip``).

OSV is the hub of the structured-text feeds, so this module also holds the safe loading that
:mod:`~alicorn.advisories.rubysec` and :mod:`~alicorn.advisories.bodhi` share: a size cap before
anything is read, decompression with a cap, YAML without aliases (no "billion laughs") and
without implicit typing (``1.10`` stays the version ``"1.10"``, not the float ``1.1``), and JSON
whose nesting bomb is an error instead of a crash.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from alicorn.advisories.documents import (
    DEFAULT_MAX_SIZE,
    DocumentReader,
    load_document,
    read_input,
)
from alicorn.advisories.interface import FeedResult
from alicorn.advisories.model import Advisory, Affected, FeedError, Range, Reference
from alicorn.advisories.updateinfo import parse_date

__all__ = [
    "ECOSYSTEMS",
    "OsvReader",
    "canonical_ecosystem",
    "osv_advisory",
    "parse_osv",
    "parse_osv_zip",
]

# osv.dev's all.zip of the biggest ecosystem holds a few hundred thousand members.
MAX_ZIP_MEMBERS = 1_000_000
MAX_ZIP_TOTAL = 8 * 1024 * 1024 * 1024

# OSV's ecosystem names (https://ossf.github.io/osv-schema/#affectedpackage-field), plus Fedora.
# The part before the first ":" is the ecosystem; the rest is its release ("Debian:12",
# "Alpine:v3.19", "Ubuntu:22.04:LTS", "Red Hat:enterprise_linux:9::appstream").
ECOSYSTEMS = (
    "AlmaLinux", "Alpaquita", "Alpine", "Android", "Azure Linux", "BellSoft Hardened Containers",
    "Bioconductor", "Bitnami", "Chainguard", "CleanStart", "ConanCenter", "CRAN", "crates.io",
    "Debian", "Docker Hardened Images", "Echo", "Fedora", "GHC", "GitHub Actions", "Go",
    "Hackage", "Hex", "Julia", "Linux", "Mageia", "Maven", "MinimOS", "npm", "NuGet", "opam",
    "openEuler", "openSUSE", "OSS-Fuzz", "Packagist", "Photon OS", "Pub", "PyPI", "Red Hat",
    "Rocky Linux", "RubyGems", "SUSE", "SwiftURL", "Ubuntu", "VSCode", "Wolfi",
)
_ECOSYSTEM_BY_LOWER = {e.lower(): e for e in ECOSYSTEMS}
_EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")

_JSON_OSV = re.compile(rb'"id"\s*:\s*"[^"]+"')
# Another OSV key beside "id" (in any order: "modified" may follow a 100 KiB "versions" list,
# past the sniffed head); Bodhi's "alias" is not "aliases", rubysec has none of them.
_JSON_MODIFIED = re.compile(rb'"(modified|published|aliases|affected|details|summary|'
                            rb'schema_version|withdrawn)"\s*:')
_YAML_ID = re.compile(rb"^id:[ \t]*\S", re.MULTILINE)
_YAML_MODIFIED = re.compile(rb"^(modified|published|aliases|affected|details|summary|"
                            rb"schema_version|withdrawn):", re.MULTILINE)
_ZIP = b"PK\x03\x04"
_YAML_SUFFIXES = (".yaml", ".yml")
_DOCUMENT_SUFFIXES = (".json", *_YAML_SUFFIXES)

def canonical_ecosystem(name: object) -> str | None:
    """OSV's spelling of an ecosystem (``"pypi"`` → ``"PyPI"``, ``"debian:12"`` →
    ``"Debian:12"``), or None when it is empty or not an ecosystem OSV knows."""
    if not isinstance(name, str) or not name.strip():
        return None
    base, sep, release = name.strip().partition(":")
    canonical = _ECOSYSTEM_BY_LOWER.get(base.strip().lower())
    if canonical is None:
        return None
    return f"{canonical}{sep}{release}"


# -- OSV --------------------------------------------------------------------------------------


def parse_osv(data: bytes, *, source: str) -> FeedResult:
    """Every OSV record in ``data``: a JSON or YAML document holding one OSV object or a list.

    A record without an ``id``, or an affected entry with an unknown or empty ecosystem, is
    skipped with a warning naming ``source`` and the id; a document that is no OSV at all is
    a :class:`FeedError`.
    """
    document = load_document(data, source=source)
    records = document if isinstance(document, list) else [document]
    if not records or not all(isinstance(r, dict) for r in records) or not any(
            "id" in r for r in records):
        raise FeedError("not an OSV document: expected an object with \"id\" and "
                        "\"modified\", or a list of them", where=source)
    warnings: list[str] = []
    advisories = []
    for position, record in enumerate(records, start=1):
        advisory = osv_advisory(record, source=source, warnings=warnings, position=position)
        if advisory is not None:
            advisories.append(advisory)
    return FeedResult(tuple(advisories), tuple(warnings))


def parse_osv_zip(archive: Path | bytes, *, source: str, max_size: int = DEFAULT_MAX_SIZE,
                  max_members: int = MAX_ZIP_MEMBERS,
                  max_total: int = MAX_ZIP_TOTAL) -> FeedResult:
    """Every OSV record in a zip of OSV JSON/YAML files (osv.dev's ``all.zip``).

    Members are read in memory, never extracted, so their names cannot point anywhere; each is
    capped at ``max_size`` bytes, the archive at ``max_members`` members and ``max_total``
    bytes in all.  A member that is not OSV is a warning.
    """
    try:
        zf = zipfile.ZipFile(archive if isinstance(archive, Path) else io.BytesIO(archive))
    except (zipfile.BadZipFile, OSError) as e:
        raise FeedError(f"not a readable zip archive ({e})", where=source,
                        hint="the file is truncated or corrupt; download it again") from e
    warnings: list[str] = []
    advisories: list[Advisory] = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > max_members:
            raise FeedError(f"the archive has {len(members)} members, more than the cap of "
                            f"{max_members}", where=source)
        declared = sum(m.file_size for m in members)
        if declared > max_total:
            raise FeedError(f"the archive unpacks to {declared} bytes, more than the cap of "
                            f"{max_total}", where=source)
        documents = [m for m in members if m.filename.lower().endswith(_DOCUMENT_SUFFIXES)]
        if not documents:
            raise FeedError("the zip archive holds no .json or .yaml files: not OSV",
                            where=source)
        if len(documents) < len(members):
            # one line, not one per member: a wrong archive can hold thousands
            warnings.append(f"{source}: {len(members) - len(documents)} member(s) that are "
                            "not .json or .yaml skipped")
        total = 0
        for member in documents:
            where = f"{source}!{member.filename}"
            if member.file_size > max_size:
                warnings.append(f"{where}: {member.file_size} bytes, more than the "
                                f"{max_size}-byte cap; skipped")
                continue
            try:
                with zf.open(member) as f:
                    data = f.read(max_size + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise FeedError(f"member {member.filename!r} is corrupt ({e})", where=source,
                                hint="download the archive again") from e
            total += len(data)
            if len(data) > max_size or total > max_total:
                raise FeedError(f"member {member.filename!r} unpacks to more than its "
                                "declared size; refusing the archive (a zip bomb)",
                                where=source)
            try:
                result = parse_osv(data, source=where)
            except FeedError as e:
                warnings.append(f"{e.where}: {e.message}; skipped")
                continue
            advisories.extend(result.advisories)
            warnings.extend(result.warnings)
    return FeedResult(tuple(advisories), tuple(warnings))


def osv_advisory(record: Mapping[str, Any], *, source: str, warnings: list[str],
                 position: int = 1) -> Advisory | None:
    """One OSV object as an :class:`Advisory` (``format="osv"``); None, with a warning
    appended to ``warnings``, when it has no usable ``id``."""
    advisory_id = record.get("id")
    if not isinstance(advisory_id, str) or not advisory_id.strip():
        warnings.append(f"{source}: record #{position} has no \"id\"; skipped")
        return None
    advisory_id = advisory_id.strip()
    label = f"{source}: {advisory_id}"
    dates = {k: _date(record.get(k), field=k, label=label, warnings=warnings)
             for k in ("published", "modified", "withdrawn")}
    return Advisory(
        id=advisory_id,
        type="security",
        severity=_severity(record),
        title=_str(record.get("summary")),
        description=_str(record.get("details")),
        issued=dates["published"],
        updated=dates["modified"],
        release=None,
        status=None,
        references=tuple(_references(record.get("references"))),
        source=source,
        format="osv",
        aliases=tuple(a.strip() for a in _list(record.get("aliases"))
                      if isinstance(a, str) and a.strip()),
        affected=tuple(_affected(_checked_list(record.get("affected"), where=f"{label}: affected",
                                               warnings=warnings),
                                 label=label, warnings=warnings)),
        withdrawn=dates["withdrawn"],
    )


def _str(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _checked_list(value: object, *, where: str, warnings: list[str]) -> list[Any]:
    """``value`` when it is a list; absent is an empty one, and anything else is an empty
    one with a warning (a field of the wrong shape must not vanish without a word)."""
    if value is None or isinstance(value, list):
        return value or []
    warnings.append(f"{where} is not a list ({type(value).__name__}); ignored")
    return []


def _date(value: object, *, field: str, label: str, warnings: list[str]) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = parse_date(value) if isinstance(value, str) else None
    if parsed is None:
        warnings.append(f"{label}: unreadable {field} date {value!r}; left empty")
    return parsed


def _severity(record: Mapping[str, Any]) -> str | None:
    """GitHub's own rating (``database_specific.severity``) when given, else the qualitative
    rating of the CVSS v3 (or v4) base score of ``severity[]``."""
    specific = record.get("database_specific")
    if isinstance(specific, dict):
        rating = specific.get("severity")
        if isinstance(rating, str) and rating.strip():
            return rating.strip().capitalize()
    vectors = {s.get("type"): s.get("score") for s in _list(record.get("severity"))
               if isinstance(s, dict)}
    for kind in ("CVSS_V3", "CVSS_V4"):
        vector = vectors.get(kind)
        if isinstance(vector, str):
            rating = cvss_rating(vector)
            if rating is not None:
                return rating
    return None


def cvss_rating(vector: str) -> str | None:
    """The qualitative rating (Critical, High, Medium, Low) of a CVSS v3.x or v4.0 vector's
    base score; None for "None", or a vector the ``cvss`` library cannot read."""
    import cvss

    try:
        if vector.startswith("CVSS:4"):
            rating = str(cvss.CVSS4(vector).severity)
        elif vector.startswith("CVSS:3"):
            rating = str(cvss.CVSS3(vector).severities()[0])
        else:
            return None
    except (cvss.CVSSError, ValueError, KeyError, IndexError):
        return None
    return None if rating.lower() == "none" else rating


def _references(value: object) -> Iterator[Reference]:
    for ref in _list(value):
        if not isinstance(ref, dict):
            continue
        url = ref.get("url")
        if not isinstance(url, str) or not url.strip():
            continue
        url = url.strip()
        kind = _str(ref.get("type")).lower() or "web"
        bug = _bugzilla_id(url)
        if bug is not None:
            yield Reference(type="bugzilla", id=bug, href=url)
        else:
            yield Reference(type=kind, id="", href=url)


def _bugzilla_id(url: str) -> str | None:
    """The bug number of a Bugzilla link (``show_bug.cgi?id=N`` or ``/N``), or None."""
    parts = urlsplit(url)
    if "bugzilla" not in parts.netloc.lower():
        return None
    ids = parse_qs(parts.query).get("id")
    if ids and ids[0].strip():
        return ids[0].strip()
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    return last if last.isdigit() else ""


def _affected(value: object, *, label: str, warnings: list[str]) -> Iterator[Affected]:
    for index, entry in enumerate(_list(value)):
        where = f"{label}: affected[{index}]"
        if not isinstance(entry, dict):
            warnings.append(f"{where}: not an object; skipped")
            continue
        package = entry.get("package")
        if not isinstance(package, dict):
            warnings.append(f"{where}: \"package\" is not an object ({package!r:.60}); entry "
                            "skipped")
            continue
        written = package.get("ecosystem")
        ecosystem = canonical_ecosystem(written)
        if ecosystem is None:
            warnings.append(f"{where}: unknown ecosystem {written!r}; entry skipped")
            continue
        name = _str(package.get("name"))
        if not name:
            warnings.append(f"{where}: no package name; entry skipped")
            continue
        written_ranges = _checked_list(entry.get("ranges"), where=f"{where}: ranges",
                                       warnings=warnings)
        written_versions = _checked_list(entry.get("versions"), where=f"{where}: versions",
                                         warnings=warnings)
        ranges = tuple(_ranges(written_ranges, where=where, warnings=warnings))
        versions = tuple(v.strip() for v in written_versions if isinstance(v, str) and v.strip())
        if (written_ranges or written_versions) and not ranges and not versions:
            # What it said could not be read: kept, but it matches no version, and a person
            # must know that this advisory can find nothing for the package.
            warnings.append(f"{where}: no readable range or version left for {name}; it "
                            "matches no version")
        yield Affected(ecosystem=ecosystem, name=name, ranges=ranges, versions=versions)


def _ranges(value: object, *, where: str, warnings: list[str]) -> Iterator[Range]:
    for index, item in enumerate(_list(value)):
        if not isinstance(item, dict):
            warnings.append(f"{where}: ranges[{index}] is not an object; skipped")
            continue
        kind = _str(item.get("type")).upper()
        events: list[tuple[str, str]] = []
        written = _checked_list(item.get("events"), where=f"{where}: ranges[{index}].events",
                                warnings=warnings)
        for event in written:
            if not isinstance(event, dict) or len(event) != 1:
                warnings.append(f"{where}: ranges[{index}]: malformed event {event!r}; skipped")
                continue
            ((event_kind, version),) = event.items()
            if event_kind not in _EVENT_KINDS or not isinstance(version, str) or not version:
                warnings.append(f"{where}: ranges[{index}]: unknown event {event!r}; skipped")
                continue
            events.append((event_kind, version.strip()))
        if not kind or not events:
            what = "no type" if not kind else ("no readable event" if written else "no events")
            warnings.append(f"{where}: ranges[{index}] has {what}; skipped")
            continue
        yield Range(type=kind, events=tuple(events))


# -- the reader -------------------------------------------------------------------------------


def sniff_osv(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) looks like OSV JSON, OSV YAML or a zip."""
    if head.startswith(_ZIP):
        return True
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return bool(_JSON_OSV.search(text) and _JSON_MODIFIED.search(text))
    return bool(_YAML_ID.search(text) and _YAML_MODIFIED.search(text))


class OsvReader(DocumentReader):
    """OSV JSON and YAML files, and zips of them."""

    name = "osv"

    def sniff(self, path: Path, head: bytes) -> bool:
        return sniff_osv(head)

    def read(self, path: Path) -> FeedResult:
        try:
            with path.open("rb") as f:
                is_zip = f.read(4) == _ZIP
        except OSError as e:
            raise FeedError(f"cannot read the file: {e.strerror or e}", where=str(path)) from e
        if is_zip:
            return parse_osv_zip(path, source=str(path), max_size=self.max_size)
        return self.parse(read_input(path, max_size=self.max_size), source=str(path))

    def parse(self, data: bytes, *, source: str) -> FeedResult:
        """The records of ``data`` (already decompressed, or a zip archive's bytes)."""
        if data.startswith(_ZIP):
            return parse_osv_zip(data, source=source, max_size=self.max_size)
        return parse_osv(data, source=source)
