"""Read access to a root filesystem that is not ours to trust.

The root is a plain directory on this host (an unpacked image, a container's merged layers).
Anything in it may be hostile: ``var/lib/dpkg/status -> /etc/shadow`` (which must mean the
*root's* /etc/shadow), ``../../../../etc/shadow``, symlink loops, a 2 GB sparse file, a
directory swapped for a symlink while we read.  So:

* names are resolved as a chroot would (:func:`alicorn.fs.resolve_in_root`): a symlink inside
  the root may be followed when a file is read by name, but never out of it;
* the final component is opened with ``O_NOFOLLOW``, and the opened descriptor's real path
  (``/proc/self/fd/N``) must lie inside the root, so a race that swaps a directory for a
  symlink between resolving and opening is caught;
* walks open every directory relative to its parent's descriptor with ``O_NOFOLLOW`` and never
  descend into symlinked directories;
* every read has a size cap, every walk an entry and a depth cap; what a cap cut off is a
  warning.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import os
import shlex
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from alicorn.errors import BadInput
from alicorn.fs import resolve_in_root
from alicorn.inventory.model import Distro, InventoryError

__all__ = ["RootFS", "RootFSError", "TooLarge", "UnsafePath", "Walk", "WalkDir"]

#: Default cap of one file read by name (a dpkg status of a big image is a few MiB).
MAX_FILE = 64 * 1024 * 1024
#: Default caps of a walk: a large application image holds a few hundred thousand files.
MAX_ENTRIES = 2_000_000
MAX_DEPTH = 64
# Kernel and runtime file systems a container runtime may have left mounted in a root; their
# content is not installed software, and /proc alone can loop forever.
_PSEUDO = frozenset({"proc", "sys", "dev", "run"})

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


class RootFSError(InventoryError):
    """A file inside the root cannot be read safely (it escapes, loops, or is too large)."""


class UnsafePath(RootFSError):
    """A path resolves out of the root, loops, or is not the kind of file expected."""


class TooLarge(RootFSError):
    """A file is larger than the cap its reader allows."""


@dataclass(frozen=True)
class WalkDir:
    """One directory of a walk: its path relative to the root (``""`` for the root itself),
    the real subdirectories (never symlinks) and the regular files in it (never symlinks)."""

    path: str
    dirs: tuple[str, ...]
    files: tuple[str, ...]

    def join(self, name: str) -> str:
        """The root-relative path of ``name`` inside this directory."""
        return f"{self.path}/{name}" if self.path else name


@dataclass(frozen=True)
class Walk:
    """A bounded walk: the directories visited, and why it stopped early (if it did)."""

    top: str
    dirs: tuple[WalkDir, ...]
    warnings: tuple[str, ...] = field(default=())

    def files(self) -> list[str]:
        """Every regular file found, as root-relative paths."""
        return [d.join(f) for d in self.dirs for f in d.files]


def _rel(path: str) -> str:
    """``path`` as a normalised root-relative POSIX path without a leading slash."""
    parts = [p for p in PurePosixPath("/", path).parts[1:] if p not in ("", ".")]
    return "/".join(parts)


class RootFS:
    """Safe, capped, read-only access to the root filesystem at ``path``.

    Paths given to its methods are paths *inside* the root (``etc/os-release`` or
    ``/etc/os-release``, the same thing).  Methods that read raise :class:`RootFSError`
    (:class:`UnsafePath`, :class:`TooLarge`) or :class:`OSError` (``FileNotFoundError``...).
    """

    def __init__(self, path: Path | str, *, exclude: Iterable[str] = ()):
        """``exclude``: root-relative directories (``*`` matches one component) that walks
        do not enter, such as a host's container storage, which holds other roots."""
        given = Path(path)
        if not given.is_dir():
            raise InventoryError(f"{given} is not a directory holding a root filesystem",
                                 hint="name the directory an image was unpacked into")
        # The root itself is named by our caller, so the host may resolve it.
        self.path = Path(os.path.realpath(given))
        self._prefix = str(self.path).rstrip("/") + "/"
        self._exclude = tuple(_rel(e) for e in exclude)
        self._walks: dict[tuple[str, int, int], Walk] = {}
        self._os_release: tuple[Distro | None] | None = None

    def __repr__(self) -> str:
        return f"RootFS({str(self.path)!r})"

    # -- resolving names -------------------------------------------------------------------

    def host_path(self, path: str, *, follow: bool = True) -> Path:
        """The host path that ``path`` inside the root names, symlinks resolved inside the root.

        Raises :class:`UnsafePath` for a symlink loop.  The answer is only a name: open it
        through :meth:`open`, which checks again against races.
        """
        try:
            host = resolve_in_root(self.path, path, follow_last=follow)
        except BadInput as e:
            raise UnsafePath(e.message, where=f"{self.path}:/{_rel(path)}") from e
        if not self._inside(str(host)):
            raise UnsafePath("resolves outside the root", where=f"{self.path}:/{_rel(path)}")
        return host

    def relpath(self, path: str) -> str:
        """The canonical root-relative path of ``path`` (symlinks resolved inside the root)."""
        host = str(self.host_path(path))
        return "" if host == str(self.path) else host[len(self._prefix):]

    def _inside(self, host: str) -> bool:
        return host == str(self.path) or host.startswith(self._prefix)

    def _lstat(self, path: str) -> os.stat_result | None:
        try:
            return os.lstat(self.host_path(path))
        except (OSError, RootFSError):
            return None

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists in the root (a dangling or escaping link does not)."""
        return self._lstat(path) is not None

    def lexists(self, path: str) -> bool:
        """Whether the name ``path`` exists, even as a symlink that dangles, loops or leads
        out of the root (so that a reader can say "present but unreadable")."""
        try:
            os.lstat(self.host_path(path, follow=False))
        except (OSError, RootFSError):
            return False
        return True

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a directory (following symlinks inside the root)."""
        st = self._lstat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def is_file(self, path: str) -> bool:
        """Whether ``path`` is a regular file (following symlinks inside the root)."""
        st = self._lstat(path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def size(self, path: str) -> int:
        """The size in bytes of the regular file ``path``."""
        st = os.lstat(self.host_path(path))
        return st.st_size

    # -- opening ---------------------------------------------------------------------------

    def _open_fd(self, path: str, flags: int) -> int:
        host = self.host_path(path)
        where = f"{self.path}:/{_rel(path)}"
        try:
            fd = os.open(host, flags)
        except OSError as e:
            if e.errno == errno.ELOOP:
                # resolve_in_root resolved every link, so a link here was put in meanwhile.
                raise UnsafePath("became a symlink while being opened", where=where) from e
            raise
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
            if not self._inside(real):
                raise UnsafePath(f"opens {real}, outside the root (a symlink raced in)",
                                 where=where)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open(self, path: str, *, max_size: int = MAX_FILE) -> BinaryIO:
        """The regular file ``path`` opened for binary reading (seekable, for zip files).

        Raises :class:`TooLarge` when it is larger than ``max_size`` and :class:`UnsafePath`
        when it is not a regular file (a device, a FIFO that would block forever).
        """
        where = f"{self.path}:/{_rel(path)}"
        # Checked before opening too: opening a device node (a crafted block device with the
        # host disk's numbers) is already too much; after opening against a race.
        if not stat.S_ISREG(os.lstat(self.host_path(path)).st_mode):
            raise UnsafePath("is not a regular file", where=where)
        fd = self._open_fd(path, _O_FILE | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath("is not a regular file", where=where)
            if st.st_size > max_size:
                raise TooLarge(f"is {st.st_size} bytes, more than the {max_size} this reader "
                               "accepts", where=where)
            return io.FileIO(fd, "rb", closefd=True)
        except BaseException:
            os.close(fd)
            raise

    def read_bytes(self, path: str, *, max_size: int = MAX_FILE) -> bytes:
        """The content of the regular file ``path``, at most ``max_size`` bytes (else
        :class:`TooLarge`: a file that grows while read is cut off, not read on)."""
        with self.open(path, max_size=max_size) as f:
            data = f.read(max_size + 1)
        if len(data) > max_size:
            raise TooLarge(f"grew past {max_size} bytes while being read",
                           where=f"{self.path}:/{_rel(path)}")
        return data

    def read_text(self, path: str, *, max_size: int = MAX_FILE) -> str:
        """:meth:`read_bytes` decoded as UTF-8 (undecodable bytes replaced)."""
        return self.read_bytes(path, max_size=max_size).decode("utf-8", "replace")

    def iterdir(self, path: str) -> list[str]:
        """The names in directory ``path``, sorted (symlinks included, not followed)."""
        fd = self._open_fd(path, _O_DIR)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def glob_dirs(self, pattern: str) -> list[str]:
        """Root-relative directories matching ``pattern``, where only the components holding
        ``*`` are wildcards (``usr/lib/ruby/gems/*/specifications``); symlinks inside the root
        are followed, and each answer is canonical (see :meth:`relpath`)."""
        found = [""]
        for part in _rel(pattern).split("/"):
            nxt = []
            for base in found:
                if "*" in part or "?" in part:
                    try:
                        names = self.iterdir(base)
                    except (OSError, RootFSError):
                        continue
                    nxt += [f"{base}/{n}".lstrip("/") for n in names
                            if fnmatch.fnmatchcase(n, part)]
                else:
                    nxt.append(f"{base}/{part}".lstrip("/"))
            found = nxt
        out = set()
        for p in found:
            if self.is_dir(p):
                try:
                    out.add(self.relpath(p))
                except RootFSError:
                    continue
        return sorted(out)

    # -- walking ---------------------------------------------------------------------------

    def walk(self, top: str = "", *, max_entries: int = MAX_ENTRIES,
             max_depth: int = MAX_DEPTH) -> Walk:
        """Every real directory and regular file below ``top``, top-down, bounded.

        ``top`` may be reached through symlinks inside the root; below it the walk never
        follows a symlink (a symlinked directory is neither listed nor entered), so it cannot
        leave the root or loop.  /proc, /sys, /dev and /run of the root are skipped.  It stops
        after ``max_entries`` names or below ``max_depth`` levels, and says so in
        :attr:`Walk.warnings`.  Walks are remembered: every source asking for the same walk
        shares one pass over the disk.
        """
        key = (_rel(top), max_entries, max_depth)
        if key not in self._walks:
            self._walks[key] = self._walk(*key)
        return self._walks[key]

    class _Chain:
        """The descriptors of the directories from the root down to the last one opened.

        A walk goes depth first, so the next directory is nearly always a child of one on the
        chain: it costs one ``openat`` instead of one per component, and still every component
        is opened with O_NOFOLLOW relative to its parent (a directory swapped for a symlink
        fails with ELOOP)."""

        def __init__(self, root_fd: int):
            self.parts: list[str] = []
            self.fds: list[int] = [root_fd]

        def open(self, rel: str) -> int:
            """A new descriptor of ``rel`` (canonical, root-relative); the caller closes it."""
            want = rel.split("/") if rel else []
            keep = 0
            while keep < min(len(want), len(self.parts)) and want[keep] == self.parts[keep]:
                keep += 1
            while len(self.parts) > keep:
                self.parts.pop()
                os.close(self.fds.pop())
            for part in want[keep:]:
                fd = os.open(part, _O_DIR, dir_fd=self.fds[-1])
                self.parts.append(part)
                self.fds.append(fd)
            return os.dup(self.fds[-1])

        def close(self) -> None:
            for fd in self.fds:
                os.close(fd)
            self.fds, self.parts = [], []

    def _walk(self, top: str, max_entries: int, max_depth: int) -> Walk:
        warnings: list[str] = []
        try:
            start = self.relpath(top)
            chain = self._Chain(os.open(self.path, _O_DIR))
        except (OSError, RootFSError) as e:
            warnings.append(f"/{_rel(top)}: not walked: {e}")
            return Walk(top=_rel(top), dirs=(), warnings=tuple(warnings))
        dirs: list[WalkDir] = []
        entries = 0
        seen: set[tuple[int, int]] = set()
        depth_warned = False
        # Paths, not descriptors, wait on the stack: a directory with 100,000 subdirectories
        # must not hold 100,000 descriptors open.
        stack: list[tuple[str, int]] = [(start, 0)]
        try:
            while stack:
                rel, depth = stack.pop()
                try:
                    dfd = chain.open(rel)
                except OSError as e:
                    if not (rel == start and isinstance(e, FileNotFoundError | NotADirectoryError)):
                        # ELOOP/ENOTDIR: swapped for a symlink or a file since it was listed.
                        warnings.append(f"/{rel}: not walked: {e.strerror}")
                    continue
                try:
                    st = os.fstat(dfd)
                    if (st.st_dev, st.st_ino) in seen:
                        # Only a bind mount can make this happen without symlinks.
                        warnings.append(f"/{rel}: directory seen twice, not walked again")
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    subdirs: list[str] = []
                    files: list[str] = []
                    with os.scandir(dfd) as it:
                        for entry in it:
                            entries += 1
                            if entries > max_entries:
                                break
                            # The kernel's d_type answers without a stat per entry (one
                            # lstat only where the file system gives none); a symlink is
                            # neither.
                            try:
                                if entry.is_dir(follow_symlinks=False):
                                    subdirs.append(entry.name)
                                elif entry.is_file(follow_symlinks=False):
                                    files.append(entry.name)
                            except OSError:
                                continue
                except OSError as e:
                    warnings.append(f"/{rel}: not walked: {e.strerror}")
                    continue
                finally:
                    os.close(dfd)
                subdirs.sort()
                files.sort()
                if rel == "":
                    subdirs = [d for d in subdirs if d not in _PSEUDO]
                if self._exclude:
                    subdirs = [d for d in subdirs if not self._excluded(f"{rel}/{d}" if rel
                                                                         else d)]
                dirs.append(WalkDir(rel, tuple(subdirs), tuple(files)))
                if entries > max_entries:
                    warnings.append(f"walk of /{start} stopped after {max_entries} entries "
                                    f"(in /{rel}): packages further on are not listed")
                    break
                if depth >= max_depth:
                    if subdirs and not depth_warned:
                        depth_warned = True
                        warnings.append(f"/{rel}: deeper than {max_depth} levels below "
                                        f"/{start}, not walked further")
                    continue
                for name in reversed(subdirs):
                    stack.append((f"{rel}/{name}" if rel else name, depth + 1))
        finally:
            chain.close()
        return Walk(top=start, dirs=tuple(dirs), warnings=tuple(warnings))

    def _excluded(self, rel: str) -> bool:
        return any(fnmatch.fnmatchcase(rel, pattern) for pattern in self._exclude)

    # -- os-release ------------------------------------------------------------------------

    def os_release(self) -> Distro | None:
        """The distro that etc/os-release (else usr/lib/os-release) names; None without one."""
        if self._os_release is None:
            self._os_release = (self._read_os_release(),)
        return self._os_release[0]

    def _read_os_release(self) -> Distro | None:
        for candidate in ("etc/os-release", "usr/lib/os-release"):
            try:
                text = self.read_text(candidate, max_size=64 * 1024)
            except (OSError, RootFSError):
                continue
            values = parse_os_release(text)
            if values.get("ID"):
                return Distro(
                    id=values["ID"],
                    version_id=values.get("VERSION_ID") or None,
                    id_like=tuple(values.get("ID_LIKE", "").split()),
                    pretty_name=values.get("PRETTY_NAME") or None,
                    codename=values.get("VERSION_CODENAME") or None,
                )
        return None


def parse_os_release(text: str) -> dict[str, str]:
    """The ``KEY=value`` assignments of an os-release file (shell quoting, no expansion)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw, comments=False, posix=True)
        except ValueError:
            continue
        values[key.strip()] = " ".join(words)
    return values
