"""Which advisories apply to which installed packages.

Distro packages are matched only against their distribution's advisories, upstream packages
only against upstream ranges: a Debian or Fedora build carries backported fixes under the old
upstream version number, so upstream ranges would flag it falsely.

**rpm** follows dnf 4's ``dnf updateinfo list`` (its default, "available" advisories), read
from dnf's ``cli/commands/updateinfo.py`` and libdnf's ``Query::getAdvisoryPkgs``:

* only the newest installed package of each name.arch is considered (dnf's
  ``installed().latest(1)``): an older kernel beside a newer one is not "vulnerable".  dnf also
  adds the running kernel's packages; an offline scan does not know which kernel runs;
* an advisory package applies when its name equals the installed one's, its arch is *the same*
  (libdnf compares the arch ids; a noarch build does not update an x86_64 one and vice versa),
  and its EVR is strictly newer (``rpm.labelCompare``).  Installed equal or newer: not
  applicable.  An advisory package without an arch (OVAL definitions often state none) is taken
  as unknown and matches any arch; dnf never sees such packages in updateinfo;
* a package listed in a module collection applies only when one of the collection's
  ``name:stream`` is enabled.  dnf knows the enabled streams from its module state; a scan does
  not, so ``enabled_modules`` defaults to none — the same answer as dnf on a system without
  enabled modules (every Fedora since modularity was retired);
* one finding per (installed package, advisory) even when several advisory packages fit;
  ``fixed_version`` is the advisory package's ``[E:]V-R``, ``update`` its NEVRA (both with the
  epoch only when it is not 0, as dnf prints them).

**deb**: the package's source name and source version against ``Debian:<major>`` (the
root's os-release ``VERSION_ID``) and release-less ``Debian`` entries, in dpkg order.

**pypi, gem, maven, npm**: against the ``PyPI``, ``RubyGems``, ``Maven``, ``npm`` entries, in
each ecosystem's order (:mod:`alicorn.match.versions`).  A rubysec advisory with neither
patched nor unaffected versions affects every version (ruby-advisory-db's own rule).

Withdrawn advisories never match (the index leaves them out).  A match that cannot be decided
(a version the ecosystem cannot read, a GIT-only range) is not a finding but a warning naming
the package, the advisory and why; :func:`scan` adds these warnings to the scan's inventory
warnings, which every report shows.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Iterable
from dataclasses import replace

from alicorn.advisories.model import Advisory, PackageRef
from alicorn.inventory.model import Inventory, Package
from alicorn.match.index import AdvisoryIndex, Coverage, debian_ecosystems
from alicorn.match.model import Finding, Scan, Unchecked
from alicorn.match.versions import InvalidVersion, Verdict, compare, evaluate

__all__ = ["NOTHING_FOUND", "match", "scan", "unchecked"]

log = logging.getLogger(__name__)

_UPSTREAM = {"pypi": "PyPI", "gem": "RubyGems", "maven": "Maven", "npm": "npm"}


def match(inventory: Inventory, index: AdvisoryIndex, *, types: set[str] | None = None,
          enabled_modules: Collection[str] = ()) -> tuple[Finding, ...]:
    """The findings of ``inventory`` against ``index`` (rules in the module docstring).

    ``types`` keeps only advisories of those types (``{"security"}``; case-insensitive);
    ``None`` keeps all.  ``enabled_modules`` are the ``name:stream`` module streams enabled
    in the target, if known.  Undecidable matches are logged as warnings; :func:`scan` also
    records them.
    """
    findings, warnings = _match(inventory, index, types, enabled_modules)
    for warning in warnings:
        log.warning("%s", warning)
    return findings


def scan(inventory: Inventory, index: AdvisoryIndex, *, types: set[str] | None = None,
         enabled_modules: Collection[str] = (), coverage: Coverage | None = None) -> Scan:
    """:func:`match` as a :class:`Scan`; undecidable matches are appended to the inventory's
    warnings (so a report shows them beside the skipped records).

    The scan's ``unchecked`` names the package types no advisory of ``coverage`` (default:
    ``index``) covers; a caller that filtered the advisories (``--cve``) passes the index of
    all of them, so that a filter is not mistaken for a feed that lacks an ecosystem.  An
    inventory without any package gets the error :data:`NOTHING_FOUND`.
    """
    findings, warnings = _match(inventory, index, types, enabled_modules)
    if warnings:
        inventory = replace(inventory, warnings=(*inventory.warnings, *warnings))
    if not inventory.packages and not inventory.errors:
        # An empty directory, a wrong path, an image of only static binaries: "no findings"
        # would read as clean when nothing was looked at.
        inventory = replace(inventory, errors=(NOTHING_FOUND,))
    return Scan(inventory=inventory, findings=findings,
                unchecked=unchecked(inventory, coverage or index))


#: The inventory error of a target in which no package source found anything.
NOTHING_FOUND = ("no packages found (no rpm database, no dpkg status, no Python, gem, jar "
                 "or npm package metadata): is this a root filesystem?")

_ECOSYSTEM_NAME = {"rpm": "rpm (updateinfo, OVAL or Bodhi)", "pypi": "PyPI",
                   "gem": "RubyGems", "maven": "Maven", "npm": "npm"}


def unchecked(inventory: Inventory, index: Coverage) -> tuple[Unchecked, ...]:
    """The package types of ``inventory`` that no advisory of ``index`` could apply to, with
    how many packages and why (:class:`~alicorn.match.model.Unchecked`)."""
    counts: dict[str, int] = {}
    for p in inventory.packages:
        counts[p.type] = counts.get(p.type, 0) + 1
    out = []
    for kind, n in sorted(counts.items()):
        if index.covers(kind, inventory.distro):
            continue
        if kind == "deb":
            ecosystems = debian_ecosystems(inventory.distro)
            if not ecosystems:
                said = inventory.distro.id if inventory.distro else "nothing"
                reason = (f"Debian advisories do not apply: the root's os-release says "
                          f"{said!r}, not Debian")
            else:
                release = max(ecosystems, key=len).replace(":", " ")
                reason = f"no {release} advisories imported"
        else:
            reason = f"no {_ECOSYSTEM_NAME.get(kind, kind)} advisories imported"
        out.append(Unchecked(type=kind, packages=n, reason=reason))
    return tuple(out)


def _match(inventory: Inventory, index: AdvisoryIndex, types: set[str] | None,
           enabled_modules: Collection[str]) -> tuple[tuple[Finding, ...], tuple[str, ...]]:
    wanted = {t.lower() for t in types} if types is not None else None
    modules = frozenset(enabled_modules)
    findings: list[Finding] = []
    warnings: list[str] = []
    rpms = [p for p in inventory.packages if p.type == "rpm"]
    for package in _latest_per_name_arch(rpms, warnings):
        findings.extend(_match_rpm(package, index, wanted, modules, warnings))
    # Debs of a root that is not Debian match nothing: scan() names them in Scan.unchecked.
    for package in inventory.packages:
        if package.type in ("deb", *_UPSTREAM):
            findings.extend(_match_ranges(package, inventory, index, wanted, warnings))
    findings = _one_per_vulnerability(findings)
    findings.sort(key=lambda f: (f.package.type, f.package.name, f.package.version,
                                 f.package.arch or "", f.package.path or "", f.advisory.id))
    return tuple(findings), tuple(warnings)


# -- one finding per vulnerability --------------------------------------------------------

def _one_per_vulnerability(findings: list[Finding]) -> list[Finding]:
    """One finding per package and vulnerability: advisories of one package linked by id
    (``PYSEC-2023-74`` names ``GHSA-j8r2-6x86-q33q`` among its aliases; a rubysec file names
    its GHSA) are one finding, as pip-audit and osv-scanner report them.

    The survivor is the advisory with a known severity, then the one the others name, then
    the lowest id; it carries every id of the group as an alias, its own references then
    theirs, and the lowest fixed version any of them names.  Advisories that only share a
    CVE are not merged: two rubysec files may name the same CVE for different flaws of one
    gem.
    """
    by_package: dict[Package, list[Finding]] = {}
    for f in findings:
        by_package.setdefault(f.package, []).append(f)
    out: list[Finding] = []
    for package, group in by_package.items():
        if len(group) == 1:
            out.extend(group)
            continue
        for linked in _linked(group):
            out.append(linked[0] if len(linked) == 1 else _merged(package, linked))
    return out


def _linked(group: list[Finding]) -> list[list[Finding]]:
    """``group`` split into sets of findings whose advisories name one another (by id)."""
    parent = list(range(len(group)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_id = {f.advisory.id.upper(): i for i, f in enumerate(group)}
    for i, f in enumerate(group):
        for alias in f.advisory.aliases:
            j = by_id.get(alias.upper())
            if j is not None:
                parent[root(i)] = root(j)
    sets: dict[int, list[Finding]] = {}
    for i, f in enumerate(group):
        sets.setdefault(root(i), []).append(f)
    return list(sets.values())


# What feeds write when they rate nothing.
_NO_SEVERITY = frozenset({"", "none", "unspecified", "unknown", "n/a"})


def _merged(package: Package, linked: list[Finding]) -> Finding:
    named = {a.upper() for f in linked for a in f.advisory.aliases}

    def rank(f: Finding) -> tuple[bool, bool, str]:
        # A rated advisory first; then the one the others name (the GHSA that a PYSEC record
        # or a rubysec file points to is the vulnerability's shared id); then the lowest id.
        unrated = (f.advisory.severity or "").strip().lower() in _NO_SEVERITY
        return (unrated, f.advisory.id.upper() not in named, f.advisory.id)

    best = min(linked, key=rank)
    aliases = dict.fromkeys(a for f in (best, *linked)
                            for a in (f.advisory.id, *f.advisory.aliases)
                            if a != best.advisory.id)
    # The survivor's own references first: its page stays the finding's link.
    references = dict.fromkeys((*best.advisory.references,
                                *(r for f in linked for r in f.advisory.references)))
    ecosystem = "rpm" if package.type == "rpm" else (
        "deb" if package.type == "deb" else _UPSTREAM.get(package.type, package.type))
    fixed = _lowest(ecosystem, [f.fixed_version for f in linked])
    advisory = replace(best.advisory, aliases=tuple(aliases), references=tuple(references))
    return replace(best, advisory=advisory, fixed_version=fixed)


def _type_ok(advisory: Advisory, wanted: set[str] | None) -> bool:
    return wanted is None or advisory.type.lower() in wanted


# -- rpm ----------------------------------------------------------------------------------

def _latest_per_name_arch(packages: Iterable[Package], warnings: list[str]) -> list[Package]:
    """dnf's ``installed().latest(1)``: the newest of each name.arch, in inventory order."""
    best: dict[tuple[str, str], Package] = {}
    for package in packages:
        key = (package.name, package.arch or "")
        current = best.get(key)
        if current is None:
            best[key] = package
            continue
        try:
            if compare("rpm", package.evr, current.evr) > 0:
                best[key] = package
        except InvalidVersion as e:
            warnings.append(f"rpm {package.nevra}: {e}; kept {current.nevra} as the newest")
    return list(best.values())


