"""The schema revision this Alembic-managed database code expects, without SQLAlchemy.

Readers that bypass SQLAlchemy (:mod:`alicorn.advisories.reader`) check a database is at
this revision before trusting its tables; anything else goes through :mod:`alicorn.store.db`,
which migrates it.
"""

from __future__ import annotations

from importlib import resources


def head_revision() -> str:
    """The newest revision shipped: the file name prefix of the last migration."""
    versions = resources.files("alicorn.store").joinpath("migrations", "versions")
    names = sorted(p.name for p in versions.iterdir()
                   if p.name.endswith(".py") and p.name[0].isdigit())
    return names[-1].split("_", 1)[0]
