"""OSV: the whole PyPA advisory database (YAML), GitHub's advisories (JSON), zips, bad input."""

from __future__ import annotations

import io
import json
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alicorn.advisories.documents import load_document
from alicorn.advisories.model import Affected, FeedError, Range, Reference
from alicorn.advisories.osv import (
    OsvReader,
    canonical_ecosystem,
    cvss_rating,
    parse_osv,
    parse_osv_zip,
)
from conftest import SHARED_DATA

PYPA = SHARED_DATA / "osv" / "pypi" / "vulns"
GHSA = SHARED_DATA / "ghsa" / "advisories" / "github-reviewed"


def _need(path: Path) -> None:
    if not path.is_dir():
        reason = f"the shared advisory data is absent ({path})"
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(reason)
        pytest.skip(reason)


def _read(path: Path) -> tuple:  # type: ignore[type-arg]
    result = OsvReader().read(path)
    return result.advisories, result.warnings


def _ghsa(advisory_id: str) -> Path:
    _need(GHSA)
    (path,) = GHSA.glob(f"*/*/{advisory_id}/{advisory_id}.json")
    return Path(path)


def test_every_pypa_file_loads_without_a_warning() -> None:
    _need(PYPA)
    files = sorted(PYPA.glob("*/*.yaml"))
    assert len(files) == 2661
    reader = OsvReader()
    ids = set()
    for path in files:
        result = reader.read(path)
        assert result.warnings == (), path
        (advisory,) = result.advisories
        assert advisory.id == path.stem
        assert advisory.format == "osv"
        assert advisory.affected and all(a.ecosystem == "PyPI" for a in advisory.affected)
        assert advisory.updated is not None
        ids.add(advisory.id)
    assert len(ids) == 2661


def test_pypa_aiohttp_request_smuggling() -> None:
    _need(PYPA)
    ((a,), warnings) = _read(PYPA / "aiohttp" / "PYSEC-2023-120.yaml")
    assert warnings == ()
    assert a.id == "PYSEC-2023-120"
    assert a.aliases == ("GHSA-45c4-8wx5-qw6w", "CVE-2023-37276")
    assert a.cves == ("CVE-2023-37276",)
    assert a.title == ("aiohttp.web.Application vulnerable to HTTP request smuggling via "
                       "llhttp HTTP request parser")
    assert a.description.startswith("### Impact\n\naiohttp v3.8.4 and earlier")
    assert a.issued == datetime(2023, 7, 20, 14, 52, tzinfo=UTC)
    assert a.updated == datetime(2023, 7, 24, 14, 58, 5, 562874, tzinfo=UTC)
    assert a.withdrawn is None
    (affected,) = a.affected
    assert (affected.ecosystem, affected.name) == ("PyPI", "aiohttp")
    assert affected.ranges == (Range("ECOSYSTEM", (("introduced", "0"), ("fixed", "3.8.5"))),)
    assert affected.fixed_versions == ("3.8.5",)
    # quoted "0.1" and "0.2" stay strings; 0.10.0 is not the float 0.1
    assert affected.versions[:3] == ("0.1", "0.10.0", "0.10.1")
    assert affected.versions[-1] == "3.8.4"
    assert len(affected.versions) == 219
    assert a.references[0] == Reference(
        type="advisory", id="",
        href="https://github.com/aio-libs/aiohttp/security/advisories/GHSA-45c4-8wx5-qw6w")
    assert [r.type for r in a.references] == ["advisory", "advisory", "package", "web"]
    assert a.severity is None  # the PyPA record gives no rating


def test_pypa_last_affected_withdrawn_and_bugzilla() -> None:
    _need(PYPA)
    ((py,), _) = _read(PYPA / "py" / "PYSEC-2022-42969.yaml")
    assert py.affected[0].ranges == (
        Range("ECOSYSTEM", (("introduced", "0"), ("last_affected", "1.11.0"))),)
    assert py.affected[0].fixed_versions == ()
    ((redis,), _) = _read(PYPA / "redis" / "PYSEC-2023-73.yaml")
    assert redis.withdrawn == datetime(2023, 6, 6, 10, 37, tzinfo=UTC)
    ((lxml,), _) = _read(PYPA / "lxml" / "PYSEC-2020-62.yaml")
    assert lxml.references[0] == Reference(
        type="bugzilla", id="1901633",
        href="https://bugzilla.redhat.com/show_bug.cgi?id=1901633")
    assert lxml.bugzilla_ids == ("1901633",)
    assert lxml.affected[0].ranges[0].events == (("introduced", "1.2"), ("fixed", "4.6.2"))


def test_pypa_cvss_vector_gives_the_rating() -> None:
    _need(PYPA)
    ((a,), _) = _read(PYPA / "cdo-local-uuid" / "PYSEC-2024-6.yaml")
    # CVSS:3.1/AV:L/AC:L/PR:L/UI:R/S:U/C:L/I:N/A:N scores 2.8
    assert a.severity == "Low"


