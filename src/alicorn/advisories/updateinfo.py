"""Read ``updateinfo.xml``, the advisory feed of RPM repositories.

Bodhi (Fedora), Red Hat / Scientific Linux errata, createrepo_c and pulp all write this format.
The file comes from a repository we do not control, so it is parsed with defusedxml (entity
expansion and external references are refused) and decompression stops at a size cap.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import importlib
import io
import lzma
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

from alicorn.advisories.model import Advisory, FeedError, PackageRef, Reference

# updateinfo.xml of all of Fedora updates is tens of MiB; anything past this is not an advisory
# feed but an attack or a mistake.
MAX_DECOMPRESSED = 512 * 1024 * 1024
_CHUNK = 1 << 20

_GZIP = b"\x1f\x8b"
_BZIP2 = b"BZh"
_XZ = b"\xfd7zXZ\x00"
_ZSTD = b"\x28\xb5\x2f\xfd"

_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_updateinfo(data: bytes, *, source: str,
                     max_size: int = MAX_DECOMPRESSED) -> list[Advisory]:
    """Parse an ``updateinfo.xml``, plain or gzip/bz2/xz (zstd if ``zstandard`` is installed).

    The compression is detected from the magic bytes, not the file name.  ``source`` names the
    input in errors and is recorded on every advisory.  Raises :class:`FeedError` for anything
    malformed, unsafe, truncated or larger than ``max_size`` bytes once decompressed.
    """
    xml = _decompress(data, source=source, max_size=max_size)
    root = _parse_xml(xml, source=source)
    if _local(root.tag) != "updates":
        raise FeedError(f"not an updateinfo document: the root element is <{_local(root.tag)}>,"
                        " not <updates>", where=source)
    advisories = []
    for position, update in enumerate(_children(root, "update"), start=1):
        advisories.append(_advisory(update, position=position, source=source))
    return advisories


def read_repodata(repo_dir: Path, *, max_size: int = MAX_DECOMPRESSED) -> list[Advisory]:
    """The advisories of the RPM repository at ``repo_dir`` (which holds ``repodata/``).

    Finds the ``updateinfo`` record in ``repodata/repomd.xml`` and checks the file's checksum
    against it.  A repository without an updateinfo record has no advisories: ``[]``.
    """
    repomd_path = repo_dir / "repodata" / "repomd.xml"
    try:
        repomd_bytes = repomd_path.read_bytes()
    except OSError as e:
        raise FeedError(f"cannot read repomd.xml: {e.strerror or e}", where=str(repomd_path),
                        hint="point at the directory that holds repodata/") from e
    repomd = _parse_xml(repomd_bytes, source=str(repomd_path))
    record = next((d for d in _children(repomd, "data") if d.get("type") == "updateinfo"), None)
    if record is None:
        return []
    location = _child(record, "location")
    href = location.get("href") if location is not None else None
    if not href:
        raise FeedError("the updateinfo record has no <location href=...>",
                        where=str(repomd_path))
    base = repo_dir.resolve()
    path = (base / href).resolve()
    if not path.is_relative_to(base):
        raise FeedError(f"the updateinfo location {href!r} points outside the repository",
                        where=str(repomd_path))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FeedError(f"cannot read the updateinfo file: {e.strerror or e}",
                        where=str(path)) from e
    _check_checksum(record, data, where=str(path))
    return parse_updateinfo(data, source=str(path), max_size=max_size)


# -- decompression and XML --------------------------------------------------------------------


def _decompress(data: bytes, *, source: str, max_size: int) -> bytes:
    opened = _open_compressed(data, source=source)
    if opened is None:
        if len(data) > max_size:
            raise _too_large(source, max_size)
        return data
    kind, stream = opened
    out = bytearray()
    try:
        with stream:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                out += chunk
                if len(out) > max_size:
                    raise _too_large(source, max_size)
    except FeedError:
        raise
    except (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as e:
        raise FeedError(f"the {kind} data is truncated or corrupt ({e or type(e).__name__})",
                        where=source, hint="download the file again") from e
    except Exception as e:  # zstandard.ZstdError has no common base with the above
        if kind != "zstd":
            raise
        raise FeedError(f"the zstd data is truncated or corrupt ({e})", where=source) from e
    return bytes(out)


def _open_compressed(data: bytes, *, source: str) -> tuple[str, io.BufferedIOBase] | None:
    """The compression (by magic bytes) and a reader of the decompressed data; None if plain."""
    if data.startswith(_GZIP):
        return "gzip", gzip.GzipFile(fileobj=io.BytesIO(data))
    if data.startswith(_BZIP2):
        return "bzip2", bz2.BZ2File(io.BytesIO(data))
    if data.startswith(_XZ):
        return "xz", lzma.LZMAFile(io.BytesIO(data))
    if data.startswith(_ZSTD):
        return "zstd", _zstd_reader(data, source=source)
    return None


def _zstd_reader(data: bytes, *, source: str) -> io.BufferedIOBase:
    try:
        zstandard: Any = importlib.import_module("zstandard")
    except ImportError as e:
        raise FeedError("the updateinfo is zstd-compressed and the zstandard module is not "
                        "installed", where=source, hint="pip install zstandard") from e
    reader: io.BufferedIOBase = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    return reader


def _too_large(source: str, max_size: int) -> FeedError:
    return FeedError(f"the updateinfo is larger than {max_size} bytes once decompressed; "
                     "refusing it (a decompression bomb, or not an updateinfo)", where=source)


def _parse_xml(data: bytes, *, source: str) -> ET.Element:
    try:
        root: ET.Element = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True,
                                             forbid_external=True)
    except defusedxml.DefusedXmlException as e:
        what, needle = _refusal(e)
        line = _line_of(data, needle) if needle else None
        raise FeedError(f"unsafe XML refused: {what}",
                        where=f"{source}:{line}" if line else source,
                        hint="advisory feeds never need entity declarations or external "
                             "references; the file is malicious or broken") from e
    except ET.ParseError as e:
        line, column = e.position
        raise FeedError(f"malformed XML: {e}", where=f"{source}:{line}:{column}",
                        hint="the file is truncated or not XML; download it again") from e
    return root


def _refusal(e: Exception) -> tuple[str, bytes | None]:
    """What defusedxml refused, in words, and the bytes that start it in the document."""
    if isinstance(e, defusedxml.EntitiesForbidden):
        return f"an entity declaration ({e.name!r})", b"<!ENTITY"
    if isinstance(e, defusedxml.ExternalReferenceForbidden):
        return f"an external reference ({e.sysid or e.pubid!r})", None
    if isinstance(e, defusedxml.DTDForbidden):
        return "a document type declaration", b"<!DOCTYPE"
    return str(e), None


def _line_of(data: bytes, needle: bytes) -> int | None:
    """The 1-based line of the first ``needle`` in ``data``, if it is there."""
    at = data.find(needle)
    return data.count(b"\n", 0, at) + 1 if at >= 0 else None


def _check_checksum(record: ET.Element, data: bytes, *, where: str) -> None:
    checksum = _child(record, "checksum")
    if checksum is None or not (checksum.text or "").strip():
        return
    algorithm = (checksum.get("type") or "sha256").lower()
    if algorithm == "sha":
        algorithm = "sha1"
    try:
        actual = hashlib.new(algorithm, data).hexdigest()
    except ValueError:
        return  # an algorithm hashlib does not know: nothing to check against
    expected = (checksum.text or "").strip().lower()
    if actual != expected:
        raise FeedError(f"{algorithm} checksum mismatch: repomd.xml says {expected}, "
                        f"the file has {actual}", where=where,
                        hint="the repository changed while it was read, or was tampered with")


# -- elements to values -----------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (c for c in element if _local(c.tag) == name)


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next(_children(element, name), None)


def _text(element: ET.Element, name: str) -> str | None:
    child = _child(element, name)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _advisory(update: ET.Element, *, position: int, source: str) -> Advisory:
    advisory_id = _text(update, "id")
    if not advisory_id:
        raise FeedError(f"update #{position} has no <id>", where=source,
                        hint="every <update> needs an <id>; the feed is broken")
    dates = {name: _date(update, name) for name in ("issued", "updated")}
    severity = _text(update, "severity")
    if severity is not None and severity.lower() == "none":
        severity = None  # Bodhi writes "None" for "no severity given"
    references = tuple(
        Reference(type=(r.get("type") or "other").strip(), id=(r.get("id") or "").strip(),
                  href=r.get("href"), title=r.get("title"))
        for refs in _children(update, "references") for r in _children(refs, "reference")
    )
    return Advisory(
        id=advisory_id,
        type=(update.get("type") or "unknown").strip(),
        severity=severity,
        title=_text(update, "title") or "",
        description=_text(update, "description") or "",
        issued=dates["issued"],
        updated=dates["updated"],
        release=_text(update, "release"),
        status=update.get("status"),
        references=references,
        packages=tuple(_packages(update)),
        source=source,
    )


def _packages(update: ET.Element) -> Iterator[PackageRef]:
    for pkglist in _children(update, "pkglist"):
        for collection in _children(pkglist, "collection"):
            modules = tuple(f"{m.get('name', '')}:{m.get('stream', '')}"
                            for m in _children(collection, "module"))
            for package in _children(collection, "package"):
                yield _package(package, modules)


def _package(package: ET.Element, modules: tuple[str, ...]) -> PackageRef:
    sha256 = None
    for total in _children(package, "sum"):
        if (total.get("type") or "").lower() == "sha256" and total.text and total.text.strip():
            sha256 = total.text.strip().lower()
    return PackageRef(
        name=package.get("name") or "",
        epoch=package.get("epoch") or "0",
        version=package.get("version") or "",
        release=package.get("release") or "",
        arch=package.get("arch") or "",
        src=package.get("src"),
        filename=_text(package, "filename"),
        sha256=sha256,
        modules=modules,
    )


def _date(update: ET.Element, name: str) -> datetime | None:
    """``<issued date=...>`` as UTC; ``None`` when absent or unreadable.

    Bodhi writes "2019-01-17 00:00:00", Red Hat sometimes adds " UTC", others write seconds
    since the epoch or ISO 8601.  A date nobody can read is dropped, not fatal: real feeds
    carry such dates (createrepo_c's tests hold "15mangled2") and the advisory is still good.
    """
    element = _child(update, name)
    return parse_date(element.get("date")) if element is not None else None


def parse_date(text: str | None) -> datetime | None:
    """A date as found in advisory feeds, in UTC; ``None`` if it is empty or unreadable."""
    if not text or not text.strip():
        return None
    text = text.strip()
    if text.isdigit():
        try:
            return datetime.fromtimestamp(int(text), tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if text.upper().endswith(" UTC"):
        text = text[:-4].rstrip()
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
