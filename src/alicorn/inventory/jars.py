"""Java archives: ``*.jar``, ``*.war``, ``*.ear`` anywhere in the root, and the jars inside them.

What a jar is comes from ``META-INF/maven/<group>/<artifact>/pom.properties`` (groupId,
artifactId, version), which Maven writes into every jar it builds; a shaded ("uber") jar holds
one per library folded into it, and every one is reported.  A jar without any falls back to
its ``META-INF/MANIFEST.MF`` (Implementation-Version with Implementation-Vendor-Id/Title, or
Bundle-Version with Bundle-SymbolicName) as a weaker guess, and then to its place in a Maven
repository layout (``.m2/repository/<group>/<artifact>/<version>/``).

Nested archives (Spring Boot's ``BOOT-INF/lib/*.jar``, a war's ``WEB-INF/lib/*.jar``, an ear's
modules) are opened in memory and read the same way, recursively.  A jar is untrusted input and
a zip bomb is a few KiB: every member is read with a byte cap, nesting has a depth cap, each
outer archive a budget of uncompressed bytes; what a cap stops is a warning naming the member.
``Package.path`` of a nested jar is ``outer.jar!/BOOT-INF/lib/inner.jar``.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO

from packageurl import PackageURL

from alicorn.inventory.interface import PackageSource, SourceResult
from alicorn.inventory.model import Package
from alicorn.inventory.rootfs import RootFS, RootFSError

ARCHIVE_SUFFIXES = (".jar", ".war", ".ear")
MAX_ARCHIVE = 2 * 1024 * 1024 * 1024     # an archive on disk
MAX_NESTED = 256 * 1024 * 1024          # one nested archive, uncompressed, in memory
MAX_BUDGET = 1024 * 1024 * 1024         # uncompressed bytes read out of one outer archive
MAX_TEXT = 1024 * 1024                  # pom.properties, MANIFEST.MF
MAX_DEPTH = 8                           # archive in archive in ... (Spring Boot needs 1)
MAX_MEMBERS = 500_000

_POM = re.compile(r"^META-INF/maven/([^/]+)/([^/]+)/pom\.properties$")
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError, zipfile.LargeZipFile)


class _Capped(Exception):
    """A member is larger than its cap, or the outer archive's budget is spent."""


@dataclass
class _Budget:
    left: int


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, budget: _Budget) -> bytes:
    """The member's bytes, never more than ``cap`` nor than the budget left (the declared
    size is not trusted: it is what a bomb lies about)."""
    limit = min(cap, budget.left)
    if info.file_size > limit:
        raise _Capped(f"declares {info.file_size} bytes uncompressed, over the cap of {limit}")
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _Capped(f"holds more than {limit} bytes uncompressed")
    budget.left -= len(data)
    return data


