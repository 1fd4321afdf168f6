"""Image layers unpacked into a private directory, safely, for the package readers.

An image is untrusted input.  Its layers are tar streams that may name absolute paths, climb out
with ``..``, write through a symlink an earlier entry planted (``etc -> /etc`` then
``etc/passwd``), hard-link to a file outside, carry device nodes or setuid bits, or expand to a
disk's worth of zeros.  So no layer goes through ``tarfile.extractall``: every entry is checked
on its own and written by :class:`_Applier`, which

* drops a leading ``/`` and refuses any entry with a ``..`` component (a warning names it);
* resolves the entry's parent directory the way a chroot would (:func:`~alicorn.fs.resolve_in_root`:
  a symlink in the parent path is followed, but never out of the root), checks every component of
  the result is a real directory, and never follows a symlink in the last component (an existing
  symlink there is replaced, as overlayfs would);
* creates hard links only to regular files (or symlinks) already inside the root;
* skips device nodes and FIFOs, strips setuid/setgid/sticky bits and file capabilities (xattrs
  are not applied at all);
* caps each file, the total, the number of entries and the size of tar headers; exceeding a cap
  is an :class:`~alicorn.inventory.model.InventoryError` naming the layer and the entry.

Layers are streamed: the blob is hashed as it is read (a blob whose sha256 differs from the
manifest is an error naming it), decompressed (gzip, zstd, xz, bzip2 or none, found by their
magic bytes), hashed again for the config's ``diff_ids``, and written entry by entry.  Whiteouts
(``.wh.NAME``, ``.wh..wh..opq``) remove what lower layers put there.

The three image formats: an OCI image layout (``index.json`` -> manifest, through an index of
indexes if need be, picking the host's platform or the only image), an OCI archive (a tar of a
layout, read in place without extracting it) and a docker archive (``podman save --format
docker-archive``: ``manifest.json`` + config + layer tars).
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import hashlib
import json
import lzma
import os
import platform as _platform
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol, cast

import zstandard

from alicorn.digest import Digest
from alicorn.errors import BadInput
from alicorn.fs import lstat_or_none, remove_tree, resolve_in_root
from alicorn.inventory.model import InventoryError

__all__ = [
    "Layer",
    "Limits",
    "UnpackedImage",
    "apply_layer",
    "archive_kind",
    "host_platform",
    "is_oci_layout",
    "unpack",
    "unpack_docker_archive",
    "unpack_layout",
    "unpack_oci_archive",
    "unpacked",
]

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_INDEXES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
_MANIFESTS = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
_CONFIGS = ("application/vnd.oci.image.config.v1+json",
            "application/vnd.docker.container.image.v1+json")
ANNOTATION_REF = "org.opencontainers.image.ref.name"

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_CHUNK = 1 << 20
_MAX_INDEX_DEPTH = 4
_MAX_ARCHIVE_LINKS = 8
# After a tar's end-of-archive blocks only zero padding may follow; a few records of it is
# normal, megabytes of it is a decompression bomb.
_MAX_TRAILER = 64 << 20
_GIB = 1 << 30


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise BadInput(f"{name}={raw!r} is not a whole number") from e
    if value <= 0:
        raise BadInput(f"{name} must be positive, not {value}")
    return value


@dataclass(frozen=True)
class Limits:
    """What one image may hold before unpacking it stops with an error.

    The defaults fit any real distribution image with room to spare; :meth:`from_env` lets a
    person raise them (``ALICORN_UNPACK_MAX_FILE``, ``..._MAX_TOTAL`` in bytes,
    ``..._MAX_ENTRIES``) for an unusual image.
    """

    max_file: int = 4 * _GIB          # bytes in one file
    max_total: int = 32 * _GIB        # bytes in all files of all layers
    max_entries: int = 2_000_000      # tar entries in all layers
    max_layers: int = 512
    max_document: int = 16 << 20      # an index, manifest or config (JSON)
    max_header: int = 1 << 20         # one pax or GNU long-name header (read into memory)
    max_warnings: int = 50            # kept verbatim; the rest are counted

    @classmethod
    def from_env(cls) -> Limits:
        base = cls()
        return cls(max_file=_env_int("ALICORN_UNPACK_MAX_FILE", base.max_file),
                   max_total=_env_int("ALICORN_UNPACK_MAX_TOTAL", base.max_total),
                   max_entries=_env_int("ALICORN_UNPACK_MAX_ENTRIES", base.max_entries))


_LIMITS_HINT = ("the image is damaged or hostile; if it is genuine, raise the limit with "
                "ALICORN_UNPACK_MAX_FILE / ALICORN_UNPACK_MAX_TOTAL / ALICORN_UNPACK_MAX_ENTRIES")


@dataclass(frozen=True)
class Layer:
    """One layer as the manifest describes it."""

    source: str                # where it is read from: a blob path, an archive member
    digest: Digest | None      # of the blob as stored (None: docker archives do not say)
    size: int | None
    diff_id: Digest | None     # of the uncompressed tar, from the config
    media_type: str | None = None


@dataclass(frozen=True)
class UnpackedImage:
    """An image's root filesystem at ``root``, and what the image said about itself.

    ``digest`` is the manifest's digest for OCI images; a docker archive has no manifest
    digest, so it is the config's (the image id, as podman and docker name it).
    """

    root: Path
    digest: Digest | None
    config_digest: Digest | None
    ref: str | None            # the ref name annotation / the first RepoTag
    platform: str | None       # "linux/amd64", from the config
    layers: tuple[Layer, ...]
    warnings: tuple[str, ...] = field(default=())


def host_platform() -> str:
    """``linux/<GOARCH>`` of this machine, as image indexes name platforms."""
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return f"linux/{arch}"


# -- reading blobs -------------------------------------------------------------------------------

_Opened = contextlib.AbstractContextManager[IO[bytes]]


class _Blobs(Protocol):
    where: str

    def open(self, digest: Digest, size: int | None, what: str) -> _Opened:
        ...


class _LayoutBlobs:
    """Blobs of an OCI layout directory."""

    def __init__(self, layout: Path):
        self.layout = layout
        self.where = str(layout)

    @contextlib.contextmanager
    def open(self, digest: Digest, size: int | None, what: str) -> Iterator[IO[bytes]]:
        path = self.layout / "blobs" / "sha256" / digest.hex
        try:
            # O_NOFOLLOW and O_NONBLOCK: a blob that is a symlink or a FIFO is refused, not
            # followed or waited on.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise InventoryError(f"{_named(what, digest)} is missing from the layout",
                                 where=str(path), hint="the layout is incomplete") from e
        except OSError as e:
            raise InventoryError(f"cannot open {_named(what, digest)}: {e.strerror}",
                                 where=str(path)) from e
        f = os.fdopen(fd, "rb")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InventoryError(f"{_named(what, digest)} is not a regular file",
                                     where=str(path))
            _check_size(st.st_size, size, what, digest, str(path))
            yield f
        finally:
            f.close()


class _ArchiveBlobs:
    """Members of a tar archive, read in place (seeking, so the archive is not extracted)."""

    def __init__(self, archive: Path, limits: Limits):
        self.archive = archive
        self.where = str(archive)
        try:
            self._tar = tarfile.open(  # noqa: SIM115 (closed by close())
                archive, "r:*", tarinfo=_tarinfo_class(limits))
        except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as e:
            raise InventoryError(f"not a readable tar archive: {e}", where=str(archive)) from e
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for m in self._tar:
                if len(self.members) >= limits.max_entries:
                    raise InventoryError(f"the archive has more than {limits.max_entries} entries",
                                         where=str(archive), hint=_LIMITS_HINT)
                parts = _split(m.name)
                if parts:
                    self.members["/".join(parts)] = m
        except (tarfile.TarError, OSError, EOFError) as e:
            self._tar.close()
            raise InventoryError(f"the archive is corrupt: {e}", where=str(archive)) from e
        except BaseException:
            self._tar.close()
            raise

    def close(self) -> None:
        self._tar.close()

    def member(self, name: str, what: str) -> tarfile.TarInfo:
        """The regular file ``name`` (following the archive's own symlinks, within it)."""
        current = "/".join(_split(name) or [])
        for _ in range(_MAX_ARCHIVE_LINKS):
            m = self.members.get(current)
            if m is None:
                raise InventoryError(f"{what} {name} is missing from the archive",
                                     where=self.where, hint="the archive is incomplete")
            if m.isreg():
                return m
            if not m.issym():
                raise InventoryError(f"{what} {name} is not a regular file", where=self.where)
            target = PurePosixPath(current).parent / m.linkname
            parts: list[str] = []
            for p in target.parts:
                if p == "..":
                    if not parts:
                        raise InventoryError(f"{what} {name} links out of the archive",
                                             where=self.where)
                    parts.pop()
                elif p not in ("", ".", "/"):
                    parts.append(p)
            current = "/".join(parts)
        raise InventoryError(f"{what} {name}: too many levels of symbolic links",
                             where=self.where)

    @contextlib.contextmanager
    def open_member(self, name: str, size: int | None, what: str,
                    digest: Digest | None = None) -> Iterator[IO[bytes]]:
        m = self.member(name, what)
        _check_size(m.size, size, what, digest, f"{self.where}:{name}")
        f = self._tar.extractfile(m)
        assert f is not None  # a regular member always has a file object
        try:
            yield f
        finally:
            f.close()

    def open(self, digest: Digest, size: int | None, what: str) -> _Opened:
        return self.open_member(f"blobs/sha256/{digest.hex}", size, what, digest)

    def read(self, name: str, what: str, limit: int) -> bytes:
        with self.open_member(name, None, what) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InventoryError(f"{what} {name} is larger than {limit} bytes", where=self.where,
                                 hint=_LIMITS_HINT)
        return data


def _named(what: str, digest: Digest | None) -> str:
    """``what`` and the digest, unless ``what`` already names it (a layer's label does)."""
    return f"{what} {digest}" if digest and str(digest) not in what else what


def _check_size(actual: int, expected: int | None, what: str, digest: Digest | None,
                where: str) -> None:
    if expected is not None and actual != expected:
        name = _named(what, digest)
        raise InventoryError(f"{name} is {actual} bytes but the manifest says {expected}",
                             where=where, hint="the image is damaged or was tampered with")


def _read_document(blobs: _Blobs, desc: _Descriptor, what: str, limits: Limits) -> Any:
    """A JSON blob (index, manifest, config), checked against its digest and size."""
    if desc.size is not None and desc.size > limits.max_document:
        raise InventoryError(f"{what} {desc.digest} is {desc.size} bytes, more than the "
                             f"{limits.max_document} a JSON document may be", where=blobs.where,
                             hint=_LIMITS_HINT)
    with blobs.open(desc.digest, desc.size, what) as f:
        data = f.read(limits.max_document + 1)
    if len(data) > limits.max_document:
        raise InventoryError(f"{what} {desc.digest} is larger than {limits.max_document} bytes",
                             where=blobs.where, hint=_LIMITS_HINT)
    if Digest.of_bytes(data) != desc.digest:
        raise InventoryError(f"{what} {desc.digest} does not match its digest (its sha256 is "
                             f"{Digest.of_bytes(data)})", where=blobs.where,
                             hint="the image is damaged or was tampered with")
    return _parse_json(data, f"{what} {desc.digest}", blobs.where)


def _parse_json(data: bytes, what: str, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InventoryError(f"{what} is not valid JSON: {e}", where=where) from e


# -- descriptors and manifests -------------------------------------------------------------------

@dataclass(frozen=True)
class _Descriptor:
    digest: Digest
    size: int | None
    media_type: str | None
    platform: str | None
    ref: str | None


def _descriptor(raw: Any, what: str, where: str) -> _Descriptor:
    if not isinstance(raw, dict):
        raise InventoryError(f"{what} is not a descriptor object", where=where)
    try:
        digest = Digest(str(raw.get("digest", "")))
    except ValueError as e:
        # Only sha256 is read; a digest is also never trusted as a path before this check.
        raise InventoryError(f"{what} has no sha256 digest: {raw.get('digest')!r}",
                             where=where) from e
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InventoryError(f"{what} {digest} has an invalid size {size!r}", where=where)
    media = raw.get("mediaType")
    plat = raw.get("platform")
    platform = None
    if isinstance(plat, dict) and isinstance(plat.get("os"), str):
        platform = f"{plat['os']}/{plat.get('architecture', '')}"
    ann = raw.get("annotations")
    ref = ann.get(ANNOTATION_REF) if isinstance(ann, dict) else None
    return _Descriptor(digest=digest, size=size, media_type=media if isinstance(media, str)
                       else None, platform=platform, ref=ref if isinstance(ref, str) else None)


def _manifests_of(blobs: _Blobs, index: Any, limits: Limits, where: str, depth: int = 0,
                  ref: str | None = None) -> list[_Descriptor]:
    """Every image manifest an index names, through nested indexes, with inherited ref names."""
    if depth > _MAX_INDEX_DEPTH:
        raise InventoryError(f"indexes nest more than {_MAX_INDEX_DEPTH} deep", where=where)
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InventoryError("the index has no list of manifests", where=where)
    found: list[_Descriptor] = []
    for i, raw in enumerate(index["manifests"]):
        desc = _descriptor(raw, f"manifest {i + 1} of the index", where)
        name = desc.ref or ref
        if desc.media_type in _INDEXES:
            inner = _read_document(blobs, desc, "index", limits)
            found += _manifests_of(blobs, inner, limits, where, depth + 1, name)
        elif desc.media_type in _MANIFESTS or desc.media_type is None:
            found.append(_Descriptor(desc.digest, desc.size, desc.media_type, desc.platform,
                                     name))
        # Anything else (signatures, attestations, artifacts) is not an image to unpack.
    return found


def _ref_matches(wanted: str, ref: str | None) -> bool:
    if ref is None:
        return False
    return ref == wanted or (":" not in wanted and ref.rsplit(":", 1)[-1] == wanted)


def _choose(manifests: list[_Descriptor], ref: str | None, platform: str, where: str
            ) -> _Descriptor:
    """The one image to unpack: by ref name if given, then this platform, else the only one."""
    candidates = manifests
    if ref is not None:
        candidates = [m for m in manifests if _ref_matches(ref, m.ref)]
        if not candidates:
            refs = sorted({m.ref for m in manifests if m.ref})
            raise InventoryError(f"no image named {ref!r} in the index", where=where,
                                 hint=f"it names: {', '.join(refs) or 'no ref names'}")
    if not candidates:
        raise InventoryError("the index names no image manifest", where=where)
    if len(candidates) == 1:
        return candidates[0]
    exact = [m for m in candidates if m.platform == platform]
    unnamed = [m for m in candidates if m.platform is None]
    for group in (exact, unnamed):
        if len({m.digest for m in group}) == 1:
            return group[0]
    shown = ", ".join(sorted({f"{m.ref or m.digest.hex[:12]} ({m.platform or 'no platform'})"
                              for m in candidates}))
    raise InventoryError(f"the index holds {len(candidates)} images and none is the only one "
                         f"for {platform}", where=where,
                         hint=f"name one as PATH:REF; it holds {shown}")


def _image_parts(blobs: _Blobs, manifest_desc: _Descriptor, limits: Limits
                 ) -> tuple[list[Layer], Digest, dict[str, Any]]:
    where = blobs.where
    manifest = _read_document(blobs, manifest_desc, "manifest", limits)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise InventoryError(f"manifest {manifest_desc.digest} has no list of layers",
                             where=where, hint="it is not a container image manifest")
    config_desc = _descriptor(manifest.get("config"), "the manifest's config", where)
    if config_desc.media_type is not None and config_desc.media_type not in _CONFIGS:
        raise InventoryError(f"manifest {manifest_desc.digest} is not a container image (its "
                             f"config is {config_desc.media_type})", where=where)
    config = _read_document(blobs, config_desc, "config", limits)
    if not isinstance(config, dict):
        raise InventoryError(f"config {config_desc.digest} is not a JSON object", where=where)
    descs = [_descriptor(raw, f"layer {i + 1}", where)
             for i, raw in enumerate(manifest["layers"])]
    if len(descs) > limits.max_layers:
        raise InventoryError(f"the image has {len(descs)} layers, more than {limits.max_layers}",
                             where=where, hint=_LIMITS_HINT)
    diff_ids = _diff_ids(config, len(descs), where)
    layers = [Layer(source=f"blobs/sha256/{d.digest.hex}", digest=d.digest, size=d.size,
                    diff_id=diff_ids[i], media_type=d.media_type)
              for i, d in enumerate(descs)]
    return layers, config_desc.digest, config


def _diff_ids(config: dict[str, Any], count: int, where: str) -> list[Digest | None]:
    rootfs = config.get("rootfs")
    raw = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if raw is None:
        return [None] * count
    if not isinstance(raw, list) or len(raw) != count:
        got = len(raw) if isinstance(raw, list) else "no"
        raise InventoryError(f"the config lists {got} diff_ids for {count} layers", where=where,
                             hint="the image is damaged")
    try:
        return [Digest(str(d)) for d in raw]
    except ValueError as e:
        raise InventoryError(f"the config has a malformed diff_id: {e}", where=where) from e


def _config_platform(config: dict[str, Any]) -> str | None:
    os_ = config.get("os")
    arch = config.get("architecture")
    return f"{os_}/{arch}" if isinstance(os_, str) and isinstance(arch, str) else None


# -- streams -------------------------------------------------------------------------------------

class _HashingReader:
    """Reads ``source``, hashing and counting every byte handed out; can give back a peeked
    prefix."""

    def __init__(self, source: IO[bytes] | Any):
        self._source = source
        self._head = b""
        self.sha = hashlib.sha256()
        self.count = 0

    def peek(self, n: int) -> bytes:
        while len(self._head) < n:
            chunk = self._source.read(n - len(self._head))
            if not chunk:
                break
            self._head += chunk
        return self._head[:n]

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                data, self._head = self._head, b""
                if n < 0:
                    data += self._source.read()
                elif n > len(data):
                    data += self._source.read(n - len(data))
            else:
                data, self._head = self._head[:n], self._head[n:]
        else:
            data = self._source.read(n)
        self.sha.update(data)
        self.count += len(data)
        return bytes(data)

    def digest(self) -> Digest:
        return Digest("sha256:" + self.sha.hexdigest())

    def drain(self, limit: int) -> tuple[int, bool]:
        """Read to the end (at most ``limit`` bytes); (bytes read, whether all were zero)."""
        total, zero = 0, True
        while True:
            chunk = self.read(_CHUNK)
            if not chunk:
                return total, zero
            total += len(chunk)
            zero = zero and chunk.count(0) == len(chunk)
            if total > limit:
                return total, zero


def _decompressor(raw: _HashingReader) -> tuple[Any, str]:
    magic = raw.peek(6)
    src = cast(IO[bytes], raw)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=src, mode="rb"), "gzip"
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True), "zstd"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(src), "xz"
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(src), "bzip2"
    return raw, "tar"


