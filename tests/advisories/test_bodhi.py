"""Bodhi update records: vunnel's real (trimmed) Fedora updates, checked against vunnel's own
expected output for them (its snapshots: which CVE is fixed by which build of which update)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alicorn.advisories.bodhi import BodhiReader, parse_bodhi, split_nvr
from alicorn.advisories.model import Advisory, FeedError, PackageRef, Reference
from conftest import SHARED_DATA

FIXTURES = SHARED_DATA / "bodhi" / "test-fixtures"


@pytest.fixture(autouse=True)
def _data() -> None:
    if not FIXTURES.is_dir():
        reason = f"the shared Bodhi data is absent ({FIXTURES})"
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(reason)
        pytest.skip(reason)


def _records(folder: str) -> list[Path]:
    return sorted((FIXTURES / folder).glob("*.json"))


def _read(path: Path) -> Advisory:
    result = BodhiReader().read(path)
    assert result.warnings == ()
    (advisory,) = result.advisories
    return advisory


def test_httpd_update() -> None:
    a = _read(FIXTURES / "merge-input" / "FEDORA-2023-6d4055d482.json")
    assert a.id == "FEDORA-2023-6d4055d482"
    assert a.format == "bodhi"
    assert (a.type, a.status, a.severity, a.release) == ("security", "stable", "Medium", "F36")
    assert a.title == "httpd-2.4.55-1.fc36"  # no display_name: Bodhi's title
    assert a.description == "new version 2.4.55"
    assert a.issued == datetime(2023, 2, 3, 1, 39, 2, tzinfo=UTC)  # date_pushed
    assert a.updated == datetime(2023, 2, 3, 1, 39, 2, tzinfo=UTC)
    assert a.packages == (PackageRef("httpd", "0", "2.4.55", "1.fc36", "",
                                     src="httpd-2.4.55-1.fc36.src.rpm"),)
    assert a.cves == ("CVE-2022-37436", "CVE-2006-20001", "CVE-2022-36760")
    assert a.bugzilla_ids == ("2162094", "2162098", "2162100")
    assert a.references[0] == Reference(
        "self", "FEDORA-2023-6d4055d482",
        "https://bodhi.fedoraproject.org/updates/FEDORA-2023-6d4055d482",
        "httpd-2.4.55-1.fc36")
    assert a.references[1] == Reference(
        "bugzilla", "2162094", "https://bugzilla.redhat.com/show_bug.cgi?id=2162094",
        "CVE-2022-37436 httpd: mod_proxy: HTTP response splitting [fedora-all]")


def test_display_name_epoch_and_severity() -> None:
    java = _read(FIXTURES / "input" / "FEDORA-2025-ddd4444444.json")
    assert java.title == "java-17-openjdk security update"
    assert java.severity == "Important"
    assert java.packages[0].evr == "1:17.0.14.0.7-1.fc40"
    docs = _read(FIXTURES / "input" / "FEDORA-2025-aaa1111111.json")
    assert docs.packages[0].epoch == "0"  # "epoch": null
    drupal = _read(FIXTURES / "merge-input" / "FEDORA-2014-15583.json")
    assert drupal.severity is None  # "unspecified"
    assert drupal.issued == datetime(2014, 12, 6, 10, 5, 3, tzinfo=UTC)
    assert drupal.updated == datetime(2014, 12, 6, 10, 5, 3, tzinfo=UTC)
    # the same CVE in two bugs is one CVE
    assert drupal.cves == ("CVE-2012-6662", "CVE-2014-9015", "CVE-2014-9016")
    expat = _read(FIXTURES / "input" / "FEDORA-2025-bbb2222222.json")
    assert expat.cves == ("CVE-2024-8176",)  # named only in the display name


def test_two_builds_and_a_zero_version() -> None:
    cross = _read(FIXTURES / "merge-input" / "FEDORA-EPEL-2017-a8886eb42e.json")
    assert cross.release == "EPEL-7"
    assert [p.nevra for p in cross.packages] == ["cross-binutils-0:2.27-9.el7.1.",
                                                 "cross-gcc-0:4.8.5-16.el7.1."]
    dokuwiki = _read(FIXTURES / "merge-input" / "FEDORA-2015-3186.json")
    assert dokuwiki.packages[0].evr == "0:0-0.24.20140929c.fc21"


def _snapshots() -> dict[tuple[str, str], list[dict[str, Any]]]:
    found = {}
    for path in sorted((FIXTURES / "snapshots").glob("*/*/*.json")):
        vulnerability = json.loads(path.read_text())["item"]["Vulnerability"]
        found[(vulnerability["NamespaceName"], vulnerability["Name"])] = vulnerability["FixedIn"]
    return found


@pytest.mark.parametrize("folder", ["input", "merge-input"])
def test_agrees_with_vunnels_expected_output(folder: str) -> None:
    snapshots = {k: v for k, v in _snapshots().items()
                 if (k[0] == "fedora:40") == (folder == "input")}
    by_id: dict[str, Advisory] = {}
    ours: set[tuple[str, str]] = set()
    for path in _records(folder):
        advisory = _read(path)
        by_id[advisory.id] = advisory
        namespace = f"fedora:{json.loads(path.read_text())['release']['version']}"
        ours.update((namespace, cve) for cve in advisory.cves)
    assert ours == set(snapshots)
    for (_, cve), fixed_in in snapshots.items():
        for fix in fixed_in:
            (summary,) = fix["VendorAdvisory"]["AdvisorySummary"]
            advisory = by_id[summary["ID"]]
            assert cve in advisory.cves
            assert (fix["Name"], fix["Version"]) in {(p.name, p.evr) for p in advisory.packages}


def test_api_pages_and_single_update_answers() -> None:
    records = [json.loads(p.read_text()) for p in _records("merge-input")]
    page = {"updates": records, "page": 1, "pages": 1, "rows_per_page": 20, "total": 6}
    result = parse_bodhi(json.dumps(page).encode(), source="page.json")
    assert result.warnings == ()
    assert [a.id for a in result.advisories] == [r["alias"] for r in records]
    single = parse_bodhi(json.dumps({"update": records[2], "can_edit": False}).encode(),
                         source="one.json")
    assert single.advisories[0] == parse_bodhi(json.dumps(records[2]).encode(),
                                               source="one.json").advisories[0]


def test_bad_records_are_warnings() -> None:
    base = json.loads((FIXTURES / "merge-input" / "FEDORA-2023-6d4055d482.json").read_text())
    broken = {**base, "date_pushed": "the day after", "date_modified": None,
              "builds": [{"nvr": "nodashes", "type": "rpm", "epoch": 0},
                         {"nvr": "mod-1-2", "type": "module"}]}
    no_alias = {k: v for k, v in base.items() if k != "alias"}
    result = parse_bodhi(json.dumps([broken, no_alias]).encode(), source="b.json")
    (a,) = result.advisories
    assert a.issued == datetime(2023, 1, 25, 20, 12, 3, tzinfo=UTC)  # date_submitted
    assert a.packages == ()
    label = "b.json: FEDORA-2023-6d4055d482"
    assert result.warnings == (
        f"{label}: unreadable date_pushed 'the day after'; left empty",
        f"{label}: build {{'nvr': 'nodashes', 'type': 'rpm', 'epoch': 0}} has no "
        "name-version-release; skipped",
        f"{label}: build mod-1-2 is of type 'module', not rpm; skipped",
        f"{label}: no usable builds; the update names no package",
        'b.json: update #2 has no "alias"; skipped',
    )


def test_not_bodhi_is_a_feed_error() -> None:
    with pytest.raises(FeedError, match="not a Bodhi update record") as e:
        parse_bodhi(b'{"id": "x"}', source="x.json")
    assert e.value.where == "x.json"
    with pytest.raises(FeedError, match="malformed JSON"):
        parse_bodhi(b'{"alias": "FEDORA-2023-1", ', source="cut.json")


def test_split_nvr() -> None:
    assert split_nvr("java-17-openjdk-17.0.14.0.7-1.fc40") == (
        "java-17-openjdk", "17.0.14.0.7", "1.fc40")
    assert split_nvr("a-b") is None
    assert split_nvr("-1-2") is None
