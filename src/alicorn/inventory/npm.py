"""Installed npm packages: ``node_modules/<name>/package.json`` and
``node_modules/@scope/<name>/package.json``, at any depth, found by the shared bounded walk.

Only a package.json directly in a package's directory under ``node_modules`` counts: the ones
deeper in a package (``lib/package.json`` saying ``{"type": "module"}``) and an application's
own are not installed dependencies.
"""

from __future__ import annotations

import json

from packageurl import PackageURL

from alicorn.inventory.interface import PackageSource, SourceResult
from alicorn.inventory.model import Package
from alicorn.inventory.rootfs import RootFS, RootFSError

MAX_PACKAGE_JSON = 8 * 1024 * 1024


def _is_package_dir(path: str) -> bool:
    parts = path.split("/")
    if len(parts) >= 2 and parts[-2] == "node_modules" and not parts[-1].startswith("@"):
        return True
    return len(parts) >= 3 and parts[-3] == "node_modules" and parts[-2].startswith("@")


def npm_package(name: str, version: str, path: str) -> Package:
    """An npm :class:`Package`; ``@scope/name`` keeps its scope in the name and the purl."""
    scope, _, base = name.rpartition("/")
    purl = PackageURL(type="npm", namespace=scope or None, name=base, version=version)
    return Package(type="npm", name=name, version=version, path=path, purl=purl.to_string())


class NpmSource(PackageSource):
    """The npm packages installed anywhere in the root (see the module docstring)."""

    name = "npm"

    def read(self, root: RootFS) -> SourceResult:
        walk = root.walk("")
        warnings = list(walk.warnings)
        packages: list[Package] = []
        for d in walk.dirs:
            if "package.json" not in d.files or not _is_package_dir(d.path):
                continue
            path = d.join("package.json")
            try:
                doc = json.loads(root.read_bytes(path, max_size=MAX_PACKAGE_JSON))
            except (OSError, RootFSError, ValueError, RecursionError) as e:
                warnings.append(f"/{path}: not read: {e}")
                continue
            name = doc.get("name") if isinstance(doc, dict) else None
            version = doc.get("version") if isinstance(doc, dict) else None
            if not isinstance(name, str) or not isinstance(version, str) or not name \
                    or not version:
                warnings.append(f"/{path}: no string name and version, skipped")
                continue
            packages.append(npm_package(name.strip(), version.strip(), path))
        return SourceResult(packages=tuple(packages), warnings=tuple(warnings))
