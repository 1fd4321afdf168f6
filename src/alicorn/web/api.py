"""The JSON API under ``/api/v1`` (its OpenAPI document: ``/api/v1/openapi.json``).

Reads take the reader role (anonymous when ``api.anonymous_read`` is on); submitting and
cancelling builds the submitter role; tokens and the audit trail the admin role.  Every write
is audited, allowed or not.  A build's record is sealed: no route changes one (PUT, PATCH and
DELETE on a build answer 405).

What a request names reaches the store only as constrained strings: build ids are hex, log and
SBOM names come from fixed lists, module and token names from their patterns.  The rest of the
read side lives in :mod:`alicorn.web.queries`, shared with the pages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path as FsPath
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from alicorn.digest import canonical_json
from alicorn.errors import BadInput, Error, NotFound
from alicorn.events.model import EVENT_STATES
from alicorn.store.builds import FINAL, Submission
from alicorn.store.models import BuildRow
from alicorn.web import auth, queries
from alicorn.web.app import WebContext, context, error_body, status_of
from alicorn.web.model import (
    ANONYMOUS,
    API_PREFIX,
    LOG_NAMES,
    SBOM_FORMATS,
    Forbidden,
    Principal,
    Role,
    Unauthorized,
)

log = logging.getLogger("alicorn.web.api")

BUILD_ID = r"^[0-9a-f]{1,32}$"
DIGEST = r"^(sha256:)?[0-9a-f]{64}$"
MODULE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
TOKEN_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
BUILD_STATES = ("queued", "running", "done", "failed")
MAX_INDEX = 1 << 53
# The log stream: how often it looks for more, says it is alive, and gives up.
POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 3600.0
CHUNK = 64 << 10


# -- models: what the OpenAPI document says each answer is ----------------------------------------
class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str
    where: str | None = None
    hint: str | None = None
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    error: ErrorDetail


_WHY = {400: "Malformed input", 401: "No token, or a bad one", 403: "The token's role may "
        "not do this", 404: "Not found", 405: "Build records are sealed", 409: "The build has "
        "ended", 413: "The body is too large", 422: "Invalid parameters or body",
        429: "Too many submissions", 503: "The store cannot be used"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: these statuses, with the error body."""
    return {c: {"model": ErrorBody, "description": _WHY.get(c, "Error")}
            for c in sorted({*codes, 422})}


class WhoAmI(BaseModel):
    name: str
    role: str | None
    anonymous: bool


class Source(BaseModel):
    url: str | None
    ref: str | None
    commit: str | None


class BuildSummary(BaseModel):
    id: str
    state: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    recipe_name: str | None
    recipe_path: str
    digest: str | None
    image: str | None
    submitter: str
    source: Source | None
    step: str | None
    progress: dict[str, Any] | None
    error: str | None
    cancel_requested: dict[str, Any] | None
    trigger: dict[str, Any] | None


class PackageInfo(BaseModel):
    name: str
    version: str
    type: str
    arch: str
    purl: str
    checksum: str | None


class LogInfo(BaseModel):
    name: str
    size: int
    digest: str | None
    complete: bool


class BuildDetail(BuildSummary):
    argv: list[str]
    options: dict[str, Any] | None
    recipe: dict[str, Any]
    commit_url: str | None
    inputs: dict[str, Any] | None
    packages: list[PackageInfo]
    outputs: dict[str, Any]
    sboms: dict[str, Any] | None
    provenance: dict[str, Any]
    transparency_log: dict[str, Any]
    checks: dict[str, Any] | None
    logs: list[LogInfo]
    worker: str | None


class CheckInfo(BaseModel):
    link: str
    ok: bool
    detail: str


class Verification(BaseModel):
    build_id: str
    digest: str | None = None
    verified: bool
    broken: str | None
    checks: list[CheckInfo]
    pending: bool


class Trace(BuildDetail):
    verification: Verification


class SearchResult(BaseModel):
    build_id: str
    digest: str | None
    url: str


class SourceIn(BaseModel):
    """Where the recipe is: a git repository, a ref in it, and the recipe's path inside."""

    model_config = ConfigDict(extra="forbid", strict=True)
    git: str = Field(min_length=1, max_length=2048,
                     description="https/http/git/ssh URL, or (only under api.local_sources) "
                                 "a local path or file:// URL")
    ref: str = Field(min_length=1, max_length=256, description="branch, tag or commit")
    recipe: str = Field(min_length=1, max_length=1024,
                        description="the recipe's path inside the repository (relative)")


class OptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    no_cache: bool = False
    skip_checks: bool = False
    source_date_epoch: int | None = Field(default=None, ge=0, le=253402300799)


class SubmitIn(BaseModel):
    """A build to run: ``{"source": {"git", "ref", "recipe"}, "options": {...}}``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    source: SourceIn
    options: OptionsIn = Field(default_factory=OptionsIn)


class Submitted(BaseModel):
    build_id: str
    state: str
    url: str


class CancelAnswer(BaseModel):
    build_id: str
    state: str
    cancel_requested: bool


class AdvisoryBase(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    format: str
    type: str
    title: str
    severity: str | None
    cves: list[str]


class AdvisorySummary(AdvisoryBase):
    ecosystems: list[str]
    published: str | None
    packages: list[str]
    affected: int


class AdvisoryPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[AdvisorySummary]


class AffectedImage(BaseModel):
    digest: str
    build_id: str
    recipe_name: str | None
    image: str | None
    packages: list[dict[str, Any]]
    advisories: list[str] = Field(default_factory=list)


class AdvisoryDetail(AdvisoryBase):
    bugzillas: list[str]
    references: list[dict[str, Any]]
    description: str
    fixed_packages: list[dict[str, Any]]
    affected_packages: list[dict[str, Any]]
    affected: list[AffectedImage]


class EventInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    advisory: str
    state: str
    reason: str | None
    severity: str | None
    cves: list[str]
    created: str | None
    updated: str | None
    builds: list[dict[str, Any]]


class EventDetail(EventInfo):
    rebuilds: list[dict[str, Any]]


class ModuleSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    module: str
    digest: str | None
    image: str | None
    port: int
    replicas: int
    state: str
    updated_at: str | None


class ModuleDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    module: str
    digest: str | None
    image: str | None
    port: int
    state: str
    replicas: list[dict[str, Any]]
    history: list[dict[str, Any]]
    operation: dict[str, Any] | None
    events: list[dict[str, Any]]
    builds: dict[str, str]


class SignedHead(BaseModel):
    """A signed tree head as a witness keeps it (alicorn.chain.translog.SignedTreeHead)."""

    log: str
    tree_size: int
    root_hash: str
    timestamp: int
    key_id: str
    signature: str


class TreeHead(SignedHead):
    """A signed tree head, whether its signature holds, and when it was signed."""

    model_config = ConfigDict(extra="allow")
    signature_ok: bool
    time: str | None


class TreeHeads(BaseModel):
    size: int
    count: int
    latest: TreeHead | None
    heads: list[TreeHead]


class LogEntry(BaseModel):
    index: int
    kind: str
    subject: str | None
    created: str | None
    data: str = Field(description="the entry's bytes (a record's canonical JSON), base64")
    leaf_hash: str
    tree_size: int
    root_hash: str
    head: SignedHead | None
    inclusion_proof: list[str]


class Consistency(BaseModel):
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: list[str]


class KeyInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    key_id: str
    pem: str
    created: int
    retired: int | None
    algorithm: str


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=TOKEN_NAME)
    role: Role = Field(strict=False, description="reader, submitter or admin")


class TokenOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    role: str


class TokenCreated(TokenOut):
    token: str = Field(description="the secret: shown this once")


class Health(BaseModel):
    ok: bool


# -- auditing writes ------------------------------------------------------------------------------
def _audit(request: Request, who: Principal, action: str, *, target: str | None,
           outcome: str, status: int, detail: str | None = None) -> None:
    ctx: WebContext = request.app.state.ctx
    request.state.alicorn_audited = True
    try:
        ctx.audit.record(who, action, target=target, outcome=outcome, status=status,
                         detail=(detail or "")[:1000] or None, remote=auth.remote_of(request))
    except Exception as e:  # the answer stands even if it cannot be written down
        log.warning("cannot audit %s %s: %s", action, target, e)


def _audit_error(request: Request, who: Principal, action: str, *, target: str | None,
                 error: Exception, status: int | None = None) -> None:
    """Audit a write that ``error`` ended: refused (a 4xx) or failed (5xx)."""
    status = status if status is not None else status_of(error)
    _audit(request, who, action, target=target,
           outcome="refused" if status < 500 else "failed", status=status,
           detail=_describe(error))


class AuditedRoute(APIRoute):
    """Writes whose request never reached their handler (a body that does not validate) or
    that failed without saying so are audited too; the handlers audit what they decide, and
    alicorn.web.auth the refusals of the roles."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def audited(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as e:
                if request.method in auth.UNSAFE_METHODS and \
                        not getattr(request.state, "alicorn_audited", False) and \
                        not isinstance(e, Unauthorized | Forbidden):
                    who = getattr(request.state, "alicorn_principal", None) or ANONYMOUS
                    action, target = auth.action_of(request)
                    _audit_error(request, who, action, target=target, error=e,
                                 status=422 if isinstance(e, RequestValidationError) else None)
                raise

        return audited


