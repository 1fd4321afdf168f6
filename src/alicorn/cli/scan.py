"""``alicorn scan``: what in a target needs a security update."""

from __future__ import annotations

import click


@click.command("scan")
@click.argument("target")
def scan(target: str) -> None:
    """List the installed packages of TARGET that advisories apply to."""
    raise click.UsageError("alicorn scan is not wired yet")
