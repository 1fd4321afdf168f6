"""Deterministic filesystem layers.

The same tree gives the same bytes: entries are sorted by path, mtimes are clamped to
SOURCE_DATE_EPOCH, ownership is numeric (no user or group names), hard links point at the first
path in sort order, and the gzip stream carries no name or time.  Runtime-only directories
(/dev, /proc, /sys, /run) are kept empty.

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
        full = os.path.join(root, rel)
        st = os.lstat(full)
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
                continue
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
