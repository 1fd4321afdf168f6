"""Debian advisories: from the fixed packages' own changelogs, and from the security tracker.

Debian publishes no updateinfo.xml.  What a connected machine can always reach is the package
archive, and every security upload's ``debian/changelog`` names the CVEs it fixes; the
changelog ships in each binary package as ``usr/share/doc/<pkg>/changelog.Debian.gz``.  So:

* :func:`advisories_from_changelog` turns one changelog into one advisory per entry (upload)
  that names a CVE: "source package S is affected below version V by these CVEs".
* :func:`advisories_from_debs` reads that changelog out of ``.deb`` files.
* :func:`fetch_security_advisories` downloads the security suite's index (signature checked
  with ``gpgv``), one ``.deb`` per wanted source package, and runs the two above with
  ``since`` = the base suite's version of each source, so that the feed holds exactly the
  CVEs of the uploads a base-suite-only machine is missing.  ``alicorn advisories
  import-debian`` runs it to produce the offline feed.
* :func:`parse_tracker_json` reads the Debian security tracker's JSON dump
  (https://security-tracker.debian.org/tracker/data/json), where that is reachable.
* :class:`TrackerJsonReader` and :class:`DebReader` are the two as feed readers, for
  ``alicorn advisories import``.

What "the CVEs Debian's advisories name" means here, for a changelog: every CVE id (the text
``CVE-YYYY-NNNN``) written anywhere in an entry of the fixed package's changelog whose fixed
version (the entry's, or a lower one above it: see :func:`advisories_from_changelog`) is
above ``since``.  An entry that mentions a CVE only to say "not affected", "revert the fix
for" or "additional mitigation for" still names it: a changelog has no structure that says
otherwise, and the tracker JSON (:func:`parse_tracker_json`) is the precise source when it is
available.

All input is untrusted: ``.deb`` files are read with a strict ``ar`` reader (python-debian's
trusts the header's sizes; a negative one makes it loop), tar streams are decompressed with a
cap on the unpacked size and the number of members, nothing is ever extracted to disk, and
changelogs, indexes and the tracker JSON are size-capped.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import logging
import lzma
import posixpath
import re
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cmp_to_key
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, BinaryIO, cast
from urllib.parse import quote

import apt_pkg
from debian.changelog import Changelog, ChangelogParseError
from debian.deb822 import Deb822, Release

from alicorn.advisories.documents import read_input
from alicorn.advisories.interface import FeedReader, FeedResult
from alicorn.advisories.model import Advisory, Affected, FeedError, Range, Reference
from alicorn.errors import ToolError
from alicorn.inventory.model import Inventory
from alicorn.proc import run, which

__all__ = [
    "DEBIAN_KEYRING",
    "DebReader",
    "TrackerJsonReader",
    "advisories_from_changelog",
    "advisories_from_debs",
    "fetch_security_advisories",
    "parse_tracker_json",
]

#: The keyring Debian's archive (and its security archive) sign their Release files with.
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

# Limits for untrusted input.  glibc's changelog.Debian is about 1 MiB unpacked and the
# security suite's largest binary packages are a few hundred MiB; the tracker's JSON dump is
# about 100 MiB.  Anything far past these is an attack or a mistake.
MAX_CHANGELOG = 32 << 20
MAX_CHANGELOG_GZ = 16 << 20
MAX_DEB = 1 << 30
MAX_UNPACKED = 1 << 30
MAX_TAR_MEMBERS = 200_000
MAX_CONTROL = 1 << 20
MAX_INDEX = 512 << 20
MAX_RELEASE = 16 << 20
MAX_TRACKER = 512 << 20
_MAX_AR_MEMBERS = 16
_MAX_WARNINGS_PER_INPUT = 20
# Binary packages tried per source package, and the largest a doc symlink is followed to.
_MAX_TRIES = 8
_MAX_LINKED_SIZE = 128 << 20
_CHUNK = 1 << 20

_CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b", re.IGNORECASE)
_DSA = re.compile(r"\b(?:DSA|DLA)-\d{3,6}(?:-\d+)?\b")
_TEMP = re.compile(r"^TEMP-\d+-[0-9A-Fa-f]+$")
_SOURCE_FIELD = re.compile(r"^(\S+)(?:\s+\((\S+)\))?\s*$")
_TRACKER_URL = "https://security-tracker.debian.org/tracker/"
_DEFAULT_RELEASES: Mapping[str, str] = MappingProxyType({"bookworm": "12"})

_apt_lock = threading.Lock()
_apt_ready = False


def _version_compare(a: str, b: str) -> int:
    """dpkg's version order (apt_pkg needs its system initialised once per process)."""
    global _apt_ready
    if not _apt_ready:
        with _apt_lock:
            if not _apt_ready:
                apt_pkg.init_system()
                _apt_ready = True
    return apt_pkg.version_compare(a, b)


# -- (a) one changelog ------------------------------------------------------------------------


