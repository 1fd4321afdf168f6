"""Fixtures of the web tests: a real ``alicorn serve --api-only`` process for a home, and a
headless Chromium (Debian's, through selenium) to look at its pages."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ALICORN, free_port, require  # tests/conftest.py (tests/web is a package)

# How long `alicorn serve --api-only` may take to answer /healthz.
SERVER_START_TIMEOUT = 30.0

ApiServerFactory = Callable[..., str]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerFactory]:
    """A factory: ``api_server(home, env=None)`` starts ``python -m alicorn serve --api-only
    --listen 127.0.0.1:<free port>`` for the ALICORN_HOME ``home`` (``env``: more environment,
    e.g. ``ALICORN_API_ANONYMOUS_READ=0``), waits until it answers ``/healthz`` and returns its
    base URL (``http://127.0.0.1:PORT``, no trailing slash).  Every server it started is
    stopped at the end of the test (SIGTERM, then SIGKILL)."""
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(home: Path, env: dict[str, str] | None = None) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = tmp_path_factory.mktemp("api-server") / "serve.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen(
            [*ALICORN, "serve", "--api-only", "--listen", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "ALICORN_HOME": str(home), **(env or {})})
        started.append((proc, log))
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                output = log_path.read_text(errors="replace")
                raise AssertionError(f"alicorn serve --api-only on {url} did not come up "
                                     f"(exit {proc.poll()}):\n{output}")
            time.sleep(0.1)
        return url

    yield start
    for proc, log in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (selenium 4 webdriver.Chrome), 1280x1000, keeping its performance
    log (``driver.get_log("performance")``: the network events, HTTP statuses among them)."""
    require("chromium", "chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    # Root needs --no-sandbox; a container's small /dev/shm needs --disable-dev-shm-usage.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    # The performance log holds the HTTP status of every page loaded (driver.get_log).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
