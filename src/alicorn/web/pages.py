"""The server-rendered pages (Jinja2 templates in ``templates/``, one stylesheet and one
small script in ``static/``).

Every page reads through :mod:`alicorn.web.queries` (the same read side as the API) and
answers HTML, errors included: a page route never answers JSON.  Templates are autoescaped;
nothing from a record (recipe text, argv, log lines, advisory text) reaches the page
unescaped.  The Content-Security-Policy forbids inline scripts and styles, so the pages carry
none: the stylesheet and ``log.js`` (which follows a running build's log) are static files.

Writes (submit, cancel, login, logout) are plain HTML forms.  A form authenticated by the
cookie passes :func:`alicorn.web.auth.check_same_origin` first (CSRF), and every write is
audited like the API's.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import shlex
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from alicorn.errors import BadInput, Error, NotFound
from alicorn.store.builds import FINAL
from alicorn.web import auth, queries
from alicorn.web.app import WebContext, headers_of, status_of
from alicorn.web.model import (
    ANONYMOUS,
    API_PREFIX,
    LOG_NAMES,
    SBOM_FORMATS,
    Forbidden,
    Principal,
    Unauthorized,
)

log = logging.getLogger("alicorn.web")

HERE = Path(__file__).parent
# Autoescaped, whatever a template's name: nothing from a record reaches a page as markup.
TEMPLATES = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
    undefined=jinja2.Undefined, trim_blocks=True, lstrip_blocks=True))

# How much of a log the log page carries; log.js streams the rest.
LOG_PAGE_BYTES = 4 << 20
# How much of a search the search box shows again (a pasted log must not come back whole).
SEARCH_ECHO = 512


# -- filters -----------------------------------------------------------------------------
def short_digest(digest: Any) -> str:
    """``sha256:0123456789abcdef…`` → ``0123456789ab`` (the page keeps the whole one in a
    title)."""
    if not digest:
        return ""
    text = str(digest)
    return text.split(":", 1)[-1][:12]


def when(value: Any) -> str:
    """An ISO 8601 time (as the queries give them) as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if not value:
        return ""
    text = str(value)
    match = re.match(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)", text)
    return f"{match.group(1)} {match.group(2)}" if match else text


def when_ms(value: Any) -> str:
    """Milliseconds since the epoch (a tree head's timestamp) as UTC text."""
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)


def argv_text(argv: Any) -> str:
    """A build's argv as one shell-quoted line."""
    if isinstance(argv, list):
        return shlex.join(str(a) for a in argv)
    return "" if argv is None else str(argv)


def size_text(size: Any) -> str:
    try:
        n = float(size)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(size)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def columns(rows: Any, skip: Any = ()) -> list[str]:
    """The keys of a list of dicts, in the order they first appear (a table's columns)."""
    seen: list[str] = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict):
            seen += [k for k in row if k not in seen and k not in skip]
    return seen or ["value"]


# The words a page shows for a record's keys (any other key: its words, capitalized).
LABELS = {"base_digest": "Base image", "cached_from": "Reused the image of build",
          "manifest": "Manifest digest", "config": "Config digest", "diff_id": "diff_id",
          "purl": "purl", "url": "URL", "sbom": "SBOM", "sboms": "SBOMs", "cves": "CVEs",
          "id": "Id", "evr": "Version", "nevra": "NEVRA", "arch": "Arch",
          "source_date_epoch": "SOURCE_DATE_EPOCH", "previous_build": "Previous build",
          "metadata": "Metadata digest", "rebuild": "Rebuild id"}


def label(key: Any) -> str:
    """A record's key as a page's words: ``cached_from`` → "Reused the image of build"."""
    text = str(key)
    if text in LABELS:
        return LABELS[text]
    words = text.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else text


TEMPLATES.env.filters.update(short=short_digest, when=when, when_ms=when_ms,
                             argv=argv_text, size=size_text, tojson_pretty=to_json,
                             columns=columns, label=label)