def _describe(e: Exception) -> str:
    if isinstance(e, Error):
        return e.message
    if isinstance(e, RequestValidationError):
        first: dict[str, Any] = next(iter(e.errors()), {})
        return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg')}"
    return type(e).__name__


bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="Authorization: Bearer alicorn_<id>_<secret>")
router = APIRouter(route_class=AuditedRoute, dependencies=[Security(bearer)])
health_router = APIRouter()

Ctx = Annotated[WebContext, Depends(context)]
Reader = Annotated[Principal, Depends(auth.reader)]
Submitter = Annotated[Principal, Depends(auth.submitter)]
Admin = Annotated[Principal, Depends(auth.admin)]
BuildId = Annotated[str, Path(pattern=BUILD_ID, description="a build id or its prefix")]


def _json(data: bytes, filename: str | None = None) -> Response:
    headers = {"Content-Disposition": f'inline; filename="{filename}"'} if filename else None
    return Response(content=data, media_type="application/json", headers=headers)


_JSON_FILE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}},
          "description": "the sealed file, byte for byte"}}


# -- health and who -------------------------------------------------------------------------------
@health_router.get("/healthz", response_model=Health, tags=["service"])
@router.get("/healthz", response_model=Health, tags=["service"])
def healthz() -> dict[str, Any]:
    """The service answers (no token needed)."""
    return {"ok": True}


@router.get("/whoami", response_model=WhoAmI, responses=errors(401), tags=["service"])
def whoami(who: Annotated[Principal, Depends(auth.principal)]) -> dict[str, Any]:
    """Who this request is: its token's name and role, or the anonymous reader."""
    return {"name": who.name, "role": who.role.value if who.role else None,
            "anonymous": who.anonymous}


# -- builds ---------------------------------------------------------------------------------------
@router.get("/builds", response_model=list[BuildSummary], responses=errors(400, 401, 404),
            tags=["builds"])
def list_builds(ctx: Ctx, who: Reader,
                state: Annotated[str | None, Query(pattern="^(" + "|".join(BUILD_STATES)
                                                   + ")$")] = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 50,
                before: Annotated[str | None, Query(pattern=BUILD_ID,
                                                    description="the page after this build "
                                                                "id")] = None,
                ) -> list[dict[str, Any]]:
    """Builds, newest first, with the step and progress of running ones."""
    return queries.list_builds(ctx, state=state, limit=limit, before=before)


def _check_ref(ref: str) -> None:
    if ref.startswith("-") or ".." in ref or ref.endswith((".", "/", ".lock")) or \
            not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9._/+@-]*", ref):
        raise BadInput(f"source.ref {queries.echo(ref)!r} is not a branch, tag or commit",
                       where="source.ref",
                       hint="letters, digits and . _ / + @ -, not starting with '-'")


def _check_recipe(path: str) -> None:
    parts = path.split("/")
    if path.startswith(("/", "-")) or any(p in ("", ".", "..") for p in parts) or \
            not re.fullmatch(r"[A-Za-z0-9._+@/-]+", path):
        raise BadInput(f"source.recipe {queries.echo(path)!r} is not a relative path inside "
                       "the repository", where="source.recipe",
                       hint="e.g. pony/pony.yaml: no leading '/', no '..', no empty parts")


_REMOTE = ("https", "http", "git", "ssh")
_SCP = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!/?/)[A-Za-z0-9._~/+-]+")


