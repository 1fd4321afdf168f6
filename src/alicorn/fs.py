"""Paths inside a root filesystem that is not ours to trust.

A root filesystem may hold symlinks that point anywhere (``/var/www/html -> /etc``); resolving
them with the host's ``realpath`` would walk out of the root.  :func:`resolve_in_root` resolves
them the way a chroot would, and never returns a path outside ``root``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from alicorn.errors import BadInput

_MAX_LINKS = 40


def lstat_or_none(path: Path) -> os.stat_result | None:
    """``os.lstat(path)``, or None when nothing is there."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """The host path of ``path`` inside ``root``, following symlinks as if ``root`` were ``/``."""
    parts = list(PurePosixPath("/", path).parts[1:])
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        is_last = not parts
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode) and (follow_last or not is_last):
            links += 1
            if links > _MAX_LINKS:
                raise BadInput(f"too many levels of symbolic links resolving {path} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                # Absolute targets are relative to the root; "//etc" is absolute too.
                resolved = []
                target = target.lstrip("/")
            parts = list(PurePosixPath(target).parts) + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def mounts_below(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first."""
    base = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                # Field 5 is the mount point, with spaces and the like octal-escaped.
                point = line.split()[4].encode().decode("unicode_escape")
                if point == base or point.startswith(base + "/"):
                    found.append(Path(point))
    except OSError:
        return []
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove_tree(path: Path) -> None:
    """Delete a build's private tree, unmounting anything a tool left mounted in it first.

    A chroot tool killed mid-way can leave /proc, /sys or /dev bound inside its root; deleting
    through such a mount would delete the host's files.  Whatever cannot be unmounted is left
    in place (and so is the tree around it).
    """
    if not path.exists():
        return
    for point in mounts_below(path):
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)
    if mounts_below(path):
        return
    shutil.rmtree(path, ignore_errors=True)


def replace_file(path: Path, text: str, *, mode: int) -> None:
    """Replace ``path`` with ``text`` atomically, with permissions ``mode``: whoever reads it
    (podman, dnf, oscap, a web server) sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
