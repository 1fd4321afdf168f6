"""The rollout's command line: bad input is refused before anything runs, and a module's whole
life (deploy → update → automatic rollback → rollback by hand → undeploy) through the real
`alicorn`, with podman, HAProxy and the signed pony images."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    ROLLOUT_GOOD_PAGE,
    Cli,
    PonyImages,
    free_port,
    page,
    podman_containers,
    remove_module,
    require,
)

LABEL = "org.alicorn.module"


def _containers(name: str) -> list[dict[str, str]]:
    """Every container (running or not) of module ``name``, with its digest label."""
    return [{"name": c["Names"][0], "state": str(c.get("State", "")),
             "digest": (c.get("Labels") or {}).get("org.alicorn.digest", "")}
            for c in podman_containers(name)]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def module_name() -> Iterator[str]:
    yield f"t-cli-{uuid.uuid4().hex[:8]}"


# -- bad input, refused before podman is asked anything ------------------------------------------

@pytest.mark.parametrize("command", [["status"], ["update"], ["rollback"], ["undeploy"]])
def test_an_unknown_module_is_bad_input(cli: Cli, command: list[str]) -> None:
    proc = cli(*command, "no-such-module")
    assert proc.returncode == 2, proc.stderr
    assert "no-such-module" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["status"], ["undeploy"], ["update"],
                                     ["deploy", "--image", "x/y:1", "--port", "8080"]])
def test_a_bad_module_name_is_refused(cli: Cli, command: list[str]) -> None:
    proc = cli(command[0], "Bad/Name", *command[1:])
    assert proc.returncode == 2, proc.stderr
    assert "module name 'Bad/Name' is not valid" in proc.stderr
    assert "hint:" in proc.stderr


@pytest.mark.parametrize(("option", "value", "named"), [
    ("--replicas", "0", "--replicas"), ("--port", "0", "--port"),
    ("--port", "70000", "--port"), ("--deadline", "0", "--deadline")])
def test_out_of_range_options_are_refused(cli: Cli, option: str, value: str,
                                          named: str) -> None:
    args = {"--replicas": "2", "--port": str(free_port()), "--deadline": "60"}
    args[option] = value
    proc = cli("deploy", "m1", "--image", "127.0.0.1:1/pony@sha256:" + "0" * 64,
               *[x for kv in args.items() for x in kv])
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr and value in proc.stderr


def test_two_kinds_of_content_are_refused(cli: Cli, tmp_path: Path) -> None:
    proc = cli("deploy", "m1", "--image", "x/y:1", "--port", str(free_port()),
               "--content", str(tmp_path), "--content-volume", "v")
    assert proc.returncode == 2
    assert "at most one of --content" in proc.stderr


def test_rollback_to_something_not_a_digest_is_refused(cli: Cli) -> None:
    proc = cli("rollback", "m1", "--to", "latest")
    assert proc.returncode == 2
    assert "'latest' is not a digest" in proc.stderr


def test_modules_of_a_new_home_is_an_empty_list(cli: Cli) -> None:
    rc, listed = cli.json("modules")
    assert rc == 0 and listed == []


# -- bad input that needs a registry: a busy port, an image that does not verify ------------------

@pytest.mark.integration
def test_a_busy_port_is_named_and_nothing_runs(pony_images: PonyImages, module_name: str) -> None:
    require("podman")
    cli = pony_images.cli
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            proc = cli("deploy", module_name, "--image", pony_images.v1["image"],
                       "--port", str(port), "--address", "127.0.0.1", timeout=300)
            assert proc.returncode in (1, 2), proc.stderr
            assert f"port {port}" in proc.stderr
            assert "Traceback" not in proc.stderr
            assert _containers(module_name) == []
            assert cli("status", module_name).returncode == 2
        finally:
            remove_module(cli, module_name)


@pytest.mark.integration
def test_an_image_that_does_not_verify_never_runs(pony_images: PonyImages, module_name: str,
                                                  tmp_path: Path) -> None:
    require("podman", "skopeo")
    from alicorn.chain.keys import KeyRing
    from alicorn.registry.client import RegistryClient, push_tiny_image

    cli = pony_images.cli
    # Unsigned: an image pushed to the same repository by someone other than the build service.
    tag = f"unsigned-{uuid.uuid4().hex[:8]}"
    _, unsigned = push_tiny_image(RegistryClient(pony_images.registry), "pony-rpm", tag,
                                  b"not built here")
    # Wrongly signed (for this host): the pony, with another key as the only trusted one.
    other = tmp_path / "other.pem"
    other.write_text(KeyRing(tmp_path / "other-keys").current().public.pem)
    missing = "sha256:" + "e" * 64
    try:
        for image, extra, code in [(f"{pony_images.repository}:{tag}", [], 1),
                                   (f"{pony_images.repository}@{unsigned}", [], 1),
                                   (pony_images.v1["image"], ["--key", str(other)], 1),
                                   (f"{pony_images.repository}@{missing}", [], 2)]:
            proc = cli("deploy", module_name, "--image", image, "--port", str(free_port()),
                       "--replicas", "1", *extra, timeout=300)
            assert proc.returncode == code, (image, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr
            shown = missing[7:19] if image.endswith(missing) else ""
            assert shown in proc.stderr, proc.stderr
            if code == 1:
                assert "sign" in proc.stderr.lower(), proc.stderr
            assert _containers(module_name) == [], image
            assert cli("status", module_name).returncode == 2
    finally:
        remove_module(cli, module_name)


# -- a module's life ------------------------------------------------------------------------------

@pytest.mark.integration
def test_deploy_update_roll_back_by_itself_and_by_hand_undeploy(
        pony_images: PonyImages, module_name: str) -> None:
    require("podman", "haproxy")
    cli, name = pony_images.cli, module_name
    v1, v2, broken = (pony_images.v1["digest"], pony_images.v2["digest"],
                      pony_images.broken["digest"])
    port = free_port()
    try:
        rc, deployed = cli.json("deploy", name, "--image", pony_images.v1["image"],
                                "--replicas", "2", "--port", str(port), "--soak", "3",
                                timeout=600)
        assert rc == 0, deployed
        assert deployed["result"] == "deployed" and deployed["digest"] == v1
        assert ROLLOUT_GOOD_PAGE in page(port)

        rc, status = cli.json("status", name)
        assert rc == 0
        assert status["module"] == name and status["digest"] == v1
        assert len(status["replicas"]) == 2
        for replica in status["replicas"]:
            assert set(replica) >= {"name", "digest", "healthy"}
            assert replica["digest"] == v1 and replica["healthy"] is True
        assert [(h["digest"], h["result"]) for h in status["history"]] == [(v1, "deployed")]
        assert status["history"][0]["at"]
        running = sorted(c["name"] for c in _containers(name))
        assert set(running) >= {r["name"] for r in status["replicas"]}

        # Another module on the same port: refused, naming the port and who has it.
        other = f"{name}-b"
        proc = cli("deploy", other, "--image", pony_images.v2["image"], "--port", str(port))
        assert proc.returncode == 2
        assert f"port {port}" in proc.stderr and f"by module {name}" in proc.stderr
        assert _containers(other) == [] and cli("status", other).returncode == 2

        # A dry run says what it would do and does nothing.
        rc, plan = cli.json("update", name, "--to", v2, "--dry-run")
        assert rc == 0 and plan["result"] == "planned" and plan["plan"], plan
        assert cli.json("status", name)[1]["digest"] == v1
        assert sorted(c["name"] for c in _containers(name)) == running

        rc, updated = cli.json("update", name, "--to", v2, "--soak", "3", timeout=600)
        assert rc == 0, updated
        assert updated["result"] == "updated" and updated["digest"] == v2
        assert ROLLOUT_GOOD_PAGE in page(port)
        status = cli.json("status", name)[1]
        assert status["digest"] == v2
        assert [(h["digest"], h["result"]) for h in status["history"]] == [
            (v1, "deployed"), (v2, "updated")]
        assert {r["digest"] for r in status["replicas"]} == {v2}
        assert {c["digest"] for c in _containers(name)} == {v2}

        # `alicorn down` stops the module with the rest, its state kept; `resume` (what a
        # reboot needs) brings it back.
        proc = cli("down", timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "modules stopped" in proc.stdout
        assert not _listening(port)
        assert all(c["state"] != "running" for c in _containers(name))
        assert cli.json("status", name)[1]["digest"] == v2
        proc = cli("resume", name, "--json", timeout=600)
        assert proc.returncode == 0, proc.stderr
        resumed = json.loads(proc.stdout.splitlines()[-1])
        assert [(o["module"], o["digest"]) for o in resumed] == [(name, v2)]
        assert ROLLOUT_GOOD_PAGE in page(port)
        assert {c["state"] for c in _containers(name)} == {"running"}

        # The same digest again: nothing to do.
        rc, same = cli.json("update", name, "--to", v2)
        assert rc == 0 and same["result"] == "unchanged"

        # The broken pony answers 404: the update rolls back by itself and says why.
        proc = cli("update", name, "--to", pony_images.broken["image"], "--deadline", "30",
                   "--soak", "3", "--json", timeout=600)
        assert proc.returncode == 1, proc.stderr
        back = json.loads(proc.stdout.splitlines()[-1])
        assert back["result"] == "rolled_back" and back["digest"] == v2
        assert back["to"] == broken and back["reason"]
        assert ROLLOUT_GOOD_PAGE in page(port)
        status = cli.json("status", name)[1]
        assert status["digest"] == v2
        last = status["history"][-1]
        assert last["result"] == "rolled_back" and last["reason"]
        assert broken in (last["digest"], last["from"])
        assert {c["digest"] for c in _containers(name)} == {v2}
        text = cli("status", name, check=True).stdout
        assert "rolled_back" in text and v2 in text
        assert text.index("rolled_back") < text.index("updated")  # newest first

        # Text form of a rollback that happens by itself: exit 1 and the reason on stderr.
        proc = cli("update", name, "--to", broken, "--deadline", "20", "--soak", "2",
                   timeout=600)
        assert proc.returncode == 1
        assert "rolled back" in proc.stderr and "why:" in proc.stderr

        # The broken digest is in the history (its update rolled back) but never served:
        # rolling "back" to it is refused.
        proc = cli("rollback", name, "--to", broken, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "never served" in proc.stderr

        rc, by_hand = cli.json("rollback", name, timeout=600)
        assert rc == 0, by_hand
        assert by_hand["digest"] == v1
        assert ROLLOUT_GOOD_PAGE in page(port)
        status = cli.json("status", name)[1]
        assert status["digest"] == v1
        assert status["history"][-1]["result"] == "rolled_back"
        assert {c["digest"] for c in _containers(name)} == {v1}

        rc, listed = cli.json("modules")
        assert rc == 0
        mine = [m for m in listed if m["name"] == name]
        assert len(mine) == 1 and mine[0]["digest"] == v1
        assert name in cli("modules", check=True).stdout

        proc = cli("undeploy", name, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert _containers(name) == []
        assert not _listening(port)
        assert cli("status", name).returncode == 2
        assert all(m["name"] != name for m in cli.json("modules")[1])
    finally:
        remove_module(cli, name)
