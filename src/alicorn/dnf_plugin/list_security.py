"""``dnf list-security``: the installed RPMs that a security advisory updates.

The command runs inside the system's dnf (4.x), under the system Python: it imports only the
standard library, dnf, hawkey, rpm and ``alicorn``.  Its answer agrees with dnf's own
``dnf updateinfo list --security`` (and ``list cves``), because it applies dnf's rule:

    an installed package (the latest of each name.arch) is listed against an advisory package
    of the same name and the *same* arch whose EVR is newer (libdnf's Query::getAdvisoryPkgs,
    comparison ``hawkey.GT``), for security advisories that apply (an advisory that names
    modules applies only when one of them is enabled).

Where the advisories come from:

* the enabled repositories' updateinfo, read by dnf itself (``hawkey`` advisory API);
* every ``--feed PATH`` and the configuration's ``feed =`` paths, always: feed files in any
  format Alicorn reads (updateinfo.xml plain or compressed, OSV, OVAL, rubysec), directories
  of them, RPM repository directories;
* the advisory store that ``alicorn advisories import`` fills (under ``$ALICORN_HOME``, else
  the configuration's ``home =``) when no repository is enabled: a disconnected host, a
  container with no repo files, ``--disablerepo='*'``, an ``--installroot`` without repos.

Feed and store advisories are matched by Alicorn's matcher (the one ``alicorn scan`` uses),
whose rpm rule is dnf's; the tests hold both to ``dnf updateinfo``'s answer on the same data.

Filters are dnf's: ``--advisory``/SPEC (globs of advisory ids or package names), ``--cve``,
``--bz``, ``--sec-severity`` (dnf's own options, repeatable); an advisory is listed when it
matches any of them (dnf's rule: filters are a union, as in ``dnf updateinfo list --cve X --bz
Y``).  ``--modules`` adds the podman images and containers (Alicorn's among them) that need
updates, matched against the store and the feeds, every package type; ``-v`` shows the
affected packages inside each.

Exit status follows dnf, not ``alicorn scan``: 0 whether or not updates are listed (as
``dnf updateinfo``), 1 for an error (no advisory source at all, an unreadable feed, an empty rpm
database unless ``--modules`` is given).  Scripts that want "1 when findings exist" use
``alicorn scan``.  ``--modules`` leaves out the images an update of an Alicorn module left
behind (:func:`without_replaced_images`).
"""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import json
import logging
import os
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dnf
import dnf.cli
import dnf.exceptions
import dnf.plugin
import hawkey
import rpm

if TYPE_CHECKING:
    from alicorn.advisories.model import Advisory, Reference
    from alicorn.inventory.targets import ModuleRef

# dnf imports this module on every run, whatever the command: it imports only what defining
# the command needs, and the rest of Alicorn when list-security runs.
logger = logging.getLogger("dnf.plugin")

PLUGIN_NAME = "list-security"
SEVERITIES = ("Critical", "Important", "Moderate", "Low")
UNKNOWN_LABEL = "Unknown/Sec."

# Where RPM distributions keep the rpm database inside a root: Fedora 36+ and EL 9, then the
# older place.  Debian's rpm looks in ~/.rpmdb, which inside an installroot holds nothing.
ROOT_DBPATHS = ("/usr/lib/sysimage/rpm", "/var/lib/rpm")
_RPMDB_FILES = ("rpmdb.sqlite", "Packages", "Packages.db")


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstalledRpm:
    """An installed package as the rpm database (dnf's system repo) lists it."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str

    @property
    def evr(self) -> str:
        """``[E:]V-R`` as dnf prints it: the epoch only when it is not 0."""
        vr = f"{self.version}-{self.release}"
        return f"{self.epoch}:{vr}" if self.epoch else vr

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"


@dataclass(frozen=True)
class Hit:
    """One security advisory's package that updates one installed package."""

    advisory: str
    severity: str | None
    name: str            # the package name (SPEC globs match it, as in dnf)
    update: str          # NEVRA of the advisory's package (what dnf would install); "" if none
    installed: str       # NEVRA of the installed package it updates
    cves: tuple[str, ...]
    bugzilla: tuple[str, ...]
    url: str | None
    updated: float | None = None   # seconds since the epoch; orders the listing as dnf does
    # For packages inside modules (any type): the package's type, version and the fix.
    package_type: str = "rpm"
    version: str | None = None
    fixed_version: str | None = None

    @property
    def label(self) -> str:
        """dnf's column: ``Important/Sec.``; ``Unknown/Sec.`` without a known severity."""
        return f"{self.severity}/Sec." if self.severity in SEVERITIES else UNKNOWN_LABEL

    def as_json(self) -> dict[str, Any]:
        return {"advisory": self.advisory, "type": "security", "severity": self.severity,
                "package": self.installed, "update": self.update or None,
                "cves": list(self.cves), "bugzilla": list(self.bugzilla), "url": self.url}


