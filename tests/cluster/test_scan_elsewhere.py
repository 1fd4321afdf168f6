"""A scan sent to a worker that did not build the image: the worker copies it from the
registry its build names (the digest checked), and reports what the builder would."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cluster.conftest import Cluster, RpmPony, wait_final
from conftest import Cli

pytestmark = pytest.mark.integration


def test_a_worker_scans_an_image_another_worker_built(cluster: Cluster, rpm_pony: RpmPony,
                                                       tmp_path: Path) -> None:
    d = tmp_path / "pony"
    shutil.copytree(rpm_pony.dir, d, ignore=shutil.ignore_patterns("repo", "*.yaml"))
    subprocess.run([str(d / "build-repo"), str(d / "repo"), "--version", "1"], check=True,
                   capture_output=True)
    recipe = d / "pony-elsewhere.yaml"
    recipe.write_text((rpm_pony.dir / "pony.yaml").read_text().replace(
        "name: pony-rpm", "name: pony-elsewhere", 1))
    builder = cluster.start_worker("builder", "--capability", "rpm")
    api = cluster.cli()
    build_id = api("build", str(recipe), "--no-wait", "--skip-checks", check=True).stdout.strip()
    row = wait_final(cluster, [build_id])[build_id]
    assert row.state == "done" and row.digest, row.error
    subprocess.run([str(d / "build-repo"), str(d / "repo"), "--version", "both"], check=True,
                   capture_output=True)
    api("advisories", "import", str(d / "repo"), check=True)
    expected = Cli(builder.home, env={**cluster.env, "ALICORN_QUEUE": "local"})(
        "scan", row.digest, "--json", timeout=300)
    builder.stop()

    other = cluster.start_worker("other", "--capability", "rpm")
    hex_part = row.digest.removeprefix("sha256:")
    assert not (other.home / "images" / hex_part).exists()
    got = api("scan", row.digest, "--json", timeout=300)
    assert got.returncode == expected.returncode == 1, got.stderr
    assert json.loads(got.stdout) == json.loads(expected.stdout)
    # The copy is the image the build recorded, kept in the other worker's store.
    index = json.loads((other.home / "images" / hex_part / "index.json").read_text())
    assert index["manifests"][0]["digest"] == row.digest
