"""Version order per ecosystem, and OSV / rubysec range evaluation."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pytest

from alicorn.advisories.model import Affected, Range
from alicorn.match.versions import (
    InvalidVersion,
    UnsupportedEcosystem,
    compare,
    evaluate,
    family,
    in_range,
)
from conftest import SHARED_DATA, require

OVAL = SHARED_DATA / "oval"


def _ascending(ecosystem: str, *versions: str) -> None:
    """Every pair of ``versions`` is ordered as listed, both ways round."""
    for i, a in enumerate(versions):
        assert compare(ecosystem, a, a) == 0
        for b in versions[i + 1:]:
            assert compare(ecosystem, a, b) == -1, f"{ecosystem}: {a} < {b}"
            assert compare(ecosystem, b, a) == 1, f"{ecosystem}: {b} > {a}"


# -- rpm ----------------------------------------------------------------------------------

def test_rpm_tilde_sorts_before_and_caret_after_the_release() -> None:
    _ascending("rpm", "1.0~rc1", "1.0", "1.0^git1", "1.0.1")
    _ascending("rpm", "0:1.0-1.fc40", "0:1.0-2.fc40", "1:0.1-1")


def test_rpm_missing_epoch_is_zero() -> None:
    assert compare("rpm", "1.0-1", "0:1.0-1") == 0
    assert compare("Fedora:40", "2.0-1", "1:1.0-1") == -1


def _oval_case(name: str) -> tuple[str, str, str]:
    """(installed evr, operation, state evr) of one of OpenSCAP's EVR unit tests."""
    definitions = SafeET.parse(OVAL / f"{name}.oval.xml").getroot()
    syschar = SafeET.parse(OVAL / f"{name}.syschar.xml").getroot()
    state = next(e for e in definitions.iter() if e.tag.endswith("}evr"))
    item = next(e for e in syschar.iter() if e.tag.endswith("}evr"))
    return (item.text or "").strip(), state.get("operation") or "", (state.text or "").strip()


def _oval_holds(ecosystem: str, installed: str, operation: str, wanted: str) -> bool:
    cmp = compare(ecosystem, installed, wanted)
    return {"less than": cmp < 0, "greater than": cmp > 0, "equals": cmp == 0,
            "less than or equal": cmp <= 0, "greater than or equal": cmp >= 0}[operation]


# OpenSCAP's tests/API/OVAL/unittests/test_evr_string_{comparison,missing_epoch}.sh assert
# that both definitions evaluate to "false".
OPENSCAP_CASES = [("test_evr_string_comparison", "rpm", False),
                  ("test_evr_string_missing_epoch", "deb", False)]


@pytest.mark.parametrize(("name", "ecosystem", "expected"), OPENSCAP_CASES)
def test_openscap_evr_vectors(name: str, ecosystem: str, expected: bool) -> None:
    if not (OVAL / f"{name}.oval.xml").is_file():
        _no_shared_data()
    installed, operation, wanted = _oval_case(name)
    assert installed and wanted and operation == "less than"
    assert _oval_holds(ecosystem, installed, operation, wanted) is expected


@pytest.mark.integration
@pytest.mark.parametrize(("name", "ecosystem", "expected"), OPENSCAP_CASES)
def test_openscap_itself_agrees(name: str, ecosystem: str, expected: bool,
                                tmp_path: Path) -> None:
    require("oscap")
    if not (OVAL / f"{name}.oval.xml").is_file():
        _no_shared_data()
    results = tmp_path / "results.xml"
    subprocess.run(["oscap", "oval", "analyse", "--results", str(results),
                    str(OVAL / f"{name}.oval.xml"), str(OVAL / f"{name}.syschar.xml")],
                   check=True, capture_output=True)
    root = SafeET.parse(results).getroot()
    verdicts = [e.get("result") for e in root.iter() if e.tag.endswith("}definition")
                and e.get("result")]
    assert verdicts == [str(expected).lower()]
    installed, operation, wanted = _oval_case(name)
    assert _oval_holds(ecosystem, installed, operation, wanted) is expected


def _no_shared_data() -> None:
    reason = f"the shared advisory test data is absent ({SHARED_DATA})"
    if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
        pytest.fail(reason)
    pytest.skip(reason)


# -- dpkg ---------------------------------------------------------------------------------

def test_dpkg_order() -> None:
    assert compare("deb", "1:1.0", "2.0") == 1
    _ascending("Debian:12", "1.0~rc1", "1.0", "1.0+deb12u1", "1.0.1")
    _ascending("deb", "3.0.11-1~deb12u2", "3.0.15-1~deb12u1", "3.0.15-1")