# tarfile's header errors, which typeshed does not list: SubsequentHeaderError is the one
# TarFile.next() turns into ReadError instead of treating as the end of the archive.
_InvalidHeaderError: type[Exception] = getattr(tarfile, "InvalidHeaderError")  # noqa: B009
_TruncatedHeaderError: type[Exception] = getattr(tarfile, "TruncatedHeaderError")  # noqa: B009
_SubsequentHeaderError: type[Exception] = getattr(tarfile, "SubsequentHeaderError")  # noqa: B009


class _CappedTarInfo(tarfile.TarInfo):
    """tarfile reads pax and GNU long-name headers into memory whole: cap them.  And a corrupt
    header after the first would end the archive silently: make it an error."""

    max_header = Limits().max_header

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _CappedTarInfo:
        try:
            return super().frombuf(buf, encoding, errors)
        except (_InvalidHeaderError, _TruncatedHeaderError) as e:
            raise _SubsequentHeaderError(f"corrupt tar header: {e}") from None

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        self._cap()
        return super()._proc_pax(tarfile_)  # type: ignore[misc,no-any-return]

    def _proc_gnulong(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        self._cap()
        return super()._proc_gnulong(tarfile_)  # type: ignore[misc,no-any-return]

    def _cap(self) -> None:
        if self.size > self.max_header:
            raise _SubsequentHeaderError(
                f"a {self.size}-byte extended header (more than {self.max_header})")


def _tarinfo_class(limits: Limits) -> type[_CappedTarInfo]:
    if limits.max_header == _CappedTarInfo.max_header:
        return _CappedTarInfo
    return type("_CappedTarInfo", (_CappedTarInfo,), {"max_header": limits.max_header})


# -- applying a layer ----------------------------------------------------------------------------

def _split(name: str) -> list[str] | None:
    """The components of a tar entry name; None when one is ``..``."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return parts


class _Budget:
    """What all layers of one image have used of the limits."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.bytes = 0
        self.entries = 0
        self.warnings: list[str] = []
        self.suppressed = 0

    def warn(self, text: str) -> None:
        if len(self.warnings) < self.limits.max_warnings:
            self.warnings.append(text)
        else:
            self.suppressed += 1

    def all_warnings(self) -> tuple[str, ...]:
        extra = [f"... and {self.suppressed} more warnings"] if self.suppressed else []
        return (*self.warnings, *extra)


class _Skip(Exception):
    """This entry is not written; the message says why."""


class _Applier:
    """Writes one layer's entries into ``root`` (see the module docstring for the rules)."""

    def __init__(self, root: Path, layer: str, budget: _Budget):
        self.root = root
        self.layer = layer
        self.budget = budget
        self.limits = budget.limits
        self.written: set[str] = set()   # paths (relative, resolved) this layer created
        self.dirs: set[str] = {""}       # relative paths known to be real directories
        self.absolute = 0
        self.devices = 0

    # The tar is read with next() rather than iterated so that its member list can be
    # emptied as it goes: a million-entry layer would otherwise sit in memory.
    def apply(self, tar: tarfile.TarFile) -> None:
        while True:
            try:
                m = tar.next()
            except tarfile.TarError as e:
                raise InventoryError(f"{self.layer} is not a readable tar: {e}",
                                     hint="the image is damaged") from e
            if m is None:
                break
            tar.members.clear()  # type: ignore[attr-defined]  # typeshed omits it
            self._account(m)
            try:
                self._entry(tar, m)
            except _Skip as e:
                self.budget.warn(f"{self.layer}: skipped {m.name!r}: {e}")
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise InventoryError(f"no space left unpacking {self.layer}",
                                         where=str(self.root),
                                         hint="free space in the temporary directory") from e
                self.budget.warn(f"{self.layer}: skipped {m.name!r}: {e.strerror}")
        if self.absolute:
            self.budget.warn(f"{self.layer}: {self.absolute} entries had absolute paths; "
                             "they were placed relative to the image's root")
        if self.devices:
            self.budget.warn(f"{self.layer}: skipped {self.devices} device nodes and FIFOs")

    def _account(self, m: tarfile.TarInfo) -> None:
        b = self.budget
        b.entries += 1
        if b.entries > self.limits.max_entries:
            raise InventoryError(f"{self.layer}: more than {self.limits.max_entries} entries "
                                 f"in the image (at {m.name!r})", hint=_LIMITS_HINT)
        if m.size > self.limits.max_file:
            raise InventoryError(f"{self.layer}: entry {m.name!r} is {m.size} bytes, more than "
                                 f"the {self.limits.max_file} allowed for one file",
                                 hint=_LIMITS_HINT)
        b.bytes += m.size
        if b.bytes > self.limits.max_total:
            raise InventoryError(f"{self.layer}: the image's files exceed {self.limits.max_total}"
                                 f" bytes in all (at entry {m.name!r})", hint=_LIMITS_HINT)

    def _entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        if m.name.startswith("/"):
            self.absolute += 1
        parts = _split(m.name)
        if parts is None:
            raise _Skip("it has a '..' component")
        if not parts:
            return  # the root directory itself
        if m.ischr() or m.isblk() or m.isfifo():
            self.devices += 1
            return
        name = parts[-1]
        parent_rel = self._parent(parts[:-1])
        parent = self.root / parent_rel if parent_rel else self.root
        rel = f"{parent_rel}/{name}" if parent_rel else name
        if name == _OPAQUE:
            self._clear(parent, parent_rel)
            return
        if name.startswith(_WHITEOUT):
            hidden = name[len(_WHITEOUT):]
            if hidden in ("", ".", ".."):
                # ".wh..." would otherwise whiteout the directory above.
                raise _Skip("it is a whiteout of no name")
            if hidden.startswith(_WHITEOUT):
                return  # aufs' own bookkeeping (.wh..wh..plnk and the like)
            hidden_rel = f"{parent_rel}/{hidden}" if parent_rel else hidden
            if hidden_rel not in self.written:  # a whiteout hides lower layers only
                self._remove(parent / hidden, hidden_rel)
            return
        path = parent / name
        existing = lstat_or_none(path)
        if m.isdir():
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                os.chmod(path, _dir_mode(m.mode))
            else:
                if existing is not None:
                    self._remove(path, rel)
                os.mkdir(path, _dir_mode(m.mode))
                os.chmod(path, _dir_mode(m.mode))  # mkdir's mode goes through the umask
            self.dirs.add(rel)
        elif m.isreg():
            if existing is not None:
                self._remove(path, rel)
            self._write_file(tar, m, path)
        elif m.issym():
            if existing is not None:
                self._remove(path, rel)
            # The target is stored as written; readers resolve it inside the root.
            os.symlink(m.linkname, path)
        elif m.islnk():
            target = self._link_target(m.linkname)
            if existing is not None:
                if os.path.samestat(existing, os.lstat(target)):
                    self.written.add(rel)
                    return
                self._remove(path, rel)
            os.link(target, path, follow_symlinks=False)
        else:
            raise _Skip(f"unsupported entry type {m.type!r}")
        self.written.add(rel)

    def _parent(self, parts: list[str]) -> str:
        """The relative path of the directory ``parts`` names, resolved inside the root and
        created if missing; every component of it is checked to be a real directory."""
        rel = "/".join(parts)
        if rel in self.dirs:
            return rel
        try:
            resolved = resolve_in_root(self.root, rel)
        except BadInput as e:
            raise _Skip("its parent path has a symlink loop") from e
        rel_parts = resolved.relative_to(self.root).parts
        current = self.root
        done: list[str] = []
        for part in rel_parts:
            current = current / part
            done.append(part)
            here = "/".join(done)
            if here in self.dirs:
                continue
            st = lstat_or_none(current)
            if st is None:
                os.mkdir(current, 0o755)
                os.chmod(current, 0o755)
                self.written.add(here)
            elif stat.S_ISLNK(st.st_mode):
                # resolve_in_root followed every link; one here means the tree changed under
                # us, which nothing but this process should do.
                raise _Skip(f"{here} is a symlink after resolving it")
            elif not stat.S_ISDIR(st.st_mode):
                raise _Skip(f"its parent {here} is not a directory")
            self.dirs.add(here)
        result = "/".join(rel_parts)
        if rel == result:
            self.dirs.add(rel)
        return result

    def _link_target(self, linkname: str) -> Path:
        parts = _split(linkname)
        if not parts:
            raise _Skip(f"its hard link target {linkname!r} is outside the image")
        try:
            parent_rel = self._existing_parent(parts[:-1])
        except BadInput as e:
            raise _Skip("its hard link target's path has a symlink loop") from e
        target = self.root / parent_rel / parts[-1]
        st = lstat_or_none(target)
        if st is None:
            raise _Skip(f"its hard link target {linkname!r} does not exist")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise _Skip(f"its hard link target {linkname!r} is not a file")
        return target

    def _existing_parent(self, parts: list[str]) -> str:
        resolved = resolve_in_root(self.root, "/".join(parts))
        rel_parts = resolved.relative_to(self.root).parts
        current = self.root
        for part in rel_parts:
            current = current / part
            st = lstat_or_none(current)
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise _Skip("its hard link target's directory does not exist")
        return "/".join(rel_parts)

    def _write_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, path: Path) -> None:
        src = tar.extractfile(m)
        assert src is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        copied = 0
        try:
            with os.fdopen(fd, "wb", closefd=True) as out:
                while copied < m.size:
                    chunk = src.read(min(_CHUNK, m.size - copied))
                    if not chunk:
                        break
                    out.write(chunk)
                    copied += len(chunk)
                os.fchmod(out.fileno(), _file_mode(m.mode))
        finally:
            src.close()
        if copied != m.size:
            raise InventoryError(f"{self.layer} ends inside entry {m.name!r} ({copied} of "
                                 f"{m.size} bytes)", hint="the layer is truncated")

    def _remove(self, path: Path, rel: str) -> None:
        st = lstat_or_none(path)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)  # does not follow symlinks inside
            self.dirs = {d for d in self.dirs if d != rel and not d.startswith(rel + "/")}
        else:
            os.unlink(path)

    def _clear(self, directory: Path, rel: str) -> None:
        """An opaque directory: remove what lower layers put in it, keep this layer's."""
        st = lstat_or_none(directory)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return
        for entry in list(os.scandir(directory)):
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            child = directory / entry.name
            if child_rel in self.written:
                if entry.is_dir(follow_symlinks=False):
                    self._clear(child, child_rel)
            else:
                self._remove(child, child_rel)


