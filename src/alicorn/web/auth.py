"""Tokens and roles: who a request is, and whether it may do what it asks.

A token is ``alicorn_<id>_<secret>``, shown once when made; the database keeps its SHA-256
only.  Requests carry it as ``Authorization: Bearer <token>``; the pages keep it in an HttpOnly,
SameSite=Strict cookie (``COOKIE``) set by the login form.  A request without a token is the
anonymous reader when ``ApiConfig.anonymous_read`` is on, and gets a 401 otherwise.  A token
that is presented but malformed, unknown or revoked is always a 401: a request is never
silently downgraded to anonymous.

A request authenticated by the cookie that asks for a change (POST, PUT, PATCH, DELETE) must
come from this site's own pages: its Origin (or Referer) must name this host
(:func:`check_same_origin`), which stops cross-site form posts riding on the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.requests import Request  # at run time: FastAPI reads the dependencies' types

from alicorn.errors import BadInput, Conflict, NotFound
from alicorn.store.api_models import ApiTokenRow
from alicorn.store.db import session_factory
from alicorn.web.model import ANONYMOUS, API_PREFIX, Forbidden, Principal, Role, Unauthorized

if TYPE_CHECKING:
    from alicorn.web.app import WebContext

log = logging.getLogger("alicorn.web.auth")

COOKIE = "alicorn_token"

NAME_RULE = "[a-z0-9][a-z0-9._-]{0,63}"
_NAME = re.compile(NAME_RULE)
_TOKEN = re.compile(r"alicorn_([0-9a-f]{8})_([A-Za-z0-9_-]{32,128})")
# How long an authenticated token is believed without asking the database again (a revoke
# through another process, e.g. `alicorn api token revoke`, takes at most this long), and how
# often a token's last use is written.
CACHE_SECONDS = 5.0
TOUCH_SECONDS = 60.0
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never its secret)."""

    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "role": self.role.value,
                "created_at": _stamp(self.created_at), "created_by": self.created_by,
                "revoked_at": _stamp(self.revoked_at),
                "last_used_at": _stamp(self.last_used_at), "active": self.active}

    @classmethod
    def of(cls, row: ApiTokenRow) -> TokenInfo:
        """The info of a database row."""
        return cls(id=row.id, name=row.name, role=Role(row.role), created_at=row.created_at,
                   created_by=row.created_by, revoked_at=row.revoked_at,
                   last_used_at=row.last_used_at)


