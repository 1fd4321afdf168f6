"""``GET /metrics`` on the API host: the cluster's Prometheus figures from the database
(:mod:`alicorn.cluster.metrics`), and ``GET /api/v1/cluster``: the workers seen lately with
their running builds, and the queue depths.

Both are reads like the API's others (``auth.reader``): anonymous when the service's
``anonymous_read`` allows it, else a token of any role (give Prometheus a read token:
``authorization: {credentials: ...}`` in its scrape config).  The figures hold no secret
but do tell the cluster's shape (host names), hence the same rule, not a looser one.
``/healthz`` (alicorn.web.api) stays the plain "the service answers" probe; the database's
and broker's health is each worker's own ``/healthz`` (``alicorn worker --listen``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import BaseModel

from alicorn.cluster.config import load_queue_config
from alicorn.cluster.metrics import CONTENT_TYPE, cluster_view, registry_for
from alicorn.web import auth
from alicorn.web.api import bearer, errors
from alicorn.web.model import API_PREFIX, Principal

router = APIRouter()


class ClusterWorker(BaseModel):
    worker: str               # host:pid of the process that ran the builds
    host: str
    pid: int | None
    last_seen: str | None     # its latest heartbeat or finished build, ISO 8601 UTC
    running: list[str]        # build ids
    alive: bool               # a running build's heartbeat is within the lease


class ClusterView(BaseModel):
    workers: list[ClusterWorker]
    queues: dict[str, int]    # builds queued, by queue
    lease: float


def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics", None)
    if registry is None:
        ctx = request.app.state.ctx
        registry = registry_for(ctx.settings, load_queue_config(ctx.settings))
        request.app.state.metrics = registry
    return registry


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request,
            who: Annotated[Principal, Depends(auth.reader)]) -> Response:
    """Queue depth, builds running, done and failed, durations, queue waits, retries."""
    return Response(generate_latest(_registry(request)), media_type=CONTENT_TYPE)


@router.get(API_PREFIX + "/cluster", response_model=ClusterView, responses=errors(401, 503),
            dependencies=[Security(bearer)], tags=["service"])
def cluster(request: Request,
            who: Annotated[Principal, Depends(auth.reader)]) -> dict[str, Any]:
    """The worker processes that ran a build in the last 15 minutes (``host:pid``, when last
    seen, their running builds, ``alive``: a running build's heartbeat is within the lease),
    and the builds queued per queue."""
    ctx = request.app.state.ctx
    return cluster_view(ctx.settings.database_url, load_queue_config(ctx.settings).lease)
