"""OpenSCAP with the SCAP Security Guide's profile for the image's distribution.

The candidate is unpacked into a private directory, its files given back the modes and owners
its layers record (unpacking strips setuid bits and makes files readable: a scanner must see
the image's permissions, :func:`~alicorn.gate.layers.restore_modes`), and evaluated with
``oscap-chroot ROOT xccdf eval``.  The data stream is the SCAP Security Guide's for the
distribution /etc/os-release names (``ssg-fedora-ds.xml``, ``ssg-rhel9-ds.xml``,
``ssg-debian11-ds.xml``, ...: Debian packages ssg-nondebian and ssg-debian), unless the gate
names one.  rpm inside the chroot is told where the image's database is through a private
HOME with ``.rpmmacros`` (as :func:`alicorn.advisories.export_oval.evaluate` does).

The ARF results are read rule by rule.  The check fails when a rule's result is ``fail``,
``error`` or ``unknown`` (unless the rule is in ``allow_failed``), and it refuses a vacuous
run: when no rule was evaluated (every one notapplicable, notselected or notchecked), the
content does not apply to the image - a wrong data stream, or a root SSG's platform checks do
not recognise - and "no failures" would mean nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from alicorn import proc
from alicorn.errors import BadInput, ToolError
from alicorn.fs import remove_tree
from alicorn.gate.checks import Session
from alicorn.gate.layers import restore_modes
from alicorn.gate.model import CheckResult, GateContext
from alicorn.gate.spec import Check, OpenscapOptions
from alicorn.inventory.model import Distro
from alicorn.inventory.rootfs import parse_os_release
from alicorn.inventory.unpack import unpack_layout

__all__ = ["CONTENT_DIR", "PROFILE_PREFIX", "check", "datastream_for", "parse_arf",
           "profile_id"]

CONTENT_DIR = Path("/usr/share/xml/scap/ssg/content")
PROFILE_PREFIX = "xccdf_org.ssgproject.content_profile_"
RULE_PREFIX = "xccdf_org.ssgproject.content_rule_"
XCCDF12 = "http://checklists.nist.gov/xccdf/1.2"

#: Results that mean the rule was evaluated against the image.
EVALUATED = ("pass", "fail", "error", "unknown", "fixed", "informational")
#: Results that fail the check (unless allowed).
FAILING = ("fail", "error", "unknown")
_TIMEOUT = 1800.0

# os-release ID → the SCAP Security Guide product, with the VERSION_ID's major number where
# the guide has one data stream per release.
_PRODUCTS: dict[str, str] = {
    "fedora": "fedora", "rhel": "rhel{major}", "centos": "centos{major}", "ol": "ol{major}",
    "sles": "sle{major}", "sled": "sle{major}", "opensuse-leap": "opensuse",
    "opensuse": "opensuse", "debian": "debian{major}", "ubuntu": "ubuntu{ubuntu}",
    "anolis": "anolis{major}", "alinux": "alinux{major}", "uos": "uos{major}",
    "scientific": "sl{major}", "rhcos": "rhcos{major}",
}


def profile_id(name: str) -> str:
    """A profile's XCCDF id from its short name (``standard``); a full id stays as it is."""
    return name if name.startswith("xccdf_") else PROFILE_PREFIX + name


def _distro(values: dict[str, str]) -> Distro | None:
    if not values.get("ID"):
        return None
    return Distro(id=values["ID"], version_id=values.get("VERSION_ID") or None,
                  id_like=tuple(values.get("ID_LIKE", "").split()),
                  pretty_name=values.get("PRETTY_NAME") or None)


def datastream_for(distro: Distro | None, content_dir: Path = CONTENT_DIR) -> Path | None:
    """The SCAP Security Guide data stream for ``distro`` (by its os-release ID, then its
    ID_LIKE), None when this host has none.  CentOS Stream 9 is ``cs9``."""
    if distro is None:
        return None
    version = distro.version_id or ""
    major = version.split(".", 1)[0]
    candidates = []
    # The distribution itself, then those it says it is like (ID_LIKE): a derivative gets
    # its parent's content, whose platform checks then decide whether it applies.
    for ident in (distro.id, *distro.id_like):
        template = _PRODUCTS.get(ident)
        if template is None:
            continue
        if ident == "centos" and major.isdigit() and int(major) >= 9:
            candidates.append(f"cs{major}")
        candidates.append(template.format(major=major, ubuntu=version.replace(".", "")))
    for product in candidates:
        path = content_dir / f"ssg-{product}-ds.xml"
        if path.is_file():
            return path
    return None


def check(ctx: GateContext, spec: Check, session: Session) -> CheckResult:
    """Run the ``openscap`` check of the gate (see the module docstring)."""
    options = spec.openscap or OpenscapOptions()
    timings: dict[str, float] = {}
    start = time.monotonic()
    # The distribution from the layers (read once for the file checks too), so that an image
    # without content is not unpacked for nothing.
    text = session.files(ctx).os_release
    distro = _distro(parse_os_release(text)) if text is not None else None
    datastream = options.datastream or datastream_for(distro)
    said = f"{distro.id} {distro.version_id or ''}".strip() if distro else "no os-release"
    timings["read"] = round(time.monotonic() - start, 3)
    if datastream is None:
        detail = (f"no SCAP Security Guide content for the image's distribution ({said}) "
                  f"in {CONTENT_DIR}")
        return CheckResult(name=spec.name, passed=not options.required,
                           detail=detail + ("; not required" if not options.required else ""),
                           data={"distribution": said, "seconds": timings})
    tmp = Path(tempfile.mkdtemp(prefix="alicorn-oscap-"))
    try:
        began = time.monotonic()
        root = tmp / "rootfs"
        unpack_layout(ctx.layout, root)
        restored = restore_modes(ctx.layout, root)
        timings["unpack"] = round(time.monotonic() - began, 3)
        stem = _stem(ctx.out_dir, options)
        arf, html = ctx.out_dir / f"{stem}.arf.xml", ctx.out_dir / f"{stem}.html"
        profile = profile_id(options.profile)
        began = time.monotonic()
        rc = _evaluate(root, tmp, datastream, profile, options.tailoring, arf,
                       html if options.html else None, ctx)
        timings["oscap"] = round(time.monotonic() - began, 3)
        began = time.monotonic()
        results = parse_arf(arf)
        timings["parse"] = round(time.monotonic() - began, 3)
    finally:
        _loosen(tmp)
        remove_tree(tmp)
    files = {"arf": arf.name, "html": html.name} if html.is_file() else {"arf": arf.name}
    return _verdict(spec, options, results, rc, files, {
        "datastream": str(datastream), "profile": profile,
        "tailoring": str(options.tailoring) if options.tailoring else None,
        "distribution": said, "modes_restored": restored, "seconds": timings})


