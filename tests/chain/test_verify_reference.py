"""`alicorn verify` and `trace` of an image reference (`host:port/name[:tag]`), as README's
`alicorn verify sha256:…|IMAGE_REF` promises: the registry names the digest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import EXAMPLES, Cli, require

pytestmark = pytest.mark.integration


def test_verify_and_trace_by_reference(cli: Cli, tmp_path: Path) -> None:
    require("rpmbuild", "createrepo_c", "dnf", "busybox", "skopeo", "docker-registry")
    pony = tmp_path / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", pony, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(pony / "build-repo"), str(pony / "repo"), "--version", "1"],
                   check=True, capture_output=True)
    rc, built = cli.json("build", str(pony / "pony.yaml"), "--skip-checks")
    assert rc == 0 and built["state"] == "done", built
    repository = built["image"].split("@", 1)[0]
    for ref in (f"{repository}:latest", repository):
        verified = cli("verify", ref)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        rc, traced = cli.json("trace", ref, "--offline")
        assert rc == 0 and traced["digest"] == built["digest"], traced
    missing = cli("verify", f"{repository}-missing:latest")
    assert missing.returncode == 2
    assert f"{repository}-missing:latest is not in its registry" in missing.stderr
