"""``alicorn scan``: what in a target needs a security update.

The pipeline reads as the package does: inventory (alicorn.inventory.targets) -> advisories
(the store, plus any ``--feed``) -> index and match (alicorn.match) -> report
(alicorn.report.formats).  Exit codes: 0 clean, 1 findings, 2 bad input or a scan that could
not give an answer (an incomplete inventory without findings, no advisories at all).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from alicorn.advisories.model import Advisory
from alicorn.config import Settings, load_settings
from alicorn.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    BadInput,
    Error,
    StoreError,
    Unavailable,
)
from alicorn.fs import replace_file
from alicorn.inventory.model import Package
from alicorn.match.index import EcosystemCoverage
from alicorn.match.model import Scan

_err = Console(stderr=True, soft_wrap=True, highlight=False)

_SEVERITIES = ("critical", "important", "high", "moderate", "medium", "low", "unknown")


def _matches(advisory: Advisory, *, cves: set[str], ids: set[str],
             levels: set[str]) -> bool:
    """``--cve``/``--advisory``/``--severity``: any value of one option, all options given."""
    from alicorn.report.json_ import level

    if cves and not cves & {c.upper() for c in (*advisory.cves, *advisory.aliases)}:
        return False
    if ids and not ids & {i.upper() for i in (advisory.id, *advisory.aliases)}:
        return False
    return not (levels and level(advisory.severity) not in levels)


def _advisories(settings: Settings, feeds: Sequence[str], packages: Iterable[Package]
                ) -> tuple[list[Advisory], EcosystemCoverage, list[str]]:
    """The stored advisories that name any of ``packages`` (the store's package index: a scan
    never reads the rest), those of every ``--feed`` (a feed's version of an advisory wins
    over the stored one: the person named it), what the store and feeds cover as a whole,
    and the feeds' warnings."""
    from alicorn.advisories.reader import open_reader

    store = open_reader(settings.database_url)
    stored = store.count()
    chosen: dict[tuple[str, str], Advisory] = {}
    coverage = EcosystemCoverage(rpm=False, ecosystems=frozenset())
    if stored:
        for a in store.for_packages(packages):
            chosen[(a.id, a.format)] = a
        coverage = store.coverage()
    warnings: list[str] = []
    fed = 0
    if feeds:
        from alicorn.advisories import feeds as feed_registry

        for path in feeds:
            result = feed_registry.load(path)
            warnings += result.warnings
            fed += len(result.advisories)
            coverage = coverage | EcosystemCoverage.of(result.advisories)
            for a in result.advisories:
                chosen[(a.id, a.format)] = a
    if not stored and not fed:
        if feeds:
            raise BadInput(f"the feeds given ({', '.join(feeds)}) hold no advisories",
                           hint="a scan against no advisories would look clean; check the "
                                "--feed files")
        raise BadInput("no advisories imported; run alicorn advisories import",
                       where=str(settings.home),
                       hint="alicorn advisories import PATH... (updateinfo.xml, a repo, OSV, "
                            "OVAL), or give --feed PATH")
    return list(chosen.values()), coverage, warnings