def _loosen(tree: Path) -> None:
    """Make every directory of ``tree`` owner-writable again (the image's own modes, 0550 for
    /root, would keep anyone but root from removing it)."""
    for dirpath, dirnames, _files in os.walk(tree):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path):
                    os.chmod(path, (os.lstat(path).st_mode & 0o7777) | 0o700)


def _stem(out_dir: Path, options: OpenscapOptions) -> str:
    short = options.profile.rpartition("_profile_")[2] or options.profile
    base = "openscap-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in short)
    stem, n = base, 1
    while (out_dir / f"{stem}.arf.xml").exists():
        n += 1
        stem = f"{base}-{n}"
    return stem


def _evaluate(root: Path, tmp: Path, datastream: Path, profile: str, tailoring: Path | None,
              arf: Path, html: Path | None, ctx: GateContext) -> int:
    home = tmp / "home"
    home.mkdir()
    rpmdb = _rpmdb(root)
    if rpmdb is not None:
        # rpm in the chroot reads the image's database, not the host's default path.
        (home / ".rpmmacros").write_text(f"%_dbpath {rpmdb}\n", encoding="utf-8")
    argv = [proc.which("oscap-chroot", package="openscap-utils"), str(root), "xccdf", "eval",
            "--profile", profile]
    if tailoring is not None:
        argv += ["--tailoring-file", str(tailoring)]
    argv += ["--results-arf", str(arf)]
    if html is not None:
        argv += ["--report", str(html)]
    argv.append(str(datastream))
    result = proc.run(argv, log=ctx.log, check=False, timeout=_TIMEOUT, what="oscap-chroot",
                      env={"HOME": str(home), "LC_ALL": "C.UTF-8",
                           "TMPDIR": str(tmp)})
    # oscap: 0 every rule passed, 2 some failed, anything else an error.
    if result.returncode not in (0, 2) or not arf.is_file():
        output = (result.stderr or result.stdout).strip()
        last = output.splitlines()[-1] if output else "no output"
        raise ToolError(f"oscap xccdf eval failed (exit status {result.returncode}): {last}",
                        argv=result.args, returncode=result.returncode, output=output,
                        hint=f"does the data stream {datastream} have the profile {profile}?")
    return result.returncode


def _rpmdb(root: Path) -> str | None:
    from alicorn.advisories.export_oval import rpmdb_path
    try:
        return rpmdb_path(root)
    except BadInput:
        return None


def parse_arf(path: Path) -> dict[str, str]:
    """``{rule id: result}`` of the XCCDF TestResult in an ARF results file (the last
    result per rule when a rule is listed twice)."""
    found: dict[str, str] = {}
    tag = f"{{{XCCDF12}}}rule-result"
    try:
        for _event, element in SafeET.iterparse(str(path), events=("end",)):
            if element.tag != tag:
                continue
            rule = element.get("idref")
            result = element.find(f"{{{XCCDF12}}}result")
            if rule and result is not None and result.text:
                found[rule] = result.text.strip()
            element.clear()
    except (SafeET.ParseError, DefusedXmlException, OSError) as e:
        raise BadInput(f"not a readable ARF results file: {e}", where=str(path)) from e
    return found


def _short(rule: str) -> str:
    return rule.removeprefix(RULE_PREFIX)


def _verdict(spec: Check, options: OpenscapOptions, results: dict[str, str], rc: int,
             files: dict[str, str], data: dict[str, Any]) -> CheckResult:
    counts = Counter(results.values())
    data = {**data, "results": dict(sorted(counts.items())), "rules": len(results),
            "oscap_exit_status": rc}
    evaluated = sum(counts[r] for r in EVALUATED)
    summary = ", ".join(f"{n} {r}" for r, n in sorted(counts.items())) or "no rules"
    if evaluated == 0:
        return CheckResult(
            name=spec.name, passed=False, files=files, data=data,
            detail=f"vacuous run refused: no rule was evaluated ({summary}); the content "
                   f"does not apply to this image (its platform checks do not recognise it?)")
    allowed = {_short(r) for r in options.allow_failed}
    failing = sorted(r for r, res in results.items() if res in FAILING)
    blocking = [r for r in failing if _short(r) not in allowed]
    waived = len(failing) - len(blocking)
    note = f", {waived} allowed to fail" if waived else ""
    if blocking:
        return CheckResult(
            name=spec.name, passed=False, files=files, data=data,
            detail=f"{len(blocking)} rules failed ({summary}{note})",
            problems=tuple(f"{_short(r)}: {results[r]}" for r in blocking[:50]))
    return CheckResult(name=spec.name, passed=True, files=files, data=data,
                       detail=f"{evaluated} rules evaluated ({summary}{note})")
