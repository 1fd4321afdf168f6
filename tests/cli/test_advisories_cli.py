"""`alicorn advisories import/list/show/export`, run as a person would, on real feeds."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from alicorn.advisories import codec
from alicorn.advisories.updateinfo import read_repodata
from conftest import EXAMPLES, SHARED_DATA, Cli, require

PONY = "FEDORA-2024-b7e1c3d2a9"

UPDATEINFO = """<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="updates@fedoraproject.org" status="stable" type="security" version="2.0">
    <id>FEDORA-2099-cli0000001</id>
    <title>demo-1.0-{release}</title>
    <issued date="2099-01-01 00:00:00"/>
    <updated date="{updated}"/>
    <release>Fedora 40</release>
    <severity>Low</severity>
    <description>demo</description>
    <references>
      <reference href="https://www.cve.org/CVERecord?id=CVE-2099-0001" id="CVE-2099-0001"
                 type="cve" title="CVE-2099-0001"/>
    </references>
    <pkglist><collection short="F40"><name>Fedora 40</name>
      <package name="demo" version="1.0" release="{release}" epoch="0" arch="noarch">
        <filename>demo-1.0-{release}.noarch.rpm</filename>
      </package>
    </collection></pkglist>
  </update>
</updates>
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    path = tmp_path_factory.mktemp("repo") / "both"
    subprocess.run([str(EXAMPLES / "pony/rpm/build-repo"), str(path)], check=True,
                   capture_output=True)
    return path


def _updateinfo(path: Path, *, release: str, updated: str) -> Path:
    path.write_text(UPDATEINFO.format(release=release, updated=updated), encoding="utf-8")
    return path


def test_import_list_show(cli: Cli, repo: Path) -> None:
    first = cli("advisories", "import", str(repo), check=True)
    assert first.stdout.strip() == \
        f"{repo}: 1 read: 1 added, 0 replaced, 0 unchanged, 0 older skipped"
    again = cli("advisories", "import", str(repo), check=True)
    assert "1 read: 0 added, 0 replaced, 1 unchanged" in again.stdout

    listed = json.loads(cli("advisories", "list", "--json", check=True).stdout)
    assert [(a["id"], a["severity"], a["cves"], a["packages"]) for a in listed] == \
        [(PONY, "Important", ["CVE-2022-48174"], ["busybox"])]
    text = cli("advisories", "list", "--cve", "cve-2022-48174", check=True).stdout
    assert text.split("\t")[:3] == [PONY, "security", "Important"]
    assert cli("advisories", "list", "--package", "nginx", check=True).stdout == ""

    shown = cli("advisories", "show", PONY, "--json", check=True).stdout
    assert codec.from_json(json.loads(shown)) == read_repodata(repo)[0]
    human = cli("advisories", "show", PONY, check=True).stdout
    assert "fixed in busybox-0:1.35.0-2.fc40.x86_64" in human and "CVE-2022-48174" in human

    missing = cli("advisories", "show", "FEDORA-0000-nope")
    assert missing.returncode == 2 and "no advisory FEDORA-0000-nope" in missing.stderr


def test_newer_replaces_and_older_is_skipped(cli: Cli, tmp_path: Path) -> None:
    v2 = _updateinfo(tmp_path / "v2.xml", release="2.fc40", updated="2099-02-01 00:00:00")
    v3 = _updateinfo(tmp_path / "v3.xml", release="3.fc40", updated="2099-03-01 00:00:00")
    assert "1 added" in cli("advisories", "import", str(v2), check=True).stdout
    assert "1 replaced" in cli("advisories", "import", str(v3), check=True).stdout
    assert "1 older skipped" in cli("advisories", "import", str(v2), check=True).stdout
    shown = json.loads(cli("advisories", "show", "FEDORA-2099-cli0000001", "--json",
                           check=True).stdout)
    assert shown["packages"][0]["release"] == "3.fc40"


def test_a_bad_input_is_named_and_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    good = _updateinfo(tmp_path / "good.xml", release="1.fc40", updated="2099-01-01")
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?>\n<!DOCTYPE updates [<!ENTITY a "aaaaaaaaaa">'
                    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
                    "<updates><update><id>&b;</id></update></updates>\n")
    truncated = tmp_path / "updateinfo.xml.gz"
    truncated.write_bytes(gzip.compress(good.read_bytes())[:60])
    proc = cli("advisories", "import", str(bomb), str(good), str(truncated))
    assert proc.returncode == 2, proc.stderr
    assert f"{bomb}" in proc.stderr and f"{truncated}" in proc.stderr
    assert "2 of 3 inputs could not be imported" in proc.stderr
    assert f"{good}: 1 read: 1 added" in proc.stdout
    listed = json.loads(cli("advisories", "list", "--json", check=True).stdout)
    assert [a["id"] for a in listed] == ["FEDORA-2099-cli0000001"]


