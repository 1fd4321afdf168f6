"""Advisories indexed by the installed package they can apply to, built once per scan.

A scan asks "which advisories name this package?" once per installed package; with 100k
advisories and 1,000 image inventories that must be a dictionary lookup, not a loop over the
feed.  Two maps:

* rpm advisories (updateinfo, OVAL, Bodhi: ``Advisory.packages`` are the fixed builds) by the
  build's binary package name;
* ``Advisory.affected`` entries by (version-order family, normalised name): PyPI names
  canonicalised (PEP 503: ``PyYAML`` = ``pyyaml``, ``zope.interface`` = ``zope-interface``),
  Maven ``group:artifact``, npm and RubyGems names as written, Debian by *source* package
  (ecosystems ``Debian:12``, ``Debian:11``, ``Debian``).

Entries of other ecosystems (Go, crates.io, Ubuntu, ...) are counted in :attr:`IndexStats`
and not indexed: no installed package type of ours can match them.  Withdrawn advisories are
left out: they never match.  When two advisories share an id (the same feed imported twice, an
erratum in updateinfo and in OVAL), the one updated last is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from packaging.utils import canonicalize_name

from alicorn.advisories.model import Advisory, Affected, PackageRef
from alicorn.inventory.model import Distro, Package

__all__ = ["AdvisoryIndex", "Candidate", "Coverage", "EcosystemCoverage", "IndexStats",
           "affected_key", "lookup_keys", "package_key"]

# OSV ecosystem (the part before ":") → the family an installed package type looks up.
_ECOSYSTEM_FAMILY = {"pypi": "pypi", "rubygems": "gem", "maven": "maven", "npm": "npm",
                     "debian": "deb"}
# Installed package type → family.
_TYPE_FAMILY = {"pypi": "pypi", "gem": "gem", "maven": "maven", "npm": "npm", "deb": "deb"}

_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An advisory that names an installed package: by one of its fixed rpm builds
    (``package``) or by an ``affected`` entry with version ranges."""

    advisory: Advisory
    affected: Affected | None = None
    package: PackageRef | None = None


@dataclass(frozen=True)
class IndexStats:
    """What went into an index, for the scan's log and benchmarks."""

    advisories: int            # indexed (after dropping withdrawn and replaced ones)
    withdrawn: int             # left out: withdrawn advisories never match
    replaced: int              # left out: an advisory with the same id updated later
    rpm_packages: int          # fixed rpm builds indexed
    affected: int              # affected entries indexed
    other_ecosystems: dict[str, int]  # affected entries not indexed, per ecosystem


def _normalise(fam: str, name: str) -> str:
    return str(canonicalize_name(name)) if fam == "pypi" else name


def affected_key(affected: Affected) -> tuple[str, str] | None:
    """The (family, normalised name) an ``Affected`` is indexed under, ``None`` for an
    ecosystem no installed package type matches."""
    fam = _ECOSYSTEM_FAMILY.get(affected.ecosystem.split(":", 1)[0].strip().lower())
    if fam is None:
        return None
    return fam, _normalise(fam, affected.name)


def package_key(package: Package) -> tuple[str, str] | None:
    """The (family, normalised name) an installed non-rpm package is looked up by: a deb by
    its source package, a Maven artifact as ``group:artifact``."""
    fam = _TYPE_FAMILY.get(package.type)
    if fam is None:
        return None
    if fam == "deb":
        return fam, package.source or package.name
    name = package.name
    if fam == "maven" and ":" not in name and package.group:
        name = f"{package.group}:{name}"
    return fam, _normalise(fam, name)


def debian_ecosystems(distro: Distro | None) -> frozenset[str]:
    """The OSV ecosystems whose advisories apply to a Debian root: ``Debian:<major>`` and the
    release-less ``Debian``.  Nothing for a root that is not Debian (Ubuntu's versions are
    not Debian's) or whose os-release is unknown."""
    if distro is None or distro.id.lower() != "debian":
        return frozenset()
    names = {"Debian"}
    if distro.version_id:
        names.add(f"Debian:{distro.version_id.split('.', 1)[0]}")
    return frozenset(names)


def lookup_keys(packages: Iterable[Package]) -> set[str]:
    """The keys an installed package set looks advisories up by, as strings: ``rpm:NAME``,
    ``FAMILY:NORMALISED`` (the advisory store keeps the same key per advisory package)."""
    keys = set()
    for package in packages:
        if package.type == "rpm":
            keys.add(f"rpm:{package.name}")
            continue
        key = package_key(package)
        if key is not None:
            keys.add(f"{key[0]}:{key[1]}")
    return keys


class Coverage(Protocol):
    """What a set of advisories covers: which package types a scan could check at all."""

    def covers(self, package_type: str, distro: Distro | None = None) -> bool:
        """Whether any advisory could apply to a package of ``package_type`` in a root of
        ``distro`` (see :meth:`AdvisoryIndex.covers`)."""