def _source_url(ctx: WebContext, given: str) -> str:
    """The repository URL to record: a remote URL as given; a local one (a path or file://)
    resolved, and only inside ``api.local_sources``."""
    if given.startswith("-") or re.search(r"[\x00-\x20\x7f]", given):
        raise BadInput(f"source.git {queries.echo(given)!r} is not a repository URL",
                       where="source.git", hint="no spaces or control characters")
    if _SCP.fullmatch(given):
        return given
    if "://" in given:
        try:
            parts = urlsplit(given)
        except ValueError:
            raise BadInput(f"source.git {queries.echo(given)!r} is not a URL",
                           where="source.git") from None
        scheme = parts.scheme.lower()
        if scheme in _REMOTE:
            if not parts.hostname:
                raise BadInput(f"source.git {queries.echo(given)!r} names no host",
                               where="source.git")
            return given
        if scheme != "file":
            raise BadInput(f"source.git: the scheme {scheme[:20]!r} is not taken",
                           where="source.git",
                           hint="https, http, git or ssh URLs (file:// and local paths only "
                                "under api.local_sources)")
        if parts.netloc not in ("", "localhost"):
            raise BadInput("source.git: a file:// URL names a path on this host",
                           where="source.git")
        local = unquote(parts.path)
    else:
        local = given
    path = FsPath(local)
    if not path.is_absolute():
        raise BadInput(f"source.git {queries.echo(given)!r} is neither a remote URL nor an "
                       "absolute path", where="source.git",
                       hint="https://host/repo.git, git@host:repo.git, or an absolute path "
                            "under api.local_sources")
    resolved = path.resolve()
    allowed = [FsPath(d).resolve() for d in ctx.config.local_sources]
    if not any(resolved == d or resolved.is_relative_to(d) for d in allowed):
        raise Forbidden(f"source.git: local repositories are taken only under the directories "
                        f"of the setting api.local_sources ({', '.join(map(str, allowed))}"
                        if allowed else "source.git: local repositories are not taken: the "
                        "setting api.local_sources names no directory",
                        where="source.git",
                        hint="submit a remote URL, or have an admin run `alicorn api config "
                             "local_sources DIR` and restart the service")
    if not (resolved / ".git").exists() and not (resolved / "HEAD").is_file():
        raise BadInput(f"source.git: {resolved} is not a git repository", where="source.git")
    return str(resolved)


def submit_build(ctx: WebContext, who: Principal, body: SubmitIn, *,
                 via: str = f"{API_PREFIX}/builds") -> BuildRow:
    """Queue the build ``body`` asks for on behalf of ``who``: the checks of its source, ref
    and recipe, the rate limit, the recorded argv (``alicorn-api POST VIA <the body as
    canonical JSON>``), then a worker is started unless one runs.  The API's POST /builds
    and the pages' submit form both queue builds through here; auditing is the caller's."""
    url = _source_url(ctx, body.source.git)
    _check_ref(body.source.ref)
    _check_recipe(body.source.recipe)
    # Counted once the request is one that would be queued: a typo costs no turn.
    ctx.limiter.take(who)
    options: dict[str, Any] = {"no_cache": body.options.no_cache, "no_push": False,
                               "compression_level": 1}
    if body.options.skip_checks:
        options["skip_checks"] = True
    if body.options.source_date_epoch is not None:
        options["source_date_epoch"] = body.options.source_date_epoch
    argv = ["alicorn-api", "POST", via, canonical_json(body.model_dump()).decode()]
    sub = Submission(
        argv=argv, source_kind="git", source_url=url, source_ref=body.source.ref,
        recipe_path=body.source.recipe, options=options, submitter=who.name,
        token=who.token_id)
    from alicorn.cluster.dispatch import LocalDispatcher, dispatcher_for

    dispatcher = dispatcher_for(ctx.settings, ctx.builds)
    if not isinstance(dispatcher, LocalDispatcher):
        # The row and the broker's message in one transaction: Unavailable (503) and
        # nothing recorded when the broker is down.
        return dispatcher.submit(sub)
    row = ctx.builds.submit(sub)
    try:
        dispatcher.redispatch(row)
    except Error as e:  # queued all the same: the next worker takes it
        log.warning("cannot start the worker for build %s: %s", row.id, e.diagnostics())
    return row


@router.post("/builds", status_code=202, response_model=Submitted,
             responses=errors(400, 401, 403, 413, 429), tags=["builds"])
