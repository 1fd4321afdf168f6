"""A build made by a Celery worker on a host of its own is, from the API host's home (which
holds no signing key), shown, its logs read while it runs and after, and verified: its files
come from the shared store (build_files, sealed), its keys from signing_keys.  A sealed file
cannot be changed in the database; the embedded default keeps files on disk only."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from alicorn.store.builds import BuildStore
from alicorn.store.db import engine_for
from cluster.conftest import Cluster, RpmPony, wait_final


def test_api_host_reads(cluster: Cluster,
                        rpm_pony: RpmPony) -> None:
    cluster.queue_env["ALICORN_QUEUE_HEARTBEAT"] = "1"   # the logs go to the store every second
    cluster.start_worker("w1")
    api = cluster.cli()
    build_id = api("build", str(rpm_pony.recipe("pony-shared")), "--no-wait", "--skip-checks",
                   check=True).stdout.strip()
    # `alicorn logs -f` on the API host while the build runs on the worker's host.
    follower = subprocess.Popen([*_alicorn(), "logs", "-f", build_id], env=api.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        running_log = b""
        store = BuildStore(cluster.postgres.url)
        while time.monotonic() < deadline:
            state = store.get(build_id).state
            if state == "running":
                seen = api("logs", build_id, check=True).stdout
                if seen and store.get(build_id).state == "running":
                    running_log = seen.encode()
                    break
            if state in ("done", "failed"):
                break
            time.sleep(0.1)
        assert running_log, f"the API host never saw the running build's log ({state})"
        rows = wait_final(cluster, [build_id], timeout=300)
        out, _ = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    row = rows[build_id]
    assert row.state == "done", row.error
    worker_log = (cluster.root / "homes" / "w1" / "builds" / build_id / "build.log").read_text()
    assert out == worker_log            # followed to its sealed end
    assert worker_log.startswith(running_log.decode())

    # The API host holds no private key, only what it verifies with.
    assert not (api.home / "keys" / "private").exists()
    assert not (api.home / "keys" / "gpg").exists()
    shown = json.loads(api("show", build_id, "--json", check=True).stdout)
    assert shown["digest"] == row.digest and shown["state"] == "done"
    assert api("logs", build_id, check=True).stdout == worker_log
    proc = api("verify", row.digest, "--json")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and report["verified"], report
    assert {c["link"] for c in report["checks"]} >= {
        "record", "transparency log", "database", "provenance", "build log", "SBOM", "image",
        "registry"}
    assert not (api.home / "keys" / "private").exists()
    # The materialized files are the worker's, read-only.
    mine = api.home / "builds" / build_id / "record.json"
    assert mine.read_bytes() == (cluster.root / "homes" / "w1" / "builds" / build_id /
                                 "record.json").read_bytes()
    assert mine.stat().st_mode & 0o222 == 0

    # A sealed row cannot change, nor go.
    engine = engine_for(cluster.postgres.url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM build_files WHERE build_id = :b AND "
                              "sealed"), {"b": build_id}).scalar()
        assert n and n >= 5
        keys = conn.execute(text("SELECT kind FROM signing_keys")).scalars().all()
        assert set(keys) == {"ecdsa", "gpg"}
    for statement in ("UPDATE build_files SET data = 'x' WHERE build_id = :b AND "
                      "name = 'build.log'",
                      "DELETE FROM build_files WHERE build_id = :b"):
        with pytest.raises(Exception, match="sealed files of a build cannot change"), \
                engine.begin() as conn:
            conn.execute(text(statement), {"b": build_id})


def test_the_embedded_default_keeps_files_on_disk_only(tmp_path: Path) -> None:
    from alicorn.cluster import files
    from alicorn.config import load_settings
    from alicorn.store.builds import BuildStore

    settings = load_settings(tmp_path / "home")
    store = BuildStore(settings.database_url)
    d = settings.build_dir("0" * 32)
    d.mkdir(parents=True)
    (d / "build.log").write_text("hello\n")
    files.live_sync(settings, store, "0" * 32)
    files.seal_files(settings, store, "0" * 32)
    assert files.materialize(settings, "0" * 32) == d
    with engine_for(settings.database_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM build_files")).scalar() == 0


def test_names_that_would_leave_the_build_dir_are_refused() -> None:
    from alicorn.cluster.files import safe_name

    assert safe_name("build.log") and safe_name("gate/report.html")
    for bad in ("../x", "/etc/passwd", "a/../../b", ".alicorn-shared.json", "", "a//b",
                "gate/.hidden", "x" * 200):
        assert not safe_name(bad), bad


def _alicorn() -> list[str]:
    from conftest import ALICORN
    return list(ALICORN)
