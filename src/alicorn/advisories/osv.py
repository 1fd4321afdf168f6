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
import json
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from alicorn.advisories.interface import FeedReader, FeedResult
from alicorn.advisories.model import Advisory, Affected, FeedError, Range, Reference
from alicorn.advisories.updateinfo import _decompress, parse_date

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ECOSYSTEMS",
    "OsvReader",
    "canonical_ecosystem",
    "load_document",
    "osv_advisory",
    "parse_osv",
    "parse_osv_zip",
    "read_input",
]

# One advisory document (an OSV file, an updateinfo.xml, an OVAL file) larger than this,
# decompressed, is an attack or a mistake: the largest real ones (Fedora's updateinfo, Red Hat's
# OVAL of a whole release) are tens of MiB.
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
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

_BASE_LOADER: Any = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
MAX_YAML_DEPTH = 64  # OSV nests 5 levels deep, rubysec 3
_NOTHING = object()


# -- safe loading, shared by the JSON and YAML feeds ------------------------------------------


def read_input(path: Path, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The bytes of the feed file at ``path``, decompressed (gzip, bzip2, xz, zstd).

    The size is checked *before* the file is read, so a 100 GB file costs a ``stat``; the
    decompressed size is capped too.  Raises :class:`FeedError` naming ``path``.
    """
    where = str(path)
    try:
        with path.open("rb") as f:
            size = _file_size(f)
            if size > max_size:
                raise FeedError(f"the file is {size} bytes, more than the {max_size}-byte cap; "
                                "refusing it", where=where,
                                hint="an advisory feed file is never this large; check what it "
                                     "is (a genuine database is split into files, one per "
                                     "advisory, or zipped)")
            data = f.read(max_size + 1)
    except OSError as e:
        raise FeedError(f"cannot read the file: {e.strerror or e}", where=where) from e
    if len(data) > max_size:  # it grew while we read it
        raise FeedError(f"the file is larger than the {max_size}-byte cap", where=where)
    return decompress(data, source=where, max_size=max_size)


def decompress(data: bytes, *, source: str, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """``data`` decompressed if it is gzip/bzip2/xz/zstd (by magic bytes), capped at
    ``max_size``; plain data is returned as it is.  Raises :class:`FeedError`."""
    try:
        return _decompress(data, source=source, max_size=max_size)
    except FeedError as e:
        # updateinfo's wording names its own format; here the file may be any feed.
        raise FeedError(e.message.replace("the updateinfo is", "the feed is"),
                        where=e.where, hint=e.hint) from e


def _file_size(f: io.BufferedReader) -> int:
    return os.fstat(f.fileno()).st_size


def load_document(data: bytes, *, source: str, yaml_ok: bool = True) -> Any:
    """A JSON or YAML document as plain ``dict``/``list``/``str`` values.

    Text that starts with ``{`` or ``[`` is JSON (OSV's flow-style YAML does not exist in the
    wild, and a truncated JSON file deserves a JSON error).  Anything else is YAML when
    ``yaml_ok``: every scalar a string (dates and versions stay as written), no aliases, at
    most :data:`MAX_YAML_DEPTH` levels.  Raises :class:`FeedError`.
    """
    text = data.lstrip()
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:].lstrip()
    if text[:1] in (b"{", b"["):
        try:
            return json.loads(text)
        except RecursionError as e:
            raise FeedError("the JSON is nested too deeply; refusing it", where=source,
                            hint="no advisory feed nests this deep: the file is malicious "
                                 "or broken") from e
        except UnicodeDecodeError as e:
            raise FeedError(f"the JSON is not valid UTF-8 ({e.reason})", where=source) from e
        except json.JSONDecodeError as e:
            raise FeedError(f"malformed JSON: {e.msg}", where=f"{source}:{e.lineno}:{e.colno}",
                            hint="the file is truncated or not JSON") from e
    if not yaml_ok:
        raise FeedError("not a JSON document", where=source)
    return _load_yaml(data, source=source)


def _load_yaml(data: bytes, *, source: str) -> Any:
    """The YAML document built from libyaml's event stream.

    Not ``yaml.load``: its composer recurses once per nesting level (in C, with the C
    loader) and a line of ``[[[[...`` overflows the stack and kills the process; PyYAML's
    safe loader would also expand aliases.  libyaml's parser itself is iterative, so building
    the values here, with a depth cap and no aliases, is safe on any input.  Every scalar
    is a string and tags are ignored: nothing is typed, nothing constructed.
    """
    root: Any = _NOTHING
    stack: list[list[Any] | dict[str, Any]] = []
    keys: list[str | None] = []  # per open mapping, the key waiting for its value
    documents = 0

    def add(value: Any, mark: Any) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        if isinstance(top, list):
            top.append(value)
        elif keys[-1] is None:
            if not isinstance(value, str):
                raise FeedError("a YAML mapping key that is not a plain string",
                                where=_yaml_where(source, mark))
            keys[-1] = value
        else:
            top[keys[-1]] = value
            keys[-1] = None

    try:
        for event in yaml.parse(data, Loader=_BASE_LOADER):
            if isinstance(event, yaml.ScalarEvent):
                add(event.value, event.start_mark)
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                if len(stack) >= MAX_YAML_DEPTH:
                    raise FeedError(f"the YAML nests deeper than {MAX_YAML_DEPTH} levels; "
                                    "refusing it", where=_yaml_where(source, event.start_mark),
                                    hint="no advisory feed nests this deep: the file is "
                                         "malicious or broken")
                container: list[Any] | dict[str, Any] = (
                    [] if isinstance(event, yaml.SequenceStartEvent) else {})
                add(container, event.start_mark)  # attach first: the parent keeps order
                stack.append(container)
                keys.append(None)
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                stack.pop()
                keys.pop()
            elif isinstance(event, yaml.AliasEvent):
                raise FeedError(
                    "YAML aliases (*name) are refused: a few anchors can expand to "
                    "billions of nodes", where=_yaml_where(source, event.start_mark),
                    hint="advisory feeds never need anchors or aliases; the file is "
                         "malicious or broken")
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise FeedError("more than one YAML document in the file",
                                    where=_yaml_where(source, event.start_mark),
                                    hint="an advisory file holds one document")
    except yaml.MarkedYAMLError as e:
        raise FeedError(f"malformed YAML: {e.problem or e}",
                        where=_yaml_where(source, e.problem_mark),
                        hint="the file is truncated or not YAML") from e
    except yaml.YAMLError as e:
        raise FeedError(f"malformed YAML: {e}", where=source) from e
    return None if root is _NOTHING else root


def _yaml_where(source: str, mark: Any) -> str:
    if mark is None:
        return source
    return f"{source}:{mark.line + 1}:{mark.column + 1}"


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


class OsvReader(FeedReader):
    """OSV JSON and YAML files, and zips of them."""

    name = "osv"

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE):
        self.max_size = max_size

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