TEMPLATES.env.globals.update(api=API_PREFIX, sbom_formats=sorted(SBOM_FORMATS),
                             log_names=LOG_NAMES)


# -- answers ---------------------------------------------------------------------------------
def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def _who(request: Request) -> Principal | None:
    """Who the header shows: the principal, or None when it cannot be told (a bad cookie,
    anonymous reads off) — the header then offers the login page."""
    try:
        return auth.identify(request)
    except Exception:  # the header is never worth failing a page, an error page least of all
        return None


def render(request: Request, template: str, *, status: int = 200,
           headers: dict[str, str] | None = None, who: Principal | None = None,
           **values: Any) -> HTMLResponse:
    """The page ``template`` with ``values``, the header's principal and the search box
    (which keeps what was searched on the search's own answers: a "not found" among them)."""
    if "q" not in values:
        searched = request.query_params.get("q", "") if request.url.path == "/search" else ""
        values["q"] = searched.strip()[:SEARCH_ECHO]
    response: HTMLResponse = TEMPLATES.TemplateResponse(
        request, template, {"who": who if who is not None else _who(request), **values},
        status_code=status, headers=headers)
    return response


def render_error(request: Request, status: int, message: str, *, hint: str | None = None,
                 headers: dict[str, str] | None = None) -> HTMLResponse:
    """An error as an HTML page (the status, what was wrong, the hint), escaped."""
    titles = {400: "Bad request", 401: "Login needed", 403: "Not allowed", 404: "Not found",
              405: "Not allowed", 409: "Conflict", 413: "Too large", 422: "Bad request",
              429: "Too many requests", 503: "Unavailable"}
    return render(request, "error.html", status=status, headers=headers,
                  title=titles.get(status, "Error"), status_code=status, message=message,
                  hint=hint)


def _answer_of(exc: Error) -> tuple[int, dict[str, str] | None, str, str | None]:
    """How an error is answered: its status, headers, message (naming where) and hint."""
    status = status_of(exc)
    headers = headers_of(exc)
    hint = exc.hint
    if isinstance(exc, Unauthorized) and not hint:
        hint = "log in with a token (alicorn api token create NAME --role ROLE makes one)"
    message = exc.message
    if exc.where and not message.startswith(exc.where):
        message = f"{exc.where}: {message}"
    return status, headers, message, hint


def _error_page(request: Request, exc: Error) -> HTMLResponse:
    status, headers, message, hint = _answer_of(exc)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc.diagnostics())
    return render_error(request, status, message, hint=hint, headers=headers)


class PageRoute(APIRoute):
    """A page route: Alicorn's errors are answered with the error page whatever the client
    accepts (the application's handler answers JSON unless it asks for text/html)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Error as exc:
                return _error_page(request, exc)

        return answer


router = APIRouter(include_in_schema=False, route_class=PageRoute)


def mount_static(app: FastAPI) -> None:
    """Serve ``static/`` under ``/static``."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _remote(request: Request) -> str | None:
    return request.client.host if request.client else None


def _audited(request: Request, who: Principal, action: str, target: str | None,
             error: Error) -> None:
    """Record a refused or failed write (auth.require records the 401s and 403s of who may
    not write at all), then let the error be answered."""
    status = status_of(error)
    outcome = "refused" if status < 500 else "failed"
    _ctx(request).audit.record(who, action, target=target, outcome=outcome, status=status,
                               detail=error.message, remote=_remote(request))


# -- builds ------------------------------------------------------------------------------
@router.get("/")
def home() -> RedirectResponse:
    return _see("/builds")


