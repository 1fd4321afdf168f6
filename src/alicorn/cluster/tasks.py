"""The Celery application: builds (and, later in this module, scans and rebuild rounds) as
tasks.

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

from alicorn.cluster.config import SERVICE_QUEUE, QueueConfig, load_queue_config
from alicorn.config import Settings, load_settings

BUILD_TASK = "alicorn.build"

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


def worker_identity() -> str:
    """``host:pid`` of the process running a task (a pool process)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _register(app: Celery, settings: Settings, config: QueueConfig) -> None:
    @app.task(name=BUILD_TASK, bind=True, ignore_result=False)  # type: ignore[untyped-decorator]
    def build(self: Any, build_id: str) -> dict[str, Any]:
        from alicorn.worker.run import build_task
        return build_task(load_settings(settings.home), config, build_id, worker_identity())