@dataclass(frozen=True)
class Filters:
    """dnf's advisory filters; an advisory passes when there are none or it matches one."""

    specs: tuple[str, ...] = ()      # globs of advisory ids or package names
    cves: tuple[str, ...] = ()
    bugzilla: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.specs or self.cves or self.bugzilla or self.severities)

    def accepts(self, hit: Hit) -> bool:
        if self.empty:
            return True
        if any(fnmatch.fnmatchcase(hit.advisory, p) or fnmatch.fnmatchcase(hit.name, p)
               for p in self.specs):
            return True
        if hit.severity is not None and hit.severity in self.severities:
            return True
        # CVE ids are compared without regard to case (dnf compares exactly; feeds and people
        # write them in capitals, so only a lower-case query differs, and finds more here).
        wanted = {c.upper() for c in self.cves}
        if any(c.upper() in wanted for c in hit.cves):
            return True
        return any(b in self.bugzilla for b in hit.bugzilla)


# -- matching a feed (mode 2: no repositories) ----------------------------------------------------


def _norm_severity(severity: str | None) -> str | None:
    if severity is None or not severity.strip() or severity.strip().lower() == "none":
        return None
    return severity.strip()


def notice_url(references: Iterable[tuple[str, str | None]]) -> str | None:
    """The update notice: the first reference that is not a CVE or a bug (Bodhi's ``self``,
    a vendor's erratum) with an address, else the first address of any reference.

    ``references`` are ``(kind, href)`` with kind ``cve``, ``bugzilla`` or anything else.  hawkey
    reports Bodhi's ``self`` as an unknown kind, so "not a CVE or a bug" is the rule that both
    dnf's data and a feed file answer the same way.
    """
    refs = list(references)
    for kind, href in refs:
        if kind not in ("cve", "bugzilla") and href:
            return href
    return next((href for _, href in refs if href), None)


def _feed_refs(references: Sequence[Reference]) -> tuple[tuple[str, ...], tuple[str, ...],
                                                          str | None]:
    cves = tuple(dict.fromkeys(r.id for r in references if r.type == "cve" and r.id))
    bugs = tuple(dict.fromkeys(r.id for r in references if r.type == "bugzilla" and r.id))
    url = notice_url((r.type if r.type in ("cve", "bugzilla") else "other", r.href)
                     for r in references)
    return cves, bugs, url


def _stamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def feed_hits(installed: Iterable[InstalledRpm], advisories: Iterable[Advisory], *,
              enabled_modules: Collection[str] = (), target: str = "/") -> list[Hit]:
    """The security updates that ``advisories`` (read from a feed) offer for ``installed``.

    ``installed`` should be what dnf looks at: the latest installed package of each name.arch
    (and the running kernel's).  The matching is Alicorn's own (:func:`alicorn.match.matcher.
    match`, the one ``alicorn scan`` uses), whose rpm rule is libdnf's: same name, same arch,
    the advisory's EVR newer by rpm's comparison, a module collection only when one of its
    ``name:stream`` is in ``enabled_modules``.
    """
    from alicorn.inventory.model import Inventory, Package
    from alicorn.match.index import AdvisoryIndex
    from alicorn.match.matcher import match

    packages = tuple(Package(type="rpm", name=p.name, version=p.evr, arch=p.arch,
                             epoch=p.epoch, release=p.release) for p in installed)
    inventory = Inventory(target=target, kind="host" if target == "/" else "rootfs",
                          packages=packages)
    hits = []
    for finding in match(inventory, AdvisoryIndex(advisories), types={"security"},
                         enabled_modules=enabled_modules):
        adv = finding.advisory
        cves, bugs, url = _feed_refs(adv.references)
        hits.append(Hit(advisory=adv.id, severity=_norm_severity(adv.severity),
                        name=finding.package.name, update=finding.update or "",
                        installed=finding.package.nevra, cves=cves, bugzilla=bugs, url=url,
                        updated=_stamp(adv.updated)))
    return hits


