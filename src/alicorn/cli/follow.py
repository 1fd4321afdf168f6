"""Showing a build's progress while the worker runs it."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from alicorn.cluster.config import load_queue_config
from alicorn.config import Settings
from alicorn.errors import Error
from alicorn.store.builds import FINAL, QUEUED, RUNNING, BuildStore
from alicorn.store.models import BuildRow
from alicorn.worker.local import ensure_worker, reap, worker_running


def _events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, offset + end


def follow(settings: Settings, store: BuildStore, build_id: str, *, json_lines: bool,
           timeout: float | None = None) -> BuildRow:
    """Render progress until the build is final; returns its final record.

    In a cluster the build runs on another host: its progress.jsonl comes from the shared
    store (:func:`alicorn.cluster.files.materialize`), and a build retried as another
    attempt (its worker died) is followed into that attempt."""
    from alicorn.cluster import files

    path = settings.build_dir(build_id) / "progress.jsonl"
    # The embedded default: this host's worker runs the build, and is started (or found dead)
    # from here; the cluster's workers and reaper are elsewhere.
    local = not load_queue_config(settings).celery
    err = Console(stderr=True)
    fancy = err.is_terminal and not json_lines
    offset = 0
    started = time.monotonic()
    last_check = 0.0
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err,
                        transient=False) if fancy else None
    task = None
    if progress:
        progress.start()
        task = progress.add_task(f"build {build_id}: queued", total=None, detail="")
    try:
        while True:
            if not local:
                with contextlib.suppress(Error):
                    files.materialize(settings, build_id)
            events, offset = _events(path, offset)
            for ev in events:
                if json_lines:
                    print(json.dumps({"build_id": build_id, **ev}, sort_keys=True), flush=True)
                elif progress is not None and task is not None:
                    if ev["event"] == "step":
                        progress.update(task, description=f"build {build_id}: {ev['name']}",
                                        completed=0, total=ev.get("total"), detail="")
                    elif ev["event"] == "progress":
                        progress.update(task, completed=ev["done"], total=ev.get("total"),
                                        detail=ev.get("detail") or "")
                    elif ev["event"] == "message":
                        progress.console.print(f"  {ev['text']}")
                else:
                    if ev["event"] == "step":
                        print(f"build {build_id}: {ev['name']}", file=sys.stderr, flush=True)
                    elif ev["event"] == "message":
                        print(f"  {ev['text']}", file=sys.stderr, flush=True)
            now = time.monotonic()
            if now - last_check > 0.5 or any(e["event"] == "finish" for e in events):
                last_check = now
                row = store.get(build_id)
                if row.state in FINAL and row.retried_as is not None:
                    # Another attempt runs the build now: follow that one.
                    if progress is not None and task is not None:
                        progress.console.print(f"  {row.error or 'retried'}")
                    elif not json_lines:
                        print(f"  {row.error or 'retried'}", file=sys.stderr, flush=True)
                    build_id = row.retried_as
                    path = settings.build_dir(build_id) / "progress.jsonl"
                    offset = 0
                    continue
                if row.state in FINAL and (local or files.settled(settings, row)):
                    if not local:
                        with contextlib.suppress(Error):
                            files.materialize(settings, build_id)
                    events, offset = _events(path, offset)
                    return row
                if local and row.state == QUEUED:
                    ensure_worker(settings)
                elif local and row.state == RUNNING and not worker_running(settings):
                    # The worker died mid-build: record that rather than wait for ever.
                    reap(settings, store)
            if timeout is not None and now - started > timeout:
                return store.get(build_id)
            time.sleep(0.1)
    finally:
        if progress:
            progress.stop()


def result_json(row: BuildRow, settings: Settings) -> dict[str, Any]:
    return {
        "build_id": row.id,
        "state": row.state,
        "digest": row.digest,
        "image": row.image_ref,
        "error": row.error,
        "recipe": {"path": row.recipe_path, "name": row.recipe_name, "digest": row.recipe_digest},
        "source": ({"url": row.source_url, "ref": row.source_ref, "commit": row.source_commit}
                   if row.source_kind == "git" else None),
        "cached_from": row.cached_from,
        "log": str(settings.build_dir(row.id) / "build.log"),
        "log_digest": row.log_digest,
        "packages": len(row.packages) if row.state in FINAL else None,
        # The checks before publishing: {"fixed", "tests", "gate": passed|failed|skipped|None,
        # "tests_detail", "gate_summary"}; and why the rebuild service asked for the build.
        "checks": row.checks,
        "trigger": row.trigger,
        "base_digest": row.base_digest,   # a layered image's base
        # Who ran it, and which attempt of its submission it is (a worker lost mid-build
        # fails its attempt, which names the next one).
        "worker": row.worker,
        "attempt": row.attempt or 1,
        "retry_of": row.retry_of,
        "retried_as": row.retried_as,
        "queue": row.queue,
    }
