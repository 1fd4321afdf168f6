"""Installed packages as frozen values: what every package database turns into."""

from __future__ import annotations

from dataclasses import dataclass, field

from alicorn.errors import BadInput

#: Package types, as the scan's JSON names them (and purl types: rpm deb pypi gem maven npm).
PACKAGE_TYPES = ("rpm", "deb", "pypi", "gem", "maven", "npm")


class InventoryError(BadInput):
    """A target cannot be read at all (not found, not an image, a hostile archive).

    A package database that cannot be read inside an otherwise readable target is not this
    error but an entry in :attr:`Inventory.errors`: the scan then says the inventory is
    incomplete instead of reporting "no findings".
    """


@dataclass(frozen=True)
class Package:
    """One installed package.

    ``version`` is the ecosystem's full version string: rpm ``[E:]V-R`` (epoch only when it is
    not 0 or absent... see :attr:`epoch`), deb the full Debian version (``1:2.3-4+deb12u1``),
    PyPI/gem/Maven/npm the version as the package states it.
    ``source`` is the source package for rpm (the source RPM's name, not file name) and deb
    (``Source:`` of dpkg status, else the binary name); ``source_version`` the source
    package's version where it differs (dpkg ``Source: name (version)``), else ``None``.
    ``path`` is where in the root it was found (the rpmdb, ``var/lib/dpkg/status``, the
    dist-info directory, the jar — ``outer.jar!/BOOT-INF/lib/inner.jar`` for nested jars).
    """

    type: str
    name: str
    version: str
    arch: str | None = None
    epoch: int | None = None   # rpm and deb: the epoch, None when absent
    release: str | None = None  # rpm: the release; None otherwise
    source: str | None = None
    source_version: str | None = None
    path: str | None = None
    purl: str | None = None
    # Maven: group id (name is "group:artifact" as OSV spells it); None otherwise.
    group: str | None = None

    @property
    def evr(self) -> str:
        """rpm: ``E:V-R`` with the epoch always present (0 when absent); others: version."""
        if self.type != "rpm":
            return self.version
        v = self.version
        if ":" in v.split("-", 1)[0]:
            v = v.split(":", 1)[1]
        return f"{self.epoch or 0}:{v}"

    @property
    def nevra(self) -> str:
        """rpm ``name-[E:]V-R.arch`` as dnf prints it (epoch only when non-zero)."""
        return f"{self.name}-{self.version}.{self.arch}" if self.arch else \
            f"{self.name}-{self.version}"


@dataclass(frozen=True)
class Distro:
    """What /etc/os-release (or /usr/lib/os-release) of the root says."""

    id: str                      # "fedora", "debian", "rhel", ...
    version_id: str | None       # "39", "12", ...
    id_like: tuple[str, ...] = ()
    pretty_name: str | None = None
    codename: str | None = None  # VERSION_CODENAME: "bookworm"


@dataclass(frozen=True)
class Inventory:
    """Everything installed in one target, and what could not be read.

    ``errors`` lists package databases that exist but could not be read (a corrupt rpmdb),
    each naming the path and the reason; ``warnings`` records that were skipped (one
    malformed dist-info among hundreds).  A scan with errors is incomplete and says so.
    """

    target: str            # what the user named
    kind: str              # host | rootfs | oci-layout | oci-archive | docker-archive |
    #                        podman-image |
    #                        podman-container | alicorn
    packages: tuple[Package, ...]
    distro: Distro | None = None
    digest: str | None = None       # image manifest digest / image id, when there is one
    name: str | None = None         # image reference or container name, when there is one
    warnings: tuple[str, ...] = field(default=())
    errors: tuple[str, ...] = field(default=())
