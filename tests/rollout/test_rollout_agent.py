"""The agent follows the registry: a moved tag is applied, an image that does not verify is
refused once and not tried again until the tag moves — with podman, HAProxy, the registry and
the signed pony images."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from alicorn.monitor import Monitor
from conftest import (
    ALICORN,
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
REPOSITORY = "pony-rpm"


class Recorder(Monitor):
    """Keeps what the agent and its controller said."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, name: str, total: int | None = None) -> None:
        self.lines.append(name)

    def message(self, text: str) -> None:
        self.lines.append(text)


def _containers(name: str) -> list[dict[str, str]]:
    return [{"name": c["Names"][0],
             "digest": (c.get("Labels") or {}).get("org.alicorn.digest", "")}
            for c in podman_containers(name)]


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def module_name() -> Iterator[str]:
    yield f"t-agent-{uuid.uuid4().hex[:8]}"


def _point(registry: str, tag: str, manifest: bytes, media_type: str) -> str:
    from alicorn.registry.client import RegistryClient

    return str(RegistryClient(registry).push_manifest(REPOSITORY, tag, manifest, media_type))


def _manifest(registry: str, digest: str) -> tuple[bytes, str]:
    from alicorn.registry.client import RegistryClient

    got = RegistryClient(registry).get_manifest(REPOSITORY, digest)
    assert got is not None, digest
    return got[0], got[1]