def check_name(name: str) -> str:
    """``name`` if it is a valid token name; BadInput naming the rule otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInput(f"token name {name!r} is not valid: a name is 1 to 64 characters "
                       f"matching {NAME_RULE} (lower-case letters, digits, '.', '_', '-'; "
                       "starting with a letter or digit)", where="name")
    return name


@dataclass
class _Cached:
    info: TokenInfo
    digest: str
    until: float           # time.monotonic() after which the database is asked again


class TokenStore:
    """The API's tokens (table ``api_tokens``)."""

    def __init__(self, database_url: str, *, cache_seconds: float = CACHE_SECONDS):
        self._sessions = session_factory(database_url)
        self._cache_seconds = cache_seconds
        self._cache: dict[str, _Cached] = {}     # by token id
        self._touched: dict[str, float] = {}     # token id -> monotonic time of the last write
        self._lock = threading.Lock()

    def create(self, name: str, role: Role, *, created_by: str) -> tuple[TokenInfo, str]:
        """A new token: its info and its secret (the only time the secret exists)."""
        check_name(name)
        role = Role.parse(role) if not isinstance(role, Role) else role
        for _ in range(5):
            token_id = secrets.token_hex(4)
            secret = f"alicorn_{token_id}_{secrets.token_urlsafe(32)}"
            row = ApiTokenRow(id=token_id, name=name, role=role.value,
                              secret_sha256=_digest(secret), created_at=_now(),
                              created_by=created_by[:128], revoked_at=None, last_used_at=None)
            try:
                with self._sessions.begin() as s:
                    if s.scalar(select(ApiTokenRow.id).where(ApiTokenRow.name == name)):
                        raise Conflict(f"a token named {name!r} exists already",
                                       where="name",
                                       hint="pick another name, or revoke it and use a new "
                                            "name (names are never reused)")
                    s.add(row)
            except IntegrityError:
                # A concurrent create of the same name, or (1 in 4 billion) the same id.
                with self._sessions() as s:
                    if s.scalar(select(ApiTokenRow.id).where(ApiTokenRow.name == name)):
                        raise Conflict(f"a token named {name!r} exists already",
                                       where="name") from None
                continue
            return TokenInfo.of(row), secret
        raise Conflict("could not pick a free token id; try again")  # pragma: no cover

    def list(self) -> list[TokenInfo]:
        """Every token, active or revoked, oldest first."""
        with self._sessions() as s:
            rows = s.scalars(select(ApiTokenRow)
                             .order_by(ApiTokenRow.created_at, ApiTokenRow.name)).all()
        return [TokenInfo.of(r) for r in rows]

    def get(self, name: str) -> TokenInfo:
        """The token ``name``; NotFound when there is none."""
        with self._sessions() as s:
            row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.name == name))
        if row is None:
            raise NotFound(f"no token named {name!r}", hint="`alicorn api token list`")
        return TokenInfo.of(row)

    def revoke(self, name: str) -> TokenInfo:
        """Revoke the token ``name``: it authenticates nothing from now on (at once through
        this store; within ``CACHE_SECONDS`` in other processes)."""
        with self._sessions.begin() as s:
            row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.name == name))
            if row is None:
                raise NotFound(f"no token named {name!r}",
                               hint="`alicorn api token list` shows the tokens")
            if row.revoked_at is not None:
                raise Conflict(f"token {name!r} was revoked already, at "
                               f"{_stamp(row.revoked_at)}")
            at = _now()
            done = s.execute(update(ApiTokenRow)
                             .where(ApiTokenRow.id == row.id, ApiTokenRow.revoked_at.is_(None))
                             .values(revoked_at=at))
            if getattr(done, "rowcount", 1) != 1:
                raise Conflict(f"token {name!r} was revoked already")
            row.revoked_at = at
            info = TokenInfo.of(row)
        with self._lock:
            self._cache.pop(info.id, None)
        return info

    def authenticate(self, secret: str) -> Principal:
        """The principal of a presented token; Unauthorized (naming why: malformed, unknown,
        revoked) otherwise."""
        match = _TOKEN.fullmatch(secret.strip()) if isinstance(secret, str) else None
        if match is None:
            raise Unauthorized("malformed token: a token looks like alicorn_<8 hex>_<secret>",
                               hint="copy it whole, as `alicorn api token create` printed it")
        token_id = match.group(1)
        digest = _digest(match.group(0))
        clock = time.monotonic()
        with self._lock:
            cached = self._cache.get(token_id)
        if cached is not None and cached.until > clock and \
                hmac.compare_digest(cached.digest, digest):
            info = cached.info
        else:
            with self._sessions() as s:
                row = s.get(ApiTokenRow, token_id)
            # The same answer whether the id is unknown or the secret is wrong: an unknown
            # token says nothing about which ids exist.
            if row is None or not hmac.compare_digest(row.secret_sha256, digest):
                raise Unauthorized("unknown token",
                                   hint="`alicorn api token list` shows the tokens; an admin "
                                        "makes one with `alicorn api token create`")
            info = TokenInfo.of(row)
            if info.revoked_at is None:
                with self._lock:
                    self._cache[token_id] = _Cached(info, row.secret_sha256,
                                                    clock + self._cache_seconds)
        if info.revoked_at is not None:
            with self._lock:
                self._cache.pop(token_id, None)
            raise Unauthorized(f"token {info.name} was revoked at {_stamp(info.revoked_at)}",
                               hint="ask an admin for a new token")
        self._touch(info, clock)
        return Principal(name=info.name, role=info.role, token_id=info.id)

    def _touch(self, info: TokenInfo, clock: float) -> None:
        """Write the token's last use, at most once a minute (not once per request)."""
        with self._lock:
            last = self._touched.get(info.id)
            if last is not None and clock - last < TOUCH_SECONDS:
                return
            self._touched[info.id] = clock
        at = _now()
        if last is None and info.last_used_at is not None and \
                (at - info.last_used_at).total_seconds() < TOUCH_SECONDS:
            return
        try:
            with self._sessions.begin() as s:
                s.execute(update(ApiTokenRow).where(ApiTokenRow.id == info.id)
                          .values(last_used_at=at))
        except SQLAlchemyError as e:  # a busy database must not fail the request itself
            log.warning("cannot record the last use of token %s: %s", info.name, e)


