"""The base of a layered image (the Layered Image Build Service).

A recipe with ``base:`` builds on an image Alicorn built: by recipe name, the newest published
done build of that recipe; by digest, the done build that made that image.  The rebuild service
pins the base with the build option ``base_digest``, which wins over the name.  The base's OCI
layout comes from this store's image directory; every blob is checked against its digest
before it is used.

Composing a layered image starts from the base's root filesystem, unpacked here faithfully
(modes including setuid, numeric owners, ``security.capability``, hard links, device nodes,
OCI whiteouts) but strictly: an entry that would climb out of the root, write through a
symlink, or hard-link to something that is not a regular file inside the root is an error,
not a warning: our own layers never hold one, so such a blob is damaged or tampered with.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import yaml

from alicorn.compose.interface import Package
from alicorn.config import Settings
from alicorn.digest import Digest
from alicorn.errors import ImageError, NotFound, RecipeError
from alicorn.fs import lstat_or_none
from alicorn.image.layer import (
    KEPT_XATTRS,
    MEDIA_TYPE_GZIP,
    OPAQUE_WHITEOUT,
    WHITEOUT_PREFIX,
    LayerInfo,
)
from alicorn.image.oci import read_manifest
from alicorn.recipe import Recipe
from alicorn.store.builds import DONE, BuildStore
from alicorn.store.models import BuildRow

_CHUNK = 1 << 20
# Package types a root's own package database lists (read again from the child's root).
_DISTRO_TYPES = ("rpm", "deb")
_TAMPERED = "the image store is damaged or was tampered with; rebuild the base"


@dataclass(frozen=True)
class BaseImage:
    """A resolved base: the build that made it, its layout, config and layers."""

    name: str                    # the base's recipe name
    digest: Digest               # its manifest digest
    build_id: str
    layout: Path
    distribution: str
    config: dict[str, Any]
    layers: tuple[LayerInfo, ...]
    packages: tuple[Package, ...]

    def inputs(self) -> dict[str, Any]:
        """What the child's recorded inputs say about its base."""
        return {"name": self.name, "digest": str(self.digest), "build_id": self.build_id}


# -- resolution ---------------------------------------------------------------------------------

def _base_line(recipe: Recipe) -> int | None:
    for i, line in enumerate(recipe.text.splitlines(), 1):
        if re.match(r"base\s*:", line):
            return i
    return None


def resolve_base(recipe: Recipe, store: BuildStore, settings: Settings, *,
                 pinned: str | None = None) -> BaseImage:
    """The base image ``recipe`` builds on; ``pinned`` (a manifest digest) wins over the name.

    Raises RecipeError naming the ``base`` field when there is no such build, it is not done
    (or, by name, not published), its image left the store, or its distribution differs.
    """
    ref = recipe.base
    if ref is None:
        raise ValueError(f"{recipe.file} has no base")

    def err(message: str, hint: str | None = None) -> RecipeError:
        return RecipeError(message, file=recipe.file, line=_base_line(recipe), field="base",
                           hint=hint)

    wanted = pinned or ref.digest
    row: BuildRow | None
    if wanted is not None:
        try:
            digest = Digest(wanted)
        except ValueError as e:
            raise err(f"{wanted!r} is not a sha256 manifest digest") from e
        try:
            row = store.resolve(str(digest))
        except NotFound as e:
            raise err(f"no build in this store made the image {digest}",
                      hint="alicorn builds lists the builds and their digests") from e
        if row.state != DONE:
            raise err(f"build {row.id} of {digest} is {row.state}, not done")
        if ref.image is not None and row.recipe_name != ref.image:
            raise err(f"the image {digest} was built from recipe {row.recipe_name!r}, "
                      f"not {ref.image!r}")
    else:
        assert ref.image is not None  # the schema wants image or digest
        row = store.latest_published(ref.image)
        if row is None:
            raise err(f"there is no published build of recipe {ref.image!r} to build on",
                      hint="build and publish it first (alicorn build without --no-push), "
                           "or pin an image with base: {digest: sha256:...}")
        assert row.digest is not None
        digest = Digest(row.digest)
    name = row.recipe_name or ref.image or "?"

    layout = settings.image_dir(digest.hex)
    try:
        got, manifest = read_manifest(layout)
    except ImageError as e:
        raise err(f"the image {digest} of build {row.id} ({name}) is not in the image store: "
                  f"{e.message}", hint="build the base again") from e
    if got != digest:
        raise err(f"the image store's {layout} holds {got}, not {digest}", hint=_TAMPERED)
    config = _config(layout, manifest, digest)
    layers = _layers(manifest, config, digest)

    distribution = _distribution(row)
    if distribution != recipe.distribution:
        raise err(f"the base {name} ({digest}) is a {distribution} image; this recipe's "
                  f"distribution is {recipe.distribution}",
                  hint="a layered image has its base's distribution type")
    if config.get("architecture") != recipe.oci_architecture:
        raise err(f"the base {name} is built for {config.get('architecture')}, this recipe "
                  f"for {recipe.oci_architecture}")
    full = store.get(row.id)
    packages = tuple(Package(type=p.type, name=p.name, version=p.version, arch=p.arch,
                             source=p.source, checksum=p.checksum, purl=p.purl)
                     for p in full.packages)
    return BaseImage(name=name, digest=digest, build_id=row.id, layout=layout,
                     distribution=distribution, config=config, layers=layers,
                     packages=packages)


