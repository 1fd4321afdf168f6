"""``dnf update-module`` run by the real system dnf (the plugin installed with install.py, as
``alicorn setup-host`` does, under a prefix dnf is pointed at), against modules the rollout
controller deployed from the signed pony images; and ``dnf list-security --modules`` before
and after an update (the issue's acceptance check)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alicorn.dnf_plugin import install as plugin_install
from alicorn.dnf_plugin.list_security import without_replaced_images
from alicorn.dnf_plugin.update_module import (
    failed,
    failure_message,
    outcome_lines,
    read_home,
    short,
)
from alicorn.inventory.targets import ModuleRef
from alicorn.rollout.controller import Outcome
from conftest import PonyImages, free_port, images_used_elsewhere, podman_containers, require

DNF = "/usr/bin/dnf"
LABEL = "org.alicorn.module"
ADVISORY = "FEDORA-2024-b7e1c3d2a9"   # busybox 1.35.0-2: v1 has 1.35.0-1, v2 the fix
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@dataclass(frozen=True)
class Dnf:
    plugin_dir: Path
    conf_dir: Path
    norepos: Path

    def __call__(self, *args: str, home: Path, check: bool = False,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:
        argv = [DNF, f"--setopt=pluginpath={self.plugin_dir}",
                f"--setopt=pluginconfpath={self.conf_dir}", f"--setopt=reposdir={self.norepos}",
                *args]
        env = {**os.environ, "ALICORN_HOME": str(home), "LC_ALL": "C.UTF-8"}
        env.pop("ALICORN_DATABASE_URL", None)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def dnf(tmp_path_factory: pytest.TempPathFactory) -> Dnf:
    if not Path(DNF).is_file() or not plugin_install.dnf_available():
        pytest.skip(f"the system dnf is not at {DNF}")
    base = tmp_path_factory.mktemp("update-module")
    written = plugin_install.install(prefix=base / "plugin")
    shim = next(p for p in written if p.name == plugin_install.UPDATE_SHIM_NAME)
    conf = next(p for p in written if p.name == plugin_install.UPDATE_CONF_NAME)
    (base / "norepos").mkdir()
    return Dnf(plugin_dir=shim.parent, conf_dir=conf.parent, norepos=base / "norepos")


# -- the pieces, without podman -----------------------------------------------------------------


def test_install_writes_both_commands_and_uninstall_removes_them(tmp_path: Path) -> None:
    if not plugin_install.dnf_available():
        pytest.skip("the system has no dnf")
    written = plugin_install.install(prefix=tmp_path)
    assert {p.name for p in written} == {plugin_install.SHIM_NAME, plugin_install.CONF_NAME,
                                         plugin_install.UPDATE_SHIM_NAME,
                                         plugin_install.UPDATE_CONF_NAME}
    shim = next(p for p in written if p.name == plugin_install.UPDATE_SHIM_NAME)
    assert "from alicorn.dnf_plugin.update_module import" in shim.read_text()
    assert "list_security" not in shim.read_text().split('"""')[-1]
    assert plugin_install.install(prefix=tmp_path) == []
    shim.write_text("# changed\n")
    assert plugin_install.install(prefix=tmp_path) == [shim]
    removed = plugin_install.uninstall(prefix=tmp_path)
    assert set(written) <= set(removed)
    assert not any(p.exists() for p in written)


def test_outcome_lines_say_what_happened() -> None:
    def o(result: str, **kw: Any) -> Outcome:
        values: dict[str, Any] = {"digest": D1, "from_digest": D1, "to_digest": D2, **kw}
        return Outcome(module="web", kind="update", result=result, **values)

    assert outcome_lines(o("updated", digest=D2, seconds=12.34)) == [
        f"web: updated {short(D1)} -> {short(D2)} in 12.3 s"]
    assert outcome_lines(o("unchanged", to_digest=D1)) == [f"web: up to date at {short(D1)}"]
    assert outcome_lines(o("planned", plan=("verify", "pull"))) == [
        f"web: would update {short(D1)} -> {short(D2)}", "  1. verify", "  2. pull"]
    rolled = o("rolled_back", reason="web-2 failed its readiness check")
    assert outcome_lines(rolled) == [f"web: rolled back to {short(D1)}: the update to "
                                     f"{short(D2)} failed: web-2 failed its readiness check"]
    assert outcome_lines(o("failed", to_digest=None, reason="untrusted")) == [
        f"web: not updated: untrusted; {short(D1)} keeps serving"]
    assert failed(rolled) and not failed(o("updated")) and not failed(o("planned"))
    assert "web rolled back (web-2 failed its readiness check)" in failure_message([rolled])
    assert failure_message([rolled, o("updated")]).startswith("1 of 2 updates did not complete")
    assert short(D1) == "sha256:111111111111"