def parse_properties(text: str) -> dict[str, str]:
    """The ``key=value`` (or ``key: value``) lines of a Java properties file."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        m = re.match(r"^([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def parse_manifest(text: str) -> dict[str, str]:
    """The main section of a MANIFEST.MF (continuation lines start with one space)."""
    out: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            break       # the main section ends at the first blank line
        if line.startswith(" ") and key:
            out[key] += line[1:]
            continue
        k, sep, v = line.partition(":")
        if sep:
            key = k.strip()
            out[key] = v.strip()
    return out


def maven_package(group: str | None, artifact: str, version: str, path: str) -> Package:
    """A maven :class:`Package` (``name`` is ``group:artifact`` as OSV spells it)."""
    name = f"{group}:{artifact}" if group else artifact
    purl = PackageURL(type="maven", namespace=group, name=artifact, version=version).to_string()
    return Package(type="maven", name=name, version=version, group=group, path=path, purl=purl)


def _from_repository_layout(path: str) -> Package | None:
    """A jar in a Maven repository (``~/.m2/repository``, an image's ``/usr/share/maven-repo``)
    is named by its place: ``<group/as/dirs>/<artifact>/<version>/<artifact>-<version>.jar``."""
    if "!/" in path:
        return None
    parts = path.split("/")
    if "repository" not in parts and "maven-repo" not in parts:
        return None
    base = max(i for i, p in enumerate(parts) if p in ("repository", "maven-repo"))
    coords = parts[base + 1:]
    if len(coords) < 4:
        return None
    *group, artifact, version, filename = coords
    if not filename.startswith(f"{artifact}-{version}"):
        return None
    return maven_package(".".join(group), artifact, version, path)


class JarSource(PackageSource):
    """The Java libraries in every archive found by the root's bounded walk."""

    name = "jar"

    def read(self, root: RootFS) -> SourceResult:
        walk = root.walk("")
        warnings = list(walk.warnings)
        packages: list[Package] = []
        for path in walk.files():
            if not path.lower().endswith(ARCHIVE_SUFFIXES):
                continue
            try:
                with root.open(path, max_size=MAX_ARCHIVE) as f:
                    self._archive(f, path, 0, _Budget(MAX_BUDGET), packages, warnings)
            except (OSError, RootFSError) as e:
                warnings.append(f"/{path}: not read: {e}")
        return SourceResult(packages=tuple(packages), warnings=tuple(warnings))

    def _archive(self, f: IO[bytes], path: str, depth: int, budget: _Budget,
                 packages: list[Package], warnings: list[str]) -> None:
        try:
            with zipfile.ZipFile(f) as zf:
                self._zip(zf, path, depth, budget, packages, warnings)
        except _ZIP_ERRORS as e:
            warnings.append(f"/{path}: not a readable zip archive: {e}")

    def _zip(self, zf: zipfile.ZipFile, path: str, depth: int, budget: _Budget,
             packages: list[Package], warnings: list[str]) -> None:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            warnings.append(f"/{path}: {len(infos)} members, more than {MAX_MEMBERS}; only the "
                            "first are read")
            infos = infos[:MAX_MEMBERS]
        found = 0
        manifest = None
        nested = []
        for info in infos:
            name = info.filename
            m = _POM.match(name)
            if m:
                props = self._text(zf, info, path, budget, warnings)
                if props is None:
                    continue
                p = parse_properties(props)
                group = p.get("groupId") or m.group(1)
                artifact = p.get("artifactId") or m.group(2)
                version = p.get("version")
                if not version:
                    warnings.append(f"/{path}!/{name}: no version, skipped")
                    continue
                packages.append(maven_package(group, artifact, version, path))
                found += 1
            elif name.upper() == "META-INF/MANIFEST.MF":
                manifest = info
            elif name.lower().endswith(ARCHIVE_SUFFIXES) and not info.is_dir():
                nested.append(info)
        if not found:
            pkg = (self._from_manifest(zf, manifest, path, budget, warnings)
                   or _from_repository_layout(path))
            if pkg:
                packages.append(pkg)
            elif not nested:
                warnings.append(f"/{path}: no pom.properties and no version in its manifest: "
                                "not identified")
        for info in nested:
            inner = f"{path}!/{info.filename}"
            if depth + 1 > MAX_DEPTH:
                warnings.append(f"/{inner}: nested more than {MAX_DEPTH} archives deep, not read")
                continue
            try:
                data = _read_member(zf, info, MAX_NESTED, budget)
            except _Capped as e:
                warnings.append(f"/{inner}: not read, it {e} (a zip bomb?)")
                continue
            except _ZIP_ERRORS as e:
                warnings.append(f"/{inner}: not read: {e}")
                continue
            self._archive(io.BytesIO(data), inner, depth + 1, budget, packages, warnings)

    def _text(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, budget: _Budget,
              warnings: list[str]) -> str | None:
        try:
            return _read_member(zf, info, MAX_TEXT, budget).decode("utf-8", "replace")
        except _Capped as e:
            warnings.append(f"/{path}!/{info.filename}: not read, it {e} (a zip bomb?)")
        except _ZIP_ERRORS as e:
            warnings.append(f"/{path}!/{info.filename}: not read: {e}")
        return None

    def _from_manifest(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo | None, path: str,
                       budget: _Budget, warnings: list[str]) -> Package | None:
        if info is None:
            return None
        text = self._text(zf, info, path, budget, warnings)
        if text is None:
            return None
        mf = parse_manifest(text)
        version = mf.get("Implementation-Version") or mf.get("Bundle-Version")
        if not version:
            return None
        group = mf.get("Implementation-Vendor-Id") or None
        # The artifact id is the file name less its version, when it ends so (log4j-1.2.17.jar);
        # else the title or the OSGi name.
        stem = path.rsplit("!/", 1)[-1].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem.endswith(f"-{version}"):
            artifact = stem.removesuffix(f"-{version}")
        else:
            artifact = (mf.get("Implementation-Title")
                        or mf.get("Bundle-SymbolicName", "").split(";")[0].strip() or stem)
        return maven_package(group, artifact, version, path)
