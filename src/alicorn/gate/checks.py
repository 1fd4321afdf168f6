"""Alicorn's own checks of a candidate image.

* ``no-new-findings``: the candidate's packages against the imported advisories, compared with
  the image it replaces; fails on findings at or above a severity that the previous image did
  not have (same advisory id and package name).  Severity words of every feed are ranked
  together (:data:`~alicorn.gate.spec.SEVERITIES`: Fedora's Important is CVSS's high).  A
  finding whose advisory rates nothing is listed but does not count: its severity is unknown.
* ``no-setuid``, ``no-world-writable``, ``no-secrets``: the files of the image as a container
  sees them, read straight from the layers' tar streams (:mod:`alicorn.gate.layers`): the
  modes in the tar headers (unpacking strips setuid bits), later layers' whiteouts applied.
* ``non-root``: the config's ``User`` is not root (by name, uid 0, or empty).
* ``healthcheck``: the image has a health check (a config ``Healthcheck`` or Alicorn's label).

Allow lists are shell patterns (``fnmatch``: ``*`` also matches ``/``) against the absolute
path in the image: ``/usr/bin/su``, ``/usr/lib/*/gstreamer*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from alicorn.advisories.store import AdvisoryStore
from alicorn.compose.interface import Package as BuiltPackage
from alicorn.gate.layers import ImageFiles, read_image_files
from alicorn.gate.model import CheckResult, GateContext
from alicorn.gate.spec import Check, severity_rank
from alicorn.image import LABEL_HEALTHCHECK
from alicorn.inventory.model import Inventory
from alicorn.match.affected import _distro, package_from_row
from alicorn.match.index import AdvisoryIndex
from alicorn.match.matcher import match, unchecked
from alicorn.match.model import Finding

__all__ = ["MAX_PROBLEMS", "Session", "healthcheck", "no_new_findings", "no_secrets",
           "no_setuid", "no_world_writable", "non_root"]

#: Problems listed per check; the count says how many there were in all.
MAX_PROBLEMS = 50


class Session:
    """What the checks of one gate run share: the image's files are read once for all of
    no-setuid, no-world-writable and no-secrets."""

    def __init__(self) -> None:
        self._files: dict[str, ImageFiles] = {}

    def files(self, ctx: GateContext) -> ImageFiles:
        key = str(ctx.layout)
        if key not in self._files:
            self._files[key] = read_image_files(ctx.layout)
        return self._files[key]


def _capped(problems: Sequence[str]) -> tuple[str, ...]:
    if len(problems) <= MAX_PROBLEMS:
        return tuple(problems)
    return (*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more")


def _allowed(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(path, p) for p in patterns)


# -- no-new-findings ------------------------------------------------------------------------------

def no_new_findings(ctx: GateContext, check: Check, session: Session) -> CheckResult:
    """Findings of the candidate at or above ``check.severity`` that the previous image did
    not have (see the module docstring)."""
    store = AdvisoryStore(ctx.database_url)
    current = _inventory(ctx.digest, ctx.packages)
    previous = (_inventory(ctx.previous_digest or "previous", ctx.previous_packages)
                if ctx.previous_packages is not None else None)
    advisories = store.for_packages((*current.packages,
                                     *(previous.packages if previous else ())))
    index = AdvisoryIndex(advisories)
    found = match(current, index)
    before = match(previous, index) if previous is not None else ()
    known = {(f.advisory.id, f.package.name) for f in before}
    new = [f for f in found if (f.advisory.id, f.package.name) not in known]
    counted = [f for f in new if (severity_rank(f.severity) or 0) >= check.min_rank]
    unrated = [f for f in new if severity_rank(f.severity) is None]
    not_covered = unchecked(current, store.coverage())
    compared = "the previous image" if previous is not None else "nothing (a first build)"
    data: dict[str, Any] = {
        "severity": check.severity, "findings": len(found), "previous_findings": len(before),
        "new": len(new), "counted": len(counted),
        "unrated": list(_capped([_finding(f) for f in unrated])),
        "compared_with": ctx.previous_digest if previous is not None else None,
        "unchecked": [{"type": u.type, "packages": u.packages, "reason": u.reason}
                      for u in not_covered],
    }
    notes = []
    if unrated:
        notes.append(f"{len(unrated)} new unrated")
    notes.extend(f"{u.packages} {u.type} packages unchecked: {u.reason}" for u in not_covered)
    extra = f" ({'; '.join(notes)})" if notes else ""
    if counted:
        return CheckResult(
            name=check.name, passed=False,
            detail=f"{len(counted)} new findings at or above {check.severity} compared with "
                   f"{compared}{extra}",
            problems=_capped([_finding(f) for f in counted]), data=data)
    return CheckResult(
        name=check.name, passed=True,
        detail=f"no new findings at or above {check.severity} compared with {compared} "
               f"({len(found)} findings in all, {len(new)} new){extra}",
        data=data)


def _inventory(target: str, packages: Sequence[BuiltPackage]) -> Inventory:
    rows = list(packages)
    return Inventory(target=target, kind="alicorn",
                     packages=tuple(package_from_row(p) for p in rows),
                     distro=_distro(rows), digest=target)


def _finding(f: Finding) -> str:
    fixed = f"fixed in {f.fixed_version}" if f.fixed_version else "no fix yet"
    severity = f.severity or "unrated"
    return (f"{f.advisory.id} ({severity}): {f.package.name} {f.package.version}, {fixed}")


# -- files ----------------------------------------------------------------------------------------

def _undecided(check: Check, files: ImageFiles) -> CheckResult | None:
    if files.incomplete:
        return CheckResult(name=check.name, passed=False,
                           detail=f"could not read every file: {files.incomplete}",
                           data=files.stats())
    return None


def no_setuid(ctx: GateContext, check: Check, session: Session) -> CheckResult:
    """Regular files with the setuid or setgid bit, except the allowed ones."""
    files = session.files(ctx)
    found = [(p, m) for p, m in sorted(files.setuid.items()) if not _allowed(p, check.allow)]
    allowed = len(files.setuid) - len(found)
    note = f" ({allowed} allowed)" if allowed else ""
    if found:
        return CheckResult(name=check.name, passed=False,
                           detail=f"{len(found)} setuid/setgid files{note}",
                           problems=_capped([f"{p} ({_bits(m)}, mode {m:04o})"
                                             for p, m in found]), data=files.stats())
    return CheckResult(name=check.name, passed=True, detail=f"no setuid/setgid files{note}",
                       data=files.stats())


def _bits(mode: int) -> str:
    return "+".join(n for bit, n in ((0o4000, "setuid"), (0o2000, "setgid")) if mode & bit)


def no_world_writable(ctx: GateContext, check: Check, session: Session) -> CheckResult:
    """Files, device nodes and directories anyone may write to (a directory with the sticky
    bit, /tmp's 1777, is fine), except the allowed ones."""
    files = session.files(ctx)
    found = [(p, m) for p, (m, _kind) in sorted(files.world_writable.items())
             if not _allowed(p, check.allow)]
    allowed = len(files.world_writable) - len(found)
    note = f" ({allowed} allowed)" if allowed else ""
    if found:
        kinds = files.world_writable
        return CheckResult(name=check.name, passed=False,
                           detail=f"{len(found)} world-writable entries{note}",
                           problems=_capped([f"{p} ({kinds[p][1]}, mode {m:04o})"
                                             for p, m in found]), data=files.stats())
    return CheckResult(name=check.name, passed=True,
                       detail=f"nothing world-writable without the sticky bit{note}",
                       data=files.stats())


def no_secrets(ctx: GateContext, check: Check, session: Session) -> CheckResult:
    """Private keys, cloud access keys, tokens and password files, except allowed paths."""
    files = session.files(ctx)
    found = [(p, kinds) for p, kinds in sorted(files.secrets.items())
             if not _allowed(p, check.allow)]
    allowed = len(files.secrets) - len(found)
    note = f" ({allowed} allowed)" if allowed else ""
    problems = _capped([f"{p}: {', '.join(sorted(kinds))}" for p, kinds in found])
    if found:
        return CheckResult(name=check.name, passed=False,
                           detail=f"{len(found)} files with secrets{note}",
                           problems=problems, data=files.stats())
    undecided = _undecided(check, files)
    if undecided is not None:
        return undecided
    return CheckResult(name=check.name, passed=True,
                       detail=f"no secrets in {files.scanned} files read{note}",
                       data=files.stats())


# -- the image config -----------------------------------------------------------------------------

def _config(ctx: GateContext) -> dict[str, Any]:
    """The runtime part (``config``) of the image config document; a caller that passed
    that part alone is understood too."""
    if not isinstance(ctx.config, dict):
        return {}
    inner = ctx.config.get("config")
    if isinstance(inner, dict):
        return inner
    return ctx.config if "rootfs" not in ctx.config else {}


def non_root(ctx: GateContext, check: Check, session: Session) -> CheckResult:
    """The image's ``User`` is not root: not empty, not ``root``, not uid 0 (also by a name
    that /etc/passwd gives uid 0)."""
    raw = _config(ctx).get("User")
    user = raw if isinstance(raw, str) else ""
    name = user.split(":", 1)[0].strip()
    if not name:
        return CheckResult(name=check.name, passed=False,
                           detail="the image sets no User: it runs as root")
    if name == "root" or (name.isdigit() and int(name) == 0):
        return CheckResult(name=check.name, passed=False,
                           detail=f"the image runs as root (User {user!r})")
    if name.isdigit():
        return CheckResult(name=check.name, passed=True, detail=f"runs as uid {name}")
    uid = session.files(ctx).passwd.get(name)
    if uid is None:
        return CheckResult(name=check.name, passed=False,
                           detail=f"User {name!r} is not in the image's /etc/passwd")
    if uid == 0:
        return CheckResult(name=check.name, passed=False,
                           detail=f"User {name!r} has uid 0 in /etc/passwd: it is root")
    return CheckResult(name=check.name, passed=True, detail=f"runs as {name} (uid {uid})")


def healthcheck(ctx: GateContext, check: Check, session: Session) -> CheckResult:
    """The image says how to tell it is healthy: a config ``Healthcheck`` (not ``NONE``),
    Alicorn's ``org.alicorn.healthcheck`` label, or the recipe's ``healthcheck``."""
    config = _config(ctx)
    hc = config.get("Healthcheck")
    if isinstance(hc, dict):
        test = hc.get("Test")
        if isinstance(test, list) and test and test[0] != "NONE":
            return CheckResult(name=check.name, passed=True,
                               detail="the image config has a Healthcheck")
    labels = config.get("Labels")
    if isinstance(labels, dict) and isinstance(labels.get(LABEL_HEALTHCHECK), str) and \
            labels[LABEL_HEALTHCHECK].strip():
        return CheckResult(name=check.name, passed=True,
                           detail=f"the image has the {LABEL_HEALTHCHECK} label")
    if ctx.recipe.healthcheck is not None:
        return CheckResult(name=check.name, passed=True,
                           detail="the recipe has a healthcheck")
    return CheckResult(name=check.name, passed=False,
                       detail="no health check: neither a config Healthcheck, the "
                              f"{LABEL_HEALTHCHECK} label, nor a recipe healthcheck")