def _write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once: a reader never sees half a report."""
    path = path.absolute()
    try:
        # A report gets the mode a new file would get (or keeps the mode of the one it
        # replaces), not the 0600 of a temporary file.
        umask = os.umask(0)
        os.umask(umask)
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~umask
        replace_file(path, text if text.endswith("\n") else text + "\n", mode=mode)
    except OSError as e:
        raise BadInput(f"cannot write the report: {e.strerror or e}", where=str(path)) from e


def _unique(targets: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(targets))


class ScanFailed(BadInput):
    """A scan that could not give an answer for a reason not the person's input (a damaged
    advisory store, podman failing).  Exit 2, not 1: 1 means "findings exist", and a script
    must not take a broken database for vulnerable packages."""


def _no_answer(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except (BadInput, Unavailable):
            # Unavailable: the broker or no worker (exit 69: try again), not a broken scan.
            raise
        except StoreError as e:
            raise ScanFailed(e.message, where=e.where, hint=e.hint or (
                "the advisory store under ALICORN_HOME is damaged or not Alicorn's: move "
                "alicorn.db away and import the feeds again, or give --feed PATH")) from e
        except Error as e:
            raise ScanFailed(e.message, where=e.where, hint=e.hint) from e
    return wrapper


@click.command("scan", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("targets", metavar="[TARGET]...", nargs=-1)
@click.option("--modules", is_flag=True,
              help="Also scan every module on this host: podman images and containers.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif", "vex"]),
              help="Report format (default text).  vex is CycloneDX 1.6 VEX.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the report to FILE instead of standard output.")
@click.option("--type", "kind", type=click.Choice(["security", "all"]), default="security",
              show_default=True, help="Security advisories only, or every type (bugfix, ...).")
@click.option("--cve", "cves", multiple=True, metavar="CVE",
              help="Only advisories naming this CVE (repeatable).")
@click.option("--advisory", "advisory_ids", multiple=True, metavar="ID",
              help="Only this advisory (id or alias; repeatable).")
@click.option("--severity", "severities", multiple=True,
              type=click.Choice(_SEVERITIES, case_sensitive=False),
              help="Only advisories of this severity (repeatable; high = important, "
                   "medium = moderate).")
@click.option("--summary", is_flag=True, help="Text: counts of notices by severity.")
@click.option("--verbose", "-v", is_flag=True,
              help="Text: each target with its affected packages, CVEs and links.")
@click.option("--feed", "feeds", multiple=True, metavar="PATH",
              help="Also match the advisories of this feed (a file, a directory, a repo or a "
                   "URL; repeatable; not stored).")
@_no_answer
def scan(targets: tuple[str, ...], modules: bool, as_json: bool, fmt: str | None,
         output: Path | None, kind: str, cves: tuple[str, ...], advisory_ids: tuple[str, ...],
         severities: tuple[str, ...], summary: bool, verbose: bool,
         feeds: tuple[str, ...]) -> None:
    """List the installed packages of each TARGET that advisories apply to.

    TARGET is `host`, a directory (a root filesystem or an OCI layout), an OCI or docker
    archive, a podman image or container name, or the digest of an image Alicorn built.
    Advisories are those imported with `alicorn advisories import`, plus any --feed.

    Filters: values of one option are alternatives; different options must all hold.
    Several targets (or --modules) give one report of all; --json then prints
    {"scans": [one object per target]}.

    \b
    Exit status:
      0  no findings, and every target was read completely
      1  findings exist (also when some target was read incompletely)
      2  bad input: an unknown target, an unreadable feed, no advisories at all, a
         damaged advisory store or a failing podman (no answer is no finding);
         also an INCOMPLETE scan without findings (a package database could not be
         read, or no package was found), and a scan in which no advisory covered
         any package (a Debian root, no Debian advisories): neither is a clean one
    """
    if not targets and not modules:
        raise BadInput("no target given", hint="alicorn scan host | DIR | ARCHIVE | IMAGE | "
                       "CONTAINER | sha256:DIGEST ..., or alicorn scan --modules")
    if as_json and fmt not in (None, "json"):
        raise BadInput(f"--json and --format {fmt} contradict each other")
    name = "json" if as_json else (fmt or "text")
    if name != "text" and (summary or verbose):
        raise BadInput(f"--summary and --verbose are views of the text report, not of "
                       f"--format {name}", hint=f"drop them, or drop --format {name}")
    if summary and verbose:
        raise BadInput("--summary and --verbose are two different views; give one")
    request = ScanRequest(targets=_unique(targets), modules=modules, format=name,
                          summary=summary, verbose=verbose, kind=kind, cves=list(cves),
                          advisories=list(advisory_ids), severities=list(severities),
                          feeds=list(feeds))
    result = _run(load_settings(), request)

    for line in result.warnings:
        _err.print(line, markup=False)
    if output is not None:
        _write(output, result.text)
    else:
        sys.stdout.write(result.text)
        sys.stdout.flush()
    # The text report already says it; any other report (or a file) also needs a person to
    # see that an inventory was incomplete.
    if name != "text" or output is not None:
        for line in result.notices:
            _err.print(line, markup=False)
    if output is not None:
        _err.print(f"wrote the {name} report to {output}: {result.findings} finding(s) in "
                   f"{result.targets} target(s)", markup=False)
    if result.exit_code:
        sys.exit(result.exit_code)


# -- the scan itself: here, or in a worker as the Celery task alicorn.scan -----------------------


@dataclass(frozen=True)
class ScanRequest:
    """What ``alicorn scan`` was asked (JSON-able: the Celery task's argument)."""

    targets: list[str]
    modules: bool = False
    format: str = "text"
    summary: bool = False
    verbose: bool = False
    kind: str = "security"
    cves: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    severities: list[str] = field(default_factory=list)
    feeds: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScanRequest:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class ScanResult:
    """What a scan prints and how it ends (JSON-able: the Celery task's result).
    ``warnings`` go to stderr before the report; ``notices`` (incomplete inventories) after
    it, when the report is not text or goes to a file."""

    text: str
    findings: int
    targets: int
    exit_code: int
    warnings: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScanResult:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def run_scan(settings: Settings, request: ScanRequest) -> ScanResult:
    """The scan ``request`` asks for, over the database of ``settings``: THE code path of
    ``alicorn scan``, whether it runs in the command or in a worker (the Celery task
    ``alicorn.scan``)."""
    from alicorn.inventory.targets import inventory_of, inventory_of_modules
    from alicorn.match.index import AdvisoryIndex
    from alicorn.match.matcher import scan as match
    from alicorn.report.formats import reporter
    from alicorn.report.json_ import level
    from alicorn.report.text import incomplete_notices, printable

    report = reporter(request.format, summary=request.summary, verbose=request.verbose)
    # Every target is resolved before anything is printed: an unknown one is bad input, not
    # half a report.  Inventories first, so that only the advisories naming their packages
    # are read from the store.
    inventories = [inventory_of(t, settings=settings) for t in _unique(request.targets)]
    if request.modules:
        found = inventory_of_modules()
        if not found and not inventories:
            raise BadInput("--modules: this host has no podman images or containers",
                           hint="give a TARGET, or check `podman images` and `podman ps -a`")
        inventories += found
    advisories, coverage, feed_warnings = _advisories(
        settings, request.feeds, (p for inv in inventories for p in inv.packages))
    warnings = [printable(f"warning: {w}") for w in feed_warnings]
    wanted_cves = {c.strip().upper() for c in request.cves}
    wanted_ids = {i.strip().upper() for i in request.advisories}
    wanted_levels = {level(s) for s in request.severities}
    if wanted_cves or wanted_ids or wanted_levels:
        # What the feeds cover is judged before the filters: --cve is no missing feed.
        advisories = [a for a in advisories if _matches(a, cves=wanted_cves, ids=wanted_ids,
                                                         levels=wanted_levels)]
        if not advisories:
            # Not an error (nothing named applies), but say why the report will be empty.
            warnings.append("warning: no advisory matches the --cve/--advisory/--severity "
                            "filters")
    index = AdvisoryIndex(advisories)
    types = {"security"} if request.kind == "security" else None
    scans: list[Scan] = [match(inv, index, types=types, coverage=coverage)
                        for inv in inventories]

    text = report.render(scans)
    notices = [printable(f"{s.inventory.target}: {line}")
               for s in scans for line in incomplete_notices(s)]
    findings = sum(len(s.findings) for s in scans)
    code = 0
    if findings:
        code = EXIT_FAILED
    elif any(not s.complete for s in scans):
        code = EXIT_BAD_INPUT
    elif any(s.unchecked and not s.checked for s in scans):
        # No advisory covered any package (a Debian root and only PyPI advisories): as with
        # no advisories at all, an empty report is no answer.
        code = EXIT_BAD_INPUT
    return ScanResult(text=text if text.endswith("\n") else text + "\n", findings=findings,
                      targets=len(scans), exit_code=code, warnings=warnings, notices=notices)


_BUILT_IMAGE = re.compile(r"(sha256:)?[0-9a-fA-F]{6,64}")


def runs_remotely(request: ScanRequest) -> bool:
    """Whether a worker reads ``request``'s targets as this host would: every target names
    an image Alicorn built (``sha256:...`` or a hex prefix, and no path here) and nothing
    else is read from this host (no ``--modules``, every ``--feed`` a URL).  ``host``, a
    directory, an archive or a podman name is this host's, so that scan runs here."""
    if request.modules or not request.targets:
        return False
    if any(not f.startswith(("http://", "https://")) for f in request.feeds):
        return False
    return all(_BUILT_IMAGE.fullmatch(t.strip()) and not os.path.lexists(t.strip())
               for t in request.targets)


def _run(settings: Settings, request: ScanRequest) -> ScanResult:
    """The scan here; with the Celery backend and targets a worker can read
    (:func:`runs_remotely`), the task ``alicorn.scan`` on the service queue, waited for."""
    from alicorn.cluster.config import load_queue_config

    config = load_queue_config(settings)
    if not config.celery or not runs_remotely(request):
        return run_scan(settings, request)
    from alicorn.cluster.tasks import SCAN_TASK, call, celery_app

    answer = call(celery_app(settings, config), SCAN_TASK, [request.to_json()],
                  what="the scan", timeout=SCAN_TIMEOUT)
    return ScanResult.from_json(answer)


# Seconds ``alicorn scan`` waits for a worker's answer (unpacking a large image takes a while).
SCAN_TIMEOUT = 900.0