def enabled_modules(installroot: Path) -> set[str]:
    """The ``name:stream`` of the modules enabled in the root, from dnf's own state files
    (``/etc/dnf/modules.d/*.module``); an unreadable file is a warning, not an error."""
    enabled: set[str] = set()
    directory = installroot / "etc" / "dnf" / "modules.d"
    if not directory.is_dir():
        return enabled
    for path in sorted(directory.glob("*.module")):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError) as e:
            logger.warning("list-security: %s: unreadable module state, ignored (%s)", path, e)
            continue
        for section in parser.sections():
            state = parser.get(section, "state", fallback="").strip().lower()
            stream = parser.get(section, "stream", fallback="").strip()
            if state in ("enabled", "1", "true") and stream:
                enabled.add(f"{parser.get(section, 'name', fallback=section).strip()}:{stream}")
    return enabled


# -- reading feeds --------------------------------------------------------------------------------


def read_feed(path: Path) -> list[Advisory]:
    """The advisories of ``path``: a feed file in any format Alicorn reads (updateinfo.xml,
    plain or compressed; OSV; OVAL; rubysec), a directory of them, or an RPM repository
    directory (``repodata/`` itself too).  Records the feed skips are logged as warnings."""
    from alicorn.advisories import feeds

    if path.name == "repodata" and (path / "repomd.xml").is_file():
        path = path.parent
    result = feeds.load(path)
    for warning in result.warnings:
        logger.warning("list-security: %s", warning)
    if not result.advisories:
        logger.warning("list-security: %s holds no advisories", path)
    return list(result.advisories)


def store_url(home: Path) -> str | None:
    """The advisory store's database URL, or None when ``home`` has no store (nothing was
    ever imported there).  ``ALICORN_DATABASE_URL`` overrides, as for every alicorn command."""
    url = os.environ.get("ALICORN_DATABASE_URL")
    if url:
        return url
    db = home / "alicorn.db"
    return f"sqlite:///{db}" if db.is_file() else None


def store_advisories(url: str, names: Iterable[str] | None = None) -> list[Advisory]:
    """The stored advisories that ship a package of one of ``names`` (all when None), by
    the store's package index."""
    from alicorn.advisories.reader import open_reader
    from alicorn.inventory.model import Package

    reader = open_reader(url)
    if names is None:
        return list(reader.all())
    return reader.for_packages(Package(type="rpm", name=n, version="") for n in set(names))


# -- output ---------------------------------------------------------------------------------------


def unique_hits(hits: Iterable[Hit]) -> list[Hit]:
    """One hit per (advisory, update, installed package), in dnf's order: by the updating
    NEVRA, then the advisory's date, then its id."""
    seen: dict[tuple[str, str, str], Hit] = {}
    for h in hits:
        seen.setdefault((h.advisory, h.update, h.installed), h)
    return sorted(seen.values(), key=lambda h: (h.update, h.updated or 0.0, h.advisory))


def list_lines(hits: Sequence[Hit]) -> list[str]:
    """``dnf updateinfo list``'s lines (ADVISORY  SEVERITY/Sec.  NEVRA), each followed by the
    update notice's address; an advisory package appears once however many packages it
    updates."""
    rows: dict[tuple[str, str], Hit] = {}
    for h in unique_hits(hits):
        rows.setdefault((h.update, h.advisory), h)
    if not rows:
        return []
    idw = max(len(h.advisory) for h in rows.values())
    tlw = max(len(h.label) for h in rows.values())
    nw = max(len(h.update) for h in rows.values())
    return [f"{h.advisory:<{idw}} {h.label:<{tlw}} {h.update:<{nw}} {h.url or ''}".rstrip()
            for h in rows.values()]


