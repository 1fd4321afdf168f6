"""Only images that verify under the host's policy run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alicorn.config import Settings
from alicorn.rollout.model import TrustedImage


def resolve(settings: Settings, ref: str, *, repository: str | None = None) -> tuple[str, str]:
    """``(repository, digest)`` for ``ref``: ``addr/name@sha256:…``, ``addr/name:tag``,
    ``name:tag`` or ``name`` (the local registry), ``sha256:…`` (in ``repository``, or of a
    build in this home) or a build id.  NoSuchImage when the registry has no such image."""
    raise NotImplementedError


def verify_image(settings: Settings, ref: str, *, repository: str | None = None,
                 keys: Sequence[Path] = ()) -> TrustedImage:
    """Resolve ``ref`` and check its signature and provenance; UntrustedImage saying which
    link failed.  ``keys``: trust only these PEM public keys instead of the host's."""
    raise NotImplementedError