def submit(request: Request, ctx: Ctx, who: Submitter,
           body: Annotated[SubmitIn, Body()]) -> JSONResponse:
    """Queue a build of the recipe at ``source.recipe`` in the git repository ``source.git``
    at ``source.ref`` (role submitter; rate limited per token)."""
    try:
        row = submit_build(ctx, who, body)
    except Exception as e:
        _audit_error(request, who, "build.submit", target=None, error=e)
        raise
    _audit(request, who, "build.submit", target=row.id, outcome="ok", status=202,
           detail=f"{row.source_url} {row.source_ref} {row.recipe_path}")
    location = f"{API_PREFIX}/builds/{row.id}"
    return JSONResponse({"build_id": row.id, "state": row.state, "url": location},
                        status_code=202, headers={"Location": location})


@router.get("/builds/{build_id}", response_model=BuildDetail, responses=errors(400, 401, 404),
            tags=["builds"])
def build(ctx: Ctx, who: Reader, build_id: BuildId) -> dict[str, Any]:
    """A build: its inputs (argv, source, recipe), outputs, packages, checks and logs."""
    return queries.build_detail(ctx, build_id)


@router.post("/builds/{build_id}/cancel", status_code=202, response_model=CancelAnswer,
             responses=errors(400, 401, 403, 404, 409), tags=["builds"])
def cancel(request: Request, ctx: Ctx, who: Submitter, build_id: BuildId) -> JSONResponse:
    """Cancel a queued or running build: a submitter its own, an admin any.  A build that
    has ended cannot be cancelled (409: its record is sealed)."""
    try:
        row = ctx.builds.resolve(build_id)
        if not auth.may_cancel(who, row):
            raise Forbidden(f"token {who.name} may cancel only the builds it submitted; "
                            f"build {row.id} was submitted by {row.submitter}",
                            hint="an admin token may cancel any build")
        after = ctx.builds.request_cancel(row.id, who.name)
    except Exception as e:
        _audit_error(request, who, "build.cancel", target=build_id, error=e)
        raise
    _audit(request, who, "build.cancel", target=after.id, outcome="ok", status=202,
           detail=f"was {row.state}, now {after.state}")
    return JSONResponse({"build_id": after.id, "state": after.state,
                         "cancel_requested": after.state in FINAL
                         or after.cancel_requested_at is not None}, status_code=202)


def _sealed(request: Request, build_id: str) -> JSONResponse:
    try:
        who = auth.identify(request)
    except Error:
        who = ANONYMOUS
    message = ("build records are sealed in the transparency log: no one (an admin "
               f"included) can change or delete build {build_id} through the API")
    _audit(request, who, "build.change", target=build_id, outcome="refused", status=405,
           detail=f"{request.method} refused: sealed")
    return JSONResponse(error_body(405, message,
                                   hint="a running or queued build can be cancelled: POST "
                                        f"{API_PREFIX}/builds/{build_id}/cancel"),
                        status_code=405, headers={"Allow": "GET"})


for _method in ("PUT", "PATCH", "DELETE"):
    router.add_api_route("/builds/{build_id}", _sealed, methods=[_method],
                         responses={405: {"model": ErrorBody,
                                          "description": "Build records are sealed"}},
                         tags=["builds"], include_in_schema=True,
                         name=f"sealed_{_method.lower()}", summary="Refused: records are "
                         "sealed", status_code=405)


@router.get("/builds/{build_id}/verification", response_model=Verification,
            responses=errors(400, 401, 404), tags=["builds"])
def verification(ctx: Ctx, who: Reader, build_id: BuildId) -> dict[str, Any]:
    """The build's chain checked offline: record, transparency log, database, provenance,
    logs, SBOMs, checks, image (pending while the build runs)."""
    return queries.verification(ctx, build_id)


@router.get("/builds/{build_id}/record", response_class=Response,
            responses={**errors(400, 401, 404), **_JSON_FILE}, tags=["builds"])
def record(ctx: Ctx, who: Reader, build_id: BuildId) -> Response:
    """The sealed record.json (the bytes logged in the transparency log)."""
    return _json(queries.build_file(ctx, build_id, "record.json"), "record.json")


@router.get("/builds/{build_id}/provenance", response_class=Response,
            responses={**errors(400, 401, 404), **_JSON_FILE}, tags=["builds"])
def provenance(ctx: Ctx, who: Reader, build_id: BuildId) -> Response:
    """The signed SLSA provenance (a DSSE envelope)."""
    return _json(queries.build_file(ctx, build_id, "provenance.dsse.json"),
                 "provenance.dsse.json")


