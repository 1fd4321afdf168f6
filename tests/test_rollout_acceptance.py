"""Issue 6's acceptance, as a user would try it: the real `alicorn` command line on the signed
pony images, under a continuous load on the module's proxy the whole time.

deploy v1 x2 -> update to v2 (0 failed requests) -> update to the image whose web server
answers 404 (rolls back by itself on readiness, 0 failed) -> update to the image that stops
serving after a few seconds (rolls back during the soak, 0 failed) -> `alicorn status` names
the rollback; `dnf list-security --modules` lists the module before the update to v2 and not
after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from alicorn.rollout.load import Load, LoadResult
from conftest import (
    ROLLOUT_GOOD_PAGE,
    PonyImages,
    free_port,
    images_used_elsewhere,
    podman_containers,
    require,
)

pytestmark = pytest.mark.integration

LABEL = "org.alicorn.module"
ADVISORY = "FEDORA-2024-b7e1c3d2a9"   # busybox 1.35.0-2: v1 has 1.35.0-1, v2 the fix
RATE = 320                           # requests per second, the whole story long
DNF = "/usr/bin/dnf"


def _containers(module: str) -> set[str]:
    return {str(c["Names"][0]) for c in podman_containers(module)}


class ListSecurity:
    """`dnf list-security --modules --json` by the system dnf, with the plugin installed under
    a prefix (as `alicorn setup-host` installs it into /) and the pony repository's
    updateinfo as the feed."""

    def __init__(self, base: Path, pony: PonyImages):
        from alicorn.dnf_plugin import install as plugin_install

        require("dnf")
        if not Path(DNF).is_file() or not plugin_install.dnf_available():
            if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
                pytest.fail(f"the system dnf is not at {DNF}")
            pytest.skip(f"the system dnf is not at {DNF}")
        written = plugin_install.install(prefix=base / "plugin")
        shim = next(p for p in written if p.name == plugin_install.SHIM_NAME)
        conf = next(p for p in written if p.name == plugin_install.CONF_NAME)
        (base / "norepos").mkdir()
        self.argv = [DNF, f"--setopt=pluginpath={shim.parent}",
                     f"--setopt=pluginconfpath={conf.parent}",
                     f"--setopt=reposdir={base / 'norepos'}"]
        self.pony = pony

    def entries(self, module: str, containers: set[str]) -> list[dict[str, Any]]:
        """The findings of ``containers`` and of the pony repository's images that nothing
        but ``module`` runs."""
        env = {**os.environ, "ALICORN_HOME": str(self.pony.cli.home), "LC_ALL": "C.UTF-8"}
        env.pop("ALICORN_DATABASE_URL", None)
        elsewhere = images_used_elsewhere(module)
        proc = subprocess.run([*self.argv, "-q", "list-security", "--modules", "--json",
                               f"--feed={self.pony.example / 'repo'}"], capture_output=True,
                              text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        elsewhere |= images_used_elsewhere(module)
        found = [e for e in json.loads(proc.stdout) if isinstance(e.get("module"), dict)]
        return [e for e in found if e["module"]["name"] in containers
                or (str(e["module"]["name"]).startswith(self.pony.repository)
                    and str(e["module"]["digest"]).removeprefix("sha256:") not in elsewhere)]


def _no_failures(result: LoadResult, what: str) -> None:
    assert result.requests > 0, f"{what}: no request was due"
    assert result.failed == 0, (f"{what}: {result.failed} of {result.requests} requests "
                                f"failed: {result.errors}")


def test_deploy_update_and_rollbacks_under_load(pony_images: PonyImages,
                                                tmp_path: Path) -> None:
    require("podman", "haproxy")
    cli = pony_images.cli
    v1, v2 = pony_images.v1["digest"], pony_images.v2["digest"]
    broken, soured = pony_images.broken["digest"], pony_images.soured["digest"]
    listing = ListSecurity(tmp_path, pony_images)
    name = f"t-accept-{uuid.uuid4().hex[:8]}"
    port = free_port()
    try:
        proc = cli("deploy", name, "--image", pony_images.v1["image"], "--replicas", "2",
                   "--port", str(port), "--address", "127.0.0.1", "--soak", "3")
        assert proc.returncode == 0, proc.stderr
        assert f"deployed {name}: 2 replica(s)" in proc.stdout
        rc, status = cli.json("status", name)
        assert rc == 0 and status["digest"] == v1, status
        assert len(status["replicas"]) == 2
        assert all(r["healthy"] and r["digest"] == v1 for r in status["replicas"]), status

        before = _containers(name)
        listed = listing.entries(name, before)
        assert {e["module"]["name"] for e in listed if e["advisory"] == ADVISORY} >= before, \
            listed

        with Load(f"http://127.0.0.1:{port}/", rate=RATE, contains=ROLLOUT_GOOD_PAGE) as load:
            # The rebuilt image: a complete update, not one request lost.
            load.mark("v2")
            rc, outcome = cli.json("update", name, "--to", pony_images.v2["image"])
            load.mark("v2 done")
            assert rc == 0, outcome
            assert (outcome["result"], outcome["digest"]) == ("updated", v2), outcome
            _no_failures(load.window("v2", "v2 done"), "the update to v2")

            # The image whose web server answers 404: never passes readiness, rolls back.
            load.mark("broken")
            rc, outcome = cli.json("update", name, "--to", pony_images.broken["image"],
                                   "--deadline", "10")
            load.mark("broken done")
            assert rc == 1, outcome
            assert (outcome["result"], outcome["digest"], outcome["to"]) == \
                ("rolled_back", v2, broken), outcome
            _no_failures(load.window("broken", "broken done"), "the update to broken")
            rc, status = cli.json("status", name)
            last = status["history"][-1]
            assert (last["digest"], last["result"]) == (broken, "rolled_back"), last
            assert "readiness" in last["reason"] and "HTTP 404" in last["reason"], last
            assert status["digest"] == v2, status

            # The image that stops serving a few seconds after it starts: passes readiness,
            # fails during the soak, traffic goes back to v2 with no failed request.
            load.mark("soured")
            rc, outcome = cli.json("update", name, "--to", pony_images.soured["image"],
                                   "--soak", str(PonyImages.SOURED_AFTER + 10))
            load.mark("soured done")
            assert rc == 1, outcome
            assert (outcome["result"], outcome["digest"], outcome["to"]) == \
                ("rolled_back", v2, soured), outcome
            assert "during the soak" in outcome["reason"], outcome
            _no_failures(load.window("soured", "soured done"), "the update to soured")
        whole = load.result()
        _no_failures(whole, "the whole story")
        assert whole.rate >= 0.95 * RATE, whole

        rc, status = cli.json("status", name)
        assert status["digest"] == v2, status
        assert {r["digest"] for r in status["replicas"]} == {v2}, status
        assert [h["result"] for h in status["history"]] == \
            ["deployed", "updated", "rolled_back", "rolled_back"], status["history"]
        assert status["history"][-1]["digest"] == soured
        assert {"at", "from", "reason"} <= set(status["history"][-1])
        text = cli("status", name)
        assert text.returncode == 0, text.stderr
        assert "rolled_back" in text.stdout and "during the soak" in text.stdout, text.stdout
        assert "why: " in text.stdout, text.stdout

        # The module runs v2, which has the fix: dnf no longer lists it.
        after = _containers(name)
        assert after and not after & before, (before, after)
        assert listing.entries(name, before | after) == []
    finally:
        try:
            cli("undeploy", name, timeout=120)
        finally:
            ids = subprocess.run(["podman", "ps", "-aq", "--filter", f"label={LABEL}={name}"],
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True)