class _Collect(logging.Handler):
    """Collects what python-debian's lenient changelog parser would only log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) <= _MAX_WARNINGS_PER_INPUT:
            self.messages.append(record.getMessage())


def _parse_changelog(text: str, *, source: str) -> tuple[Changelog, list[str]]:
    collect = _Collect()
    logger = logging.getLogger("debian.changelog")
    logger.addHandler(collect)
    saved = logger.propagate
    logger.propagate = False
    try:
        # Lenient: old entries of long-lived packages predate today's format; one malformed
        # line far down must not cost the recent (security) entries.
        changelog = Changelog(text, strict=False)
    except (ChangelogParseError, ValueError) as e:
        raise FeedError(f"not a Debian changelog: {e}", where=source) from e
    finally:
        logger.propagate = saved
        logger.removeHandler(collect)
    return changelog, [f"{source}: {m}" for m in collect.messages]


def _date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _title(source_package: str, version: str, cves: tuple[str, ...]) -> str:
    named = ", ".join(cves[:4]) + (f" and {len(cves) - 4} more" if len(cves) > 4 else "")
    return f"{source_package} {version}: security fixes for {named}"


def advisories_from_changelog(text: str, *, source_package: str, release: str = "12",
                              since: str | None = None, source: str) -> FeedResult:
    """One advisory per entry of the Debian changelog ``text`` that names a CVE id.

    Each advisory says: the source package ``source_package`` is affected by the CVEs the
    entry names in every version below the one that carries the fix (OSV-style range
    ``introduced 0, fixed <version>`` in ecosystem ``Debian:<release>``).  That is the entry's
    version, or a lower one above it in the file: a backport's changelog holds the newer
    upload's entries below its own (``0.34-4`` below ``0.34-4~deb12u1``), and their fixes
    ship in the backport.

    The id is ``DEBIAN-<source package>-<entry version>`` (unique per upload, stable across
    re-imports); DSA and DLA ids the entry mentions become aliases, not the id, because an
    entry also mentions the DSAs of earlier uploads ("fixes a regression from DSA-5678-1").
    ``severity`` is None (a changelog's ``urgency`` is about the upload, not the flaw; it
    opens the description); ``issued`` is the entry's date.  ``since``, when given, keeps
    only the entries whose fixed version is above it in dpkg's order: pass the version a
    machine already has (the base suite's) to get only the uploads it is missing.  ``source``
    names the input in warnings and on every advisory.  Raises :class:`FeedError` when
    ``text`` is too large or not a changelog at all; an entry that cannot be read (a bad
    version) is a warning.
    """
    if len(text) > MAX_CHANGELOG:
        raise FeedError(f"the changelog is larger than {MAX_CHANGELOG} bytes; refusing it",
                        where=source)
    changelog, warnings = _parse_changelog(text, source=source)
    if not any(block._raw_version for block in changelog):
        first = warnings[0].removeprefix(f"{source}: ") if warnings else "it has no entry"
        raise FeedError(f"not a Debian changelog: {first}", where=source,
                        hint="changelog.Debian starts with 'package (version) suite; urgency=…'")
    advisories: list[Advisory] = []
    # The version that first carries an entry's fix is the lowest of it and every entry
    # above it: a backport's changelog is the newer upload's plus its own entry on top
    # ("0.34-4~deb12u1" above "0.34-4"), and the fix of 0.34-4 is in 0.34-4~deb12u1.
    carried_by: str | None = None
    for block in changelog:
        raw_version = block._raw_version
        if not raw_version:
            warnings.append(f"{source}: an entry without a version was skipped")
            continue
        version = str(raw_version)
        try:
            block.version  # noqa: B018 (validates the version string)
        except ValueError as e:
            warnings.append(f"{source}: entry {version!r} skipped: {e}")
            continue
        if carried_by is None or _version_compare(version, carried_by) < 0:
            carried_by = version
        fixed = carried_by
        if since is not None and _version_compare(fixed, since) <= 0:
            continue
        body = "\n".join(block.changes()).strip("\n")
        cves = _unique(m.upper() for m in _CVE.findall(body))
        if not cves:
            continue
        issued = _date(block.date)
        if block.date and issued is None:
            warnings.append(f"{source}: entry {version}: unreadable date {block.date!r}")
        refs = [Reference("cve", c, href=_TRACKER_URL + c) for c in cves]
        refs += [Reference("debbugs", str(b), href=f"https://bugs.debian.org/{b}")
                 for b in _unique(str(b) for b in block.bugs_closed)]
        header = f"{block.package} ({version}) {block.distributions}; urgency={block.urgency}"
        advisories.append(Advisory(
            id=f"DEBIAN-{source_package}-{version}",
            type="security",
            severity=None,
            title=_title(source_package, version, cves),
            description=f"{header}\n\n{body}",
            issued=issued,
            updated=None,
            release=release,
            status=None,
            references=tuple(refs),
            source=source,
            format="debian",
            aliases=_unique(_DSA.findall(body)),
            affected=(Affected(
                ecosystem=f"Debian:{release}", name=source_package,
                ranges=(Range("ECOSYSTEM", (("introduced", "0"), ("fixed", fixed))),)),),
        ))
    return FeedResult(tuple(advisories), tuple(_capped(warnings)))


def _capped(warnings: list[str]) -> list[str]:
    if len(warnings) <= _MAX_WARNINGS_PER_INPUT:
        return warnings
    rest = len(warnings) - _MAX_WARNINGS_PER_INPUT
    return [*warnings[:_MAX_WARNINGS_PER_INPUT], f"... and {rest} more warnings like these"]


# -- (b) .deb files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Deb:
    """What one binary package tells about its source's changelog."""

    path: Path
    package: str
    version: str
    source: str
    source_version: str
    changelog: bytes | None          # the unpacked changelog, when the .deb has one
    member: str | None               # its path inside the package
    doc_link: str | None             # the package whose doc directory this one's points to


class _Slice(io.RawIOBase):
    """``size`` bytes of ``f`` from ``start``: one ar member, read in place."""

    def __init__(self, f: BinaryIO, start: int, size: int):
        self._f, self._pos, self._end = f, start, start + size

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._end - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._pos)
        data = self._f.read(n)
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)


