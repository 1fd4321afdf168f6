"""feeds.load: files of every format, directories, repositories, zips, URLs, hostile input."""

from __future__ import annotations

import bz2
import gzip
import http.server
import lzma
import os
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from alicorn.advisories.feeds import READERS, load, load_many
from alicorn.advisories.model import FeedError
from alicorn.advisories.osv import OsvReader
from alicorn.advisories.updateinfo import parse_updateinfo, read_repodata
from conftest import SHARED_DATA, free_port, require

PYPA = SHARED_DATA / "osv" / "pypi" / "vulns"
GHSA = SHARED_DATA / "ghsa"
GEMS = SHARED_DATA / "rubysec" / "gems"
UPDATEINFO = SHARED_DATA / "updateinfo" / "ci-dnf-stack-updateinfo.xml"
LOG4SHELL = (GHSA / "advisories" / "github-reviewed" / "2021" / "12" / "GHSA-jfh8-c2jp-5v3q"
             / "GHSA-jfh8-c2jp-5v3q.json")
AIOHTTP = PYPA / "aiohttp" / "PYSEC-2023-120.yaml"
NOKOGIRI = GEMS / "nokogiri" / "CVE-2015-1819.yml"
BODHI = SHARED_DATA / "bodhi" / "test-fixtures" / "merge-input" / "FEDORA-2023-6d4055d482.json"
OVAL = SHARED_DATA / "oval" / "test_evr_string_comparison.oval.xml"


@pytest.fixture(autouse=True)
def _data() -> None:
    if not PYPA.is_dir():
        reason = f"the shared advisory data is absent ({SHARED_DATA})"
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_the_registry() -> None:
    assert [r.name for r in READERS] == ["updateinfo", "oval", "bodhi", "osv", "rubysec",
                                         "debian-tracker"]


@pytest.mark.parametrize(("path", "fmt", "first_id"), [
    (UPDATEINFO, "updateinfo", "FEDORA-2018-318f184000"),
    (LOG4SHELL, "osv", "GHSA-jfh8-c2jp-5v3q"),
    (AIOHTTP, "osv", "PYSEC-2023-120"),
    (NOKOGIRI, "rubysec", "nokogiri/CVE-2015-1819"),
    (BODHI, "bodhi", "FEDORA-2023-6d4055d482"),
    (OVAL, "oval", "RHSA-2010:0449"),
], ids=["updateinfo", "ghsa", "pypa", "rubysec", "bodhi", "oval"])
def test_every_format_is_sniffed_from_its_content(path: Path, fmt: str, first_id: str,
                                                  tmp_path: Path) -> None:
    result = load(path)
    assert result.advisories[0].id == first_id
    assert result.advisories[0].format == fmt
    # the name says nothing: a renamed and compressed copy reads the same
    for suffix, compress in (("gz", gzip.compress), ("bz2", bz2.compress),
                             ("xz", lzma.compress)):
        copy = tmp_path / f"feed-{suffix}.dat"
        copy.write_bytes(compress(path.read_bytes()))
        again = load(copy)
        assert [a.id for a in again.advisories] == [a.id for a in result.advisories]
        assert again.advisories[0].title == result.advisories[0].title


def test_the_pypa_database_loads_fast() -> None:
    start = time.monotonic()
    result = load(PYPA)
    elapsed = time.monotonic() - start
    print(f"load({PYPA}): {len(result.advisories)} advisories in {elapsed:.2f} s")
    assert result.warnings == ()
    assert len(result.advisories) == len(list(PYPA.glob("*/*.yaml"))) == 2661
    assert elapsed < 20  # about 1 s here; generous for a loaded CI machine


def test_ghsa_and_rubysec_directories() -> None:
    ghsa = load(GHSA)
    assert ghsa.warnings == ()
    assert len(ghsa.advisories) == 15
    assert {a.format for a in ghsa.advisories} == {"osv"}
    gems = load(GEMS)
    assert gems.warnings == ()
    assert len(gems.advisories) == 1234


