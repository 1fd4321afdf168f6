"""Run every package source over one root filesystem and merge what they found."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

from alicorn.inventory.dpkg import DpkgSource
from alicorn.inventory.gems import GemSource
from alicorn.inventory.interface import PackageSource, SourceResult
from alicorn.inventory.jars import JarSource
from alicorn.inventory.model import Inventory, Package
from alicorn.inventory.npm import NpmSource
from alicorn.inventory.python import PythonSource
from alicorn.inventory.rootfs import RootFS, RootFSError
from alicorn.inventory.rpmdb import RpmdbSource

log = logging.getLogger(__name__)

DISTRO_TYPES = frozenset({"rpm", "deb"})
#: What a walk of the running host does not enter: container storage holds the roots of other
#: images (inventoried as modules of their own, not as the host's packages), the temporary
#: directories hold scratch, not installed software, and /mnt and /media hold file systems
#: mounted for a while (a backup, another system's disk, a USB stick), not this host's.
HOST_EXCLUDE = ("var/lib/containers", "var/lib/docker", "root/.local/share/containers",
                "home/*/.local/share/containers", "tmp", "var/tmp", "mnt", "media")
# Files a distro package owns that stand for a Python distribution's metadata directory.
_METADATA_FILES = ("METADATA", "PKG-INFO")


def default_sources() -> list[PackageSource]:
    """Every package source, distro databases first (their files decide what is dropped)."""
    return [RpmdbSource(), DpkgSource(), PythonSource(), GemSource(), JarSource(), NpmSource()]


def collect(root: Path, *, target: str, kind: str, digest: str | None = None,
            name: str | None = None) -> Inventory:
    """The inventory of the root filesystem at ``root`` (a directory on this host).

    Every :class:`~alicorn.inventory.interface.PackageSource` reads it through a
    :class:`~alicorn.inventory.rootfs.RootFS`; the distro comes from its os-release; a Python,
    gem, npm or jar package whose files an rpm or deb owns is reported once, as that distro
    package.  ``target``/``kind``/``digest``/``name`` are copied onto the inventory.  For
    ``kind="host"`` the walk skips :data:`HOST_EXCLUDE`.
    """
    exclude = HOST_EXCLUDE if kind == "host" else ()
    return collect_with(RootFS(root, exclude=exclude), default_sources(), target=target,
                        kind=kind, digest=digest, name=name)


def collect_with(fs: RootFS, sources: Sequence[PackageSource], *, target: str, kind: str,
                 digest: str | None = None, name: str | None = None) -> Inventory:
    """:func:`collect` with the given sources (tests, and callers wanting only some)."""
    results: list[tuple[PackageSource, SourceResult]] = []
    errors: list[str] = []
    for source in sources:
        try:
            results.append((source, source.read(fs)))
        except Exception as e:
            # A bug in one source must not hide what the others found; the traceback goes into
            # the error so that it is seen (tests assert there are no errors).
            log.exception("package source %s failed", source.name)
            errors.append(f"{source.name}: failed unexpectedly ({type(e).__name__}: {e}); this "
                          f"is a bug in Alicorn:\n{traceback.format_exc()}")
    owned: set[str] = set()
    for _, r in results:
        owned |= r.owned_paths
    owned_canonical = _canonical(fs, owned)
    packages: list[Package] = []
    warnings: list[str] = []
    for source, r in results:
        for p in r.packages:
            if p.type not in DISTRO_TYPES and _owned(p, owned_canonical):
                log.debug("%s %s at /%s is owned by a distro package", p.type, p.name, p.path)
                continue
            packages.append(p)
        warnings += r.warnings
        errors += [e if e.startswith(source.name) else f"{source.name}: {e}" for e in r.errors]
    return Inventory(target=target, kind=kind, packages=tuple(packages), distro=fs.os_release(),
                     digest=digest, name=name, warnings=tuple(_unique(warnings)),
                     errors=tuple(_unique(errors)))


def _owned(p: Package, owned: frozenset[str]) -> bool:
    if not p.path:
        return False
    path = p.path.split("!/", 1)[0]     # a nested jar is owned with its outer archive
    return path in owned or any(f"{path}/{m}" in owned for m in _METADATA_FILES)


def _canonical(fs: RootFS, paths: set[str]) -> frozenset[str]:
    """``paths`` as the walks see them: through the root's symlinked top directories
    (merged /usr: ``lib -> usr/lib``; ``var/run -> ../run``) resolved."""
    links: dict[str, str] = {}
    for parent in ("", "usr", "var"):
        try:
            names = fs.iterdir(parent)
        except (OSError, RootFSError):
            continue
        for n in names:
            p = f"{parent}/{n}" if parent else n
            try:
                canonical = fs.relpath(p)
            except RootFSError:
                continue
            if canonical != p and fs.is_dir(p):
                links[p] = canonical
    if not links:
        return frozenset(paths)
    out = set()
    for path in paths:
        parts = path.split("/", 2)
        for key in ("/".join(parts[:2]), parts[0]):
            if key in links:
                path = links[key] + path[len(key):]
                break
        out.add(path)
    return frozenset(out)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
