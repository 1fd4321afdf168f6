"""updateinfo.xml: the real test files of createrepo_c, libdnf, ci-dnf-stack and pulp_rpm."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import lzma
import os
import shutil
import subprocess
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alicorn.advisories.model import Advisory, FeedError
from alicorn.advisories.updateinfo import parse_date, parse_updateinfo, read_repodata
from conftest import EXAMPLES, require

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
UPDATEINFO = DATA / "updateinfo"
FILES = sorted(UPDATEINFO.glob("*.xml")) if UPDATEINFO.is_dir() else []

if not FILES:
    _reason = f"the shared advisory test data is absent ({UPDATEINFO})"
    if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
        pytest.fail(_reason, pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

# createrepo_c's updateinfo_00.xml is an empty <updates/>: the one file that holds no advisory.
EMPTY = {"createrepo_c-updateinfo_00.xml"}

Compress = Callable[[bytes], bytes]


def _parse(name: str) -> list[Advisory]:
    path = UPDATEINFO / name
    return parse_updateinfo(path.read_bytes(), source=str(path))


def _by_id(name: str) -> dict[str, Advisory]:
    return {a.id: a for a in _parse(name)}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_file_parses(path: Path) -> None:
    advisories = parse_updateinfo(path.read_bytes(), source=str(path))
    if path.name in EMPTY:
        assert advisories == []
        return
    assert advisories
    for a in advisories:
        assert a.id.strip()
        assert a.type in {"security", "bugfix", "enhancement", "newpackage"}
        assert a.source == str(path)
        assert a.packages
        assert all(p.name and p.version and p.release and p.arch for p in a.packages)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress],
                         ids=["gzip", "bz2", "xz"])
def test_compressed_gives_the_same(path: Path, compress: Compress) -> None:
    raw = path.read_bytes()
    assert (parse_updateinfo(compress(raw), source=str(path))
            == parse_updateinfo(raw, source=str(path)))


def test_ci_dnf_stack_glibc_bugfix() -> None:
    advisories = _by_id("ci-dnf-stack-updateinfo.xml")
    assert list(advisories) == ["FEDORA-2018-318f184000", "FEDORA-2999:002-02",
                                "FEDORA-2999:003-03", "FEDORA-2019-348e185000"]
    a = advisories["FEDORA-2018-318f184000"]
    assert a.type == "bugfix"
    assert a.title == "glibc bug fix"
    assert a.description == "Fix some stuff"
    assert a.status == "final"
    assert a.severity is None  # written as "none"
    assert a.issued == a.updated == datetime(2019, 1, 17, tzinfo=UTC)
    assert a.bugzilla_ids == ("222",)
    # Two cve references: id "2999" titled "CVE-2999", and id "CVE-2999": one CVE.
    assert a.cves == ("CVE-2999",)
    [pkg] = a.packages
    assert (pkg.name, pkg.epoch, pkg.version, pkg.release, pkg.arch) == (
        "glibc", "0", "2.28", "26.fc29", "x86_64")
    assert pkg.filename == "glibc-0:2.28-26.fc29.x86_64.rpm"
    assert pkg.sha256 is None
    assert advisories["FEDORA-2999:002-02"].severity == "Moderate"
    assert advisories["FEDORA-2019-348e185000"].cves == ("CVE-4321",)


def test_createrepo_c_full_update() -> None:
    [a] = _parse("createrepo_c-updateinfo_01.xml")
    assert (a.id, a.type, a.severity, a.release) == (
        "foobarupdate_1", "enhancement", "severity_1", "release_1")
    [ref] = a.references
    assert (ref.type, ref.id, ref.href, ref.title) == (
        "self", "1", "https://foobar/foobarupdate_1", "update_1")
    [pkg] = a.packages
    assert pkg.src == "bar-2.0.1-3.src.rpm"
    assert pkg.sha256 == "29be985e1f652cd0a29ceed6a1c49964d3618bddd22f0be3292421c8777d26c8"


def test_createrepo_c_dates_modules_and_missing_epoch() -> None:
    advisories = _by_id("createrepo_c-updateinfo_03.xml")
    assert len(advisories) == 6
    bear = advisories["RHEA-2012:0057"]
    assert bear.issued is None  # "15mangled2": unreadable, dropped
    assert bear.updated == datetime(2013, 1, 27, 16, 8, 5, tzinfo=UTC)  # "... UTC"
    assert advisories["RHEA-2012:0060"].issued == datetime.fromtimestamp(1555429284, UTC)
    assert [p.nevra for p in advisories["RHEA-2012:0055"].packages] == [
        "walrus-0:5.21-1.noarch", "penguin-0:0.9.1-1.noarch", "shark-0:0.1-1.noarch"]
    # Two collections, each with its module.
    kangaroo = advisories["RHEA-2012:0059"]
    assert [(p.name, p.modules) for p in kangaroo.packages] == [
        ("kangaroo", ("kangaroo:0",)), ("duck", ("duck:0",))]


def test_ampersands_are_unescaped() -> None:
    [a] = _parse("createrepo_c-updateinfo_ampersand.xml")
    assert a.id == "foobarupd&ate_1"
    assert a.release == "release_1&"
    assert a.packages[0].name == "ba&r"
    assert a.references[0].href == "https://foo&bar/foobarupdate_1"


def test_libdnf_modules_across_collections() -> None:
    [a] = _parse("libdnf-updateinfo.xml")
    assert a.id == "FEDORA-2019-0329090518"
    assert [(p.name, p.modules) for p in a.packages] == [
        ("test-perl-DBI", ("perl-DBI:master", "non:existing")),
        ("test-perl-DBI-new-collection-override", ("perl-DBI:master", "non:existing")),
        ("test-perl-DBI", ("perl-DBI:master",)),
        ("not-present", ("perl:5.23",)),
    ]
    assert a.bugzilla_ids == ("2222",)


def test_pulp_red_hat_erratum() -> None:
    [a] = _parse("pulp_rpm-RHBA-2010-0836.erratum.xml")
    assert (a.id, a.type) == ("RHBA-2010:0836", "bugfix")
    assert a.bugzilla_ids == ("638598",)
    assert a.cves == ()
    self_ref = next(r for r in a.references if r.type == "self")
    assert self_ref.id == ""  # the erratum gives none
    assert self_ref.title == "RHBA-2010:0836"
    assert [p.nevra for p in a.packages] == [
        "NetworkManager-glib-1:0.8.1-5.el6_0.1.i686",
        "NetworkManager-1:0.8.1-5.el6_0.1.x86_64",
        "NetworkManager-glib-1:0.8.1-5.el6_0.1.x86_64",
        "NetworkManager-gnome-1:0.8.1-5.el6_0.1.x86_64",
    ]
    assert a.packages[1].sha256 == (
        "5cf5374cecd88b4ac3eabc20babfc0e25ee049f21dc8ead5e1aa128112f7c0c3")


def test_scientific_linux_erratum() -> None:
    [a] = _parse("pulp_rpm-scientific_linux_erratum.xml")
    assert (a.id, a.type, a.release) == ("SLBA-2011:1512-2", "bugfix", "Scientific Linux")
    assert a.issued is None and a.updated is None  # the erratum has no dates
    assert len(a.bugzilla_ids) == 16
    assert a.bugzilla_ids[0] == "603000"
    assert len(a.packages) == 14
    guestfish = a.packages[0]
    assert guestfish.nevra == "guestfish-1:1.7.17-26.el6.x86_64"
    assert guestfish.src == "libguestfs-1.7.17-26.el6.src.rpm"
    # The checksum is written with surrounding whitespace.
    assert guestfish.sha256 == (
        "853b3371ad67613d197ca22e742c8ef8f82f3da5fd6ef6a040166d6aba54220e")


@pytest.mark.parametrize(("text", "expected"), [
    ("2019-01-17 00:00:00", datetime(2019, 1, 17, tzinfo=UTC)),
    ("2013-01-27 16:08:05 UTC", datetime(2013, 1, 27, 16, 8, 5, tzinfo=UTC)),
    ("1234567890", datetime(2009, 2, 13, 23, 31, 30, tzinfo=UTC)),
    ("2024-03-31T02:00:00+02:00", datetime(2024, 3, 31, tzinfo=UTC)),
    ("2024-03-31T00:00:00Z", datetime(2024, 3, 31, tzinfo=UTC)),
    ("2024-03-31", datetime(2024, 3, 31, tzinfo=UTC)),
    ("15mangled2", None),
    ("", None),
    (None, None),
])
def test_dates(text: str | None, expected: datetime | None) -> None:
    assert parse_date(text) == expected


# -- hostile and broken input -----------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<updates><update type="security"><id>&lol9;</id></update></updates>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE updates [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<updates><update type="security"><id>&xxe;</id></update></updates>
"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY],
                         ids=["billion-laughs", "external-entity"])
def test_entities_are_refused(document: bytes) -> None:
    with pytest.raises(FeedError) as info:
        parse_updateinfo(document, source="evil.xml")
    # The error names the line of the first entity declaration, and the entity.
    line = document[:document.index(b"<!ENTITY")].count(b"\n") + 1
    assert info.value.where == f"evil.xml:{line}"
    assert "unsafe XML refused: an entity declaration ('lol" in info.value.message or \
        "unsafe XML refused: an entity declaration ('xxe')" in info.value.message
    assert info.value.exit_code == 2
    # Compressed, the same (the line is the decompressed document's).
    with pytest.raises(FeedError, match="unsafe XML") as info:
        parse_updateinfo(gzip.compress(document), source="evil.xml.gz")
    assert info.value.where == f"evil.xml.gz:{line}"


def _gzip_of_zeros(size: int) -> bytes:
    """A gzip of ``size`` zero bytes, compressed a chunk at a time (never all in memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    parts.append(compressor.flush())
    return b"".join(parts)


def test_decompression_bomb_is_refused() -> None:
    bomb = _gzip_of_zeros(64 << 20)
    assert len(bomb) < 1 << 20
    with pytest.raises(FeedError, match="larger than 8388608 bytes") as info:
        parse_updateinfo(bomb, source="bomb.xml.gz", max_size=8 << 20)
    assert info.value.where == "bomb.xml.gz"


@pytest.mark.parametrize("compress", [bz2.compress, lzma.compress], ids=["bz2", "xz"])
def test_decompression_cap_for_every_format(compress: Compress) -> None:
    with pytest.raises(FeedError, match="larger than"):
        parse_updateinfo(compress(bytes(4 << 20)), source="bomb", max_size=1 << 20)


def test_truncated_compressed_file_names_the_source() -> None:
    raw = (UPDATEINFO / "ci-dnf-stack-updateinfo.xml").read_bytes()
    for compress in (gzip.compress, bz2.compress, lzma.compress):
        data = compress(raw)
        with pytest.raises(FeedError, match="truncated or corrupt") as info:
            parse_updateinfo(data[: len(data) // 2], source="cut.xml.gz")
        assert info.value.where == "cut.xml.gz"


def test_truncated_xml_names_the_source_and_line() -> None:
    raw = (UPDATEINFO / "ci-dnf-stack-updateinfo.xml").read_bytes()
    with pytest.raises(FeedError, match="malformed XML") as info:
        parse_updateinfo(raw[: len(raw) // 2], source="cut.xml")
    assert info.value.where is not None and info.value.where.startswith("cut.xml:")


def test_missing_id_names_the_position() -> None:
    doc = (b"<updates><update type='bugfix'><id>A-1</id></update>"
           b"<update type='bugfix'><title>no id</title></update></updates>")
    with pytest.raises(FeedError, match=r"update #2 has no <id>") as info:
        parse_updateinfo(doc, source="feed.xml")
    assert info.value.where == "feed.xml"


def test_wrong_root_is_refused() -> None:
    with pytest.raises(FeedError, match="not an updateinfo"):
        parse_updateinfo(b"<repomd/>", source="x.xml")


def test_zstd_without_the_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # zstandard is a dependency; hide it to see what a host without it says.
    real = importlib.import_module

    def without_zstandard(name: str, *args: object) -> object:
        if name == "zstandard":
            raise ImportError("No module named 'zstandard'")
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", without_zstandard)
    with pytest.raises(FeedError, match="zstandard") as info:
        parse_updateinfo(b"\x28\xb5\x2f\xfd" + bytes(16), source="u.xml.zst")
    assert info.value.where == "u.xml.zst"


# -- a real repository ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pony_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    repo = tmp_path_factory.mktemp("pony-rpm")
    subprocess.run([str(EXAMPLES / "pony" / "rpm" / "build-repo"), str(repo)], check=True,
                   capture_output=True)
    return repo


def test_read_repodata_of_the_pony_example(pony_repo: Path) -> None:
    [a] = read_repodata(pony_repo)
    assert a.id == "FEDORA-2024-b7e1c3d2a9"
    assert (a.type, a.severity, a.status, a.release) == (
        "security", "Important", "stable", "Fedora 40")
    assert a.cves == ("CVE-2022-48174",)
    assert a.bugzilla_ids == ("CVE-2022-48174",)  # Fedora's tracker bugs are named by CVE
    assert a.updated == datetime(2024, 4, 1, tzinfo=UTC)
    assert a.issued == datetime(2024, 3, 31, tzinfo=UTC)
    [pkg] = a.packages
    assert (pkg.name, pkg.epoch, pkg.version, pkg.release, pkg.arch) == (
        "busybox", "0", "1.35.0", "2.fc40", "x86_64")
    assert pkg.filename == "busybox-1.35.0-2.fc40.x86_64.rpm"
    assert pkg.sha256 is not None and len(pkg.sha256) == 64
    assert a.source.startswith(str(pony_repo.resolve() / "repodata"))


def test_read_repodata_refuses_a_tampered_file(pony_repo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(pony_repo / "repodata", copy / "repodata")
    [target] = [p for p in (copy / "repodata").iterdir() if "updateinfo" in p.name]
    target.write_bytes(gzip.compress(b"<updates/>"))
    with pytest.raises(FeedError, match="checksum mismatch"):
        read_repodata(copy)


def test_read_repodata_without_updateinfo(tmp_path: Path) -> None:
    (tmp_path / "repodata").mkdir()
    (tmp_path / "repodata" / "repomd.xml").write_bytes(
        b'<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision></repomd>')
    assert read_repodata(tmp_path) == []


def test_read_repodata_without_repomd(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match=r"cannot read repomd\.xml") as info:
        read_repodata(tmp_path)
    assert info.value.hint