# -- FastAPI dependencies -------------------------------------------------------------------
def _context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def presented(request: Request) -> tuple[str, str] | None:
    """The token the request carries and how (``"bearer"`` or ``"cookie"``); None when it
    carries none.  Unauthorized when the Authorization header is there but not a bearer
    token."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized(f"the Authorization header's scheme is {scheme[:20]!r}; this "
                               "service takes 'Bearer <token>'", where="Authorization")
        if not value.strip():
            raise Unauthorized("the Authorization header has an empty bearer token",
                               where="Authorization",
                               hint="send 'Authorization: Bearer alicorn_...'")
        return value.strip(), "bearer"
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return cookie, "cookie"
    return None


def identify(request: Request) -> Principal:
    """Who the request is by its token, or ANONYMOUS when it carries none, whatever the
    anonymous-read setting (for pages such as /login that anybody may see).  A presented bad
    token is Unauthorized; a cookie-authenticated change must pass :func:`check_same_origin`.
    """
    known: Principal | None = getattr(request.state, "alicorn_principal", None)
    if known is not None:
        return known
    token = presented(request)
    if token is None:
        who = ANONYMOUS
    else:
        secret, via = token
        where = "Authorization" if via == "bearer" else f"cookie {COOKIE}"
        try:
            who = _context(request).tokens.authenticate(secret)
        except Unauthorized as e:
            request.state.alicorn_claimed = claimed(secret)   # who the audit names
            raise Unauthorized(e.message, where=where, hint=e.hint) from None
        request.state.alicorn_claimed = who      # for the audit of a refusal below
        if via == "cookie":
            check_same_origin(request)
    request.state.alicorn_principal = who
    return who


def claimed(secret: str) -> Principal:
    """Who a refused token claims to be, for the audit trail: its id (the part of the token
    that is not secret) when it has the shape of one; never the secret."""
    parts = secret.split("_", 2)
    if len(parts) == 3 and parts[0] == "alicorn" and re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        return Principal(name=f"refused token {parts[1]}", role=None)
    return Principal(name="malformed token", role=None)


def principal(request: Request) -> Principal:
    """FastAPI dependency: who the request is (Bearer header, else the cookie, else
    anonymous — which is refused with 401 when anonymous reads are off)."""
    who = identify(request)
    if who.anonymous and not _context(request).config.anonymous_read:
        raise Unauthorized("this service needs a token (anonymous reads are off)",
                           hint="send 'Authorization: Bearer <token>' or log in; an admin "
                                "makes tokens with `alicorn api token create NAME --role "
                                "reader`")
    return who


def reader(request: Request) -> Principal:
    """Dependency for reads: anonymous allowed when the setting says so."""
    return principal(request)


def require(request: Request, role: Role) -> Principal:
    """The request's principal if it holds ``role`` (or more); 401 without a token, 403 with
    a weaker one.  A refused change (POST, PUT, PATCH, DELETE) is recorded in the audit trail
    (action: :func:`action_of`)."""
    try:
        who = identify(request)
        if who.anonymous:
            raise Unauthorized(f"this needs a token with role {role.value}"
                               + (" or more" if role is not Role.ADMIN else "")
                               + "; the request carries none",
                               hint="send 'Authorization: Bearer <token>' or log in")
        if not who.can(role):
            raise Forbidden(f"this needs role {role.value}; token {who.name} has role "
                            f"{who.role.value if who.role else 'none'}",
                            hint="an admin can make a token with that role: `alicorn api "
                                 f"token create NAME --role {role.value}`")
    except (Unauthorized, Forbidden) as e:
        if request.method in UNSAFE_METHODS:
            _audit_refusal(request, e)
        raise
    return who


def submitter(request: Request) -> Principal:
    """Dependency for submissions: a token with role submitter or admin (401 / 403)."""
    return require(request, Role.SUBMITTER)


def admin(request: Request) -> Principal:
    """Dependency for token management and the audit trail: role admin (401 / 403)."""
    return require(request, Role.ADMIN)


def may_cancel(who: Principal, row: Any) -> bool:
    """Whether ``who`` may cancel the build ``row`` (a BuildRow or anything with
    ``submitted_token``): an admin any build, a submitter the builds its token submitted."""
    if who.can(Role.ADMIN):
        return True
    token = getattr(row, "submitted_token", None)
    return who.can(Role.SUBMITTER) and who.token_id is not None and token is not None and \
        hmac.compare_digest(str(token), who.token_id)


# -- CSRF -----------------------------------------------------------------------------------
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_of(url: str, default_scheme: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host, port if port is not None else _DEFAULT_PORTS.get(
        parts.scheme or default_scheme)


def check_same_origin(request: Request) -> None:
    """For a change (POST, PUT, PATCH, DELETE) that is not bearer-authenticated: the Origin
    header (or, without one, the Referer) must name this host (or ``api.public_url``);
    Forbidden otherwise.  A bearer token cannot be sent by a cross-site form, so such requests
    pass."""
    if request.method not in UNSAFE_METHODS:
        return
    if request.headers.get("authorization", "").strip().lower().startswith("bearer "):
        return
    scheme = request.url.scheme
    allowed = {_origin_of(request.headers.get("host", ""), scheme)}
    public = getattr(getattr(_context_or_none(request), "config", None), "public_url", None)
    if public:
        allowed.add(_origin_of(public, scheme))
    allowed.discard(None)
    origin = request.headers.get("origin")
    source, header = (origin, "Origin") if origin and origin != "null" else \
        (request.headers.get("referer"), "Referer")
    if not source:
        raise Forbidden("a change made with the login cookie must come from this site's "
                        "pages, and this request has no Origin or Referer header",
                        hint="API clients send 'Authorization: Bearer <token>' instead")
    if _origin_of(source, scheme) not in allowed:
        raise Forbidden(f"a change made with the login cookie must come from this site's "
                        f"pages; this request's {header} is {source[:200]!r}",
                        where=header,
                        hint="API clients send 'Authorization: Bearer <token>' instead")


def _context_or_none(request: Request) -> WebContext | None:
    return getattr(request.app.state, "ctx", None)


# -- auditing refusals ------------------------------------------------------------------------
class _Route(Protocol):
    path: str


# Actions of the writes (method, route template with its parameters as "{}").
ACTIONS = {
    ("POST", f"{API_PREFIX}/builds"): "build.submit",
    ("POST", "/submit"): "build.submit",
    ("POST", f"{API_PREFIX}/builds/{{}}/cancel"): "build.cancel",
    ("POST", "/builds/{}/cancel"): "build.cancel",
    ("PUT", f"{API_PREFIX}/builds/{{}}"): "build.change",
    ("PATCH", f"{API_PREFIX}/builds/{{}}"): "build.change",
    ("DELETE", f"{API_PREFIX}/builds/{{}}"): "build.change",
    ("POST", f"{API_PREFIX}/tokens"): "token.create",
    ("DELETE", f"{API_PREFIX}/tokens/{{}}"): "token.revoke",
    ("POST", "/login"): "login",
    ("POST", "/logout"): "logout",
}
_PARAM = re.compile(r"\{[^}]*\}")


def action_of(request: Request) -> tuple[str, str | None]:
    """The audit action of a request (e.g. ``build.submit``; ``"POST /x/{}"`` when it is not a
    known write) and its target (the first path parameter, e.g. the build id)."""
    template = _template(request)
    action = ACTIONS.get((request.method, template), f"{request.method} {template}")
    params = list(request.path_params.values())
    return action, str(params[0]) if params else None


def _template(request: Request) -> str:
    """The request's route template from the root, parameters as ``{}``: the matched route
    knows its path below the router's prefix only, so the prefix is taken from the path."""
    path: str = request.scope.get("path") or request.url.path
    route: _Route | None = request.scope.get("route")
    if route is None:
        return path
    relative = route.path.split("/")[1:]
    actual = path.split("/")
    if ":path}" in route.path or len(relative) > len(actual):
        values = {str(v) for v in request.path_params.values()}
        return "/".join("{}" if part in values else part for part in actual)
    tail = ["{}" if _PARAM.fullmatch(part) else part for part in relative]
    return "/".join(actual[:len(actual) - len(relative)] + tail)


def remote_of(request: Request) -> str | None:
    """The client's address, for the audit trail."""
    return request.client.host if request.client else None


def _audit_refusal(request: Request, error: Unauthorized | Forbidden) -> None:
    ctx = _context_or_none(request)
    if ctx is None:
        return
    action, target = action_of(request)
    who = getattr(request.state, "alicorn_claimed", None) or ANONYMOUS
    try:
        ctx.audit.record(who, action, target=target, outcome="refused",
                         status=401 if isinstance(error, Unauthorized) else 403,
                         detail=error.message, remote=remote_of(request))
    except Exception as e:  # the refusal stands even if it cannot be written down
        log.warning("cannot audit a refused %s: %s", action, e)