class _Capped(io.RawIOBase):
    """Refuses to yield more than ``limit`` bytes (decompression bombs)."""

    def __init__(self, inner: IO[bytes], limit: int, where: str):
        self._inner, self._left, self._where = inner, limit, where

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._inner.read(len(b))
        self._left -= len(data)
        if self._left < 0:
            raise FeedError("the package unpacks to more than the size limit; refusing it",
                            where=self._where)
        b[:len(data)] = data
        return len(data)


def _decompressing(raw: IO[bytes], suffix: str, where: str) -> IO[bytes]:
    if suffix == "":
        return raw
    if suffix == ".gz":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if suffix in (".xz", ".lzma"):
        return lzma.LZMAFile(raw)
    if suffix == ".bz2":
        return bz2.BZ2File(raw)
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError as e:
            raise FeedError("a zstd-compressed package member cannot be read without the "
                            "zstandard module", where=where,
                            hint="pip install zstandard") from e
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw)
        return reader
    raise FeedError(f"unknown compression {suffix!r} of a package member", where=where)


def _ar_members(f: BinaryIO, *, size: int, where: str) -> dict[str, tuple[int, int]]:
    """The members of an ``ar`` archive: name → (offset, size), every header checked."""
    if f.read(8) != b"!<arch>\n":
        raise FeedError("not a Debian binary package (no ar header)", where=where)
    members: dict[str, tuple[int, int]] = {}
    pos = 8
    while pos < size:
        if len(members) >= _MAX_AR_MEMBERS:
            raise FeedError("too many ar members for a Debian package", where=where)
        f.seek(pos)
        header = f.read(60)
        if len(header) < 60 or header[58:60] != b"`\n":
            raise FeedError(f"corrupt ar member header at byte {pos}", where=where)
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        field = header[48:58].strip()
        if not field.isdigit():
            raise FeedError(f"corrupt ar member size {field!r} at byte {pos}", where=where)
        length = int(field)
        start = pos + 60
        if start + length > size:
            raise FeedError(f"the ar member {name!r} runs past the end of the file: truncated",
                            where=where, hint="download the package again")
        members.setdefault(name, (start, length))
        pos = start + length + (length & 1)
    return members


def _member_name(info: tarfile.TarInfo) -> str:
    """``./usr/share/doc/x`` and ``/usr/share/doc/x`` as ``usr/share/doc/x``."""
    name = info.name
    while name.startswith(("./", "/")):
        name = name[1:].lstrip("/") if name.startswith("/") else name[2:]
    return name.rstrip("/")


@contextlib.contextmanager
def _tar(f: BinaryIO, members: dict[str, tuple[int, int]], prefix: str,
         where: str) -> Iterator[Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]]:
    """The members of the ar member ``prefix``.tar[.gz|.xz|...], streamed and capped."""
    names = [n for n in members if n == prefix or n.startswith(prefix + ".")]
    if not names:
        raise FeedError(f"the package has no {prefix}.tar member", where=where)
    name = names[0]
    start, size = members[name]
    stream = _decompressing(io.BufferedReader(_Slice(f, start, size)),
                            name[len(prefix):], f"{where}:{name}")
    capped = io.BufferedReader(_Capped(stream, MAX_UNPACKED, where))

    def iterate(tf: tarfile.TarFile) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        for count, info in enumerate(tf):
            if count >= MAX_TAR_MEMBERS:
                raise FeedError(f"{name} has more than {MAX_TAR_MEMBERS} members; refusing it",
                                where=where)
            yield tf, info

    with tarfile.open(fileobj=capped, mode="r|") as tf:
        yield iterate(tf)


def _read_member(tf: tarfile.TarFile, info: tarfile.TarInfo, limit: int, where: str) -> bytes:
    if info.size > limit:
        raise FeedError(f"{info.name} is larger than {limit} bytes; refusing it", where=where)
    fileobj = tf.extractfile(info)
    if fileobj is None:
        raise FeedError(f"{info.name} is not a regular file", where=where)
    return fileobj.read(limit + 1)


