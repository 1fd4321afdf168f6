"""Walking back from an image digest, and catching every kind of tampering on the way.

Real builds (the RPM pony, about a second each) in one ALICORN_HOME, the real registry, the real
command line.  Each tamper test changes one thing, checks that `verify` names the broken link,
and puts the thing back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, Cli, git_repo, require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    require("rpmbuild", "createrepo_c", "dnf", "skopeo", "docker-registry", "git")
    c = Cli(tmp_path_factory.mktemp("chain") / "home")
    yield c
    c.down()


@pytest.fixture(scope="module")
def pony_git(home: Cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    src = tmp_path_factory.mktemp("src") / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", src, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(src / "build-repo"), str(home.home.parent / "repo"), "--version", "1"],
                   check=True, capture_output=True)
    text = (src / "pony.yaml").read_text().replace("url: repo", f"url: {home.home.parent}/repo")
    (src / "pony.yaml").write_text(text)
    commit = git_repo(src, src.parent / "git")
    rc, result = home.json("build", f"file://{src.parent / 'git'}", "--ref", "main",
                           "--recipe", "pony.yaml")
    assert rc == 0, result
    result["commit"] = commit
    return result


def _verify(home: Cli, ident: str, *extra: str) -> tuple[int, dict[str, Any]]:
    return home.json("verify", ident, *extra)


@contextlib.contextmanager
def altered(path: Path, change: Any) -> Iterator[None]:
    """Change the file at ``path`` with ``change(bytes) -> bytes``, then put it back."""
    original = path.read_bytes()
    mode = path.stat().st_mode
    os.chmod(path, 0o644)
    path.write_bytes(change(original))
    try:
        yield
    finally:
        path.write_bytes(original)
        os.chmod(path, mode)


def _flip(data: bytes, at: int | None = None) -> bytes:
    i = len(data) // 2 if at is None else at
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def test_trace_reaches_every_input_from_the_digest_alone(home: Cli,
                                                         pony_git: dict[str, Any]) -> None:
    rc, trace = home.json("trace", pony_git["digest"])
    assert rc == 0, trace
    assert trace["digest"] == pony_git["digest"] and trace["verified"] is True
    assert trace["argv"][:2] == ["alicorn", "build"] and "--ref" in trace["argv"]
    assert trace["source"] == {"url": trace["source"]["url"], "ref": "main",
                               "commit": pony_git["commit"]}
    assert trace["recipe"]["digest"].startswith("sha256:")
    assert "pony-filesystem" in trace["recipe"]["content"]
    assert {p["name"]: (p["version"], p["type"]) for p in trace["packages"]} == {
        "busybox": ("1.35.0-1.fc40", "rpm"), "pony-content": ("1.0-1.fc40", "rpm"),
        "pony-filesystem": ("3.18-1.fc40", "rpm"), "fedora-release-pony": ("3.18-1.fc40", "rpm")}
    log = Path(trace["log"]["path"]).read_bytes()
    import hashlib
    assert trace["log"]["digest"] == "sha256:" + hashlib.sha256(log).hexdigest()
    env = trace["provenance"]
    assert env["payloadType"] == "application/vnd.in-toto+json" and env["signatures"]
    import base64
    stmt = json.loads(base64.b64decode(env["payload"]))
    assert stmt["predicateType"] == "https://slsa.dev/provenance/v1"
    assert stmt["subject"][0]["digest"]["sha256"] == pony_git["digest"].split(":")[1]
    deps = stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {"gitCommit": pony_git["commit"]} in [d["digest"] for d in deps if "digest" in d]
    with_log = home("trace", pony_git["digest"], "--log", "--offline", check=True).stdout
    assert "the build log ends here" in with_log


def test_trace_of_a_recipe_file_has_no_source(home: Cli, pony_git: dict[str, Any],
                                              tmp_path: Path) -> None:
    d = tmp_path / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", d, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(d / "build-repo"), str(d / "repo"), "--version", "1"], check=True,
                   capture_output=True)
    rc, built = home.json("build", str(d / "pony.yaml"), "--skip-checks")
    assert rc == 0, built
    rc, trace = home.json("trace", built["build_id"])
    assert rc == 0 and trace["source"] is None and trace["verified"] is True


def test_verify_holds_for_an_untouched_build(home: Cli, pony_git: dict[str, Any]) -> None:
    rc, report = _verify(home, pony_git["digest"])
    assert rc == 0 and report["verified"], report
    assert [c["link"] for c in report["checks"]] == [
        "record", "transparency log", "database", "provenance", "build log", "SBOM", "checks",
        "image", "registry"]
    rc, by_ref = _verify(home, pony_git["image"])
    assert rc == 0 and by_ref["build_id"] == pony_git["build_id"]


@pytest.mark.parametrize(("name", "link"), [
    ("record.json", "record"),
    ("build.log", "build log"),
    ("publish.log", "build log"),
    ("sbom.spdx.json", "SBOM"),
    ("sbom.cdx.json", "SBOM"),
    ("provenance.dsse.json", "provenance"),
])
def test_one_changed_byte_in_a_stored_file_is_named(home: Cli, pony_git: dict[str, Any],
                                                    name: str, link: str) -> None:
    path = home.home / "builds" / pony_git["build_id"] / name
    with altered(path, _flip):
        rc, report = _verify(home, pony_git["digest"])
    assert rc == 1 and report["verified"] is False
    assert report["broken"] == link, report["checks"]
    assert _verify(home, pony_git["digest"])[0] == 0


def test_a_changed_layer_is_named(home: Cli, pony_git: dict[str, Any]) -> None:
    layout = home.home / "images" / pony_git["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / pony_git["digest"].split(":")[1])
                          .read_bytes())
    layer = layout / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    with altered(layer, lambda b: _flip(b, len(b) - 100)):
        rc, report = _verify(home, pony_git["digest"], "--offline")
    assert rc == 1 and report["broken"] == "image"
    assert "layer 0" in report["checks"][-1]["detail"]


def _db(home: Cli) -> sqlite3.Connection:
    return sqlite3.connect(home.home / "alicorn.db")


def test_an_edited_database_row_is_named(home: Cli, pony_git: dict[str, Any]) -> None:
    with _db(home) as db:
        (argv,) = db.execute("SELECT argv FROM builds WHERE id=?",
                             (pony_git["build_id"],)).fetchone()
        db.execute("UPDATE builds SET argv=? WHERE id=?",
                   (json.dumps(["alicorn", "build", "evil.yaml"]), pony_git["build_id"]))
    try:
        rc, report = _verify(home, pony_git["digest"], "--offline")
        assert rc == 1 and report["broken"] == "database"
        assert "argv" in next(c for c in report["checks"] if not c["ok"])["detail"]
    finally:
        with _db(home) as db:
            db.execute("UPDATE builds SET argv=? WHERE id=?", (argv, pony_git["build_id"]))
    assert _verify(home, pony_git["digest"], "--offline")[0] == 0


def test_log_entries_cannot_be_edited_and_removal_is_detected(home: Cli,
                                                              pony_git: dict[str, Any],
                                                              tmp_path: Path) -> None:
    with _db(home) as db, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM translog_entries WHERE idx = 0")
    backup = tmp_path / "backup.db"
    with _db(home) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)  # the WAL's content too, which a file copy would miss
    try:
        with _db(home) as db:
            triggers = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='trigger'")]
            for t in triggers:
                db.execute(f"DROP TRIGGER {t}")
            db.execute("UPDATE translog_entries SET data = CAST(replace(CAST(data AS TEXT), "
                       "'pony', 'p0ny') AS BLOB) WHERE idx = 0")
        rc, report = _verify(home, pony_git["digest"], "--offline")
        assert rc == 1 and report["broken"] == "transparency log", report["checks"]
        check = home("log", "check")
        assert check.returncode == 1 and "entry 0" in check.stderr
    finally:
        with sqlite3.connect(backup) as copy, _db(home) as live:
            copy.backup(live)
    assert _verify(home, pony_git["digest"], "--offline")[0] == 0


def test_a_replaced_signing_key_is_detected(home: Cli, pony_git: dict[str, Any],
                                            tmp_path: Path) -> None:
    keys = home.home / "keys"
    saved = tmp_path / "keys"
    shutil.copytree(keys, saved, ignore=shutil.ignore_patterns("S.gpg-agent*"))
    try:
        shutil.rmtree(keys)
        from alicorn.chain.keys import KeyRing
        KeyRing(keys).current()  # an attacker's fresh key in place of the service's
        rc, report = _verify(home, pony_git["digest"], "--offline")
        assert rc == 1 and report["broken"] == "transparency log"
        assert "not one of this build service's keys" in json.dumps(report["checks"])
    finally:
        shutil.rmtree(keys, ignore_errors=True)
        shutil.copytree(saved, keys)
        os.chmod(keys / "gpg", 0o700)
    assert _verify(home, pony_git["digest"], "--offline")[0] == 0


def test_an_image_signed_by_another_key_is_refused(home: Cli, pony_git: dict[str, Any],
                                                   tmp_path: Path) -> None:
    from alicorn.chain import attach
    from alicorn.chain.keys import KeyRing
    from alicorn.chain.sigstore import signature_layer, signature_payload
    from alicorn.digest import Digest
    from alicorn.registry.client import RegistryClient

    addr, _, rest = pony_git["image"].partition("/")
    name = rest.split("@")[0]
    client = RegistryClient(addr)
    digest = Digest(pony_git["digest"])
    original = attach.fetch_attachment(client, name, digest, attach.SIG)
    other = KeyRing(tmp_path / "other").current()
    forged = signature_layer(signature_payload(f"{addr}/{name}:latest", digest), other)
    attach.attach(client, name, digest, attach.SIG, [forged])
    try:
        rc, report = _verify(home, pony_git["digest"])
        assert rc == 1 and report["broken"] == "registry", report["checks"]
    finally:
        attach.attach(client, name, digest, attach.SIG, original)
    assert _verify(home, pony_git["digest"])[0] == 0


def test_witnessed_heads_must_stay_prefixes(home: Cli, pony_git: dict[str, Any],
                                            tmp_path: Path) -> None:
    head = json.loads(home("log", "head", check=True).stdout)
    witness = tmp_path / "witness.json"
    witness.write_text(json.dumps([head]))
    assert _verify(home, pony_git["digest"], "--offline", "--witness", str(witness))[0] == 0
    # A head of the same size with another root: someone showed the witness another log.
    forged = dict(head, root_hash="0" * 64)
    witness.write_text(json.dumps([forged]))
    rc, report = _verify(home, pony_git["digest"], "--offline", "--witness", str(witness))
    assert rc == 1 and report["broken"] == "transparency log"


def test_rebuild_compares_bit_for_bit(home: Cli, pony_git: dict[str, Any]) -> None:
    rc, report = _verify(home, pony_git["digest"], "--offline", "--rebuild")
    assert rc == 0, report["checks"]
    assert report["checks"][-1]["link"] == "rebuild"
    assert "same digest" in report["checks"][-1]["detail"]


def test_rotation_keeps_old_builds_verifiable(home: Cli, pony_git: dict[str, Any],
                                              tmp_path: Path) -> None:
    before = home("keys", "list", check=True).stdout
    home("keys", "rotate", check=True)
    after = home("keys", "list", check=True).stdout
    assert "retired" in after and after.count("\n") == before.count("\n") + 1
    assert _verify(home, pony_git["digest"], "--offline")[0] == 0


def test_an_evidence_bundle_verifies_offline_with_the_pinned_key(
        home: Cli, pony_git: dict[str, Any], tmp_path: Path) -> None:
    import base64

    bundle = tmp_path / "evidence.json"
    home("trace", pony_git["digest"], "--offline", "--bundle", str(bundle), check=True)
    home("keys", "export", str(tmp_path / "pub"), check=True)
    pems = [str(p) for p in (tmp_path / "pub").glob("*.pem")]
    assert (tmp_path / "pub" / "tree-heads.json").is_file()
    elsewhere = Cli(tmp_path / "no-store")  # another machine: no store, no registry
    keys = [a for pem in pems for a in ("--key", pem)]
    rc, report = elsewhere.json("verify", pony_git["digest"], "--bundle", str(bundle), *keys)
    assert rc == 0 and report["verified"], report
    assert not (tmp_path / "no-store" / "alicorn.db").exists()

    data = json.loads(bundle.read_text())
    log = base64.b64decode(data["files"]["build.log"]) + b"an extra line\n"
    data["files"]["build.log"] = base64.b64encode(log).decode()
    (tmp_path / "tampered.json").write_text(json.dumps(data))
    rc, report = elsewhere.json("verify", "--bundle", str(tmp_path / "tampered.json"), *keys)
    assert rc == 1 and report["broken"] == "build log"

    from alicorn.chain.keys import KeyRing
    other = KeyRing(tmp_path / "other").current()
    (tmp_path / "other.pem").write_text(other.public.pem)
    rc, report = elsewhere.json("verify", "--bundle", str(bundle), "--key",
                                str(tmp_path / "other.pem"))
    assert rc == 1 and report["broken"] == "transparency log"
    assert "not one of the trusted keys" in report["checks"][0]["detail"]


def test_every_build_of_one_image_stays_verifiable(home: Cli, pony_git: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """A rebuild of the same image adds its attestation next to the earlier build's."""
    url = json.loads(home("show", pony_git["build_id"], "--json",
                          check=True).stdout)["source"]["url"]
    rc, again = home.json("build", url, "--ref", "main", "--recipe", "pony.yaml", "--no-cache")
    assert rc == 0 and again["digest"] == pony_git["digest"], again
    for build in (pony_git["build_id"], again["build_id"]):
        rc, report = home.json("verify", build)
        assert rc == 0, report["checks"]
