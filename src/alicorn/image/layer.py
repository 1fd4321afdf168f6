"""Deterministic filesystem layers.

The same tree gives the same bytes: entries are sorted by path, mtimes are clamped to
SOURCE_DATE_EPOCH, ownership is numeric (no user or group names), hard links point at the first
path in sort order, and the gzip stream carries no name or time.  Runtime-only directories
(/dev, /proc, /sys, /run) are kept empty.

A layered image's own layer is a diff (:func:`write_diff_layer`): only what is new or changed
since a :func:`snapshot` of the unpacked base, with OCI whiteouts (``.wh.NAME``) for what was
removed, under the same rules.

Compression runs on all cores the way pigz does it: the tar stream is cut into fixed-size blocks,
each block is deflated with the previous 32 KiB as its dictionary and ends on a byte boundary, and
the pieces are concatenated into one ordinary gzip member.  The block size is fixed, so the output
does not depend on the number of threads.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import tarfile
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from alicorn.digest import Digest
from alicorn.errors import ImageError

MEDIA_TYPE_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

# Directories whose contents belong to the runtime, never to the image.
EMPTY_DIRS = frozenset({"dev", "proc", "sys", "run"})
# Extended attributes that matter in an image (file capabilities, e.g. for ping).
KEPT_XATTRS = ("security.capability",)

BLOCK = 1 << 20          # uncompressed bytes per compression block
DICT = 32 << 10          # deflate window carried over from the previous block


@dataclass(frozen=True)
class LayerInfo:
    digest: Digest       # of the compressed blob
    diff_id: Digest      # of the uncompressed tar
    size: int            # compressed size in bytes
    media_type: str = MEDIA_TYPE_GZIP


class _ParallelGzip:
    """A write-only file object producing one deterministic gzip member, deflating on threads."""

    def __init__(self, out: BinaryIO, level: int, threads: int):
        self._out = out
        self._level = level
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads))
        self._pending: deque[Future[bytes]] = deque()
        self._max_pending = max(2, threads * 2)
        self._buf = bytearray()
        self._prev_tail = b""
        self._crc = 0
        self._size = 0
        self._tar_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256()
        self._blob_size = 0
        # RFC 1952 header: no name, mtime 0, "unknown" OS so the bytes do not depend on the host.
        self._emit(b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff")

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._blob_hash.update(data)
        self._blob_size += len(data)

    @staticmethod
    def _deflate(block: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
        if dictionary:
            c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY,
                                 zdict=dictionary)
        else:
            c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY)
        return c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    def write(self, data: bytes) -> int:
        self._tar_hash.update(data)
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buf += data
        while len(self._buf) >= BLOCK:
            block = bytes(self._buf[:BLOCK])
            del self._buf[:BLOCK]
            self._submit(block, last=False)
        return len(data)

    def _submit(self, block: bytes, last: bool) -> None:
        fut = self._pool.submit(self._deflate, block, self._prev_tail, self._level, last)
        self._prev_tail = block[-DICT:]
        self._pending.append(fut)
        while len(self._pending) > self._max_pending:
            self._emit(self._pending.popleft().result())

    def close(self) -> tuple[Digest, Digest, int]:
        self._submit(bytes(self._buf), last=True)
        self._buf.clear()
        while self._pending:
            self._emit(self._pending.popleft().result())
        self._pool.shutdown()
        self._emit(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        return (Digest("sha256:" + self._blob_hash.hexdigest()),
                Digest("sha256:" + self._tar_hash.hexdigest()), self._blob_size)

    def abort(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _clamp(mtime: float, epoch: int) -> int:
    return min(int(mtime), epoch)


def iter_tree(root: Path) -> list[str]:
    """Every path below ``root`` (relative, '/'-separated), depth first, parents before their
    children, the entries of each directory sorted bytewise by name."""
    out: list[str] = []

    def walk(rel: str, path: str) -> None:
        try:
            entries = sorted(os.scandir(path), key=lambda e: os.fsencode(e.name))
        except OSError as e:
            raise ImageError(f"cannot read {path}: {e.strerror}") from e
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            out.append(child)
            if entry.is_dir(follow_symlinks=False) and child not in EMPTY_DIRS:
                walk(child, entry.path)

    walk("", str(root))
    return out


def write_layer(root: Path, out: BinaryIO, *, source_date_epoch: int, level: int = 6,
                threads: int | None = None) -> LayerInfo:
    """Write the tree at ``root`` as a gzip-compressed tar layer to ``out``."""
    gz = _ParallelGzip(out, level, threads or os.cpu_count() or 1)
    try:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as tar:
            _add_tree(tar, root, source_date_epoch)
    except BaseException:
        gz.abort()
        raise
    digest, diff_id, size = gz.close()
    return LayerInfo(digest=digest, diff_id=diff_id, size=size)


def _add_tree(tar: tarfile.TarFile, root: Path, epoch: int) -> None:
    links: dict[tuple[int, int], str] = {}
    for rel in iter_tree(root):
        _add_entry(tar, root, rel, os.lstat(os.path.join(root, rel)), epoch, links)


def _add_entry(tar: tarfile.TarFile, root: Path, rel: str, st: os.stat_result, epoch: int,
               links: dict[tuple[int, int], str]) -> None:
    """Write one path of the tree; ``links`` maps inodes already written to their path."""
    full = os.path.join(root, rel)
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = _clamp(st.st_mtime, epoch)
    for name in KEPT_XATTRS:
        try:
            value = os.getxattr(full, name, follow_symlinks=False)
        except OSError:
            continue
        # Binary values pass through tarfile's surrogateescape encoding unchanged.
        info.pax_headers = {**info.pax_headers,
                            "SCHILY.xattr." + name: value.decode("utf-8", "surrogateescape")}
    mode = st.st_mode
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type = tarfile.LNKTYPE
            info.linkname = links[key]
            tar.addfile(info)
            return
        if st.st_nlink > 1:
            links[key] = rel
        info.size = st.st_size
        with open(full, "rb") as f:
            tar.addfile(info, f)
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(full)
        tar.addfile(info)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        # Device nodes outside /dev are kept as they are; /dev itself is emptied above.
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tar.addfile(info)
    # Sockets are runtime objects and are left out.


# -- diff layers --------------------------------------------------------------------------------

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"


@dataclass(frozen=True)
class PathState:
    """What :func:`snapshot` records of one path: enough to tell it changed.  Any write to a
    file, and any chmod, chown, xattr or link count change, moves its ctime; a replaced file
    has another inode."""

    type: int            # stat.S_IFMT of the mode
    mode: int
    uid: int
    gid: int
    size: int
    ino: int
    ctime_ns: int
    link: str | None     # a symlink's target


def _state(full: str) -> tuple[PathState, os.stat_result]:
    st = os.lstat(full)
    link = os.readlink(full) if stat.S_ISLNK(st.st_mode) else None
    return PathState(type=stat.S_IFMT(st.st_mode), mode=stat.S_IMODE(st.st_mode),
                     uid=st.st_uid, gid=st.st_gid, size=st.st_size, ino=st.st_ino,
                     ctime_ns=st.st_ctime_ns, link=link), st


def snapshot(root: Path) -> dict[str, PathState]:
    """The state of every path below ``root`` (as :func:`iter_tree` lists them, lstat)."""
    return {rel: _state(os.path.join(root, rel))[0] for rel in iter_tree(root)}


def _tree_order(rel: str) -> list[bytes]:
    """Sort key giving :func:`iter_tree`'s order: parents first, names bytewise."""
    return [os.fsencode(part) for part in rel.split("/")]


