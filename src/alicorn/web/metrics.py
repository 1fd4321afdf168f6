"""``GET /metrics`` on the API host: the cluster's Prometheus figures from the database
(:mod:`alicorn.cluster.metrics`), readable by whoever may read the API (``anonymous_read``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest

from alicorn.cluster.config import load_queue_config
from alicorn.cluster.metrics import CONTENT_TYPE, registry_for
from alicorn.web import auth
from alicorn.web.model import Principal

router = APIRouter()


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
