"""``alicorn cluster``: a multi-host setup on one machine (PostgreSQL, Redis or RabbitMQ, a
registry, an API host, worker processes), for trying the Celery backend and for tests.

Every host has an ALICORN_HOME of its own under ``DIR/homes``; ``DIR/cluster.json`` records the
processes, ports and addresses, ``DIR/env`` the shell lines that point any other home at the
cluster (``. DIR/env; alicorn build ...`` submits to it).  The work is in
:mod:`alicorn.cluster.compose`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from alicorn.errors import EXIT_FAILED, BadInput

_DIR_HELP = ("The cluster's directory (default: $ALICORN_CLUSTER_DIR, which DIR/env sets, "
             "else $ALICORN_HOME/cluster).")


def _directory(value: Path | None) -> Path:
    if value is not None:
        return value.absolute()
    env = os.environ.get("ALICORN_CLUSTER_DIR")
    if env:
        return Path(env).absolute()
    from alicorn.config import default_home
    return default_home() / "cluster"


def _ports(values: tuple[str, ...]) -> dict[str, int]:
    ports = {}
    for value in values:
        name, sep, port = value.partition("=")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadInput(f"--port {value!r} is not SERVICE=PORT",
                           hint="e.g. --port api=8441 --port postgres=5433")
        ports[name] = int(port)
    return ports


def _table(report: dict[str, Any]) -> str:
    lines = []
    for row in report["services"]:
        state = "up" if row["up"] else "down"
        where = row.get("url") or (f"netns {row['netns']}" if row.get("netns") else
                                   row.get("home", ""))
        lines.append(f"{row['name']:<10} {state:<5} pid {row['pid'] or '-':<8} "
                     f"port {row['port']:<6} {where}")
    return "\n".join(lines)


@click.group()
def cluster() -> None:
    """Start, inspect and stop a Celery cluster on this machine (docs/scale-out.md)."""


@cluster.command("up")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=_DIR_HELP)
@click.option("--workers", type=click.IntRange(0, 250), default=2, show_default=True,
              help="Worker processes, each with a home of its own.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 256), default=1,
              show_default=True, help="Builds each worker runs at once.")
@click.option("--netns", is_flag=True, help="Run each worker in a network namespace of its "
              "own, the services on a bridge (root; iproute2).")
@click.option("--broker", type=click.Choice(["redis", "rabbitmq"]), default="redis",
              show_default=True, help="The Celery broker to start.")
@click.option("--port", "ports", multiple=True, metavar="SERVICE=PORT",
              help="A fixed port for postgres, redis, rabbitmq, registry or api (repeatable; "
                   "default: free ones).")
def up(directory: Path | None, workers: int, concurrency: int, netns: bool, broker: str,
       ports: tuple[str, ...]) -> None:
    """Start PostgreSQL, the broker, a registry, an API host (`serve --api-only`, no signing
    key) and N `alicorn worker` processes under DIR; write DIR/cluster.json and DIR/env."""
    from alicorn.cluster import compose

    path = _directory(directory)
    state = compose.up(path, workers=workers, concurrency=concurrency, netns=netns,
                       broker=broker, ports=_ports(ports))
    click.echo(_table(compose.status(path)))
    click.echo(f"cluster up in {path} (API {state['services']['api']['url']}); "
               f"`. {path / compose.ENV_FILE}` points alicorn at it; "
               f"`alicorn cluster down --dir {path}` stops it")


@cluster.command("status")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(directory: Path | None, as_json: bool) -> None:
    """Each service and worker of the cluster: up or down (its pid runs, its port answers).
    Exits 1 when anything is down."""
    from alicorn.cluster import compose

    report = compose.status(_directory(directory))
    click.echo(json.dumps(report, indent=2, sort_keys=True) if as_json else _table(report))
    if not report["up"]:
        sys.exit(EXIT_FAILED)


@cluster.command("env")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=_DIR_HELP)
def env(directory: Path | None) -> None:
    """Print the shell lines that point alicorn at the cluster (`eval "$(alicorn cluster
    env)"`)."""
    from alicorn.cluster import compose

    path = _directory(directory)
    state = compose.read_state(path)
    if state is None or not state.get("env"):
        raise BadInput(f"no cluster was started in {path}",
                       hint=f"`alicorn cluster up --dir {path}` starts one")
    click.echo(compose.env_text(state), nl=False)


@cluster.command("down")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=_DIR_HELP)
@click.option("--remove", is_flag=True, help="Delete its data too (database, broker, homes).")
def down(directory: Path | None, remove: bool) -> None:
    """Stop the cluster: the workers first (SIGTERM, then SIGKILL after 30 s), then the API
    host, the registry, the broker and PostgreSQL; delete its network namespaces."""
    from alicorn.cluster import compose

    path = _directory(directory)
    stopped = compose.down(path, remove=remove)
    click.echo(f"stopped {', '.join(stopped)}" if stopped else
               f"nothing was running in {path}; its leftovers are cleaned up")


@cluster.command("scale")
@click.argument("workers", type=click.IntRange(0, 250))
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=_DIR_HELP)
def scale(workers: int, directory: Path | None) -> None:
    """Start or stop workers (the newest first) until WORKERS run."""
    from alicorn.cluster import compose

    path = _directory(directory)
    state = compose.scale(path, workers)
    click.echo(f"{len(state['workers'])} workers run in {path}")
