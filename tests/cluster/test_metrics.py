"""Operations: a worker's /healthz and /metrics (alicorn worker --listen), and the API host's
/metrics; the figures are the database's, so every host tells the same."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.conftest import Cluster, RpmPony, wait_final
from conftest import free_port

pytestmark = pytest.mark.integration

DEB_RECIPE = """\
recipe: 1
name: never-a-deb-worker
distribution: {type: debian, release: bookworm}
repositories: [{name: main, url: "http://127.0.0.1:9/debian", suite: bookworm}]
packages: [busybox]
"""


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = _get(url)
    assert status == 200, body
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def _poll(what: str, ok: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_worker_health_and_metrics(cluster: Cluster, rpm_pony: RpmPony, tmp_path: Path) -> None:
    port = free_port()
    cluster.start_worker("w1", "--capability", "rpm", "--listen", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    status, body = _get(base + "/healthz")
    health = json.loads(body)
    assert status == 200 and health["ok"], health
    assert "alicorn.rpm.x86_64" in health["queues"] and "alicorn.service" in health["queues"]
    assert health["database"]["ok"] and health["broker"]["ok"]
    assert _get(base + "/nothing")[0] == 404

    assert health["running"] == []
    assert ("alicorn_queue_depth", (("queue", "alicorn.deb.x86_64"),)) not in \
        _samples(base + "/metrics")

    api = cluster.cli()
    # A Debian build no worker of this cluster takes: it stays queued, and is counted so.
    deb = tmp_path / "deb.yaml"
    deb.write_text(DEB_RECIPE)
    api("build", str(deb), "--no-wait", check=True)
    good = api("build", str(rpm_pony.recipe("pony-metrics")), "--no-wait", "--skip-checks",
               check=True).stdout.strip()
    # While it builds, the worker tells it among its running builds (its pool process's).
    _poll("the build among the worker's running ones",
          lambda: good in json.loads(_get(base + "/healthz")[1])["running"])
    broken = rpm_pony.recipe("pony-metrics-broken").read_text().replace(
        "url: repo", "url: /nonexistent/repo")
    bad_recipe = rpm_pony.dir / "pony-metrics-broken.yaml"
    bad_recipe.write_text(broken)
    bad = api("build", str(bad_recipe), "--no-wait", "--skip-checks", check=True).stdout.strip()
    rows = wait_final(cluster, [good, bad])
    assert rows[good].state == "done" and rows[bad].state == "failed", rows[bad].error

    m = _samples(base + "/metrics")
    assert m[("alicorn_queue_depth", (("queue", "alicorn.deb.x86_64"),))] == 1
    assert m[("alicorn_builds_total", (("state", "done"),))] == 1
    assert m[("alicorn_builds_total", (("state", "failed"),))] == 1
    assert m[("alicorn_build_failures_total", ())] == 1
    assert m[("alicorn_builds_running", ())] == 0
    assert m[("alicorn_build_duration_seconds_count", ())] == 2
    assert m[("alicorn_build_duration_seconds_sum", ())] > 0
    assert m[("alicorn_build_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert m[("alicorn_queue_wait_seconds_count", ())] == 2
    # The broker's own view of this worker's queues: nothing waits there.
    assert m[("alicorn_broker_queue_length", (("queue", "alicorn.rpm.x86_64"),))] == 0

    # The API host tells the same figures.
    listen = api.env["ALICORN_API_LISTEN"]
    api("serve", "--api-only", "--detach", check=True, timeout=60)
    try:
        _poll("the API", lambda: _get(f"http://{listen}/api/v1/healthz")[0] == 200)
        served = _samples(f"http://{listen}/metrics")
        for key in (("alicorn_builds_total", (("state", "done"),)),
                    ("alicorn_queue_depth", (("queue", "alicorn.deb.x86_64"),))):
            assert served[key] == m[key]
        # The cluster's shape: the worker process that ran both builds, idle now.
        status, body = _get(f"http://{listen}/api/v1/cluster")
        view = json.loads(body)
        assert status == 200, view
        assert view["queues"] == {"alicorn.deb.x86_64": 1}
        ran = {rows[good].worker, rows[bad].worker}
        assert {w["worker"] for w in view["workers"]} == ran
        assert all(w["running"] == [] and not w["alive"] and w["last_seen"]
                   for w in view["workers"])
    finally:
        api("down", timeout=60)

    # The database stopped: the worker is not healthy, and says why.
    cluster.postgres.stop(mode="immediate")
    status, body = _get(base + "/healthz")
    health = json.loads(body)
    assert status == 503 and not health["ok"] and not health["database"]["ok"]
    assert health["database"]["error"] and health["broker"]["ok"]
    # ... and its figures are not made up: the scrape fails, naming the database.
    status, body = _get(base + "/metrics")
    assert status == 503 and b"ALICORN_DATABASE_URL" in body, body


def test_a_bad_listen_address_is_refused(cluster: Cluster) -> None:
    proc = cluster.cli("w9")("worker", "--listen", "nowhere", timeout=60)
    assert proc.returncode == 2
    assert "'nowhere' is not HOST:PORT" in proc.stderr