@router.get("/builds")
def builds_page(request: Request, state: str | None = None, before: str | None = None
                ) -> HTMLResponse:
    who = auth.reader(request)
    ctx = _ctx(request)
    limit = 50
    rows = queries.list_builds(ctx, state=state or None, limit=limit, before=before or None)
    running = any(b.get("state") in ("queued", "running") for b in rows)
    older = rows[-1]["id"] if len(rows) == limit else None
    return render(request, "builds.html", who=who, title="Builds", builds=rows,
                  state=state or "", refresh=running, older=older)


@router.get("/builds/{build_id}")
def build_page(request: Request, build_id: str) -> Response:
    who = auth.reader(request)
    ctx = _ctx(request)
    build = queries.build_detail(ctx, build_id)
    if build["id"] != build_id:
        return _see(f"/builds/{build['id']}")
    verification = queries.verification(ctx, build["id"])
    ended = build.get("state") in FINAL
    may_cancel = False
    if not ended:
        row = ctx.builds.get(build["id"])
        may_cancel = auth.may_cancel(who, row)
    base = (build.get("outputs") or {}).get("base_digest")
    return render(request, "build.html", who=who, title=f"Build {build['id']}", build=build,
                  verification=verification, ended=ended, may_cancel=may_cancel,
                  refresh=not ended, base_build=_build_of(ctx, base))


def _build_of(ctx: WebContext, digest: str | None) -> str | None:
    """The id of the build of this store that made the image ``digest``, if one did."""
    if not digest:
        return None
    try:
        return str(queries.resolve(ctx, digest)["build_id"])
    except Error:
        return None


@router.post("/builds/{build_id}/cancel")
def cancel_build(request: Request, build_id: str) -> Response:
    # A token that may submit (401/403, the same-origin check of a cookie: auth, audited).
    who = auth.submitter(request)
    ctx = _ctx(request)
    try:
        row = ctx.builds.get(build_id)
        if not auth.may_cancel(who, row):
            raise Forbidden(f"token {who.name} may not cancel build {row.id}: it did not "
                            "submit it", hint="a submitter cancels its own builds; an admin "
                            "any build")
        row = ctx.builds.request_cancel(row.id, who.name)
    except Error as e:
        _audited(request, who, "build.cancel", build_id, e)
        raise
    ctx.audit.record(who, "build.cancel", target=row.id, outcome="ok", status=303,
                     detail=f"state {row.state}", remote=_remote(request))
    return _see(f"/builds/{row.id}")


@router.get("/builds/{build_id}/logs/{name}")
def log_page(request: Request, build_id: str, name: str) -> Response:
    who = auth.reader(request)
    ctx = _ctx(request)
    if name not in LOG_NAMES:
        raise NotFound(f"build {build_id} has no log {name!r}",
                       hint="its logs: " + ", ".join(LOG_NAMES))
    if not re.fullmatch(r"[0-9a-fA-F]{1,32}", build_id):
        raise NotFound(f"no build {build_id[:100]!r}: a build id is up to 32 hex digits")
    build = queries.build_summary(ctx, ctx.builds.resolve(build_id.lower()))
    if build["id"] != build_id:
        return _see(f"/builds/{build['id']}/logs/{name}")
    ended = build.get("state") in FINAL
    written = [entry["name"] for entry in queries.logs(ctx, build["id"])]
    try:
        data, offset, complete = queries.read_log(ctx, build["id"], name, limit=LOG_PAGE_BYTES)
    except NotFound:
        if ended:
            raise NotFound(_never_written(build, name),
                           hint=("its logs: " + ", ".join(written)) if written else
                           "it wrote no log at all") from None
        # Not written yet (a queued build): the page follows it from its first byte.
        data, offset, complete = b"", 0, False
    # Show whole characters; the stream goes on from the first byte not shown.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(data, final=complete)
    offset -= len(decoder.getstate()[0])
    stream = f"{API_PREFIX}/builds/{build['id']}/logs/{name}/stream"
    return render(request, "log.html", who=who, title=f"{name} of build {build['id']}",
                  build=build, name=name, text=text, offset=offset, complete=complete,
                  stream=stream, others=[n for n in written if n != name])