def _gunzip(data: bytes, where: str) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            out = gz.read(MAX_CHANGELOG + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise FeedError(f"the changelog's gzip data is corrupt ({e})", where=where) from e
    if len(out) > MAX_CHANGELOG:
        raise FeedError(f"the changelog unpacks to more than {MAX_CHANGELOG} bytes",
                        where=where)
    return out


def _doc_package(member_dir: str, linkname: str) -> str | None:
    """The package whose ``usr/share/doc/<pkg>`` a doc symlink points into, if it does."""
    target = posixpath.normpath(posixpath.join(member_dir, linkname)).lstrip("/")
    parts = target.split("/")
    if len(parts) >= 4 and parts[:3] == ["usr", "share", "doc"]:
        return parts[3]
    return None


def _is_native(version: str) -> bool:
    return "-" not in version.split(":", 1)[-1]


def _read_deb(path: Path) -> _Deb:
    """Control fields and changelog of the binary package at ``path`` (FeedError if unusable)."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_DEB:
            raise FeedError(f"the package is larger than {MAX_DEB} bytes; refusing it",
                            where=where)
        with open(path, "rb") as f:
            members = _ar_members(f, size=size, where=where)
            if "debian-binary" not in members:
                raise FeedError("not a Debian binary package (no debian-binary member)",
                                where=where)
            control = _control(f, members, where)
            package, version = control.get("Package"), control.get("Version")
            if not package or not version:
                raise FeedError("the package's control file has no Package or Version",
                                where=where)
            m = _SOURCE_FIELD.match(control.get("Source", package))
            source = m.group(1) if m else package
            source_version = (m.group(2) if m else None) or version
            # Nativeness is the source's: linux-signed-amd64 6.1.192+3 builds 6.1.192-3.
            changelog, member, link = _changelog(f, members, package, source_version, where)
    except FeedError:
        raise
    except OSError as e:
        raise FeedError(f"cannot read the package: {e.strerror or e}", where=where) from e
    except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, ValueError) as e:
        raise FeedError(f"the package is corrupt ({e or type(e).__name__})", where=where,
                        hint="download the package again") from e
    return _Deb(path=path, package=package, version=version, source=source,
                source_version=source_version, changelog=changelog, member=member,
                doc_link=link)


def _control(f: BinaryIO, members: dict[str, tuple[int, int]], where: str) -> Deb822:
    with _tar(f, members, "control.tar", where) as entries:
        for tf, info in entries:
            if _member_name(info) == "control" and info.isfile():
                data = _read_member(tf, info, MAX_CONTROL, where)
                return Deb822(data.decode("utf-8", "replace"))
    raise FeedError("the package has no control file", where=where)


def _changelog(f: BinaryIO, members: dict[str, tuple[int, int]], package: str,
               source_version: str, where: str) -> tuple[bytes | None, str | None, str | None]:
    doc = f"usr/share/doc/{package}"
    debian_log, native_log = f"{doc}/changelog.Debian.gz", f"{doc}/changelog.gz"
    found: tuple[bytes, str] | None = None
    link: str | None = None
    with _tar(f, members, "data.tar", where) as entries:
        for tf, info in entries:
            name = _member_name(info)
            if name == doc and info.issym():
                link = _doc_package("usr/share/doc", info.linkname) or info.linkname
            elif name in (debian_log, native_log):
                if info.issym():
                    link = _doc_package(doc, info.linkname) or info.linkname
                elif info.isfile():
                    if name == debian_log:
                        return _gunzip(_read_member(tf, info, MAX_CHANGELOG_GZ, where),
                                       f"{where}:{name}"), name, None
                    # changelog.gz is the Debian changelog only for a native package.
                    if _is_native(source_version):
                        found = (_read_member(tf, info, MAX_CHANGELOG_GZ, where), name)
    if found is not None:
        return _gunzip(found[0], f"{where}:{found[1]}"), found[1], None
    return None, None, link


def _advisories_of(debs: Iterable[_Deb], *, release: str,
                   since: Mapping[str, str] | None) -> FeedResult:
    advisories: dict[str, Advisory] = {}
    warnings: list[str] = []
    done: set[tuple[str, str]] = set()
    for deb in debs:
        key = (deb.source, deb.source_version)
        if key in done:
            continue
        where = f"{deb.path}:{deb.member}"
        assert deb.changelog is not None
        text = deb.changelog.decode("utf-8", "replace")
        try:
            result = advisories_from_changelog(
                text, source_package=deb.source, release=release,
                since=(since or {}).get(deb.source), source=where)
        except FeedError as e:
            warnings.append(f"{deb.path}: skipped: {e.message}")
            continue
        done.add(key)
        warnings += result.warnings
        top = _first_version(text)
        if top is not None and top != deb.source_version:
            warnings.append(f"{where}: the changelog's newest entry is {top}, the package's "
                            f"source version {deb.source_version}")
        for advisory in result.advisories:
            advisories.setdefault(advisory.id, advisory)
    return FeedResult(tuple(advisories.values()), tuple(warnings))


def _first_version(text: str) -> str | None:
    m = re.match(r"\s*\S+ \(([^)\s]+)\)", text)
    return m.group(1) if m else None


def advisories_from_debs(paths: Iterable[Path], *, release: str = "12",
                         since: Mapping[str, str] | None = None) -> FeedResult:
    """The advisories the changelogs inside the binary packages ``paths`` name.

    Each ``.deb`` (typically one of a security suite) gives its source package (control
    ``Source:``, else ``Package:``) and the changelog at
    ``usr/share/doc/<package>/changelog.Debian.gz`` (``changelog.gz`` for a native package),
    read by :func:`advisories_from_changelog` with ``since`` = ``since[source]``.  Several
    packages of one source version give its advisories once.  A package that cannot be read,
    or whose doc directory is a symlink to another package's (so it carries no changelog), is
    skipped with a warning naming it.
    """
    debs: list[_Deb] = []
    warnings: list[str] = []
    for path in paths:
        try:
            deb = _read_deb(Path(path))
        except FeedError as e:
            warnings.append(f"{path}: skipped: {e.message}")
            continue
        if deb.changelog is None:
            warnings.append(_no_changelog(deb))
            continue
        debs.append(deb)
    result = _advisories_of(debs, release=release, since=since)
    return FeedResult(result.advisories, (*warnings, *result.warnings))


def _no_changelog(deb: _Deb) -> str:
    if deb.doc_link:
        return (f"{deb.path}: skipped: usr/share/doc/{deb.package} points to "
                f"{deb.doc_link}'s; the changelog is in that package")
    return f"{deb.path}: skipped: no usr/share/doc/{deb.package}/changelog.Debian.gz in it"


# -- (c) the security suite, from the archive ------------------------------------------------


@dataclass(frozen=True)
class _Binary:
    package: str
    version: str
    source: str
    source_version: str
    filename: str
    size: int
    sha256: str


def fetch_security_advisories(
    *,
    suite: str = "bookworm-security",
    base_suite: str | None = "bookworm",
    mirror_security: str = "http://security.debian.org/debian-security",
    mirror: str = "http://deb.debian.org/debian",
    packages: Iterable[str] | None = None,
    inventory: Inventory | None = None,
    cache_dir: Path,
    release: str = "12",
    component: str = "main",
    architecture: str = "amd64",
    keyring: Path | None = DEBIAN_KEYRING,
    timeout: float = 60.0,
) -> FeedResult:
    """The advisories of Debian's security suite, from the changelogs of its packages.

    Downloads ``<mirror_security>/dists/<suite>/InRelease``, checks its signature with gpgv
    against ``keyring`` (``keyring=None`` skips the check: only for a mirror you trust
    otherwise), then the suite's ``<component>/binary-<architecture>/Packages`` index (its
    sha256 checked against InRelease).  The wanted source packages are ``packages`` (source
    names; a binary name stands for its source) when given, else the source packages of
    ``inventory``'s deb packages, else every source in the suite; those not in the suite are
    skipped silently (they have no security upload).  For each, ONE binary package of it is
    downloaded (the smallest; when its doc directory points to another binary's, that one;
    sha256 checked) and read by :func:`advisories_from_debs` with ``since`` = the lowest
    source version the base suite's binaries of that source have (from ``<mirror>/dists/
    <base_suite>``, verified the same way), so that the feed names the CVEs of the uploads a
    machine installed from the base suite lacks (a source the base suite lacks keeps every
    entry).  ``base_suite=None`` keeps every entry of every changelog.  Indexes and packages
    are cached under ``cache_dir`` by their sha256.

    Raises :class:`FeedError` when an index cannot be fetched or verified; a package that
    cannot be downloaded or read is a warning naming it.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    index = _suite_index(mirror_security, suite, component, architecture, cache_dir,
                         keyring=keyring, timeout=timeout)
    by_source: dict[str, list[_Binary]] = {}
    by_binary: dict[str, str] = {}
    for b in index:
        by_source.setdefault(b.source, []).append(b)
        by_binary[b.package] = b.source
    if packages is not None:
        wanted = {by_binary.get(p, p) for p in packages}
    elif inventory is not None:
        wanted = {p.source or p.name for p in inventory.packages if p.type == "deb"}
    else:
        wanted = set(by_source)
    wanted &= set(by_source)

    since: dict[str, str] = {}
    if base_suite is not None:
        for b in _suite_index(mirror, base_suite, component, architecture, cache_dir,
                              keyring=keyring, timeout=timeout):
            if b.source in wanted and (b.source not in since or _version_compare(
                    b.source_version, since[b.source]) < 0):
                since[b.source] = b.source_version

    debs: list[_Deb] = []
    warnings: list[str] = []
    for source in sorted(wanted):
        deb, why = _one_deb(source, by_source[source], mirror_security, cache_dir, timeout)
        if deb is None:
            warnings.append(why)
        else:
            debs.append(deb)
    result = _advisories_of(debs, release=release, since=since)
    return FeedResult(result.advisories, (*warnings, *result.warnings))


