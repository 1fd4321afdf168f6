"""The composer extension point.

A composer knows one kind of distribution (Debian with mmdebstrap, RPM with dnf --installroot).
It reports the state of its repositories before composing (for the build's input key), composes
a root filesystem into a directory, and lists the packages it installed.  Adding a distribution is
a new module and a line in :func:`composer_for`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from alicorn.monitor import Monitor
from alicorn.proc import BuildLog
from alicorn.recipe import Recipe


@dataclass(frozen=True, order=True)
class Package:
    """One installed package, as the image's SBOM and the advisory matcher see it."""

    type: str                    # "deb", "rpm", "pypi"
    name: str
    version: str                 # dpkg version / RPM [epoch:]version-release / PEP 440
    arch: str = ""
    source: str | None = None    # Debian source package / RPM source rpm
    checksum: str | None = None  # sha256 of the package file, "sha256:<hex>", when known
    purl: str = ""


@dataclass(frozen=True)
class RepoState:
    """What one repository looked like when the build's inputs were resolved."""

    name: str
    url: str
    metadata_digest: str         # sha256:<hex> of InRelease / repomd.xml


@dataclass
class BuildContext:
    """What a composer may use during one build."""

    log: BuildLog
    monitor: Monitor
    workdir: Path                # private to this build (mode 0700)
    cache_dir: Path              # shared package cache for this composer kind
    source_date_epoch: int


class Composer(ABC):
    kind: ClassVar[str]

    def __init__(self, recipe: Recipe, ctx: BuildContext):
        self.recipe = recipe
        self.ctx = ctx

    @abstractmethod
    def repo_states(self) -> list[RepoState]:
        """Fetch each repository's top metadata and digest it; raise ComposeError naming the
        repository when one cannot be reached."""

    @abstractmethod
    def compose(self, rootfs: Path) -> None:
        """Install the recipe's packages into the empty directory ``rootfs``."""

    @abstractmethod
    def packages(self, rootfs: Path) -> list[Package]:
        """The packages installed in ``rootfs``, sorted."""

    def floor_argv(self, rootfs: Path) -> list[str]:
        """The bare tool invocation that composes the same root (for the benchmark's floor)."""
        raise NotImplementedError


def composer_for(recipe: Recipe, ctx: BuildContext) -> Composer:
    if recipe.distribution == "debian":
        from alicorn.compose.debian import DebianComposer
        return DebianComposer(recipe, ctx)
    if recipe.distribution == "rpm":
        from alicorn.compose.rpm import RpmComposer
        return RpmComposer(recipe, ctx)
    raise ValueError(f"no composer for {recipe.distribution!r}")
