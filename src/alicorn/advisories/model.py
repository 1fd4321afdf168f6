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
class Range:
    """An OSV-style range of affected versions: events in the ecosystem's version order.

    ``type`` is ``ECOSYSTEM`` (the ecosystem's own version order), ``SEMVER`` or ``GIT``
    (GIT ranges cannot be matched against installed versions and are kept only as data).
    ``events`` are ``(kind, version)`` pairs with kind ``introduced`` ("0" = from the start),
    ``fixed``, ``last_affected`` or ``limit``, in the order the feed gives them.
    """

    type: str
    events: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Affected:
    """A package of one ecosystem an advisory names, with the versions it affects.

    ``ecosystem`` is OSV's spelling: ``PyPI``, ``RubyGems``, ``Maven``, ``npm``, ``Debian:12``,
    ``Debian``, ``Fedora:39``, ...  ``name`` is the package name as that ecosystem writes it
    (Maven: ``group:artifact``; Debian: the *source* package).  A version is affected when it
    lies in one of ``ranges`` or is listed in ``versions``; ``unaffected`` holds the
    ecosystem's own requirement expressions under which a version is *not* affected (rubysec's
    ``patched_versions`` + ``unaffected_versions``, e.g. ``"~> 1.2.3"``, ``">= 1.3"``): a version
    matching none of them is affected.
    """

    ecosystem: str
    name: str
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()
    unaffected: tuple[str, ...] = ()

    @property
    def fixed_versions(self) -> tuple[str, ...]:
        """Every ``fixed`` event, in order (the versions that carry the fix)."""
        return tuple(v for r in self.ranges for kind, v in r.events if kind == "fixed")


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
    # Feed format it came from: updateinfo | osv | rubysec | oval | debian | bodhi
    format: str = "updateinfo"
    # Other ids of the same advisory (OSV aliases: CVE-..., GHSA-..., PYSEC-...).
    aliases: tuple[str, ...] = field(default=())
    # Non-RPM packages and distro source packages it affects, with ranges (OSV and the like).
    # RPM advisories (updateinfo, OVAL) list the fixed builds in ``packages`` instead.
    affected: tuple[Affected, ...] = field(default=())
    withdrawn: datetime | None = None

    @property
    def cves(self) -> tuple[str, ...]:
        """The CVE ids of the ``cve`` references, in order, without repeats.

        Some feeds put a bare number in ``id`` and the CVE name in ``title``; the name wins.
        """
        seen: dict[str, None] = {}
        for alias in (self.id, *self.aliases):
            if alias.upper().startswith("CVE-"):
                seen.setdefault(alias.upper(), None)
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