def _one_deb(source: str, binaries: list[_Binary], mirror: str, cache_dir: Path,
             timeout: float) -> tuple[_Deb | None, str]:
    """One binary package of ``source`` that carries its changelog (or why there is none).

    The smallest first; a metapackage's doc directory often points to the real package's
    (linux-image-amd64 → linux-image-6.1.0-NN-amd64), which is tried next unless it is huge
    (a -dbg package); a package that cannot be read gives way to the next one.
    """
    newest = max(binaries, key=cmp_to_key(_by_source_version))
    pending = sorted((b for b in binaries if b.source_version == newest.source_version),
                     key=lambda b: (b.size, b.package))
    by_name = {b.package: b for b in pending}
    tried: list[str] = []
    errors: list[str] = []
    while pending and len(tried) < _MAX_TRIES:
        binary = pending.pop(0)
        tried.append(binary.package)
        url = f"{mirror.rstrip('/')}/{quote(binary.filename, safe='/+')}"
        try:
            path = _download(url, cache_dir / "debs" / _safe_name(binary.filename),
                             sha256=binary.sha256, size=binary.size, limit=MAX_DEB,
                             timeout=timeout)
            deb = _read_deb(path)
        except FeedError as e:
            errors.append(e.diagnostics())
            continue
        if deb.changelog is not None:
            return deb, ""
        link = by_name.get(deb.doc_link or "")
        if link is not None and link in pending and link.size <= _MAX_LINKED_SIZE:
            pending.remove(link)
            pending.insert(0, link)
    if errors:
        return None, f"source package {source}: skipped: {'; '.join(errors)}"
    return None, (f"source package {source}: skipped: none of its packages "
                  f"{', '.join(tried)} carries a changelog")


