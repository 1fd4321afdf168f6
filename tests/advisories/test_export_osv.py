"""OSV from advisories, read back with Alicorn's own OSV reader: the same packages and fixes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alicorn.advisories.export_osv import export, render, rpm_ecosystem_of, write_directory
from alicorn.advisories.model import Advisory, Affected, PackageRef, Range, Reference
from alicorn.advisories.osv import parse_osv
from alicorn.advisories.rubysec import parse_rubysec
from alicorn.advisories.updateinfo import read_repodata
from conftest import EXAMPLES, SHARED_DATA, require

T0 = datetime(2024, 4, 1, tzinfo=UTC)
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
EVENT_KINDS = {"introduced", "fixed", "last_affected", "limit"}


def _rpm(ident: str, release: str | None, *packages: PackageRef) -> Advisory:
    return Advisory(id=ident, type="security", severity="Important", title="t",
                    description="d", issued=T0, updated=T0, release=release, status="stable",
                    references=(Reference("cve", "CVE-2024-1", "https://cve.org/1"),
                                Reference("bugzilla", "77", "https://bugzilla.redhat.com/77")),
                    packages=packages)


def _check_shape(record: dict[str, Any]) -> None:
    """The parts of OSV 1.6's schema that a generator can get wrong."""
    assert record["schema_version"] == "1.6.0"
    assert isinstance(record["id"], str) and record["id"]
    assert RFC3339.match(record["modified"]), record["modified"]
    if "published" in record:
        assert RFC3339.match(record["published"])
    assert set(record) <= {"schema_version", "id", "modified", "published", "withdrawn",
                           "aliases", "related", "summary", "details", "severity", "affected",
                           "references", "credits", "database_specific"}
    for entry in record["affected"]:
        assert set(entry["package"]) >= {"ecosystem", "name"}
        for r in entry.get("ranges", []):
            assert r["type"] in {"ECOSYSTEM", "SEMVER", "GIT"}
            assert r["events"] and all(len(e) == 1 and set(e) <= EVENT_KINDS
                                       for e in r["events"])
    for ref in record.get("references", []):
        assert ref["type"] in {"ADVISORY", "ARTICLE", "DETECTION", "DISCUSSION", "REPORT",
                               "FIX", "INTRODUCED", "GIT", "PACKAGE", "EVIDENCE", "WEB"}


def test_the_pony_advisory_round_trips_through_the_osv_reader(tmp_path: Path) -> None:
    require("rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    repo = tmp_path / "repo"
    subprocess.run([str(EXAMPLES / "pony/rpm/build-repo"), str(repo)], check=True,
                   capture_output=True)
    (original,) = read_repodata(repo)
    data = render([original])
    (record,) = json.loads(data)
    _check_shape(record)
    assert record["affected"] == [{
        "package": {"ecosystem": "Fedora:40", "name": "busybox"},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"},
                                                     {"fixed": "1.35.0-2.fc40"}]}],
        "ecosystem_specific": {"arches": ["x86_64"]}}]
    assert record["aliases"] == ["CVE-2022-48174"]

    result = parse_osv(data, source="export.json")
    assert result.warnings == ()
    (back,) = result.advisories
    assert back.id == original.id and back.severity == "Important"
    assert back.cves == original.cves
    assert [(a.ecosystem, a.name, a.fixed_versions) for a in back.affected] == \
        [("Fedora:40", "busybox", ("1.35.0-2.fc40",))]
    assert back.updated == original.updated and back.issued == original.issued
    assert back.title == original.title and back.description == original.description


def test_rpm_ecosystems_epochs_and_modules() -> None:
    a = _rpm("RHSA-2024:1", "Red Hat Enterprise Linux 9",
             PackageRef("openssl", "1", "3.0.7", "24.el9", "x86_64"),
             PackageRef("openssl", "1", "3.0.7", "24.el9", "aarch64"),
             PackageRef("nodejs", "1", "20", "1.module", "x86_64", modules=("nodejs:20",)))
    (record,) = export([a]).records
    assert [(e["package"], e["ranges"][0]["events"][1], e["ecosystem_specific"])
            for e in record["affected"]] == [
        ({"ecosystem": "Red Hat:enterprise_linux:9", "name": "openssl"},
         {"fixed": "1:3.0.7-24.el9"}, {"arches": ["x86_64", "aarch64"]})]
    assert {r["type"] for r in record["references"]} == {"ADVISORY", "REPORT"}
    assert rpm_ecosystem_of(_rpm("FEDORA-2024-1", None)) == "Fedora"
    assert rpm_ecosystem_of(_rpm("SLSA-2011:1", "Scientific Linux")) is None


