"""``alicorn advisories``: import feeds into the advisory store, export OVAL and OSV."""

from __future__ import annotations

import click


@click.group("advisories")
def advisories() -> None:
    """Security advisories: import feeds, list them, export OVAL and OSV."""
