"""`alicorn cluster`: a multi-host setup on one machine started, used and stopped through the
command line as a new user would: `up` starts PostgreSQL, the broker, a registry, an API host
and the workers (in network namespaces of their own with --netns); a home sourcing DIR/env
builds there; `down` leaves no process and no namespace behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from alicorn import daemon
from alicorn.cluster.compose import group_members
from cluster.conftest import Compose, RpmPony
from conftest import ALICORN, require


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _status(compose: Compose) -> tuple[int, dict[str, Any]]:
    proc = compose("status", "--json")
    return proc.returncode, json.loads(proc.stdout)


def _wait_builds(url: str, ids: list[str], timeout: float = 600) -> dict[str, Any]:
    from alicorn.store.builds import FINAL, BuildStore

    store = BuildStore(url)
    deadline = time.monotonic() + timeout
    while True:
        rows = {b: store.latest_attempt(b) for b in ids}
        if all(r.state in FINAL for r in rows.values()):
            return rows
        assert time.monotonic() < deadline, {b: r.state for b, r in rows.items()}
        time.sleep(0.5)


def _submit_together(compose: Compose, rpm_pony: RpmPony, names: list[str]) -> list[str]:
    """Submit one build per name at once (separate processes), as users on two hosts."""
    user = compose.cli("submitter")
    procs = [subprocess.Popen(
        [*ALICORN, "build", str(rpm_pony.recipe(n)), "--no-wait",
         "--skip-checks"], env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for n in names]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ids.append(out.strip())
    return ids


def _assert_all_gone(compose: Compose, pids: list[int], namespaces: set[str]) -> None:
    left = [p for p in pids if daemon.alive(p) or group_members(p)]
    assert not left, f"still running after down: {left}"
    assert not (namespaces & _namespaces()), _namespaces()


@pytest.mark.parametrize("netns", [False, True], ids=["processes", "netns"])
def test_up_build_on_two_workers_down(compose: Compose, rpm_pony: RpmPony, netns: bool) -> None:
    if netns:
        require("ip", "nsenter", "socat")
        if os.getuid() != 0:
            pytest.skip("network namespaces need root")
    args = ["--workers", "2", *(["--netns"] if netns else [])]
    up = compose("up", *args, check=True)
    assert "cluster up in" in up.stdout
    code, status = _status(compose)
    assert code == 0 and status["up"], status
    names = {r["name"] for r in status["services"]}
    assert {"postgres", "redis", "registry", "api", "worker-1", "worker-2"} <= names
    state = compose.state()
    env = compose.env()
    assert env["ALICORN_QUEUE"] == "celery"
    assert env["ALICORN_DATABASE_URL"] == state["services"]["postgres"]["url"]
    assert compose("env", check=True).stdout == (compose.dir / "env").read_text()
    # The API host holds no signing key.
    api_home = Path(state["services"]["api"]["home"])
    assert not list(api_home.glob("keys/**/*.key")), list(api_home.glob("keys/**/*"))
    namespaces = {w["netns"] for w in state["workers"] if w["netns"]}
    if netns:
        assert len(namespaces) == 2 and namespaces <= _namespaces()
        # The worker really runs in its namespace: its network is not the host's.
        w = state["workers"][0]
        assert os.readlink(f"/proc/{w['pid']}/ns/net") != os.readlink("/proc/self/ns/net")
        assert env["ALICORN_DATABASE_URL"].split("@")[1].startswith(state["subnet"] + ".")

    # Twice: refused, naming the running cluster.
    again = compose("up", *args)
    assert again.returncode == 2
    assert f"a cluster is already running in {compose.dir}" in again.stderr
    assert "worker-1 (pid" in again.stderr and "cluster down" in again.stderr

    tag = "ns" if netns else "p"
    ids = _submit_together(compose, rpm_pony, [f"pony-compose-{tag}-1", f"pony-compose-{tag}-2"])
    rows = _wait_builds(env["ALICORN_DATABASE_URL"], ids)
    assert {r.state for r in rows.values()} == {"done"}, {b: r.error for b, r in rows.items()}
    assert all(r.published for r in rows.values())
    # Celery worker ids are host:pid: two builds at once went to the two workers.
    workers = {":".join(r.worker.split(":")[:2]) for r in rows.values()}
    assert len(workers) == 2, workers
    # Each image is in the cluster's registry, under the address every host uses.
    assert all((r.image_ref or "").startswith(env["ALICORN_REGISTRY"] + "/")
               for r in rows.values()), [r.image_ref for r in rows.values()]

    pids = compose.pids()
    down = compose("down", check=True, timeout=180)
    assert "worker-1" in down.stdout and "postgres" in down.stdout
    _assert_all_gone(compose, pids, namespaces)
    code, status = _status(compose)
    assert code == 1 and not any(r["up"] for r in status["services"])


def test_scale(compose: Compose) -> None:
    compose("up", "--workers", "1", check=True)
    compose("scale", "2", check=True)
    _, status = _status(compose)
    assert [r["name"] for r in status["services"] if r["kind"] == "worker" and r["up"]] == [
        "worker-1", "worker-2"]
    second = compose.state()["workers"][1]["pid"]
    compose("scale", "1", check=True)
    assert not daemon.alive(second) and not group_members(second)
    _, status = _status(compose)
    assert status["up"] and [r["name"] for r in status["services"]
                             if r["kind"] == "worker"] == ["worker-1"]


def test_rabbitmq_broker(compose: Compose, rpm_pony: RpmPony) -> None:
    if shutil.which("rabbitmq-server") is None:
        require("rabbitmq-server")
    compose("up", "--workers", "1", "--broker", "rabbitmq", check=True)
    env = compose.env()
    assert env["ALICORN_BROKER_URL"].startswith("amqp://")
    ids = _submit_together(compose, rpm_pony, ["pony-compose-amqp"])
    rows = _wait_builds(env["ALICORN_DATABASE_URL"], ids)
    assert [r.state for r in rows.values()] == ["done"], [r.error for r in rows.values()]
    pids = compose.pids()
    compose("down", check=True, timeout=180)
    _assert_all_gone(compose, pids, set())


def test_bad_input(compose: Compose, tmp_path: Path) -> None:
    # Nothing to stop.
    proc = compose("down")
    assert proc.returncode == 2 and "no cluster was started in" in proc.stderr
    # A port taken: refused before anything starts.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = compose("up", "--port", f"api={port}")
    assert proc.returncode == 2, proc.stderr
    assert f"port {port} for api is taken on 127.0.0.1" in proc.stderr
    assert "--port api=PORT" in proc.stderr
    assert not compose.pids() or not any(daemon.alive(p) for p in compose.pids())
    proc = compose("up", "--port", "web=1")
    assert proc.returncode == 2 and "no service named web" in proc.stderr
    # A tool missing (redis-server not on PATH): said with the package to install.
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = compose("up", env={"PATH": str(empty)})
    assert proc.returncode == 1, proc.stderr
    assert "redis-server is not installed" in proc.stderr
    assert "apt-get install redis-server" in proc.stderr


def test_failed_up_stops_what_it_started(compose: Compose) -> None:
    """A worker that cannot start (a bad queue setting) fails `up`, which stops the services
    it had started already."""
    proc = compose("up", "--workers", "1", env={"ALICORN_QUEUE_MAX_ATTEMPTS": "many"})
    assert proc.returncode == 1 and "did not start" in proc.stderr, proc.stderr
    pids = compose.state()["stopped"]["pids"]
    assert len(pids) >= 4   # postgres, redis, registry, api, the worker
    assert not any(daemon.alive(p) for p in pids)