def test_cvss_rating() -> None:
    assert cvss_rating("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H") == "Critical"
    assert cvss_rating("CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N") == "Medium"
    assert cvss_rating("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N") \
        == "Critical"
    assert cvss_rating("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N") is None  # score 0.0
    assert cvss_rating("CVSS:3.1/garbage") is None
    assert cvss_rating("AV:N/AC:L/Au:N/C:P/I:P/A:P") is None  # v2 has no qualitative rating


def test_ghsa_log4shell() -> None:
    ((a,), warnings) = _read(_ghsa("GHSA-jfh8-c2jp-5v3q"))
    assert warnings == ()
    assert a.id == "GHSA-jfh8-c2jp-5v3q"
    assert a.aliases == ("CVE-2021-44228",)
    assert a.title == "Remote code injection in Log4j"
    assert a.severity == "Critical"  # database_specific.severity "CRITICAL"
    assert a.issued == datetime(2021, 12, 10, 0, 40, 56, tzinfo=UTC)
    core = [x for x in a.affected if x.name == "org.apache.logging.log4j:log4j-core"]
    assert [x.ecosystem for x in core] == ["Maven"] * 3
    assert [x.ranges for x in core] == [
        (Range("ECOSYSTEM", (("introduced", "2.13.0"), ("fixed", "2.15.0"))),),
        (Range("ECOSYSTEM", (("introduced", "2.0-beta9"), ("fixed", "2.3.1"))),),
        (Range("ECOSYSTEM", (("introduced", "2.4"), ("fixed", "2.12.2"))),),
    ]
    assert core[0].fixed_versions == ("2.15.0",)
    assert Affected("Maven", "org.xbib.elasticsearch:log4j", versions=("6.3.2.1",)) \
        in a.affected
    assert len(a.affected) == 6
    assert len(a.references) == 65


@pytest.mark.parametrize(("advisory_id", "ecosystem", "name", "cve", "severity"), [
    ("GHSA-cr5j-953j-xw5p", "RubyGems", "nokogiri", "CVE-2019-5477", "Critical"),
    ("GHSA-8q59-q68h-6hv4", "PyPI", "PyYAML", "CVE-2020-14343", "Critical"),
    ("GHSA-35jh-r3h4-6jhm", "npm", "lodash", "CVE-2021-23337", "High"),
    ("GHSA-36p3-wjmg-h94x", "Maven", "org.springframework:spring-beans", "CVE-2022-22965",
     "Critical"),
    ("GHSA-57j2-w4cx-62h2", "Maven", "com.fasterxml.jackson.core:jackson-databind",
     "CVE-2020-36518", "High"),
    ("GHSA-xvch-5gv4-984h", "npm", "minimist", "CVE-2021-44906", "Critical"),
    ("GHSA-crjr-9rc5-ghw8", "RubyGems", "nokogiri", "CVE-2022-24836", "High"),
    ("GHSA-3hhc-qp5v-9p2j", "RubyGems", "activerecord", "CVE-2022-32224", "Critical"),
    ("GHSA-599f-7c49-w659", "Maven", "org.apache.commons:commons-text", "CVE-2022-42889",
     "Critical"),
    ("GHSA-j8r2-6x86-q33q", "PyPI", "requests", "CVE-2023-32681", "Moderate"),
    ("GHSA-v845-jxx5-vc9f", "PyPI", "urllib3", "CVE-2023-43804", "Moderate"),
    ("GHSA-wf5p-g6vw-rhxx", "npm", "axios", "CVE-2023-45857", "Moderate"),
    ("GHSA-h5c8-rqwp-cp95", "PyPI", "jinja2", "CVE-2024-22195", "Moderate"),
    ("GHSA-rv95-896h-c2vc", "npm", "express", "CVE-2024-29041", "Moderate"),
    ("GHSA-jfh8-c2jp-5v3q", "Maven", "org.apache.logging.log4j:log4j-core", "CVE-2021-44228",
     "Critical"),
])
def test_every_ghsa_file(advisory_id: str, ecosystem: str, name: str, cve: str,
                         severity: str) -> None:
    path = _ghsa(advisory_id)
    ((a,), warnings) = _read(path)
    assert warnings == ()
    assert a.affected[0].ecosystem == ecosystem
    assert a.affected[0].name == name
    assert a.cves == (cve,)
    assert a.severity == severity
    raw = json.loads(path.read_text())
    assert len(a.affected) == len(raw["affected"])
    assert [x.fixed_versions for x in a.affected] == [
        tuple(e["fixed"] for r in x.get("ranges", []) for e in r["events"] if "fixed" in e)
        for x in raw["affected"]]


