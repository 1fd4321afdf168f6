"""Frozen domain values for a validated recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alicorn.digest import Digest

DEFAULT_CONTENT_PATH = "/var/www/html"


@dataclass(frozen=True)
class Repository:
    name: str
    url: str | None          # None: Debian only, the host's mirror for the suite
    suite: str | None = None
    components: tuple[str, ...] = ("main",)
    gpgcheck: bool = True
    gpgkey: str | None = None


@dataclass(frozen=True)
class Artifact:
    type: str                # "wheel"
    url: str
    sha256: str
    target: str | None = None


@dataclass(frozen=True)
class FileSpec:
    path: str
    content: str | None = None
    source: str | None = None
    directory: bool = False
    mode: int | None = None
    owner: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class HttpCheck:
    path: str = "/"
    port: int | None = None
    status: int = 200
    contains: str | None = None
    header: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Healthcheck:
    http: HttpCheck | None = None
    command: tuple[str, ...] = ()
    interval: str = "5s"
    timeout: str = "3s"
    retries: int = 3
    start_period: str = "0s"


@dataclass(frozen=True)
class TestSpec:
    name: str
    http: HttpCheck | None = None
    command: tuple[str, ...] = ()
    exit_code: int = 0
    output_contains: str | None = None


@dataclass(frozen=True)
class BaseRef:
    """The image a layered recipe builds on: an Alicorn-built image by recipe name (its newest
    published build) or pinned by manifest digest."""

    image: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe.

    ``text`` is the file exactly as it was read; ``digest`` is the sha256 of those bytes, so the
    recipe's identity is its content.  ``base_dir`` is where relative paths are resolved.
    """

    file: str
    text: str
    data: dict[str, Any] = field(compare=False, repr=False)
    base_dir: Path
    name: str
    tag: str
    distribution: str        # "debian" | "rpm"
    release: str
    architecture: str
    variant: str | None
    exclude_docs: bool
    repositories: tuple[Repository, ...]
    packages: tuple[str, ...]
    artifacts: tuple[Artifact, ...] = ()
    files: tuple[FileSpec, ...] = ()
    user: str | None = None
    workdir: str | None = None
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[int, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    healthcheck: Healthcheck | None = None
    tests: tuple[TestSpec, ...] = ()
    content_path: str = DEFAULT_CONTENT_PATH
    base: BaseRef | None = None
    # The security gate as written (a list, all-of / any-of, or one check); parsed and
    # checked by alicorn.gate.spec.parse_gate.  None: the recipe names no gate.
    gate: Any = field(default=None, compare=False, repr=False)

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.text.encode())

    @property
    def oci_architecture(self) -> str:
        return {"x86_64": "amd64"}.get(self.architecture, self.architecture)

    def resolve(self, relative: str) -> Path:
        """A path named in the recipe, relative to the recipe's directory; stays inside it."""
        path = (self.base_dir / relative).resolve()
        base = self.base_dir.resolve()
        if path != base and base not in path.parents:
            from alicorn.errors import RecipeError
            raise RecipeError(f"path {relative!r} leaves the recipe's directory", file=self.file)
        return path