def test_what_osv_cannot_say_is_left_out_and_named() -> None:
    unknown = _rpm("SLSA-2011:1", "Scientific Linux", PackageRef("bash", "0", "4", "1", "i686"))
    modules = _rpm("FEDORA-M", "Fedora 39",
                   PackageRef("n", "0", "1", "1", "x86_64", modules=("n:1",)))
    withdrawn = Advisory(id="GHSA-w", type="security", severity=None, title="", description="",
                         issued=T0, updated=T0, release=None, status=None, format="osv",
                         withdrawn=T0, affected=(Affected("PyPI", "x"),))
    result = export([unknown, modules, withdrawn])
    assert result.records == ()
    assert [s.split(": ")[0] for s in result.skipped] == ["FEDORA-M", "GHSA-w", "SLSA-2011:1"]
    assert "--rpm-ecosystem" in result.skipped[2]
    # Named by the caller, the release-less distribution is exported.
    (record,) = export([unknown], rpm_ecosystem="Scientific Linux").records
    assert record["affected"][0]["package"]["ecosystem"] == "Scientific Linux"


def _shared(kind: str, pattern: str, limit: int) -> list[Path]:
    files = sorted((SHARED_DATA / kind).rglob(pattern))[:limit]
    if not files:
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(f"the shared advisory data is missing at {SHARED_DATA}")
        pytest.skip(f"the shared advisory data is not at {SHARED_DATA}")
    return files


def _affected_key(a: Advisory) -> list[tuple[str, str, tuple[Range, ...], tuple[str, ...]]]:
    return [(x.ecosystem, x.name, x.ranges, x.versions) for x in a.affected]


def test_ecosystem_advisories_round_trip_as_they_were() -> None:
    files = _shared("ghsa", "*.json", 100) + _shared("osv/pypi", "*.yaml", 300)
    originals = [a for f in files for a in parse_osv(f.read_bytes(), source=str(f)).advisories
                 if a.withdrawn is None]
    assert len(originals) > 300
    data = render(originals)
    records = json.loads(data)
    assert len(records) == len(originals)
    for record in records:
        _check_shape(record)
    back = {a.id: a for a in parse_osv(data, source="export.json").advisories}
    for original in originals:
        again = back[original.id]
        assert _affected_key(again) == _affected_key(original), original.id
        assert set(again.cves) == set(original.cves), original.id
        assert again.updated == original.updated and again.title == original.title
        assert again.severity == original.severity, original.id


def test_rubysec_requirements_are_kept_in_database_specific() -> None:
    path = _shared("rubysec/gems", "*.yml", 1)[0]
    (advisory,) = parse_rubysec(path.read_bytes(), source=str(path)).advisories
    (record,) = export([advisory]).records
    _check_shape(record)
    (entry,) = record["affected"]
    assert entry["package"] == {"ecosystem": "RubyGems", "name": advisory.affected[0].name}
    kept = entry.get("database_specific", {}).get("alicorn", {})
    assert kept.get("unaffected", []) == list(advisory.affected[0].unaffected)


def test_one_file_per_advisory_stays_in_the_directory(tmp_path: Path) -> None:
    def osv(ident: str, fmt: str = "osv") -> Advisory:
        return Advisory(id=ident, type="security", severity=None, title="", description="",
                        issued=None, updated=T0, release=None, status=None, format=fmt,
                        affected=(Affected("npm", "lodash", (Range("SEMVER", (
                            ("introduced", "0"), ("fixed", "4.17.21"))),)),))

    result = export([osv("../../evil"), osv("GHSA/a"), osv("GHSA_a"), osv(".hidden"),
                     osv("GHSA_a", "rubysec")])
    # One id in two feeds is exported once (the preferred feed's record), and said so.
    assert result.skipped == ("GHSA_a: the rubysec record; the osv one is exported",)
    out = tmp_path / "out"
    paths = write_directory(result, out)
    assert sorted(p.name for p in paths) == ["GHSA_a.2.json", "GHSA_a.json", "_.._evil.json",
                                             "hidden.json"]
    assert all(p.parent == out for p in paths)
    assert not (tmp_path / "evil.json").exists()
    for p in paths:
        parse_osv(p.read_bytes(), source=str(p))


def test_hostile_text_stays_valid_utf8_json() -> None:
    evil = Advisory(id="GHSA-x", type="security", severity=None, title="\ud800 lone",
                    description="ok \u2603", issued=None, updated=None, release=None,
                    status=None, format="osv", affected=(Affected("PyPI", "x"),))
    data = render([evil], timestamp=T0)
    text = data.decode("utf-8")  # strict: valid UTF-8
    (record,) = json.loads(text)
    assert record["summary"] == "\ud800 lone" and record["details"] == "ok \u2603"
    assert record["modified"] == "2024-04-01T00:00:00Z"  # no date: the export's timestamp