@router.get("/builds/{build_id}/sbom/{format}", response_class=Response,
            responses={**errors(400, 401, 404), **_JSON_FILE}, tags=["builds"])
def sbom(ctx: Ctx, who: Reader, build_id: BuildId,
         format: Annotated[str, Path(pattern="^(" + "|".join(SBOM_FORMATS) + ")$")],
         ) -> Response:
    """The image's SBOM: CycloneDX or SPDX."""
    name = SBOM_FORMATS[format]
    return _json(queries.build_file(ctx, build_id, name), name)


@router.get("/builds/{build_id}/logs", response_model=list[LogInfo],
            responses=errors(400, 401, 404), tags=["builds"])
def logs(ctx: Ctx, who: Reader, build_id: BuildId) -> list[dict[str, Any]]:
    """The logs the build has written so far."""
    return queries.logs(ctx, build_id)


LogName = Annotated[str, Path(pattern="^(" + "|".join(re.escape(n) for n in LOG_NAMES) + ")$",
                              description="one of " + ", ".join(LOG_NAMES))]


@router.get("/builds/{build_id}/logs/{name}", response_class=Response,
            responses={**errors(400, 401, 404),
                       200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "the log from offset; X-Log-Offset: the next "
                                            "offset, X-Log-Complete: true when it is whole"}},
            tags=["builds"])
def log_text(ctx: Ctx, who: Reader, build_id: BuildId, name: LogName,
             offset: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0,
             limit: Annotated[int, Query(ge=1, le=16 << 20)] = 4 << 20) -> Response:
    """A log as text, from ``offset`` (bytes)."""
    data, end, complete = queries.read_log(ctx, build_id, name, offset=offset, limit=limit)
    return Response(content=data, media_type="text/plain; charset=utf-8",
                    headers={"X-Log-Offset": str(end),
                             "X-Log-Complete": "true" if complete else "false"})


def _event(kind: str, data: dict[str, Any], ident: int | None = None) -> bytes:
    head = f"id: {ident}\n" if ident is not None else ""
    return (f"{head}event: {kind}\ndata: {json.dumps(data, sort_keys=True)}\n\n").encode()


@router.get("/builds/{build_id}/logs/{name}/stream", response_class=StreamingResponse,
            responses={**errors(400, 401, 404),
                       200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "events 'append' {offset, text} (id: the next "
                                            "offset) and 'end' {state}"}},
            tags=["builds"])
async def log_stream(request: Request, ctx: Ctx, who: Reader, build_id: BuildId,
                     name: LogName,
                     offset: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0,
                     ) -> StreamingResponse:
    """The log as server-sent events while the build runs: ``append`` {offset (next),
    text} with id = the next offset (a reconnect's Last-Event-ID resumes there), ``end``
    {state} once the build has ended and all of it was sent, keep-alive comments."""
    resume = request.headers.get("last-event-id", "").strip()
    if resume:
        if not resume.isdigit() or int(resume) > MAX_INDEX:
            raise BadInput(f"Last-Event-ID {queries.echo(resume)!r} is not an offset",
                           where="Last-Event-ID")
        offset = int(resume)
    # The first read answers a bad name, build or offset with its status, before streaming.
    ident = (await run_in_threadpool(queries.build_detail_row, ctx, build_id)).id
    first: tuple[bytes, int, bool] = await run_in_threadpool(
        queries.read_log, ctx, ident, name, offset=offset, limit=CHUNK)

    async def events() -> AsyncIterator[bytes]:
        data, pos, complete = first
        started = last_sent = time.monotonic()
        yield b"retry: 2000\n\n"
        while True:
            if data:
                yield _event("append", {"offset": pos,
                                        "text": data.decode("utf-8", "replace")}, pos)
                last_sent = time.monotonic()
            if complete:
                state = (await run_in_threadpool(ctx.builds.get, ident)).state
                yield _event("end", {"state": state})
                return
            now = time.monotonic()
            if now - started > STREAM_SECONDS:
                yield b": giving up after an hour; reconnect to go on\n\n"
                return
            if not data:
                if now - last_sent >= KEEPALIVE_SECONDS:
                    yield b": keep-alive\n\n"
                    last_sent = now
                if await request.is_disconnected():
                    return
                await asyncio.sleep(POLL_SECONDS)
            try:
                data, pos, complete = await run_in_threadpool(
                    queries.read_log, ctx, ident, name, offset=pos, limit=CHUNK)
            except NotFound:   # the build ended without writing this log: nothing to follow
                state = (await run_in_threadpool(ctx.builds.get, ident)).state
                yield _event("end", {"state": state, "written": False})
                return

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# -- trace and search -----------------------------------------------------------------------------
@router.get("/trace/{digest}", response_model=Trace, responses=errors(400, 401, 404),
            tags=["builds"])
