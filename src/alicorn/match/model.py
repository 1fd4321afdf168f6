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
class Scan:
    """One target's inventory and the findings against it.

    ``complete`` is False when some package database could not be read
    (``inventory.errors``): such a scan must never be reported as "no findings".
    """

    inventory: Inventory
    findings: tuple[Finding, ...]

    @property
    def complete(self) -> bool:
        return not self.inventory.errors
