"""Submitting work: the one way builds are queued, whichever backend runs them.

:func:`dispatcher_for` gives the embedded default's :class:`LocalDispatcher` (the row, then a
local worker is started unless one runs) or, with ``queue.backend`` "celery", the
:class:`CeleryDispatcher`: the row and the broker message in one transaction, so a broker that
is down at submit time is a clear error (:class:`~alicorn.errors.Unavailable`) and nothing is
recorded as submitted.
"""

from __future__ import annotations

from typing import Protocol

from alicorn.cluster.config import QueueConfig, load_queue_config, queue_name
from alicorn.config import Settings
from alicorn.errors import Error, Unavailable
from alicorn.store.builds import BuildStore, Submission
from alicorn.store.models import BuildRow


class Dispatcher(Protocol):
    def submit(self, sub: Submission) -> BuildRow:
        """Record ``sub`` as a queued build and make sure a worker will hear of it."""

    def redispatch(self, row: BuildRow) -> None:
        """Tell the workers again about the queued build ``row`` (a lost message, a retry)."""


def capability_of(sub: Submission | BuildRow) -> str:
    """What a builder needs for this build: "deb" or "rpm" when the recipe's text is at hand
    (a recipe file), the submission's ``options.capability`` when it names one, else "any"
    (a build from git: the worker that takes it reads the recipe and sends it on to the right
    queue when it cannot build it itself)."""
    options = (sub.options or {})
    named = options.get("capability")
    if isinstance(named, str) and named:
        return named
    content = sub.recipe_content
    if content:
        import yaml
        try:
            data = yaml.safe_load(content)
            dist = data.get("distribution") if isinstance(data, dict) else None
            kind = dist.get("type") if isinstance(dist, dict) else None
        except yaml.YAMLError:
            kind = None
        if isinstance(kind, str):
            return "deb" if kind == "debian" else "rpm" if kind == "rpm" else "any"
    return "any"


class LocalDispatcher:
    """The embedded default: the database row; the local worker (started unless running)
    polls for it."""

    def __init__(self, settings: Settings, store: BuildStore):
        self.settings = settings
        self.store = store

    def submit(self, sub: Submission) -> BuildRow:
        row = self.store.submit(sub)
        self.redispatch(row)
        return row

    def redispatch(self, row: BuildRow) -> None:
        from alicorn.worker.local import ensure_worker
        ensure_worker(self.settings)


class CeleryDispatcher:
    """Builds as Celery tasks: ``alicorn.build(build_id)`` on the queue of the build's
    capability and architecture (:func:`~alicorn.cluster.config.queue_name`)."""

    def __init__(self, settings: Settings, store: BuildStore, config: QueueConfig):
        from alicorn.cluster.tasks import celery_app
        self.settings = settings
        self.store = store
        self.config = config
        self.app = celery_app(settings, config)

    def queue_of(self, sub: Submission | BuildRow) -> str:
        arch = (sub.options or {}).get("arch")
        return queue_name(capability_of(sub), arch if isinstance(arch, str) else None)

    def _send(self, row: BuildRow, queue: str) -> None:
        from alicorn.cluster.tasks import BUILD_TASK, send
        try:
            send(self.app, BUILD_TASK, [row.id], queue=queue)
        except Error:
            raise
        except Exception as e:  # kombu's and redis-py's many connection errors
            raise Unavailable(
                f"cannot queue the build: the broker {_redacted(self.config.broker)} "
                f"cannot be reached ({type(e).__name__}: {e}); nothing was recorded",
                hint="start the broker (or check ALICORN_BROKER_URL) and submit again") from e

    def submit(self, sub: Submission) -> BuildRow:
        queue = self.queue_of(sub)
        return self.store.submit(sub, queue=queue, publish=lambda row: self._send(row, queue))

    def redispatch(self, row: BuildRow) -> None:
        queue = row.queue or self.queue_of(row)
        self._send(row, queue)
        self.store.mark_dispatched(row.id, queue)


def _redacted(url: str | None) -> str:
    """A broker URL without its password."""
    if not url:
        return "(none)"
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port
                                                              else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def dispatcher_for(settings: Settings, store: BuildStore) -> Dispatcher:
    config = load_queue_config(settings)
    if config.celery:
        return CeleryDispatcher(settings, store, config)
    return LocalDispatcher(settings, store)