def trace(ctx: Ctx, who: Reader,
          digest: Annotated[str, Path(pattern=DIGEST, description="sha256:<64 hex>")],
          ) -> dict[str, Any]:
    """From an image digest to the build that made it, with its verification."""
    try:
        row = ctx.builds.resolve(digest)       # one lookup for the whole answer
    except NotFound:
        raise NotFound(f"no build made the image {digest}",
                       hint="GET /api/v1/search?q= also takes references and build ids"
                       ) from None
    data = queries.build_detail(ctx, row.id, row=row)
    data["verification"] = queries.verification(ctx, row.id, row=row)
    return data


@router.get("/search", response_model=SearchResult, responses=errors(400, 401, 404),
            tags=["builds"])
def search(ctx: Ctx, who: Reader,
           q: Annotated[str, Query(min_length=1, max_length=1024,
                                   description="an image digest, image reference or build "
                                               "id (prefix)")],
           ) -> dict[str, Any]:
    """The build an image digest, an image reference or a build id (prefix) names."""
    return queries.resolve(ctx, q)


# -- advisories, affected images, events, modules -------------------------------------------------
@router.get("/advisories", response_model=AdvisoryPage, responses=errors(400, 401),
            tags=["advisories"])
def advisories(ctx: Ctx, who: Reader,
               q: Annotated[str | None, Query(max_length=256,
                                              description="a CVE, an advisory id (or part) "
                                                          "or a package name")] = None,
               severity: Annotated[str | None, Query(max_length=32)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50,
               offset: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0) -> dict[str, Any]:
    """The stored advisories, newest first, each with how many current images it affects."""
    return queries.advisories(ctx, q=q, severity=severity, limit=limit, offset=offset)


AllBuilds = Annotated[bool, Query(description="every finished build, not only the newest "
                                              "of each recipe")]


@router.get("/advisories/{advisory_id:path}", response_model=AdvisoryDetail,
            responses=errors(401, 404), tags=["advisories"])
def advisory(ctx: Ctx, who: Reader,
             advisory_id: Annotated[str, Path(min_length=1, max_length=256)],
             all_builds: AllBuilds = False) -> dict[str, Any]:
    """One advisory, and the images built here that it affects."""
    return queries.advisory(ctx, advisory_id, all_builds=all_builds)


@router.get("/affected", response_model=list[AffectedImage], responses=errors(401),
            tags=["advisories"])
def affected(ctx: Ctx, who: Reader, all_builds: AllBuilds = False) -> list[dict[str, Any]]:
    """The images built here that need updates, with the advisories and packages why."""
    return queries.affected(ctx, all_builds=all_builds)


@router.get("/events", response_model=list[EventInfo], responses=errors(400, 401),
            tags=["events"])
def events(ctx: Ctx, who: Reader,
           state: Annotated[str | None, Query(pattern="^(" + "|".join(EVENT_STATES)
                                              + ")$")] = None,
           limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    """Advisory events and the rebuilds they made, newest first."""
    return queries.events(ctx, state=state, limit=limit)


@router.get("/events/{event_id}", response_model=EventDetail, responses=errors(400, 401, 404),
            tags=["events"])
def event(ctx: Ctx, who: Reader,
          event_id: Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")]) -> dict[str, Any]:
    """One event: its advisory and each rebuild with its build, digests, tests and gate."""
    return queries.event(ctx, event_id)


@router.get("/modules", response_model=list[ModuleSummary], responses=errors(401),
            tags=["modules"])
def modules(ctx: Ctx, who: Reader) -> list[dict[str, Any]]:
    """The modules deployed on this host, as recorded."""
    return queries.modules(ctx)


@router.get("/modules/{name}", response_model=ModuleDetail, responses=errors(401, 404),
            tags=["modules"])
def module(ctx: Ctx, who: Reader,
           name: Annotated[str, Path(pattern=MODULE_NAME)]) -> dict[str, Any]:
    """A module: what it serves, its replicas, its rollout history and last operation."""
    return queries.module(ctx, name)


# -- the transparency log and the keys ------------------------------------------------------------
@router.get("/log/head", response_model=SignedHead, responses=errors(401, 404), tags=["log"])
def log_head(ctx: Ctx, who: Reader) -> dict[str, Any]:
    """The latest signed tree head, as a witness keeps it (`alicorn verify --witness FILE`
    and SignedTreeHead.from_json read it as it is; /log/heads says whether signatures
    hold)."""
    latest = queries.log_heads(ctx, limit=1)["latest"]
    if latest is None:
        raise NotFound("the transparency log has no signed head yet (no build has ended)")
    return {k: latest[k] for k in SignedHead.model_fields}


@router.get("/log/heads", response_model=TreeHeads, responses=errors(401), tags=["log"])
def log_heads(ctx: Ctx, who: Reader,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """The signed tree heads, newest first."""
    return queries.log_heads(ctx, limit=limit)


@router.get("/log/entries/{index}", response_model=LogEntry, responses=errors(400, 401, 404),
            tags=["log"])
def log_entry(ctx: Ctx, who: Reader, index: Annotated[int, Path(ge=0, le=MAX_INDEX)],
              tree_size: Annotated[int | None, Query(ge=1, le=MAX_INDEX)] = None,
              ) -> dict[str, Any]:
    """An entry of the log and its inclusion proof against a signed head."""
    return queries.log_entry(ctx, index, tree_size=tree_size)


@router.get("/log/consistency", response_model=Consistency, responses=errors(400, 401),
            tags=["log"])
def log_consistency(ctx: Ctx, who: Reader, old: Annotated[int, Query(ge=0, le=MAX_INDEX)],
                    new: Annotated[int | None, Query(ge=0, le=MAX_INDEX)] = None,
                    ) -> dict[str, Any]:
    """The proof that the tree of ``old`` entries is a prefix of the tree of ``new``."""
    return queries.log_consistency(ctx, old, new)


@router.get("/keys", response_model=list[KeyInfo], responses=errors(401), tags=["log"])
def keys(ctx: Ctx, who: Reader) -> list[dict[str, Any]]:
    """The public keys (PEM) that verify provenance and tree heads."""
    return queries.keys(ctx)


# -- tokens and the audit trail (admin) -----------------------------------------------------------
@router.post("/tokens", status_code=201, response_model=TokenCreated,
             responses=errors(400, 401, 403, 409), tags=["admin"])
def create_token(request: Request, ctx: Ctx, who: Admin,
                 body: Annotated[TokenIn, Body()]) -> dict[str, Any]:
    """A new token (its secret is in this answer only)."""
    try:
        info, secret = ctx.tokens.create(body.name, body.role, created_by=who.name)
    except Exception as e:
        _audit_error(request, who, "token.create", target=body.name, error=e)
        raise
    _audit(request, who, "token.create", target=body.name, outcome="ok", status=201,
           detail=f"role {body.role.value}")
    return {**info.to_json(), "token": secret}


@router.get("/tokens", response_model=list[TokenOut], responses=errors(401, 403),
            tags=["admin"])
def list_tokens(ctx: Ctx, who: Admin) -> list[dict[str, Any]]:
    """Every token (never a secret)."""
    return [t.to_json() for t in ctx.tokens.list()]


@router.delete("/tokens/{name}", response_model=TokenOut, responses=errors(401, 403, 404, 409),
               tags=["admin"])
def revoke_token(request: Request, ctx: Ctx, who: Admin,
                 name: Annotated[str, Path(pattern=TOKEN_NAME)]) -> dict[str, Any]:
    """Revoke a token: it is refused from now on."""
    try:
        info = ctx.tokens.revoke(name)
    except Exception as e:
        _audit_error(request, who, "token.revoke", target=name, error=e)
        raise
    _audit(request, who, "token.revoke", target=name, outcome="ok", status=200)
    return info.to_json()


@router.get("/audit", response_model=list[dict[str, Any]], responses=errors(401, 403),
            tags=["admin"])
def audit(ctx: Ctx, who: Admin, limit: Annotated[int, Query(ge=1, le=500)] = 100,
          before: Annotated[int | None, Query(ge=1, le=MAX_INDEX)] = None,
          ) -> list[dict[str, Any]]:
    """The audit trail, newest first."""
    return ctx.audit.entries(limit=limit, before=before)
