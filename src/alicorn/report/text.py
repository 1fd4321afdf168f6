"""The text report: what a person reads in a terminal, in the manner of ``dnf updateinfo``.

Three views of the same scans:

* the list (default), like ``dnf updateinfo list``: one line per finding with the advisory,
  its severity (``Important/Sec.``, or the advisory's type when it is not a security one),
  the package, the installed and the fixed version, and the CVEs; then a summary line;
* ``summary``, like ``dnf updateinfo summary``: notices by severity;
* ``verbose``, the per-module view: each target that needs updates, with the affected packages
  inside it and, under each package, the advisories, CVEs and links.

A scan that could not read a package database (``inventory.errors``) says so loudly in every
view, before anything else, and never prints "no findings" then.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from alicorn.inventory.model import Inventory, Package
from alicorn.match.matcher import NOTHING_FOUND
from alicorn.match.model import Finding, Scan
from alicorn.report.interface import Reporter
from alicorn.report.json_ import (
    LEVELS,
    advisory_url,
    is_security,
    level,
    ordered,
    package_key,
    summary,
)

# More skipped-record warnings than this are counted, not listed, outside --verbose: one bad
# dist-info among hundreds should not bury the findings.
_MAX_WARNINGS = 5
_HEADER = ("ADVISORY", "SEVERITY", "TYPE", "PACKAGE", "INSTALLED", "FIXED IN", "CVES")


# C0 and C1 control characters (but newline) and the bidirectional overrides: feeds and images
# are untrusted, and a title or file name must not move the cursor, retitle the terminal or
# reorder what a person reads.
_UNPRINTABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character (but newline) shown as a ``\\xNN`` / ``\\uNNNN``
    escape instead of acting on the terminal."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def severity_label(f: Finding) -> str:
    """``Important/Sec.`` for a security advisory (dnf's spelling), else its type."""
    if is_security(f.advisory):
        return f"{level(f.advisory.severity)}/Sec."
    return f.advisory.type or "unknown"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _heading(inv: Inventory) -> str:
    parts = [inv.kind]
    if inv.distro is not None:
        d = inv.distro
        parts.append(d.pretty_name or " ".join(x for x in (d.id, d.version_id) if x))
    if inv.digest:
        parts.append(inv.digest[:19])
    name = f" [{inv.name}]" if inv.name and inv.name != inv.target else ""
    return (f"{inv.target}{name} ({', '.join(parts)}): "
            f"{_plural(len(inv.packages), 'package')} scanned")


def incomplete_notices(scan: Scan) -> list[str]:
    """The loud lines of an incomplete scan: one per package database that could not be
    read (or that no package was found at all), and one per package type that no advisory
    covered."""
    lines = [f"NOTHING SCANNED: {e}" if e == NOTHING_FOUND
             else f"INCOMPLETE SCAN: could not read {e}; findings may be missing"
             for e in scan.inventory.errors]
    lines += [f"NOT CHECKED: {_plural(u.packages, f'{u.type} package')}: {u.reason}"
              for u in scan.unchecked]
    return lines


def _warnings(scan: Scan, verbose: bool) -> list[str]:
    warnings = scan.inventory.warnings
    shown = warnings if verbose else warnings[:_MAX_WARNINGS]
    lines = [f"warning: {w}" for w in shown]
    if len(warnings) > len(shown):
        lines.append(f"warning: ... and {len(warnings) - len(shown)} more warnings "
                     "(--verbose lists them all)")
    return lines


def summary_line(scan: Scan) -> str:
    """``3 security advisories for 2 packages: 1 Important, 2 Unknown``, and for a scan
    without findings a line that says whether that can be trusted."""
    findings = scan.findings
    unchecked = sum(u.packages for u in scan.unchecked)
    if not findings:
        if NOTHING_FOUND in scan.inventory.errors:
            return "no packages found: nothing was scanned; this is not a clean result"
        if not scan.complete:
            return ("0 findings in the packages that could be read, but the scan is "
                    "INCOMPLETE: this is not a clean result")
        if unchecked and not scan.checked:
            return (f"nothing checked: no advisory covers any of the "
                    f"{_plural(unchecked, 'package')} scanned; this is not a clean result")
        if unchecked:
            return (f"no findings in the {_plural(scan.checked, 'package')} checked; "
                    f"{_plural(unchecked, 'package')} NOT CHECKED (no advisories for them)")
        scanned = _plural(len(scan.inventory.packages), "package")
        return f"no findings: no advisory applies to the {scanned} scanned"
    packages = {package_key(f.package) for f in findings}
    counts = summary(findings)
    security = sum(counts.values())
    text = (f"{_plural(security, 'security advisory', 'security advisories')} for "
            f"{_plural(len(packages), 'package')}")
    by_level = [f"{n} {name}" for name, n in counts.items() if n]
    if by_level:
        text += ": " + ", ".join(by_level)
    others = _other_types(findings)
    if others:
        text += " (and " + ", ".join(f"{n} {kind}" for kind, n in others.items()) + ")"
    if not scan.complete:
        text += "; the scan is INCOMPLETE, more may be missing"
    if unchecked:
        text += f"; {_plural(unchecked, 'package')} NOT CHECKED (no advisories for them)"
    return text


def _other_types(findings: Sequence[Finding]) -> dict[str, int]:
    """Non-security advisories (``--type all``) by type: distinct advisories counted."""
    seen: dict[str, str] = {}
    for f in findings:
        if not is_security(f.advisory):
            seen.setdefault(f.advisory.id, f.advisory.type or "unknown")
    counts: dict[str, int] = {}
    for kind in sorted(seen.values()):
        counts[kind] = counts.get(kind, 0) + 1
    return {f"{kind} advisor{'y' if n == 1 else 'ies'}": n for kind, n in counts.items()}


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
            for r in rows]


