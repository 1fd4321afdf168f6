"""Issue 8's acceptance, tried end to end as a new user would: PostgreSQL and Redis started by
the suite, two `alicorn worker` processes (homes of their own) building several images of the
RPM pony concurrently, most with their checks on; one worker killed (kill -9 of its process
group) in the middle of a build.  Then, from the submitter's home only: every submission ends
done exactly once or failed with a reason, the registry holds each done image's tag at the
digest of its one published attempt, `alicorn wait` follows a retried build to its retry,
`alicorn show`, `alicorn logs` and `alicorn verify` work; and the embedded default (no queue
settings, a fresh home) still builds the pony."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

from alicorn.store.builds import DONE, FAILED, BuildStore
from alicorn.store.models import BuildRow
from cluster.conftest import Cluster, RpmPony, Worker, wait_final
from conftest import Cli

MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json")


def _attempts(store: BuildStore, build_id: str) -> list[BuildRow]:
    rows = [store.get(build_id)]
    while rows[-1].retried_as:
        rows.append(store.get(rows[-1].retried_as))
    return rows


def _owner(worker: str | None, workers: list[Worker]) -> Worker | None:
    """The worker process (group) whose pool process runs a build ("host:pid")."""
    if not worker:
        return None
    pid = int(worker.split(":")[1])
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return next((w for w in workers if w.proc.pid == pgid), None)


def _tag_digest(registry: str, name: str, tag: str = "latest") -> str:
    req = urllib.request.Request(f"http://{registry}/v2/{name}/manifests/{tag}",
                                 headers={"Accept": MANIFEST_TYPES}, method="HEAD")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(resp.headers["Docker-Content-Digest"])


def test_two_workers_one_killed_every_build_done_once_or_failed_with_a_reason(
        cluster: Cluster, rpm_pony: RpmPony) -> None:
    workers = [cluster.start_worker(n, "--capability", "rpm") for n in ("w1", "w2")]
    api = cluster.cli()
    store = BuildStore(cluster.postgres.url)

    names = [f"pony-acc-{i}" for i in range(4)]
    ids = []
    for i, name in enumerate(names):
        extra = ("--skip-checks",) if i == 3 else ()   # three with their checks on
        proc = api("build", str(rpm_pony.recipe(name)), "--no-wait", *extra, check=True,
                   timeout=120)
        ids.append(proc.stdout.strip())
    checked = set(ids[:3])

    # Kill the worker of a running build with its checks on, once it is well into it.
    deadline = time.monotonic() + 300
    victim: Worker | None = None
    while victim is None:
        assert time.monotonic() < deadline, [(r.id, r.state) for r in store.recent()]
        for row in store.running():
            if row.id in checked and row.heartbeat_at and _owner(row.worker, workers):
                victim = _owner(row.worker, workers)
                break
        else:
            time.sleep(0.2)
    running = [r for r in store.running() if _owner(r.worker, workers) is victim]
    victim.kill(signal.SIGKILL)
    survivor = next(w for w in workers if w is not victim)

    rows = wait_final(cluster, ids, timeout=900)
    assert store.running() == []
    assert survivor.proc.poll() is None
    killed = [r for r in running if store.get(r.id).state == FAILED]
    assert killed, "the victim's build ended before the kill"

    for submitted, name in zip(ids, names, strict=True):
        attempts = _attempts(store, submitted)
        last = attempts[-1]
        assert rows[submitted].id == last.id
        assert last.state in (DONE, FAILED), (last.id, last.state)
        assert all(a.state == FAILED and a.error for a in attempts[:-1]), \
            [(a.id, a.state, a.error) for a in attempts]
        published = [a for a in attempts if a.published]
        if last.state == FAILED:
            assert last.error and not published, (last.id, last.error)
            continue
        # Done exactly once: one published attempt, and the registry's tag is its digest.
        assert [a.id for a in published] == [last.id], [(a.id, a.published) for a in attempts]
        assert _tag_digest(cluster.registry, name) == last.digest
        verify = api("verify", str(last.digest), timeout=300)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "verified: every link holds" in verify.stdout, verify.stdout
        if submitted in checked:
            shown = api("show", last.id, check=True).stdout
            assert "tests passed, gate passed" in shown, shown

    # Every attempt the kill interrupted failed naming the dead worker; its retry (if any)
    # ran on the survivor, and `alicorn wait` on the killed id follows it.
    for dead in killed:
        row = store.get(dead.id)
        assert row.state == FAILED and not row.published
        assert f"the worker {dead.worker} died during the build" in (row.error or "") or \
            f"the worker {dead.worker} stopped answering" in (row.error or ""), row.error
        shown = api("show", dead.id, check=True).stdout
        assert "died during the build" in shown or "stopped answering" in shown, shown
        logs = api("logs", dead.id, timeout=120)
        assert logs.returncode == 0 and "[alicorn]" in logs.stdout, logs.stderr
        if row.retried_as:
            retry = store.get(row.retried_as)
            assert retry.retry_of == dead.id and retry.attempt == dead.attempt + 1
            assert f"retried as build {retry.id}" in (row.error or "")
            assert _owner(retry.worker, [survivor]) is survivor or retry.state == FAILED
            waited = api("wait", dead.id, timeout=300)
            assert retry.id in waited.stdout, waited.stdout + waited.stderr
            if retry.state == DONE:
                assert waited.returncode == 0, waited.stdout + waited.stderr
                assert waited.stdout.strip().splitlines()[-1].startswith(f"done {retry.id}")

    # `alicorn builds` from the submitter's home lists every attempt, with its state.
    listed = {b["build_id"]: b["state"] for b in json.loads(api("builds", "--json",
                                                                check=True).stdout)}
    for submitted in ids:
        for a in _attempts(store, submitted):
            assert listed.get(a.id) == a.state, (a.id, listed.get(a.id), a.state)

    # The embedded default, unchanged: no queue, broker, database or registry settings.
    home = cluster.root / "homes" / "embedded"
    local = Cli(home)
    for key in [k for k in local.env if k.startswith("ALICORN_")]:
        if key not in ("ALICORN_HOME", "ALICORN_API_LISTEN"):
            del local.env[key]
    try:
        built = local("build", str(rpm_pony.recipe("pony-acc-embedded")), "--skip-checks",
                      timeout=600)
        assert built.returncode == 0, built.stdout + built.stderr
        assert built.stdout.startswith("done "), built.stdout
        assert (home / "alicorn.db").exists()
        assert not any(r.id in built.stdout for r in store.recent())
    finally:
        local.down()