# Why an ended build has no such log: (when it is done, when it failed).
_LOG_WHY = {"checks.log": ("its tests and gate were not run", "it failed before its checks"),
            "publish.log": ("its image was not pushed", "it failed before publishing")}


def _never_written(build: dict[str, Any], name: str) -> str:
    """Why an ended build has no log ``name``, in a sentence."""
    done, failed = _LOG_WHY.get(name, ("", ""))
    why = done if build.get("state") == "done" else failed
    return f"build {build['id']} has no {name}" + (f": {why}" if why else "")


@router.get("/search")
def search(request: Request, q: str = "") -> Response:
    auth.reader(request)
    q = q.strip()
    if not q:
        raise BadInput("the search box was empty",
                       hint="paste an image digest (sha256:…), an image reference or a build id")
    try:
        found = queries.resolve(_ctx(request), q)
    except NotFound as e:
        shown = q if len(q) <= 200 else q[:200] + "…"
        raise NotFound(f"nothing matched {shown!r}"
                       + ("" if shown in e.message else f": {e.message}"),
                       hint=e.hint or "search takes an image digest, an image reference "
                                      "or a build id") from e
    return _see(f"/builds/{found['build_id']}")


# -- advisories, events, modules, the transparency log ---------------------------------------
@router.get("/advisories")
def advisories_page(request: Request, q: str | None = None, severity: str | None = None,
                    offset: int = 0) -> HTMLResponse:
    who = auth.reader(request)
    limit = 50
    found = queries.advisories(_ctx(request), q=q or None, severity=severity or None,
                               limit=limit, offset=max(0, offset))
    total = int(found.get("total") or 0)
    return render(request, "advisories.html", who=who, title="Advisories", found=found,
                  aq=q or "", severity=severity or "", offset=max(0, offset), limit=limit,
                  total=total)


@router.get("/advisories/{advisory_id:path}")
def advisory_page(request: Request, advisory_id: str) -> HTMLResponse:
    who = auth.reader(request)
    adv = queries.advisory(_ctx(request), advisory_id)
    return render(request, "advisory.html", who=who, title=str(adv.get("id", advisory_id)),
                  adv=adv)


@router.get("/events")
def events_page(request: Request, state: str | None = None) -> HTMLResponse:
    who = auth.reader(request)
    found = queries.events(_ctx(request), state=state or None, limit=100)
    return render(request, "events.html", who=who, title="Events", events=found,
                  state=state or "")


@router.get("/events/{event_id}")
def event_page(request: Request, event_id: str) -> HTMLResponse:
    who = auth.reader(request)
    ev = queries.event(_ctx(request), event_id)
    rebuilds = ev.get("rebuilds")
    if rebuilds is None:
        rebuilds = ev.get("builds") or []
    return render(request, "event.html", who=who, title=f"Event {ev.get('id', event_id)}",
                  ev=ev, rebuilds=rebuilds)


@router.get("/modules")
def modules_page(request: Request) -> HTMLResponse:
    who = auth.reader(request)
    return render(request, "modules.html", who=who, title="Modules",
                  modules=queries.modules(_ctx(request)))


@router.get("/modules/{name}")
def module_page(request: Request, name: str) -> HTMLResponse:
    who = auth.reader(request)
    mod = queries.module(_ctx(request), name)
    history = list(reversed(mod.get("history") or []))  # newest first
    return render(request, "module.html", who=who, title=f"Module {mod.get('module', name)}",
                  mod=mod, history=history)


@router.get("/log")
def translog_page(request: Request) -> HTMLResponse:
    who = auth.reader(request)
    return render(request, "translog.html", who=who, title="Transparency log",
                  heads=queries.log_heads(_ctx(request)))