def test_dpkg_rejects_what_dpkg_rejects() -> None:
    with pytest.raises(InvalidVersion):
        compare("deb", "1.0 beta", "1.0")
    with pytest.raises(InvalidVersion):
        compare("deb", "", "1.0")


# -- PEP 440, Maven, RubyGems, semver -------------------------------------------------------

def test_pep440() -> None:
    _ascending("PyPI", "1.0.dev1", "1.0a1", "1.0rc1", "1.0", "1.0.post1", "1.1")
    assert compare("pypi", "1.0", "1.0.0") == 0


def test_pep440_invalid_is_a_typed_error_and_an_undecided_match() -> None:
    with pytest.raises(InvalidVersion, match="PEP 440"):
        compare("PyPI", "2019-09-12 nightly", "1.0")
    affected = Affected("PyPI", "x", (Range("ECOSYSTEM", (("introduced", "0"),
                                                          ("fixed", "2.0"))),))
    verdict = evaluate("PyPI", "not a version", affected)
    assert verdict.affected is None and "PEP 440" in (verdict.reason or "")


def test_maven() -> None:
    _ascending("Maven", "1.0-alpha-1", "1.0-beta", "1.0-rc1", "1.0-SNAPSHOT", "1.0", "1.0.1")
    _ascending("maven", "2.0-beta9", "2.3.1", "2.12.2", "2.14.1", "2.15.0")
    assert compare("Maven", "1.0", "1.0.0") == 0


def test_rubygems() -> None:
    _ascending("RubyGems", "1.0.0.pre", "1.0.0", "1.13.9", "1.13.10")
    _ascending("gem", "1.16.0.rc1", "1.16.0")


def test_semver() -> None:
    _ascending("npm", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta.2", "1.0.0-beta.11",
               "1.0.0-rc.1", "1.0.0", "1.0.1")
    assert compare("npm", "1.0.0+build.1", "1.0.0+build.2") == 0  # SemVer 2.0 §10
    assert compare("npm", "v1.2.3", "=1.2.3") == 0  # node-semver's loose cleaning
    with pytest.raises(InvalidVersion):
        compare("SEMVER", "1.2", "1.2.0")


def test_families() -> None:
    assert [family(e) for e in ("Debian:12", "Maven:https://maven.google.com", "PyPI",
                                "rpm", "gem", "SEMVER")] == \
        ["deb", "maven", "pypi", "rpm", "gem", "semver"]
    with pytest.raises(UnsupportedEcosystem):
        compare("Go", "v1.0.0", "v1.0.1")
    assert in_range("Go", "v1.0.0", Affected("Go", "x", (Range("SEMVER", (
        ("introduced", "0"),)),))) is None


# -- OSV ranges -----------------------------------------------------------------------------

def _eco(*events: tuple[str, str], rtype: str = "ECOSYSTEM", ecosystem: str = "PyPI",
         versions: tuple[str, ...] = ()) -> Affected:
    return Affected(ecosystem, "x", (Range(rtype, tuple(events)),), versions)


def test_introduced_fixed() -> None:
    affected = _eco(("introduced", "2.3.0"), ("fixed", "2.31.0"))
    assert [in_range("PyPI", v, affected) for v in ("2.2.0", "2.3.0", "2.30.0", "2.31.0")] \
        == [False, True, True, False]
    assert evaluate("PyPI", "2.30.0", affected).fixed == "2.31.0"


def test_events_are_sorted_in_version_order_not_feed_order() -> None:
    # 2.10 < 2.9 as text; the feed may list events in any order.
    affected = _eco(("fixed", "2.10"), ("introduced", "2.9"), ("introduced", "0"),
                    ("fixed", "1.5"))
    assert [in_range("PyPI", v, affected) for v in ("1.0", "1.5", "2.8", "2.9", "2.9.5",
                                                     "2.10")] == \
        [True, False, False, True, True, False]
    assert evaluate("PyPI", "1.0", affected).fixed == "1.5"


def test_last_affected_and_limit() -> None:
    last = _eco(("introduced", "0"), ("last_affected", "4.5.0"), ecosystem="npm")
    assert [in_range("npm", v, last) for v in ("4.5.0", "4.5.1")] == [True, False]
    assert evaluate("npm", "4.0.0", last).fixed is None
    limited = _eco(("introduced", "1.0"), ("limit", "1.5"))
    assert [in_range("PyPI", v, limited) for v in ("1.2", "1.5", "3.0")] == [True, False,
                                                                             False]
    assert in_range("PyPI", "3.0", _eco(("introduced", "1.0"), ("limit", "*"))) is True


