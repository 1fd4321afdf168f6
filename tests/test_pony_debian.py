"""The Debian pony end to end through the real command line: git → build → registry → podman.

These use Debian's package archive (mmdebstrap), the local docker-registry and podman.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, Cli, free_port, git_repo, require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def pony_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("pony-git") / "pony"
    commit = git_repo(EXAMPLES / "pony" / "debian", repo)
    return repo, commit


@pytest.fixture(scope="session")
def pony(shared_cli: Cli, pony_repo: tuple[Path, str]) -> dict[str, Any]:
    require("mmdebstrap", "podman", "skopeo", "docker-registry", "git")
    repo, _ = pony_repo
    rc, result = shared_cli.json("build", f"file://{repo}", "--ref", "main",
                                 "--recipe", "pony.yaml")
    assert rc == 0, result
    return result


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode()


def test_build_from_git_reports_the_contract(pony: dict[str, Any], pony_repo: tuple[Path, str],
                                             shared_cli: Cli) -> None:
    _, commit = pony_repo
    assert pony["state"] == "done"
    assert pony["digest"].startswith("sha256:") and len(pony["digest"]) == 71
    assert pony["image"].endswith("/pony@" + pony["digest"])
    assert pony["source"]["commit"] == commit
    shown = json.loads(shared_cli("show", pony["build_id"], "--json", check=True).stdout)
    assert shown["argv"][:2] == ["alicorn", "build"]
    assert "--ref" in shown["argv"] and "main" in shown["argv"]
    assert shown["inputs"]["source"]["commit"] == commit
    names = {p["name"] for p in shown["package_list"]}
    assert {"nginx-light", "libc6", "base-files"} <= names
    nginx = next(p for p in shown["package_list"] if p["name"] == "nginx-light")
    assert nginx["purl"].startswith("pkg:deb/debian/nginx-light@")
    assert nginx["checksum"].startswith("sha256:")
    log = Path(shown["log"]).read_text()
    assert "mmdebstrap" in log and pony["digest"] in log
    assert shown["log_digest"].startswith("sha256:")


def test_podman_pulls_the_published_image(pony: dict[str, Any]) -> None:
    proc = subprocess.run(["podman", "pull", "--tls-verify=false", pony["image"]],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    digest = subprocess.run(["podman", "image", "inspect", "--format", "{{.Digest}}",
                             pony["image"]], capture_output=True, text=True, check=True)
    assert digest.stdout.strip() == pony["digest"]


def test_same_inputs_give_the_same_digest(pony: dict[str, Any], pony_repo: tuple[Path, str],
                                          shared_cli: Cli) -> None:
    repo, _ = pony_repo
    rc, cached = shared_cli.json("build", f"file://{repo}", "--ref", "main",
                                 "--recipe", "pony.yaml", "--skip-checks")
    assert rc == 0 and cached["digest"] == pony["digest"]
    assert cached["cached_from"] == pony["build_id"]
    rc, fresh = shared_cli.json("build", f"file://{repo}", "--ref", "main",
                                "--recipe", "pony.yaml", "--no-cache", "--skip-checks")
    assert rc == 0, fresh
    assert fresh["cached_from"] is None
    assert fresh["digest"] == pony["digest"], "a from-scratch rebuild must be bit-identical"


def test_run_serves_the_content(pony: dict[str, Any], shared_cli: Cli) -> None:
    port = free_port()
    name = f"pony-test-{port}"
    try:
        shared_cli("run", pony["build_id"], "--name", name, "--port", str(port),
                   "--address", "127.0.0.1", check=True, timeout=300)
        status, body = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "Hello from pony" in body
    finally:
        shared_cli("stop", name)


def test_run_by_digest_with_content_directory(pony: dict[str, Any], shared_cli: Cli,
                                               tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<h1>content from the host</h1>\n")
    tmp_path.chmod(0o755)  # nginx's workers run as www-data
    port = free_port()
    name = f"pony-dir-{port}"
    try:
        shared_cli("run", pony["digest"], "--name", name, "--port", str(port), "--address",
                   "127.0.0.1", "--content", str(tmp_path), check=True, timeout=300)
        assert "content from the host" in _get(f"http://127.0.0.1:{port}/")[1]
    finally:
        shared_cli("stop", name)


def test_run_with_content_from_volume_and_container(pony: dict[str, Any], shared_cli: Cli,
                                                    tmp_path: Path) -> None:
    port = free_port()
    volume, holder, name = f"pony-vol-{port}", f"pony-holder-{port}", f"pony-vc-{port}"
    try:
        subprocess.run(["podman", "volume", "create", volume], check=True, capture_output=True)
        mount = subprocess.run(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}",
                                volume], check=True, capture_output=True, text=True)
        Path(mount.stdout.strip(), "index.html").write_text("from a volume\n")
        shared_cli("run", pony["image"], "--name", name, "--port", str(port), "--address",
                   "127.0.0.1", "--content-volume", volume, check=True, timeout=300)
        assert _get(f"http://127.0.0.1:{port}/")[1] == "from a volume\n"
        shared_cli("stop", name)
        # Another container holding the content as a volume.
        subprocess.run(["podman", "create", "--name", holder, "-v", f"{volume}:/var/www/html",
                        pony["image"]], check=True, capture_output=True)
        shared_cli("run", pony["image"], "--name", name, "--port", str(port), "--address",
                   "127.0.0.1", "--content-from", holder, check=True, timeout=300)
        assert _get(f"http://127.0.0.1:{port}/")[1] == "from a volume\n"
    finally:
        shared_cli("stop", name)
        subprocess.run(["podman", "rm", "-f", holder], capture_output=True)
        subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True)


def test_port_in_use_is_a_clear_error(pony: dict[str, Any], shared_cli: Cli) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = shared_cli("run", pony["build_id"], "--name", f"pony-busy-{port}", "--port",
                          str(port), "--address", "127.0.0.1", timeout=300)
        shared_cli("stop", f"pony-busy-{port}")
    assert proc.returncode != 0
    assert f"port {port}" in proc.stderr and "in use" in proc.stderr


def test_unknown_git_ref_fails_with_its_name(shared_cli: Cli,
                                             pony_repo: tuple[Path, str]) -> None:
    require("git")
    repo, _ = pony_repo
    rc, result = shared_cli.json("build", f"file://{repo}", "--ref", "no-such-branch",
                                 "--recipe", "pony.yaml")
    assert rc == 1 and result["state"] == "failed"
    assert "no-such-branch" in result["error"] and "does not exist" in result["error"]
    assert "no-such-branch" in Path(result["log"]).read_text()


def test_missing_recipe_in_repo_names_the_path(shared_cli: Cli,
                                               pony_repo: tuple[Path, str]) -> None:
    repo, _ = pony_repo
    rc, result = shared_cli.json("build", f"file://{repo}", "--ref", "main",
                                 "--recipe", "nope/pony.yaml")
    assert rc == 1 and result["state"] == "failed"
    assert "nope/pony.yaml" in result["error"] and "no such file" in result["error"]


def test_unknown_package_fails_and_names_it(cli: Cli, tmp_path: Path) -> None:
    require("mmdebstrap")
    recipe = (EXAMPLES / "pony" / "debian" / "pony.yaml").read_text()
    d = tmp_path / "r"
    import shutil
    shutil.copytree(EXAMPLES / "pony" / "debian", d)
    (d / "pony.yaml").write_text(recipe.replace("  - nginx-light", "  - nginx-light\n"
                                                "  - no-such-package-xyz"))
    rc, result = cli.json("build", str(d / "pony.yaml"))
    assert rc == 1 and result["state"] == "failed"
    assert "no-such-package-xyz" in result["error"]
    assert "no-such-package-xyz" in Path(result["log"]).read_text()


def test_unreachable_repository_fails_and_names_it(cli: Cli, tmp_path: Path) -> None:
    import shutil
    d = tmp_path / "r"
    shutil.copytree(EXAMPLES / "pony" / "debian", d)
    text = (d / "pony.yaml").read_text().replace(
        "  - name: bookworm-security\n    suite: bookworm-security",
        f"  - name: bookworm-security\n    suite: bookworm-security\n"
        f"    url: http://127.0.0.1:{free_port()}/debian-security")
    (d / "pony.yaml").write_text(text)
    rc, result = cli.json("build", str(d / "pony.yaml"))
    assert rc == 1 and result["state"] == "failed"
    assert "bookworm-security" in result["error"] and "not reachable" in result["error"]


def test_malformed_recipe_is_recorded_as_failed(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: 1\nname: pony\ndistribution:\n  type: debian\n  release: bookworm\n"
                   "repositories:\n  - name: x\n    suite: bookworm\npackages: [nginx]\n"
                   "portz: [80]\n")
    rc, result = cli.json("build", str(bad))
    assert rc == 1 and result["state"] == "failed"
    assert f"{bad}:10" in result["error"] and "portz" in result["error"]
    listed = json.loads(cli("builds", "--json", check=True).stdout)
    assert listed[0]["build_id"] == result["build_id"] and listed[0]["state"] == "failed"


def test_registry_down_publishes_nothing(cli: Cli, pony: dict[str, Any],
                                         pony_repo: tuple[Path, str]) -> None:
    repo, _ = pony_repo
    dead = f"127.0.0.1:{free_port()}"
    rc, result = cli.json("build", f"file://{repo}", "--ref", "main", "--recipe", "pony.yaml",
                          "--skip-checks", env={"ALICORN_REGISTRY": dead})
    assert rc == 1 and result["state"] == "failed"
    assert dead in result["error"] and "nothing was published" in result["error"]
    assert result["image"] is None


def test_disk_full_mid_build_fails_cleanly(tmp_path: Path) -> None:
    require("mmdebstrap", "mount")
    home = tmp_path / "home"
    work = home / "work"
    work.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(work)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    c = Cli(home)
    try:
        rc, result = c.json("build", str(EXAMPLES / "pony" / "debian" / "pony.yaml"))
        assert rc == 1 and result["state"] == "failed"
        assert "disk is full" in result["error"] or "No space left" in result["error"]
        assert Path(result["log"]).is_file()
        assert list(work.iterdir()) == [], "the build root must be cleaned up"
    finally:
        c.down()
        subprocess.run(["umount", "-l", str(work)], check=False)


def test_worker_killed_mid_build_is_recorded_and_cleaned(cli: Cli) -> None:
    import os
    import signal
    import time

    require("mmdebstrap")
    proc = cli("build", str(EXAMPLES / "pony" / "debian" / "pony.yaml"), "--no-wait", "--json",
               "--no-cache", check=True)
    build_id = json.loads(proc.stdout)["build_id"]
    progress = cli.home / "builds" / build_id / "progress.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if progress.exists() and '"name": "compose"' in progress.read_text():
            break
        time.sleep(0.2)
    else:
        pytest.fail("the build never reached the compose step")
    time.sleep(2)  # mmdebstrap is at work inside the private build root
    pid = int((cli.home / "run" / "worker.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    rc, result = cli.json("wait", build_id, timeout=300)
    assert rc == 1 and result["state"] == "failed"
    assert "died" in result["error"]
    work = cli.home / "work" / build_id
    deadline = time.monotonic() + 60
    while work.exists() and time.monotonic() < deadline:  # mmdebstrap got SIGTERM and unwinds
        time.sleep(0.5)
        cli("worker", "--once", timeout=120)  # a new worker reaps what is left
    assert not work.exists(), "the dead build's private root must be removed"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(cli.home / "work") not in mounts


def test_recipe_tests_pass_against_the_image(pony: dict[str, Any], shared_cli: Cli) -> None:
    rc, result = shared_cli.json("test", pony["build_id"], timeout=300)
    assert rc == 0, result
    assert result["passed"] is True
    assert [t["name"] for t in result["tests"]] == ["serves its content",
                                                    "nginx configuration is valid"]
    assert all(t["passed"] for t in result["tests"])
