"""``alicorn cluster``: a multi-host setup on one machine (PostgreSQL, Redis, a registry,
worker processes), for trying the Celery backend and for tests.

CONTRACT (implemented by the compose work of issue 8).
"""

from __future__ import annotations

import click


@click.group()
def cluster() -> None:
    """Start, inspect and stop a Celery cluster on this machine (docs/scale-out.md)."""