def test_ghsa_pyyaml_fix() -> None:
    ((a,), _) = _read(_ghsa("GHSA-8q59-q68h-6hv4"))
    assert a.affected == (Affected("PyPI", "PyYAML", ranges=(
        Range("ECOSYSTEM", (("introduced", "0"), ("fixed", "5.4"))),)),)


def _osv(**fields: object) -> dict[str, object]:
    return {"id": "TEST-1", "modified": "2024-01-01T00:00:00Z", **fields}


def test_ecosystems_with_releases_and_unknown_ones() -> None:
    record = _osv(affected=[
        {"package": {"ecosystem": "Debian:12", "name": "openssl"},
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"},
                                                    {"fixed": "3.0.11-1~deb12u1"}]}]},
        {"package": {"ecosystem": "Alpine:v3.19", "name": "musl"}, "versions": ["1.2.4-r1"]},
        {"package": {"ecosystem": "pypi", "name": "jinja2"}},
        {"package": {"ecosystem": "Frobnicator", "name": "x"}},
        {"package": {"ecosystem": "", "name": "y"}},
        {"package": {"name": "z"}},
        {"package": {"ecosystem": "npm"}},
    ])
    result = parse_osv(json.dumps(record).encode(), source="t.json")
    (a,) = result.advisories
    assert [(x.ecosystem, x.name) for x in a.affected] == [
        ("Debian:12", "openssl"), ("Alpine:v3.19", "musl"), ("PyPI", "jinja2")]
    assert a.affected[0].fixed_versions == ("3.0.11-1~deb12u1",)
    assert result.warnings == (
        "t.json: TEST-1: affected[3]: unknown ecosystem 'Frobnicator'; entry skipped",
        "t.json: TEST-1: affected[4]: unknown ecosystem ''; entry skipped",
        "t.json: TEST-1: affected[5]: unknown ecosystem None; entry skipped",
        "t.json: TEST-1: affected[6]: no package name; entry skipped",
    )
    assert canonical_ecosystem("Red Hat:enterprise_linux:9::appstream") \
        == "Red Hat:enterprise_linux:9::appstream"
    assert canonical_ecosystem("crates.IO") == "crates.io"
    assert canonical_ecosystem(None) is None


def test_a_list_of_records_and_yaml_json_agree() -> None:
    records = [_osv(id="A-1", summary="one"), _osv(id="A-2", summary="two"), {"summary": "x"}]
    result = parse_osv(json.dumps(records).encode(), source="list.json")
    assert [a.id for a in result.advisories] == ["A-1", "A-2"]
    assert result.warnings == ('list.json: record #3 has no "id"; skipped',)
    yaml_text = b"id: A-1\nmodified: 2024-01-01T00:00:00Z\nsummary: one\n"
    (from_yaml,) = parse_osv(yaml_text, source="list.json").advisories
    assert from_yaml == result.advisories[0]


def test_invalid_dates_are_warnings_and_the_record_is_kept() -> None:
    record = _osv(published="yesterday-ish", modified="2024-13-45T99:00:00Z")
    result = parse_osv(json.dumps(record).encode(), source="d.json")
    (a,) = result.advisories
    assert a.issued is None and a.updated is None
    assert result.warnings == (
        "d.json: TEST-1: unreadable published date 'yesterday-ish'; left empty",
        "d.json: TEST-1: unreadable modified date '2024-13-45T99:00:00Z'; left empty",
    )


def test_malformed_ranges_are_warnings() -> None:
    record = _osv(affected=[{"package": {"ecosystem": "npm", "name": "x"}, "ranges": [
        {"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.0.0"},
                                      {"bogus": "2"}, {"fixed": 3}]},
        {"type": "GIT", "repo": "https://example.invalid/x.git",
         "events": [{"introduced": "abc123"}]},
        {"type": "ECOSYSTEM", "events": []},
    ]}])
    result = parse_osv(json.dumps(record).encode(), source="r.json")
    (affected,) = result.advisories[0].affected
    assert affected.ranges == (Range("SEMVER", (("introduced", "0"), ("fixed", "1.0.0"))),
                               Range("GIT", (("introduced", "abc123"),)))
    assert len(result.warnings) == 3



