"""Running a recipe's tests against an image in real podman.

The tests travel with the image (the org.alicorn.tests label, written from the recipe), so any
Alicorn image can be tested from its reference alone.  The container publishes on loopback only,
on a free port, and is removed afterwards whatever happens.

A build tests its *candidate* before anything is pushed: :func:`run_layout_tests` loads the image
from its OCI layout into podman's store under a name of its own, runs the tests, and removes
that name again (the registry never sees an untested image).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicorn.config import free_port
from alicorn.errors import BadInput, RunError, ToolError
from alicorn.image import LABEL_HEALTHCHECK, LABEL_TESTS
from alicorn.proc import BuildLog, run, which
from alicorn.run import podman as pm

# How much of what a failing check saw goes into its detail.
_SEEN = 160


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
        return False, f"GET {url}: the body does not contain {spec['contains']!r}; it was " \
                      f"{_seen(text)}"
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
        return False, f"{shown}: output lacks {spec['output_contains']!r}; it was " \
                      f"{_seen(output)}"
    return True, f"{shown}: exit status {proc.returncode}"


def _seen(text: str) -> str:
    text = " ".join(text.split())
    return repr(text[:_SEEN] + ("…" if len(text) > _SEEN else "")) if text else "empty"


def _log(log: BuildLog | None, line: str) -> None:
    if log is not None:
        log.write(line, stream="tests")


def _running(container: str) -> bool:
    state = pm.podman("inspect", "--format", "{{.State.Running}}", container, check=False)
    return state.strip() == "true"


def _wait_healthy(container: str, hc: dict[str, Any], published: dict[int, int],
                  container_port: int, timeout: float) -> None:
    """Wait until the container answers its health check: the recipe's command, else its
    HTTP path (on the port the check names, else the image's); a container that exits
    meanwhile fails at once."""
    port = published.get(hc.get("http", {}).get("port", container_port))
    deadline = time.monotonic() + timeout
    last = "no answer"
    next_state = 0.0
    while time.monotonic() < deadline:
        if "command" in hc:
            proc = run([which("podman"), "exec", container, *hc["command"]], check=False,
                       timeout=30, what="podman exec")
            if proc.returncode == 0:
                return
            last = f"{' '.join(hc['command'])}: exit status {proc.returncode}"
        elif port is not None:
            url = f"http://127.0.0.1:{port}{hc.get('http', {}).get('path', '/')}"
            try:
                pm.wait_http(url, timeout=0.5)
                return
            except RunError as e:
                last = e.message
        elif time.monotonic() > deadline - timeout + 1 and _running(container):
            # Neither a health check nor a port: running after a second is all one can ask.
            return
        now = time.monotonic()
        if now >= next_state:
            next_state = now + 1
            if not _running(container):
                raise RunError(f"the container exited before it was healthy ({last})")
        time.sleep(0.2)
    raise RunError(f"the container was not healthy within {timeout:.0f} s: {last}")


def run_tests(ref: str, *, startup_timeout: float = 60, pull: bool = True,
              log: BuildLog | None = None) -> list[TestResult]:
    """Start ``ref``, wait until it answers, run its tests; the container is always removed.

    ``pull=False``: ``ref`` is already in podman's store (a candidate :func:`run_layout_tests`
    loaded).  Each result goes to ``log`` as well.
    """
    if pull:
        pm.pull(ref)
    image_labels = pm.labels(ref)
    raw = image_labels.get(LABEL_TESTS)
    if not raw:
        raise BadInput(f"{ref} carries no tests (its recipe has no tests:)")
    tests: list[dict[str, Any]] = json.loads(raw)
    exposed = pm.exposed_port(ref)
    container_port = exposed or 80
    ports = {t["http"].get("port", container_port) for t in tests if "http" in t}
    health: dict[str, Any] = json.loads(image_labels.get(LABEL_HEALTHCHECK) or "{}")
    if "port" in health.get("http", {}):
        ports.add(health["http"]["port"])
    if exposed is not None or ports:
        ports.add(container_port)
    published = {p: free_port() for p in sorted(ports)}
    name = f"alicorn-test-{secrets.token_hex(4)}"
    args = ["run", "--detach", "--name", name, *pm.ulimit_args()]
    for inside, outside in published.items():
        args += ["--publish", f"127.0.0.1:{outside}:{inside}"]
    results = []
    _log(log, f"starting {ref} as {name}, ports {published or 'none'}")
    try:
        pm.podman(*args, ref)
        started = time.monotonic()
        try:
            _wait_healthy(name, health, published, container_port, startup_timeout)
        except RunError as e:
            logs = pm.podman("logs", name, check=False)[-2000:]
            _log(log, f"FAIL starts and answers: {e.message}")
            for line in logs.splitlines():
                _log(log, f"  container: {line}")
            return [TestResult("starts and answers", False, f"{e.message}\n{logs}",
                               round(time.monotonic() - started, 3))]
        _log(log, f"healthy after {time.monotonic() - started:.1f} s")
        for i, spec in enumerate(tests):
            started = time.monotonic()
            if "http" in spec:
                port = published[spec["http"].get("port", container_port)]
                url = f"http://127.0.0.1:{port}{spec['http'].get('path', '/')}"
                ok, detail = _http(url, spec["http"])
            else:
                ok, detail = _command(name, spec)
            result = TestResult(spec.get("name", f"test {i + 1}"), ok, detail,
                                round(time.monotonic() - started, 3))
            _log(log, f"{'pass' if ok else 'FAIL'} {result.name}: {detail}")
            results.append(result)
        if log is not None and not all(r.passed for r in results):
            for line in pm.podman("logs", name, check=False)[-2000:].splitlines():
                _log(log, f"  container: {line}")
    finally:
        # No grace period: the container is disposable, and a server that is PID 1 without a
        # SIGTERM handler (busybox httpd) would hold every test run for podman's 10 s.
        pm.podman("rm", "--force", "--time", "0", "--ignore", name, check=False)
    return results


def run_layout_tests(layout: Path, *, log: BuildLog | None = None,
                startup_timeout: float = 60) -> list[TestResult]:
    """The tests of the image in the OCI ``layout`` (a candidate not yet in any registry):
    loaded into podman under a name of its own, tested, and that name removed again."""
    try:
        index = json.loads((layout / "index.json").read_bytes())
        desc = index["manifests"][0]
        tag = desc.get("annotations", {}).get("org.opencontainers.image.ref.name", "latest")
    except (OSError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise BadInput(f"{layout} is not a readable OCI image layout: {e}") from e
    local = f"localhost/alicorn-candidate-{secrets.token_hex(6)}:{tag}"
    # podman first, then skopeo: podman chooses its network backend the first time it opens
    # the store, and on a store that already holds images (skopeo's) it picks CNI, whose
    # plugins Debian's podman does not install, instead of netavark.
    pm.podman("image", "exists", local, check=False)
    try:
        run([which("skopeo"), "copy", "--quiet", f"oci:{layout}:{tag}",
             f"containers-storage:{local}"], log=log, what="load the candidate into podman",
            timeout=600)
    except ToolError as e:
        raise RunError(f"the candidate image could not be loaded into podman: {e.message}",
                       hint=e.hint) from e
    try:
        return run_tests(local, startup_timeout=startup_timeout, pull=False, log=log)
    finally:
        # Untags only this name: the same image under another name (a pulled earlier build)
        # stays, and so does an image a container of someone else still uses.
        pm.podman("rmi", local, check=False)