def test_an_input_none_of_whose_records_can_be_read_fails(cli: Cli, tmp_path: Path) -> None:
    """A directory of files that are no feeds is not an empty feed: exit 2, nothing written;
    a genuinely empty updateinfo is fine."""
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not an advisory\n")
    empty = tmp_path / "empty.xml"
    empty.write_text("<updates/>\n")
    proc = cli("advisories", "import", str(junk), str(empty))
    assert proc.returncode == 2, proc.stderr
    assert f"{junk}: none of its records could be read (1 skipped" in proc.stderr
    assert "1 of 2 inputs could not be imported" in proc.stderr
    assert f"{empty}: 0 read" in proc.stdout


def test_export_oval_and_osv(cli: Cli, repo: Path, tmp_path: Path) -> None:
    empty = cli("advisories", "export", "--format", "oval", check=True)
    assert "the advisory store is empty" in empty.stderr

    cli("advisories", "import", str(repo), check=True)
    ghsa = SHARED_DATA / "ghsa"
    if ghsa.is_dir():
        cli("advisories", "import", str(ghsa), check=True)
    oval = cli("advisories", "export", "--format", "oval", "--type", "security", check=True)
    assert oval.stdout.startswith("<?xml") and PONY in oval.stdout
    if ghsa.is_dir():  # GitHub's advisories have no RPMs: left out, and said so
        assert "left out 15 advisories" in oval.stderr
    out = tmp_path / "feed.oval.xml"
    cli("advisories", "export", "--format", "oval", "--output", str(out), check=True)
    assert out.read_text().startswith("<?xml") and PONY in out.read_text()
    require("oscap")
    subprocess.run(["oscap", "oval", "validate", str(out)], check=True, capture_output=True)

    records = json.loads(cli("advisories", "export", "--format", "osv", check=True).stdout)
    by_id = {r["id"]: r for r in records}
    assert by_id[PONY]["affected"][0]["package"] == {"ecosystem": "Fedora:40",
                                                     "name": "busybox"}
    directory = tmp_path / "osv"
    done = cli("advisories", "export", "--format", "osv", "--output", str(directory),
               check=True)
    assert f"wrote {len(records)} OSV files" in done.stderr
    assert sorted(p.stem for p in directory.iterdir()) == sorted(by_id)
    # The export reads back as a feed.
    again = cli("advisories", "import", str(directory), check=True)
    assert f"{len(records)} read" in again.stdout


def test_the_oval_export_writes_atomically_into_an_existing_file(cli: Cli, repo: Path,
                                                                 tmp_path: Path) -> None:
    cli("advisories", "import", str(repo), check=True)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "feed.xml"
    out.write_text("old")
    cli("advisories", "export", "--format", "oval", "-o", str(out), check=True)
    assert PONY in out.read_text()
    assert [p.name for p in outdir.iterdir()] == ["feed.xml"]  # no temporary file left
    clash = tmp_path / "file"
    clash.write_text("x")
    proc = cli("advisories", "export", "--format", "osv", "-o", str(clash))
    assert proc.returncode == 2 and "one file per advisory" in proc.stderr


def test_feed_text_cannot_drive_the_terminal(cli: Cli, tmp_path: Path) -> None:
    record = {"schema_version": "1.6.0", "id": "GHSA-term-esc0-0000",
              "modified": "2024-01-01T00:00:00Z", "summary": "\u001b[2J\u001b]0;owned\u0007hi",
              "details": "line\u009bone",
              "affected": [{"package": {"ecosystem": "PyPI", "name": "x"}, "versions": ["1"]}]}
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(record))
    cli("advisories", "import", str(path), check=True)
    for args in (("show", "GHSA-term-esc0-0000"), ("list",)):
        out = cli("advisories", *args, check=True).stdout
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
        assert "GHSA-term-esc0-0000" in out
    shown = cli("advisories", "show", "GHSA-term-esc0-0000", "--json", check=True).stdout
    assert json.loads(shown)["title"] == record["summary"]  # JSON keeps it, escaped
