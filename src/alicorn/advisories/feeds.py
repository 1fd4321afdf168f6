"""The registry of advisory feed formats, and :func:`load`: any feed input to advisories.

An input is a file (its format sniffed from its content, never its name; gzip, bzip2, xz and
zstd are decompressed with a cap), a directory (every feed file under it; a directory holding
``repodata/repomd.xml`` is an RPM repository and is read through its repomd), a zip of OSV
files, or an ``http(s)://`` / ``file://`` URL (downloaded with a size cap and a timeout).

Adding a format is a new module with a :class:`~alicorn.advisories.interface.FeedReader` and a
line in :data:`READERS`.
"""

from __future__ import annotations

import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from alicorn.advisories.bodhi import BodhiReader
from alicorn.advisories.debian import MAX_TRACKER, DebReader, TrackerJsonReader
from alicorn.advisories.documents import (
    DEFAULT_MAX_SIZE,
    DocumentReader,
    decompress,
    load_document,
    read_input,
)
from alicorn.advisories.interface import FeedReader, FeedResult
from alicorn.advisories.model import Advisory, FeedError
from alicorn.advisories.osv import OsvReader
from alicorn.advisories.oval import OvalReader
from alicorn.advisories.rubysec import RubysecReader
from alicorn.advisories.updateinfo import parse_updateinfo, read_repodata

__all__ = ["DEFAULT_MAX_SIZE", "READERS", "UpdateinfoReader", "load", "load_many",
           "reader_for"]

_HEAD = 64 * 1024
_ZIP = b"PK\x03\x04"
_AR = b"!<ar"
DEFAULT_TIMEOUT = 60.0


class UpdateinfoReader(DocumentReader):
    """``updateinfo.xml`` (plain or compressed), through :mod:`alicorn.advisories.updateinfo`."""

    name = "updateinfo"

    def sniff(self, path: Path, head: bytes) -> bool:
        # an XML document whose root is <updates> (after the declaration and comments)
        if not head.lstrip().removeprefix(b"\xef\xbb\xbf").startswith(b"<"):
            return False
        start = head.find(b"<updates")
        return start != -1 and head[start + 8:start + 9] in (b">", b" ", b"/", b"\n", b"\r",
                                                            b"\t")

    def parse(self, data: bytes, *, source: str) -> FeedResult:
        """The advisories of ``data``."""
        return FeedResult(tuple(parse_updateinfo(data, source=source, max_size=self.max_size)))


_Reader = (UpdateinfoReader | OvalReader | BodhiReader | OsvReader | RubysecReader
           | TrackerJsonReader)


def _readers(max_size: int) -> tuple[_Reader, ...]:
    return (UpdateinfoReader(max_size=max_size), OvalReader(max_size=max_size),
            BodhiReader(max_size=max_size), OsvReader(max_size=max_size),
            RubysecReader(max_size=max_size), TrackerJsonReader(max_size=max_size))


_DEFAULT_READERS = _readers(DEFAULT_MAX_SIZE)
#: every format, in the order they are tried on a file's first 64 KiB
READERS: tuple[FeedReader, ...] = _DEFAULT_READERS
_NAMES = ", ".join(r.name for r in READERS)


def reader_for(path: Path, head: bytes, *,
               max_size: int = DEFAULT_MAX_SIZE) -> _Reader | None:
    """The first reader (of :data:`READERS`' formats, capped at ``max_size``) that recognises
    ``head``, the file's decompressed first bytes; None when none does."""
    readers = _DEFAULT_READERS if max_size == DEFAULT_MAX_SIZE else _readers(max_size)
    return next((r for r in readers if r.sniff(path, head)), None)


def load(location: str | Path, *, max_size: int = DEFAULT_MAX_SIZE,
         timeout: float = DEFAULT_TIMEOUT) -> FeedResult:
    """Every advisory at ``location``: a feed file, a directory of them, an RPM repository,
    a zip of OSV files, or an ``http(s)://`` or ``file://`` URL.

    ``max_size`` caps each file (and each download) before and after decompression.  A file
    that is no feed, or unusable, is a :class:`FeedError` when it is ``location`` itself, and a
    warning naming it inside a directory (dot-files and dot-directories, such as ``.git``, are
    passed over: they are never feeds).
    """
    if isinstance(location, str) and "://" in location:
        scheme = urlsplit(location).scheme.lower()
        if scheme == "file":
            return load(Path(unquote(urlsplit(location).path)), max_size=max_size)
        if scheme in ("http", "https"):
            return _load_url(location, max_size=max_size, timeout=timeout)
        raise FeedError(f"unsupported URL scheme {scheme!r}", where=location,
                        hint="give a path, or an http://, https:// or file:// URL")
    path = Path(location)
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise FeedError(f"cannot read it: {e.strerror or e}", where=str(path),
                        hint="give an existing file, directory or URL") from e
    if stat.S_ISDIR(mode):
        return _load_dir(path, max_size=max_size)
    if not stat.S_ISREG(mode):
        raise FeedError("not a regular file (a device, socket or pipe)", where=str(path))
    return _load_file(path, max_size=max_size)