def _file_mode(mode: int) -> int:
    return (mode & 0o777) | 0o600    # no setuid/setgid/sticky; readable by us


def _dir_mode(mode: int) -> int:
    return (mode & 0o777) | 0o700


def apply_layer(stream: IO[bytes] | Any, root: Path, *, name: str,
                digest: Digest | None = None, diff_id: Digest | None = None,
                limits: Limits | None = None, _budget: _Budget | None = None
                ) -> tuple[str, ...]:
    """Apply one layer blob read from ``stream`` (compressed or not) onto ``root``.

    ``name`` says which layer it is in errors ("layer 2/3 sha256:..."). ``digest`` and
    ``diff_id``, when given, must match the sha256 of the blob and of the uncompressed tar.
    Returns the warnings (skipped entries).
    """
    budget = _budget or _Budget(limits or Limits.from_env())
    raw = _HashingReader(stream)
    decompressed, kind = _decompressor(raw)
    plain = _HashingReader(decompressed) if decompressed is not raw else raw
    try:
        try:
            tar = tarfile.open(  # noqa: SIM115 (a with block below)
                fileobj=cast(IO[bytes], plain), mode="r|", tarinfo=_tarinfo_class(budget.limits))
        except tarfile.ReadError as e:
            if "empty file" in str(e):
                # An empty layer (no entries, no end blocks) is valid: nothing to apply.
                tar = None
            else:
                raise InventoryError(f"{name} is not a tar archive ({kind}): {e}",
                                     hint="the image is damaged") from e
        if tar is not None:
            with tar:
                _Applier(root, name, budget).apply(tar)
        tail, zero = plain.drain(_MAX_TRAILER)
        if tail > _MAX_TRAILER:
            raise InventoryError(f"{name} has more than {_MAX_TRAILER} bytes after the end of "
                                 "its tar", hint="the layer is damaged or a decompression bomb")
        if not zero:
            raise InventoryError(f"{name} has data after the end of its tar (a corrupt header?)",
                                 hint="the layer is damaged")
        if plain is not raw:
            raw.drain(_MAX_TRAILER)
    except (OSError, EOFError, zstandard.ZstdError, lzma.LZMAError) as e:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InventoryError(f"no space left unpacking {name}", where=str(root)) from e
        raise InventoryError(f"{name} cannot be decompressed ({kind}): {e}",
                             hint="the layer is damaged") from e
    if digest is not None and raw.digest() != digest:
        raise InventoryError(f"{name}: the blob's sha256 is {raw.digest()}, not {digest} as the "
                             "manifest says", hint="the image is damaged or was tampered with")
    if diff_id is not None and plain.digest() != diff_id:
        raise InventoryError(f"{name}: the uncompressed layer's sha256 is {plain.digest()}, not "
                             f"the config's diff_id {diff_id}",
                             hint="the image is damaged or was tampered with")
    return budget.all_warnings() if _budget is None else ()


