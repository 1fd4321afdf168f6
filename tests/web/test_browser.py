"""The pages in a real browser: headless Chromium (Debian's, through selenium) against a real
``alicorn serve --api-only`` process and real builds.

- from an image digest pasted into the search box, two clicks reach the build's log;
- a submission without the submitter role is refused (by the page and by the API); one with
  it is accepted and its build page opens;
- a running build's log page follows the log as it grows, without a reload, to its end;
- a screenshot of each page, each showing real data ($ALICORN_SCREENSHOTS, else tmp_path).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
import time
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from conftest import Cli, PonyImages, git_repo, require

pytestmark = pytest.mark.integration

ApiServer = Callable[..., str]
WAIT = 30.0       # seconds a page may take to show what it should
BUILD_WAIT = 180.0  # seconds a small build may take, start to end


# -- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: $ALICORN_SCREENSHOTS, else this test's tmp_path/screenshots."""
    where = Path(os.environ.get("ALICORN_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def shoot(browser: WebDriver, where: Path, name: str) -> Path:
    """A PNG of the whole page (its full height) as ``where/name.png``."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(1000, min(int(height) + 40, 6000)))
    path = where / f"{name}.png"
    assert browser.save_screenshot(str(path)), f"no screenshot of {name}"
    assert path.stat().st_size > 1000, f"the screenshot of {name} is empty"
    browser.set_window_size(1280, 1000)
    return path


def wait_for(browser: WebDriver, what: str, check: Callable[[WebDriver], Any],
             timeout: float = WAIT) -> Any:
    """``check``'s first truthy answer; on timeout, a failure naming ``what`` and the page."""
    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.2).until(
            lambda d: check(d))
    except Exception as e:  # TimeoutException, or the page vanished under us
        body = ""
        with contextlib.suppress(Exception):  # the failure below says what is known
            body = browser.find_element(By.TAG_NAME, "body").text[:2000]
        raise AssertionError(f"waited {timeout:g} s for {what} on {browser.current_url}: "
                             f"{type(e).__name__}\npage text:\n{body}") from e


def element(browser: WebDriver, css: str, timeout: float = WAIT) -> WebElement:
    def first(d: WebDriver) -> WebElement | None:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    shown: WebElement = wait_for(browser, f"an element {css!r}", first, timeout)
    return shown


def text_of(browser: WebDriver, css: str) -> str:
    return str(element(browser, css).text)


def path_of(browser: WebDriver) -> str:
    return urlsplit(browser.current_url).path


def performance_log(browser: WebDriver) -> list[dict[str, Any]]:
    """What Chromium logged since the last call (and forget it)."""
    entries: list[dict[str, Any]] = browser.get_log("performance")  # type: ignore[no-untyped-call]
    return entries


def document_statuses(browser: WebDriver) -> list[tuple[str, int]]:
    """(url, HTTP status) of every document the browser loaded since the last call (from
    Chromium's performance log)."""
    found = []
    for entry in performance_log(browser):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.responseReceived" and \
                message["params"].get("type") == "Document":
            response = message["params"]["response"]
            found.append((str(response["url"]), int(response["status"])))
    return found


def token(cli: Cli, name: str, role: str) -> str:
    """A new API token of ``role`` in ``cli``'s home (`alicorn api token create`)."""
    rc, made = cli.json("api", "token", "create", name, "--role", role)
    assert rc == 0, made
    secret = made.get("token") or made.get("secret")
    assert isinstance(secret, str) and secret.startswith("alicorn_"), made
    return secret


def wait_build(url: str, build_id: str, timeout: float = BUILD_WAIT) -> dict[str, Any]:
    """The build as the API shows it once it has ended."""
    deadline = time.monotonic() + timeout
    while True:
        shown: dict[str, Any] = httpx.get(f"{url}/api/v1/builds/{build_id}", timeout=10).json()
        if shown.get("state") in ("done", "failed"):
            return shown
        assert time.monotonic() < deadline, f"build {build_id} did not end: {shown}"
        time.sleep(0.5)


def wait_event(url: str, timeout: float = BUILD_WAIT) -> dict[str, Any]:
    """A rebuild event that has ended (done, failed, skipped, ...), as the API lists it;
    one with rebuilds if there is one."""
    deadline = time.monotonic() + timeout
    while True:
        listed = httpx.get(f"{url}/api/v1/events", timeout=10).json()
        ended = [e for e in listed if e.get("state") not in ("new", "planned", "building")]
        if ended:
            return dict(max(ended, key=lambda e: bool(e.get("builds"))))
        assert time.monotonic() < deadline, f"no rebuild event ended: {listed}"
        time.sleep(1)


# -- a fast real build: a Debian base put in the store, a child on it ---------------------------
BASE_RECIPE = ("recipe: 1\nname: web-base\ndistribution: {type: debian, release: bookworm}\n"
               # Never fetched (the child adds no packages); a local address all the same.
               "repositories: [{name: m, suite: bookworm, url: 'http://127.0.0.1:9/debian'}]\n"
               "packages: [busybox]\n")


def store_debian_base(home: Path, work: Path) -> str:
    """A published Debian base image ``web-base`` (a root with a dpkg status), put in the
    home's store as a finished build, as tests/layered does; returns its digest."""
    from alicorn.config import load_settings
    from alicorn.image.layer import write_layer
    from alicorn.image.oci import new_layout, store_layout, write_image
    from alicorn.recipe import parse_recipe
    from alicorn.store.builds import DONE, BuildStore, Submission

    tree = work / "base-tree"
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(
        "Package: busybox\nStatus: install ok installed\nArchitecture: amd64\n"
        "Version: 1:1.35.0-4+b3\nSource: busybox (1:1.35.0-4)\n\n")
    (tree / "srv").mkdir()
    settings = load_settings(home)
    store = BuildStore(settings.database_url)
    layout = work / "base-layout"
    blobs = new_layout(layout)
    buf = io.BytesIO()
    layer = write_layer(tree, buf, source_date_epoch=0)
    (blobs / layer.digest.hex).write_bytes(buf.getvalue())
    info = write_image(layout, parse_recipe(BASE_RECIPE, file="web-base.yaml", base_dir=work),
                       [layer], 0)
    store_layout(layout, settings.images_dir, info.digest)
    row = store.submit(Submission(argv=["test"], source_kind="file",
                                  recipe_path="/web-base.yaml", recipe_content=BASE_RECIPE))
    store.finish(row.id, DONE, digest=str(info.digest), published=True, recipe_name="web-base",
                 recipe_content=BASE_RECIPE)
    return str(info.digest)


def child_recipe(name: str, extra: str = "") -> str:
    return (f"recipe: 1\nname: {name}\ndistribution: {{type: debian, release: bookworm}}\n"
            f"base: web-base\nfiles: [{{path: /srv/{name}.html, content: hi}}]\n{extra}")


def wheel(name: str = "pony_wheel", version: str = "1.0") -> tuple[str, bytes]:
    """A small, valid pure-Python wheel: (file name, bytes)."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": b"PONY = 1\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 .encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: alicorn-tests\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, data in files.items():
        digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, data in files.items():
            z.writestr(zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


class HeldArtifact:
    """An HTTP server on loopback holding one file: a GET for it waits until ``release()``
    (or 120 s), then gets the file."""

    def __init__(self, name: str, body: bytes):
        self.asked = threading.Event()
        self.released = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != f"/{name}":
                    self.send_error(404)
                    return
                owner.asked.set()
                owner.released.wait(120)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{name}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held_wheel() -> Iterator[tuple[HeldArtifact, str]]:
    name, body = wheel()
    held = HeldArtifact(name, body)
    try:
        yield held, hashlib.sha256(body).hexdigest()
    finally:
        held.close()


# -- 1. search by digest → build page → log, in two clicks --------------------------------------
def test_digest_to_build_log_in_two_clicks(pony_images: PonyImages, api_server: ApiServer,
                                           browser: WebDriver, screenshots: Path) -> None:
    # The pony's home is only read here: the server answers GETs, nothing is submitted.
    url = api_server(pony_images.cli.home)
    v1 = pony_images.v1
    digest, build_id = v1["digest"], v1["build_id"]
    browser.get(f"{url}/builds")
    element(browser, "table#builds")
    box = element(browser, "#search-q")
    box.clear()
    box.send_keys(digest)
    element(browser, "#search-go").click()                                    # click 1
    wait_for(browser, f"the build page of {build_id}",
             lambda d: path_of(d) == f"/builds/{build_id}")
    assert text_of(browser, "#build-digest").strip() == digest
    status = text_of(browser, "#provenance-status").strip()
    assert status == "verified", status
    shoot(browser, screenshots, "search-result")
    element(browser, "#log-link").click()                                     # click 2
    wait_for(browser, "the log page",
             lambda d: path_of(d) == f"/builds/{build_id}/logs/build.log")
    log = wait_for(browser, "the build's log text",
                   lambda d: f"build {build_id} on" in d.find_element(By.ID, "log").text
                   and d.find_element(By.ID, "log").text)
    assert f"image {digest}" in log
    assert "the build log ends here" in log
    assert text_of(browser, "#log-state").strip() == "complete"
    shoot(browser, screenshots, "log")


# -- 2. an unauthorized submission is refused; a submitter's is accepted -------------------------
@pytest.fixture
def submit_home(cli: Cli, tmp_path: Path) -> dict[str, Any]:
    """A home with a Debian base, a git repository of a child recipe on it (under the
    directory local submissions may come from), and reader and submitter tokens."""
    require("git")
    store_debian_base(cli.home, tmp_path)
    sources = tmp_path / "sources"
    recipe_dir = tmp_path / "recipe-src"
    recipe_dir.mkdir()
    (recipe_dir / "site.yaml").write_text(child_recipe("web-site"))
    repo = sources / "site"
    commit = git_repo(recipe_dir, repo)
    return {"cli": cli, "sources": sources, "repo": repo, "commit": commit,
            "reader": token(cli, "web-reader", "reader"),
            "submitter": token(cli, "web-submitter", "submitter")}


def fill_submit_form(browser: WebDriver, repo: Path) -> None:
    form = element(browser, "form#submit-form")
    for field, value in (("git", str(repo)), ("ref", "main"), ("recipe", "site.yaml")):
        box = form.find_element(By.NAME, field)
        box.clear()
        box.send_keys(value)
    performance_log(browser)  # forget what came before
    form.submit()


def test_unauthorized_submission_is_refused(submit_home: dict[str, Any], api_server: ApiServer,
                                            browser: WebDriver, screenshots: Path) -> None:
    cli: Cli = submit_home["cli"]
    repo: Path = submit_home["repo"]
    url = api_server(cli.home, env={"ALICORN_API_ANONYMOUS_READ": "1",
                                    "ALICORN_API_LOCAL_SOURCES": str(submit_home["sources"])})
    builds_before = httpx.get(f"{url}/api/v1/builds", timeout=10).json()

    # The page: anonymous (reads are open) fills the form and submits it.
    browser.get(f"{url}/submit")
    fill_submit_form(browser, repo)
    error = text_of(browser, "#error")
    assert "token" in error.lower() or "role" in error.lower() or "submitter" in error.lower(), \
        error
    statuses = document_statuses(browser)
    assert statuses and statuses[-1][1] in (401, 403), statuses
    assert urlsplit(statuses[-1][0]).path == "/submit", statuses
    shoot(browser, screenshots, "submit-refused")

    # The API: no token is a 401, a reader's token a 403, each with the error body.
    body = {"source": {"git": str(repo), "ref": "main", "recipe": "site.yaml"}}
    anonymous = httpx.post(f"{url}/api/v1/builds", json=body, timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["error"]["status"] == 401
    reader = httpx.post(f"{url}/api/v1/builds", json=body, timeout=10,
                        headers={"Authorization": f"Bearer {submit_home['reader']}"})
    assert reader.status_code == 403, reader.text
    assert reader.json()["error"]["status"] == 403
    assert "submitter" in reader.json()["error"]["message"].lower() or \
        "role" in reader.json()["error"]["message"].lower(), reader.text
    # Nothing was queued by the refusals.
    assert httpx.get(f"{url}/api/v1/builds", timeout=10).json() == builds_before

    # A submitter logs in with its token and submits: its build page opens, and it builds.
    browser.get(f"{url}/login")
    form = element(browser, "form#login-form")
    form.find_element(By.NAME, "token").send_keys(submit_home["submitter"])
    form.submit()
    wait_for(browser, "the builds list after logging in", lambda d: path_of(d) == "/builds")
    assert text_of(browser, "#who-name").strip() == "web-submitter"
    browser.get(f"{url}/submit")
    fill_submit_form(browser, repo)
    wait_for(browser, "the new build's page",
             lambda d: path_of(d).startswith("/builds/") and d.find_elements(By.ID,
                                                                             "build-state"))
    build_id = path_of(browser).removeprefix("/builds/")
    assert build_id and "/" not in build_id
    shown = wait_build(url, build_id)
    assert shown["state"] == "done", shown
    assert shown["submitter"] == "web-submitter"
    browser.refresh()
    assert text_of(browser, "#build-state").strip() == "done"
    assert text_of(browser, "#build-digest").strip() == shown["digest"]
    assert submit_home["commit"] in text_of(browser, "section#inputs")


# -- 3. a running build's log, followed as it grows ---------------------------------------------
def test_running_build_log_updates(cli: Cli, tmp_path: Path, api_server: ApiServer,
                                   browser: WebDriver, screenshots: Path,
                                   held_wheel: tuple[HeldArtifact, str]) -> None:
    held, sha256 = held_wheel
    store_debian_base(cli.home, tmp_path)
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(child_recipe(
        "web-slow", f"artifacts:\n  - {{type: wheel, url: '{held.url}', sha256: {sha256}, "
                    "target: /opt/pony-wheel}\n"))
    url = api_server(cli.home)
    rc, queued = cli.json("build", str(recipe), "--no-wait", "--no-push", "--skip-checks")
    assert rc == 0, queued
    build_id = queued["build_id"]
    # The build is running, and waits for its artifact.
    assert held.asked.wait(BUILD_WAIT), "the build never asked for its artifact"
    browser.get(f"{url}/builds/{build_id}/logs/build.log")
    wait_for(browser, "#log-state 'running'",
             lambda d: d.find_element(By.ID, "log-state").text.strip() == "running")
    before = wait_for(browser, "the log so far",
                      lambda d: "unpacking the base" in d.find_element(By.ID, "log").text
                      and d.find_element(By.ID, "log").text)
    assert f"build {build_id} on" in before
    assert "packages in the image" not in before
    shoot(browser, screenshots, "log-running")
    # Anything set on this page is lost if it reloads.
    browser.execute_script("window.alicornStillHere = 'yes';")

    held.release()
    after = wait_for(browser, "the rest of the log",
                     lambda d: "the build log ends here" in d.find_element(By.ID, "log").text
                     and d.find_element(By.ID, "log").text, timeout=BUILD_WAIT)
    wait_for(browser, "#log-state 'complete'",
             lambda d: d.find_element(By.ID, "log-state").text.strip() == "complete",
             timeout=BUILD_WAIT)
    assert browser.execute_script("return window.alicornStillHere") == "yes", \
        "the page reloaded instead of following the log"
    assert after.startswith(before.rstrip())
    assert "packages in the image" in after and "image sha256:" in after
    assert path_of(browser) == f"/builds/{build_id}/logs/build.log"
    # What the page shows is the log as written, line for line, each once.
    final = browser.find_element(By.ID, "log").text
    written = (cli.home / "builds" / build_id / "build.log").read_text()
    lines = [line for line in written.splitlines() if line.strip()]
    assert lines and [line for line in final.splitlines() if line.strip()] == lines
    shown = json.loads(cli("show", build_id, "--json", check=True).stdout)
    assert shown["state"] == "done", shown
    shoot(browser, screenshots, "log-complete")


# -- 4. a screenshot of each page, showing real data --------------------------------------------
def test_screenshots_of_every_page(pony_images: PonyImages, api_server: ApiServer,
                                   browser: WebDriver, screenshots: Path) -> None:
    url = api_server(pony_images.cli.home)
    v1 = pony_images.v1
    digest, build_id = v1["digest"], v1["build_id"]

    browser.get(f"{url}/builds")
    rows = browser.find_elements(By.CSS_SELECTOR, "table#builds tr.build")
    assert len(rows) >= 4, "the builds list shows fewer builds than the pony's home has"
    links = [a.get_attribute("href") or "" for a in
             browser.find_elements(By.CSS_SELECTOR, "table#builds a.build-link")]
    assert any(link.endswith(f"/builds/{build_id}") for link in links), links
    assert "done" in text_of(browser, "table#builds")
    shoot(browser, screenshots, "builds")

    browser.get(f"{url}/builds/{build_id}")
    assert text_of(browser, "#build-digest").strip() == digest
    assert text_of(browser, "#build-state").strip() == "done"
    assert text_of(browser, "#provenance-status").strip() == "verified"
    assert "pony-rpm" in text_of(browser, "pre#recipe")
    assert "busybox" in text_of(browser, "section#packages")
    shoot(browser, screenshots, "build")

    browser.get(f"{url}/builds/{build_id}/logs/build.log")
    assert f"build {build_id} on" in text_of(browser, "#log")
    shoot(browser, screenshots, "build-log")

    missing = "sha256:" + "0" * 64
    browser.get(f"{url}/builds")
    element(browser, "#search-q").send_keys(missing)
    performance_log(browser)
    element(browser, "#search-go").click()
    assert missing in text_of(browser, "#error")
    assert [s for _, s in document_statuses(browser)][-1:] == [404]
    shoot(browser, screenshots, "search-not-found")

    browser.get(f"{url}/advisories")
    advisories = text_of(browser, "table#advisories")
    assert "FEDORA-2024-b7e1c3d2a9" in advisories, advisories
    shoot(browser, screenshots, "advisories")
    link = element(browser, "table#advisories a[href*='FEDORA-2024-b7e1c3d2a9']")
    link.click()
    wait_for(browser, "the advisory page", lambda d: "/advisories/" in path_of(d))
    assert "FEDORA-2024-b7e1c3d2a9" in text_of(browser, "body")
    assert "CVE-2022-48174" in text_of(browser, "body")
    affected = element(browser, "table#affected")
    rows = affected.find_elements(By.CSS_SELECTOR, "tbody tr")
    if rows:   # the images that still need the update (a store's newest build of a recipe)
        assert "pony-rpm" in affected.text and "busybox" in affected.text, affected.text
    else:
        assert "No image" in text_of(browser, "#no-affected")
    shoot(browser, screenshots, "advisory")

    # The rebuild service turns the advisory into an event and rebuilds the pony: wait until
    # one event has ended with its rebuild.
    event = wait_event(url)
    browser.get(f"{url}/events")
    events = text_of(browser, "table#events")
    assert "FEDORA-2024-b7e1c3d2a9" in events and event["id"] in events, events
    shoot(browser, screenshots, "events")
    element(browser, f"table#events a[href='/events/{event['id']}']").click()
    wait_for(browser, "the event's page", lambda d: path_of(d) == f"/events/{event['id']}")
    page = text_of(browser, "main")
    assert "FEDORA-2024-b7e1c3d2a9" in page and event["state"] in page, page
    # Whether the service rebuilt the pony depends on when it saw the advisory: before v2
    # was built (a rebuild, with its tests and gate) or after (skipped: nothing to fix).
    for rebuilt in event["builds"]:
        assert rebuilt["image"] in text_of(browser, "table#rebuilds")
        if rebuilt.get("build_id"):
            element(browser, f"table#rebuilds a[href='/builds/{rebuilt['build_id']}']")
    if not event["builds"]:
        assert event["reason"] in page, page
    shoot(browser, screenshots, "event")

    browser.get(f"{url}/modules")
    modules = element(browser, "table#modules")
    module_links = modules.find_elements(By.CSS_SELECTOR, "a[href^='/modules/']")
    shoot(browser, screenshots, "modules")
    if module_links:   # the rollout tests deploy the pony in this home; alone, none runs
        module_links[0].click()
        assert text_of(browser, "#module-digest").startswith("sha256:")
        element(browser, "table#history")
        shoot(browser, screenshots, "module")

    head = httpx.get(f"{url}/api/v1/log/head", timeout=10).json()
    browser.get(f"{url}/log")
    size = int(text_of(browser, "#log-size"))
    assert size >= head["tree_size"] > 0, (size, head)
    # The signed head the API showed, among the page's heads (by its root hash), verified.
    row = element(browser, f"table#heads code[title='{head['root_hash']}']")
    assert row.text and head["root_hash"].startswith(row.text)
    shoot(browser, screenshots, "transparency-log")

    browser.get(f"{url}/submit")
    element(browser, "form#submit-form")
    browser.get(f"{url}/login")
    element(browser, "form#login-form")
    shoot(browser, screenshots, "login")


DEBIAN_ADVISORY = {
    "schema_version": "1.6.0", "id": "DEBIAN-CVE-2022-48174",
    "modified": "2026-01-01T00:00:00Z", "published": "2026-01-01T00:00:00Z",
    "aliases": ["CVE-2022-48174"], "summary": "busybox: stack overflow in ash",
    "details": "A stack overflow in busybox's ash shell; bookworm has the fix in "
               "1:1.35.0-4+deb12u1.",
    "affected": [{"package": {"ecosystem": "Debian:12", "name": "busybox"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [
                      {"introduced": "0"}, {"fixed": "1:1.35.0-4+deb12u1"}]}]}],
    "database_specific": {"severity": "high"},
}


def test_advisory_with_affected_images(cli: Cli, tmp_path: Path, api_server: ApiServer,
                                       browser: WebDriver, screenshots: Path) -> None:
    """An image of this store that an advisory applies to, on the advisory's page."""
    store_debian_base(cli.home, tmp_path)
    recipe = tmp_path / "site.yaml"
    recipe.write_text(child_recipe("web-site"))
    rc, built = cli.json("build", str(recipe), "--no-push", "--skip-checks")
    assert rc == 0 and built["state"] == "done", built
    cli.down()  # no rebuild service reacting to the advisory while the page is looked at
    feed = tmp_path / "busybox.osv.json"
    feed.write_text(json.dumps(DEBIAN_ADVISORY))
    rc, imported = cli.json("advisories", "import", str(feed))
    assert rc == 0 and imported["added"] == 1, imported
    url = api_server(cli.home)

    browser.get(f"{url}/advisories")
    listed = text_of(browser, "table#advisories")
    assert "DEBIAN-CVE-2022-48174" in listed and "CVE-2022-48174" in listed, listed
    element(browser, "table#advisories a[href*='DEBIAN-CVE-2022-48174']").click()
    wait_for(browser, "the advisory's page",
             lambda d: path_of(d) == "/advisories/DEBIAN-CVE-2022-48174")
    assert text_of(browser, "#advisory-id") == "DEBIAN-CVE-2022-48174"
    rows = browser.find_elements(By.CSS_SELECTOR, "table#affected tr.affected-image")
    assert len(rows) == 1, text_of(browser, "main")
    assert "web-site" in rows[0].text
    assert "1:1.35.0-4+b3" in rows[0].text and "1:1.35.0-4+deb12u1" in rows[0].text
    link = rows[0].find_element(By.CSS_SELECTOR, f"a[href='/builds/{built['build_id']}']")
    shoot(browser, screenshots, "advisory-affected")
    link.click()
    wait_for(browser, "the affected image's build",
             lambda d: path_of(d) == f"/builds/{built['build_id']}")
    assert text_of(browser, "#build-digest") == built["digest"]
