"""rubysec: the whole Ruby Advisory Database, and its oddities."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alicorn.advisories.model import Affected, FeedError, Range, Reference
from alicorn.advisories.rubysec import PATCHED, RubysecReader, parse_rubysec, patched_fix
from conftest import SHARED_DATA

GEMS = SHARED_DATA / "rubysec" / "gems"


@pytest.fixture(autouse=True)
def _data() -> None:
    if not GEMS.is_dir():
        reason = f"the shared rubysec data is absent ({GEMS})"
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(reason)
        pytest.skip(reason)


def _one(gem: str, stem: str):  # type: ignore[no-untyped-def]
    result = RubysecReader().read(GEMS / gem / f"{stem}.yml")
    assert result.warnings == ()
    (advisory,) = result.advisories
    return advisory


def test_every_file_loads() -> None:
    files = sorted(GEMS.glob("*/*.yml"))
    assert len(files) == 1234
    reader = RubysecReader()
    ids = set()
    for path in files:
        result = reader.read(path)
        assert result.warnings == (), path
        (a,) = result.advisories
        assert a.id == f"{path.parent.name}/{path.stem}"
        assert a.format == "rubysec"
        assert a.issued is not None and a.title and a.description
        (affected,) = a.affected
        assert (affected.ecosystem, affected.name) == ("RubyGems", path.parent.name)
        assert path.stem in a.aliases
        ids.add(a.id)
    # unique, although 45 stems (and their GHSA ids) name files of two or more gems
    assert len(ids) == 1234
    stems = [p.stem for p in files]
    assert len(set(stems)) == 1174
    assert sum(1 for s in set(stems) if stems.count(s) > 1) == 45


def test_nokogiri_libxml2_advisory() -> None:
    a = _one("nokogiri", "CVE-2015-1819")
    assert a.id == "nokogiri/CVE-2015-1819"
    assert a.aliases == ("CVE-2015-1819", "GHSA-q7wx-62r7-j2x7")
    assert a.title == "Nokogiri gem contains several vulnerabilities in libxml2 and libxslt"
    assert a.issued == datetime(2015, 4, 14, tzinfo=UTC)
    (affected,) = a.affected
    assert affected == Affected(
        ecosystem="RubyGems", name="nokogiri",
        ranges=(Range(PATCHED, (("fixed", "1.6.6.4"), ("fixed", "1.6.7.rc4"))),),
        unaffected=("~> 1.6.6.4", ">= 1.6.7.rc4"))
    assert affected.fixed_versions == ("1.6.6.4", "1.6.7.rc4")
    # the bundled libxml2's CVEs, listed as related, are among the advisory's CVEs
    assert a.cves == ("CVE-2015-1819", "CVE-2015-7941", "CVE-2015-7942", "CVE-2015-7995",
                      "CVE-2015-8035")
    assert a.references[0] == Reference(
        type="advisory", id="", href="https://github.com/sparklemotion/nokogiri/issues/1374")
    assert a.severity is None  # no cvss score in this file


def test_cvss_score_gives_the_severity() -> None:
    a = _one("nokogiri", "CVE-2012-6685")
    assert a.aliases == ("CVE-2012-6685", "GHSA-6wj9-77wq-jq7p", "OSVDB-90946")
    assert a.severity == "High"  # cvss_v3: 7.5
    assert a.affected[0].unaffected == (">= 1.5.4",)
    assert a.affected[0].fixed_versions == ("1.5.4",)


def test_patched_and_unaffected_with_compound_requirements() -> None:
    a = _one("actiontext", "CVE-2024-47888")
    (affected,) = a.affected
    assert affected.unaffected == ("~> 6.1.7.9", "~> 7.0.8, >= 7.0.8.5",
                                   "~> 7.1.4, >= 7.1.4.1", ">= 7.2.1.1", "< 6.0.0")
    assert affected.fixed_versions == ("6.1.7.9", "7.0.8.5", "7.1.4.1", "7.2.1.1")


def test_a_ghsa_named_file_with_a_cve() -> None:
    a = _one("kobako", "GHSA-7pwq-q9jf-539h")
    assert a.id == "kobako/GHSA-7pwq-q9jf-539h"
    assert a.cves == ("CVE-2026-55107",)
    assert a.severity == "Critical"  # cvss_v3: 10.0


def test_same_cve_in_two_gems_stays_two_advisories() -> None:
    pack = _one("actionpack", "CVE-2009-3009")
    support = _one("activesupport", "CVE-2009-3009")
    assert (pack.id, support.id) == ("actionpack/CVE-2009-3009", "activesupport/CVE-2009-3009")
    assert pack.aliases == support.aliases


def test_osvdb_only_file() -> None:
    a = _one("json", "OSVDB-101157")
    assert a.id == "json/OSVDB-101157"
    assert a.aliases == ("OSVDB-101157",)
    assert a.cves == ()


def test_patched_fix() -> None:
    assert patched_fix("~> 1.2.3") == "1.2.3"
    assert patched_fix(">= 1.6.7.rc4") == "1.6.7.rc4"
    assert patched_fix("~> 5.2.4, >= 5.2.4.3") == "5.2.4.3"
    assert patched_fix(">= 1.10.0, ~> 1.9") == "1.10.0"  # RubyGems order, not text order
    assert patched_fix("< 2.0") is None
    assert patched_fix("> 1.0") is None


def test_no_file_name_derives_the_stem_and_bad_fields_are_warnings() -> None:
    data = (b"---\ngem: foo\ncve: 2020-1234\nghsa: aaaa-bbbb-cccc\nurl: https://x.invalid/\n"
            b"title: t\ndate: sometime\ndescription: d\ncvss_v3: high\n"
            b"patched_versions: '>= 1.0'\n")
    result = parse_rubysec(data, source="https://example.invalid/feed")
    (a,) = result.advisories
    assert a.id == "foo/CVE-2020-1234"
    assert a.aliases == ("CVE-2020-1234", "GHSA-aaaa-bbbb-cccc")
    assert a.issued is None and a.severity is None
    assert a.affected == (Affected("RubyGems", "foo"),)
    label = "https://example.invalid/feed: foo/CVE-2020-1234"
    assert result.warnings == (
        f"{label}: patched_versions is not a list of requirements; ignored",
        f"{label}: cvss_v3 'high' is not a number; ignored",
        f"{label}: unreadable date 'sometime'; left empty",
    )


def test_not_rubysec_is_a_feed_error(tmp_path: Path) -> None:
    path = tmp_path / "x.yml"
    path.write_bytes(b"name: not-an-advisory\n")
    with pytest.raises(FeedError, match="not a rubysec advisory") as e:
        RubysecReader().read(path)
    assert e.value.where == str(path)
