"""The RPM pony end to end: rpmbuild + createrepo_c repo → dnf --installroot → image → podman."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, Cli, free_port, require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rpm_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("rpmbuild", "createrepo_c", "dnf", "busybox")
    d = tmp_path_factory.mktemp("rpm-pony") / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", d, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(d / "build-repo"), str(d / "repo"), "--version", "1"], check=True,
                   capture_output=True)
    return d


@pytest.fixture(scope="module")
def rpm_pony(shared_cli: Cli, rpm_example: Path) -> dict[str, Any]:
    require("podman", "skopeo", "docker-registry")
    rc, result = shared_cli.json("build", str(rpm_example / "pony.yaml"))
    assert rc == 0, result
    return result


def test_rpm_pony_builds_and_serves(rpm_pony: dict[str, Any], shared_cli: Cli) -> None:
    shown = json.loads(shared_cli("show", rpm_pony["build_id"], "--json", check=True).stdout)
    versions = {p["name"]: p["version"] for p in shown["package_list"]}
    assert versions["busybox"] == "1.35.0-1.fc40"
    assert set(versions) == {"pony-filesystem", "fedora-release-pony", "busybox", "pony-content"}
    assert all(p["type"] == "rpm" for p in shown["package_list"])
    port = free_port()
    name = f"pony-rpm-{port}"
    try:
        shared_cli("run", rpm_pony["image"], "--name", name, "--port", str(port), "--address",
                   "127.0.0.1", check=True, timeout=300)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert resp.status == 200
            assert "Hello from pony" in resp.read().decode()
    finally:
        shared_cli("stop", name)


def test_rpm_pony_is_reproducible(rpm_pony: dict[str, Any], shared_cli: Cli,
                                  rpm_example: Path) -> None:
    rc, again = shared_cli.json("build", str(rpm_example / "pony.yaml"), "--no-cache",
                                "--skip-checks")
    assert rc == 0, again
    assert again["digest"] == rpm_pony["digest"]


def test_newer_repository_state_gives_a_new_image(rpm_pony: dict[str, Any], shared_cli: Cli,
                                                  rpm_example: Path, tmp_path: Path) -> None:
    updated = tmp_path / "pony"
    shutil.copytree(rpm_example, updated, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(updated / "build-repo"), str(updated / "repo")], check=True,
                   capture_output=True)
    assert (updated / "repo" / "repodata").is_dir()
    assert any("updateinfo" in p.name for p in (updated / "repo" / "repodata").iterdir())
    rc, result = shared_cli.json("build", str(updated / "pony.yaml"), "--skip-checks")
    assert rc == 0, result
    assert result["cached_from"] is None
    assert result["digest"] != rpm_pony["digest"]
    shown = json.loads(shared_cli("show", result["build_id"], "--json", check=True).stdout)
    versions = {p["name"]: p["version"] for p in shown["package_list"]}
    assert versions["busybox"] == "1.35.0-2.fc40"


def test_wheel_artifact_lands_in_the_image(shared_cli: Cli, rpm_example: Path,
                                           tmp_path: Path) -> None:
    import hashlib
    import sys
    import tarfile

    sys.path.insert(0, str(Path(__file__).parent / "build"))
    from wheels import make_wheel

    d = tmp_path / "pony"
    shutil.copytree(rpm_example, d)
    wheel = make_wheel(d / "wheels")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    text = (d / "pony.yaml").read_text().replace(
        "entrypoint:", f"artifacts:\n  - type: wheel\n    url: wheels/{wheel.name}\n"
                       f"    sha256: '{sha}'\n    target: /opt/py\nentrypoint:", 1)
    (d / "pony.yaml").write_text(text)
    rc, result = shared_cli.json("build", str(d / "pony.yaml"), "--no-push", "--skip-checks")
    assert rc == 0, result
    assert result["image"] is None
    shown = json.loads(shared_cli("show", result["build_id"], "--json", check=True).stdout)
    assert {"name": "ponytools", "version": "1.2.3", "type": "pypi"}.items() <= next(
        p for p in shown["package_list"] if p["type"] == "pypi").items()
    layout = shared_cli.home / "images" / result["digest"].split(":")[1]
    layer = shown["outputs"]["layers"][0]["digest"].split(":")[1]
    with tarfile.open(layout / "blobs" / "sha256" / layer) as tar:
        names = tar.getnames()
    assert "opt/py/ponytools/__init__.py" in names
    assert "usr/bin/busybox" in names


def test_recipe_tests_catch_a_server_that_serves_the_wrong_thing(
        shared_cli: Cli, rpm_example: Path, tmp_path: Path) -> None:
    d = tmp_path / "pony"
    shutil.copytree(rpm_example, d)
    text = (d / "pony.yaml").read_text()
    text = text.replace("contains: Hello from pony", "contains: Goodbye from pony")
    text += ("  - name: busybox is there\n    command: [/usr/bin/busybox, \"true\"]\n"
             "  - name: a missing page is a 404\n    http: {path: /nope.html, status: 404}\n"
             "  - name: no such command\n    command: [/usr/bin/busybox, \"false\"]\n")
    (d / "pony.yaml").write_text(text)
    # Published without its checks (a build that runs them would fail and publish nothing):
    # this is about `alicorn test` on an image in the registry.
    rc, built = shared_cli.json("build", str(d / "pony.yaml"), "--skip-checks")
    assert rc == 0, built
    rc, result = shared_cli.json("test", built["digest"], timeout=300)
    assert rc == 1 and result["passed"] is False
    by_name = {t["name"]: t for t in result["tests"]}
    assert not by_name["the page is served"]["passed"]
    assert "does not contain 'Goodbye from pony'" in by_name["the page is served"]["detail"]
    assert by_name["busybox is there"]["passed"]
    assert by_name["a missing page is a 404"]["passed"]
    assert not by_name["no such command"]["passed"]
    assert "exit status 1, expected 0" in by_name["no such command"]["detail"]
    leftovers = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"],
                               capture_output=True, text=True, check=True).stdout
    assert "alicorn-test-" not in leftovers


def test_podman_pulls_the_signed_image_and_refuses_an_unsigned_copy(
        rpm_pony: dict[str, Any], shared_cli: Cli) -> None:
    """Starting the registry made podman require the build service's signature for it."""
    addr = rpm_pony["image"].split("/")[0]
    layout = shared_cli.home / "images" / rpm_pony["digest"].split(":")[1]
    pulled = subprocess.run(["podman", "pull", rpm_pony["image"]], capture_output=True,
                            text=True)
    assert pulled.returncode == 0, pulled.stderr
    copy = f"{addr}/pony-rpm-unsigned:1"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                    f"oci:{layout}:latest", f"docker://{copy}"], check=True,
                   capture_output=True)
    subprocess.run(["podman", "rmi", "-f", copy], capture_output=True)
    refused = subprocess.run(["podman", "pull", copy], capture_output=True, text=True)
    assert refused.returncode != 0
    assert "A signature was required, but no signature exists" in refused.stderr
