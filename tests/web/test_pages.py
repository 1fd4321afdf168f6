"""The server-rendered pages, through FastAPI's TestClient on the real application
(``create_app``) and real stores: the pony's builds (read only), and small homes of their own
for what these tests write (tokens, queued builds, advisories).

Every page these tests fetch is also checked against the Content-Security-Policy the service
sends: no inline script, no inline style, no event-handler attributes.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from alicorn.config import Settings, load_settings
from alicorn.store.builds import BuildStore, Submission
from alicorn.web import queries
from alicorn.web.app import WebContext, create_app
from alicorn.web.auth import COOKIE
from alicorn.web.model import ApiConfig, Role
from conftest import Cli, PonyImages, git_repo

ORIGIN = "http://testserver"
EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


# -- what every page must be -----------------------------------------------------------------
class _Page(HTMLParser):
    """The parts of a page the checks below look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, dict[str, str | None]] = {}
        self.text_of: dict[str, str] = {}
        self.scripts: list[dict[str, str | None]] = []
        self.inline_scripts = 0
        self.styles = 0
        self.inline_style_attrs: list[str] = []
        self.handlers: list[str] = []
        self.links: list[str] = []
        self._open: list[tuple[str, str | None]] = []   # (tag, id) of the elements open
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "style" in a:
            self.inline_style_attrs.append(tag)
        self.handlers += [k for k in a if k.startswith("on")]
        if tag == "script":
            self.scripts.append(a)
            self._in_script = True
        if tag == "style":
            self.styles += 1
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))
        if a.get("id"):
            self.ids[str(a["id"])] = {**a, "_tag": tag}
            self.text_of.setdefault(str(a["id"]), "")
        if tag not in ("meta", "link", "input", "br", "img", "hr"):
            self._open.append((tag, a.get("id")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1
        for _, ident in self._open:
            if ident:
                self.text_of[ident] += data


def page(response: httpx.Response, status: int = 200) -> _Page:
    """The parsed page of ``response``, after checking its status, type and CSP."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("text/html"), response.headers
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp, csp
    parsed = _Page()
    parsed.feed(response.text)
    assert parsed.inline_scripts == 0, "an inline script"
    assert all(s.get("src") for s in parsed.scripts), parsed.scripts
    assert parsed.styles == 0, "a <style> element"
    assert parsed.inline_style_attrs == [], f"style= on {parsed.inline_style_attrs}"
    assert parsed.handlers == [], f"event handler attributes {parsed.handlers}"
    # Every page has the navigation and the search form.
    for ident in ("nav", "search", "search-q", "search-go"):
        assert ident in parsed.ids, f"no #{ident}"
    assert parsed.ids["search"]["action"] == "/search"
    assert parsed.ids["search-q"]["name"] == "q"
    return parsed


def text(parsed: _Page, ident: str) -> str:
    assert ident in parsed.ids, f"no #{ident}"
    return " ".join(parsed.text_of[ident].split())


HTML = {"Accept": "text/html"}


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pony(pony_images: PonyImages) -> Iterator[tuple[TestClient, PonyImages]]:
    """A client on the pony's home; only GETs go to it (the home is shared, read only)."""
    app = create_app(load_settings(pony_images.cli.home), ApiConfig())
    with TestClient(app, headers=HTML) as client:
        yield client, pony_images


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ALICORN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ALICORN_DATABASE_URL", raising=False)
    monkeypatch.delenv("ALICORN_REGISTRY", raising=False)
    return load_settings(tmp_path / "home")


def client_for(settings: Settings, **options: Any) -> TestClient:
    config = ApiConfig()
    for key, value in options.items():
        config.set(key, value)
    return TestClient(create_app(settings, config), headers=HTML)


def ctx(client: TestClient) -> WebContext:
    """The application's context (its stores) behind ``client``."""
    context: WebContext = client.app.state.ctx  # type: ignore[attr-defined]
    return context


def token(client: TestClient, name: str, role: Role) -> tuple[str, str]:
    """A new token of ``role``: (its id, its secret)."""
    info, secret = ctx(client).tokens.create(name, role, created_by="test")
    return info.id, secret


def as_cookie(secret: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={secret}", "Origin": ORIGIN}


# -- the pony's builds -----------------------------------------------------------------------
def test_builds_list_shows_the_builds(pony: tuple[TestClient, PonyImages]) -> None:
    client, images = pony
    assert client.get("/", follow_redirects=False).headers["location"] == "/builds"
    parsed = page(client.get("/builds"))
    html = client.get("/builds").text
    v1 = images.v1
    assert "builds" in parsed.ids and parsed.ids["builds"]["_tag"] == "table"
    assert f'href="/builds/{v1["build_id"]}"' in html
    assert html.count('<tr class="build"') >= 4
    # The short digest carries the whole one in its title.
    short = v1["digest"].split(":")[1][:12]
    assert f'title="{v1["digest"]}">{short}</code>' in html
    assert 'class="badge state-done">done<' in html
    # Nothing runs: no refresh.
    assert 'http-equiv="refresh"' not in html


def test_build_page_shows_inputs_outputs_and_verification(
        pony: tuple[TestClient, PonyImages]) -> None:
    client, images = pony
    v1 = images.v1
    row = BuildStore(load_settings(images.cli.home).database_url).get(v1["build_id"])
    response = client.get(f"/builds/{v1['build_id']}")
    parsed = page(response)
    html = response.text
    assert text(parsed, "build-digest") == v1["digest"]
    assert text(parsed, "build-state") == "done"
    assert text(parsed, "build-image") == v1["image"]
    assert text(parsed, "provenance-status") == "verified"
    assert text(parsed, "argv") == " ".join(shlex.join(row.argv).split())
    assert "build" in text(parsed, "argv")
    recipe = text(parsed, "recipe")
    assert "name: pony-rpm" in recipe and "busybox" in recipe
    packages = text(parsed, "packages")
    assert "busybox" in packages and "1.35.0-1" in packages
    assert "passed" in text(parsed, "checks-tests")
    assert "passed" in text(parsed, "checks-gate")
    assert parsed.ids["log-link"]["href"] == f"/builds/{v1['build_id']}/logs/build.log"
    assert parsed.ids["log-link"]["data-log"] == "build.log"
    for path in ("record", "provenance", "sbom/cyclonedx", "sbom/spdx"):
        assert f'href="/api/v1/builds/{v1["build_id"]}/{path}"' in html, path
    # An ended build has no cancel form, and an anonymous reader is offered the login page.
    assert "cancel-form" not in parsed.ids
    assert "login-link" in parsed.ids
    assert 'http-equiv="refresh"' not in html
    # A build id prefix lands on the build's own address.
    prefix = client.get(f"/builds/{v1['build_id'][:10]}", follow_redirects=False)
    assert prefix.status_code == 303
    assert prefix.headers["location"] == f"/builds/{v1['build_id']}"


def test_log_page_carries_the_log_and_where_to_follow_it(
        pony: tuple[TestClient, PonyImages]) -> None:
    client, images = pony
    build_id = images.v1["build_id"]
    response = client.get(f"/builds/{build_id}/logs/build.log")
    parsed = page(response)
    log = parsed.ids["log"]
    assert log["_tag"] == "pre"
    written = (images.cli.home / "builds" / build_id / "build.log").read_bytes()
    assert parsed.text_of["log"] == written.decode()
    assert f"build {build_id} on" in parsed.text_of["log"]
    assert text(parsed, "log-state") == "complete"
    assert log["data-stream"] == f"/api/v1/builds/{build_id}/logs/build.log/stream"
    assert log["data-offset"] == str(len(written))
    assert log["data-complete"] == "true"
    assert [s["src"] for s in parsed.scripts] == ["/static/log.js"]
    # The other logs of the build, and names that are not logs.
    assert page(client.get(f"/builds/{build_id}/logs/checks.log")).ids["log"]
    for name in ("secret.log", "..%2Frecord.json", "build.log.bak"):
        missing = page(client.get(f"/builds/{build_id}/logs/{name}"), 404)
        assert "error" in missing.ids, name
    # A build id is hex: no pattern reaches the store (% and _ would match any build).
    for pattern in ("%25", "_", "1%25"):
        assert "error" in page(client.get(f"/builds/{pattern}/logs/build.log"), 404).ids


def test_search_lands_on_the_build(pony: tuple[TestClient, PonyImages]) -> None:
    client, images = pony
    v1 = images.v1
    for q in (v1["digest"], v1["digest"].split(":")[1], v1["build_id"], v1["build_id"][:10],
              f"  {v1['digest']} "):
        found = client.get("/search", params={"q": q}, follow_redirects=False)
        assert found.status_code == 303, (q, found.text[:500])
        assert found.headers["location"] == f"/builds/{v1['build_id']}", q
    # From the search box to the build page to its log: two requests a browser makes.
    landed = client.get("/search", params={"q": v1["digest"]})
    assert text(page(landed), "build-digest") == v1["digest"]
    missing = "sha256:" + "0" * 64
    nothing = page(client.get("/search", params={"q": missing}), 404)
    assert missing in text(nothing, "error")
    assert "nothing matched" in text(nothing, "error")
    empty = page(client.get("/search", params={"q": ""}), 400)
    assert "empty" in text(empty, "error")


def test_transparency_log_page_shows_signed_heads(pony: tuple[TestClient, PonyImages]) -> None:
    client, _ = pony
    parsed = page(client.get("/log"))
    shown = int(text(parsed, "log-size"))
    assert shown >= 8   # four builds, each its inputs and its record
    heads = queries.log_heads(ctx(client))
    assert shown == heads["size"]
    assert str(heads["heads"][0]["tree_size"]) in text(parsed, "heads")
    assert "heads" in parsed.ids
    assert "passed" in text(parsed, "heads")   # the signatures hold


def test_static_files(pony: tuple[TestClient, PonyImages]) -> None:
    client, _ = pony
    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert ".digest" in css.text
    js = client.get("/static/log.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "EventSource" in js.text and "createTextNode" in js.text
    assert "innerHTML" not in js.text
    assert client.get("/static/../pages.py").status_code == 404


# -- escaping, errors ------------------------------------------------------------------------
def test_html_in_records_is_escaped(home: Settings) -> None:
    builds = BuildStore(home.database_url)
    row = builds.submit(Submission(
        argv=["alicorn", "build", EVIL], source_kind="file", recipe_path=f"/tmp/{EVIL}.yaml",
        recipe_content=f"name: pony\n# {EVIL}\n", submitter=f"mallory{EVIL}"))
    client = client_for(home)
    listed = client.get("/builds")
    page(listed)
    shown = client.get(f"/builds/{row.id}")
    parsed = page(shown)
    for response in (listed, shown):
        assert EVIL not in response.text
        assert EVIL_ESCAPED in response.text
    assert EVIL in text(parsed, "argv")           # shown as text, as given
    assert EVIL in parsed.text_of["recipe"]
    assert text(parsed, "build-state") == "queued"
    assert text(parsed, "provenance-status") == "pending"
    assert 'http-equiv="refresh"' in shown.text   # it follows the build until it ends
    # A queued build's log page waits for the log from its first byte.
    log = page(client.get(f"/builds/{row.id}/logs/build.log"))
    assert text(log, "log-state") == "running"
    assert log.ids["log"]["data-offset"] == "0"
    # What a search echoes is escaped too.
    nothing = client.get("/search", params={"q": EVIL})
    assert nothing.status_code in (400, 404)
    assert EVIL not in nothing.text and "error" in page(nothing, nothing.status_code).ids


UPDATEINFO = f"""<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="test@example.invalid" status="stable" type="security" version="2.0">
    <id>TEST-2026-0001</id>
    <title>busybox {EVIL.replace("<", "&lt;").replace(">", "&gt;")}</title>
    <issued date="2026-01-02 00:00:00"/>
    <severity>Important</severity>
    <description>a fix &lt;img src=x onerror=alert(1)&gt;</description>
    <references>
      <reference href="https://example.invalid/CVE-2026-0001" id="CVE-2026-0001" type="cve"
                 title="CVE-2026-0001"/>
      <reference href="javascript:alert(1)" id="x" type="other" title="not a link"/>
    </references>
    <pkglist>
      <collection short="f40"><name>Fedora 40</name>
        <package name="busybox" version="1.36.0" release="1.fc40" epoch="0" arch="x86_64">
          <filename>busybox-1.36.0-1.fc40.x86_64.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
</updates>
"""


def test_advisories_pages_escape_their_text(cli: Cli, tmp_path: Path) -> None:
    feed = tmp_path / "updateinfo.xml"
    feed.write_text(UPDATEINFO)
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "updateinfo"
    ampersand = shared / "createrepo_c-updateinfo_ampersand.xml"
    cli("advisories", "import", str(feed), *([str(ampersand)] if ampersand.exists() else []),
        check=True)
    client = client_for(load_settings(cli.home))
    listed = client.get("/advisories")
    parsed = page(listed)
    assert "TEST-2026-0001" in text(parsed, "advisories")
    assert EVIL not in listed.text and EVIL_ESCAPED in listed.text
    one = client.get("/advisories/TEST-2026-0001")
    shown = page(one)
    assert "CVE-2026-0001" in one.text
    assert "onerror=alert(1)&gt;" in one.text and "<img" not in one.text
    assert 'href="javascript:' not in one.text
    assert "affected" in shown.ids and "No image" in text(shown, "no-affected")
    assert "busybox" in text(shown, "fixed-packages")
    searched = page(client.get("/advisories", params={"q": "TEST-2026"}))
    assert "TEST-2026-0001" in text(searched, "advisories")
    if ampersand.exists():   # an id with "&": linked encoded, found again
        assert 'href="/advisories/foobarupd%26ate_1"' in listed.text
        assert "foobarupd&amp;ate_1" in client.get("/advisories/foobarupd%26ate_1").text


@pytest.mark.parametrize("path", ["/builds/0123456789abcdef0", "/builds/nothex",
                                  "/builds/0123456789abcdef0/logs/build.log",
                                  "/builds/%25/logs/build.log", "/builds/_/logs/build.log",
                                  "/advisories/NOPE-2026-0001", "/events/0123abcd",
                                  "/modules/nope"])
def test_unknown_things_are_404_pages(home: Settings, path: str) -> None:
    client = client_for(home)
    for accept in ("text/html", "*/*"):   # a page answers HTML whatever is accepted
        parsed = page(client.get(path, headers={"Accept": accept}), 404)
        assert text(parsed, "error"), path
        assert parsed.ids["error"]["data-status"] == "404"


def test_empty_lists_are_pages(home: Settings) -> None:
    client = client_for(home)
    for path, table in (("/builds", "builds"), ("/advisories", "advisories"),
                        ("/events", "events"), ("/modules", "modules"), ("/log", "heads")):
        parsed = page(client.get(path))
        assert table in parsed.ids or f"no-{table}" in parsed.ids or "log-size" in parsed.ids
    bad = page(client.get("/builds", params={"state": "<b>odd</b>"}), 400)
    assert "&lt;b&gt;" in client.get("/builds", params={"state": "<b>odd</b>"}).text
    assert text(bad, "error")


# -- who may do what -------------------------------------------------------------------------
def test_submit_form_is_shown_to_anyone_and_refused_without_the_role(home: Settings) -> None:
    client = client_for(home)
    form = page(client.get("/submit"))
    assert form.ids["submit-form"]["action"] == "/submit"
    for field in ("submit-git", "submit-ref", "submit-recipe", "submit-no-cache"):
        assert field in form.ids
    assert "submitter" in text(form, "submit-note")
    data = {"git": "https://example.invalid/r.git", "ref": "main", "recipe": "pony.yaml"}

    anonymous = page(client.post("/submit", data=data, headers={"Origin": ORIGIN}), 401)
    assert "token" in text(anonymous, "error")
    _, reader = token(client, "page-reader", Role.READER)
    refused = page(client.post("/submit", data=data, headers=as_cookie(reader)), 403)
    assert "submitter" in text(refused, "error")
    # The refusal is the form again, with what was typed.
    assert refused.ids["submit-git"]["value"] == data["git"]
    assert refused.ids["submit-recipe"]["value"] == data["recipe"]
    # The form says so before it is sent.
    assert "reader" in text(page(client.get("/submit", headers=as_cookie(reader))),
                            "submit-note")
    _, submitter = token(client, "page-submitter", Role.SUBMITTER)
    # A cookie from a form on another site (CSRF) is refused, and so is one without Origin.
    other = page(client.post("/submit", data=data, headers={
        **as_cookie(submitter), "Origin": "https://evil.example"}), 403)
    assert "Origin" in text(other, "error")
    bare = client.post("/submit", data=data, headers={"Cookie": f"{COOKIE}={submitter}"})
    assert page(bare, 403)
    # A local repository outside api.local_sources, and malformed fields.
    local = page(client.post("/submit", data={**data, "git": str(home.home)},
                             headers=as_cookie(submitter)), 403)
    assert "local_sources" in text(local, "error")
    for field, value in (("ref", "--upload-pack=x"), ("recipe", "../../etc/passwd"),
                         ("git", "ftp://example.invalid/r.git"), ("git", "")):
        bad = page(client.post("/submit", data={**data, field: value},
                               headers=as_cookie(submitter)), 400)
        assert field in text(bad, "error") or value in text(bad, "error"), (field, value)
    assert BuildStore(home.database_url).recent() == []
    actions = [(e["action"], e["outcome"], e["status"])
               for e in ctx(client).audit.entries()]
    assert ("build.submit", "refused", 401) in actions
    assert ("build.submit", "refused", 403) in actions
    assert ("build.submit", "refused", 400) in actions


def test_a_submitter_submits_through_the_form(cli: Cli, tmp_path: Path) -> None:
    settings = load_settings(cli.home)
    sources = tmp_path / "sources"
    recipe_dir = tmp_path / "recipe"
    recipe_dir.mkdir()
    (recipe_dir / "broken.yaml").write_text("recipe: 1\nname: [not, a, name]\n")
    git_repo(recipe_dir, sources / "r")
    client = client_for(settings, local_sources=str(sources))
    token_id, submitter = token(client, "page-submitter", Role.SUBMITTER)
    answer = client.post("/submit", data={"git": str(sources / "r"), "ref": "main",
                                          "recipe": "broken.yaml", "no_cache": "1"},
                         headers=as_cookie(submitter), follow_redirects=False)
    assert answer.status_code == 303, answer.text[:1000]
    build_id = answer.headers["location"].removeprefix("/builds/")
    row = BuildStore(settings.database_url).get(build_id)
    assert (row.submitter, row.submitted_token) == ("page-submitter", token_id)
    assert (row.source_kind, row.source_url, row.source_ref, row.recipe_path) == \
        ("git", str((sources / "r").resolve()), "main", "broken.yaml")
    assert row.argv[:3] == ["alicorn-api", "POST", "/submit"]  # the form, as recorded
    assert row.options.get("no_cache") is True
    shown = page(client.get(f"/builds/{build_id}", headers=as_cookie(submitter)))
    assert text(shown, "who-name") == "page-submitter"
    assert text(shown, "source-url") == str((sources / "r").resolve())
    assert "commit" in shown.ids or "commit-link" in shown.ids
    entries = ctx(client).audit.entries()
    assert any(e["action"] == "build.submit" and e["outcome"] == "ok" and
               e["target"] == build_id for e in entries)


def test_cancel_form_is_for_who_may_cancel(home: Settings) -> None:
    client = client_for(home)
    own_id, own = token(client, "owner", Role.SUBMITTER)
    _, other = token(client, "other", Role.SUBMITTER)
    _, admin = token(client, "boss", Role.ADMIN)
    builds = BuildStore(home.database_url)
    row = builds.submit(Submission(argv=["alicorn-api"], source_kind="git",
                                   source_url="https://example.invalid/r.git", source_ref="main",
                                   recipe_path="r.yaml", submitter="owner", token=own_id))
    url = f"/builds/{row.id}"
    assert "cancel-form" not in page(client.get(url)).ids
    assert "cancel-form" not in page(client.get(url, headers=as_cookie(other))).ids
    assert "cancel-form" in page(client.get(url, headers=as_cookie(admin))).ids
    form = page(client.get(url, headers=as_cookie(own))).ids["cancel-form"]
    assert (form["action"], form["method"]) == (f"{url}/cancel", "post")
    # Another submitter may not; the owner may (a queued build ends at once).
    refused = page(client.post(f"{url}/cancel", headers=as_cookie(other)), 403)
    assert "may not cancel" in text(refused, "error")
    assert builds.get(row.id).state == "queued"
    assert page(client.post(f"{url}/cancel", headers={"Origin": ORIGIN}), 401)
    done = client.post(f"{url}/cancel", headers=as_cookie(own), follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == url
    assert builds.get(row.id).state == "failed"
    again = page(client.post(f"{url}/cancel", headers=as_cookie(own)), 409)
    assert "sealed" in text(again, "error") or "ended" in text(again, "error")


def test_login_sets_the_cookie_and_logout_clears_it(home: Settings) -> None:
    client = client_for(home)
    form = page(client.get("/login"))
    assert form.ids["login-form"]["action"] == "/login"
    assert form.ids["login-token"]["name"] == "token"
    for bad in ("nonsense", "alicorn_00000000_" + "x" * 43, ""):
        answer = client.post("/login", data={"token": bad}, headers={"Origin": ORIGIN})
        refused = page(answer, 401)
        assert text(refused, "error"), bad
        assert "login-form" in refused.ids
        assert COOKIE not in answer.headers.get("set-cookie", "")
    _, secret = token(client, "page-reader", Role.READER)
    # Another site cannot log a visitor in under a token of its choosing (login CSRF).
    for foreign in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/x"},
                    {}):
        answer = client.post("/login", data={"token": secret}, headers=foreign,
                             follow_redirects=False)
        assert answer.status_code == 403, foreign
        assert COOKIE not in answer.headers.get("set-cookie", "")
    answer = client.post("/login", data={"token": secret}, headers={"Origin": ORIGIN},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/builds"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={secret};")
    for attribute in ("HttpOnly", "Path=/", "SameSite=strict"):
        assert attribute.lower() in cookie.lower(), cookie
    shown = page(client.get("/builds", headers={"Cookie": f"{COOKIE}={secret}"}))
    assert text(shown, "who-name") == "page-reader"
    assert "logout-form" in shown.ids
    out = client.post("/logout", headers=as_cookie(secret), follow_redirects=False)
    assert out.status_code == 303
    assert f'{COOKIE}=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    entries = ctx(client).audit.entries()
    assert {("login", "ok"), ("login", "refused")} <= {(e["action"], e["outcome"])
                                                       for e in entries}


def test_without_anonymous_reads_pages_ask_for_a_login(home: Settings) -> None:
    client = client_for(home, anonymous_read=False)
    refused = page(client.get("/builds"), 401)
    assert text(refused, "error")
    assert "login-link" in refused.ids
    assert page(client.get("/login"))                  # the way in stays open
    assert page(client.get("/submit"))
    _, secret = token(client, "page-reader", Role.READER)
    assert page(client.get("/builds", headers={"Cookie": f"{COOKIE}={secret}"}))
    # A bad or revoked cookie is a 401 page, never silently anonymous.
    ctx(client).tokens.revoke("page-reader")
    stale = client_for(home, anonymous_read=True)
    assert page(stale.get("/builds", headers={"Cookie": f"{COOKIE}={secret}"}), 401)
    assert page(stale.get("/builds", headers={"Cookie": f"{COOKIE}=garbage"}), 401)
    assert page(stale.get("/login", headers={"Cookie": f"{COOKIE}=garbage"}))


def test_pages_are_not_in_the_openapi_document(home: Settings) -> None:
    paths = client_for(home).get("/api/v1/openapi.json").json()["paths"]
    assert not [p for p in paths if p.split("/")[1] in
                ("builds", "submit", "login", "logout", "search", "advisories", "static")]


# -- what the review of the pages found --------------------------------------------------------
def _ended_build(home: Settings, state: str, logs: dict[str, str], **values: Any) -> str:
    """A build of ``home`` that ran and ended ``state`` having written only ``logs``."""
    builds = BuildStore(home.database_url)
    row = builds.submit(Submission(argv=["alicorn", "build", "r.yaml"], source_kind="file",
                                   recipe_path="/tmp/r.yaml", recipe_content="name: r\n"))
    assert builds.claim_next("test") is not None
    directory = home.build_dir(row.id)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in logs.items():
        (directory / name).write_text(content)
    builds.finish(row.id, state, **values)
    return row.id


def test_only_the_logs_written_are_linked(home: Settings) -> None:
    failed = _ended_build(home, "failed", {"build.log": "composing\nfailed: no such package\n"},
                          error="no such package")
    unpushed = _ended_build(home, "done", {"build.log": "built\n", "checks.log": "passed\n"},
                            digest="sha256:" + "ab" * 32, published=False)
    client = client_for(home)
    for build_id, written in ((failed, {"build.log"}), (unpushed, {"build.log", "checks.log"})):
        assert {x["name"] for x in queries.logs(ctx(client), build_id)} == written
        shown = client.get(f"/builds/{build_id}")
        page(shown)
        linked = {h.rsplit("/", 1)[1] for h in page(shown).links
                  if h.startswith(f"/builds/{build_id}/logs/")}
        assert linked == written, (build_id, linked)
        log = page(client.get(f"/builds/{build_id}/logs/build.log"))
        others = {h.rsplit("/", 1)[1] for h in log.links
                  if h.startswith(f"/builds/{build_id}/logs/")}
        assert others == written - {"build.log"}, (build_id, others)
    # A link to a log never written (an old bookmark) is a 404 page saying why.
    missing = page(client.get(f"/builds/{failed}/logs/checks.log"), 404)
    assert text(missing, "error") == \
        f"build {failed} has no checks.log: it failed before its checks"
    assert "build.log" in text(missing, "hint")
    missing = page(client.get(f"/builds/{unpushed}/logs/publish.log"), 404)
    assert "its image was not pushed" in text(missing, "error")
    assert page(client.get(f"/builds/{unpushed}/logs/checks.log"))   # written: shown


def test_outputs_are_labelled_not_raw(home: Settings) -> None:
    base = _ended_build(home, "done", {"build.log": "base\n"}, digest="sha256:" + "ba" * 32,
                        published=True, image_ref="registry.invalid/base@sha256:" + "ba" * 32)
    first = _ended_build(home, "done", {"build.log": "first\n"}, digest="sha256:" + "cd" * 32)
    digest = "sha256:" + "cd" * 32
    layer = {"digest": "sha256:" + "1e" * 32, "diff_id": "sha256:" + "d1" * 32, "size": 2048}
    reused = _ended_build(home, "done", {"build.log": "reused\n"}, digest=digest,
                          published=False, cached_from=first, base_digest="sha256:" + "ba" * 32,
                          outputs={"manifest": digest, "config": "sha256:" + "cf" * 32,
                                   "layers": [layer]})
    client = client_for(home)
    response = client.get(f"/builds/{reused}")
    parsed = page(response)
    outputs = text(parsed, "outputs")
    for raw in ("base_digest", "cached_from", "published", "True", "False", "None", "{'",
                "manifest", "config"):
        assert raw not in outputs, (raw, outputs)
    assert text(parsed, "output-published") == "no"
    assert text(parsed, "output-reused").startswith(f"the image of build {first}")
    assert f'href="/builds/{first}"' in response.text
    assert text(parsed, "output-config") == "sha256:" + "cf" * 32
    assert "Config digest" in outputs and "Image reference" in outputs
    assert "2.0 KiB" in text(parsed, "layers") and "1e1e1e1e1e1e" in text(parsed, "layers")
    # The base image is an input: its digest, and the build of this store that made it.
    assert text(parsed, "base-image") == f"sha256:{'ba' * 32} built by {base}"
    assert "Base image" in text(parsed, "inputs")
    published = page(client.get(f"/builds/{base}"))
    assert text(published, "output-published").startswith("yes")
    # No page prints a Python value: no True/False/None/dict repr in any build page.
    for build_id in (base, first, reused):
        body = client.get(f"/builds/{build_id}").text
        words = _Words()
        words.feed(body)
        for raw in ("True", "False", "None", "{'", "':"):
            assert raw not in words.text, (build_id, raw)


class _Words(HTMLParser):
    """A page's text (no markup)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text = ""

    def handle_data(self, data: str) -> None:
        self.text += data


def test_search_not_found_keeps_what_was_searched(home: Settings) -> None:
    client = client_for(home)
    missing = "sha256:" + "0" * 64
    nothing = page(client.get("/search", params={"q": f" {missing} "}), 404)
    assert nothing.ids["search-q"]["value"] == missing
    evil = page(client.get("/search", params={"q": EVIL}), 404)
    assert evil.ids["search-q"]["value"] == EVIL       # as typed, through an escaped attribute
    assert EVIL not in client.get("/search", params={"q": EVIL}).text
    # Other pages' search boxes start empty, even with a q of their own.
    assert page(client.get("/advisories", params={"q": "x"})).ids["search-q"]["value"] == ""


def test_event_page_leads_with_the_images(cli: Cli, tmp_path: Path) -> None:
    from alicorn.events.model import DONE, FAILED
    from alicorn.events.store import EventStore

    feed = tmp_path / "updateinfo.xml"
    feed.write_text(UPDATEINFO)
    cli("advisories", "import", str(feed), check=True)
    settings = load_settings(cli.home)
    old = _ended_build(settings, "done", {"build.log": "old\n"}, digest="sha256:" + "0d" * 32)
    new = _ended_build(settings, "done", {"build.log": "new\n"}, digest="sha256:" + "9e" * 32)
    store = EventStore(settings.database_url)
    (event,) = store.discover()
    with store.transaction() as s:
        ok = store.add_rebuild(s, image="pony", old_build_id=old, old_digest="sha256:" + "0d" * 32,
                               advisories=["TEST-2026-0001"], parent_id=None,
                               reason="busybox 1.35.0-1 < 1.36.0-1.fc40 (TEST-2026-0001)")
        store.set_rebuild(s, ok, DONE, build_id=new, new_digest="sha256:" + "9e" * 32,
                          tests="passed", gate="passed")
        bad = store.add_rebuild(s, image="other", old_build_id=None, old_digest=None,
                                advisories=["TEST-2026-0001"], parent_id=None, reason="planned")
        store.set_rebuild(s, bad, FAILED, reason="cannot submit: the recipe is gone")
        store.link(s, [(event.id, ok.id), (event.id, bad.id)])
    client = client_for(settings)
    data = queries.event(ctx(client), event.id)
    by_image = {r["image"]: r for r in data["rebuilds"]}
    assert by_image["pony"]["error"] is None
    assert by_image["pony"]["reason"].startswith("busybox 1.35.0-1 <")
    assert by_image["other"]["error"] == "cannot submit: the recipe is gone"
    assert by_image["other"]["reason"] == "cannot submit: the recipe is gone"
    api = client.get(f"/api/v1/events/{event.id}", headers={"Accept": "application/json"})
    assert {r["image"]: r["error"] for r in api.json()["rebuilds"]} == \
        {"pony": None, "other": "cannot submit: the recipe is gone"}
    response = client.get(f"/events/{event.id}")
    parsed = page(response)
    # The feed document's digest is named for what it is, not shown as an image digest.
    assert "Feed document sha256" in text(parsed, "event-advisory")
    assert data["digest"] in text(parsed, "feed-digest")
    assert 'class="digest"' not in response.text.split('id="feed-digest"', 1)[1][:200]
    main = response.text.split("<main>", 1)[1]
    assert main.index('id="rebuilds"') < main.index('id="feed-digest"')
    rebuilds = text(parsed, "rebuilds")
    assert "9e9e9e9e9e9e" in rebuilds and new in rebuilds and old in rebuilds
    assert "2 images to rebuild" in text(parsed, "event-summary")
    assert "TEST-2026-0001" in text(parsed, "event-summary")


def test_module_page_shows_the_recorded_containers(home: Settings) -> None:
    from alicorn.rollout.model import ModuleSpec, Replica
    from alicorn.rollout.store import ModuleStore

    store = ModuleStore(home.database_url, home.modules_dir)
    name = "page-pony"
    digest = "sha256:" + "5e" * 32
    built = _ended_build(home, "done", {"build.log": "x\n"}, digest=digest)
    store.create(ModuleSpec(name=name, repository="registry.invalid/pony", port=18081))
    store.set_serving(name, digest=digest, image=f"registry.invalid/pony@{digest}",
                      previous_digest=None)
    store.put_replica(name, Replica(name=f"{name}-a", digest=digest, host_port=40001,
                                    containers=(f"{name}-a-web", f"{name}-a-sidecar"),
                                    state="serving", healthy=True),
                      image=f"registry.invalid/pony@{digest}")
    client = client_for(home)
    response = client.get(f"/modules/{name}")
    parsed = page(response)
    replicas = text(parsed, "replicas")
    assert f"{name}-a-web" in replicas and f"{name}-a-sidecar" in replicas
    assert "127.0.0.1:40001" in replicas and "healthy" in replicas
    assert "\u2013" not in replicas   # no dash for a column left empty
    assert "1, 1 healthy" in text(parsed, "module-health")
    assert f'href="/builds/{built}"' in response.text    # the current digest's build
