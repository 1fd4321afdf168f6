"""Version order of each ecosystem, from the libraries each ecosystem's own tools use or port.

* rpm: ``rpm.labelCompare`` (rpm's own Python binding: epoch, ``~`` before and ``^`` after the
  release, exactly as dnf and ``rpm -U`` decide).
* dpkg: ``apt_pkg.version_compare`` (python3-apt, apt's own C++ code); python-debian's pure
  Python ``debian_support.version_compare`` when apt_pkg is absent.  python-debian's
  ``Version`` also validates the syntax (apt_pkg compares any string).
* PEP 440: ``packaging.version`` (what pip uses).
* Maven and RubyGems: ``univers`` (aboutcode).  ``univers.maven`` ports Maven's own
  ``ComparableVersion`` (qualifiers alpha < beta < milestone < rc < snapshot < "" < sp) and
  ``univers.gem`` ports ``Gem::Version`` and ``Gem::Requirement`` (``~>`` included), which no
  other maintained Python library does; it is kept by the people who write purl and
  VulnerableCode.  Parsing costs ~7-18 µs a version, so parsed versions are cached.
* npm and OSV ``SEMVER`` ranges: ``semver`` (python-semver 3), strict SemVer 2.0 precedence
  with build metadata ignored, as the spec and node-semver do.  univers' ``SemverVersion`` is
  not used on purpose: it coerces ("1.2" → 1.2.0) and orders by build metadata, against
  SemVer 2.0 §10.  node-semver's Python port is unmaintained.

A version an ecosystem cannot read raises :class:`InvalidVersion`; :func:`in_range` turns that
into ``None`` ("cannot decide") so the matcher reports the match as uncertain with a warning
instead of silently dropping it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import packaging.version
import rpm
import semver
from univers import gem, maven

from alicorn.advisories.model import Affected, Range

try:  # python3-apt comes from the system's site-packages; python-debian is the fallback
    import apt_pkg

    apt_pkg.init_system()
    _apt_compare: Callable[[str, str], int] | None = apt_pkg.version_compare
except (ImportError, SystemError):  # pragma: no cover - depends on the system
    _apt_compare = None

from debian import debian_support

__all__ = [
    "InvalidVersion", "UnsupportedEcosystem", "Verdict", "compare", "evaluate", "family",
    "in_range",
]


class InvalidVersion(ValueError):
    """``version`` is not a version of ``ecosystem`` (so it cannot be ordered)."""

    def __init__(self, ecosystem: str, version: str, reason: str = ""):
        detail = f": {reason}" if reason else ""
        super().__init__(f"{version!r} is not a valid {ecosystem} version{detail}")
        self.ecosystem = ecosystem
        self.version = version


class UnsupportedEcosystem(ValueError):
    """No version order is known for this ecosystem (OSV's ``Go``, ``crates.io``, ...)."""


# OSV ecosystem names (the part before ":") and our package types, to one order each.
_FAMILIES = {
    "rpm": "rpm", "fedora": "rpm", "red hat": "rpm", "redhat": "rpm", "almalinux": "rpm",
    "rocky linux": "rpm", "opensuse": "rpm", "suse": "rpm", "mageia": "rpm",
    "photon os": "rpm", "openeuler": "rpm", "centos": "rpm", "rhel": "rpm",
    "deb": "deb", "dpkg": "deb", "debian": "deb", "ubuntu": "deb",
    "pypi": "pypi", "pep440": "pypi", "python": "pypi",
    "gem": "gem", "rubygems": "gem",
    "maven": "maven",
    "npm": "npm",
    "semver": "semver",
}


def family(ecosystem_or_type: str) -> str:
    """The version order an OSV ecosystem or a package type uses: ``rpm``, ``deb``, ``pypi``,
    ``gem``, ``maven``, ``npm`` or ``semver``.

    ``Debian:12`` → ``deb``, ``Maven:https://maven.google.com`` → ``maven``; raises
    :class:`UnsupportedEcosystem` for any other.
    """
    head = ecosystem_or_type.split(":", 1)[0].strip().lower()
    try:
        return _FAMILIES[head]
    except KeyError:
        raise UnsupportedEcosystem(
            f"no version order known for ecosystem {ecosystem_or_type!r}") from None


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


# -- rpm ----------------------------------------------------------------------------------

def split_evr(evr: str) -> tuple[str, str, str]:
    """``[E:]V[-R]`` → ``(E, V, R)`` as ``rpm.labelCompare`` wants them: a missing epoch is
    ``"0"`` (rpm treats no epoch as 0), a missing release ``""``."""
    epoch = "0"
    head, sep, rest = evr.partition(":")
    if sep and head.isdigit():
        epoch, evr = head, rest
    version, _, release = evr.rpartition("-") if "-" in evr else (evr, "", "")
    return epoch or "0", version, release


def _rpm_compare(a: str, b: str) -> int:
    ea, eb = split_evr(a), split_evr(b)
    for original, (_, version, _) in ((a, ea), (b, eb)):
        if not version:
            raise InvalidVersion("rpm", original, "no version")
    return _sign(rpm.labelCompare(ea, eb))


# -- dpkg ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=65536)
def _deb_valid(version: str) -> None:
    try:
        debian_support.Version(version)
    except ValueError as e:
        raise InvalidVersion("dpkg", version, str(e)) from None


def _deb_compare(a: str, b: str) -> int:
    _deb_valid(a)
    _deb_valid(b)
    if _apt_compare is not None:
        return _sign(_apt_compare(a, b))
    return _sign(debian_support.version_compare(a, b))  # pragma: no cover


# -- PEP 440, Maven, RubyGems, semver: parsed once, compared as objects ------------------

@functools.lru_cache(maxsize=65536)
def _pep440(version: str) -> packaging.version.Version:
    try:
        return packaging.version.Version(version)
    except packaging.version.InvalidVersion as e:
        raise InvalidVersion("PEP 440", version, str(e)) from None


@functools.lru_cache(maxsize=65536)
def _maven(version: str) -> Any:
    if not version.strip():
        raise InvalidVersion("Maven", version, "empty")
    try:
        return maven.Version(version.strip())  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as e:
        raise InvalidVersion("Maven", version, str(e)) from None


@functools.lru_cache(maxsize=65536)
def _gem(version: str) -> Any:
    text = version.strip()
    if not text:
        raise InvalidVersion("RubyGems", version, "empty")
    try:
        return gem.GemVersion(text)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as e:
        raise InvalidVersion("RubyGems", version, str(e)) from None


# node-semver's "loose" cleaning: surrounding blanks, a leading "=" or "v".
_SEMVER_PREFIX = re.compile(r"^\s*=?\s*v?")


@functools.lru_cache(maxsize=65536)
def _semver(version: str) -> semver.Version:
    text = _SEMVER_PREFIX.sub("", version).strip()
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError) as e:
        raise InvalidVersion("SemVer", version, str(e)) from None


