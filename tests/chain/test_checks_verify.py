"""`alicorn verify` over the checks before publishing: the tests' and gate's results are part
of the chain (sealed files, database row, signed statements, the registry's attachments), and
each change to one of them is named as the broken link."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, Cli, require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    require("rpmbuild", "createrepo_c", "dnf", "podman", "skopeo", "docker-registry")
    c = Cli(tmp_path_factory.mktemp("checks-chain") / "home")
    yield c
    c.down()


@pytest.fixture(scope="module")
def built(home: Cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("src") / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", d, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(d / "build-repo"), str(d / "repo"), "--version", "1"], check=True,
                   capture_output=True)
    rc, result = home.json("build", str(d / "pony.yaml"))
    assert rc == 0, result
    assert result["checks"]["tests"] == "passed" and result["checks"]["gate"] == "passed"
    return result


def _verify(home: Cli, ident: str, *extra: str) -> tuple[int, dict[str, Any]]:
    return home.json("verify", ident, *extra)


def test_the_checks_are_a_link_of_the_chain(home: Cli, built: dict[str, Any]) -> None:
    rc, report = _verify(home, built["digest"])
    assert rc == 0 and report["verified"], report
    links = {c["link"]: c["detail"] for c in report["checks"]}
    assert "tests passed, gate passed" in links["checks"]
    assert "statements signed" in links["checks"]


def test_an_edited_gate_result_is_named(home: Cli, built: dict[str, Any]) -> None:
    gate = home.home / "builds" / built["build_id"] / "gate.json"
    original = gate.read_bytes()
    os.chmod(gate, 0o644)
    gate.write_bytes(original.replace(b'"state":"passed"', b'"state":"waived"'))
    try:
        rc, report = _verify(home, built["digest"], "--offline")
        assert rc == 1 and report["broken"] == "checks", report
        assert "gate.json hashes to" in json.dumps(report["checks"])
    finally:
        gate.write_bytes(original)
        os.chmod(gate, 0o444)
    assert _verify(home, built["digest"], "--offline")[0] == 0


def test_an_edited_checks_column_is_named(home: Cli, built: dict[str, Any]) -> None:
    with sqlite3.connect(home.home / "alicorn.db") as db:
        (saved,) = db.execute("SELECT checks FROM builds WHERE id=?",
                              (built["build_id"],)).fetchone()
        edited = json.loads(saved)
        edited["tests"] = "skipped"
        db.execute("UPDATE builds SET checks=? WHERE id=?",
                   (json.dumps(edited), built["build_id"]))
    try:
        rc, report = _verify(home, built["digest"], "--offline")
        assert rc == 1 and report["broken"] == "database", report
        assert "checks differs" in json.dumps(report["checks"])
    finally:
        with sqlite3.connect(home.home / "alicorn.db") as db:
            db.execute("UPDATE builds SET checks=? WHERE id=?", (saved, built["build_id"]))
    assert _verify(home, built["digest"], "--offline")[0] == 0


def test_a_replaced_gate_attachment_is_named(home: Cli, built: dict[str, Any]) -> None:
    from alicorn.chain import attach
    from alicorn.digest import Digest
    from alicorn.registry.client import RegistryClient

    addr, _, rest = built["image"].partition("/")
    name = rest.split("@")[0]
    client = RegistryClient(addr)
    digest = Digest(built["digest"])
    original = attach.fetch_attachment(client, name, digest, attach.GATE)
    assert any(layer.annotations.get(attach.ANNOTATION_TITLE) == "gate.json"
               for layer in original)
    attach.attach(client, name, digest, attach.GATE,
                  [(b'{"passed": true}', attach.MEDIA_GATE_JSON, {})])
    try:
        rc, report = _verify(home, built["digest"])
        assert rc == 1 and report["broken"] == "registry", report
        assert ".gate attachment lacks" in json.dumps(report["checks"])
    finally:
        attach.attach(client, name, digest, attach.GATE, original)
    assert _verify(home, built["digest"])[0] == 0


def test_an_evidence_bundle_carries_the_results(home: Cli, built: dict[str, Any],
                                                tmp_path: Path) -> None:
    bundle = tmp_path / "evidence.json"
    home("trace", built["digest"], "--offline", "--bundle", str(bundle), check=True)
    elsewhere = Cli(tmp_path / "elsewhere")
    rc, report = elsewhere.json("verify", "--bundle", str(bundle))
    assert rc == 0 and report["verified"], report
    assert "checks" in [c["link"] for c in report["checks"]]
    data = json.loads(bundle.read_text())
    tests = json.loads(base64.b64decode(data["files"]["tests.json"]))
    tests["state"] = "passed!"
    data["files"]["tests.json"] = base64.b64encode(json.dumps(tests).encode()).decode()
    (tmp_path / "tampered.json").write_text(json.dumps(data))
    rc, report = elsewhere.json("verify", "--bundle", str(tmp_path / "tampered.json"))
    assert rc == 1 and report["broken"] == "checks", report