def severity_counts(hits: Iterable[Hit]) -> Counter[str | None]:
    """Advisories by severity, each advisory counted once (per severity, as dnf does)."""
    pairs = {(h.advisory, h.severity if h.severity in SEVERITIES else None) for h in hits}
    return Counter(sev for _, sev in pairs)


def summary_lines(hits: Sequence[Hit], description: str = "available") -> list[str]:
    """``dnf updateinfo summary``'s lines, for security advisories (nothing when none)."""
    counts = severity_counts(hits)
    total = len({h.advisory for h in hits})
    if not total:
        return []
    rows = [(0, "Security notice(s)", total)]
    rows += [(1, f"{sev} Security notice(s)", counts[sev]) for sev in SEVERITIES]
    rows.append((1, "Unknown Security notice(s)", counts[None]))
    width = max(len(str(n)) for _, _, n in rows if n)
    lines = [f"Updates Information Summary: {description}"]
    lines += [f"    {n:>{width + 4 * indent}} {label}" for indent, label, n in rows if n]
    return lines


def summary_json(hits: Sequence[Hit]) -> dict[str, Any]:
    counts = severity_counts(hits)
    return {"security": len({h.advisory for h in hits}),
            "by_severity": {**{s: counts[s] for s in SEVERITIES}, "Unknown": counts[None]}}


# -- modules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleReport:
    """One module (a podman image or container) and the security findings inside it."""

    label: str
    kind: str
    target: str
    digest: str | None
    packages: int
    hits: tuple[Hit, ...]
    errors: tuple[str, ...] = ()
    # Package types no advisory covered ("12 deb packages: no Debian 12 advisories
    # imported"): not checked, so the module's silence says nothing about them.
    unchecked: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """Findings by severity level, the most severe first (only levels that occur)."""
        from alicorn.report.json_ import LEVELS
        counted = Counter(h.severity or "Unknown" for h in self.hits)
        return {level: counted[level] for level in LEVELS if counted[level]}

    def _module_json(self) -> dict[str, Any]:
        return {"name": self.label, "kind": self.kind, "target": self.target,
                "digest": self.digest}

    def as_json(self) -> list[dict[str, Any]]:
        out = []
        for h in self.hits:
            entry = h.as_json()
            entry.update(package_type=h.package_type, fixed_version=h.fixed_version,
                         module=self._module_json())
            out.append(entry)
        return out

    def summary_json(self) -> dict[str, Any]:
        return {**self._module_json(), "packages": self.packages,
                "findings": len(self.hits), "by_severity": self.counts(),
                "complete": not self.errors, "errors": list(self.errors),
                "unchecked": list(self.unchecked)}


def _finding_hit(finding: Any) -> Hit:
    from alicorn.report.json_ import advisory_url, level

    adv, pkg = finding.advisory, finding.package
    found = level(adv.severity)
    name = f"{pkg.name}-{pkg.version}" + (f".{pkg.arch}" if pkg.type == "rpm" and pkg.arch
                                          else "")
    return Hit(advisory=adv.id, severity=None if found == "Unknown" else found, name=pkg.name,
               update=finding.update or "", installed=name, cves=adv.cves,
               bugzilla=adv.bugzilla_ids, url=advisory_url(adv),
               updated=_stamp(adv.updated), package_type=pkg.type, version=pkg.version,
               fixed_version=finding.fixed_version)


