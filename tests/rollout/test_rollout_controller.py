"""The rollout controller end to end: real podman containers behind a real HAProxy, signed
pony images from the local registry, a steady load that counts every failed request."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from alicorn.config import load_settings
from alicorn.errors import Error
from alicorn.rollout.controller import PLANNED, UNCHANGED, Controller
from alicorn.rollout.interface import ModuleBusy, NoSuchImage, UntrustedImage
from alicorn.rollout.load import Load
from alicorn.rollout.model import (
    DEPLOYED,
    FAILED,
    LABEL_ROLE,
    ROLLED_BACK,
    UPDATED,
    ContentSpec,
)
from conftest import ROLLOUT_GOOD_PAGE, PonyImages, free_port, page, podman_containers, require

pytestmark = pytest.mark.integration

RATE = 150.0   # two cores are shared with podman, HAProxy and the other helpers' tests


def _podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True,
                          check=False).stdout


def _containers(module: str) -> list[dict[str, object]]:
    return podman_containers(module)


def _page(port: int) -> str:
    return page(port, timeout=5)


class Modules:
    """Module names unique to this test, removed (with every container and proxy they
    started) when the test ends, pass or fail."""

    def __init__(self, controller: Controller):
        self.controller = controller
        self.names: list[str] = []

    def name(self) -> str:
        name = f"rc-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.names:
            with contextlib.suppress(Error):
                self.controller.remove(name)
            ids = [str(c["Id"]) for c in _containers(name)]
            if ids:
                _podman("rm", "--force", "--time", "1", *ids)


@pytest.fixture
def modules(pony_images: PonyImages) -> Iterator[Modules]:
    require("podman", "haproxy")
    m = Modules(Controller(load_settings(pony_images.cli.home)))
    try:
        yield m
    finally:
        m.cleanup()


def _wrong_key(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = tmp_path / "stranger.pem"
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _unsigned_copy(pony_images: PonyImages) -> str:
    """v1 re-pushed as Docker schema 2 without its signatures: another digest, unsigned."""
    ref = f"{pony_images.repository}:unsigned-{uuid.uuid4().hex[:6]}"
    subprocess.run(["skopeo", "copy", "--quiet", "--remove-signatures", "--format", "v2s2",
                    "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{pony_images.v1['image']}", f"docker://{ref}"],
                   check=True, capture_output=True)
    return ref


def test_deploy_update_roll_back_by_itself_and_by_hand(pony_images: PonyImages,
                                                       modules: Modules,
                                                       tmp_path: Path) -> None:
    c = modules.controller
    name, port = modules.name(), free_port()
    v1, v2 = pony_images.v1["digest"], pony_images.v2["digest"]

    # -- deploy: two replicas behind the proxy ----------------------------------------------
    out = c.deploy(name, pony_images.v1["image"], port=port, replicas=2, address="127.0.0.1",
                   deadline=60, soak=3, drain=3)
    assert out.result == DEPLOYED and out.digest == v1
    assert ROLLOUT_GOOD_PAGE in _page(port)
    status = c.status(name)
    assert status["digest"] == v1
    assert [r["digest"] for r in status["replicas"]] == [v1, v1]
    assert all(r["healthy"] for r in status["replicas"])
    assert status["proxy"]["running"] is True
    v1_image = _podman("image", "inspect", "--format", "{{.Id}}", pony_images.v1["image"])
    assert v1_image.strip()

    # -- dry run: a plan, nothing changes -----------------------------------------------------
    before = sorted(str(x["Names"]) for x in _containers(name))
    plan = c.update(name, to=pony_images.v2["image"], dry_run=True)
    assert plan.result == PLANNED and plan.to_digest == v2 and plan.digest == v1
    assert any(v2.split(":")[1][:12] in step for step in plan.plan), plan.plan
    assert any("drain" in step for step in plan.plan), plan.plan
    assert sorted(str(x["Names"]) for x in _containers(name)) == before
    assert c.status(name)["digest"] == v1
    assert [h["result"] for h in c.status(name)["history"]] == [DEPLOYED]

    # -- update to v2 under load: zero failed requests ----------------------------------------
    with Load(f"http://127.0.0.1:{port}/", rate=RATE, contains=ROLLOUT_GOOD_PAGE) as load:
        out = c.update(name, to=pony_images.v2["image"], soak=3)
    result = load.result()
    print(f"update v1 → v2: {result.requests} requests, {result.failed} failed "
          f"{result.errors}, p99 {result.p99_ms:.1f} ms, {out.seconds:.1f} s")
    assert out.result == UPDATED, out
    assert result.requests > RATE * 3
    assert result.failed == 0, result.errors
    status = c.status(name)
    assert status["digest"] == v2
    assert [r["digest"] for r in status["replicas"]] == [v2, v2]
    assert [h["result"] for h in status["history"]] == [DEPLOYED, UPDATED]
    assert {x["Labels"]["org.alicorn.digest"] for x in _containers(name)} == {v2}  # type: ignore[index]
    # The old image left podman's storage (dnf list-security --modules stops listing it),
    # unless another test's container runs the same image (the pony builds are reproducible).
    [said] = [e["message"] for e in status["events"] if e["kind"] == "image"]
    if said.startswith("removed"):
        names = _podman("image", "inspect", "--format", "{{json .RepoDigests}}",
                        v1_image.strip())
        assert pony_images.v1["image"] not in names
    else:
        assert said.startswith("kept") and name not in said, said
    assert c.update(name, to=v2).result == UNCHANGED

    # -- update to an image whose web server answers 404: rolls back before the shift ---------
    with Load(f"http://127.0.0.1:{port}/", rate=RATE, contains=ROLLOUT_GOOD_PAGE) as load:
        out = c.update(name, to=pony_images.broken["image"], deadline=6, soak=3)
    result = load.result()
    print(f"update → broken: {out.result} ({out.reason}); {result.requests} requests, "
          f"{result.failed} failed")
    assert out.result == ROLLED_BACK and out.digest == v2
    assert out.reason and "HTTP 404 for GET /" in out.reason
    assert result.failed == 0, result.errors
    status = c.status(name)
    assert status["digest"] == v2
    assert status["history"][-1]["result"] == ROLLED_BACK
    assert status["history"][-1]["digest"] == pony_images.broken["digest"]
    assert "HTTP 404" in status["history"][-1]["reason"]
    assert status["operation"]["result"] == ROLLED_BACK
    assert any(e["kind"] == "rollback" and "HTTP 404" in e["message"]
               for e in status["events"]), status["events"]
    assert {x["Labels"]["org.alicorn.digest"] for x in _containers(name)} == {v2}  # type: ignore[index]
    assert ROLLOUT_GOOD_PAGE in _page(port)

    # -- update to an image that fails during the soak: traffic back on v2 --------------------
    with Load(f"http://127.0.0.1:{port}/", rate=RATE, contains=ROLLOUT_GOOD_PAGE) as load:
        out = c.update(name, to=pony_images.soured["image"], deadline=30,
                       soak=PonyImages.SOURED_AFTER + 10)
    result = load.result()
    switch = out.extra.get("detected_to_switch_s")
    print(f"update → soured: {out.result} ({out.reason}); detection → switch {switch} s, "
          f"first failure → switch {out.extra.get('failure_to_switch_s')} s; "
          f"{result.requests} requests, {result.failed} failed {result.errors}")
    assert out.result == ROLLED_BACK and out.digest == v2, out
    assert out.reason and "soak" in out.reason
    assert switch is not None and switch < 2.0
    assert out.extra["failure_to_switch_s"] < 10.0
    assert result.failed == 0, result.errors
    status = c.status(name)
    # Bad health (the first soured web server stops SOURED_AFTER s after its container
    # started) → traffic back on v2 (the rollback event, written after the switch).
    started = min(datetime.fromisoformat(e["at"]) for e in status["events"]
                  if e["kind"] == "start")
    [back] = [datetime.fromisoformat(e["at"]) for e in status["events"]
              if e["kind"] == "rollback"]
    bad_to_back = (back - started).total_seconds() - PonyImages.SOURED_AFTER
    print(f"update → soured: bad health → traffic back on v2 ≈ {bad_to_back:.2f} s")
    assert bad_to_back < 10.0
    assert status["digest"] == v2
    assert [r["digest"] for r in status["replicas"]] == [v2, v2]
    assert status["history"][-1]["result"] == ROLLED_BACK
    assert status["history"][-1]["digest"] == pony_images.soured["digest"]
    assert ROLLOUT_GOOD_PAGE in _page(port)

    # -- bad input: no such digest, an image signed by a key the host does not trust ----------
    missing = "sha256:" + "0" * 64
    with pytest.raises(NoSuchImage):
        c.update(name, to=f"{pony_images.repository}@{missing}")
    stranger = Controller(load_settings(pony_images.cli.home), keys=[_wrong_key(tmp_path)])
    with pytest.raises(UntrustedImage):
        stranger.update(name, to=pony_images.v1["image"])
    unsigned = _unsigned_copy(pony_images)
    with pytest.raises(UntrustedImage) as info:
        c.update(name, to=unsigned)
    assert "not signed" in str(info.value)
    status = c.status(name)
    assert status["digest"] == v2
    assert [h["result"] for h in status["history"][-3:]] == [FAILED, FAILED, FAILED]
    assert status["history"][-2]["digest"] == v1
    assert status["history"][-1]["digest"] != v2
    assert "not signed" in status["history"][-1]["reason"]
    assert {x["Labels"]["org.alicorn.digest"] for x in _containers(name)} == {v2}  # type: ignore[index]
    assert ROLLOUT_GOOD_PAGE in _page(port)

    # -- rollback by hand: back to v1 under load ----------------------------------------------
    with Load(f"http://127.0.0.1:{port}/", rate=RATE, contains=ROLLOUT_GOOD_PAGE) as load:
        out = c.rollback(name)
    result = load.result()
    print(f"rollback v2 → v1: {result.requests} requests, {result.failed} failed, "
          f"{out.seconds:.1f} s")
    assert out.result == ROLLED_BACK and out.digest == v1 and out.from_digest == v2
    assert result.failed == 0, result.errors
    status = c.status(name)
    assert status["digest"] == v1 and status["history"][-1]["result"] == ROLLED_BACK
    assert status["history"][-1]["digest"] == v1
    assert [r["digest"] for r in status["replicas"]] == [v1, v1]

    # -- one operation at a time ---------------------------------------------------------------
    with c.store.lock(name), pytest.raises(ModuleBusy):
        c.update(name, to=pony_images.v2["image"])
    assert c.latest(name) == v2   # the tag ``latest`` names v2

    # -- remove: nothing left ------------------------------------------------------------------
    c.remove(name)
    assert _containers(name) == []
    with pytest.raises(OSError):
        _page(port)
    assert all(m["name"] != name for m in c.modules())


def test_deploy_on_a_taken_port_leaves_nothing(pony_images: PonyImages,
                                               modules: Modules) -> None:
    c = modules.controller
    name = modules.name()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Error) as info:
            c.deploy(name, pony_images.v1["image"], port=port, replicas=1,
                     address="127.0.0.1", deadline=30)
    assert str(port) in str(info.value)
    assert _containers(name) == []
    assert all(m["name"] != name for m in c.modules())


def test_deploy_refuses_an_untrusted_image(pony_images: PonyImages, modules: Modules,
                                           tmp_path: Path) -> None:
    c = Controller(load_settings(pony_images.cli.home), keys=[_wrong_key(tmp_path)])
    name = modules.name()
    with pytest.raises(UntrustedImage) as info:
        c.deploy(name, pony_images.v1["image"], port=free_port(), replicas=1,
                 address="127.0.0.1")
    assert "not trusted" in str(info.value)
    assert _containers(name) == []
    assert all(m["name"] != name for m in c.modules())


def test_content_from_a_directory_and_from_an_image(pony_images: PonyImages, modules: Modules,
                                                    tmp_path: Path) -> None:
    c = modules.controller
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("Hello from the content directory\n")
    site.chmod(0o755)
    (site / "index.html").chmod(0o644)
    name, port = modules.name(), free_port()
    out = c.deploy(name, pony_images.v1["image"], port=port, replicas=1, address="127.0.0.1",
                   content=ContentSpec(directory=str(site)), deadline=60, soak=1, drain=1)
    assert out.result == DEPLOYED
    assert "Hello from the content directory" in _page(port)
    # No --to: what the tag names now (v2); the content comes along.
    out = c.update(name)
    assert out.result == UPDATED and out.digest == pony_images.v2["digest"]
    assert "Hello from the content directory" in _page(port)

    # A content image: each replica is a web container and a content container.
    name, port = modules.name(), free_port()
    out = c.deploy(name, pony_images.v1["image"], port=port, replicas=2, address="127.0.0.1",
                   content=ContentSpec(image=pony_images.v2["image"]), deadline=60, soak=1,
                   drain=1)
    assert out.result == DEPLOYED
    assert ROLLOUT_GOOD_PAGE in _page(port)
    roles = sorted(str(x["Labels"][LABEL_ROLE]) for x in _containers(name))  # type: ignore[index]
    assert roles == ["content", "content", "web", "web"]
    assert c.status(name)["content_image"] == pony_images.v2["image"]
    c.remove(name)
    assert _containers(name) == []


def test_dry_run_deploy_changes_nothing(pony_images: PonyImages, modules: Modules) -> None:
    c = modules.controller
    name = modules.name()
    out = c.deploy(name, pony_images.v1["image"], port=free_port(), replicas=2, dry_run=True)
    assert out.result == PLANNED and out.to_digest == pony_images.v1["digest"]
    assert any("start the proxy" in step for step in out.plan), out.plan
    assert _containers(name) == []
    assert all(m["name"] != name for m in c.modules())
