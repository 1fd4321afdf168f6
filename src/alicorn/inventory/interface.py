"""The extension point for package databases: one module per database, each a PackageSource.

Every source reads a root filesystem that is not ours to trust, through :class:`RootFS`
(``alicorn.inventory.rootfs``): it never follows a symlink out of the root, caps what it reads,
and stops at symlink loops.  Adding a package database (apk, pacman) is a new module and one
line in :mod:`alicorn.inventory.collect`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from alicorn.inventory.model import InventoryError, Package

if TYPE_CHECKING:
    from alicorn.inventory.rootfs import RootFS

__all__ = ["InventoryError", "PackageSource", "SourceResult"]


@dataclass(frozen=True)
class SourceResult:
    packages: tuple[Package, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    errors: tuple[str, ...] = field(default=())
    # Files (paths inside the root) that belong to the packages found here: the collector
    # drops Python/gem/npm/jar packages found under paths owned by an rpm or deb.
    owned_paths: frozenset[str] = frozenset()


class PackageSource(ABC):
    """Reads one package database out of a root filesystem."""

    #: short name: ``rpmdb``, ``dpkg``, ``python``, ``gem``, ``jar``, ``npm``
    name: str

    @abstractmethod
    def read(self, root: RootFS) -> SourceResult:
        """The packages this database lists in ``root``; empty when it is absent.  A database
        that is present but unreadable is an entry in ``errors``, never an exception."""
