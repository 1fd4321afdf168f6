"""Read the Ruby Advisory Database (rubysec): one YAML file per advisory,
``gems/<gem>/<id>.yml``, schema in its ``spec/schemas/gem.yml``.

**The id.**  An advisory is ``"<gem>/<stem>"``, e.g. ``"nokogiri/CVE-2015-1819"``: the file's
path inside the database without ``gems/`` and ``.yml``, which is the database's own key.  The
stem alone (what bundler-audit prints) is not unique: 45 stems name files of two or more gems
(``actionpack/CVE-2009-3009`` and ``activesupport/CVE-2009-3009``), and so do GHSA ids, and a
store that keeps one advisory per id would drop the other gems'.  The CVE, GHSA and OSVDB ids
are the advisory's ``aliases``.  When the input has no file name (a URL without one), the stem
is derived as ruby-advisory-db names files: ``CVE-…``, else ``GHSA-…``, else ``OSVDB-…``.

**What is affected.**  rubysec lists what is *not* affected, as RubyGems requirements
(``patched_versions`` + ``unaffected_versions``, e.g. ``"~> 1.6.6.4"``, ``">= 1.6.7.rc4"``):
they are the :class:`~alicorn.advisories.model.Affected`'s ``unaffected``, and the matcher
decides with them.  The fixes (the lowest version each ``patched_versions`` entry admits) are
also recorded, as a data-only range of type ``PATCHED`` whose events are all ``fixed``, so
``Affected.fixed_versions`` names them; an OSV range evaluator finds no ``introduced`` event in
it and so never counts a version as affected by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from alicorn.advisories.documents import DocumentReader, load_document
from alicorn.advisories.interface import FeedResult
from alicorn.advisories.model import Advisory, Affected, FeedError, Range, Reference
from alicorn.advisories.updateinfo import parse_date

__all__ = ["PATCHED", "RubysecReader", "parse_rubysec", "patched_fix"]

#: the Range type that records rubysec's fixed versions (data only; see the module docstring)
PATCHED = "PATCHED"

_GEM = re.compile(rb"^gem:[ \t]*\S", re.MULTILINE)
_RUBYSEC_KEY = re.compile(rb"^(url|patched_versions|unaffected_versions):", re.MULTILINE)
_REQUIREMENT = re.compile(r"^\s*(~>|>=|<=|!=|>|<|=)?\s*(\S+)\s*$")


def parse_rubysec(data: bytes, *, source: str) -> FeedResult:
    """The advisory in one rubysec YAML file (``format="rubysec"``).

    A file that is not a rubysec advisory (no ``gem``) is a :class:`FeedError`; a field of the
    wrong shape is dropped with a warning, the advisory kept.
    """
    record = load_document(data, source=source)
    if not isinstance(record, dict) or not isinstance(record.get("gem"), str):
        raise FeedError("not a rubysec advisory: no \"gem\" field at the top level",
                        where=source, hint="rubysec files are gems/<gem>/<id>.yml")
    gem = record["gem"].strip()
    warnings: list[str] = []
    ids = _ids(record)
    stem = _file_stem(source) or (ids[0] if ids else "")
    if not gem or not stem:
        raise FeedError("the rubysec advisory has no gem name or no id (cve, ghsa or osvdb)",
                        where=source)
    label = f"{source}: {gem}/{stem}"
    patched = _requirements(record, "patched_versions", label=label, warnings=warnings)
    unaffected = _requirements(record, "unaffected_versions", label=label, warnings=warnings)
    fixes = tuple(fix for fix in (patched_fix(r) for r in patched) if fix)
    ranges = (Range(type=PATCHED, events=tuple(("fixed", v) for v in fixes)),) if fixes else ()
    advisory = Advisory(
        id=f"{gem}/{stem}",
        type="security",
        severity=_severity(record, label=label, warnings=warnings),
        title=_str(record.get("title")),
        description=_str(record.get("description")),
        issued=_date(record.get("date"), label=label, warnings=warnings),
        updated=None,
        release=None,
        status=None,
        references=tuple(_references(record)),
        source=source,
        format="rubysec",
        aliases=ids,
        affected=(Affected(ecosystem="RubyGems", name=gem, ranges=ranges,
                           unaffected=(*patched, *unaffected)),),
    )
    return FeedResult((advisory,), tuple(warnings))


def patched_fix(requirement: str) -> str | None:
    """The lowest version a ``patched_versions`` entry admits: the fix it names.

    ``"~> 1.6.6.4"`` and ``">= 1.6.7.rc4"`` name ``1.6.6.4`` and ``1.6.7.rc4``; of a compound
    ``"~> 5.2.4, >= 5.2.4.3"`` the highest lower bound (``5.2.4.3``) is the fix.  None when the
    entry has no inclusive lower bound (``"< 2"``, ``"> 1.0"``).
    """
    bounds = []
    for part in requirement.split(","):
        match = _REQUIREMENT.match(part)
        if match is None:
            continue
        operator, version = match.group(1) or "=", match.group(2)
        if operator in ("~>", ">=", "="):
            bounds.append(version)
    if not bounds:
        return None
    return max(bounds, key=_gem_sort_key)


def _gem_sort_key(version: str) -> Any:
    """RubyGems order (univers' GemVersion); a version it cannot read sorts first."""
    from univers.gem import GemVersion

    try:
        return (1, GemVersion(version))  # type: ignore[no-untyped-call]
    except (ValueError, AttributeError, TypeError):
        return (0, version)


def _str(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _file_stem(source: str) -> str:
    name = PurePosixPath(urlsplit(source).path if "://" in source else Path(source).as_posix())
    return name.stem if name.suffix.lower() in (".yml", ".yaml") else ""


def _prefixed(prefix: str, value: object) -> str | None:
    """``"2020-1234"`` → ``"CVE-2020-1234"`` (rubysec writes ids without their prefix)."""
    text = _str(value) if not isinstance(value, int) else str(value)
    if not text:
        return None
    return text if text.upper().startswith(prefix) else f"{prefix}{text}"


def _ids(record: Mapping[str, Any]) -> tuple[str, ...]:
    ids = (_prefixed("CVE-", record.get("cve")), _prefixed("GHSA-", record.get("ghsa")),
           _prefixed("OSVDB-", record.get("osvdb")))
    return tuple(i for i in ids if i)


def _requirements(record: Mapping[str, Any], key: str, *, label: str,
                  warnings: list[str]) -> tuple[str, ...]:
    value = record.get(key)
    if value is None or value == "":
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        warnings.append(f"{label}: {key} is not a list of requirements; ignored")
        return ()
    return tuple(v.strip() for v in value if v.strip())


def _date(value: object, *, label: str, warnings: list[str]) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = parse_date(value) if isinstance(value, str) else None
    if parsed is None:
        warnings.append(f"{label}: unreadable date {value!r}; left empty")
    return parsed


def _severity(record: Mapping[str, Any], *, label: str, warnings: list[str]) -> str | None:
    """``criticality`` when written, else bundler-audit's rating of the CVSS base score
    (v3, then v4, then v2: the CVSS specification's / NVD's thresholds)."""
    criticality = _str(record.get("criticality"))
    if criticality:
        return criticality.capitalize()
    for key, scale in (("cvss_v3", _V3), ("cvss_v4", _V3), ("cvss_v2", _V2)):
        value = record.get(key)
        if value is None or value == "":
            continue
        try:
            score = float(value)
        except (TypeError, ValueError):
            warnings.append(f"{label}: {key} {value!r} is not a number; ignored")
            continue
        return next((rating for floor, rating in scale if score >= floor), None)
    return None


_V3 = ((9.0, "Critical"), (7.0, "High"), (4.0, "Medium"), (0.1, "Low"))
_V2 = ((7.0, "High"), (4.0, "Medium"), (0.0, "Low"))


def _references(record: Mapping[str, Any]) -> Iterator[Reference]:
    url = _str(record.get("url"))
    if url:
        yield Reference(type="advisory", id="", href=url)
    related = record.get("related")
    if not isinstance(related, dict):
        return
    # rubysec's "related" CVEs are mostly those of a bundled library (nokogiri's libxml2) that
    # the gem's fix resolves: the CVEs a person asks about, so they are cve references (the
    # advisory's ``cves``), though not aliases of this advisory.
    for cve in _as_list(related.get("cve")):
        name = _prefixed("CVE-", cve)
        if name:
            yield Reference(type="cve", id=name, title="related")
    for ghsa in _as_list(related.get("ghsa")):
        name = _prefixed("GHSA-", ghsa)
        if name:
            yield Reference(type="related", id=name,
                            href=f"https://github.com/advisories/{name}")
    for osvdb in _as_list(related.get("osvdb")):
        name = _prefixed("OSVDB-", osvdb)
        if name:
            yield Reference(type="related", id=name)
    for link in _as_list(related.get("url")):
        if isinstance(link, str) and link.strip():
            yield Reference(type="web", id="", href=link.strip())


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def sniff_rubysec(head: bytes) -> bool:
    """True when ``head`` looks like a rubysec advisory (top-level ``gem:`` and ``url:``)."""
    return bool(_GEM.search(head) and _RUBYSEC_KEY.search(head))


class RubysecReader(DocumentReader):
    """rubysec YAML files (``gems/<gem>/<id>.yml``)."""

    name = "rubysec"

    def sniff(self, path: Path, head: bytes) -> bool:
        return sniff_rubysec(head)

    def parse(self, data: bytes, *, source: str) -> FeedResult:
        """The advisory of ``data`` (already decompressed)."""
        return parse_rubysec(data, source=source)
