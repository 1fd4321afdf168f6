"""Installed Python distributions: ``*.dist-info`` and ``*.egg-info`` in site-packages.

Found by one bounded walk of the whole root (shared with the other file-based sources), so the
system's ``usr/lib/python3*/site-packages``, Debian's ``dist-packages``, ``usr/local/lib``,
``opt/**`` and virtualenvs anywhere are all seen.  A metadata directory counts only inside a
directory named ``site-packages`` or ``dist-packages``: an ``.egg-info`` in a source checkout
is not an installed package.

The metadata (``METADATA``, ``PKG-INFO``, or an ``.egg-info`` file, all in the email header
format) is parsed with :func:`packaging.metadata.parse_email`, which keeps what it can of a
malformed file instead of refusing it; the name is normalised as PEP 503 says.
"""

from __future__ import annotations

from packageurl import PackageURL
from packaging.utils import canonicalize_name

from alicorn.inventory.interface import PackageSource, SourceResult
from alicorn.inventory.model import Package
from alicorn.inventory.rootfs import RootFS, RootFSError

SITE_DIRS = frozenset({"site-packages", "dist-packages"})
#: METADATA with a long description embedded is rarely over 1 MiB.
MAX_METADATA = 16 * 1024 * 1024


def _name_version_from(dirname: str) -> tuple[str, str] | None:
    """``requests-2.31.0.dist-info`` → (requests, 2.31.0); egg-info may add ``-py3.11``."""
    stem = dirname.rsplit(".", 1)[0]
    parts = stem.split("-")
    return (parts[0], parts[1]) if len(parts) >= 2 and parts[0] and parts[1] else None


class PythonSource(PackageSource):
    """The Python distributions installed anywhere in the root (see the module docstring)."""

    name = "python"

    def read(self, root: RootFS) -> SourceResult:
        walk = root.walk("")
        warnings = list(walk.warnings)
        packages: list[Package] = []
        for d in walk.dirs:
            if d.path.rsplit("/", 1)[-1] not in SITE_DIRS:
                continue
            for sub in d.dirs:
                if sub.endswith(".dist-info"):
                    meta = f"{d.join(sub)}/METADATA"
                elif sub.endswith(".egg-info"):
                    meta = f"{d.join(sub)}/PKG-INFO"
                else:
                    continue
                pkg = self._package(root, d.join(sub), meta, warnings)
                if pkg:
                    packages.append(pkg)
            for f in d.files:
                if f.endswith(".egg-info"):
                    pkg = self._package(root, d.join(f), d.join(f), warnings)
                    if pkg:
                        packages.append(pkg)
        return SourceResult(packages=tuple(packages), warnings=tuple(warnings))

    def _package(self, root: RootFS, path: str, meta: str,
                 warnings: list[str]) -> Package | None:
        try:
            data = root.read_bytes(meta, max_size=MAX_METADATA)
        except FileNotFoundError:
            warnings.append(f"/{path}: no {meta.rsplit('/', 1)[-1]}, skipped")
            return None
        except (OSError, RootFSError) as e:
            warnings.append(f"/{meta}: not read: {e}")
            return None
        from packaging.metadata import parse_email  # only for roots with Python packages

        raw, _unparsed = parse_email(data)
        name, version = raw.get("name"), raw.get("version")
        if not name or not version:
            guess = _name_version_from(path.rsplit("/", 1)[-1])
            if guess is None:
                warnings.append(f"/{meta}: no Name or Version, skipped")
                return None
            warnings.append(f"/{meta}: no Name or Version; taken from the directory name")
            name, version = name or guess[0], version or guess[1]
        name = canonicalize_name(name.strip())
        version = version.strip()
        return Package(type="pypi", name=name, version=version, path=path,
                       purl=PackageURL(type="pypi", name=name, version=version).to_string())