def test_the_whole_shared_data_tree_names_every_file_it_skips() -> None:
    result = load(SHARED_DATA)
    formats: dict[str, int] = {}
    for a in result.advisories:
        formats[a.format] = formats.get(a.format, 0) + 1
    assert formats == {"osv": 2661 + 15, "rubysec": 1234, "bodhi": 10, "oval": 2,
                       "updateinfo": formats["updateinfo"]}
    tail = ": not an advisory feed in any format Alicorn reads; skipped"
    assert all(w.endswith(tail) for w in result.warnings)
    skipped = {Path(w.removesuffix(tail)).relative_to(SHARED_DATA) for w in result.warnings}
    # README, MANIFEST, rubysec's schema, two OVAL system-characteristics files and the 20
    # snapshots of vunnel's output; nothing else
    assert len(skipped) == 25
    assert {Path("README.md"), Path("MANIFEST.tsv"), Path("rubysec/spec/schemas/gem.yml"),
            Path("oval/test_evr_string_comparison.syschar.xml")} < skipped
    assert sum(1 for p in skipped if p.parts[:3] == ("bodhi", "test-fixtures", "snapshots")) \
        == 20
    assert not any(".id-allocator" in w for w in result.warnings)  # dot-files passed over


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("createrepo_c", "modifyrepo_c")
    base = tmp_path_factory.mktemp("repo")
    subprocess.run(["createrepo_c", str(base)], check=True, capture_output=True)
    shutil.copy(UPDATEINFO, base / "updateinfo.xml")
    subprocess.run(["modifyrepo_c", str(base / "updateinfo.xml"), str(base / "repodata")],
                   check=True, capture_output=True)
    (base / "updateinfo.xml").unlink()
    return base


def test_an_rpm_repository(repo: Path, tmp_path: Path) -> None:
    expected = read_repodata(repo)
    assert [a.id for a in expected] == ["FEDORA-2018-318f184000", "FEDORA-2999:002-02",
                                        "FEDORA-2999:003-03", "FEDORA-2019-348e185000"]
    assert load(repo).advisories == tuple(expected)
    # a repository inside a directory of feeds is read through its repomd, not file by file
    tree = tmp_path / "feeds"
    shutil.copytree(repo, tree / "fedora")
    shutil.copy(AIOHTTP, tree / "aiohttp.yaml")
    result = load(tree)
    assert result.warnings == ()
    assert [a.id for a in result.advisories] == [*(a.id for a in expected), "PYSEC-2023-120"]


def test_a_zip_of_osv_files(tmp_path: Path) -> None:
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(GHSA.rglob("*.json")):
            zf.write(path, path.name)
    result = load(archive)
    assert result.warnings == ()
    assert sorted(a.id for a in result.advisories) == sorted(
        a.id for a in OsvReader().read(archive).advisories)
    assert len(result.advisories) == 15


def test_osv_is_recognised_when_modified_comes_late(tmp_path: Path) -> None:
    versions = "".join(f"  - 1.{i}\n" for i in range(20_000))
    text = (f"id: PYSEC-0000-1\ndetails: x\naffected:\n- package:\n    name: p\n"
            f"    ecosystem: PyPI\n  versions:\n{versions}modified: '2024-01-01T00:00:00Z'\n")
    path = tmp_path / "late.yaml"
    path.write_text(text)
    assert path.stat().st_size > 128 * 1024
    (a,) = load(path).advisories
    assert a.id == "PYSEC-0000-1"
    assert len(a.affected[0].versions) == 20_000


def test_a_file_that_is_no_feed(tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text('{"hello": "world"}\n')
    with pytest.raises(FeedError, match="not an advisory feed in any format") as e:
        load(path)
    assert e.value.where == str(path)
    assert "osv" in (e.value.hint or "")
    with pytest.raises(FeedError, match="cannot read it"):
        load(tmp_path / "missing.xml")
    # A Bodhi record cut short before it names its builds: where it breaks, not "no feed".
    cut = tmp_path / "cut.json"
    cut.write_bytes(BODHI.read_bytes()[:300])
    with pytest.raises(FeedError, match="malformed JSON") as e:
        load(cut)
    assert e.value.where is not None and e.value.where.startswith(f"{cut}:")


def test_a_100_mb_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as f:  # sparse: 100 MB that take no disk and no time to make
        f.write(b'{"id": "HUGE-1", "modified": "2024-01-01", "details": "')
        f.truncate(100 * 1024 * 1024)
    start = time.monotonic()
    with pytest.raises(FeedError, match="more than the 67108864-byte cap") as e:
        load(path)
    assert time.monotonic() - start < 1
    assert e.value.where == str(path)
    # in a directory, it is a warning and the rest is read
    shutil.copy(AIOHTTP, tmp_path / "ok.yaml")
    result = load(tmp_path)
    assert [a.id for a in result.advisories] == ["PYSEC-2023-120"]
    assert len(result.warnings) == 1 and result.warnings[0].startswith(f"{path}: the file is")


def test_a_gzip_bomb_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "bomb.xml.gz"
    path.write_bytes(gzip.compress(b"<updates>" + b" " * (20 * 1024 * 1024) + b"</updates>"))
    assert path.stat().st_size < 100_000
    with pytest.raises(FeedError, match="larger than 1000000 bytes once decompressed"):
        load(path, max_size=1_000_000)


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut.json.gz"
    data = gzip.compress(LOG4SHELL.read_bytes())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FeedError, match="gzip data is truncated or corrupt") as e:
        load(path)
    assert e.value.where == str(path)


