"""Tiny RPMs, repositories with Bodhi-style updateinfo, and installroots, for the plugin's tests.

Everything is built on this machine with rpmbuild, createrepo_c and modifyrepo_c; dnf installs
the old builds into a root whose rpm database sits where Fedora keeps it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

RPMDB = "/usr/lib/sysimage/rpm"


@dataclass(frozen=True)
class Pkg:
    name: str
    version: str
    release: str
    arch: str = "x86_64"
    epoch: int = 0

    @property
    def nevra(self) -> str:
        evr = f"{self.version}-{self.release}"
        return f"{self.name}-{self.epoch}:{evr}.{self.arch}" if self.epoch else \
            f"{self.name}-{evr}.{self.arch}"


@dataclass(frozen=True)
class Ref:
    type: str  # cve | bugzilla | self
    id: str
    href: str | None = None


@dataclass(frozen=True)
class Update:
    id: str
    type: str
    severity: str | None
    packages: tuple[Pkg, ...]
    references: tuple[Ref, ...] = ()
    updated: str = "2024-04-01 00:00:00"
    modules: tuple[tuple[str, str], ...] = field(default=())


def run(argv: Sequence[str | os.PathLike[str]], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def build_rpms(pkgs: Sequence[Pkg], out: Path, work: Path) -> None:
    """An empty package per ``pkgs`` entry, built with rpmbuild, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(work), "SOURCE_DATE_EPOCH": "1711929600", "LC_ALL": "C"}
    for p in pkgs:
        spec = work / f"{p.name}-{p.epoch}-{p.version}-{p.release}-{p.arch}.spec"
        lines = [f"Name: {p.name}", f"Version: {p.version}", f"Release: {p.release}",
                 "Summary: a package for the dnf list-security tests", "License: MIT"]
        if p.epoch:
            lines.append(f"Epoch: {p.epoch}")
        if p.arch == "noarch":
            lines.append("BuildArch: noarch")
        lines += ["%description", "An empty package for Alicorn's dnf plugin tests.", "%files", ""]
        spec.write_text("\n".join(lines))
        top = work / "top"
        argv = ["rpmbuild", "-bb", "--quiet", "--nodeps", "--define", f"_topdir {top}",
                "--define", "_buildhost tests.alicorn.invalid"]
        if p.arch not in ("noarch",):
            argv += ["--target", p.arch]
        run([*argv, str(spec)], env=env)
    for rpm in (work / "top" / "RPMS").glob("*/*.rpm"):
        rpm.replace(out / rpm.name)


def updateinfo_xml(updates: Sequence[Update]) -> str:
    """updateinfo.xml as Bodhi writes it."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', "<updates>"]
    for u in updates:
        parts.append(f'  <update from="updates@fedoraproject.org" status="stable" '
                     f'type="{u.type}" version="2.0">')
        parts.append(f"    <id>{escape(u.id)}</id>")
        parts.append(f"    <title>{escape(u.id)} update</title>")
        parts.append(f'    <issued date="{u.updated}"/>')
        parts.append(f'    <updated date="{u.updated}"/>')
        parts.append("    <release>Fedora 40</release>")
        parts.append(f"    <severity>{u.severity or 'None'}</severity>")
        parts.append(f"    <summary>{escape(u.id)}</summary>")
        parts.append("    <description>A test advisory.</description>")
        parts.append("    <references>")
        for r in u.references:
            href = f" href={quoteattr(r.href)}" if r.href else ""
            parts.append(f"      <reference{href} id={quoteattr(r.id)} type=\"{r.type}\" "
                         f"title={quoteattr(r.id)}/>")
        parts.append("    </references>")
        parts.append("    <pkglist>")
        parts.append('      <collection short="F40">')
        parts.append("        <name>Fedora 40</name>")
        for name, stream in u.modules:
            parts.append(f'        <module name="{name}" stream="{stream}" version="1" '
                         'context="c0ffee42" arch="x86_64"/>')
        for p in u.packages:
            filename = f"{p.name}-{p.version}-{p.release}.{p.arch}.rpm"
            parts.append(f'        <package name="{p.name}" version="{p.version}" '
                         f'release="{p.release}" epoch="{p.epoch}" arch="{p.arch}" '
                         f'src="{p.name}-{p.version}-{p.release}.src.rpm">')
            parts.append(f"          <filename>{filename}</filename>")
            parts.append("        </package>")
        parts.append("      </collection>")
        parts.append("    </pkglist>")
        parts.append("  </update>")
    parts.append("</updates>")
    return "\n".join(parts) + "\n"


def make_repo(repo: Path, updates: Sequence[Update] = ()) -> Path | None:
    """createrepo_c over ``repo`` (its RPMs may be none), then the updateinfo added with
    modifyrepo_c as Bodhi does; returns the plain updateinfo.xml written, if any."""
    repo.mkdir(parents=True, exist_ok=True)
    run(["createrepo_c", "--quiet", "--no-database", str(repo)])
    if not updates:
        return None
    xml = repo.parent / f"{repo.name}-updateinfo.xml"
    xml.write_text(updateinfo_xml(updates), encoding="utf-8")
    run(["modifyrepo_c", "--mdtype=updateinfo", str(xml), str(repo / "repodata")])
    return xml


def rpm_home(base: Path) -> Path:
    """A HOME whose .rpmmacros puts the rpm database where Fedora keeps it (Debian's rpm
    would use ~/.rpmdb)."""
    home = base / "rpmhome"
    home.mkdir(parents=True, exist_ok=True)
    (home / ".rpmmacros").write_text(f"%_dbpath {RPMDB}\n")
    return home