def _row(f: Finding) -> tuple[str, ...]:
    p = f.package
    name = f"{p.name}.{p.arch}" if p.type == "rpm" and p.arch else p.name
    return (f.advisory.id, severity_label(f), p.type, name, p.version,
            f.fixed_version or "(no fix yet)", ", ".join(f.cves) or "-")


def _rows(findings: Sequence[Finding]) -> list[tuple[str, ...]]:
    """One row per finding, except that copies of one package in several places (the same
    wheel in two site-packages) are one row that says how many (--verbose names them)."""
    counts: dict[tuple[str, ...], int] = {}
    for f in ordered(findings):
        row = _row(f)
        counts[row] = counts.get(row, 0) + 1
    return [(*row[:3], f"{row[3]} ({n} copies)", *row[4:]) if n > 1 else row
            for row, n in counts.items()]


def _package_line(p: Package) -> str:
    facts = [p.type]
    if p.arch:
        facts.append(p.arch)
    if p.type in ("rpm", "deb") and p.source and p.source != p.name:
        facts.append(f"source {p.source}")
    where = f" at {p.path}" if p.path else ""
    return f"  {p.name} {p.version} ({', '.join(facts)}){where}"


class TextReporter(Reporter):
    """The person's view; ``summary`` and ``verbose`` choose the view (see the module)."""

    name = "text"

    def __init__(self, *, summary: bool = False, verbose: bool = False):
        self.summary = summary
        self.verbose = verbose

    def render(self, scans: Sequence[Scan]) -> str:
        if self.summary:
            blocks = [self._summary(s) for s in scans]
        elif self.verbose:
            blocks = [self._modules(s) for s in scans]
        else:
            blocks = [self._list(s) for s in scans]
        text = "\n\n".join("\n".join(b) for b in blocks)
        if len(scans) > 1:
            text += "\n\n" + self._overall(scans)
        return printable(text) + "\n"

    def _list(self, scan: Scan) -> list[str]:
        lines = [_heading(scan.inventory), *incomplete_notices(scan)]
        if scan.findings:
            lines += _columns([_HEADER, *_rows(scan.findings)])
        lines += _warnings(scan, self.verbose)
        lines.append(summary_line(scan))
        return lines

    def _summary(self, scan: Scan) -> list[str]:
        lines = [_heading(scan.inventory), *incomplete_notices(scan)]
        counts = summary(scan.findings)
        total = sum(counts.values())
        if total:
            lines.append(f"    {total} Security notice(s)")
            lines += [f"        {n} {name} Security notice(s)" for name in LEVELS
                      if (n := counts[name])]
        for kind, n in _other_types(scan.findings).items():
            lines.append(f"    {n} {kind.split()[0].capitalize()} notice(s)")
        if not scan.findings:
            lines.append("    " + summary_line(scan))
        elif not scan.complete:
            lines.append("    the scan is INCOMPLETE: more may be missing")
        elif scan.unchecked:
            lines.append(f"    {_plural(sum(u.packages for u in scan.unchecked), 'package')} "
                         "NOT CHECKED (no advisories for them)")
        return lines

    def _modules(self, scan: Scan) -> list[str]:
        """The target and, for each affected package, its advisories with CVEs and links."""
        lines = [_heading(scan.inventory), *incomplete_notices(scan)]
        by_package: dict[tuple[str, ...], list[Finding]] = {}
        for f in ordered(scan.findings):
            by_package.setdefault(package_key(f.package), []).append(f)
        for group in by_package.values():
            lines.append(_package_line(group[0].package))
            for f in group:
                fix = f"fixed in {f.fixed_version}" if f.fixed_version else "no fix yet"
                if f.update:
                    fix += f" (update {f.update})"
                lines.append(f"    {f.advisory.id}  {severity_label(f)}  {fix}")
                detail = [", ".join(f.cves), f.advisory.title, advisory_url(f.advisory)]
                lines += [f"        {d}" for d in detail if d]
        lines += _warnings(scan, True)
        lines.append(summary_line(scan))
        return lines

    @staticmethod
    def _overall(scans: Sequence[Scan]) -> str:
        need = sum(1 for s in scans if s.findings)
        text = f"{need} of {len(scans)} targets need updates"
        incomplete = [s.inventory.target for s in scans if not s.complete]
        if incomplete:
            text += f"; INCOMPLETE scans (findings may be missing): {', '.join(incomplete)}"
        unchecked = [s.inventory.target for s in scans if s.complete and s.unchecked]
        if unchecked:
            text += f"; packages NOT CHECKED (no advisories for them) in: {', '.join(unchecked)}"
        return text
