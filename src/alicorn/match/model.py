"""Findings: an installed package an advisory applies to."""

from __future__ import annotations

from dataclasses import dataclass

from alicorn.advisories.model import Advisory
from alicorn.inventory.model import Inventory, Package


@dataclass(frozen=True)
class Finding:
    """``advisory`` applies to the installed ``package``; ``fixed_version`` is the version
    that carries the fix (rpm: the advisory's ``[E:]V-R``; None when no fix exists yet)."""

    advisory: Advisory
    package: Package
    fixed_version: str | None
    # rpm: the advisory's package NEVRA that updates this one (what dnf would install).
    update: str | None = None

    @property
    def cves(self) -> tuple[str, ...]:
        return self.advisory.cves

    @property
    def severity(self) -> str | None:
        return self.advisory.severity


@dataclass(frozen=True)
class Unchecked:
    """Installed packages of one type that no advisory of the feed could apply to (a Debian
    root scanned with only PyPI advisories imported): they were not checked, so "no findings"
    says nothing about them."""

    type: str       # the package type: rpm, deb, pypi, gem, maven, npm
    packages: int   # how many of the inventory's packages are of that type
    reason: str     # e.g. "no Debian 12 advisories imported"


@dataclass(frozen=True)
class Scan:
    """One target's inventory and the findings against it.

    ``complete`` is False when some package database could not be read
    (``inventory.errors``): such a scan must never be reported as "no findings".
    ``unchecked`` lists the package types the advisories did not cover (see
    :class:`Unchecked`); a scan none of whose packages were checked is not a clean one either.
    """

    inventory: Inventory
    findings: tuple[Finding, ...]
    unchecked: tuple[Unchecked, ...] = ()

    @property
    def checked(self) -> int:
        """How many of the inventory's packages some advisory could apply to."""
        return len(self.inventory.packages) - sum(u.packages for u in self.unchecked)

    @property
    def complete(self) -> bool:
        return not self.inventory.errors
