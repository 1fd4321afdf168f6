"""The checks before publishing, without podman: the fixed check, the state they record, the
image a build replaces, the trigger in the provenance, the .gate attachment's kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from alicorn.advisories.model import Advisory, PackageRef
from alicorn.advisories.store import AdvisoryStore
from alicorn.build import checks
from alicorn.chain import attach, provenance
from alicorn.compose import Package
from alicorn.digest import Digest
from alicorn.errors import BadInput, RegistryError
from alicorn.store.builds import DONE, FAILED, BuildStore, Submission

ADVISORY = "FEDORA-2024-b7e1c3d2a9"


def _busybox(release: str) -> Package:
    return Package(type="rpm", name="busybox", version=f"1.35.0-{release}.fc40", arch="x86_64",
                   source=f"busybox-1.35.0-{release}.fc40.src.rpm",
                   purl=f"pkg:rpm/fedora/busybox@1.35.0-{release}.fc40?arch=x86_64"
                        "&distro=fedora-40")


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'alicorn.db'}"
    BuildStore(url)  # creates the schema
    fix = PackageRef(name="busybox", epoch="0", version="1.35.0", release="2.fc40",
                     arch="x86_64", src="busybox-1.35.0-2.fc40.src.rpm")
    AdvisoryStore(url).import_advisories([Advisory(
        id=ADVISORY, type="security", severity="Important", title="busybox", description="",
        issued=None, updated=None, release="Fedora 40", status="stable", packages=(fix,))],
        source="test")
    return url


def test_fixed_check_names_what_is_installed_and_what_fixes_it(db: str) -> None:
    reason = checks.check_fixed(db, [ADVISORY], [_busybox("1")], target="sha256:x")
    assert reason == ("the repositories lack the fixed version: busybox 1.35.0-1.fc40 is "
                      f"installed, {ADVISORY} fixes it in 1.35.0-2.fc40")


def test_fixed_check_passes_when_the_image_holds_the_fix(db: str) -> None:
    assert checks.check_fixed(db, [ADVISORY], [_busybox("2")], target="sha256:x") is None


def test_fixed_check_refuses_an_advisory_it_does_not_know(db: str) -> None:
    with pytest.raises(BadInput, match=r"FEDORA-2099-nope .* is not in the advisory store"):
        checks.check_fixed(db, ["FEDORA-2099-nope"], [_busybox("1")], target="sha256:x")
    with pytest.raises(BadInput, match="must be a list of advisory ids"):
        checks.check_fixed(db, ADVISORY, [_busybox("1")], target="sha256:x")


def test_state_goes_to_the_row_and_with_file_digests_to_the_record() -> None:
    state = checks.CheckState(tests=checks.PASSED, gate=checks.SKIPPED,
                              gate_summary="skipped (--skip-checks)")
    state.files["tests.json"] = "sha256:" + "1" * 64
    assert state.row() == {"fixed": None, "tests": "passed", "gate": "skipped",
                           "tests_detail": [], "gate_summary": "skipped (--skip-checks)"}
    assert state.record() == {**state.row(), "files": {"tests.json": "sha256:" + "1" * 64}}


def _finished(store: BuildStore, name: str, state: str, digest: str, published: bool) -> str:
    row = store.submit(Submission(argv=["alicorn"], source_kind="file",
                                  recipe_path=f"/r/{name}.yaml"))
    store.update(row.id, recipe_name=name)
    store.finish(row.id, state, digest=digest, published=published,
                 image_ref=f"127.0.0.1:5000/{name}@{digest}" if published else None)
    return row.id


def test_the_image_replaced_is_the_trigger_s_or_the_newest_published(db: str) -> None:
    store = BuildStore(db)
    first = _finished(store, "pony", DONE, "sha256:" + "a" * 64, True)
    second = _finished(store, "pony", DONE, "sha256:" + "b" * 64, True)
    _finished(store, "pony", FAILED, "sha256:" + "c" * 64, False)  # a candidate that failed
    _finished(store, "other", DONE, "sha256:" + "d" * 64, True)
    found = checks.previous_build(store, "pony", "new", None)
    assert found is not None and found.id == second
    found = checks.previous_build(store, "pony", "new", {"previous_build": first})
    assert found is not None and found.digest == "sha256:" + "a" * 64
    assert checks.previous_build(store, "nothing", "new", None) is None


def test_a_failed_candidate_never_stands_for_its_digest(db: str) -> None:
    store = BuildStore(db)
    digest = "sha256:" + "e" * 64
    done = _finished(store, "pony", DONE, digest, True)
    _finished(store, "pony", FAILED, digest, False)  # the same image, failed by a new gate
    assert store.resolve(digest).id == done
    assert store.find_cached("nokey", "x") is None


def _statement(trigger: dict[str, object] | None) -> dict[str, object]:
    return provenance.statement(
        image_name="r/pony", image_digest="sha256:" + "f" * 64, build_id="b",
        builder_id="alicorn/x", builder_version="x", argv=["alicorn"],
        source={"url": None, "ref": None, "commit": None},
        recipe={"path": "pony.yaml", "digest": "sha256:" + "0" * 64},
        inputs={"key": "sha256:k"}, packages=[], byproducts={}, started=None, finished=None,
        inputs_entry=None, trigger=trigger)


def test_the_trigger_is_an_external_parameter_of_the_provenance() -> None:
    trigger = {"advisories": [ADVISORY], "previous_digest": "sha256:" + "a" * 64}
    params = _statement(trigger)["predicate"]["buildDefinition"]  # type: ignore[index]
    assert params["externalParameters"]["trigger"] == trigger
    assert params["internalParameters"]["inputKey"] == "sha256:k"
    plain = _statement(None)["predicate"]["buildDefinition"]  # type: ignore[index]
    assert "trigger" not in plain["externalParameters"]


def test_gate_attachments_take_reports_and_refuse_other_kinds() -> None:
    assert attach.gate_media_type("gate/openscap.arf.xml") == attach.MEDIA_ARF_XML
    assert attach.gate_media_type("gate/openscap.html") == attach.MEDIA_HTML
    assert attach.gate_media_type("gate/gate.json") == attach.MEDIA_JSON
    assert attach.gate_media_type("gate/core") is None
    assert attach.attachment_tag(Digest("sha256:" + "9" * 64), attach.GATE) == \
        "sha256-" + "9" * 64 + ".gate"
    with pytest.raises(RegistryError, match="a gate report is one of"):
        attach._check_layer(attach.Layer(b"x", "application/octet-stream", {}), attach.GATE)


def test_statements_about_checks_name_the_image() -> None:
    stmt = checks.statement("r/pony", "sha256:" + "f" * 64, checks.TESTS_PREDICATE,
                            {"state": "passed"})
    assert stmt["subject"] == [{"name": "r/pony", "digest": {"sha256": "f" * 64}}]
    assert stmt["predicateType"] == "https://alicorn.dev/attestation/tests/v1"
    assert provenance.subject_digest(stmt) == "sha256:" + "f" * 64