@dataclass(frozen=True)
class EcosystemCoverage:
    """Coverage known from the ecosystems advisories name, without the advisories: what the
    advisory store answers in one query, so a scan that reads only the advisories naming its
    packages still knows whether a package type was checked or not covered at all."""

    rpm: bool                       # some advisory ships a fixed rpm build
    ecosystems: frozenset[str]      # the OSV ecosystems of every affected entry

    @classmethod
    def of(cls, advisories: Iterable[Advisory]) -> EcosystemCoverage:
        """The coverage of ``advisories`` (withdrawn ones cover nothing)."""
        rpm, ecosystems = False, set[str]()
        for advisory in advisories:
            if advisory.withdrawn is not None:
                continue
            rpm = rpm or bool(advisory.packages)
            ecosystems.update(a.ecosystem for a in advisory.affected)
        return cls(rpm=rpm, ecosystems=frozenset(ecosystems))

    def __or__(self, other: EcosystemCoverage) -> EcosystemCoverage:
        return EcosystemCoverage(rpm=self.rpm or other.rpm,
                                 ecosystems=self.ecosystems | other.ecosystems)

    def covers(self, package_type: str, distro: Distro | None = None) -> bool:
        if package_type == "rpm":
            return self.rpm
        fam = _TYPE_FAMILY.get(package_type)
        if fam is None:
            return False
        entries = [e for e in self.ecosystems
                   if _ECOSYSTEM_FAMILY.get(e.split(":", 1)[0].strip().lower()) == fam]
        if fam == "deb":
            return bool(set(entries) & debian_ecosystems(distro))
        return bool(entries)


class AdvisoryIndex:
    """The advisories of a feed, looked up by installed package (see the module docstring).

    Memory: one small :class:`Candidate` per fixed rpm build and per affected entry, pointing
    at the advisories themselves (which the caller already holds), plus two dictionaries.
    """

    def __init__(self, advisories: Iterable[Advisory]):
        latest: dict[str, Advisory] = {}
        withdrawn = replaced = 0
        for advisory in advisories:
            if advisory.withdrawn is not None:
                withdrawn += 1
                continue
            previous = latest.get(advisory.id)
            if previous is not None:
                replaced += 1
                if _stamp(previous) > _stamp(advisory):
                    continue
            latest[advisory.id] = advisory
        self._rpm: dict[str, list[Candidate]] = {}
        self._affected: dict[tuple[str, str], list[Candidate]] = {}
        rpm_packages = affected_count = 0
        other: dict[str, int] = {}
        for advisory in latest.values():
            for ref in advisory.packages:
                self._rpm.setdefault(ref.name, []).append(Candidate(advisory, package=ref))
                rpm_packages += 1
            for entry in advisory.affected:
                key = affected_key(entry)
                if key is None:
                    other[entry.ecosystem] = other.get(entry.ecosystem, 0) + 1
                    continue
                self._affected.setdefault(key, []).append(Candidate(advisory, affected=entry))
                affected_count += 1
        self.stats = IndexStats(advisories=len(latest), withdrawn=withdrawn, replaced=replaced,
                                rpm_packages=rpm_packages, affected=affected_count,
                                other_ecosystems=other)
        self.has_debian = any(fam == "deb" for fam, _ in self._affected)
        self._families = frozenset(fam for fam, _ in self._affected)
        self._debian_ecosystems = frozenset(
            c.affected.ecosystem for (fam, _), found in self._affected.items() if fam == "deb"
            for c in found if c.affected is not None)

    def __len__(self) -> int:
        return self.stats.advisories

    def covers(self, package_type: str, distro: Distro | None = None) -> bool:
        """Whether any advisory of the index could apply to a package of ``package_type``
        (installed in a root of ``distro``): rpm needs some fixed rpm build, deb an entry of
        the root's Debian release, the others an entry of their ecosystem.  A scan says which
        package types were not covered rather than calling them clean."""
        if package_type == "rpm":
            return bool(self._rpm)
        fam = _TYPE_FAMILY.get(package_type)
        if fam == "deb":
            return bool(self._debian_ecosystems & debian_ecosystems(distro))
        return fam is not None and fam in self._families

    def candidates(self, package: Package, distro: Distro | None = None) -> tuple[Candidate, ...]:
        """The advisories that name ``package``; the matcher then compares versions.

        rpm: every fixed build with the package's name (arch and version are the matcher's to
        check).  deb: the entries for its source package in the ecosystems of ``distro``
        (:func:`debian_ecosystems`; none when ``distro`` is not Debian).  pypi, gem, maven,
        npm: the entries of that ecosystem for its normalised name.
        """
        if package.type == "rpm":
            return tuple(self._rpm.get(package.name, ()))
        key = package_key(package)
        if key is None:
            return ()
        found = self._affected.get(key, ())
        if key[0] == "deb":
            ecosystems = debian_ecosystems(distro)
            return tuple(c for c in found
                         if c.affected is not None and c.affected.ecosystem in ecosystems)
        return tuple(found)


def _stamp(advisory: Advisory) -> datetime:
    stamp = advisory.updated or advisory.issued or _EPOCH
    # A feed reader that forgot the zone must not make the comparison raise.
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
