"""Tokens, roles, the cookie and its CSRF check, and the submission rate limit, through real
HTTP (FastAPI's TestClient) on a small app built from alicorn.web.auth's dependencies and a
real SQLite store in a tmp ALICORN_HOME."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient
from sqlalchemy import select

from alicorn.config import Settings, load_settings
from alicorn.errors import BadInput, Conflict, Error, NotFound
from alicorn.store.api_models import ApiTokenRow
from alicorn.store.builds import BuildStore, Submission
from alicorn.store.db import session_factory
from alicorn.web import auth
from alicorn.web.app import WebContext, error_body, status_of
from alicorn.web.audit import AuditTrail
from alicorn.web.auth import COOKIE, TokenStore, may_cancel
from alicorn.web.model import (
    ANONYMOUS,
    ApiConfig,
    Forbidden,
    Principal,
    RateLimited,
    Role,
    Unauthorized,
)
from alicorn.web.ratelimit import SubmissionLimiter

Reader = Annotated[Principal, Depends(auth.reader)]
Submitter = Annotated[Principal, Depends(auth.submitter)]
Admin = Annotated[Principal, Depends(auth.admin)]


# -- a small app: the dependencies under test behind routes shaped like the real API's ---------
def make_app(settings: Settings, config: ApiConfig) -> FastAPI:
    app = FastAPI()
    app.state.ctx = WebContext(
        settings=settings, config=config, builds=BuildStore(settings.database_url),
        tokens=TokenStore(settings.database_url), audit=AuditTrail(settings.database_url),
        limiter=SubmissionLimiter(config.submissions_per_minute))

    @app.exception_handler(Error)
    async def on_error(request: Request, exc: Error) -> Response:
        # As alicorn.web.app.create_app answers errors.
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": 'Bearer realm="alicorn"'}
        status = status_of(exc)
        return JSONResponse(error_body(status, exc.message, where=exc.where, hint=exc.hint),
                            status_code=status, headers=headers)

    @app.get("/api/v1/whoami")
    def whoami(who: Reader) -> dict[str, Any]:
        return {"name": who.name, "role": who.role.value if who.role else None,
                "anonymous": who.anonymous}

    @app.post("/api/v1/builds", status_code=202)
    def submit(request: Request, who: Submitter) -> dict[str, Any]:
        ctx: WebContext = request.app.state.ctx
        ctx.limiter.take(who)
        row = ctx.builds.submit(Submission(argv=["alicorn-api"], source_kind="git",
                                           recipe_path="pony.yaml", source_url="https://x",
                                           source_ref="main", submitter=who.name,
                                           token=who.token_id))
        ctx.audit.record(who, "build.submit", target=row.id, outcome="ok", status=202)
        return {"build_id": row.id}

    @app.post("/api/v1/builds/{build_id}/cancel", status_code=202)
    def cancel(build_id: str, request: Request,
               who: Submitter) -> dict[str, Any]:
        ctx: WebContext = request.app.state.ctx
        row = ctx.builds.get(build_id)
        if not may_cancel(who, row):
            raise Forbidden(f"build {build_id} is not yours to cancel")
        return {"build_id": build_id, "cancel_requested": True}

    @app.get("/api/v1/audit")
    def audit(request: Request, who: Admin) -> list[dict[str, Any]]:
        ctx: WebContext = request.app.state.ctx
        return ctx.audit.entries()

    @app.post("/api/v1/tokens", status_code=201)
    def tokens(request: Request, who: Admin) -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ALICORN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ALICORN_DATABASE_URL", raising=False)
    return load_settings()


Factory = Callable[..., tuple[TestClient, dict[str, str]]]


@pytest.fixture
def client(settings: Settings) -> Factory:
    """``client(anonymous_read=..., submissions_per_minute=...)``: a TestClient on the small
    app and a token secret for each role (keys reader, submitter, admin, submitter2)."""

    secrets: dict[str, str] = {}

    def make(**options: Any) -> tuple[TestClient, dict[str, str]]:
        config = ApiConfig()
        for key, value in options.items():
            config.set(key, value)
        app = make_app(settings, config)
        store: TokenStore = app.state.ctx.tokens
        if not secrets:
            for name, role in (("reader", Role.READER), ("submitter", Role.SUBMITTER),
                               ("admin", Role.ADMIN), ("submitter2", Role.SUBMITTER)):
                secrets[name] = store.create(name, role, created_by="test")[1]
        return TestClient(app), secrets

    return make


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# -- TokenStore ---------------------------------------------------------------------------
def test_token_is_shown_once_and_only_its_sha256_is_stored(settings: Settings) -> None:
    store = TokenStore(settings.database_url)
    info, secret = store.create("ci-bot", Role.SUBMITTER, created_by="test")
    prefix, token_id, rest = secret.split("_", 2)
    assert prefix == "alicorn" and token_id == info.id and len(token_id) == 8
    assert len(rest) >= 43
    with session_factory(settings.database_url)() as s:
        row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.name == "ci-bot"))
    assert row is not None
    assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert rest not in " ".join(str(v) for v in vars(row).values())
    assert "token" not in info.to_json() and rest not in str(info.to_json())
    who = store.authenticate(secret)
    assert who == Principal(name="ci-bot", role=Role.SUBMITTER, token_id=info.id)


@pytest.mark.parametrize("name", ["", "Upper", "-dash-first", "has space", "a" * 65, "é",
                                  "x/y"])
def test_bad_token_names_are_refused_naming_the_rule(settings: Settings, name: str) -> None:
    with pytest.raises(BadInput) as e:
        TokenStore(settings.database_url).create(name, Role.READER, created_by="test")
    assert "[a-z0-9][a-z0-9._-]{0,63}" in e.value.message


def test_names_are_unique_and_revoke_is_once(settings: Settings) -> None:
    store = TokenStore(settings.database_url)
    _, secret = store.create("a.b_c-1", Role.READER, created_by="test")
    with pytest.raises(Conflict, match="exists already"):
        store.create("a.b_c-1", Role.ADMIN, created_by="test")
    assert [t.name for t in store.list()] == ["a.b_c-1"]
    with pytest.raises(NotFound, match="no token named 'nope'"):
        store.revoke("nope")
    info = store.revoke("a.b_c-1")
    assert info.revoked_at is not None and not info.active
    with pytest.raises(Conflict, match="revoked already"):
        store.revoke("a.b_c-1")
    with pytest.raises(Unauthorized, match=r"token a\.b_c-1 was revoked at 20"):
        store.authenticate(secret)


def test_authenticate_names_why(settings: Settings) -> None:
    store = TokenStore(settings.database_url)
    info, secret = store.create("x", Role.READER, created_by="test")
    for bad in ("", "nonsense", "alicorn_zzzzzzzz_" + "a" * 43, secret[:-30]):
        with pytest.raises(Unauthorized, match="malformed token"):
            store.authenticate(bad)
    with pytest.raises(Unauthorized, match="unknown token"):
        store.authenticate("alicorn_0123abcd_" + "a" * 43)
    # The right id with a wrong secret says nothing more than an unknown id.
    with pytest.raises(Unauthorized, match=r"^unknown token"):
        store.authenticate(f"alicorn_{info.id}_" + "b" * 43)


def test_last_use_is_written_at_most_once_a_minute(settings: Settings) -> None:
    store = TokenStore(settings.database_url)
    _, secret = store.create("x", Role.READER, created_by="test")
    assert store.list()[0].last_used_at is None
    store.authenticate(secret)
    first = store.list()[0].last_used_at
    assert first is not None
    for _ in range(5):
        store.authenticate(secret)
    assert store.list()[0].last_used_at == first
    # A second store (another process) within the minute does not write either.
    TokenStore(settings.database_url).authenticate(secret)
    assert store.list()[0].last_used_at == first


def test_revoke_takes_effect_at_once_here_and_within_the_cache_elsewhere(
        settings: Settings) -> None:
    serving = TokenStore(settings.database_url)                    # e.g. the service
    other = TokenStore(settings.database_url)                      # e.g. the CLI
    fresh = TokenStore(settings.database_url, cache_seconds=0)
    _, one = serving.create("one", Role.READER, created_by="test")
    _, two = serving.create("two", Role.READER, created_by="test")
    for store in (serving, fresh):
        store.authenticate(one)
        store.authenticate(two)
    serving.revoke("one")
    with pytest.raises(Unauthorized, match="revoked"):
        serving.authenticate(one)
    other.revoke("two")
    assert serving.authenticate(two).name == "two"     # believed for CACHE_SECONDS at most
    with pytest.raises(Unauthorized, match="revoked"):
        fresh.authenticate(two)


# -- roles --------------------------------------------------------------------------------
ROUTES = {"read": ("GET", "/api/v1/whoami"), "submit": ("POST", "/api/v1/builds"),
          "audit": ("GET", "/api/v1/audit"), "tokens": ("POST", "/api/v1/tokens")}
EXPECTED = {
    # who: read, submit, audit, tokens
    "anonymous": (200, 401, 401, 401),
    "reader": (200, 403, 403, 403),
    "submitter": (200, 202, 403, 403),
    "admin": (200, 202, 200, 201),
}


@pytest.mark.parametrize("anonymous_read", [True, False])
@pytest.mark.parametrize("who", list(EXPECTED))
def test_roles(client: Factory, who: str, anonymous_read: bool) -> None:
    c, secrets = client(anonymous_read=anonymous_read)
    headers = bearer(secrets[who]) if who != "anonymous" else {}
    for (what, (method, path)), expected in zip(ROUTES.items(), EXPECTED[who], strict=True):
        if who == "anonymous" and what == "read" and not anonymous_read:
            expected = 401
        r = c.request(method, path, headers=headers)
        assert r.status_code == expected, (who, what, r.text)
        if expected == 401:
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        if expected == 403:
            message = r.json()["error"]["message"]
            needed = "submitter" if what == "submit" else "admin"
            assert f"needs role {needed}" in message and f"has role {who}" in message
    if who != "anonymous":
        assert c.get("/api/v1/whoami", headers=headers).json() == {
            "name": who, "role": who, "anonymous": False}


def test_anonymous_whoami(client: Factory) -> None:
    c, _ = client(anonymous_read=True)
    assert c.get("/api/v1/whoami").json() == {"name": "anonymous", "role": None,
                                             "anonymous": True}
    c, _ = client(anonymous_read=False)
    r = c.get("/api/v1/whoami")
    assert r.status_code == 401
    assert "anonymous reads are off" in r.json()["error"]["message"]


@pytest.mark.parametrize("anonymous_read", [True, False])
@pytest.mark.parametrize(("header", "reason"), [
    ("Bearer nonsense", "malformed token"),
    ("Bearer alicorn_0123abcd_" + "a" * 43, "unknown token"),
    ("Bearer ", "empty bearer token"),
    ("Bearer    ", "empty bearer token"),
    ("Basic dXNlcjpwYXNz", "scheme is 'Basic'"),
    ("alicorn_0123abcd_" + "a" * 43, "this service takes 'Bearer <token>'"),
])
def test_bad_tokens_are_401_even_with_anonymous_reads(client: Factory, header: str,
                                                      reason: str,
                                                      anonymous_read: bool) -> None:
    c, _ = client(anonymous_read=anonymous_read)
    for method, path in ROUTES.values():
        r = c.request(method, path, headers={"Authorization": header})
        assert r.status_code == 401, (path, r.text)
        error = r.json()["error"]
        assert error["status"] == 401 and error["code"] == "unauthorized"
        assert reason in error["message"]
        assert error["where"] == "Authorization"


def test_revoked_token_is_401_naming_it(client: Factory, settings: Settings) -> None:
    c, secrets = client()
    assert c.get("/api/v1/whoami", headers=bearer(secrets["reader"])).status_code == 200
    c.app.state.ctx.tokens.revoke("reader")  # type: ignore[attr-defined]
    r = c.get("/api/v1/whoami", headers=bearer(secrets["reader"]))
    assert r.status_code == 401
    assert "token reader was revoked at" in r.json()["error"]["message"]


def test_refused_writes_are_audited(client: Factory) -> None:
    c, secrets = client()
    assert c.post("/api/v1/builds", headers=bearer(secrets["reader"])).status_code == 403
    assert c.post("/api/v1/builds").status_code == 401
    assert c.post("/api/v1/builds", headers=bearer("junk")).status_code == 401
    # A revoked token is named by its id (the part that is not secret), never its secret.
    c.app.state.ctx.tokens.revoke("submitter")  # type: ignore[attr-defined]
    assert c.post("/api/v1/builds", headers=bearer(secrets["submitter"])).status_code == 401
    revoked_id = secrets["submitter"].split("_", 2)[1]
    # A refused read is not a write: not audited.
    assert c.get("/api/v1/audit", headers=bearer(secrets["reader"])).status_code == 403
    entries = c.get("/api/v1/audit", headers=bearer(secrets["admin"])).json()
    assert not any(secrets["submitter"] in str(e) for e in entries)
    assert [(e["actor"], e["role"], e["action"], e["outcome"], e["status"])
            for e in entries] == [
        (f"refused token {revoked_id}", "anonymous", "build.submit", "refused", 401),
        ("malformed token", "anonymous", "build.submit", "refused", 401),
        ("anonymous", "anonymous", "build.submit", "refused", 401),
        ("reader", "reader", "build.submit", "refused", 403),
    ]
    assert "was revoked at" in entries[0]["detail"]
    assert "malformed token" in entries[1]["detail"]
    assert entries[3]["remote"] == "testclient"


# -- cancel: own builds only ----------------------------------------------------------------
def test_submitter_may_cancel_only_its_own_builds(client: Factory) -> None:
    c, secrets = client()
    r = c.post("/api/v1/builds", headers=bearer(secrets["submitter"]))
    assert r.status_code == 202
    build_id = r.json()["build_id"]
    row = c.app.state.ctx.builds.get(build_id)  # type: ignore[attr-defined]
    assert row.submitted_token == secrets["submitter"].split("_")[1]
    path = f"/api/v1/builds/{build_id}/cancel"
    assert c.post(path, headers=bearer(secrets["submitter"])).status_code == 202
    r = c.post(path, headers=bearer(secrets["submitter2"]))
    assert r.status_code == 403 and "not yours" in r.json()["error"]["message"]
    assert c.post(path, headers=bearer(secrets["admin"])).status_code == 202
    assert c.post(path, headers=bearer(secrets["reader"])).status_code == 403


def test_may_cancel() -> None:
    class Row:
        submitted_token: str | None = "0123abcd"

    mine = Principal("s", Role.SUBMITTER, "0123abcd")
    assert may_cancel(mine, Row())
    assert not may_cancel(Principal("t", Role.SUBMITTER, "99999999"), Row())
    assert not may_cancel(Principal("r", Role.READER, "0123abcd"), Row())
    assert may_cancel(Principal("a", Role.ADMIN, "99999999"), Row())
    assert not may_cancel(ANONYMOUS, Row())
    Row.submitted_token = None        # submitted from the command line: admins only
    assert not may_cancel(mine, Row())
    assert may_cancel(Principal("a", Role.ADMIN, "99999999"), Row())


# -- the cookie and the same-origin check ---------------------------------------------------
def test_cookie_authenticates_and_changes_need_same_origin(client: Factory) -> None:
    c, secrets = client(anonymous_read=False)
    c.cookies.set(COOKIE, secrets["submitter"])
    r = c.get("/api/v1/whoami")
    assert r.status_code == 200 and r.json()["role"] == "submitter"
    # A cross-site form post (or one with no Origin/Referer at all) is refused ...
    r = c.post("/api/v1/builds")
    assert r.status_code == 403 and "no Origin or Referer" in r.json()["error"]["message"]
    r = c.post("/api/v1/builds", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert "Origin is 'https://evil.example'" in r.json()["error"]["message"]
    r = c.post("/api/v1/builds", headers={"Origin": "http://testserver:8080"})
    assert r.status_code == 403
    r = c.post("/api/v1/builds", headers={"Origin": "null",
                                          "Referer": "http://evil.example/x"})
    assert r.status_code == 403 and "Referer" in r.json()["error"]["message"]
    # ... one from this site's pages passes.
    assert c.post("/api/v1/builds", headers={"Origin": "http://testserver"}).status_code == 202
    assert c.post("/api/v1/builds",
                  headers={"Referer": "http://testserver/submit"}).status_code == 202
    # A bearer token is not sent by a browser on its own: no Origin check.
    c.cookies.clear()
    assert c.post("/api/v1/builds", headers={**bearer(secrets["submitter"]),
                                             "Origin": "https://evil.example"}
                  ).status_code == 202
    audit = c.get("/api/v1/audit", headers=bearer(secrets["admin"])).json()
    refused = [e for e in audit if e["outcome"] == "refused"]
    assert len(refused) == 4 and all(e["actor"] == "submitter" and e["status"] == 403
                                     for e in refused)


def test_public_url_counts_as_same_origin(client: Factory) -> None:
    c, secrets = client(public_url="https://alicorn.example.org")
    c.cookies.set(COOKIE, secrets["submitter"])
    assert c.post("/api/v1/builds",
                  headers={"Origin": "https://alicorn.example.org"}).status_code == 202
    assert c.post("/api/v1/builds",
                  headers={"Origin": "https://alicorn.example.org:444"}).status_code == 403


def test_bad_cookie_is_401_not_anonymous(client: Factory) -> None:
    c, secrets = client(anonymous_read=True)
    c.cookies.set(COOKIE, "alicorn_0123abcd_" + "a" * 43)
    r = c.get("/api/v1/whoami")
    assert r.status_code == 401
    assert r.json()["error"]["where"] == f"cookie {COOKIE}"
    # The header wins over the cookie.
    r = c.get("/api/v1/whoami", headers=bearer(secrets["reader"]))
    assert r.status_code == 200 and r.json()["role"] == "reader"


# -- the rate limit -----------------------------------------------------------------------
def test_submissions_are_rate_limited_per_token(client: Factory) -> None:
    c, secrets = client(submissions_per_minute=2)
    for _ in range(2):
        assert c.post("/api/v1/builds", headers=bearer(secrets["submitter"])).status_code == 202
    r = c.post("/api/v1/builds", headers=bearer(secrets["submitter"]))
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 30
    assert "the limit is 2 a minute" in r.json()["error"]["message"]
    assert r.json()["error"]["code"] == "rate_limited"
    # Another token has its own bucket.
    assert c.post("/api/v1/builds", headers=bearer(secrets["submitter2"])).status_code == 202


def test_submissions_off(client: Factory) -> None:
    c, secrets = client(submissions_per_minute=0)
    r = c.post("/api/v1/builds", headers=bearer(secrets["admin"]))
    assert r.status_code == 429
    assert r.json()["error"]["message"] == \
        "submissions are off (api.submissions_per_minute is 0)"


def test_token_bucket_refills() -> None:
    now = [1000.0]
    limiter = SubmissionLimiter(6, clock=lambda: now[0])      # one every 10 s
    a, b = Principal("a", Role.SUBMITTER, "1"), Principal("b", Role.SUBMITTER, "2")
    for _ in range(6):
        limiter.take(a)
    with pytest.raises(RateLimited) as e:
        limiter.take(a)
    assert e.value.retry_after == pytest.approx(10.0)
    assert "try again in 10 s" in e.value.message
    limiter.take(b)
    now[0] += 4.0
    with pytest.raises(RateLimited) as e:
        limiter.take(a)
    assert e.value.retry_after == pytest.approx(6.0)
    now[0] += 6.0
    limiter.take(a)
    assert limiter.remaining(a) == 0
    now[0] += 3600.0                                           # never more than a burst
    assert limiter.remaining(a) == 6
    for _ in range(6):
        limiter.take(a)
    with pytest.raises(RateLimited):
        limiter.take(a)


def test_token_bucket_is_thread_safe() -> None:
    import threading

    limiter = SubmissionLimiter(50, clock=lambda: 0.0)
    who = Principal("a", Role.SUBMITTER, "1")
    taken: list[int] = []

    def worker() -> None:
        for _ in range(20):
            try:
                limiter.take(who)
                taken.append(1)
            except RateLimited:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 50


# -- the same through the real application ----------------------------------------------------
def test_the_real_app_answers_with_these_rules(settings: Settings) -> None:
    from alicorn.web.app import create_app

    config = ApiConfig()
    config.set("anonymous_read", False)
    app = create_app(settings, config)
    store: TokenStore = app.state.ctx.tokens
    reader_secret = store.create("reader", Role.READER, created_by="test")[1]
    admin_secret = store.create("admin", Role.ADMIN, created_by="test")[1]
    c = TestClient(app)
    r = c.get("/api/v1/whoami")
    assert r.status_code == 401 and "anonymous reads are off" in r.json()["error"]["message"]
    r = c.get("/api/v1/whoami", headers=bearer("alicorn_0123abcd_" + "a" * 43))
    assert r.status_code == 401 and r.json()["error"]["message"] == "unknown token"
    assert c.get("/api/v1/whoami", headers=bearer(reader_secret)).json()["role"] == "reader"
    body = {"source": {"git": "https://example.invalid/x.git", "ref": "main",
                       "recipe": "pony.yaml"}}
    r = c.post("/api/v1/builds", json=body, headers=bearer(reader_secret))
    assert r.status_code == 403
    assert "needs role submitter; token reader has role reader" in r.json()["error"]["message"]
    r = c.post("/api/v1/builds/0123abc/cancel", headers=bearer(reader_secret))
    assert r.status_code == 403
    entries = app.state.ctx.audit.entries()
    assert [(e["actor"], e["action"], e["target"], e["outcome"], e["status"])
            for e in entries] == [                            # once each, not twice
        ("reader", "build.cancel", "0123abc", "refused", 403),
        ("reader", "build.submit", None, "refused", 403)]
    assert c.get("/api/v1/audit", headers=bearer(reader_secret)).status_code == 403
    assert c.get("/api/v1/audit", headers=bearer(admin_secret)).status_code == 200