def test_the_home_comes_from_the_environment_then_each_conf(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "list-security.conf").write_text("[main]\nenabled = 1\nhome = /srv/ls\n")
    assert read_home([str(a), str(b)], {}) == Path("/srv/ls")
    (a / "update-module.conf").write_text("[main]\nenabled = 1\nhome = /srv/um\n")
    assert read_home([str(a), str(b)], {}) == Path("/srv/um")
    assert read_home([str(a)], {"ALICORN_HOME": "/srv/env"}) == Path("/srv/env")
    assert read_home([str(tmp_path / "none")], {}) is None


def test_images_an_update_left_behind_are_not_modules_to_update() -> None:
    repo = "127.0.0.1:5000/pony-rpm"
    old = ModuleRef(kind="podman-image", target=f"podman-image:{repo}@{D1}", id="1" * 64,
                    names=(f"{repo}@{D1}",), image_id="1" * 64, image=f"{repo}@{D1}")
    new = ModuleRef(kind="podman-image", target=f"podman-image:{repo}@{D2}", id="2" * 64,
                    names=(f"{repo}@{D2}",), image_id="2" * 64, image=f"{repo}@{D2}")
    other = ModuleRef(kind="podman-image", target="podman-image:localhost/x:1", id="3" * 64,
                      names=("localhost/x:1",), image_id="3" * 64, image="localhost/x:1")
    replica = ModuleRef(kind="podman-container", target="podman-container:web-1", id="c" * 64,
                        names=("web-1",), image_id="2" * 64, image=f"{repo}@{D2}",
                        container="web-1", deployed_by_alicorn=True, module="web")
    assert without_replaced_images([old, new, other, replica]) == [new, other, replica]
    # Without a deployed module's container, every image is still listed.
    plain = ModuleRef(kind="podman-container", target="podman-container:c", id="d" * 64,
                      names=("c",), image_id="2" * 64, image=f"{repo}@{D2}", container="c")
    assert without_replaced_images([old, new, plain]) == [old, new, plain]


@pytest.mark.integration
def test_bad_arguments_and_a_missing_home_are_dnf_errors(dnf: Dnf, tmp_path: Path) -> None:
    proc = dnf("update-module", home=tmp_path)
    assert proc.returncode == 1 and "name one MODULE, or give --all" in proc.stderr
    proc = dnf("update-module", "web", "--all", home=tmp_path)
    assert proc.returncode == 1 and "name one MODULE, or give --all" in proc.stderr
    missing = tmp_path / "no-such-home"
    proc = dnf("update-module", "web", home=missing)
    assert proc.returncode == 1 and f"{missing} does not exist" in proc.stderr
    assert not missing.exists()
    proc = dnf("update-module", "Bad/Name", home=tmp_path)
    assert proc.returncode == 1 and "module name 'Bad/Name' is not valid" in proc.stderr
    assert "Traceback" not in proc.stderr
    helped = dnf("--help", home=tmp_path).stdout
    assert "update-module" in helped and "list-security" in helped


# -- with podman, HAProxy and the signed pony images -------------------------------------------


def _containers(name: str) -> list[str]:
    return [str(c["Names"][0]) for c in podman_containers(name)]


@dataclass(frozen=True)
class Deployed:
    name: str
    home: Path
    controller: Any

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.controller.status(self.name)
        return result


@pytest.fixture
def deployed(pony_images: PonyImages) -> Iterator[Deployed]:
    """A module of two replicas of the pony v1, deployed in-process; removed afterwards with
    every container it left."""
    require("podman", "haproxy")
    from alicorn.config import load_settings
    from alicorn.rollout.controller import Controller

    name = f"t-dnfum-{uuid.uuid4().hex[:8]}"
    controller = Controller(load_settings(pony_images.cli.home))
    try:
        outcome = controller.deploy(name, pony_images.v1["image"], port=free_port(),
                                    replicas=2, address="127.0.0.1", soak=1.0, drain=1.0,
                                    deadline=120.0)
        assert outcome.digest == pony_images.v1["digest"], outcome
        yield Deployed(name=name, home=pony_images.cli.home, controller=controller)
    finally:
        try:
            controller.remove(name)
        finally:
            ids = subprocess.run(["podman", "ps", "-aq", "--filter", f"label={LABEL}={name}"],
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True)


