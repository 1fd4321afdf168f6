"""Running a recipe's tests against an image in real podman.

The tests travel with the image (the org.alicorn.tests label, written from the recipe), so any
Alicorn image can be tested from its reference alone.  The container publishes on loopback only,
on a free port, and is removed afterwards whatever happens.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from alicorn.config import free_port
from alicorn.errors import BadInput, RunError
from alicorn.image import LABEL_TESTS
from alicorn.proc import run, which
from alicorn.run import podman as pm


@dataclass(frozen=True)
class TestResult:
    name: str
    passed: bool
    detail: str
    seconds: float


def _http(url: str, spec: dict[str, Any]) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            status, body, headers = resp.status, resp.read(1 << 20), resp.headers
    except urllib.error.HTTPError as e:
        status, body, headers = e.code, e.read(1 << 20), e.headers
    except (urllib.error.URLError, OSError) as e:
        return False, f"GET {url}: {getattr(e, 'reason', e)}"
    want = spec.get("status", 200)
    if status != want:
        return False, f"GET {url}: HTTP {status}, expected {want}"
    text = body.decode("utf-8", "replace")
    if "contains" in spec and spec["contains"] not in text:
        return False, f"GET {url}: the body does not contain {spec['contains']!r}"
    for name, value in spec.get("header", {}).items():
        if headers.get(name) != value:
            return False, f"GET {url}: header {name} is {headers.get(name)!r}, expected {value!r}"
    return True, f"GET {url}: HTTP {status}"


def _command(container: str, spec: dict[str, Any]) -> tuple[bool, str]:
    proc = run([which("podman"), "exec", container, *spec["command"]], check=False,
                  timeout=120, what="podman exec")
    output = proc.stdout + proc.stderr
    want = spec.get("exit_code", 0)
    shown = " ".join(spec["command"])
    if proc.returncode != want:
        return False, f"{shown}: exit status {proc.returncode}, expected {want}: " \
                      f"{output.strip()[-300:]}"
    if "output_contains" in spec and spec["output_contains"] not in output:
        return False, f"{shown}: output lacks {spec['output_contains']!r}"
    return True, f"{shown}: exit status {proc.returncode}"


def run_tests(ref: str, *, startup_timeout: float = 60) -> list[TestResult]:
    """Start ``ref``, wait until it answers, run its tests; the container is always removed."""
    pm.pull(ref)
    raw = pm.labels(ref).get(LABEL_TESTS)
    if not raw:
        raise BadInput(f"{ref} carries no tests (its recipe has no tests:)")
    tests: list[dict[str, Any]] = json.loads(raw)
    container_port = pm.exposed_port(ref) or 80
    ports = {t["http"].get("port", container_port) for t in tests if "http" in t}
    ports.add(container_port)
    published = {p: free_port() for p in sorted(ports)}
    name = f"alicorn-test-{secrets.token_hex(4)}"
    args = ["run", "--detach", "--name", name, *pm.ulimit_args()]
    for inside, outside in published.items():
        args += ["--publish", f"127.0.0.1:{outside}:{inside}"]
    results = []
    try:
        pm.podman(*args, ref)
        health = f"http://127.0.0.1:{published[container_port]}{pm.health_path(ref)}"
        try:
            pm.wait_http(health, timeout=startup_timeout)
        except RunError as e:
            logs = pm.podman("logs", name, check=False)[-2000:]
            return [TestResult("starts and answers", False, f"{e.message}\n{logs}",
                               startup_timeout)]
        for i, spec in enumerate(tests):
            started = time.monotonic()
            if "http" in spec:
                port = published[spec["http"].get("port", container_port)]
                url = f"http://127.0.0.1:{port}{spec['http'].get('path', '/')}"
                ok, detail = _http(url, spec["http"])
            else:
                ok, detail = _command(name, spec)
            results.append(TestResult(spec.get("name", f"test {i + 1}"), ok, detail,
                                      round(time.monotonic() - started, 3)))
    finally:
        pm.remove(name)
    return results