def _blob_path(layout: Path, digest: Digest) -> Path:
    return layout / "blobs" / "sha256" / digest.hex


def _config(layout: Path, manifest: dict[str, Any], image: Digest) -> dict[str, Any]:
    try:
        digest = Digest(manifest["config"]["digest"])
        data = _blob_path(layout, digest).read_bytes()
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise ImageError(f"the base image {image} has no readable config: {e}",
                         where=str(layout), hint=_TAMPERED) from e
    if Digest.of_bytes(data) != digest:
        raise ImageError(f"the base image's config {digest} does not match its digest",
                         where=str(layout), hint=_TAMPERED)
    config: dict[str, Any] = json.loads(data)
    return config


def _layers(manifest: dict[str, Any], config: dict[str, Any],
            image: Digest) -> tuple[LayerInfo, ...]:
    try:
        descs = manifest["layers"]
        diff_ids = config["rootfs"]["diff_ids"]
        if len(descs) != len(diff_ids):
            raise ValueError(f"{len(descs)} layers but {len(diff_ids)} diff_ids")
        layers = tuple(LayerInfo(digest=Digest(d["digest"]), diff_id=Digest(diff),
                                 size=int(d["size"]), media_type=d["mediaType"])
                       for d, diff in zip(descs, diff_ids, strict=True))
    except (KeyError, TypeError, ValueError) as e:
        raise ImageError(f"the base image {image} has a malformed manifest or config: {e}",
                         hint=_TAMPERED) from e
    for layer in layers:
        if layer.media_type != MEDIA_TYPE_GZIP:
            raise ImageError(f"the base image {image} has a {layer.media_type} layer; "
                             f"Alicorn's images have {MEDIA_TYPE_GZIP} layers only",
                             hint=_TAMPERED)
    return layers


