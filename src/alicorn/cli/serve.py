"""``alicorn serve`` (the long-running service) and ``alicorn watch`` (what it watches).

Text from feeds and URLs is printed with ``click.echo``, never through rich markup.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from alicorn.errors import EXIT_FAILED

__all__ = ["serve", "watch"]


def _settings() -> Any:
    from alicorn.config import load_settings

    return load_settings()


@click.command("serve")
@click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between two looks at the watched repositories and feeds.")
@click.option("--once", is_flag=True,
              help="Look once, work until nothing is left to do, then exit.")
@click.option("--dry-run", is_flag=True,
              help="Watch and plan, print the plan; build nothing, write no events (the "
                   "advisories read are stored, as `alicorn advisories import` would).")
@click.option("--no-watch", is_flag=True,
              help="Do not poll repositories or feeds (advisories come from `alicorn "
                   "advisories import`).")
@click.option("--idle-exit", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Exit after this many seconds without activity.")
@click.option("--detach", is_flag=True,
              help="Run in the background (log: $ALICORN_HOME/run/worker.log; "
                   "`alicorn down` stops it).")
@click.option("--listen", metavar="HOST:PORT",
              help="Where the HTTP API and the pages answer (default: `alicorn api config "
                   "listen`, 127.0.0.1:8440).")
@click.option("--no-api", is_flag=True, help="Serve no HTTP API or pages.")
@click.option("--api-only", is_flag=True,
              help="Serve only the HTTP API and the pages (no builds, no watching), e.g. "
                   "beside the worker a build started; with --detach in the background "
                   "(log: $ALICORN_HOME/run/api.log).")
def serve(interval: float, once: bool, dry_run: bool, no_watch: bool,
          idle_exit: float | None, detach: bool, listen: str | None, no_api: bool,
          api_only: bool) -> None:
    """Run the rebuild service: watch the images' repositories and the watched feeds, turn
    new security advisories into events, rebuild, test, gate and publish the affected images,
    and run queued builds; and serve the HTTP API and the pages (builds, provenance, logs,
    advisories, events, modules) on 127.0.0.1:8440.  One service per ALICORN_HOME; SIGTERM
    stops it.

    With the Celery backend (ALICORN_QUEUE=celery) the builds run on `alicorn worker` hosts:
    the service watches, runs the rounds (one at a time across the cluster) that send the
    rebuilds to the broker, and reaps dead workers' builds; --once waits until every rebuild
    has ended."""
    settings = _settings()
    if api_only and no_api:
        from alicorn.errors import BadInput

        raise BadInput("--api-only and --no-api contradict each other")
    if api_only:
        from alicorn.web.server import ApiServer

        server = ApiServer.for_home(settings, listen=listen)
        if detach:
            pid = server.spawn()
            click.echo(f"alicorn API and pages on {server.url} (pid {pid}; log: "
                       f"{settings.run_dir / 'api.log'}; `alicorn down` stops it)")
            return
        click.echo(f"alicorn API and pages on {server.url} (anonymous reads "
                   f"{'on' if server.config.anonymous_read else 'off'})", err=True)
        server.run()
        return
    if detach:
        from alicorn import daemon
        from alicorn.worker.local import lock_holder, start_service, worker_running

        if once or dry_run or no_watch:
            from alicorn.errors import BadInput

            raise BadInput("--detach runs the full service; it cannot be combined with "
                           "--once, --dry-run or --no-watch")
        # Held lock: running; a live pid in the pid file: starting (not locked yet).
        held = worker_running(settings)
        running = (lock_holder(settings) if held else None) or daemon.read_pid(
            settings.run_dir / "worker.pid")
        if held or running:
            click.echo(f"the alicorn service is already running for {settings.home}"
                       + (f" (pid {running})" if running else "")
                       + "; `alicorn down` stops it", err=True)
            sys.exit(EXIT_FAILED)
        pid = start_service(settings, idle_exit=idle_exit, interval=interval,
                            api=not no_api, listen=listen)
        click.echo(f"alicorn service started (pid {pid}); log: "
                   f"{settings.run_dir / 'worker.log'}")
        return
    from alicorn.events.service import serve as run

    api = None
    if not dry_run:
        from alicorn.worker.local import lock_holder, worker_running

        if worker_running(settings):
            holder = lock_holder(settings)
            click.echo(f"another alicorn service (or worker) is running for {settings.home}"
                       + (f" (pid {holder})" if holder else "") + ": a build starts one "
                       "without the API, which exits after 15 idle minutes. `alicorn serve "
                       "--api-only --detach` serves the pages and the API beside it; `alicorn "
                       "down` stops it, then `alicorn serve` runs both.", err=True)
            sys.exit(EXIT_FAILED)
    if not (no_api or once or dry_run):
        from alicorn.web.server import ApiServer

        api = ApiServer.for_home(settings, listen=listen)
        api.start()
        click.echo(f"alicorn API and pages on {api.url} (anonymous reads "
                   f"{'on' if api.config.anonymous_read else 'off'})", err=True)
    try:
        code = run(settings, interval=interval, once=once, dry_run=dry_run,
                   watch=not no_watch, idle_exit=idle_exit)
    finally:
        if api is not None:
            api.stop()
    if code:
        sys.exit(code)


@click.group("watch")
def watch() -> None:
    """What the service watches: the images' repositories (found by itself) and the feeds,
    directories and URLs added here."""


@watch.command("add")
@click.argument("location")
@click.option("--json", "as_json", is_flag=True, help="The source as a JSON object.")
def watch_add(location: str, as_json: bool) -> None:
    """Watch LOCATION: a feed file, a directory of feeds, an RPM repository (directory or
    URL), a feed URL, or a Debian suite as MIRROR/dists/SUITE."""
    from alicorn.events.watch import Watcher

    source = Watcher(_settings()).add(location)
    if as_json:
        click.echo(json.dumps(source.to_json(), sort_keys=True))
    else:
        click.echo(f"watching {source.url} ({source.kind})")


@watch.command("remove")
@click.argument("location")
def watch_remove(location: str) -> None:
    """Stop watching LOCATION (as added, its URL, or its id from `alicorn watch list`)."""
    from alicorn.events.watch import Watcher

    source = Watcher(_settings()).remove(location)
    click.echo(f"no longer watching {source.url}")


@watch.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
def watch_list(as_json: bool) -> None:
    """Every watched source: kind, origin, last digest, when it was checked and changed, and
    its error."""
    from alicorn.events.watch import Watcher

    watcher = Watcher(_settings())
    watcher.sync()
    sources = watcher.sources()
    if as_json:
        click.echo(json.dumps([s.to_json() for s in sources], indent=2, sort_keys=True))
        return
    if not sources:
        click.echo("nothing is watched (no image built yet; `alicorn watch add` adds feeds)",
                   err=True)
    for s in sources:
        def stamp(value: Any) -> str:
            return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"
        click.echo("\t".join([str(s.id), s.kind, s.origin, s.url,
                              (s.digest or "-")[:19], f"checked {stamp(s.checked_at)}",
                              f"changed {stamp(s.changed_at)}"])
                   + (f"\terror: {s.error}" if s.error else ""))


@watch.command("check")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source.")
@click.option("--dry-run", is_flag=True,
              help="Import what changed but write no events and record nothing.")
def watch_check(as_json: bool, dry_run: bool) -> None:
    """Look at every watched source once, import what changed, and print it.  Exits 1 when a
    source could not be checked."""
    from alicorn.events.watch import Watcher

    report = Watcher(_settings()).poll(record=not dry_run)
    for url in report.added_sources:
        if not as_json:
            click.echo(f"watch {url}: watching (an image's recipe uses it)")
    for source in report.sources:
        if as_json:
            click.echo(json.dumps(source.to_json(), sort_keys=True))
        else:
            click.echo(source.line())
    if not report.sources and not as_json:
        click.echo("nothing is watched (no image built yet; `alicorn watch add` adds feeds)",
                   err=True)
    if any(s.error for s in report.sources):
        sys.exit(EXIT_FAILED)