def test_special_files_and_symlink_loops_in_a_directory(tmp_path: Path) -> None:
    shutil.copy(NOKOGIRI, tmp_path / "CVE-2015-1819.yml")
    os.mkfifo(tmp_path / "fifo")  # opening it would block forever
    (tmp_path / "loop").symlink_to(tmp_path)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]\n")
    result = load(tmp_path)
    assert [a.id for a in result.advisories] == ["nokogiri/CVE-2015-1819"]
    assert result.warnings == (f"{tmp_path / 'fifo'}: not a regular file; skipped",)
    with pytest.raises(FeedError, match="not a regular file"):
        load(tmp_path / "fifo")


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="holds no feed files"):
        load(tmp_path)


def test_load_many(tmp_path: Path) -> None:
    result = load_many([LOG4SHELL, str(NOKOGIRI)])
    assert [a.id for a in result.advisories] == ["GHSA-jfh8-c2jp-5v3q",
                                                 "nokogiri/CVE-2015-1819"]
    with pytest.raises(FeedError):
        load_many([LOG4SHELL, tmp_path / "missing"])
    lenient = load_many([LOG4SHELL, tmp_path / "missing"], strict=False)
    assert [a.id for a in lenient.advisories] == ["GHSA-jfh8-c2jp-5v3q"]
    assert lenient.warnings[0].startswith(f"{tmp_path / 'missing'}: cannot read it")


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(3)
        if self.path == "/liar":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    shutil.copy(LOG4SHELL, tmp_path / "ghsa.json")
    (tmp_path / "nokogiri.yml.gz").write_bytes(gzip.compress(NOKOGIRI.read_bytes()))
    shutil.copy(BODHI, tmp_path / "bodhi.json")
    port = free_port()

    def handler(*args: object, **kwargs: object) -> _Handler:
        return _Handler(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_urls(server: str) -> None:
    ghsa = load(f"{server}/ghsa.json")
    assert [a.id for a in ghsa.advisories] == ["GHSA-jfh8-c2jp-5v3q"]
    assert ghsa.advisories[0].source == f"{server}/ghsa.json"
    gem = load(f"{server}/nokogiri.yml.gz")
    # the id's stem comes from the URL's file name, as from a file's
    assert [a.id for a in gem.advisories] == ["nokogiri/CVE-2015-1819"]
    assert load(f"{server}/bodhi.json").advisories[0].id == "FEDORA-2023-6d4055d482"
    with pytest.raises(FeedError, match="HTTP 404") as e:
        load(f"{server}/missing.json")
    assert e.value.where == f"{server}/missing.json"
    with pytest.raises(FeedError, match="more than the 1000-byte cap"):
        load(f"{server}/ghsa.json", max_size=1000)
    with pytest.raises(FeedError, match="announces 1000000000000 bytes"):
        load(f"{server}/liar")
    start = time.monotonic()
    with pytest.raises(FeedError, match=r"timed out after 0\.5 s"):
        load(f"{server}/slow", timeout=0.5)
    assert time.monotonic() - start < 2.5



def test_a_repository_url_is_read_through_its_repomd(repo: Path, server: str,
                                                      tmp_path: Path) -> None:
    """A repository's baseurl (with or without its slash) is read as dnf reads it: repomd,
    then the updateinfo it names, checksum checked; a URL of no repository stays an error."""
    shutil.copytree(repo, tmp_path / "fedora")
    expected = [a.id for a in read_repodata(repo)]
    for url in (f"{server}/fedora/", f"{server}/fedora"):
        result = load(url)
        assert [a.id for a in result.advisories] == expected, url
        # Named by the URL it came from, not by a temporary file.
        assert result.advisories[0].source.startswith(f"{server}/fedora/repodata/")
        assert "updateinfo.xml" in result.advisories[0].source
    with pytest.raises(FeedError, match="not an advisory feed"):
        load(f"{server}/")
    # A tampered updateinfo behind an intact repomd fails its checksum.
    (updateinfo,) = (tmp_path / "fedora" / "repodata").glob("*updateinfo*")
    data = bytearray(updateinfo.read_bytes())
    data[len(data) // 2] ^= 0xFF
    updateinfo.write_bytes(bytes(data))
    with pytest.raises(FeedError, match="checksum"):
        load(f"{server}/fedora/")

def test_unreachable_and_other_urls() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(FeedError, match="cannot download it"):
        load(f"http://127.0.0.1:{port}/feed.json", timeout=5)
    with pytest.raises(FeedError, match="unsupported URL scheme 'ftp'"):
        load("ftp://127.0.0.1/feed.json")
    assert load(f"file://{LOG4SHELL}").advisories[0].id == "GHSA-jfh8-c2jp-5v3q"


def test_updateinfo_through_load_equals_the_parser() -> None:
    assert load(UPDATEINFO).advisories == tuple(
        parse_updateinfo(UPDATEINFO.read_bytes(), source=str(UPDATEINFO)))