def test_fields_of_the_wrong_shape_are_warned_about_not_dropped_silently() -> None:
    not_a_list = parse_osv(json.dumps(_osv(affected="requests")).encode(), source="a.json")
    assert not_a_list.advisories[0].affected == ()
    assert not_a_list.warnings == ("a.json: TEST-1: affected is not a list (str); ignored",)
    record = _osv(affected=[
        {"package": "requests"},
        {"package": {"ecosystem": "PyPI", "name": "x"}, "ranges": "oops"},
        {"package": {"ecosystem": "PyPI", "name": "y"},
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": 5}]}]},
    ])
    result = parse_osv(json.dumps(record).encode(), source="b.json")
    assert [a.name for a in result.advisories[0].affected] == ["x", "y"]
    text = "\n".join(result.warnings)
    assert "affected[0]: \"package\" is not an object ('requests'); entry skipped" in text
    assert "affected[1]: ranges is not a list (str); ignored" in text
    assert "affected[2]: ranges[0] has no readable event; skipped" in text
    assert "affected[2]: no readable range or version left for y; it matches no version" in text

def test_not_osv_is_a_feed_error() -> None:
    with pytest.raises(FeedError, match="not an OSV document") as e:
        parse_osv(b'{"hello": "world"}', source="x.json")
    assert e.value.where == "x.json"
    with pytest.raises(FeedError, match="malformed JSON") as e:
        parse_osv(b'{"id": "X", "modified": ', source="cut.json")
    assert e.value.where == "cut.json:1:25"
    with pytest.raises(FeedError, match="malformed YAML") as e:
        parse_osv(b"id: [unclosed\n", source="bad.yaml")
    assert e.value.where is not None and e.value.where.startswith("bad.yaml:")


def test_yaml_alias_bomb_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    bomb = ("id: BOMB-1\nmodified: 2024-01-01\n" + "\n".join(lines) + "\n").encode()
    with pytest.raises(FeedError, match="aliases") as e:
        parse_osv(bomb, source="bomb.yaml")
    assert e.value.where is not None and e.value.where.startswith("bomb.yaml:")


def test_yaml_values_are_never_typed() -> None:
    doc = load_document(b"fixed: 1.10\nwhen: 2024-01-01\nyes: no\nn: 007\n", source="t")
    assert doc == {"fixed": "1.10", "when": "2024-01-01", "yes": "no", "n": "007"}
    # a tag constructs nothing: the value stays the plain list it is written as
    assert load_document(b"x: !!python/object/apply:os.system ['false']\n", source="t") \
        == {"x": ["false"]}
    with pytest.raises(FeedError, match="more than one YAML document"):
        load_document(b"id: A\n---\nid: B\n", source="t")


def test_json_nesting_bomb_is_an_error() -> None:
    bomb = b'{"id": "X", "modified": "2024-01-01", "details": ' + b"[" * 200_000 \
        + b"]" * 200_000 + b"}"
    with pytest.raises(FeedError, match="nested too deeply"):
        parse_osv(bomb, source="deep.json")
    yaml_bomb = b"id: X\nmodified: 2024\nd: " + b"[" * 100_000 + b"]" * 100_000 + b"\n"
    with pytest.raises(FeedError):
        parse_osv(yaml_bomb, source="deep.yaml")


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_zip_of_osv_files(tmp_path: Path) -> None:
    members = {
        "GHSA-8q59-q68h-6hv4.json": _ghsa("GHSA-8q59-q68h-6hv4").read_bytes(),
        "../../etc/evil.json": json.dumps(_osv(id="EVIL-1")).encode(),
        "notes.txt": b"hello",
        "broken.json": b'{"id": ',
    }
    archive = tmp_path / "all.zip"
    archive.write_bytes(_zip(members))
    result = OsvReader().read(archive)
    assert [a.id for a in result.advisories] == ["GHSA-8q59-q68h-6hv4", "EVIL-1"]
    assert result.advisories[1].source == f"{archive}!../../etc/evil.json"
    assert not (tmp_path.parent.parent / "etc" / "evil.json").exists()
    assert len(result.warnings) == 2
    assert result.warnings[0] == f"{archive}: 1 member(s) that are not .json or .yaml skipped"
    assert result.warnings[1].startswith(f"{archive}!broken.json:1:8: malformed JSON")
    jar = tmp_path / "app.jar"
    jar.write_bytes(_zip({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n"}))
    with pytest.raises(FeedError, match=r"no \.json or \.yaml files: not OSV"):
        OsvReader().read(jar)


def test_zip_caps() -> None:
    data = _zip({f"A-{i}.json": json.dumps(_osv(id=f"A-{i}")).encode() for i in range(5)})
    with pytest.raises(FeedError, match="more than the cap of 3"):
        parse_osv_zip(data, source="z.zip", max_members=3)
    member = b" " * 5_000_000 + json.dumps(_osv()).encode()
    big = _zip({"big.json": member})
    assert len(big) < 100_000  # spaces deflate well: a small archive, a big member
    result = parse_osv_zip(big, source="z.zip", max_size=1_000_000)
    assert result.advisories == ()
    assert result.warnings == (f"z.zip!big.json: {len(member)} bytes, more than the "
                               "1000000-byte cap; skipped",)
    with pytest.raises(FeedError, match="more than the cap"):
        parse_osv_zip(big, source="z.zip", max_total=1_000_000)
    with pytest.raises(FeedError, match="not a readable zip"):
        parse_osv_zip(data[: len(data) // 2], source="z.zip")
