"""Two Celery workers (homes of their own) over PostgreSQL and Redis build several images at
once; every build is claimed by exactly one of them and ends done."""

from __future__ import annotations

from cluster.conftest import Cluster, RpmPony, wait_final


def test_two_workers_build_several_images(cluster: Cluster, rpm_pony: RpmPony) -> None:
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    api = cluster.cli()
    ids = []
    for i in range(4):
        proc = api("build", str(rpm_pony.recipe(f"pony-two-{i}")), "--no-wait",
                   "--skip-checks", check=True)
        ids.append(proc.stdout.strip())
    rows = wait_final(cluster, ids, timeout=600)
    assert {r.state for r in rows.values()} == {"done"}, {b: r.error for b, r in rows.items()}
    workers = {r.worker.split(":")[0] + ":" + r.worker.split(":")[1] for r in rows.values()
               if r.worker}
    assert len(workers) == 2, workers   # both took builds
    assert all(r.attempt == 1 and r.published for r in rows.values())
