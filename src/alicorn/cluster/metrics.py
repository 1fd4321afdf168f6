"""Health and Prometheus metrics of the cluster: queue depth, build durations, failures.

CONTRACT (implemented by the operations work of issue 8): :func:`serve_worker_endpoints`
starts, in the Celery worker's main process, an HTTP server on ``listen`` answering
``/healthz`` (the worker's broker and database connections) and ``/metrics`` (Prometheus text
format).  None: no server.
"""

from __future__ import annotations

from alicorn.cluster.config import QueueConfig
from alicorn.config import Settings


def serve_worker_endpoints(settings: Settings, config: QueueConfig, listen: str | None,
                           *, queues: list[str]) -> None:
    """Start the worker's health and metrics server (a daemon thread) unless ``listen`` is
    None."""