def _apply_all(root: Path, layers: list[Layer],
               opener: Callable[[Layer, str], _Opened],
               limits: Limits, where: str) -> tuple[str, ...]:
    budget = _Budget(limits)
    for i, layer in enumerate(layers):
        label = f"layer {i + 1}/{len(layers)} {layer.digest or layer.diff_id or layer.source}"
        try:
            with opener(layer, label) as f:
                apply_layer(f, root, name=label, digest=layer.digest, diff_id=layer.diff_id,
                            _budget=budget)
        except InventoryError as e:
            if e.where is None:
                e.where = where
            raise
    return budget.all_warnings()


def _prepare(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise InventoryError("the directory to unpack into is not empty", where=str(dest))


# -- the three formats ---------------------------------------------------------------------------

def is_oci_layout(path: Path) -> bool:
    """Whether ``path`` is a directory holding an OCI image layout."""
    return (path / "oci-layout").is_file() and (path / "index.json").is_file()


def _unpack_from_index(blobs: _Blobs, index_data: bytes, dest: Path, ref: str | None,
                       platform: str | None, limits: Limits) -> UnpackedImage:
    where = blobs.where
    index = _parse_json(index_data, "index.json", where)
    manifests = _manifests_of(blobs, index, limits, where)
    chosen = _choose(manifests, ref, platform or host_platform(), where)
    layers, config_digest, config = _image_parts(blobs, chosen, limits)
    _prepare(dest)

    def opener(layer: Layer, label: str) -> _Opened:
        assert layer.digest is not None  # every OCI layer descriptor has one
        return blobs.open(layer.digest, layer.size, label)

    warnings = _apply_all(dest, layers, opener, limits, where)
    return UnpackedImage(root=dest, digest=chosen.digest, config_digest=config_digest,
                         ref=chosen.ref, platform=_config_platform(config),
                         layers=tuple(layers), warnings=warnings)


def unpack_layout(layout: Path, dest: Path, *, ref: str | None = None,
                  platform: str | None = None, limits: Limits | None = None) -> UnpackedImage:
    """Unpack the image of the OCI layout ``layout`` into the empty (or new) directory ``dest``.

    ``ref`` picks an image by its ``org.opencontainers.image.ref.name`` (or its tag); else the
    one for ``platform`` (default: this host's, :func:`host_platform`), else the only one.
    """
    limits = limits or Limits.from_env()
    if not is_oci_layout(layout):
        raise InventoryError("not an OCI image layout (no oci-layout and index.json)",
                             where=str(layout))
    index_path = layout / "index.json"
    try:
        with open(index_path, "rb") as f:
            data = f.read(limits.max_document + 1)
    except OSError as e:
        raise InventoryError(f"cannot read index.json: {e.strerror}", where=str(layout)) from e
    if len(data) > limits.max_document:
        raise InventoryError(f"index.json is larger than {limits.max_document} bytes",
                             where=str(layout), hint=_LIMITS_HINT)
    return _unpack_from_index(_LayoutBlobs(layout), data, dest, ref, platform, limits)


def unpack_oci_archive(archive: Path, dest: Path, *, ref: str | None = None,
                       platform: str | None = None, limits: Limits | None = None
                       ) -> UnpackedImage:
    """Unpack the image of an OCI archive (a tar of an OCI layout) into ``dest``; the archive
    is read in place, not extracted.  ``ref`` and ``platform`` as for :func:`unpack_layout`."""
    limits = limits or Limits.from_env()
    blobs = _ArchiveBlobs(archive, limits)
    try:
        if "oci-layout" not in blobs.members:
            raise InventoryError("not an OCI archive (it has no oci-layout)", where=str(archive))
        data = blobs.read("index.json", "the archive's", limits.max_document)
        return _unpack_from_index(blobs, data, dest, ref, platform, limits)
    finally:
        blobs.close()


def unpack_docker_archive(archive: Path, dest: Path, *, ref: str | None = None,
                          limits: Limits | None = None) -> UnpackedImage:
    """Unpack a docker archive (``podman save --format docker-archive``, ``docker save``).

    Its ``manifest.json`` lists images with their config and layer tars; ``ref`` picks one by
    its RepoTags when there are several.  The config is checked against its file name (its
    sha256) and every layer against the config's ``diff_ids``.
    """
    limits = limits or Limits.from_env()
    where = str(archive)
    blobs = _ArchiveBlobs(archive, limits)
    try:
        if "manifest.json" not in blobs.members:
            raise InventoryError("not a docker archive (it has no manifest.json)", where=where)
        doc = _parse_json(blobs.read("manifest.json", "the archive's", limits.max_document),
                          "manifest.json", where)
        if not isinstance(doc, list) or not doc or not all(isinstance(d, dict) for d in doc):
            raise InventoryError("manifest.json is not a list of images", where=where)
        images: list[dict[str, Any]] = doc
        if ref is not None:
            images = [d for d in doc if any(_ref_matches(ref, t) for t in d.get("RepoTags") or [])]
            if not images:
                raise InventoryError(f"no image tagged {ref!r} in the archive", where=where)
        if len(images) > 1:
            tags = sorted(t for d in images for t in (d.get("RepoTags") or []))
            raise InventoryError(f"the archive holds {len(images)} images", where=where,
                                 hint=f"name one as PATH:TAG; it holds {', '.join(tags)}")
        image = images[0]
        config_name = image.get("Config")
        layer_names = image.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list) or \
                not all(isinstance(n, str) for n in layer_names):
            raise InventoryError("manifest.json lacks Config or Layers", where=where)
        if len(layer_names) > limits.max_layers:
            raise InventoryError(f"the image has {len(layer_names)} layers", where=where,
                                 hint=_LIMITS_HINT)
        config_data = blobs.read(config_name, "config", limits.max_document)
        config_digest = Digest.of_bytes(config_data)
        named = re.fullmatch(r"(?:.*/)?(?:sha256:)?([0-9a-f]{64})(?:\.json)?", config_name)
        if named and named.group(1) != config_digest.hex:
            raise InventoryError(f"config {config_name} does not match its name (its sha256 is "
                                 f"{config_digest})", where=where,
                                 hint="the image is damaged or was tampered with")
        config = _parse_json(config_data, f"config {config_name}", where)
        if not isinstance(config, dict):
            raise InventoryError(f"config {config_name} is not a JSON object", where=where)
        diff_ids = _diff_ids(config, len(layer_names), where)
        layers = [Layer(source=n, digest=None, size=None, diff_id=diff_ids[i])
                  for i, n in enumerate(layer_names)]
        _prepare(dest)
        warnings = _apply_all(dest, layers, lambda layer, label: blobs.open_member(
            layer.source, None, label), limits, where)
        tags = [t for t in image.get("RepoTags") or [] if isinstance(t, str)]
        chosen = [t for t in tags if ref is not None and _ref_matches(ref, t)]
        return UnpackedImage(root=dest, digest=config_digest, config_digest=config_digest,
                             ref=(chosen or tags or [None])[0],
                             platform=_config_platform(config), layers=tuple(layers),
                             warnings=warnings)
    finally:
        blobs.close()


