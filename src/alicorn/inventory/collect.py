"""Run every package source over one root filesystem and merge what they found."""

from __future__ import annotations

from pathlib import Path

from alicorn.inventory.model import Inventory


def collect(root: Path, *, target: str, kind: str, digest: str | None = None,
            name: str | None = None) -> Inventory:
    """The inventory of the root filesystem at ``root`` (a directory on this host).

    Every :class:`~alicorn.inventory.interface.PackageSource` reads it through a
    :class:`~alicorn.inventory.rootfs.RootFS`; the distro comes from its os-release; a Python,
    gem, npm or jar package whose files an rpm or deb owns is reported once, as that distro
    package.  ``target``/``kind``/``digest``/``name`` are copied onto the inventory.
    """
    raise NotImplementedError("alicorn.inventory.collect.collect is being written")
