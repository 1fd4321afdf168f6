"""The web application: ``create_app`` assembles the API, the pages, their shared context,
the error answers and the limits every request goes through.

Every error is answered with its status and a body that says what was wrong (JSON under
``/api``, an HTML page elsewhere): Alicorn's errors by their kind (NotFound 404, Conflict 409,
BadInput 400, Unauthorized 401, Forbidden 403, RateLimited 429, PayloadTooLarge 413, a store
that cannot be used 503), FastAPI's validation errors 422.  Anything else is a bug: a 500 that
names nothing but an id for the service's log, never a traceback or another build's data.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alicorn import __version__
from alicorn.config import Settings
from alicorn.errors import BadInput, Conflict, Error, NotFound, StoreError, Unavailable
from alicorn.store.builds import BuildStore
from alicorn.web.audit import AuditTrail
from alicorn.web.auth import TokenStore
from alicorn.web.model import (
    ANONYMOUS,
    API_PREFIX,
    ApiConfig,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    load_api_config,
)
from alicorn.web.ratelimit import SubmissionLimiter

log = logging.getLogger("alicorn.web")


@dataclass
class WebContext:
    """What every request handler shares (``request.app.state.ctx``)."""

    settings: Settings
    config: ApiConfig
    builds: BuildStore
    tokens: TokenStore
    audit: AuditTrail
    limiter: SubmissionLimiter


def context(request: Request) -> WebContext:
    """FastAPI dependency: the application's context."""
    ctx: WebContext = request.app.state.ctx
    return ctx


def status_of(error: Exception) -> int:
    """The HTTP status an Alicorn error is answered with."""
    for kind, status in ((PayloadTooLarge, 413), (NotFound, 404), (Conflict, 409),
                         (BadInput, 400), (Unauthorized, 401), (Forbidden, 403),
                         (RateLimited, 429), (StoreError, 503), (Unavailable, 503)):
        if isinstance(error, kind):
            return status
    return 500 if not isinstance(error, Error) else 502


def headers_of(error: Exception) -> dict[str, str] | None:
    """The headers an error is answered with: when to try again, how to authenticate."""
    if isinstance(error, RateLimited):
        return {"Retry-After": str(max(1, round(error.retry_after)))}
    if isinstance(error, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="alicorn"'}
    if isinstance(error, Unavailable):
        return {"Retry-After": "10"}
    return None


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited",
          500: "internal_error", 502: "tool_failed", 503: "unavailable"}


def error_body(status: int, message: str, *, where: str | None = None,
               hint: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON every error is answered with."""
    body: dict[str, Any] = {"status": status, "code": _CODES.get(status, "error"),
                            "message": message}
    if where:
        body["where"] = where
    if hint:
        body["hint"] = hint
    body.update(extra)
    return {"error": body}


def wants_html(request: Request) -> bool:
    """A page was asked for (not the API): errors are answered with an HTML page."""
    return not request.url.path.startswith("/api") and \
        "text/html" in request.headers.get("accept", "")


def answer_error(request: Request, status: int, message: str, *, where: str | None = None,
                 hint: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> Response:
    if wants_html(request):
        from alicorn.web.pages import render_error

        return render_error(request, status, message, hint=hint, headers=headers)
    return JSONResponse(error_body(status, message, where=where, hint=hint, **extra),
                        status_code=status, headers=headers)


UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def audit_refusal(request: Request, status: int, message: str) -> None:
    """Record a write refused before any route took it (no such route, a method the route
    does not allow, a body too large): the audit trail holds every write asked for.  Never
    raises: the refusal stands even if it cannot be written down."""
    ctx: WebContext | None = getattr(request.app.state, "ctx", None)
    if ctx is None or request.method not in UNSAFE or \
            getattr(request.state, "alicorn_audited", False):
        return
    from alicorn.web import auth

    try:
        try:
            who = auth.identify(request)
        except (Unauthorized, Forbidden):
            who = getattr(request.state, "alicorn_claimed", None) or ANONYMOUS
        action, target = auth.action_of(request)
        ctx.audit.record(who, action, target=target, outcome="refused", status=status,
                         detail=message, remote=auth.remote_of(request))
        request.state.alicorn_audited = True
    except Exception as e:
        log.warning("cannot audit a refused %s %s: %s", request.method, request.url.path, e)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with a 413: by Content-Length before
    reading, and for bodies without one (chunked) by reading them here, up to the limit,
    before the application sees any of it."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":   # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = (f"the request body is over {self.limit} bytes (or its Content-Length is "
                   "not a number)")
        hint = "api.max_body_bytes sets the limit"
        request = Request(scope)
        if "app" in scope:
            audit_refusal(request, 413, message)
        if wants_html(request) and "app" in scope:
            from alicorn.web.pages import render_error

            response: Response = render_error(request, 413, message, hint=hint)
        else:
            response = JSONResponse(error_body(413, message, hint=hint), status_code=413)
        await response(scope, receive, send)


class HeadAsGet:
    """HEAD is answered as GET without the body (FastAPI routes answer GET only)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


class SecurityHeaders:
    """Headers on every answer: no inline scripts or styles, no framing, no sniffing."""

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"content-security-policy",
         b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
         b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
    ]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: Settings, config: ApiConfig | None = None) -> FastAPI:
    """The application for one ALICORN_HOME (``config``: its ``api`` settings by default)."""
    from alicorn.web import api, pages

    config = config if config is not None else load_api_config(settings)
    app = FastAPI(
        title="Alicorn", version=__version__,
        description="Builds with a chain of identity, their provenance and logs, security "
                    "advisories, rebuild events, modules and the transparency log.",
        # No Swagger UI: it loads its scripts from a CDN (this service may have no internet,
        # and its Content-Security-Policy allows its own scripts only).
        openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None,
    )
    app.state.ctx = WebContext(
        settings=settings, config=config, builds=BuildStore(settings.database_url),
        tokens=TokenStore(settings.database_url), audit=AuditTrail(settings.database_url),
        limiter=SubmissionLimiter(config.submissions_per_minute))

    @app.exception_handler(Error)
    async def on_error(request: Request, exc: Error) -> Response:
        status = status_of(exc)
        headers = headers_of(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.diagnostics())
        return answer_error(request, status, exc.message, where=exc.where, hint=exc.hint,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors()[:20]:
            loc = ".".join(str(p) for p in e.get("loc", ()))
            problems.append({"where": loc, "message": str(e.get("msg", "invalid"))})
        first = problems[0] if problems else {"where": None, "message": "invalid request"}
        return answer_error(request, 422, f"{first['where']}: {first['message']}"
                            if first["where"] else str(first["message"]),
                            where=first["where"], problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"nothing is at {request.url.path}"
        if exc.status_code == 405 and message == "Method Not Allowed":
            message = f"{request.method} is not allowed on {request.url.path}"
        audit_refusal(request, exc.status_code, message)
        return answer_error(request, exc.status_code, message,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        incident = secrets.token_hex(4)
        log.exception("internal error %s on %s %s", incident, request.method, request.url.path)
        return answer_error(request, 500, f"internal error (incident {incident}; the "
                            "service's log has the details)")

    app.include_router(api.router, prefix=API_PREFIX)
    app.include_router(api.health_router, include_in_schema=False)
    from alicorn.web import metrics  # GET /metrics: the cluster's Prometheus figures
    app.include_router(metrics.router)
    app.include_router(pages.router)
    pages.mount_static(app)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders)
    return app