def load_many(locations: Iterable[str | Path], *, max_size: int = DEFAULT_MAX_SIZE,
              timeout: float = DEFAULT_TIMEOUT, strict: bool = True) -> FeedResult:
    """:func:`load` of each location, concatenated in order.

    With ``strict`` (the default) the first unusable location raises its :class:`FeedError`;
    without, it becomes a warning and the others are still read.
    """
    advisories: list[Advisory] = []
    warnings: list[str] = []
    for location in locations:
        try:
            result = load(location, max_size=max_size, timeout=timeout)
        except FeedError as e:
            if strict:
                raise
            warnings.append(_warning(e, "skipped"))
            continue
        advisories.extend(result.advisories)
        warnings.extend(result.warnings)
    return FeedResult(tuple(advisories), tuple(warnings))


def _warning(error: FeedError, what: str) -> str:
    """One line: where, what was wrong, and what became of it (the hint is for errors)."""
    text = f"{error.where}: {error.message}" if error.where else error.message
    return f"{text}; {what}"


def _is_repo(path: Path) -> bool:
    return (path / "repodata" / "repomd.xml").is_file()


def _load_dir(root: Path, *, max_size: int) -> FeedResult:
    if _is_repo(root):
        return FeedResult(tuple(read_repodata(root, max_size=max_size)))
    advisories: list[Advisory] = []
    warnings: list[str] = []
    # os.walk does not follow symlinked directories, so a link loop cannot trap it.
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue
            sub = here / name
            if _is_repo(sub) and not sub.is_symlink():
                try:
                    advisories.extend(read_repodata(sub, max_size=max_size))
                except FeedError as e:
                    warnings.append(_warning(e, "repository skipped"))
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            try:
                if not stat.S_ISREG(path.stat().st_mode):
                    warnings.append(f"{path}: not a regular file; skipped")
                    continue
                result = _load_file(path, max_size=max_size)
            except FeedError as e:
                warnings.append(_warning(e, "skipped"))
                continue
            except OSError as e:
                warnings.append(f"{path}: cannot read it ({e.strerror or e}); skipped")
                continue
            advisories.extend(result.advisories)
            warnings.extend(result.warnings)
    if not advisories and not warnings:
        raise FeedError("the directory holds no feed files", where=str(root),
                        hint=f"formats read: {_NAMES}")
    return FeedResult(tuple(advisories), tuple(warnings))


def _load_file(path: Path, *, max_size: int) -> FeedResult:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise FeedError(f"cannot read the file: {e.strerror or e}", where=str(path)) from e
    if magic == _ZIP:
        # an archive may exceed the per-document cap; OsvReader caps each member instead
        return OsvReader(max_size=max_size).read(path)
    if magic == _AR:
        # a Debian binary package: the advisories its changelog names
        return DebReader().read(path)
    if _is_tracker_dump(path):
        # the security tracker's dump is larger than any advisory document
        return TrackerJsonReader(max_size=max(max_size, MAX_TRACKER)).read(path)
    data = read_input(path, max_size=max_size)
    return _parse(data, source=str(path), path=path, max_size=max_size)