def diff_entries(root: Path, before: dict[str, PathState]) -> tuple[list[str], list[str]]:
    """(paths to write, removed paths to white out) of ``root`` against ``before``.

    A path is written when it is new or its state changed, and so is every directory above
    it (as container tools do, so the layer stands on its own).  A removed path is whited
    out only where its parent is still a directory: a removed directory's contents go with
    it, and a directory replaced by a file is replaced whole when the layer is applied.
    """
    now: dict[str, tuple[PathState, os.stat_result]] = {
        rel: _state(os.path.join(root, rel)) for rel in iter_tree(root)}
    changed = {rel for rel, (state, _) in now.items() if before.get(rel) != state}
    removed = []
    for rel in before:
        if rel in now:
            continue
        parent = rel.rpartition("/")[0]
        if parent == "" or (parent in now and now[parent][0].type == stat.S_IFDIR):
            removed.append(rel)
    wanted = set(changed)
    for rel in [*changed, *removed]:
        parent = rel.rpartition("/")[0]
        while parent and parent not in wanted:
            wanted.add(parent)
            parent = parent.rpartition("/")[0]
    return sorted(wanted, key=_tree_order), sorted(removed, key=_tree_order)


def write_diff_layer(root: Path, before: dict[str, PathState], out: BinaryIO, *,
                     source_date_epoch: int, level: int = 6,
                     threads: int | None = None) -> LayerInfo:
    """Write what changed in ``root`` since the snapshot ``before`` as a layer to ``out``.

    The same rules as :func:`write_layer` (sorted, mtimes clamped, numeric owners, hard links
    to the first path in order); a path removed since the snapshot becomes a whiteout
    ``DIR/.wh.NAME`` (mode 0, owner 0:0, mtime SOURCE_DATE_EPOCH).
    """
    written, removed = diff_entries(root, before)
    items = [(rel, False) for rel in written]
    for rel in removed:
        parent, _, name = rel.rpartition("/")
        items.append((f"{parent}/{WHITEOUT_PREFIX}{name}" if parent
                      else f"{WHITEOUT_PREFIX}{name}", True))
    items.sort(key=lambda item: _tree_order(item[0]))
    gz = _ParallelGzip(out, level, threads or os.cpu_count() or 1)
    try:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as tar:
            links: dict[tuple[int, int], str] = {}
            for rel, whiteout in items:
                if whiteout:
                    info = tarfile.TarInfo(rel)
                    info.mode, info.uid, info.gid = 0, 0, 0
                    info.uname = info.gname = ""
                    info.mtime = source_date_epoch
                    tar.addfile(info)
                else:
                    _add_entry(tar, root, rel, os.lstat(os.path.join(root, rel)),
                               source_date_epoch, links)
    except BaseException:
        gz.abort()
        raise
    digest, diff_id, size = gz.close()
    return LayerInfo(digest=digest, diff_id=diff_id, size=size)
