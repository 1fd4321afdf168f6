"""dpkg's database of a root filesystem: ``var/lib/dpkg/status`` and ``status.d/``.

``var/lib/dpkg/status`` holds one deb822 stanza per package dpkg knows.  Distroless images have
no status file but ``var/lib/dpkg/status.d/<name>``, one stanza per file (without ``Status:``:
every such package is installed), beside ``<name>.md5sums`` listing its files.

Which states are reported: every state in which the package's files are on disk —
``installed``, and the interrupted ones ``half-installed``, ``unpacked``, ``half-configured``,
``triggers-awaiting``, ``triggers-pending`` (a warning names each of these: its code may be
vulnerable all the same).  ``config-files`` (removed, only conffiles left) and
``not-installed`` are not reported.

Stanzas are parsed with python-debian's deb822; a stanza without Package or Version, or with a
line that is not a field, is a warning naming the file and line, and the others are still read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packageurl import PackageURL

from alicorn.inventory.interface import PackageSource, SourceResult
from alicorn.inventory.model import Package
from alicorn.inventory.rootfs import RootFS, RootFSError

if TYPE_CHECKING:
    from debian.deb822 import Deb822

STATUS = "var/lib/dpkg/status"
STATUS_D = "var/lib/dpkg/status.d"
INFO = "var/lib/dpkg/info"
#: The status file of a large Debian system is ~5 MiB.
MAX_STATUS = 256 * 1024 * 1024
MAX_LIST = 64 * 1024 * 1024

INSTALLED = "installed"
#: States whose files are on disk; see the module docstring.
ON_DISK = frozenset({"installed", "half-installed", "unpacked", "half-configured",
                     "triggers-awaiting", "triggers-pending"})
_SOURCE = re.compile(r"^\s*(?P<name>[^\s(]+)\s*(?:\((?P<version>[^)\s]+)\s*\))?\s*$")
_FIELD = re.compile(r"^[^\s:#][^:\s]*:")


@dataclass(frozen=True)
class _Stanza:
    fields: Deb822  # python-debian's, imported when a status file is read
    line: int           # line of the stanza's first line in its file


def _stanzas(text: str, where: str, warnings: list[str]) -> list[_Stanza]:
    """Split ``text`` into deb822 stanzas, warning about lines that are not fields."""
    from debian.deb822 import Deb822  # heavy (charset detection): only for roots with dpkg

    out: list[_Stanza] = []
    block: list[str] = []
    start = 0
    bad = False

    def flush() -> None:
        nonlocal bad
        if block and not bad:
            out.append(_Stanza(Deb822("\n".join(block) + "\n"), start))
        bad = False
        block.clear()

    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            flush()
            continue
        if not block:
            start = lineno
        if not line[0].isspace() and not line.startswith("#") and not _FIELD.match(line):
            if not bad:
                warnings.append(f"{where}:{lineno}: not a 'Field: value' line; stanza from "
                                f"line {start} skipped")
            bad = True
        block.append(line)
    flush()
    return out


def parse_source(value: str | None, package: str, version: str) -> tuple[str, str | None]:
    """``Source: openssl (3.0.11-1)`` → ("openssl", "3.0.11-1"); absent → (package, None)."""
    if not value:
        return package, None
    m = _SOURCE.match(value)
    if not m:
        return value.split()[0], None
    src_version = m.group("version")
    return m.group("name"), src_version if src_version and src_version != version else None


def _epoch(version: str) -> int | None:
    head, sep, _ = version.partition(":")
    return int(head) if sep and head.isdigit() else None


class DpkgSource(PackageSource):
    """The packages dpkg lists as present in the root (see the module docstring)."""

    name = "dpkg"

    def read(self, root: RootFS) -> SourceResult:
        warnings: list[str] = []
        errors: list[str] = []
        files: list[tuple[str, bool]] = []   # (path, from status.d)
        if root.lexists(STATUS):
            # Even a dangling or looping link: a status that cannot be read is an error.
            files.append((STATUS, False))
        if root.is_dir(STATUS_D):
            try:
                names = root.iterdir(STATUS_D)
            except (OSError, RootFSError) as e:
                errors.append(f"/{STATUS_D}: cannot be listed: {e}")
                names = []
            files += [(f"{STATUS_D}/{n}", True) for n in names
                      if not n.endswith(".md5sums") and not n.startswith(".")]
        if not files:
            return SourceResult()
        distro = root.os_release()
        packages: list[Package] = []
        owned: set[str] = set()
        for path, single in files:
            try:
                text = root.read_text(path, max_size=MAX_STATUS)
            except (OSError, RootFSError) as e:
                errors.append(f"/{path}: dpkg status not read: {e}")
                continue
            stanzas = _stanzas(text, f"/{path}", warnings)
            if not stanzas and not single:
                errors.append(f"/{path}: holds no package stanzas")
            for st in stanzas:
                pkg = self._package(st, path, single, distro.id if distro else None, warnings)
                if pkg is None:
                    continue
                packages.append(pkg)
                owned |= self._owned(root, pkg, path if single else None, warnings)
        return SourceResult(packages=tuple(packages), warnings=tuple(warnings),
                            errors=tuple(errors), owned_paths=frozenset(owned))

    def _package(self, st: _Stanza, path: str, single: bool, distro_id: str | None,
                 warnings: list[str]) -> Package | None:
        f = st.fields
        where = f"/{path}:{st.line}"
        name, version = f.get("Package", "").strip(), f.get("Version", "").strip()
        status = f.get("Status", "").split()
        if not status and single:
            status = ["install", "ok", INSTALLED]
        state = status[2] if len(status) == 3 else None
        if state is None:
            warnings.append(f"{where}: package {name or '?'}: no valid Status field, skipped")
            return None
        if state not in ON_DISK:
            return None
        if not name or not version:
            warnings.append(f"{where}: stanza without Package or Version, skipped")
            return None
        if state != INSTALLED:
            warnings.append(f"{where}: {name} {version} is {state}: reported, its files are on "
                            "disk")
        arch = f.get("Architecture", "").strip() or None
        source, source_version = parse_source(f.get("Source"), name, version)
        qualifiers = {"arch": arch} if arch else None
        purl = PackageURL(type="deb", namespace=distro_id, name=name, version=version,
                          qualifiers=qualifiers).to_string()
        return Package(type="deb", name=name, version=version, arch=arch,
                       epoch=_epoch(version), source=source, source_version=source_version,
                       path=path, purl=purl)

    def _owned(self, root: RootFS, pkg: Package, status_d_file: str | None,
               warnings: list[str]) -> set[str]:
        """The files of ``pkg``: ``info/<name>[:arch].list``, else status.d's md5sums."""
        candidates = [f"{INFO}/{pkg.name}:{pkg.arch}.list", f"{INFO}/{pkg.name}.list"]
        if status_d_file:
            candidates.append(f"{status_d_file}.md5sums")
        for c in candidates:
            if not root.exists(c):
                continue
            try:
                text = root.read_text(c, max_size=MAX_LIST)
            except (OSError, RootFSError) as e:
                warnings.append(f"/{c}: file list not read: {e}")
                continue
            paths = set()
            for line in text.splitlines():
                if c.endswith(".md5sums"):
                    # "<md5>  <path>": the path is relative to / already.
                    line = line.partition(" ")[2].strip()
                p = line.strip().lstrip("/")
                if p and p != ".":
                    paths.add(p)
            return paths
        return set()
