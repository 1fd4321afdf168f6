"""Bad input to the HTTP API and the pages: every answer a 4xx with the one error shape
({"error": {"status", "code", "message", ...}}), never a 500, never a file's content or
another build's data.

The app is the real one (create_app) over a real store in a temporary ALICORN_HOME: two
finished builds (one with HTML in its recipe and argv), a running and a queued one, real log
files, real tokens of every role and a revoked one.  A worker lock is held for the module, so
a submission that gets through would stay queued: no worker starts, nothing is fetched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from alicorn.compose import Package
from alicorn.config import Settings, load_settings
from alicorn.digest import Digest
from alicorn.store.builds import DONE, BuildStore, Submission
from alicorn.web.app import create_app
from alicorn.web.auth import TokenStore
from alicorn.web.model import LOG_NAMES, ApiConfig, Role
from alicorn.worker.local import acquire_lock

LIMIT = 4096                       # api.max_body_bytes in these tests
HTML = "<script>alert('pwned')</script>"
IMG = '<img src=x onerror="alert(1)">'
SECRET_B = "SECRET-OF-BETA-7f3a"   # only in build beta's log and recipe
SENTINEL = "SENTINEL-OUTSIDE-9c1d" # in a file of ALICORN_HOME that no route serves


@dataclass
class Site:
    client: TestClient
    settings: Settings
    store: BuildStore
    alpha: str          # done; HTML in recipe and argv
    beta: str           # done; SECRET_B in its log and recipe
    running: str
    queued: str
    alpha_digest: str
    headers: dict[str, dict[str, str]]   # role name (and "revoked") -> Authorization header

    def builds(self) -> int:
        return len(self.store.recent(10_000))


def _done(store: BuildStore, settings: Settings, name: str, recipe: str, argv: list[str],
          log: bytes) -> tuple[str, str]:
    row = store.submit(Submission(argv=argv, source_kind="file",
                                  recipe_path=f"/recipes/{name}.yaml", recipe_content=recipe))
    claimed = store.claim_next("test:1")
    assert claimed is not None and claimed.id == row.id
    digest = str(Digest.of_bytes(f"image {name}".encode()))
    d = settings.build_dir(row.id)
    d.mkdir(parents=True, exist_ok=True)
    (d / "build.log").write_bytes(log)
    store.finish(row.id, DONE, packages=[Package(type="rpm", name=f"{name}-pkg",
                                                 version="1.0-1", arch="x86_64",
                                                 purl=f"pkg:rpm/t/{name}-pkg@1.0-1")],
                 digest=digest, image_ref=f"127.0.0.1:5000/{name}@{digest}",
                 recipe_name=name, log_digest=str(Digest.of_bytes(log)))
    return row.id, digest


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("bad-input") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALICORN_HOME", str(home))
        for key in ApiConfig.names():
            mp.delenv(f"ALICORN_API_{key.upper()}", raising=False)
        settings = load_settings(home)
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(settings)
        assert lock is not None
        (home / "outside.txt").write_text(SENTINEL + "\n")
        assert (home / "outside.txt").read_text().startswith(SENTINEL)
        store = BuildStore(settings.database_url)
        alpha, alpha_digest = _done(
            store, settings, "alpha", f"recipe: 1\nname: alpha\ndescription: {HTML}\n",
            ["alicorn", "build", IMG], b"alpha's log <b>bold</b> " + HTML.encode() + b"\n")
        beta, _ = _done(store, settings, "beta", f"recipe: 1\n# {SECRET_B}\n",
                        ["alicorn", "build", "beta.yaml"], f"{SECRET_B}\n".encode())
        running = store.submit(Submission(argv=["alicorn", "build", "r.yaml"],
                                          source_kind="file", recipe_path="/r.yaml"))
        assert store.claim_next("test:1") is not None
        (settings.build_dir(running.id)).mkdir(parents=True, exist_ok=True)
        (settings.build_dir(running.id) / "build.log").write_text("running...\n")
        queued = store.submit(Submission(argv=["alicorn", "build", "q.yaml"],
                                         source_kind="file", recipe_path="/q.yaml"))
        tokens = TokenStore(settings.database_url)
        headers = {}
        for role in Role:
            _, secret = tokens.create(f"t-{role.value}", role, created_by="test")
            headers[role.value] = {"Authorization": f"Bearer {secret}"}
        _, gone = tokens.create("t-gone", Role.ADMIN, created_by="test")
        tokens.revoke("t-gone")
        headers["revoked"] = {"Authorization": f"Bearer {gone}"}
        config = ApiConfig(anonymous_read=True, max_body_bytes=LIMIT, local_sources=[],
                           submissions_per_minute=1000)
        app = create_app(settings, config)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Site(client, settings, store, alpha, beta, running.id, queued.id,
                       alpha_digest, headers)
        lock.close()


def error_of(resp: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    """The error of a JSON error answer with this status (or one of these), checked for the
    shape every error has and for what must never be in it."""
    wanted = (status,) if isinstance(status, int) else status
    assert resp.status_code in wanted, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["status"] == resp.status_code
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert len(err["message"]) < 1000, "messages echo what was asked, shortened"
    no_leak(resp)
    return dict(err)


def no_leak(resp: httpx.Response) -> None:
    text = resp.text
    assert "Traceback" not in text and 'File "' not in text
    assert SECRET_B not in text, "another build's data"
    assert SENTINEL not in text, "a file outside the build's logs"
    assert "root:x:0:0" not in text, "/etc/passwd"
    assert "registry_port" not in text, "config.json"


# -- tokens -------------------------------------------------------------------------------------

BAD_TOKENS = {
    "malformed": ("Bearer not-a-token", "malformed"),
    "malformed id": ("Bearer alicorn_zzzzzzzz_" + "a" * 43, "malformed"),
    "unknown": ("Bearer alicorn_0123abcd_" + "A" * 43, "unknown"),
    "empty bearer": ("Bearer ", None),
    "basic scheme": ("Basic dXNlcjpwYXNz", None),
    "huge": ("Bearer alicorn_0123abcd_" + "x" * 20_000, None),
    "no scheme": ("alicorn_0123abcd_" + "A" * 43, None),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
@pytest.mark.parametrize("method,path", [("GET", "/api/v1/builds"),
                                         ("GET", "/api/v1/whoami"),
                                         ("POST", "/api/v1/builds"),
                                         ("GET", "/api/v1/tokens")])
def test_a_bad_token_is_401_even_with_anonymous_reads_on(site: Site, case: str, method: str,
                                                         path: str) -> None:
    header, word = BAD_TOKENS[case]
    body = {"source": {"git": "/nowhere", "ref": "main", "recipe": "r.yaml"}}
    resp = site.client.request(method, path, headers={"Authorization": header},
                               json=body if method == "POST" else None)
    err = error_of(resp, 401)
    assert "bearer" in resp.headers.get("www-authenticate", "").lower()
    if word:
        assert word in err["message"].lower()


def test_a_revoked_token_is_401_naming_it(site: Site) -> None:
    before = site.builds()
    for method, path in (("GET", "/api/v1/builds"), ("GET", "/api/v1/tokens"),
                         ("POST", f"/api/v1/builds/{site.running}/cancel")):
        err = error_of(site.client.request(method, path, headers=site.headers["revoked"]), 401)
        assert "revoked" in err["message"]
    assert site.builds() == before
    assert site.store.get(site.running).cancel_requested_at is None


def test_a_bad_cookie_is_401_too(site: Site) -> None:
    resp = site.client.get("/api/v1/builds", cookies={"alicorn_token": "garbage"})
    error_of(resp, 401)
    site.client.cookies.clear()


def test_roles_are_refused_with_the_error_shape(site: Site) -> None:
    body = {"source": {"git": "/nowhere", "ref": "main", "recipe": "r.yaml"}}
    error_of(site.client.post("/api/v1/builds", json=body), 401)            # anonymous
    error_of(site.client.post("/api/v1/builds", json=body,
                              headers=site.headers["reader"]), 403)
    error_of(site.client.get("/api/v1/tokens", headers=site.headers["submitter"]), 403)
    error_of(site.client.get("/api/v1/audit", headers=site.headers["reader"]), 403)


# -- bodies -------------------------------------------------------------------------------------

def _submit(site: Site, **kw: Any) -> httpx.Response:
    headers = {**site.headers["submitter"], **kw.pop("headers", {})}
    resp: httpx.Response = site.client.post("/api/v1/builds", headers=headers, **kw)
    return resp


@pytest.mark.parametrize("raw", [b'{"source": ', b"{'source': 1}", b"\xff\xfe\x00", b"nul\x00l",
                                 b"[1, 2", b'{"source": {"git": "x"}} trailing'])
def test_malformed_json_is_refused(site: Site, raw: bytes) -> None:
    before = site.builds()
    err = error_of(_submit(site, content=raw, headers={"Content-Type": "application/json"}),
                   (400, 422))
    assert err["message"]
    assert site.builds() == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml"])
def test_a_wrong_content_type_is_refused(site: Site, content_type: str) -> None:
    before = site.builds()
    raw = json.dumps({"source": {"git": "/nowhere", "ref": "main", "recipe": "r.yaml"}})
    error_of(_submit(site, content=raw.encode(), headers={"Content-Type": content_type}),
             (400, 415, 422))
    assert site.builds() == before


@pytest.mark.parametrize("body,field", [
    ({}, "source"),
    ({"source": {}}, "git"),
    ({"source": {"ref": "main", "recipe": "r.yaml"}}, "git"),
    ({"source": {"git": 5, "ref": "main", "recipe": "r.yaml"}}, "git"),
    ({"source": {"git": "/nowhere", "ref": "main", "recipe": "r.yaml", "evil": 1}}, "evil"),
    ({"source": {"git": "/nowhere", "ref": "main", "recipe": "r.yaml"}, "admin": True},
     "admin"),
    ({"source": {"git": "/nowhere", "ref": "main", "recipe": "r.yaml"},
      "options": {"no_cache": "perhaps"}}, "no_cache"),
    ({"source": {"git": "/nowhere", "ref": "main", "recipe": "r.yaml"},
      "options": {"source_date_epoch": "yesterday"}}, "source_date_epoch"),
    ({"source": {"git": "/nowhere", "ref": "main", "recipe": "r.yaml"},
      "options": {"source_date_epoch": 10**40}}, "source_date_epoch"),
    ([], None), ("a string", None), (None, None), (12, None),
])
def test_missing_extra_and_mistyped_fields_are_422_naming_them(site: Site, body: Any,
                                                               field: str | None) -> None:
    before = site.builds()
    err = error_of(_submit(site, content=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"}), 422)
    if field:
        assert field in err["message"] or field in json.dumps(err.get("problems", [])), err
    assert site.builds() == before


@pytest.mark.parametrize("git", ["/etc", "file:///etc", "../../..", "/", ".", "~root",
                                 "file:///nonexistent/x.git", "/dev/null"])
def test_local_sources_outside_the_allowed_ones_are_refused(site: Site, git: str) -> None:
    before = site.builds()
    resp = _submit(site, json={"source": {"git": git, "ref": "main", "recipe": "r.yaml"}})
    err = error_of(resp, (400, 403))
    assert "local" in err["message"].lower() or "source" in err["message"].lower(), err
    assert site.builds() == before


def _too_big(n: int = LIMIT + 1) -> bytes:
    return json.dumps({"source": {"git": "/nowhere", "ref": "main",
                                  "recipe": "r" * n}}).encode()


@pytest.mark.parametrize("path,role", [("/api/v1/builds", "submitter"),
                                       ("/api/v1/tokens", "admin"),
                                       (f"/api/v1/builds/{'0' * 17}/cancel", "admin"),
                                       ("/login", None), ("/submit", None)])
def test_an_oversized_body_is_413(site: Site, path: str, role: str | None) -> None:
    before = site.builds()
    headers = dict(site.headers[role]) if role else {}
    headers["Content-Type"] = "application/json"
    # with its Content-Length
    error_of(site.client.post(path, content=_too_big(), headers=headers), 413)
    # without one (chunked): refused while it is read
    chunks = _too_big()

    def stream() -> Iterator[bytes]:
        for i in range(0, len(chunks), 1000):
            yield chunks[i:i + 1000]

    resp = site.client.post(path, content=stream(), headers=headers)
    if path in ("/api/v1/builds", "/api/v1/tokens"):      # routes that read their body
        error_of(resp, 413)
    else:                        # the others may answer first (unknown build, a form's 4xx)
        assert 400 <= resp.status_code < 500, resp.text[:300]
        no_leak(resp)
    # a Content-Length that is not a number, or that lies about a huge body
    error_of(site.client.post(path, content=b"{}", headers={**headers,
                                                            "Content-Length": "abc"}), 413)
    assert site.builds() == before


def test_a_body_just_under_the_limit_is_not_413(site: Site) -> None:
    body = {"source": {"git": "/nowhere", "ref": "main", "recipe": "r.yaml"}}
    raw = json.dumps(body).encode()
    assert len(raw) < LIMIT
    resp = _submit(site, content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code != 413
    error_of(resp, (400, 403))            # /nowhere is not under api.local_sources


# -- unknown things -----------------------------------------------------------------------------

@pytest.mark.parametrize("path,name", [
    ("/api/v1/builds/{zero}", "{zero}"),
    ("/api/v1/builds/{zero}/verification", "{zero}"),
    ("/api/v1/builds/{zero}/record", "{zero}"),
    ("/api/v1/builds/{zero}/provenance", "{zero}"),
    ("/api/v1/builds/{zero}/sbom/cyclonedx", "{zero}"),
    ("/api/v1/builds/{zero}/logs", "{zero}"),
    ("/api/v1/builds/{zero}/logs/build.log", "{zero}"),
    ("/api/v1/builds/{zero}/logs/build.log/stream", "{zero}"),
    ("/api/v1/trace/sha256:" + "0" * 64, "0" * 64),
    ("/api/v1/trace/" + "1" * 64, "1" * 64),
    ("/api/v1/search?q=sha256:" + "2" * 64, "2" * 64),
    ("/api/v1/search?q=deadbeefdeadbeef", "deadbeefdeadbeef"),
    ("/api/v1/search?q=registry.example.org/nope:1", "registry.example.org/nope"),
    ("/api/v1/advisories/NOPE-2026-0001", "NOPE-2026-0001"),
    ("/api/v1/advisories/Debian:12/DSA-0000-1", "DSA-0000-1"),
    ("/api/v1/events/abc123", "abc123"),
    ("/api/v1/modules/no-such-module", "no-such-module"),
])
def test_unknown_things_are_404_naming_them(site: Site, path: str, name: str) -> None:
    zero = "0" * 17
    path = path.format(zero=zero, alpha=site.alpha)
    name = name.format(zero=zero)
    err = error_of(site.client.get(path), 404)
    assert name in err["message"], err


@pytest.mark.parametrize("path,names", [("/api/v1/builds/not-a-build", ("not-a-build", "build_id")),
                                        ("/api/v1/builds/{alpha}/sbom/pdf", ("pdf", "format"))])
def test_malformed_names_are_4xx_naming_them(site: Site, path: str,
                                             names: tuple[str, ...]) -> None:
    err = error_of(site.client.get(path.format(alpha=site.alpha)), (400, 404, 422))
    assert any(n in err["message"] for n in names), err


@pytest.mark.parametrize("path", ["/api/v1/trace/not-a-digest", "/api/v1/trace/sha256:xyz",
                                  "/api/v1/trace/sha512:" + "0" * 128,
                                  "/api/v1/builds/" + "a" * 300,
                                  "/api/v1/log/entries/0", "/api/v1/nothing-here",
                                  "/api/v1/tokens/nobody"])
def test_malformed_or_missing_things_are_4xx(site: Site, path: str) -> None:
    headers = site.headers["admin"]
    for method in ("GET", "DELETE") if path.endswith("nobody") else ("GET",):
        error_of(site.client.request(method, path, headers=headers), (400, 404, 405, 422))


def test_an_ambiguous_build_prefix_names_no_build(site: Site) -> None:
    prefix = site.alpha[:1]
    assert all(b.startswith(prefix) for b in (site.beta, site.running, site.queued)), \
        "ids from one run share their time prefix"
    err = error_of(site.client.get(f"/api/v1/builds/{prefix}"), (400, 404, 409))
    assert "ambiguous" in err["message"] or err["status"] == 404
    assert site.alpha not in err["message"] and site.beta not in err["message"]


# -- log names and path traversal ---------------------------------------------------------------

TRAVERSALS = [
    "../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fconfig.json",
    "%2e%2e/%2e%2e/outside.txt", "..%2f..%2foutside.txt", "%2Fetc%2Fpasswd", "/etc/passwd",
    "build.log%00", "build.log%00.txt", "%00", "..%5C..%5Coutside.txt", "..\\..\\outside.txt",
    "%252e%252e%252foutside.txt", "....//....//outside.txt", "record.json", "progress.jsonl",
    "..%2F{beta}%2Fbuild.log", "../{beta}/build.log", "BUILD.LOG", "build.log%2F", ".",
    "%2e", "%2e%2e", "build.log%20", "%20build.log", "build.log;.txt", "build.log?x=1/../..",
    "%c0%ae%c0%ae%c0%afoutside.txt", "build%2elog%2f..%2f..%2f..%2foutside.txt",
]


@pytest.mark.parametrize("name", TRAVERSALS)
@pytest.mark.parametrize("suffix", ["", "/stream"])
def test_log_names_never_reach_the_disk(site: Site, name: str, suffix: str) -> None:
    name = name.format(beta=site.beta)
    resp = site.client.get(f"/api/v1/builds/{site.alpha}/logs/{name}{suffix}")
    if resp.status_code == 200 and resp.headers["content-type"].startswith("application/json"):
        # "logs/." is "logs/" once the client resolved the dot: alpha's own list of logs
        assert {x["name"] for x in resp.json()} <= set(LOG_NAMES)
        no_leak(resp)
        return
    if resp.status_code == 200:
        # build.log?x=1/../.. is build.log with a query: alpha's own log, nothing else
        assert resp.text.startswith("alpha's log"), resp.text[:200]
        no_leak(resp)
        return
    error_of(resp, (404, 400, 422))


@pytest.mark.parametrize("name", TRAVERSALS)
def test_log_pages_never_reach_the_disk(site: Site, name: str) -> None:
    name = name.format(beta=site.beta)
    resp = site.client.get(f"/builds/{site.alpha}/logs/{name}", headers={"Accept": "text/html"})
    assert resp.status_code < 500, resp.text[:300]
    no_leak(resp)
    if resp.status_code == 200:
        assert "alpha" in resp.text and SECRET_B not in resp.text
    else:
        assert 400 <= resp.status_code < 500


def test_a_builds_own_log_is_served_and_no_other(site: Site) -> None:
    resp = site.client.get(f"/api/v1/builds/{site.alpha}/logs/build.log")
    assert resp.status_code == 200
    assert resp.text.startswith("alpha's log")
    no_leak(resp)


@pytest.mark.parametrize("offset", ["-1", "-99999999999999999999", "abc", "1e3", "0x10",
                                    str(10**30), "99999999"])
def test_bad_log_offsets_are_4xx(site: Site, offset: str) -> None:
    resp = site.client.get(f"/api/v1/builds/{site.alpha}/logs/build.log?offset={offset}")
    error_of(resp, (400, 416, 422))


# -- HTML in records ----------------------------------------------------------------------------

def test_html_in_records_is_data_in_json_and_escaped_in_pages(site: Site) -> None:
    api = site.client.get(f"/api/v1/builds/{site.alpha}")
    assert api.status_code == 200
    assert api.headers["content-type"].startswith("application/json")
    assert api.headers["x-content-type-options"] == "nosniff"
    data = api.json()
    assert HTML in data["recipe"]["content"], "JSON carries the recipe as it is"
    assert IMG in data["argv"]
    page = site.client.get(f"/builds/{site.alpha}", headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text[:300]
    assert page.headers["content-type"].startswith("text/html")
    assert HTML not in page.text and IMG not in page.text
    assert "&lt;script&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    log = site.client.get(f"/builds/{site.alpha}/logs/build.log",
                          headers={"Accept": "text/html"})
    assert log.status_code == 200
    assert "<b>bold</b>" not in log.text and HTML not in log.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in log.text


@pytest.mark.parametrize("q", [HTML, IMG, '"><svg onload=alert(1)>', "sha256:" + HTML])
def test_a_search_echoes_html_escaped(site: Site, q: str) -> None:
    page = site.client.get("/search", params={"q": q}, headers={"Accept": "text/html"})
    assert page.status_code == 404, page.text[:300]
    assert q not in page.text
    api = site.client.get("/api/v1/search", params={"q": q})
    error_of(api, (400, 404))


# -- huge and out-of-range values ---------------------------------------------------------------

HUGE = "x" * 60_000          # httpx refuses URLs over 64 KiB


@pytest.mark.parametrize("path", [
    "/api/v1/search?q=" + HUGE, "/api/v1/search?q=sha256:" + "a" * 10_000,
    "/api/v1/search?q=", "/api/v1/search?q=%20%20", "/api/v1/search",
    "/api/v1/builds?before=" + HUGE, "/api/v1/builds?state=" + HUGE,
    "/api/v1/builds?before=" + "f" * 17, "/api/v1/builds?state=DONE%00",
    "/api/v1/advisories?q=" + HUGE, "/api/v1/advisories?severity=" + HUGE,
    "/api/v1/events?state=" + HUGE, "/api/v1/trace/" + HUGE,
    "/api/v1/builds/" + HUGE, "/api/v1/modules/" + HUGE, "/api/v1/events/" + HUGE,
    "/api/v1/advisories/" + HUGE,
])
def test_huge_and_empty_query_values_are_4xx(site: Site, path: str) -> None:
    resp = site.client.get(path)
    if resp.status_code == 200:
        # an unknown advisory search text is an empty page, not an error
        assert path.startswith("/api/v1/advisories?"), (path[:80], resp.text[:200])
        return
    error_of(resp, (400, 404, 414, 422, 431))


BIG = str(10**30)


@pytest.mark.parametrize("path", [
    "/api/v1/builds?limit=-1", "/api/v1/builds?limit=0", f"/api/v1/builds?limit={BIG}",
    "/api/v1/builds?limit=1000000", "/api/v1/builds?limit=abc", "/api/v1/builds?limit=1.5",
    "/api/v1/advisories?limit=-5", "/api/v1/advisories?offset=-1",
    f"/api/v1/advisories?offset={BIG}", f"/api/v1/advisories?limit={BIG}",
    "/api/v1/events?limit=-1", f"/api/v1/events?limit={BIG}",
    "/api/v1/log/entries/-1", f"/api/v1/log/entries/{BIG}", "/api/v1/log/entries/abc",
    "/api/v1/log/entries/0?tree_size=-1", f"/api/v1/log/entries/0?tree_size={BIG}",
    "/api/v1/log/consistency?old=-1&new=5", "/api/v1/log/consistency?old=5&new=1",
    f"/api/v1/log/consistency?old={BIG}", "/api/v1/log/consistency?old=abc",
    "/api/v1/log/heads?limit=-1", f"/api/v1/log/heads?limit={BIG}",
    "/api/v1/audit?limit=-1", f"/api/v1/audit?limit={BIG}", "/api/v1/audit?before=" + HUGE,
])
def test_out_of_range_numbers_are_4xx(site: Site, path: str) -> None:
    resp = site.client.get(path, headers=site.headers["admin"])
    if resp.status_code == 200 and "offset=" in path:
        assert resp.json()["items"] == [], "an offset past the end is an empty page"
        return
    error_of(resp, (400, 404, 416, 422))


# -- sealed records -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("role", ["admin", "submitter", "reader", None])
def test_nobody_changes_a_finished_build(site: Site, method: str, role: str | None) -> None:
    before = site.client.get(f"/api/v1/builds/{site.alpha}").json()
    headers = site.headers[role] if role else {}
    resp = site.client.request(method, f"/api/v1/builds/{site.alpha}", headers=headers,
                               json={"state": "failed", "digest": "sha256:" + "f" * 64})
    err = error_of(resp, (401, 403, 405))
    if resp.status_code == 405:
        assert "sealed" in err["message"]
    assert site.client.get(f"/api/v1/builds/{site.alpha}").json() == before


def test_cancelling_an_ended_or_unknown_build_is_refused(site: Site) -> None:
    err = error_of(site.client.post(f"/api/v1/builds/{site.alpha}/cancel",
                                    headers=site.headers["admin"]), 409)
    assert site.alpha in err["message"]
    error_of(site.client.post(f"/api/v1/builds/{'0' * 17}/cancel",
                              headers=site.headers["admin"]), 404)
    assert site.store.get(site.alpha).state == DONE


def test_undecodable_paths_are_not_500(site: Site) -> None:
    for path in ("/api/v1/%", "/api/v1/builds/%ZZ", "/api/v1/builds/%00",
                 "/api/v1/builds/" + "%2e" * 50):
        resp = site.client.get(path)
        assert resp.status_code < 500, (path, resp.text[:300])
        no_leak(resp)


# -- the same over real HTTP, byte for byte -----------------------------------------------------

RAW = ["../../etc/passwd", "../../../../../../etc/passwd", "..%2F..%2Foutside.txt",
       "%2e%2e/%2e%2e/outside.txt", "../{beta}/build.log", "..\\..\\outside.txt",
       "build.log%00", "/etc/passwd", "./../../config.json", "build.log/../../../outside.txt"]


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[tuple[str, int]]:
    """A real uvicorn (ApiServer, in a thread) over the same home: a client that does not
    resolve "../" in paths (httpx does) sends them as they are."""
    from alicorn.config import free_port
    from alicorn.web.server import ApiServer

    port = free_port()
    config = ApiConfig(listen=f"127.0.0.1:{port}", anonymous_read=True,
                       max_body_bytes=LIMIT, local_sources=[])
    api = ApiServer(site.settings, config)
    api.start()
    try:
        yield "127.0.0.1", port
    finally:
        api.stop()


def _raw(server: tuple[str, int], target: str) -> tuple[int, str]:
    import socket

    with socket.create_connection(server, timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode("utf-8", "replace")


@pytest.mark.parametrize("name", RAW)
@pytest.mark.parametrize("prefix", ["/api/v1/builds/{alpha}/logs/", "/builds/{alpha}/logs/",
                                    "/api/v1/builds/{alpha}/logs/build.log/../"])
def test_raw_traversal_over_real_http_never_reaches_the_disk(site: Site, server: tuple[str, int],
                                                             name: str, prefix: str) -> None:
    status, body = _raw(server, prefix.format(alpha=site.alpha) + name.format(beta=site.beta))
    assert status in (400, 404, 405, 422), (status, body[:300])
    for leak in (SECRET_B, SENTINEL, "root:x:0:0", "registry_port", "Traceback"):
        assert leak not in body