def _distribution(row: BuildRow) -> str:
    """The distribution type of the recipe the build was made from (validated when built)."""
    try:
        data = yaml.safe_load(row.recipe_content or "")
        kind = data["distribution"]["type"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise ImageError(f"build {row.id} has no readable recipe: {e}") from e
    return str(kind)


# -- using the base -----------------------------------------------------------------------------

def link_blobs(base: BaseImage, layout: Path) -> None:
    """Put the base's layer blobs into the new layout's blobs (hard links: same bytes, same
    digests, no copy; a copy where the store is on another filesystem)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for layer in base.layers:
        src = _blob_path(base.layout, layer.digest)
        dest = blobs / layer.digest.hex
        if dest.exists():
            continue
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)


def merge_packages(base: BaseImage, packages: list[Package]) -> list[Package]:
    """The whole image's packages.  ``packages`` are read from the final root (its rpm
    database or dpkg status lists the base's packages too) and the child's artifacts; a
    package the base brought keeps the base's checksum (the base's recorded inputs vouch for
    it).  The base's packages that no database lists (wheels) are added unless the child
    has one of the same name."""
    by_key = {(p.type, p.name, p.version, p.arch): p for p in base.packages}
    out = []
    for p in packages:
        old = by_key.get((p.type, p.name, p.version, p.arch))
        if old is not None and old.checksum and not p.checksum:
            p = Package(type=p.type, name=p.name, version=p.version, arch=p.arch,
                        source=p.source, checksum=old.checksum, purl=p.purl)
        out.append(p)
    names = {(p.type, p.name) for p in out}
    out += [p for p in base.packages
            if p.type not in _DISTRO_TYPES and (p.type, p.name) not in names]
    return sorted(out)


# -- unpacking ----------------------------------------------------------------------------------

def unpack_base(base: BaseImage, rootfs: Path) -> None:
    """Apply every layer of ``base`` to the empty (or new) directory ``rootfs``, each blob
    checked against its digest and size before it is read and its tar against its diff_id."""
    rootfs.mkdir(parents=True, exist_ok=True)
    if any(rootfs.iterdir()):
        raise ImageError("the root to unpack the base into is not empty", where=str(rootfs))
    for i, layer in enumerate(base.layers):
        label = f"layer {i + 1}/{len(base.layers)} {layer.digest} of the base {base.name}"
        path = _blob_path(base.layout, layer.digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise ImageError(f"{label} cannot be read: {e.strerror}", where=str(path),
                             hint=_TAMPERED) from e
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ImageError(f"{label} is not a regular file", where=str(path))
            sha = hashlib.sha256()
            size = 0
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
            if "sha256:" + sha.hexdigest() != str(layer.digest) or size != layer.size:
                raise ImageError(f"{label} does not match its digest and size (its sha256 is "
                                 f"sha256:{sha.hexdigest()}, {size} bytes)", where=str(path),
                                 hint=_TAMPERED)
            f.seek(0)
            apply_layer(f, rootfs, label=label, diff_id=layer.diff_id)


class _Hashing:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, source: IO[bytes]):
        self._source = source
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self.sha.update(data)
        return data


def apply_layer(stream: IO[bytes], root: Path, *, label: str,
                diff_id: Digest | None = None) -> None:
    """Apply one gzip-compressed (or plain) tar layer read from ``stream`` onto ``root``."""
    head = stream.read(2)
    stream.seek(0)
    source: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb")) \
        if head == b"\x1f\x8b" else stream
    plain = _Hashing(source)
    try:
        with tarfile.open(fileobj=plain, mode="r|",  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as tar:
            _Applier(root, label).apply(tar)
        while plain.read(_CHUNK):
            pass  # the zero blocks after the end of the archive belong to the diff_id
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ImageError(f"{label} is not a readable tar layer: {e}", hint=_TAMPERED) from e
    if diff_id is not None and "sha256:" + plain.sha.hexdigest() != str(diff_id):
        raise ImageError(f"{label} unpacks to sha256:{plain.sha.hexdigest()}, not to the "
                         f"diff_id {diff_id} of the image's config", hint=_TAMPERED)


def _remove(path: Path) -> None:
    st = lstat_or_none(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)   # does not follow symlinks inside
    else:
        os.unlink(path)


class _Applier:
    """Writes one layer's entries into ``root``, refusing anything that leaves it."""

    def __init__(self, root: Path, label: str):
        self.root = root
        self.label = label
        self.written: set[str] = set()   # what this layer wrote (whiteouts hide lower layers)
        self.dir_times: list[tuple[Path, int]] = []

    def _error(self, name: str, why: str) -> ImageError:
        return ImageError(f"{self.label}: entry {name!r} {why}", hint=_TAMPERED)

    def apply(self, tar: tarfile.TarFile) -> None:
        for m in tar:
            tar.members.clear()  # type: ignore[attr-defined]  # a stream: keep no list
            self._entry(tar, m)
        # Directory times last: writing their entries moved them.
        for path, mtime in reversed(self.dir_times):
            os.utime(path, (mtime, mtime), follow_symlinks=False)

    def _parts(self, name: str) -> list[str]:
        if name.startswith("/"):
            raise self._error(name, "has an absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self._error(name, "climbs out of the root with '..'")
        return parts

    def _directory(self, name: str, parts: list[str], *, create: bool) -> Path:
        """The real directory ``parts`` names inside the root; a symlink on the way (which
        could lead anywhere) is an error, a missing directory is made (when ``create``)."""
        current = self.root
        for i, part in enumerate(parts):
            current = current / part
            st = lstat_or_none(current)
            if st is None and create:
                os.mkdir(current, 0o755)
                self.written.add("/".join(parts[:i + 1]))
            elif st is None:
                raise self._error(name, f"needs /{'/'.join(parts[:i + 1])}, which does not "
                                        "exist")
            elif stat.S_ISLNK(st.st_mode):
                raise self._error(name, f"would be written through the symlink "
                                        f"/{'/'.join(parts[:i + 1])}")
            elif not stat.S_ISDIR(st.st_mode):
                raise self._error(name, f"is below /{'/'.join(parts[:i + 1])}, which is not "
                                        "a directory")
        return current

    def _entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = self._parts(m.name)
        if not parts:
            return   # the root itself
        parent = self._directory(m.name, parts[:-1], create=True)
        name = parts[-1]
        rel = "/".join(parts)
        parent_rel = "/".join(parts[:-1])
        if name == OPAQUE_WHITEOUT:
            self._opaque(parent, parent_rel)
            return
        if name.startswith(WHITEOUT_PREFIX):
            hidden = name[len(WHITEOUT_PREFIX):]
            if hidden in ("", ".", "..") or "/" in hidden:
                raise self._error(m.name, "is a whiteout of no name")
            hidden_rel = f"{parent_rel}/{hidden}" if parent_rel else hidden
            if hidden_rel not in self.written:
                _remove(parent / hidden)
            return
        path = parent / name
        existing = lstat_or_none(path)
        if m.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                if existing is not None:
                    _remove(path)
                os.mkdir(path, 0o700)
            self._own(path, m)
            self.dir_times.append((path, int(m.mtime)))
        elif m.isreg():
            if existing is not None:
                _remove(path)
            self._write(tar, m, path)
        elif m.issym():
            if existing is not None:
                _remove(path)
            os.symlink(m.linkname, path)
            os.lchown(path, m.uid, m.gid)
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
        elif m.islnk():
            target = self._link_target(m)
            if existing is not None:
                if os.path.samestat(existing, os.lstat(target)):
                    self.written.add(rel)
                    return
                _remove(path)
            os.link(target, path, follow_symlinks=False)
        elif m.ischr() or m.isblk() or m.isfifo():
            if existing is not None:
                _remove(path)
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor)
                     if not m.isfifo() else 0)
            self._own(path, m)
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
        else:
            raise self._error(m.name, f"has an unsupported type {m.type!r}")
        self.written.add(rel)

    def _own(self, path: Path, m: tarfile.TarInfo) -> None:
        # chown first: it clears setuid bits and file capabilities.
        os.lchown(path, m.uid, m.gid)
        os.chmod(path, m.mode & 0o7777)
        self._xattrs(path, m)

    def _xattrs(self, path: Path, m: tarfile.TarInfo) -> None:
        for key in KEPT_XATTRS:
            value = m.pax_headers.get("SCHILY.xattr." + key)
            if value is not None:
                os.setxattr(path, key, value.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False)

    def _write(self, tar: tarfile.TarFile, m: tarfile.TarInfo, path: Path) -> None:
        src = tar.extractfile(m)
        assert src is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        copied = 0
        with contextlib.closing(src), os.fdopen(fd, "wb") as out:
            while copied < m.size:
                chunk = src.read(min(_CHUNK, m.size - copied))
                if not chunk:
                    break
                out.write(chunk)
                copied += len(chunk)
            out.flush()
            os.fchown(out.fileno(), m.uid, m.gid)
            os.fchmod(out.fileno(), m.mode & 0o7777)
        if copied != m.size:
            raise self._error(m.name, f"ends after {copied} of its {m.size} bytes")
        self._xattrs(path, m)
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def _link_target(self, m: tarfile.TarInfo) -> Path:
        parts = self._parts(m.linkname)
        if not parts:
            raise self._error(m.name, "is a hard link to the root")
        parent = self._directory(m.name, parts[:-1], create=False)
        target = parent / parts[-1]
        st = lstat_or_none(target)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise self._error(m.name, f"is a hard link to {m.linkname!r}, which is not a "
                                      "regular file in the image")
        return target

    def _opaque(self, directory: Path, rel: str) -> None:
        """Remove what lower layers put in ``directory``; keep what this layer wrote."""
        for entry in list(os.scandir(directory)):
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            child = directory / entry.name
            if child_rel in self.written:
                if entry.is_dir(follow_symlinks=False):
                    self._opaque(child, child_rel)
            else:
                _remove(child)