def _ref_evr(ref: PackageRef) -> str:
    vr = f"{ref.version}-{ref.release}" if ref.release else ref.version
    return f"{ref.epoch or '0'}:{vr}"


def _printed_evr(ref: PackageRef) -> str:
    vr = f"{ref.version}-{ref.release}" if ref.release else ref.version
    return f"{ref.epoch}:{vr}" if ref.epoch and ref.epoch != "0" else vr


def _match_rpm(package: Package, index: AdvisoryIndex, wanted: set[str] | None,
               modules: frozenset[str], warnings: list[str]) -> list[Finding]:
    chosen: dict[str, tuple[Advisory, PackageRef]] = {}
    for candidate in index.candidates(package):
        advisory, ref = candidate.advisory, candidate.package
        if ref is None or not _type_ok(advisory, wanted):
            continue
        if ref.arch and package.arch and ref.arch != package.arch:
            continue
        if ref.modules and not modules.intersection(ref.modules):
            continue
        try:
            if compare("rpm", _ref_evr(ref), package.evr) <= 0:
                continue
        except InvalidVersion as e:
            warnings.append(f"rpm {package.nevra}: {advisory.id}: cannot compare with "
                            f"{ref.nevra}: {e}; not matched")
            continue
        previous = chosen.get(advisory.id)
        if previous is None or _better(ref, previous[1], package):
            chosen[advisory.id] = (advisory, ref)
    return [Finding(advisory=advisory, package=package, fixed_version=_printed_evr(ref),
                    update=_nevra(ref, package))
            for advisory, ref in chosen.values()]