def _object_compare(parse: Callable[[str], Any]) -> Callable[[str, str], int]:
    # univers recomputes a version's segments on every comparison; the same pairs recur across
    # every inventory of a scan, so their results are cached.
    @functools.lru_cache(maxsize=262144)
    def cmp(a: str, b: str) -> int:
        va, vb = parse(a), parse(b)
        return int(va > vb) - int(va < vb)
    return cmp


def _semver_compare(a: str, b: str) -> int:
    return _semver(a).compare(_semver(b))


_COMPARE: dict[str, Callable[[str, str], int]] = {
    "rpm": _rpm_compare,
    "deb": _deb_compare,
    "pypi": _object_compare(_pep440),
    "maven": _object_compare(_maven),
    "gem": _object_compare(_gem),
    "npm": _semver_compare,
    "semver": _semver_compare,
}


def compare(ecosystem_or_type: str, a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` sorts before, equal to or after ``b`` in the ecosystem.

    ``ecosystem_or_type`` is an OSV ecosystem (``PyPI``, ``Debian:12``, ``Maven``, ...), a
    package type (``rpm``, ``deb``, ``pypi``, ``gem``, ``maven``, ``npm``) or ``SEMVER``.
    rpm versions are ``[E:]V-R`` (no epoch = 0).  Raises :class:`InvalidVersion` when either
    is not a version of the ecosystem, :class:`UnsupportedEcosystem` for an unknown one.
    """
    return _COMPARE[family(ecosystem_or_type)](a, b)


# -- OSV ranges and rubysec requirement lists ---------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """Whether one version is affected, and the version that fixes it.

    ``affected`` is ``None`` when it cannot be decided (a version the ecosystem cannot read, a
    GIT range, an unknown ecosystem); ``reason`` then says why.  ``fixed`` is the smallest
    fixed version above the installed one in the range that matched, or for requirement lists
    (rubysec) the lowest patched version above it, else the expressions joined by ``" || "``.
    """

    affected: bool | None
    fixed: str | None = None
    reason: str | None = None


# OSV's range types; any other (rubysec's data-only ``PATCHED``) says nothing about what is
# affected and is not evaluated.
_RANGE_TYPES = frozenset({"ECOSYSTEM", "SEMVER", "GIT"})

_KIND_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 1, "limit": 2}


def _range_verdict(cmp: Callable[[str, str], int], version: str, range_: Range,
                   _nested: bool = False) -> tuple[bool, str | None]:
    """OSV's ``IncludedInRanges`` for one range (the schema's "Evaluation" pseudocode).

    Events are sorted in version order (``introduced: "0"`` first).  Where an ``introduced``
    and a ``fixed`` share a version the state does not change there: one interval ends where
    the next begins ([a, X) then [X, b) stays affected at and after X), and an empty [X, X)
    affects nothing — no order of the two events gets both cases right.
    """
    events = [(kind, v) for kind, v in range_.events if kind in _KIND_ORDER]
    limits = [v for kind, v in events if kind == "limit"]
    if limits and not any("*" in lim or cmp(version, lim) < 0 for lim in limits):
        return False, None

    def key(a: tuple[str, str], b: tuple[str, str]) -> int:
        if a[1] == b[1] or (a[0] == "introduced" and a[1] == "0" and b[1] == "0"):
            return 0
        if a[0] == "introduced" and a[1] == "0":
            return -1
        if b[0] == "introduced" and b[1] == "0":
            return 1
        return cmp(a[1], b[1])

    ordered = sorted((e for e in events if e[0] != "limit"), key=functools.cmp_to_key(key))
    vulnerable = False
    i = 0
    while i < len(ordered):
        group = [ordered[i]]
        while i + len(group) < len(ordered) and key(ordered[i], ordered[i + len(group)]) == 0:
            group.append(ordered[i + len(group)])
        i += len(group)
        at = group[0][1]
        kinds = {kind for kind, _ in group}
        reached = at == "0" or cmp(version, at) >= 0
        if not reached:
            continue
        if "introduced" in kinds and "fixed" in kinds:
            pass  # [.., X) + [X, ..): unchanged (see the docstring)
        elif "introduced" in kinds:
            vulnerable = True
        elif "fixed" in kinds:
            vulnerable = False
        if "last_affected" in kinds and cmp(version, at) > 0:
            vulnerable = False
    if not vulnerable:
        return False, None
    # The fix is the first fixed version above the installed one that this range does not
    # itself affect again (adjacent intervals: [0, 2) + [2, 3) is fixed by 3, not by 2).
    fixes = sorted((v for kind, v in ordered if kind == "fixed" and cmp(v, version) > 0),
                   key=functools.cmp_to_key(cmp))
    if not _nested:
        for fix in fixes:
            if not _range_verdict(cmp, fix, range_, _nested=True)[0]:
                return True, fix
    return True, None


@functools.lru_cache(maxsize=65536)
def _gem_requirement(expression: str) -> Any:
    try:
        return gem.GemRequirement.from_string(expression)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, gem.InvalidRequirementError) as e:
        # univers forgets the f of its f-string ("Illformed requirement {requirement!r}"):
        # the expression is named by InvalidVersion anyway.
        reason = "ill-formed requirement" if "{requirement" in str(e) else str(e)
        raise InvalidVersion("RubyGems requirement", expression, reason) from None


@functools.lru_cache(maxsize=65536)
def _requirements_verdict(fam: str, version: str,
                          expressions: tuple[str, ...]) -> Verdict:
    """rubysec: affected when the version satisfies none of ``expressions``."""
    if fam != "gem":
        return Verdict(None, reason=f"requirement expressions are only known for RubyGems, "
                                    f"not {fam}")
    installed = _gem(version)
    requirements = [_gem_requirement(e) for e in expressions]
    if any(r.satisfied_by(installed) for r in requirements):
        return Verdict(False)
    return Verdict(True, fixed=_lowest_patch(installed, requirements, expressions))


def _lowest_patch(installed: Any, requirements: Sequence[Any],
                  expressions: Sequence[str]) -> str:
    """The lowest version above ``installed`` that satisfies one requirement: each
    requirement's lower bound (``>=``, ``~>``, ``=``) is a candidate when it satisfies the
    whole requirement.  Without one (``> 1.2``, ``< 2``): the expressions, ``" || "``-joined."""
    candidates = []
    for requirement in requirements:
        for constraint in requirement.constraints:
            if constraint.op in (">=", "~>", "=") and constraint.version > installed \
                    and requirement.satisfied_by(constraint.version):
                candidates.append(constraint.version)
    if candidates:
        return str(min(candidates))
    return " || ".join(expressions)


def evaluate(ecosystem: str, version: str, affected: Affected) -> Verdict:
    """Whether ``version`` (of a package of ``ecosystem``) is affected per ``affected``.

    OSV semantics: affected when listed in ``versions`` or inside one of ``ranges``
    (``ECOSYSTEM`` ranges in the ecosystem's order, ``SEMVER`` ranges in SemVer order, ``GIT``
    ranges cannot be decided → ``None``; ranges of other types are data only and ignored).
    ``unaffected`` (rubysec's patched and unaffected requirement expressions) make a version
    affected when it satisfies none of them; with ranges or versions as well, those must also
    include it.  An entry with neither ranges, versions nor expressions affects nothing (as in
    OSV; rubysec's "no patched versions" rule is the matcher's, which knows the feed).
    """
    try:
        fam = family(ecosystem)
    except UnsupportedEcosystem as e:
        return Verdict(None, reason=str(e))
    cmp = _COMPARE[fam]
    try:
        if affected.versions and _listed(fam, cmp, version, affected.versions):
            return _with_expressions(fam, version, affected, _smallest_fix(cmp, version,
                                                                           affected))
        uncertain: str | None = None
        ranges = [r for r in affected.ranges if r.type.upper() in _RANGE_TYPES]
        ordered = [r for r in ranges if r.type.upper() != "GIT"]
        if len(ordered) < len(ranges) and not ordered and not affected.versions:
            # OSV requires a ``versions`` list beside GIT ranges, which then answers for them;
            # only GIT ranges and nothing else cannot be decided without the repository.
            uncertain = "only GIT ranges, which need the repository's commit graph"
        for range_ in ordered:
            rtype = range_.type.upper()
            range_cmp = _COMPARE["semver"] if rtype == "SEMVER" else cmp
            try:
                hit, fixed = _range_verdict(range_cmp, version, range_)
            except InvalidVersion as e:
                uncertain = uncertain or str(e)
                continue
            if hit:
                return _with_expressions(fam, version, affected, fixed)
        if uncertain:
            return Verdict(None, reason=uncertain)
        if affected.unaffected and not ranges and not affected.versions:
            return _requirements_verdict(fam, version, affected.unaffected)
        return Verdict(False)
    except InvalidVersion as e:
        return Verdict(None, reason=str(e))


def _with_expressions(fam: str, version: str, affected: Affected,
                      fixed: str | None) -> Verdict:
    if not affected.unaffected:
        return Verdict(True, fixed=fixed)
    verdict = _requirements_verdict(fam, version, affected.unaffected)
    if verdict.affected:
        return Verdict(True, fixed=fixed or verdict.fixed)
    return verdict


# Families whose parsed versions hash consistently with their order's equality (univers'
# Maven versions do not: "1.0" == "1.0.0" but their hashes differ).
_HASHABLE: dict[str, Callable[[str], Any]] = {"pypi": _pep440, "gem": _gem, "npm": _semver,
                                              "semver": _semver}


@functools.lru_cache(maxsize=8192)
def _listed_keys(fam: str, versions: tuple[str, ...]) -> frozenset[Any]:
    """The parsed ``versions`` (those the family can read) as a set: PyPA lists hundreds of
    versions per entry, and one set lookup replaces hundreds of comparisons."""
    parse = _HASHABLE[fam]
    keys = set()
    for listed in versions:
        try:
            keys.add(parse(listed))
        except InvalidVersion:
            continue  # an unreadable listed version cannot equal a readable one
    return frozenset(keys)


def _listed(fam: str, cmp: Callable[[str, str], int], version: str,
            versions: tuple[str, ...]) -> bool:
    if version in versions:
        return True
    if fam in _HASHABLE:
        try:
            return _HASHABLE[fam](version) in _listed_keys(fam, versions)
        except InvalidVersion:
            return False
    for listed in versions:
        try:
            if cmp(version, listed) == 0:
                return True
        except InvalidVersion:
            continue  # an unreadable listed version cannot equal a readable one
    return False


def _smallest_fix(cmp: Callable[[str, str], int], version: str,
                  affected: Affected) -> str | None:
    fixes = []
    for v in affected.fixed_versions:
        try:
            if cmp(v, version) > 0:
                fixes.append(v)
        except InvalidVersion:
            continue
    return min(fixes, key=functools.cmp_to_key(cmp)) if fixes else None


def in_range(ecosystem: str, version: str, affected: Affected) -> bool | None:
    """True when ``version`` is affected per ``affected`` (see :func:`evaluate`), False when
    not, ``None`` when it cannot be decided (unreadable version, GIT range, unknown
    ecosystem)."""
    return evaluate(ecosystem, version, affected).affected
