"""Which queue runs the work: the embedded local worker, or Celery.

Read from the ``queue`` object of ``$ALICORN_HOME/config.json``, with environment overrides::

    {"queue": {"backend": "celery", "broker": "redis://db-host:6379/0",
               "lease": 60, "heartbeat": 5, "max_attempts": 2, "redispatch_after": 120}}

    ALICORN_QUEUE=local|celery   ALICORN_BROKER_URL=redis://...|amqp://...
    ALICORN_QUEUE_<KEY>=VALUE    (lease, heartbeat, max_attempts, redispatch_after, result_backend)

``backend`` "local" (the default) is the embedded worker of :mod:`alicorn.worker.local`.
"celery" sends every build to a Celery queue named by :func:`queue_name`; its state and results
live in the database ``ALICORN_DATABASE_URL`` names (PostgreSQL for several hosts), and
Celery's own task results in ``result_backend`` (default: that database, through SQLAlchemy).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, fields, replace
from typing import Any

from alicorn.config import Settings
from alicorn.errors import BadInput, StoreError

LOCAL, CELERY = "local", "celery"
BACKENDS = (LOCAL, CELERY)
# What a builder can build: a recipe's distribution kind ("deb", "rpm"); "any" is the queue
# every builder of an architecture also listens to (work that needs no particular tool).
CAPABILITIES = ("deb", "rpm", "any")


@dataclass(frozen=True)
class QueueConfig:
    backend: str = LOCAL
    broker: str | None = None
    # A running build whose worker has not written its heartbeat for ``lease`` seconds is the
    # reaper's: failed ("the worker stopped answering") and, below max_attempts, retried.
    lease: float = 60.0
    heartbeat: float = 5.0
    # Attempts of one submission (the first one included) before a dead worker's build stays
    # failed.
    max_attempts: int = 2
    # A queued build no worker claimed for this long is sent to the broker again (a message
    # lost with a broker that kept no state); claiming is idempotent, so a duplicate is harmless.
    redispatch_after: float = 120.0
    # Celery's result backend; None: "db+" + the database URL (PostgreSQL through SQLAlchemy).
    result_backend: str | None = None

    @property
    def celery(self) -> bool:
        return self.backend == CELERY

    def result_url(self, settings: Settings) -> str:
        if self.result_backend:
            return self.result_backend
        return "db+" + settings.database_url

    def check(self, where: str, sources: dict[str, str] | None = None) -> QueueConfig:
        """Refuse settings that cannot work; ``sources`` names where each setting came from
        (``ALICORN_BROKER_URL``, ``config.json queue.lease``), ``where`` the rest."""
        def at(name: str) -> str:
            return (sources or {}).get(name, where)

        if self.backend not in BACKENDS:
            raise BadInput(f"unknown queue backend {self.backend!r}", where=at("backend"),
                           hint="the backend is local or celery")
        if self.celery and not self.broker:
            raise BadInput("the celery backend needs a broker URL", where=at("backend"),
                           hint="set ALICORN_BROKER_URL=redis://HOST:6379/0 (or amqp://...)")
        if self.celery and self.broker and not self.broker.startswith(
                ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")):
            raise BadInput(f"broker URL {self.broker!r} is neither Redis nor RabbitMQ",
                           where=at("broker"),
                           hint="redis://HOST:PORT/DB or amqp://USER:PW@HOST/VHOST")
        for name in ("lease", "heartbeat", "redispatch_after"):
            if float(getattr(self, name)) <= 0:
                raise BadInput(f"queue {name} must be a positive number of seconds",
                               where=at(name))
        if self.heartbeat * 2 > self.lease:
            raise BadInput(f"the heartbeat ({self.heartbeat:g} s) must be at most half the "
                           f"lease ({self.lease:g} s)", where=at("heartbeat"))
        if self.max_attempts < 1:
            raise BadInput("queue max_attempts must be at least 1", where=at("max_attempts"))
        return self


_FLOATS = ("lease", "heartbeat", "redispatch_after")


def _coerce(key: str, value: Any, where: str) -> Any:
    try:
        if key in _FLOATS:
            return float(value)
        if key == "max_attempts":
            return int(value)
    except (TypeError, ValueError):
        raise BadInput(f"queue {key} must be a number, not {value!r}", where=where) from None
    if value is not None and not isinstance(value, str):
        raise BadInput(f"queue {key} must be a string, not {value!r}", where=where)
    return value


def load_queue_config(settings: Settings) -> QueueConfig:
    """The ``queue`` settings of this ALICORN_HOME, with the ALICORN_QUEUE* overrides."""
    path = settings.home / "config.json"
    stored: dict[str, Any] = {}
    try:
        if path.exists():
            stored = json.loads(path.read_text()).get("queue") or {}
    except (json.JSONDecodeError, AttributeError) as e:
        raise StoreError(f"config.json is not valid JSON: {e}", where=str(path)) from e
    if not isinstance(stored, dict):
        raise BadInput("the queue settings must be an object", where=f"{path} queue")
    names = {f.name for f in fields(QueueConfig)}
    config = QueueConfig()
    sources: dict[str, str] = {}
    for key, value in stored.items():
        if key not in names:
            raise BadInput(f"unknown queue setting {key!r}", where=f"{path} queue",
                           hint="known: " + ", ".join(sorted(names)))
        sources[key] = f"{path} queue.{key}"
        config = replace(config, **{key: _coerce(key, value, sources[key])})
    variables = {"backend": "ALICORN_QUEUE", "broker": "ALICORN_BROKER_URL"}
    for key in names - set(variables):
        variables[key] = f"ALICORN_QUEUE_{key.upper()}"
    for key, variable in variables.items():
        value = os.environ.get(variable)
        if value:
            sources[key] = variable
            config = replace(config, **{key: _coerce(key, value, variable)})
    return config.check(str(path) if stored else "ALICORN_QUEUE", sources)


def machine_arch() -> str:
    """This host's architecture as the queues name it (x86_64, aarch64, ...)."""
    return platform.machine() or "x86_64"


def queue_name(capability: str, arch: str | None = None) -> str:
    """The Celery queue of builds needing ``capability`` on ``arch``: ``alicorn.deb.x86_64``."""
    if capability not in CAPABILITIES:
        raise BadInput(f"unknown capability {capability!r}",
                       hint="a capability is " + ", ".join(CAPABILITIES))
    return f"alicorn.{capability}.{arch or machine_arch()}"


# The queue of the tasks that are not builds (scans, rebuild rounds, the reaper).
SERVICE_QUEUE = "alicorn.service"
