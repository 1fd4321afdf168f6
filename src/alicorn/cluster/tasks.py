"""The Celery application: builds, scans and rebuild rounds as tasks.

Each task runs the very function the embedded default runs (``alicorn.worker.run.build_task``,
``alicorn.cli.scan.run_scan``, ``alicorn.events.runner.tick``); only where it runs differs.
Scans and rounds go to the service queue; their JSON answers come back through the result
backend (the database, ``db+`` + its URL).  An :class:`~alicorn.errors.Error` raised by the
work comes back as itself (class, message, where, hint) through :func:`call`.

A message carries only a build's id; the database says what to build and whether it still
needs building.  Settings that make a worker killed mid-build lose nothing:

- ``task_acks_late``: a message is acknowledged when its task has finished, not when it
  started, so a worker that dies leaves it unacknowledged and the broker hands it out again;
- ``task_reject_on_worker_lost``: a pool process killed mid-task puts its message back at once;
- ``worker_prefetch_multiplier`` 1: a busy worker holds no messages another could be running;
- Redis' ``visibility_timeout``: an unacknowledged message is handed out again after it
  (RabbitMQ does so when the consumer's connection closes).

A redelivered message is harmless: the task claims the build with one conditional UPDATE, and
a build that is not queued any more is left alone (its running worker, the reaper or its
end own it).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import Celery

from alicorn import errors
from alicorn.cluster.config import (
    CAPABILITIES,
    SERVICE_QUEUE,
    QueueConfig,
    load_queue_config,
    machine_arch,
    queue_name,
)
from alicorn.config import Settings, load_settings

BUILD_TASK = "alicorn.build"
SCAN_TASK = "alicorn.scan"
TICK_TASK = "alicorn.tick"
# The worker's capabilities and architecture, as ``alicorn worker`` set them (the conf of its
# application: the pool processes it forks inherit them).
CAPABILITIES_CONF = "alicorn_capabilities"
ARCH_CONF = "alicorn_arch"

_apps: dict[tuple[str, str], Celery] = {}


def celery_app(settings: Settings, config: QueueConfig | None = None) -> Celery:
    """The Celery application of ``settings`` (one per broker and database)."""
    config = config or load_queue_config(settings)
    assert config.broker is not None
    key = (config.broker, settings.database_url)
    if key in _apps:
        return _apps[key]
    app = Celery("alicorn", broker=config.broker, backend=config.result_url(settings),
                 set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_default_queue=SERVICE_QUEUE,
        task_track_started=True,
        result_extended=True,
        broker_connection_retry_on_startup=True,
        # A lost worker's message comes back after the lease (and the reaper has failed or
        # retried its build by then, so the redelivered task finds nothing to do).
        broker_transport_options={"visibility_timeout": int(max(config.lease * 2, 30))},
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    _register(app, settings, config)
    _apps[key] = app
    return app


def send(app: Celery, task: str, args: list[Any], *, queue: str) -> None:
    """Publish ``task(*args)`` to ``queue``, failing fast (no retries) when the broker is
    unreachable, so that the submitter can roll back and say so."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        app.send_task(task, args=args, queue=queue, connection=conn, retry=False)