def _is_tracker_dump(path: Path) -> bool:
    """Whether the (uncompressed) file starts like the Debian security tracker's JSON."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
    except OSError:
        return False
    return TrackerJsonReader().sniff(path, head)


def _parse(data: bytes, *, source: str, path: Path, max_size: int) -> FeedResult:
    reader = reader_for(path, data[:_HEAD], max_size=max_size)
    if reader is None:
        if data.lstrip()[:1] in (b"{", b"["):
            # JSON whose first bytes name no format may just be cut short (a Bodhi record
            # names its builds late): say where it breaks, file:line:column, if it does.
            load_document(data, source=source, yaml_ok=False)
        raise FeedError("not an advisory feed in any format Alicorn reads", where=source,
                        hint=f"formats read: {_NAMES}")
    return reader.parse(data, source=source)


def _load_url(url: str, *, max_size: int, timeout: float) -> FeedResult:
    if url.endswith("/"):
        # A directory URL, as a repository's baseurl is written.
        repo = _load_repo_url(url, max_size=max_size, timeout=timeout)
        if repo is not None:
            return repo
    data = _download(url, max_size=max_size, timeout=timeout)
    if data.startswith(_ZIP):
        return OsvReader(max_size=max_size).parse(data, source=url)
    data = decompress(data, source=url, max_size=max_size)
    try:
        return _parse(data, source=url, path=Path(unquote(urlsplit(url).path) or "feed"),
                      max_size=max_size)
    except FeedError as e:
        # ``http://host/repo`` without its slash: the server's index page is no feed, but
        # the repository behind it is.
        if url.endswith("/") or not e.message.startswith("not an advisory feed"):
            raise
        repo = _load_repo_url(url + "/", max_size=max_size, timeout=timeout)
        if repo is None:
            raise
        return repo


def _load_repo_url(base: str, *, max_size: int, timeout: float) -> FeedResult | None:
    """The advisories of the RPM repository at the URL ``base`` (ending in ``/``), read
    through its ``repodata/repomd.xml`` as :func:`read_repodata` reads a local one (the
    checksum checked); None when there is no repomd.xml there."""
    import tempfile
    from dataclasses import replace
    from urllib.parse import urljoin

    from defusedxml import ElementTree as SafeET
    from defusedxml.common import DefusedXmlException

    repomd_url = urljoin(base, "repodata/repomd.xml")
    try:
        repomd = _download(repomd_url, max_size=max_size, timeout=timeout)
    except FeedError:
        return None
    try:
        root = SafeET.fromstring(repomd)
    except (SafeET.ParseError, DefusedXmlException, ValueError):
        return None     # not a repository's repomd.xml (an HTML error page, say)
    hrefs = [loc.get("href") or "" for data in root if data.tag.endswith("}data")
             and data.get("type") == "updateinfo"
             for loc in data if loc.tag.endswith("}location")]
    with tempfile.TemporaryDirectory(prefix="alicorn-repo-") as tmp:
        local = Path(tmp)
        (local / "repodata").mkdir()
        (local / "repodata" / "repomd.xml").write_bytes(repomd)
        href = hrefs[0] if hrefs else ""
        if href:
            parts = Path(href).parts
            if Path(href).is_absolute() or ".." in parts or "://" in href:
                raise FeedError(f"the updateinfo location {href!r} points outside the "
                                "repository", where=repomd_url)
            target = local.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_download(urljoin(base, href), max_size=max_size,
                                         timeout=timeout))
        advisories = read_repodata(local, max_size=max_size)
    source = urljoin(base, href) if href else repomd_url
    found = tuple(replace(a, source=source) for a in advisories)
    warnings = () if found else (f"{repomd_url}: the repository has no updateinfo; no "
                                 "advisories in it",)
    return FeedResult(found, warnings)


def _download(url: str, *, max_size: int, timeout: float) -> bytes:
    """The body at ``url``, at most ``max_size`` bytes, within ``timeout`` seconds per read."""
    request = urllib.request.Request(url, headers={"User-Agent": "alicorn"})
    hint = "check the URL and the network, or download the feed and import the file"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_size:
                raise FeedError(f"the server announces {length} bytes, more than the "
                                f"{max_size}-byte cap; not downloading it", where=url)
            body = bytearray()
            while chunk := response.read(1 << 20):
                body += chunk
                if len(body) > max_size:
                    raise FeedError(f"the download exceeds the {max_size}-byte cap; "
                                    "stopped", where=url)
            return bytes(body)
    except FeedError:
        raise
    except urllib.error.HTTPError as e:
        raise FeedError(f"the server answered HTTP {e.code} {e.reason}", where=url,
                        hint=hint) from e
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            raise FeedError(f"timed out after {timeout:g} s", where=url, hint=hint) from e
        raise FeedError(f"cannot download it: {reason}", where=url, hint=hint) from e
    except TimeoutError as e:
        raise FeedError(f"timed out after {timeout:g} s", where=url, hint=hint) from e
    except (OSError, ValueError) as e:
        raise FeedError(f"cannot download it: {e}", where=url, hint=hint) from e
