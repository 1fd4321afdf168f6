"""A build's files in the shared database, for readers on other hosts than its worker.

In the embedded default a build's files (``builds/ID/``: build.log, progress.jsonl, SBOMs,
provenance, record, ...) are read where the worker wrote them.  With the Celery backend the
worker is elsewhere, so it copies them into ``build_files`` (migration 0009) while the build
runs (:func:`live_sync`, on every heartbeat) and seals them when it ends (:func:`seal_files`);
readers call :func:`materialize` to get them under their own ``builds/ID/``.

CONTRACT (implemented by the shared-store work of issue 8): all three are no-ops when the
queue backend is local.
"""

from __future__ import annotations

from pathlib import Path

from alicorn.config import Settings
from alicorn.store.builds import BuildStore


def live_sync(settings: Settings, store: BuildStore, build_id: str) -> None:
    """Copy what grew of the running build's files into the database (unsealed rows)."""


def seal_files(settings: Settings, store: BuildStore, build_id: str) -> None:
    """Copy the ended build's files into the database, sealed with their SHA-256."""


def materialize(settings: Settings, build_id: str) -> Path:
    """``settings.build_dir(build_id)``, with the build's files from the database written
    there (verified against their SHA-256) when this host does not hold them; returns it."""
    return settings.build_dir(build_id)