def _by_source_version(a: _Binary, b: _Binary) -> int:
    return _version_compare(a.source_version, b.source_version)


def _safe_name(filename: str) -> str:
    name = posixpath.basename(filename)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise FeedError(f"unusable package file name {filename!r} in the index")
    return name


def _suite_index(mirror: str, suite: str, component: str, architecture: str,
                 cache_dir: Path, *, keyring: Path | None, timeout: float) -> list[_Binary]:
    base = f"{mirror.rstrip('/')}/dists/{suite}"
    release = _release(base, suite, cache_dir, keyring=keyring, timeout=timeout)
    wanted = f"{component}/binary-{architecture}/Packages"
    files = {e["name"]: e for e in release.get("SHA256", [])}
    for suffix in (".xz", ".gz", ""):
        entry = files.get(wanted + suffix)
        if entry is not None:
            break
    else:
        raise FeedError(f"{suite}'s Release lists no {wanted} index", where=f"{base}/InRelease",
                        hint="check the suite, component and architecture")
    digest, size = entry["sha256"], int(entry["size"])
    by_hash = release.get("Acquire-By-Hash", "no").lower() == "yes"
    directory = posixpath.dirname(entry["name"])
    url = (f"{base}/{directory}/by-hash/SHA256/{digest}" if by_hash
           else f"{base}/{entry['name']}")
    path = _download(url, cache_dir / "indexes" / f"{digest}{suffix}", sha256=digest,
                     size=size, limit=MAX_INDEX, timeout=timeout)
    return _binaries(_unpack_index(path, suffix), where=url)


def _release(base: str, suite: str, cache_dir: Path, *, keyring: Path | None,
             timeout: float) -> Release:
    url = f"{base}/InRelease"
    signed = _get(url, limit=MAX_RELEASE, timeout=timeout)
    if keyring is None:
        text = signed.decode("utf-8", "replace")
    else:
        text = _gpgv(signed, keyring, url, cache_dir)
    release = Release(text)
    if suite not in (release.get("Codename"), release.get("Suite")):
        raise FeedError(f"the Release file is for {release.get('Codename')!r}, not {suite!r}",
                        where=url, hint="check the mirror URL and the suite")
    # As apt does: an expired Release file is a stale mirror or a replay that hides the
    # newest security uploads.
    valid_until = _date(release.get("Valid-Until"))
    if valid_until is not None and valid_until < datetime.now(UTC):
        raise FeedError(f"the Release file expired on {valid_until:%Y-%m-%d %H:%M} UTC",
                        where=url, hint="the mirror is stale; use an up-to-date mirror")
    return release


def _gpgv(signed: bytes, keyring: Path, url: str, cache_dir: Path) -> str:
    """The content of the InRelease file that gpgv verified, and only that."""
    if not keyring.is_file():
        raise FeedError(f"the archive keyring {keyring} is missing", where=url,
                        hint="apt-get install debian-archive-keyring")
    gpgv = which("gpgv", package="gpgv")
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        inrelease, out = Path(tmp) / "InRelease", Path(tmp) / "Release"
        inrelease.write_bytes(signed)
        try:
            run([gpgv, "--quiet", "--keyring", str(keyring), "--output", str(out),
                 str(inrelease)], what="gpgv")
        except ToolError as e:
            raise FeedError(f"the signature of the Release file does not verify: {e.message}",
                            where=url, hint=f"the keyring used is {keyring}") from e
        return out.read_text(encoding="utf-8", errors="replace")


