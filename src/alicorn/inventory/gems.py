"""Installed Ruby gems: ``specifications/*.gemspec``.

RubyGems writes one ``<name>-<version>[-<platform>].gemspec`` per installed gem into the
``specifications`` directory of its gem home (default gems into ``specifications/default``):
``usr/share/gems`` (Fedora), ``usr/lib/ruby/gems/<ver>`` and ``usr/share/rubygems-integration``
and ``var/lib/gems/<ver>`` (Debian), ``usr/local/lib/ruby/gems/<ver>``, ``usr/local/bundle``
(the ruby images), ``vendor/bundle/ruby/<ver>`` of an application.  All are found by the shared
bounded walk of the root.

The gemspec is Ruby and is never evaluated: the name and version come from the file name and
are cross-checked against the ``s.name = "..."`` / ``s.version = "..."`` lines RubyGems writes;
where both are there and disagree, the lines win and a warning says so.
"""

from __future__ import annotations

import re

from packageurl import PackageURL

from alicorn.inventory.interface import PackageSource, SourceResult
from alicorn.inventory.model import Package
from alicorn.inventory.rootfs import RootFS, RootFSError

MAX_GEMSPEC = 4 * 1024 * 1024
# The version is the first "-<digit>..." part; a platform may follow ("x86_64-linux", "java").
_FILE = re.compile(r"^(?P<name>.+?)-(?P<version>\d[0-9A-Za-z.]*)(?:-(?P<platform>[A-Za-z_].*))?$")
_ASSIGN = r"^\s*\w+\.{field}\s*=\s*(?:Gem::Version\.new\(\s*)?[\"'](?P<v>[^\"']+)[\"']"
_NAME = re.compile(_ASSIGN.format(field="name"), re.M)
_VERSION = re.compile(_ASSIGN.format(field="version"), re.M)
_PLATFORM = re.compile(_ASSIGN.format(field="platform"), re.M)


def parse_gemspec_name(filename: str) -> tuple[str, str, str | None] | None:
    """``nokogiri-1.13.0-x86_64-linux.gemspec`` → (nokogiri, 1.13.0, x86_64-linux)."""
    m = _FILE.match(filename.removesuffix(".gemspec"))
    if not m:
        return None
    return m.group("name"), m.group("version"), m.group("platform")


def _is_spec_dir(path: str) -> bool:
    parts = path.split("/")
    return parts[-1] == "specifications" or parts[-2:] == ["specifications", "default"]


class GemSource(PackageSource):
    """The gems installed anywhere in the root (see the module docstring)."""

    name = "gem"

    def read(self, root: RootFS) -> SourceResult:
        walk = root.walk("")
        warnings = list(walk.warnings)
        packages: list[Package] = []
        for d in walk.dirs:
            if not _is_spec_dir(d.path):
                continue
            for f in d.files:
                if f.endswith(".gemspec"):
                    pkg = self._package(root, d.join(f), warnings)
                    if pkg:
                        packages.append(pkg)
        return SourceResult(packages=tuple(packages), warnings=tuple(warnings))

    def _package(self, root: RootFS, path: str, warnings: list[str]) -> Package | None:
        filename = path.rsplit("/", 1)[-1]
        from_file = parse_gemspec_name(filename)
        try:
            text = root.read_text(path, max_size=MAX_GEMSPEC)
        except (OSError, RootFSError) as e:
            warnings.append(f"/{path}: not read: {e}")
            text = ""
        n, v, p = _NAME.search(text), _VERSION.search(text), _PLATFORM.search(text)
        platform = p.group("v") if p and p.group("v") != "ruby" else None
        if n and v:
            name, version = n.group("v"), v.group("v")
            stem = filename.removesuffix(".gemspec")
            expected = {f"{name}-{version}", f"{name}-{version}-{platform}"}
            if stem not in expected:
                warnings.append(f"/{path}: the file name says {stem}, its lines say {name} "
                                f"{version}{' ' + platform if platform else ''}: taking the lines")
        elif from_file:
            name, version, platform = from_file
            if text:
                warnings.append(f"/{path}: no s.name/s.version lines; name and version taken "
                                "from the file name")
        else:
            warnings.append(f"/{path}: neither the file name nor the content give a name and "
                            "version, skipped")
            return None
        qualifiers = {"platform": platform} if platform else None
        return Package(type="gem", name=name, version=version, path=path, arch=platform,
                       purl=PackageURL(type="gem", name=name, version=version,
                                       qualifiers=qualifiers).to_string())