def module_reports(inventories: Iterable[Any], advisories: Iterable[Advisory],
                   filters: Filters = Filters()) -> list[ModuleReport]:
    """The security findings in each module's inventory (every package type), matched as
    ``alicorn scan`` matches them, kept when ``filters`` accept them."""
    from alicorn.match.index import AdvisoryIndex
    from alicorn.match.matcher import scan

    index = AdvisoryIndex(advisories)
    reports = []
    for inventory in inventories:
        result = scan(inventory, index, types={"security"})
        hits = tuple(h for h in map(_finding_hit, result.findings) if filters.accepts(h))
        reports.append(ModuleReport(label=inventory.name or inventory.target,
                                    kind=inventory.kind, target=inventory.target,
                                    digest=inventory.digest,
                                    packages=len(inventory.packages), hits=hits,
                                    errors=tuple(inventory.errors),
                                    unchecked=tuple(f"{u.packages} {u.type} package(s): "
                                                    f"{u.reason}" for u in result.unchecked)))
    return reports


def without_replaced_images(refs: Sequence[ModuleRef]) -> list[ModuleRef]:
    """``refs`` without the images an update of an Alicorn module left behind: images no
    container uses, of a repository whose image a deployed module's container (its
    ``org.alicorn.module`` label) runs.  They run nowhere (the module moved on; they are kept
    at most for a rollback), so they are not something the host needs to update."""
    from alicorn.chain.sigstore import split_reference

    def _repository(reference: str) -> str:
        return split_reference(reference)[0]

    used = {r.image_id for r in refs if r.kind == "podman-container"}
    names = {r.id: r.names for r in refs if r.kind == "podman-image"}
    deployed: set[str] = set()
    for r in refs:
        if r.kind == "podman-container" and r.deployed_by_alicorn:
            deployed |= {_repository(n) for n in (*names.get(r.image_id, ()),
                                                  *([r.image] if r.image else []))}
    return [r for r in refs if not (r.kind == "podman-image" and r.id not in used
                                    and any(_repository(n) in deployed for n in r.names))]


def module_lines(reports: Sequence[ModuleReport], *, verbose: bool = False) -> list[str]:
    """One line per module that needs updates or could not be read; with ``verbose``, each
    affected package inside it and its advisories, CVEs and fixed versions."""
    if not reports:
        return ["Modules: none on this host (podman lists no images or containers)"]
    shown = [r for r in reports if r.hits or r.errors or r.unchecked]
    lines = [f"Modules needing security updates: {sum(1 for r in shown if r.hits)} of "
             f"{len(reports)}"]
    for r in shown:
        digest = r.digest[:19] if r.digest else "-"
        head = f"  {r.label} ({r.kind}) {digest}"
        if r.hits:
            counts = ", ".join(f"{n} {level}" for level, n in r.counts().items())
            findings = "finding" if len(r.hits) == 1 else "findings"
            lines.append(f"{head}: {len(r.hits)} {findings}: {counts}")
        for error in r.errors:
            lines.append(f"{head}: INCOMPLETE, could not read {error}")
        for what in r.unchecked:
            lines.append(f"{head}: NOT CHECKED: {what}")
        if not verbose:
            continue
        by_package: dict[tuple[str, str, str], list[Hit]] = {}
        for h in r.hits:
            by_package.setdefault((h.package_type, h.name, h.version or ""), []).append(h)
        for (kind, name, version), package_hits in sorted(by_package.items()):
            lines.append(f"      {kind} {name} {version}")
            for h in sorted(package_hits, key=lambda h: h.advisory):
                fixed = f"fixed in {h.fixed_version}" if h.fixed_version else "no fix yet"
                cves = ", ".join(h.cves) or "no CVE"
                lines.append(f"          {h.advisory} {h.label} {cves}; {fixed}"
                             + (f" {h.url}" if h.url else ""))
    return lines


# -- the dnf side ---------------------------------------------------------------------------------


def _installed(pkg: Any) -> InstalledRpm:
    return InstalledRpm(name=pkg.name, epoch=int(pkg.epoch or 0), version=pkg.version,
                        release=pkg.release, arch=pkg.arch)


def _has_rpmdb(directory: Path) -> bool:
    return any((directory / f).is_file() for f in _RPMDB_FILES)