def _get(url: str, *, limit: int, timeout: float) -> bytes:
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "alicorn"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data: bytes = resp.read(limit + 1)
    except urllib.error.HTTPError as e:
        raise FeedError(f"HTTP {e.code} {e.reason}", where=url,
                        hint="check the mirror URL and the suite") from e
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise FeedError(f"not reachable: {reason}", where=url,
                        hint="check the network and the mirror URL") from e
    if len(data) > limit:
        raise FeedError(f"larger than {limit} bytes; refusing it", where=url)
    return data


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, *, sha256: str, size: int, limit: int,
              timeout: float) -> Path:
    """``url`` saved at ``dest`` (reused when its sha256 already matches), sha256 checked."""
    if dest.is_file() and _sha256_of(dest) == sha256:
        return dest
    if size > limit:
        raise FeedError(f"the index says it is {size} bytes, more than {limit}; refusing it",
                        where=url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{time.monotonic_ns()}.part")
    h = hashlib.sha256()
    got = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "alicorn"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as out:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                got += len(chunk)
                if got > size:
                    raise FeedError(f"longer than the {size} bytes the index says", where=url)
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            raise FeedError(f"sha256 mismatch: got {h.hexdigest()}, the index says {sha256}",
                            where=url, hint="the mirror may be updating; try again")
        part.replace(dest)
    except urllib.error.HTTPError as e:
        raise FeedError(f"HTTP {e.code} {e.reason}", where=url,
                        hint="the index may have changed since; try again") from e
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise FeedError(f"not reachable: {reason}", where=url,
                        hint="check the network and the mirror URL") from e
    finally:
        part.unlink(missing_ok=True)
    return dest


def _unpack_index(path: Path, suffix: str) -> Path:
    """The uncompressed index beside ``path`` (cached: the name carries the sha256)."""
    if suffix == "":
        return path
    plain = path.with_name(path.name[:-len(suffix)] + ".plain")
    if plain.is_file():
        return plain
    part = plain.with_name(f".{plain.name}.{time.monotonic_ns()}.part")
    opener = lzma.open if suffix == ".xz" else gzip.open
    try:
        with opener(path, "rb") as src, open(part, "wb") as out:
            got = 0
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                got += len(chunk)
                if got > MAX_INDEX:
                    raise FeedError(f"the index unpacks to more than {MAX_INDEX} bytes",
                                    where=str(path))
                out.write(chunk)
        part.replace(plain)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise FeedError(f"the index is corrupt ({e})", where=str(path)) from e
    finally:
        part.unlink(missing_ok=True)
    return plain


def _binaries(path: Path, *, where: str) -> list[_Binary]:
    out: list[_Binary] = []
    _version_compare("0", "0")  # apt_pkg.TagFile too needs the system initialised
    with open(path, "rb") as f:
        for section in apt_pkg.TagFile(f):
            package, version = section.get("Package"), section.get("Version")
            filename, sha256 = section.get("Filename"), section.get("SHA256")
            size = section.get("Size", "")
            if not (package and version and filename and sha256 and size.isdigit()):
                continue  # not a package stanza of use here (no file to fetch)
            m = _SOURCE_FIELD.match(section.get("Source", package))
            out.append(_Binary(package=package, version=version,
                               source=m.group(1) if m else package,
                               source_version=(m.group(2) if m else None) or version,
                               filename=filename, size=int(size), sha256=sha256))
    if not out:
        raise FeedError("the Packages index lists no package", where=where)
    return out


# -- (d) the security tracker's JSON ----------------------------------------------------------


# The tracker's urgency ("medium", "high**": "**" marks an urgency set by hand) → severity.
_URGENCY = {"unimportant": "Low", "low": "Low", "medium": "Medium", "high": "High"}
_SEVERITY_ORDER = ["Low", "Medium", "High"]


def parse_tracker_json(data: bytes, *, source: str,
                       releases: Mapping[str, str] = _DEFAULT_RELEASES) -> FeedResult:
    """Advisories from the Debian security tracker's JSON dump.

    The dump is ``{source package: {issue id: {"description", "scope", "debianbug",
    "releases": {codename: {"status", "fixed_version", "urgency", "repositories", "nodsa",
    "nodsa_reason"}}}}}``.  ``releases`` maps the codenames to read to Debian versions
    (``{"bookworm": "12"}``).  One advisory per (source package, issue), id
    ``DEBIAN-<source>-<issue>``, with one :class:`Affected` per release (ecosystem
    ``Debian:<version>``, the source package) and the highest of those releases' urgency as
    its severity (unimportant/low → Low, medium → Medium, high → High):

    * ``resolved`` with a ``fixed_version``: affected below it;
    * ``resolved`` with ``fixed_version`` ``"0"``: never affected, no advisory;
    * ``open``: affected in every version (no fix yet; also when Debian will not issue a DSA,
      ``nodsa``/``nodsa_reason``, which go into the description);
    * ``undetermined``: not yet triaged; skipped, and counted in one warning.

    Issue ids are CVE ids, or the tracker's ``TEMP-…`` ids for issues without one (kept, with
    no CVE reference).  Raises :class:`FeedError` when ``data`` is too large, not JSON, or not
    shaped like the dump; a malformed record inside is a warning.
    """
    if len(data) > MAX_TRACKER:
        raise FeedError(f"larger than {MAX_TRACKER} bytes; refusing it", where=source)
    try:
        dump = json.loads(data)
    except RecursionError as e:
        raise FeedError("the JSON is nested too deeply", where=source) from e
    except (ValueError, UnicodeDecodeError) as e:
        raise FeedError(f"not JSON: {e}", where=source) from e
    if not isinstance(dump, dict):
        raise FeedError("not a security tracker dump: the top level is not an object",
                        where=source, hint="the dump is tracker/data/json")
    advisories: list[Advisory] = []
    warnings: list[str] = []
    undetermined = 0
    for package, issues in dump.items():
        if not isinstance(issues, dict):
            warnings.append(f"{source}: {package}: skipped: not an object of issues")
            continue
        for issue, record in issues.items():
            where = f"{source}: {package}/{issue}"
            if not (_CVE.fullmatch(issue) or _TEMP.match(issue)):
                warnings.append(f"{where}: skipped: not a CVE or TEMP- id")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("releases"), dict):
                warnings.append(f"{where}: skipped: malformed record")
                continue
            advisory, skipped, problem = _tracker_advisory(package, issue, record, releases,
                                                           source)
            undetermined += skipped
            if problem:
                warnings.append(f"{where}: {problem}")
            if advisory is not None:
                advisories.append(advisory)
    warnings = _capped(warnings)
    if undetermined:
        warnings.append(f"{source}: {undetermined} (package, issue) pairs are 'undetermined' "
                        "(not yet triaged by Debian) and were skipped")
    return FeedResult(tuple(advisories), tuple(warnings))