def call(app: Celery, task: str, args: list[Any], *, what: str, timeout: float,
         queue: str = SERVICE_QUEUE) -> Any:
    """Run ``task(*args)`` on a worker of ``queue`` and return its answer, within ``timeout``
    seconds.  A broker that cannot be reached, or no worker answering in time, is
    :class:`~alicorn.errors.Unavailable`; an Alicorn error the work raised is raised here."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from alicorn.cluster.dispatch import _redacted

    broker = _redacted(app.conf.broker_url)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            result = app.send_task(task, args=args, queue=queue, connection=conn,
                                   retry=False)
    except Exception as e:  # kombu's and redis-py's many connection errors
        raise errors.Unavailable(
            f"cannot run {what}: the broker {broker} cannot be reached "
            f"({type(e).__name__}: {e})",
            hint="start the broker (or check ALICORN_BROKER_URL) and try again") from e
    try:
        envelope = result.get(timeout=timeout, propagate=False)
    except CeleryTimeout:
        result.revoke()
        raise errors.Unavailable(
            f"no worker ran {what} within {timeout:g} s (task {result.id} on {queue})",
            hint=f"start an `alicorn worker` (every worker listens to {SERVICE_QUEUE}), "
                 "or check the workers' logs") from None
    if result.failed() or not isinstance(envelope, dict):
        raise errors.Error(f"{what} failed in the worker: {envelope!r}",
                           hint="the worker's log has the traceback")
    if "error" in envelope:
        raise _error_from(envelope["error"])
    return envelope.get("ok")


def _error_to(e: errors.Error) -> dict[str, Any]:
    return {"class": type(e).__name__, "bases": [c.__name__ for c in type(e).__mro__],
            "message": e.message, "where": e.where, "hint": e.hint}


def _error_from(data: dict[str, Any]) -> errors.Error:
    """The error a task raised: its own class when alicorn.errors has it, else the nearest
    base that module has (an InventoryError comes back as the BadInput it is)."""
    for name in [data.get("class"), *(data.get("bases") or [])]:
        cls = getattr(errors, str(name), None)
        if isinstance(cls, type) and issubclass(cls, errors.Error) and \
                cls.__init__ is errors.Error.__init__:
            return cls(str(data.get("message")), where=data.get("where"),
                       hint=data.get("hint"))
    return errors.Error(str(data.get("message")), where=data.get("where"),
                        hint=data.get("hint"))


def _answer(work: Any) -> dict[str, Any]:
    """The envelope of a task's answer: ``{"ok": value}``, or ``{"error": ...}`` for an
    Alicorn error (a bug raises, and Celery records its traceback)."""
    try:
        return {"ok": work()}
    except errors.Error as e:
        return {"error": _error_to(e)}


def worker_identity() -> str:
    """``host:pid`` of the process running a task (a pool process)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def forward_to(settings: Settings, app: Celery, build_id: str) -> str | None:
    """The queue a build this worker cannot build must go to, or None (it can, or its needs
    are not known yet).  The capabilities are the worker's (``alicorn worker --capability``);
    a build of a recipe file names its kind, a build from git is fetched (as the pipeline
    will) into a temporary directory to read its recipe's distribution."""
    mine = set(app.conf.get(CAPABILITIES_CONF) or ())
    if not mine or mine >= {"deb", "rpm"}:
        return None
    from alicorn.cluster.dispatch import capability_of
    from alicorn.store.builds import QUEUED, BuildStore

    store = BuildStore(settings.database_url)
    row = store.get(build_id)
    if row.state != QUEUED:
        return None
    need = capability_of(row)
    if need == "any" and row.source_kind == "git":
        need = _git_capability(settings, row.source_url, row.source_ref, row.recipe_path)
    if need == "any" or need in mine:
        return None
    arch = (row.options or {}).get("arch")
    return queue_name(need, arch if isinstance(arch, str) else
                      app.conf.get(ARCH_CONF) or machine_arch())


def _git_capability(settings: Settings, url: str | None, ref: str | None,
                    path: str) -> str:
    """What the recipe at ``path`` of ``url`` at ``ref`` needs: "deb", "rpm", or "any" when
    it cannot be told here (the build then fails where it runs, with the pipeline's error)."""
    import tempfile
    from pathlib import Path

    from alicorn.cluster.dispatch import capability_of
    from alicorn.source import git
    from alicorn.store.builds import Submission

    if not url or not ref:
        return "any"
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="route-", dir=settings.work_dir) as tmp:
        try:
            checkout = git.fetch(url, ref, Path(tmp) / "src")
            recipe = (checkout.path / path).resolve()
            if checkout.path.resolve() not in recipe.parents:
                return "any"
            text = recipe.read_text()
        except (errors.Error, OSError, UnicodeDecodeError):
            return "any"
    kind = capability_of(Submission(argv=[], source_kind="file", recipe_path=path,
                                    recipe_content=text))
    return kind if kind in CAPABILITIES else "any"


def _register(app: Celery, settings: Settings, config: QueueConfig) -> None:
    @app.task(name=BUILD_TASK, bind=True, ignore_result=False)  # type: ignore[untyped-decorator]
    def build(self: Any, build_id: str) -> dict[str, Any]:
        from alicorn.errors import NotFound
        from alicorn.store.builds import BuildStore
        from alicorn.worker.run import build_task

        here = load_settings(settings.home)
        try:
            # Sent just before the submitter's transaction commits: wait for the row.
            BuildStore(here.database_url).wait_for(build_id)
        except NotFound:
            # The submission was rolled back (its row never committed): nothing to build.
            return {"build_id": build_id, "ran": False, "missing": True}
        queue = forward_to(here, self.app, build_id)
        if queue is not None:
            # Not ours to claim: sent on to the builders that can build it.
            send(self.app, BUILD_TASK, [build_id], queue=queue)
            BuildStore(here.database_url).mark_dispatched(build_id, queue)
            return {"build_id": build_id, "ran": False, "forwarded": queue}
        return build_task(here, config, build_id, worker_identity())

    @app.task(name=SCAN_TASK, ignore_result=False)  # type: ignore[untyped-decorator]
    def scan(request: dict[str, Any]) -> dict[str, Any]:
        from alicorn.cli.scan import ScanRequest, run_scan

        return _answer(lambda: run_scan(load_settings(settings.home),
                                        ScanRequest.from_json(request)).to_json())

    @app.task(name=TICK_TASK, ignore_result=False)  # type: ignore[untyped-decorator]
    def tick() -> dict[str, Any]:
        from alicorn.events.runner import tick as run_tick

        return _answer(lambda: run_tick(load_settings(settings.home)).to_json())