def _nevra(ref: PackageRef, package: Package) -> str:
    arch = ref.arch or package.arch
    return f"{ref.name}-{_printed_evr(ref)}" + (f".{arch}" if arch else "")


def _better(ref: PackageRef, than: PackageRef, package: Package) -> bool:
    """Of two advisory packages that update ``package``: the one of its very arch, then the
    lower EVR (the first build that carries the fix)."""
    exact, exact_than = ref.arch == package.arch, than.arch == package.arch
    if exact != exact_than:
        return exact
    try:
        return compare("rpm", _ref_evr(ref), _ref_evr(than)) < 0
    except InvalidVersion:
        return False


# -- deb source packages and upstream ecosystems -----------------------------------------

def _match_ranges(package: Package, inventory: Inventory, index: AdvisoryIndex,
                  wanted: set[str] | None, warnings: list[str]) -> list[Finding]:
    if package.type == "deb":
        ecosystem = "deb"
        version = package.source_version or package.version
    else:
        ecosystem = _UPSTREAM[package.type]
        version = package.version
    hits: dict[str, tuple[Advisory, list[str | None]]] = {}
    undecided: dict[str, tuple[Advisory, str]] = {}
    for candidate in index.candidates(package, inventory.distro):
        advisory, affected = candidate.advisory, candidate.affected
        if affected is None or not _type_ok(advisory, wanted):
            continue
        if advisory.format == "rubysec" and not affected.unaffected:
            # rubysec names what is *not* affected; with neither patched nor unaffected
            # versions every version is (bundler-audit's ``vulnerable?``), and none fixes it.
            verdict = Verdict(True)
        else:
            verdict = evaluate(ecosystem, version, affected)
        if verdict.affected:
            hits.setdefault(advisory.id, (advisory, []))[1].append(verdict.fixed)
        elif verdict.affected is None:
            undecided.setdefault(advisory.id, (advisory, verdict.reason or "undecidable"))
    for advisory_id, (_, reason) in undecided.items():
        if advisory_id not in hits:
            what = f"{package.name} {version}"
            if package.type == "deb" and (package.source or package.name) != package.name:
                what = f"{package.name} (source {package.source} {version})"
            warnings.append(f"{package.type} {what}: {advisory_id}: cannot decide whether "
                            f"it applies: {reason}; not reported as a finding")
    return [Finding(advisory=advisory, package=package,
                    fixed_version=_lowest(ecosystem, fixes))
            for advisory, fixes in hits.values()]


def _lowest(ecosystem: str, fixes: list[str | None]) -> str | None:
    """The lowest of the fixed versions several matching entries gave (an expression list
    that is not a version sorts last)."""
    versions = [f for f in fixes if f]
    if not versions:
        return None

    def cmp(a: str, b: str) -> int:
        try:
            return compare(ecosystem, a, b)
        except InvalidVersion:
            return (" || " in a) - (" || " in b)

    return min(versions, key=functools.cmp_to_key(cmp))
