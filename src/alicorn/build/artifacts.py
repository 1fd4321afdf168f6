"""Non-distribution artifacts: Python wheels pinned by sha256, installed with pypa/installer."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlparse

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from alicorn.compose.fetch import absolute_url, fetch_bytes
from alicorn.compose.interface import Package
from alicorn.errors import ComposeError
from alicorn.recipe import Artifact, Recipe

MAX_WHEEL_BYTES = 512 << 20


def _site_packages(recipe: Recipe, rootfs: Path) -> str:
    """Where wheels go when the recipe names no target: the image's local site directory."""
    versions = sorted(p.name for p in (rootfs / "usr/lib").glob("python3.*")
                      if re.fullmatch(r"python3\.\d+", p.name))
    if not versions:
        raise ComposeError("the image has no Python (no /usr/lib/python3.X) to install wheels "
                           "into", where=recipe.file,
                           hint="add python3 to packages, or give the artifact a target")
    leaf = "dist-packages" if recipe.distribution == "debian" else "site-packages"
    return f"/usr/local/lib/{versions[-1]}/{leaf}"


def fetch_artifact(recipe: Recipe, artifact: Artifact, dest_dir: Path) -> Path:
    """Download ``artifact`` into ``dest_dir`` and check its pinned sha256."""
    url = absolute_url(artifact.url, recipe.base_dir)
    name = Path(urlparse(url).path).name
    data = fetch_bytes(url, what=f"artifact {name}", limit=MAX_WHEEL_BYTES, timeout=120)
    actual = hashlib.sha256(data).hexdigest()
    if actual != artifact.sha256:
        raise ComposeError(f"artifact {name} has sha256 {actual}, but the recipe pins "
                           f"{artifact.sha256}", where=recipe.file,
                           hint="the file changed since it was pinned; check where it came from")
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / name
    path.write_bytes(data)
    return path


def install_artifacts(recipe: Recipe, rootfs: Path, dest_dir: Path) -> list[Package]:
    """Install every artifact of the recipe into ``rootfs``; returns them as packages."""
    out = []
    for artifact in recipe.artifacts:
        path = fetch_artifact(recipe, artifact, dest_dir)
        try:
            name, version, _build, _tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename as e:
            raise ComposeError(f"artifact {path.name} is not a wheel file name: {e}",
                               where=recipe.file) from e
        target = artifact.target or _site_packages(recipe, rootfs)
        scheme = {"purelib": target, "platlib": target, "headers": "/usr/local/include",
                  "scripts": "/usr/local/bin", "data": "/usr/local"}
        destination = SchemeDictionaryDestination(
            scheme, interpreter="/usr/bin/python3", script_kind="posix",
            bytecode_optimization_levels=(), destdir=str(rootfs))
        try:
            with WheelFile.open(path) as source:
                install(source, destination, additional_metadata={"INSTALLER": b"alicorn\n"})
        except Exception as e:  # installer raises plain exceptions for bad wheels
            raise ComposeError(f"cannot install wheel {path.name}: {e}", where=recipe.file) from e
        out.append(Package(type="pypi", name=str(canonicalize_name(name)), version=str(version),
                           checksum="sha256:" + artifact.sha256,
                           purl=f"pkg:pypi/{canonicalize_name(name)}@{version}"))
    return out
