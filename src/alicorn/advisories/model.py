"""Advisories as frozen values: what every feed (updateinfo.xml, Bodhi, OSV, ...) turns into."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from alicorn.errors import BadInput


class FeedError(BadInput):
    """An advisory feed cannot be read: malformed, unsafe, truncated or too large.

    ``where`` names the feed (a file, a URL) so the person knows which input to look at.
    """


@dataclass(frozen=True)
class Reference:
    """A link an advisory gives: a CVE, a bug, the advisory's own page, or something else."""

    type: str  # cve | bugzilla | self | other (whatever the feed says, as written)
    id: str  # "" when the feed gives none
    href: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class PackageRef:
    """A package build an advisory ships (the fixed version)."""

    name: str
    epoch: str
    version: str
    release: str
    arch: str
    src: str | None = None
    filename: str | None = None
    sha256: str | None = None
    # The modules ("name:stream") of the collection the package was listed in, if any.
    modules: tuple[str, ...] = ()

    @property
    def evr(self) -> str:
        return f"{self.epoch}:{self.version}-{self.release}"

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"


@dataclass(frozen=True)
class Advisory:
    """One advisory (an "update" in updateinfo.xml, an erratum, a Bodhi update)."""

    id: str
    type: str  # security | bugfix | enhancement | newpackage (as written by the feed)
    severity: str | None
    title: str
    description: str
    issued: datetime | None  # UTC
    updated: datetime | None  # UTC
    release: str | None
    status: str | None
    references: tuple[Reference, ...] = field(default=())
    packages: tuple[PackageRef, ...] = field(default=())
    source: str = ""  # where it was read from (a file, a URL)

    @property
    def cves(self) -> tuple[str, ...]:
        """The CVE ids of the ``cve`` references, in order, without repeats.

        Some feeds put a bare number in ``id`` and the CVE name in ``title``; the name wins.
        """
        seen: dict[str, None] = {}
        for ref in self.references:
            if ref.type.lower() != "cve":
                continue
            candidates = [ref.id, ref.title or ""]
            name = next((c for c in candidates if c.upper().startswith("CVE-")), ref.id)
            if name:
                seen.setdefault(name.upper() if name.upper().startswith("CVE-") else name, None)
        return tuple(seen)

    @property
    def bugzilla_ids(self) -> tuple[str, ...]:
        """The ids of the ``bugzilla`` references, in order, without repeats."""
        seen: dict[str, None] = {}
        for ref in self.references:
            if ref.type.lower() == "bugzilla" and ref.id:
                seen.setdefault(ref.id, None)
        return tuple(seen)