def archive_kind(path: Path) -> str | None:
    """``"oci-archive"`` or ``"docker-archive"`` for an image archive, else None (not a tar,
    or a tar of something else).  An archive with both (``docker save`` of Docker 25+) is read
    as the OCI archive it also is."""
    try:
        with tarfile.open(path, "r:*", tarinfo=_CappedTarInfo) as tar:
            names = set()
            for i, m in enumerate(tar):
                if i > 100_000:
                    break
                parts = _split(m.name)
                if parts and len(parts) == 1:
                    names.add(parts[0])
                if {"oci-layout", "index.json"} <= names:
                    return "oci-archive"
    except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError):
        return None
    if "manifest.json" in names:
        return "docker-archive"
    return None


def unpack(path: Path, kind: str, dest: Path, *, ref: str | None = None,
           platform: str | None = None, limits: Limits | None = None) -> UnpackedImage:
    """Unpack ``path`` of ``kind`` (``oci-layout``, ``oci-archive``, ``docker-archive``)."""
    if kind == "oci-layout":
        return unpack_layout(path, dest, ref=ref, platform=platform, limits=limits)
    if kind == "oci-archive":
        return unpack_oci_archive(path, dest, ref=ref, platform=platform, limits=limits)
    if kind == "docker-archive":
        return unpack_docker_archive(path, dest, ref=ref, limits=limits)
    raise ValueError(f"unknown image kind {kind!r}")


_PREFIX = "alicorn-unpack-"


def _collect_garbage(base: Path) -> None:
    """Remove what unpacking processes that died (killed, out of memory) left in ``base``:
    their directories carry their pid."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    for path in entries:
        m = re.fullmatch(re.escape(_PREFIX) + r"(\d+)-.*", path.name)
        if not m or not path.is_dir() or path.is_symlink():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            remove_tree(path)
        except (OSError, OverflowError):
            continue  # alive (or not ours to signal): leave it


@contextlib.contextmanager
def unpacked(path: Path, kind: str, *, ref: str | None = None, platform: str | None = None,
             limits: Limits | None = None, workdir: Path | None = None
             ) -> Iterator[UnpackedImage]:
    """:func:`unpack` into a private temporary directory (under ``workdir``, default the
    system's), removed when the block ends, also on error."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    base = Path(workdir or tempfile.gettempdir())
    _collect_garbage(base)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base))
    try:
        yield unpack(path, kind, tmp / "rootfs", ref=ref, platform=platform, limits=limits)
    finally:
        # Every directory in it is owner-writable (see _dir_mode), so this removes it all.
        remove_tree(tmp)
