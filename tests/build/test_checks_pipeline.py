"""The checks before publishing, end to end with the RPM pony: real dnf, podman, registry.

A build that passes its tests and gate is published with their records and signed statements;
one whose test fails is not published and the tag stays on the image before it; a rebuild
for an advisory whose fix the repositories lack fails saying so; the trigger reaches the
provenance and not the input key.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, Cli, require

pytestmark = pytest.mark.integration

ADVISORY = "FEDORA-2024-b7e1c3d2a9"


def _example(dest: Path, version: str) -> Path:
    require("rpmbuild", "createrepo_c", "dnf", "busybox", "podman", "skopeo",
            "docker-registry")
    shutil.copytree(EXAMPLES / "pony" / "rpm", dest, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(dest / "build-repo"), str(dest / "repo"), "--version", version],
                   check=True, capture_output=True)
    return dest


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = Cli(tmp_path_factory.mktemp("checks-home"))
    yield c
    c.down()


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _example(tmp_path_factory.mktemp("checks-pony") / "pony", "1")


@pytest.fixture(scope="module")
def published(home: Cli, example: Path) -> dict[str, Any]:
    rc, result = home.json("build", str(example / "pony.yaml"))
    assert rc == 0, result
    return result


def _registry(cli: Cli) -> Any:
    from alicorn.config import load_settings
    from alicorn.registry.client import RegistryClient
    return RegistryClient(load_settings(cli.home).registry)


def _tag(cli: Cli, name: str = "pony-rpm", tag: str = "latest") -> str | None:
    got = _registry(cli).get_manifest(name, tag)
    return str(got[2]) if got else None


def _submit(cli: Cli, recipe: Path, options: dict[str, Any]) -> dict[str, Any]:
    """A build as the rebuild service submits it (options the command line does not set)."""
    from alicorn.config import load_settings
    from alicorn.store.builds import BuildStore, Submission

    settings = load_settings(cli.home)
    row = BuildStore(settings.database_url).submit(Submission(
        argv=["alicorn-rebuild", str(recipe)], source_kind="file",
        recipe_path=str(recipe.resolve()), recipe_content=recipe.read_text(),
        options=options))
    return cli.json("wait", row.id, timeout=600)[1]


def _leftovers(build: Path) -> list[str]:
    """The podman container and image names this build's checks used that are still there
    (other builds may be testing their own candidates meanwhile)."""
    log = (build / "checks.log").read_text()
    names = set(re.findall(r"alicorn-(?:test|candidate)-[0-9a-f]+", log))
    assert names, log
    containers = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"],
                                capture_output=True, text=True, check=True).stdout
    images = subprocess.run(["podman", "images", "--format", "{{.Repository}}"],
                            capture_output=True, text=True, check=True).stdout
    return [n for n in sorted(names) if n in containers + images]


def test_a_passing_build_is_published_with_its_test_and_gate_records(
        published: dict[str, Any], home: Cli) -> None:
    from alicorn.chain import attach, dsse
    from alicorn.chain.keys import KeyRing
    from alicorn.digest import Digest

    checks = published["checks"]
    assert checks["tests"] == "passed" and checks["gate"] == "passed", checks
    assert checks["fixed"] is None
    assert checks["tests_detail"][0]["name"] == "the page is served"
    assert _tag(home) == published["digest"]
    build = home.home / "builds" / published["build_id"]
    tests = json.loads((build / "tests.json").read_text())
    assert tests["state"] == "passed" and tests["image"] == published["digest"]
    gate = json.loads((build / "gate.json").read_text())
    assert gate["state"] == "passed" and gate["passed"] is True
    record = json.loads((build / "record.json").read_text())
    assert record["checks"]["files"]["tests.json"] == str(Digest.of_file(build / "tests.json"))
    assert record["logs"]["checks.log"] == str(Digest.of_file(build / "checks.log"))
    assert "pass the page is served" in (build / "checks.log").read_text()
    # In the registry: the provenance and both statements, signed; the gate's results.
    client = _registry(home)
    digest = Digest(published["digest"])
    att = attach.fetch_attachment(client, "pony-rpm", digest, attach.ATT)
    types = {layer.annotations["predicateType"]: layer for layer in att}
    assert set(types) == {"https://slsa.dev/provenance/v1",
                          "https://alicorn.dev/attestation/tests/v1",
                          "https://alicorn.dev/attestation/gate/v1"}
    stmt = dsse.verify(json.loads(types["https://alicorn.dev/attestation/tests/v1"].data),
                       KeyRing(home.home / "keys")).json()
    assert stmt["predicate"]["state"] == "passed"
    assert stmt["subject"][0]["digest"] == {"sha256": digest.hex}
    gate_layers = attach.fetch_attachment(client, "pony-rpm", digest, attach.GATE)
    assert (build / "gate.json").read_bytes() in {layer.data for layer in gate_layers}
    rc, verified = home.json("verify", published["digest"])
    assert rc == 0 and verified["verified"], verified
    links = {c["link"]: c for c in verified["checks"]}
    assert links["checks"]["ok"] and "tests passed, gate passed" in links["checks"]["detail"]
    assert "gate results match" in links["registry"]["detail"]
    shown = home("show", published["build_id"], check=True).stdout
    assert "tests passed, gate passed" in shown.replace("fixed -, ", "")
    assert _leftovers(build) == []


def test_a_failing_test_is_not_published_and_the_tag_stays(
        published: dict[str, Any], home: Cli, example: Path, tmp_path: Path) -> None:
    d = tmp_path / "pony"
    shutil.copytree(example, d)
    text = (d / "pony.yaml").read_text()
    (d / "pony.yaml").write_text(text.replace("contains: Hello from pony",
                                              "contains: Goodbye from pony"))
    rc, result = home.json("build", str(d / "pony.yaml"))
    assert rc == 1 and result["state"] == "failed", result
    assert "the tests failed: the page is served" in result["error"]
    assert "does not contain 'Goodbye from pony'; it was '<!DOCTYPE html>" in result["error"]
    assert "<h1>Hello from pony" in result["error"]
    assert "nothing was published" in result["error"]
    # The candidate keeps its digest, unpublished; the tag still names the earlier image.
    assert result["digest"] and result["digest"] != published["digest"]
    assert result["image"] is None
    assert result["checks"]["tests"] == "failed"
    assert result["checks"]["gate"] == "passed"  # run anyway: both results are on record
    assert _tag(home) == published["digest"]
    assert _registry(home).get_manifest("pony-rpm", result["digest"]) is None
    assert (home.home / "images" / result["digest"].split(":")[1]).is_dir()
    build = home.home / "builds" / result["build_id"]
    assert json.loads((build / "tests.json").read_text())["state"] == "failed"
    assert (build / "gate.json").is_file()
    assert not (build / "publish.log").exists()
    log = (build / "checks.log").read_text()
    assert "FAIL the page is served" in log and "FAILED: the tests failed" in log
    shown = json.loads(home("show", result["build_id"], "--json", check=True).stdout)
    assert shown["checks"]["tests_detail"][0]["passed"] is False
    # Nothing takes the failed candidate for a current image.
    refused = home("verify", result["digest"])
    assert refused.returncode == 2 and "not produced by a finished build" in refused.stderr
    rc, again = home.json("verify", result["build_id"], "--offline")
    assert again["verified"], again  # its record, log and files hold all the same
    assert _leftovers(build) == []


def test_skip_checks_records_them_as_skipped(published: dict[str, Any], home: Cli,
                                             example: Path) -> None:
    rc, result = home.json("build", str(example / "pony.yaml"), "--skip-checks")
    assert rc == 0, result
    assert result["cached_from"] == published["build_id"]
    assert result["checks"]["tests"] == "skipped" and result["checks"]["gate"] == "skipped"
    build = home.home / "builds" / result["build_id"]
    assert json.loads((build / "tests.json").read_text())["reason"] == "--skip-checks"


def test_altered_test_results_break_the_chain(published: dict[str, Any], home: Cli,
                                              example: Path) -> None:
    rc, result = home.json("build", str(example / "pony.yaml"))
    assert rc == 0, result
    tests = home.home / "builds" / result["build_id"] / "tests.json"
    tests.chmod(0o644)
    tests.write_text(tests.read_text().replace('"passed"', '"PASSED"'))
    rc, verified = home.json("verify", result["build_id"], "--offline")
    assert rc == 1 and verified["broken"] == "checks", verified


def test_a_rebuild_for_an_advisory_needs_its_fix_and_names_its_trigger(
        cli: Cli, tmp_path: Path) -> None:
    without = _example(tmp_path / "v1", "1")
    with_fix = _example(tmp_path / "both", "both")
    cli("advisories", "import", str(with_fix / "repo"), check=True)
    cli("registry", "start", check=True)
    trigger = {"advisories": [ADVISORY], "events": [1], "rebuild": 1,
               "previous_build": None, "previous_digest": None}
    options = {"expect_fixed": [ADVISORY], "trigger": trigger}

    failed = _submit(cli, without / "pony.yaml", options)
    assert failed["state"] == "failed"
    assert failed["error"] == ("the repositories lack the fixed version: busybox "
                               "1.35.0-1.fc40 is installed, FEDORA-2024-b7e1c3d2a9 fixes it "
                               "in 1.35.0-2.fc40")
    assert failed["checks"]["fixed"] == "failed" and failed["checks"]["tests"] is None
    assert failed["digest"] and failed["image"] is None
    assert failed["trigger"] == trigger
    assert _tag(cli) is None

    done = _submit(cli, with_fix / "pony.yaml", options)
    assert done["state"] == "done", done
    assert done["checks"]["fixed"] == "passed" and done["checks"]["tests"] == "passed"
    assert _tag(cli) == done["digest"]
    rc, traced = cli.json("trace", done["digest"])
    assert rc == 0 and traced["trigger"] == trigger
    stmt = json.loads(base64.b64decode(traced["provenance"]["payload"]))
    assert stmt["predicate"]["buildDefinition"]["externalParameters"]["trigger"] == trigger

    # The trigger is not an input: the same inputs asked for by another event reuse the image.
    other = {**trigger, "events": [2], "rebuild": 2}
    again = _submit(cli, with_fix / "pony.yaml", {"trigger": other})
    assert again["state"] == "done" and again["cached_from"] == done["build_id"]
    assert again["digest"] == done["digest"] and again["trigger"] == other