def _tracker_advisory(package: str, issue: str, record: dict[str, Any],
                      releases: Mapping[str, str],
                      source: str) -> tuple[Advisory | None, int, str | None]:
    affected: list[Affected] = []
    notes: list[str] = []
    statuses: set[str] = set()
    severities: list[str] = []
    undetermined = 0
    problem: str | None = None
    for codename, version_id in releases.items():
        entry = record["releases"].get(codename)
        if entry is None:
            continue  # the package is not in that release
        if not isinstance(entry, dict):
            problem = f"release {codename}: skipped: malformed entry"
            continue
        status, fixed = entry.get("status"), entry.get("fixed_version")
        eco = f"Debian:{version_id}"
        if status == "resolved":
            if fixed == "0":
                continue
            if not isinstance(fixed, str) or not fixed.strip():
                problem = f"release {codename}: skipped: resolved without a fixed_version"
                continue
            ranges = (Range("ECOSYSTEM", (("introduced", "0"), ("fixed", fixed.strip()))),)
        elif status == "open":
            ranges = (Range("ECOSYSTEM", (("introduced", "0"),)),)
        elif status == "undetermined":
            undetermined += 1
            continue
        else:
            problem = f"release {codename}: skipped: unknown status {status!r}"
            continue
        statuses.add(str(status))
        affected.append(Affected(ecosystem=eco, name=package, ranges=ranges))
        urgency = entry.get("urgency")
        if isinstance(urgency, str) and urgency.rstrip("*").strip().lower() in _URGENCY:
            severities.append(_URGENCY[urgency.rstrip("*").strip().lower()])
        note = f"{codename}: {status}, urgency {entry.get('urgency') or 'unknown'}"
        if entry.get("nodsa") or entry.get("nodsa_reason"):
            note += f"; no DSA ({entry.get('nodsa_reason') or ''}: {entry.get('nodsa') or ''})"
        notes.append(note)
    if not affected:
        return None, undetermined, problem
    description = record.get("description")
    text = description if isinstance(description, str) else ""
    refs: list[Reference] = []
    cve = issue.upper() if _CVE.fullmatch(issue) else None
    if cve:
        refs.append(Reference("cve", cve, href=_TRACKER_URL + cve))
    bug = record.get("debianbug")
    if isinstance(bug, int) and not isinstance(bug, bool):
        refs.append(Reference("debbugs", str(bug), href=f"https://bugs.debian.org/{bug}"))
    refs.append(Reference("self", issue, href=_TRACKER_URL + issue))
    advisory = Advisory(
        id=f"DEBIAN-{package}-{issue}",
        type="security",
        # The tracker's urgency is its severity rating ("not yet assigned" gives none); the
        # highest over the releases read.
        severity=max(severities, key=_SEVERITY_ORDER.index) if severities else None,
        title=f"{package}: {issue}",
        description="\n".join([text, "", *notes]).strip(),
        issued=None,
        updated=None,
        release=",".join(releases[c] for c in releases if c in record["releases"]) or None,
        status=next(iter(statuses)) if len(statuses) == 1 else None,
        references=tuple(refs),
        source=source,
        format="debian",
        aliases=(cve,) if cve else (),
        affected=tuple(affected),
    )
    return advisory, undetermined, problem


# -- feed readers (for alicorn.advisories.feeds) ----------------------------------------------

_TRACKER_HEAD = re.compile(rb'^\s*\{\s*"[^"]{1,200}"\s*:\s*\{\s*"(?:CVE|TEMP)-[0-9A-Fa-f-]+"\s*:')


class TrackerJsonReader(FeedReader):
    """The security tracker's JSON dump (plain or compressed), via :func:`parse_tracker_json`."""

    name = "debian-tracker"

    def __init__(self, *, max_size: int = MAX_TRACKER,
                 releases: Mapping[str, str] = _DEFAULT_RELEASES):
        self.max_size, self.releases = max_size, releases

    def sniff(self, path: Path, head: bytes) -> bool:
        return bool(_TRACKER_HEAD.match(head))

    def read(self, path: Path) -> FeedResult:
        return self.parse(read_input(path, max_size=self.max_size), source=str(path))

    def parse(self, data: bytes, *, source: str) -> FeedResult:
        """The advisories of the dump ``data`` (already read and decompressed)."""
        return parse_tracker_json(data, source=source, releases=self.releases)


class DebReader(FeedReader):
    """A binary package (``.deb``): the advisories its changelog names, via
    :func:`advisories_from_debs` (every entry: the file does not say what is installed)."""

    name = "debian-changelog"

    def __init__(self, *, release: str = "12"):
        self.release = release

    def sniff(self, path: Path, head: bytes) -> bool:
        return head.startswith(b"!<arch>\ndebian-binary")

    def read(self, path: Path) -> FeedResult:
        result = advisories_from_debs([path], release=self.release)
        if not result.advisories and result.warnings:
            # The file itself is the input: an unusable one is an error, not a warning.
            raise FeedError(result.warnings[0].removeprefix(f"{path}: "), where=str(path))
        return result