@pytest.mark.integration
def test_dry_run_changes_nothing_and_to_v2_updates(dnf: Dnf, deployed: Deployed,
                                                   pony_images: PonyImages) -> None:
    v1, v2 = pony_images.v1["digest"], pony_images.v2["digest"]
    before = deployed.status()
    containers = sorted(_containers(deployed.name))
    proc = dnf("update-module", deployed.name, "--to", pony_images.v2["image"], "--dry-run",
               home=deployed.home, check=True)
    assert f"{deployed.name}: would update {short(v1)} -> {short(v2)}" in proc.stdout
    planned = json.loads(dnf("-q", "update-module", "--all", "--dry-run", "--json",
                             home=deployed.home, check=True).stdout)
    assert {(p["module"], p["result"]) for p in planned} >= {(deployed.name, "planned")}
    after = deployed.status()
    assert after["digest"] == before["digest"] == v1
    assert sorted(r["name"] for r in after["replicas"]) == \
        sorted(r["name"] for r in before["replicas"])
    assert len(after["history"]) == len(before["history"])
    assert sorted(_containers(deployed.name)) == containers

    proc = dnf("update-module", deployed.name, "--to", pony_images.v2["image"], "--soak", "2",
               "--json", home=deployed.home, check=True)
    result = json.loads(proc.stdout)
    assert (result["module"], result["result"], result["to"]) == (deployed.name, "updated", v2)
    status = deployed.status()
    assert status["digest"] == v2
    assert {r["digest"] for r in status["replicas"]} == {v2}
    assert status["history"][-1]["result"] == "updated"
    again = dnf("update-module", deployed.name, "--to", v2, home=deployed.home, check=True)
    assert f"{deployed.name}: up to date at {short(v2)}" in again.stdout


@pytest.mark.integration
def test_an_unknown_module_is_a_dnf_error_naming_it(dnf: Dnf, pony_images: PonyImages) -> None:
    require("podman", "haproxy")
    proc = dnf("update-module", "t-dnfum-no-such-module", home=pony_images.cli.home)
    assert proc.returncode == 1, proc.stdout
    assert "Error: no module named 't-dnfum-no-such-module' is deployed" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def _module_entries(dnf: Dnf, pony_images: PonyImages, module: str,
                    containers: set[str]) -> list[dict[str, Any]]:
    """The ``list-security --modules --json`` findings of ``containers`` and of the images of
    the pony's repository that nothing but ``module`` runs."""
    elsewhere = images_used_elsewhere(module)
    proc = dnf("-q", "list-security", "--modules", "--json",
               f"--feed={pony_images.example / 'repo'}", home=pony_images.cli.home, check=True)
    # Before and after: other tests start and remove containers while the listing runs.
    elsewhere |= images_used_elsewhere(module)
    entries = [e for e in json.loads(proc.stdout) if isinstance(e.get("module"), dict)]
    return [e for e in entries if e["module"]["name"] in containers
            or (str(e["module"]["name"]).startswith(pony_images.repository)
                and str(e["module"]["digest"]).removeprefix("sha256:") not in elsewhere)]


@pytest.mark.integration
def test_list_security_stops_listing_the_module_once_updated(dnf: Dnf, deployed: Deployed,
                                                             pony_images: PonyImages) -> None:
    """The issue's acceptance check: deployed from v1, the module is listed with the busybox
    advisory; after `dnf update-module NAME` (its tag names v2 now) it is not."""
    old = set(_containers(deployed.name))
    assert len(old) >= 2
    listed = _module_entries(dnf, pony_images, deployed.name, old)
    assert {e["module"]["name"] for e in listed if e["advisory"] == ADVISORY} >= old, listed

    proc = dnf("update-module", deployed.name, "--soak", "2", home=deployed.home, check=True)
    assert f"{deployed.name}: updated " in proc.stdout
    assert deployed.status()["digest"] == pony_images.v2["digest"]

    new = set(_containers(deployed.name))
    assert new and not new & old
    assert _module_entries(dnf, pony_images, deployed.name, old | new) == []


@pytest.mark.integration
def test_a_rolled_back_update_exits_1_with_the_reason(dnf: Dnf, deployed: Deployed,
                                                      pony_images: PonyImages) -> None:
    v1 = pony_images.v1["digest"]
    proc = dnf("update-module", deployed.name, "--to", pony_images.broken["image"],
               "--deadline", "15", home=deployed.home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{deployed.name}: rolled back to {short(v1)}: the update to " \
           f"{short(pony_images.broken['digest'])} failed: " in proc.stdout
    assert f"Error: the update did not complete: {deployed.name} rolled back (" in proc.stderr
    assert "Traceback" not in proc.stderr
    status = deployed.status()
    assert status["digest"] == v1
    assert status["history"][-1]["result"] == "rolled_back"