def no_packages_message(installroot: str, dbpath: str) -> str:
    """Why dnf found no installed package in ``installroot``, and what to do: the root does
    not exist, its database could not be read (rpm printed why), or there is none where
    ``dbpath`` points."""
    root = Path(installroot or "/")
    database = root / dbpath.lstrip("/")
    if not root.is_dir():
        return (f"the installroot {installroot} does not exist (or is not a directory): there "
                "is nothing to check")
    if _has_rpmdb(database):
        return (f"the rpm database {database} lists no installed packages: it is empty, or "
                "damaged (rpm's errors above say which); reporting 'no updates' would be wrong. "
                f"Check it with: rpm --root {root} --dbpath {dbpath} -qa")
    return (f"the rpm database of {installroot} lists no installed packages (rpm's %_dbpath "
            f"is {dbpath}): there is nothing to check, and reporting 'no updates' would be "
            "wrong. If the root keeps its database elsewhere, set %_dbpath (for example in "
            "~/.rpmmacros)")


def point_rpm_at_root_database(installroot: str) -> str | None:
    """Make rpm read the root's own database when its ``%_dbpath`` finds none there.

    Debian's rpm sets ``%_dbpath`` to ``~/.rpmdb``: with ``--installroot`` dnf would read an
    empty database and report that nothing needs an update.  When the configured path holds
    no database inside the root and Fedora's (or the older) place does, the macro is pointed
    there for this process.  Returns the path chosen, or None when nothing was changed.
    """
    if not installroot or os.path.realpath(installroot) == "/":
        return None
    root = Path(installroot)
    current = rpm.expandMacro("%{_dbpath}")
    if _has_rpmdb(root / current.lstrip("/")):
        return None
    for candidate in ROOT_DBPATHS:
        if _has_rpmdb(root / candidate.lstrip("/")):
            rpm.addMacro("_dbpath", candidate)
            logger.debug("list-security: rpm's %%_dbpath %s holds no database in %s; "
                         "reading %s instead", current, installroot, candidate)
            return candidate
    return None


