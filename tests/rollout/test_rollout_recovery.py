"""A controller killed (-9) in the middle of an update, then maybe a reboot (proxy and
containers stopped): ``resume`` brings the module back on one consistent digest and closes
the journal with the right result."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from alicorn.config import load_settings
from alicorn.errors import Error
from alicorn.rollout.controller import Controller
from alicorn.rollout.model import (
    DEPLOYED,
    DRAINING,
    LABEL_DIGEST,
    ROLLED_BACK,
    SOAKING,
    STARTING,
    UPDATED,
)
from conftest import ROLLOUT_GOOD_PAGE, PonyImages, free_port, page, podman_containers, require

pytestmark = pytest.mark.integration


def _podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True,
                          check=False).stdout


def _containers(module: str) -> list[dict[str, object]]:
    return podman_containers(module)


def _digests(module: str) -> set[str]:
    return {str(c["Labels"][LABEL_DIGEST]) for c in _containers(module)}  # type: ignore[index]


def _page(port: int) -> str:
    return page(port, timeout=5)


@pytest.fixture
def module(pony_images: PonyImages) -> Iterator[tuple[Controller, str]]:
    require("podman", "haproxy")
    c = Controller(load_settings(pony_images.cli.home))
    name = f"rr-{uuid.uuid4().hex[:8]}"
    try:
        yield c, name
    finally:
        with contextlib.suppress(Error):
            c.remove(name)
        ids = [str(x["Id"]) for x in _containers(name)]
        if ids:
            _podman("rm", "--force", "--time", "1", *ids)


@pytest.mark.parametrize(("phase", "reboot"),
                         [(SOAKING, True), (STARTING, False), (DRAINING, True)])
def test_killed_update_is_resumed(pony_images: PonyImages, module: tuple[Controller, str],
                                  phase: str, reboot: bool) -> None:
    c, name = module
    port = free_port()
    v1, v2 = pony_images.v1["digest"], pony_images.v2["digest"]
    assert c.deploy(name, pony_images.v1["image"], port=port, replicas=2,
                    address="127.0.0.1", deadline=60, soak=2, drain=2).result == DEPLOYED

    # The update runs in a process of its own, killed -9 once the journal says ``phase``.
    # Killed while draining, the update is finished; before that, it is rolled back.
    soak = 1 if phase == DRAINING else 300
    served, result = (v2, UPDATED) if phase == DRAINING else (v1, ROLLED_BACK)
    script = (
        "from pathlib import Path\n"
        "from alicorn.config import load_settings\n"
        "from alicorn.rollout.controller import Controller\n"
        f"Controller(load_settings(Path({str(pony_images.cli.home)!r}))).update(\n"
        f"    {name!r}, to={pony_images.v2['image']!r}, deadline=60, soak={soak})\n")
    child = subprocess.Popen([sys.executable, "-c", script],
                             env={**os.environ, "ALICORN_HOME": str(pony_images.cli.home)})
    try:
        deadline = time.monotonic() + 120
        seen = None
        while time.monotonic() < deadline and child.poll() is None:
            found = c.store.open_operation(name)
            seen = found[0].phase if found else seen
            # STARTING: once the first new replica is recorded (podman is starting it).
            if seen == phase and (phase != STARTING or c.store.replicas(name, digest=v2)):
                break
            time.sleep(0.02)
        assert seen == phase, f"the update never reached {phase} (last seen: {seen})"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    open_op = c.store.open_operation(name)
    assert open_op is not None and open_op[0].phase == phase
    # The proxy outlives the controller: the module keeps serving while nobody runs it.
    assert ROLLOUT_GOOD_PAGE in _page(port)

    if reboot:
        # What a reboot leaves: no proxy, every container stopped.
        c.proxy(c.store.require(name)).stop()
        ids = [str(x["Id"]) for x in _containers(name)]
        _podman("stop", "--time", "1", *ids)
        with pytest.raises(OSError):
            _page(port)

    outcomes = c.resume(name)
    assert len(outcomes) == 1
    out = outcomes[0]
    print(f"resume after a kill while {phase} (reboot: {reboot}): {out.result}, "
          f"{out.reason}, {out.seconds:.1f} s")
    assert out.result == result and out.digest == served, out
    assert ROLLOUT_GOOD_PAGE in _page(port)
    status = c.status(name)
    assert status["digest"] == served
    assert [r["digest"] for r in status["replicas"]] == [served, served]
    assert all(r["healthy"] for r in status["replicas"]), status["replicas"]
    assert _digests(name) == {served}
    assert c.store.open_operation(name) is None
    assert status["operation"]["result"] == result
    assert status["history"][-1]["result"] == result
    assert status["history"][-1]["digest"] == v2
    assert status["proxy"]["running"] is True
    assert {s["name"] for s in status["proxy"]["servers"]} == {
        r["name"] for r in status["replicas"]}

    # And the module moves on normally afterwards.
    if served == v1:
        assert c.update(name, to=pony_images.v2["image"], soak=1).digest == v2
        assert _digests(name) == {v2}
    else:
        assert c.rollback(name).digest == v1
        assert _digests(name) == {v1}


def test_stopped_module_is_brought_back_by_update(pony_images: PonyImages,
                                                 module: tuple[Controller, str]) -> None:
    c, name = module
    port = free_port()
    c.deploy(name, pony_images.v1["image"], port=port, replicas=1, address="127.0.0.1",
             deadline=60, soak=1, drain=1)
    c.stop(name)
    with pytest.raises(OSError):
        _page(port)
    assert c.status(name)["proxy"]["running"] is False
    out = c.update(name, to=pony_images.v2["image"], soak=1)
    assert out.result == UPDATED and out.digest == pony_images.v2["digest"], out
    assert ROLLOUT_GOOD_PAGE in _page(port)
    assert _digests(name) == {pony_images.v2["digest"]}


def test_a_replica_removed_behind_our_back_is_replaced(pony_images: PonyImages,
                                                      module: tuple[Controller, str]) -> None:
    c, name = module
    port = free_port()
    c.deploy(name, pony_images.v1["image"], port=port, replicas=2, address="127.0.0.1",
             deadline=60, soak=1, drain=1)
    before = {str(x["Names"][0]): str(x["Id"]) for x in _containers(name)}  # type: ignore[index]
    gone, kept = sorted(before)
    _podman("rm", "--force", "--time", "1", gone)
    [out] = c.resume(name)
    assert out.digest == pony_images.v1["digest"]
    after = {str(x["Names"][0]): str(x["Id"]) for x in _containers(name)}  # type: ignore[index]
    assert len(after) == 2 and after[kept] == before[kept], after
    assert before[gone] not in after.values()
    status = c.status(name)
    assert sorted(r["name"] for r in status["replicas"]) == sorted(after)
    assert all(r["healthy"] for r in status["replicas"]), status["replicas"]
    assert {s["name"] for s in status["proxy"]["servers"]} == set(after)
    assert ROLLOUT_GOOD_PAGE in _page(port)