# -- submitting ------------------------------------------------------------------------------
def submit_build(ctx: WebContext, who: Principal, git: str, ref: str, recipe: str, *,
                 no_cache: bool = False) -> str:
    """Queue a build from the submit form through the API's own submission
    (alicorn.web.api.submit_build: the same checks, rate limit and options); its id."""
    from pydantic import ValidationError

    from alicorn.web import api

    fields = {"git": git.strip(), "ref": ref.strip(), "recipe": recipe.strip()}
    limits = {"git": 2048, "ref": 256, "recipe": 1024}
    for name, value in fields.items():
        if not value:
            raise BadInput(f"the {name} field is empty", where=name,
                           hint="a repository URL, a branch or tag, and the recipe's path in "
                                "the repository")
        if len(value) > limits[name]:
            raise BadInput(f"the {name} field is over {limits[name]} characters", where=name)
    try:
        body = api.SubmitIn(source=api.SourceIn(**fields),
                            options=api.OptionsIn(no_cache=no_cache))
    except ValidationError as e:
        raise BadInput(f"the form is not a build: {e.errors()[0].get('msg')}") from None
    row = api.submit_build(ctx, who, body, via="/submit")
    return str(row.id)


@router.get("/submit")
def submit_form(request: Request) -> HTMLResponse:
    return render(request, "submit.html", title="Submit a build", form={}, error=None)


@router.post("/submit")
def submit_post(request: Request, git: str = Form(""), ref: str = Form(""),
                recipe: str = Form(""), no_cache: str = Form("")) -> Response:
    ctx = _ctx(request)
    form = {"git": git, "ref": ref, "recipe": recipe, "no_cache": bool(no_cache)}
    try:
        # A submitter token (401/403, and the same-origin check of a cookie: auth, audited).
        who = auth.submitter(request)
        try:
            build_id = submit_build(ctx, who, git, ref, recipe, no_cache=bool(no_cache))
        except Error as e:
            _audited(request, who, "build.submit", None, e)
            raise
    except Error as e:
        # The form again, with what was wrong and what was typed; the status kept.
        status, headers, message, hint = _answer_of(e)
        return render(request, "submit.html", status=status, headers=headers,
                      title="Submit a build", form=form, error=message, hint=hint,
                      status_code=status)
    ctx.audit.record(who, "build.submit", target=build_id, outcome="ok", status=303,
                     remote=_remote(request))
    return _see(f"/builds/{build_id}")


# -- login, logout -----------------------------------------------------------------------------
@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    return render(request, "login.html", title="Log in", error=None)


@router.post("/login")
def login_post(request: Request, token: str = Form("")) -> Response:
    ctx = _ctx(request)
    try:
        # Another site must not log a visitor in under a token of its choosing.
        auth.check_same_origin(request)
    except Forbidden as e:
        ctx.audit.record(ANONYMOUS, "login", target=None, outcome="refused", status=403,
                         detail=e.message, remote=_remote(request))
        raise
    try:
        if not token.strip():
            raise Unauthorized("no token was given")
        who = ctx.tokens.authenticate(token.strip())
    except Unauthorized as e:
        ctx.audit.record(ANONYMOUS, "login", target=None, outcome="refused", status=401,
                         detail=e.message, remote=_remote(request))
        return render(request, "login.html", status=401, title="Log in", error=e.message,
                      who=ANONYMOUS if ctx.config.anonymous_read else None)
    ctx.audit.record(who, "login", target=who.name, outcome="ok", status=303,
                     remote=_remote(request))
    response = _see("/builds")
    response.set_cookie(auth.COOKIE, token.strip(), httponly=True, samesite="strict",
                        path="/", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    who = _who(request)        # a cookie from another site is refused (same-origin check)
    if who is None and auth.COOKIE in request.cookies:
        auth.check_same_origin(request)
    if who is not None and not who.anonymous:
        _ctx(request).audit.record(who, "logout", target=who.name, outcome="ok", status=303,
                                   remote=_remote(request))
    response = _see("/login")
    response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="strict")
    return response