class ListSecurityCommand(dnf.cli.Command):  # type: ignore[misc]
    """``dnf list-security``."""

    aliases = ("list-security",)
    summary = "list installed packages with an available security update (Alicorn)"

    @staticmethod
    def set_argparser(parser: argparse.ArgumentParser) -> None:
        # --advisory, --cve, --bz, --sec-severity and -v/--verbose are dnf's own options: they
        # are parsed before the command's and must not be added again.
        parser.add_argument("--summary", action="store_true",
                            help="counts of advisories by severity (like dnf updateinfo "
                                 "summary)")
        parser.add_argument("--json", action="store_true",
                            help="print a JSON list of {advisory, severity, package, cves, "
                                 "bugzilla, url}")
        parser.add_argument("--modules", action="store_true",
                            help="also list the modules on this host (podman containers and "
                                 "images, Alicorn's) that need updates; with -v, the "
                                 "affected packages inside each")
        parser.add_argument("--feed", action="append", default=[], metavar="PATH",
                            help="also read advisories from this feed (updateinfo.xml, OSV, "
                                 "OVAL, rubysec) or repository directory (repeatable)")
        parser.add_argument("spec", nargs="*", metavar="SPEC",
                            help="advisory ids or package names (globs)")

    def pre_configure(self) -> None:
        # As dnf's repoquery: dnf's messages ("Added repo", "Last metadata expiration check")
        # go to stderr, so that stdout holds only the listing (or the JSON).
        if not self.opts.quiet:
            self.cli.redirect_logger(stdout=logging.WARNING, stderr=logging.INFO)

    def configure(self) -> None:
        if not self.opts.quiet:
            self.cli.redirect_repo_progress()
        demands = self.cli.demands
        demands.sack_activation = True
        # dnf's data when there are repositories; without any, dnf must not insist on them:
        # the advisories then come from the store or the --feed files.
        demands.available_repos = any(True for _ in self.base.repos.iter_enabled())
        point_rpm_at_root_database(self.base.conf.installroot)

    def run(self) -> None:
        from alicorn.errors import Error

        try:
            self._run()
        except Error as e:
            raise dnf.exceptions.Error(e.diagnostics()) from e

    # -- gathering ----------------------------------------------------------------------------

    def _filters(self) -> Filters:
        o = self.opts
        return Filters(specs=tuple(o.spec or ()) + tuple(o.advisory or ()),
                       cves=tuple(o.cves or ()), bugzilla=tuple(o.bugzilla or ()),
                       severities=tuple(o.severity or ()))

    def _installed_query(self) -> Any:
        sack = self.base.sack
        query = sack.query().installed().latest(1)
        kernel = sack.get_running_kernel()
        if kernel is not None:
            query = query.union(sack.query().installed().filterm(sourcerpm=kernel.sourcerpm))
        return query

    def _run(self) -> None:
        query = self._installed_query()
        installed = [_installed(p) for p in query]
        if not installed:
            if not self.opts.modules:
                raise dnf.exceptions.Error(no_packages_message(self.base.conf.installroot,
                                                               rpm.expandMacro("%{_dbpath}")))
            # A host that runs modules need not be an RPM host (Debian's rpm database is
            # empty): its modules are still checked, and said to be all that was.
            logger.info("list-security: the rpm database lists no installed packages; only "
                        "the modules are checked")
        hits: list[Hit] = []
        sources: list[str] = []
        repos = [r.id for r in self.base.repos.iter_enabled()]
        if repos:
            hits += self._repo_hits(query)
            sources.append("repositories " + ", ".join(sorted(repos)))
        feed, feed_paths = self._feeds()
        sources += [f"feed {p}" for p in feed_paths]
        host_advisories = list(feed)
        url = store_url(self._home())
        if not repos and url is not None:
            host_advisories += store_advisories(url, {p.name for p in installed})
            sources.append(f"the advisory store ({url})")
        if not sources:
            raise dnf.exceptions.Error(
                "no advisories to check against: no repository is enabled and no advisory "
                f"store exists at {self._home()}. Import a feed (alicorn advisories import "
                "PATH), give --feed PATH, or enable a repository that has updateinfo")
        if host_advisories:
            root = self.base.conf.installroot or "/"
            hits += feed_hits(installed, host_advisories, target=root,
                              enabled_modules=enabled_modules(Path(root)))
        logger.debug("list-security: advisories from %s", "; ".join(sources))
        filters = self._filters()
        hits = [h for h in unique_hits(hits) if filters.accepts(h)]
        modules = self._module_reports(feed, url, filters) if self.opts.modules else None
        self._print(hits, modules, installed_count=len(installed), sources=sources,
                    filtered=not filters.empty)

    def _feeds(self) -> tuple[list[Advisory], list[Path]]:
        """The advisories of every ``--feed`` and of the configuration's ``feed =``."""
        paths = [Path(p).expanduser() for p in self.opts.feed]
        configured = self._config().get("main", "feed", fallback="")
        paths += [Path(p).expanduser() for p in configured.replace(",", " ").split()]
        advisories: list[Advisory] = []
        for path in paths:
            advisories += read_feed(path)
        return advisories, paths

    def _module_reports(self, feed: list[Advisory], url: str | None,
                        filters: Filters) -> list[ModuleReport]:
        advisories = list(feed)
        if url is not None:
            advisories += store_advisories(url)
        if not advisories:
            raise dnf.exceptions.Error(
                "--modules needs advisories for the packages inside the modules (RPMs, debs, "
                "Python, Ruby, Java and npm packages), and there are none: import feeds "
                f"(alicorn advisories import PATH) into the store at {self._home()}, or give "
                "--feed PATH")
        from alicorn.inventory.targets import inventory_of_modules, podman_modules
        return module_reports(inventory_of_modules(without_replaced_images(podman_modules())),
                              advisories, filters)

    def _repo_hits(self, query: Any) -> list[Hit]:
        """dnf's own answer: the advisory packages newer than the installed ones."""
        sack = self.base.sack
        by_key: dict[tuple[str, str], list[Any]] = {}
        for pkg in query:
            by_key.setdefault((pkg.name, pkg.arch), []).append(pkg)
        hits = []
        for apkg in query.get_advisory_pkgs(hawkey.GT):
            advisory = apkg.get_advisory(sack)
            if advisory.type != hawkey.ADVISORY_SECURITY:
                continue
            refs = list(advisory.references)
            cves = tuple(dict.fromkeys(r.id for r in refs
                                       if r.type == hawkey.REFERENCE_CVE and r.id))
            bugs = tuple(dict.fromkeys(r.id for r in refs
                                       if r.type == hawkey.REFERENCE_BUGZILLA and r.id))
            url = notice_url(("cve" if r.type == hawkey.REFERENCE_CVE else
                              "bugzilla" if r.type == hawkey.REFERENCE_BUGZILLA else "other",
                              r.url) for r in refs)
            update = f"{apkg.name}-{apkg.evr}.{apkg.arch}"
            for pkg in by_key.get((apkg.name, apkg.arch), ()):
                if sack.evr_cmp(apkg.evr, pkg.evr) <= 0:
                    continue
                hits.append(Hit(advisory=advisory.id, severity=_norm_severity(advisory.severity),
                                name=apkg.name, update=update, installed=_installed(pkg).nevra,
                                cves=cves, bugzilla=bugs, url=url,
                                updated=_stamp(advisory.updated)))
        return hits

    def _config(self) -> configparser.ConfigParser:
        """The plugin's [main] section from ``<pluginconfpath>/list-security.conf``."""
        parser = configparser.ConfigParser(interpolation=None)
        for directory in self.base.conf.pluginconfpath:
            path = Path(directory) / f"{PLUGIN_NAME}.conf"
            try:
                parser.read(path, encoding="utf-8")
            except (configparser.Error, UnicodeDecodeError) as e:
                raise dnf.exceptions.Error(f"{path}: unreadable configuration: {e}") from e
        return parser

    def _home(self) -> Path:
        env = os.environ.get("ALICORN_HOME")
        if env:
            return Path(env).expanduser()
        home = self._config().get("main", "home", fallback="").strip()
        if home:
            return Path(home).expanduser()
        from alicorn.config import default_home
        return default_home()

    # -- printing -----------------------------------------------------------------------------

    def _print(self, hits: list[Hit], modules: list[ModuleReport] | None, *,
               installed_count: int, sources: list[str], filtered: bool) -> None:
        verbose = bool(self.opts.verbose or self.base.conf.verbose)
        if self.opts.json:
            if self.opts.summary:
                data: Any = summary_json(hits)
                if modules is not None:
                    data["modules"] = [m.summary_json() for m in modules]
            else:
                data = [h.as_json() for h in hits]
                for m in modules or ():
                    data += m.as_json()
            print(json.dumps(data, indent=2))
            return
        lines = summary_lines(hits) if self.opts.summary else list_lines(hits)
        for line in lines:
            print(line)
        if not hits and installed_count:
            logger.info("%s: %d installed packages checked against the advisories of %s.",
                        "No security update matches the filters given" if filtered else
                        "No security updates needed", installed_count, "; ".join(sources))
        if modules is not None:
            for line in module_lines(modules, verbose=verbose and not self.opts.summary):
                print(line)


class ListSecurityPlugin(dnf.Plugin):  # type: ignore[misc]
    """Registers ``list-security`` in place of dnf's yum-compatible alias.

    dnf 4 ships ``list-security`` as an alias of ``updateinfo list`` (all advisory types), so
    ``@dnf.plugin.register_command`` would fail with "Command already defined" and take every
    dnf command down with it.  The alias is taken over only from dnf's own updateinfo command.
    """

    name = PLUGIN_NAME

    def __init__(self, base: Any, cli: Any) -> None:
        super().__init__(base, cli)
        if cli is None:
            return
        from dnf.cli.commands.updateinfo import UpdateInfoCommand
        for alias in ListSecurityCommand.aliases:
            holder = cli.cli_commands.get(alias)
            if holder is ListSecurityCommand:
                return
            if holder is UpdateInfoCommand:
                del cli.cli_commands[alias]
            elif holder is not None:
                logger.warning("list-security: the command %r belongs to %s; Alicorn's is "
                               "not registered", alias, holder.__name__)
                return
        cli.register_command(ListSecurityCommand)


ListSecurityCommand._plugin = ListSecurityPlugin