def test_adjacent_ranges_and_an_empty_one() -> None:
    adjacent = _eco(("introduced", "0"), ("fixed", "2.0.0"), ("introduced", "2.0.0"),
                    ("fixed", "3.0.0"), rtype="SEMVER", ecosystem="npm")
    assert [in_range("npm", v, adjacent) for v in ("1.0.0", "2.0.0", "2.5.0", "3.0.0")] == \
        [True, True, True, False]
    # 2.0.0 is no fix: it is affected again.
    assert evaluate("npm", "1.0.0", adjacent).fixed == "3.0.0"
    empty = _eco(("introduced", "1.0.0"), ("fixed", "1.0.0"), rtype="SEMVER",
                 ecosystem="npm")
    assert [in_range("npm", v, empty) for v in ("0.9.0", "1.0.0", "5.0.0")] == \
        [False, False, False]


def test_semver_ranges_use_semver_order_whatever_the_ecosystem() -> None:
    affected = _eco(("introduced", "1.0.0-alpha"), ("fixed", "1.0.0"), rtype="SEMVER",
                    ecosystem="npm")
    assert in_range("npm", "1.0.0-beta", affected) is True
    assert in_range("npm", "1.0.0", affected) is False


def test_versions_list_membership_in_the_ecosystem_order() -> None:
    listed = Affected("Maven", "org.xbib.elasticsearch:log4j", versions=("6.3.2.1",))
    assert in_range("Maven", "6.3.2.1", listed) is True
    assert in_range("Maven", "6.3.2.2", listed) is False
    assert in_range("PyPI", "1.0.0", Affected("PyPI", "x", versions=("1.0",))) is True


def test_git_ranges_alone_cannot_be_decided() -> None:
    git = _eco(("introduced", "0"), ("fixed", "a" * 40), rtype="GIT")
    verdict = evaluate("PyPI", "1.0", git)
    assert verdict.affected is None and "GIT" in (verdict.reason or "")
    # With a versions list (OSV requires one beside GIT ranges) the list answers.
    with_list = Affected("PyPI", "x", git.ranges, versions=("1.0",))
    assert in_range("PyPI", "1.0", with_list) is True
    assert in_range("PyPI", "1.1", with_list) is False


def test_an_unreadable_event_makes_the_match_undecided_not_false() -> None:
    affected = _eco(("introduced", "0"), ("fixed", "2019-09-12 build"))
    assert in_range("PyPI", "1.0", affected) is None


# -- rubysec requirement lists ------------------------------------------------------------

def test_rubysec_expressions() -> None:
    nokogiri = Affected("RubyGems", "nokogiri", unaffected=("~> 1.15.6", ">= 1.16.2"))
    results = {v: evaluate("RubyGems", v, nokogiri)
               for v in ("1.14.0", "1.15.5", "1.15.6", "1.15.9", "1.16.0", "1.16.2")}
    assert {v: r.affected for v, r in results.items()} == {
        "1.14.0": True, "1.15.5": True, "1.15.6": False, "1.15.9": False, "1.16.0": True,
        "1.16.2": False}
    assert results["1.15.5"].fixed == "1.15.6"
    assert results["1.16.0"].fixed == "1.16.2"


def test_pessimistic_operator_and_compound_requirements() -> None:
    tilde = Affected("RubyGems", "g", unaffected=("~> 1.2.3",))
    assert in_range("RubyGems", "1.2.9", tilde) is False  # "~> 1.2.3" admits 1.2.9
    assert in_range("RubyGems", "1.3.0", tilde) is True   # ... but not 1.3.0
    compound = Affected("RubyGems", "g", unaffected=(">= 1.3, < 2",))
    assert [in_range("RubyGems", v, compound) for v in ("1.2", "1.5", "2.0")] == \
        [True, False, True]
    # Above every lower bound: no version to name, so the expressions are the advice.
    assert evaluate("RubyGems", "2.0", compound).fixed == ">= 1.3, < 2"
    unaffected_only = Affected("RubyGems", "g", unaffected=("< 0.5.5", ">= 1.1.6"))
    assert evaluate("RubyGems", "1.0", unaffected_only).fixed == "1.1.6"


def test_an_unreadable_requirement_is_undecided() -> None:
    verdict = evaluate("RubyGems", "1.0", Affected("RubyGems", "g", unaffected=("~~> 1",)))
    assert verdict.affected is None and "requirement" in (verdict.reason or "")
    # The reason names the expression, never a placeholder of univers's message.
    bad = evaluate("RubyGems", "1.0", Affected("RubyGems", "g", unaffected=(">= not a version",)))
    assert bad.affected is None
    assert bad.reason == ("'>= not a version' is not a valid RubyGems requirement version: "
                          "ill-formed requirement")