def test_the_agent_stops_cleanly_on_sigterm(cli: Cli) -> None:
    proc = subprocess.Popen([*ALICORN, "agent", "--interval", "60"], env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Its controller creates the database; then it resumes, looks once, and naps 60 s.
        deadline = time.monotonic() + 60
        while not (cli.home / "alicorn.db").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        time.sleep(3)
        assert proc.poll() is None, proc.communicate()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert time.monotonic() - started < 10  # the 60 s nap is cut short
        assert "SIGTERM" in stderr and "agent stopped" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_agent_fails_on_an_unknown_module(cli: Cli) -> None:
    rc, summary = cli.json("agent", "no-such-module", "--once")
    assert rc == 1
    assert summary["failed"] == 1
    assert "no module named 'no-such-module'" in summary["outcomes"][0]["reason"]
    proc = cli("agent", "Bad/Name", "--once")
    assert proc.returncode == 2 and "not valid" in proc.stderr


@pytest.mark.integration
def test_the_agent_applies_the_image_the_tag_names_now(pony_images: PonyImages,
                                                       module_name: str) -> None:
    require("podman", "haproxy")
    cli, name, port = pony_images.cli, module_name, free_port()
    v1, v2 = pony_images.v1["digest"], pony_images.v2["digest"]
    try:
        # Deployed by v1's digest; the repository's `latest` names v2 already (built last).
        rc, deployed = cli.json("deploy", name, "--image", pony_images.v1["image"],
                                "--replicas", "2", "--port", str(port), "--soak", "3",
                                timeout=600)
        assert rc == 0 and deployed["digest"] == v1, deployed
        proc = cli("agent", name, "--once", "--json", timeout=600)
        assert proc.returncode == 0, proc.stderr
        lines = _json_lines(proc.stdout)
        summary = lines[-1]
        assert summary["event"] == "summary" and summary["updated"] == 1, summary
        assert summary["failed"] == 0
        assert [o["to"] or o["digest"] for o in summary["outcomes"]] == [v2]
        assert any(x.get("event") == "outcome" and x["result"] == "updated" for x in lines)
        status = cli.json("status", name)[1]
        assert status["digest"] == v2
        assert [h["result"] for h in status["history"]] == ["deployed", "updated"]
        assert {c["digest"] for c in _containers(name)} == {v2}
        assert ROLLOUT_GOOD_PAGE in page(port)

        # Nothing moved since: one more pass does nothing.
        proc = cli("agent", name, "--once", "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
        again = _json_lines(proc.stdout)[-1]
        assert again["updated"] == 0 and again["failed"] == 0 and again["outcomes"] == []
        assert len(cli.json("status", name)[1]["history"]) == 2

        # A rollback by hand is not undone while the tag names what was rolled back from.
        rc, back = cli.json("rollback", name, timeout=600)
        assert rc == 0 and back["digest"] == v1, back
        # Text form, and every module (this home has only this one deployed).
        proc = cli("agent", "--once", timeout=300)
        assert proc.returncode == 0 and "0 updated, 0 failed" in proc.stdout, proc.stderr
        assert "its last operation ended rolled_back" in proc.stderr
        assert cli.json("status", name)[1]["digest"] == v1
        assert {c["digest"] for c in _containers(name)} == {v1}
    finally:
        remove_module(cli, name)


@pytest.mark.integration
def test_an_untrusted_image_under_the_tag_is_refused_once(pony_images: PonyImages,
                                                          module_name: str) -> None:
    require("podman", "haproxy")
    from alicorn.config import load_settings
    from alicorn.rollout.agent import Agent

    cli, name, port = pony_images.cli, module_name, free_port()
    registry, v1, v2 = (pony_images.registry, pony_images.v1["digest"],
                        pony_images.v2["digest"])
    tag = f"agent-{uuid.uuid4().hex[:8]}"        # a tag of this test's own
    v1_manifest, media_type = _manifest(registry, v1)
    assert _point(registry, tag, v1_manifest, media_type) == v1
    # The same image with one annotation more: another digest, which nobody signed.
    doc = json.loads(v1_manifest)
    doc.setdefault("annotations", {})["org.example.tampered"] = "yes"
    unsigned_manifest = json.dumps(doc, sort_keys=True).encode()
    try:
        rc, deployed = cli.json("deploy", name, "--image", f"{pony_images.repository}:{tag}",
                                "--replicas", "1", "--port", str(port), "--soak", "2",
                                timeout=600)
        assert rc == 0 and deployed["digest"] == v1, deployed

        unsigned = _point(registry, tag, unsigned_manifest, media_type)
        assert unsigned not in (v1, v2)
        settings = load_settings(cli.home)
        said = Recorder()
        agent = Agent(settings, modules=[name], monitor=said)
        outcomes = agent.tick()
        assert [(o.module, o.result, o.to_digest) for o in outcomes] == [
            (name, "failed", unsigned)], outcomes
        assert outcomes[0].reason
        assert agent.refused == {name: unsigned}
        assert any("refused" in line for line in said.lines), said.lines
        status = cli.json("status", name)[1]
        assert status["digest"] == v1
        failed = [h for h in status["history"] if h["result"] == "failed"]
        assert [h["digest"] for h in failed] == [unsigned]
        assert any("agent: refused" in e["message"] for e in status["events"]), status
        assert {c["digest"] for c in _containers(name)} == {v1}
        assert ROLLOUT_GOOD_PAGE in page(port)

        # Not tried again: by the same agent, by a new one (a restart), by `agent --once`.
        assert agent.tick() == []
        assert Agent(settings, modules=[name]).tick() == []
        proc = cli("agent", name, "--once", "--json", timeout=300)
        assert proc.returncode == 0, proc.stderr
        summary = _json_lines(proc.stdout)[-1]
        assert summary["updated"] == 0 and summary["failed"] == 0
        assert summary["refused"] == {name: unsigned}
        history = cli.json("status", name)[1]["history"]
        assert [h["digest"] for h in history if h["result"] == "failed"] == [unsigned]

        # The tag moves again, to a signed image: applied at the next tick.
        assert _point(registry, tag, *_manifest(registry, v2)) == v2
        outcomes = agent.tick()
        assert [(o.result, o.digest) for o in outcomes] == [("updated", v2)], outcomes
        assert name not in agent.refused
        assert {c["digest"] for c in _containers(name)} == {v2}
        assert ROLLOUT_GOOD_PAGE in page(port)
    finally:
        remove_module(cli, name)


def test_the_agent_and_the_controller_agree_on_unchanged() -> None:
    # The agent names the result itself so that importing it does not load the controller.
    from alicorn.rollout import agent, controller

    assert agent.UNCHANGED == controller.UNCHANGED
