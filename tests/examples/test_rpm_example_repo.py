"""The RPM example's repository: real RPMs, and an updateinfo.xml that dnf itself reads."""

from __future__ import annotations

import gzip
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import EXAMPLES, SHARED_DATA, require

BUILD_REPO = EXAMPLES / "pony" / "rpm" / "build-repo"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require("rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    base = tmp_path_factory.mktemp("repos")
    subprocess.run([str(BUILD_REPO), str(base / "v1"), "--version", "1"], check=True,
                   capture_output=True)
    subprocess.run([str(BUILD_REPO), str(base / "both")], check=True, capture_output=True)
    return base / "v1", base / "both"


def _updateinfo(repo: Path) -> ET.Element:
    repomd = ET.parse(repo / "repodata" / "repomd.xml").getroot()
    ns = {"r": "http://linux.duke.edu/metadata/repo"}
    data = repomd.find("r:data[@type='updateinfo']", ns)
    assert data is not None, "repomd.xml lists no updateinfo"
    href = data.find("r:location", ns).get("href")  # type: ignore[union-attr]
    raw = (repo / str(href)).read_bytes()
    return ET.fromstring(gzip.decompress(raw) if str(href).endswith(".gz") else raw)


def test_the_older_repository_has_no_advisory(repos: tuple[Path, Path]) -> None:
    v1, _ = repos
    assert not any("updateinfo" in p.name for p in (v1 / "repodata").iterdir())
    rpms = sorted(p.name for p in v1.rglob("*.rpm"))
    assert any(n.startswith("busybox-1.35.0-1.fc40") for n in rpms)
    assert not any(n.startswith("busybox-1.35.0-2.fc40") for n in rpms)


def test_the_rpms_carry_the_real_busybox(repos: tuple[Path, Path]) -> None:
    _, both = repos
    rpm = next(both.rglob("busybox-1.35.0-2.fc40*.rpm"))
    listing = subprocess.run(["rpm", "-qlp", str(rpm)], check=True, capture_output=True,
                             text=True).stdout.split()
    assert "/usr/bin/busybox" in listing
    digests = subprocess.run(["rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEDIGESTS}\\n]",
                              str(rpm)], check=True, capture_output=True, text=True).stdout
    shipped = dict(line.split() for line in digests.splitlines() if len(line.split()) == 2)
    import hashlib
    assert shipped["/usr/bin/busybox"] == \
        hashlib.sha256(Path("/bin/busybox").read_bytes()).hexdigest()


def test_updateinfo_is_bodhi_shaped(repos: tuple[Path, Path]) -> None:
    _, both = repos
    update = _updateinfo(both).find("update")
    assert update is not None
    assert update.get("type") == "security" and update.get("status") == "stable"
    assert update.findtext("id", "").startswith("FEDORA-")
    assert update.findtext("severity") == "Important"
    refs = {r.get("type"): r.get("id") for r in update.iter("reference")}
    assert refs.get("cve") == "CVE-2022-48174" and "bugzilla" in refs
    pkg = update.find("pkglist/collection/package")
    assert pkg is not None
    assert (pkg.get("name"), pkg.get("version"), pkg.get("release")) == \
        ("busybox", "1.35.0", "2.fc40")
    rpm = next(both.rglob("busybox-1.35.0-2.fc40*.rpm"))
    import hashlib
    assert pkg.findtext("sum") == hashlib.sha256(rpm.read_bytes()).hexdigest()


def test_updateinfo_uses_the_elements_of_real_fedora_metadata(repos: tuple[Path, Path]) -> None:
    real_file = SHARED_DATA / "updateinfo" / "ci-dnf-stack-updateinfo.xml"
    if not real_file.is_file():
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(f"{real_file} is missing: the shared advisory data must sit beside "
                        "the clone")
        pytest.skip(f"the shared advisory data is not at {SHARED_DATA}")

    def shape(root: ET.Element) -> set[str]:
        out = set()

        def walk(e: ET.Element, path: str) -> None:
            here = f"{path}/{e.tag}"
            out.add(here)
            for child in e:
                walk(child, here)
        walk(root, "")
        return out

    ours = shape(_updateinfo(repos[1]))
    real = shape(ET.parse(real_file).getroot())
    # Bodhi writes <release> and <rights>, and a <sum> per package, which this test file lacks.
    bodhi_extras = {"/updates/update/release", "/updates/update/rights",
                    "/updates/update/pkglist/collection/package/sum"}
    assert ours - real <= bodhi_extras, f"elements Fedora's metadata lacks: {ours - real}"
    assert {"/updates/update/id", "/updates/update/references/reference",
            "/updates/update/pkglist/collection/package/filename"} <= ours


def test_dnf_reads_the_advisory_against_an_installed_root(repos: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    require("dnf")
    v1, both = repos
    home = tmp_path / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text("%_dbpath /usr/lib/sysimage/rpm\n")
    env = {**os.environ, "HOME": str(home)}
    root = tmp_path / "root"
    common = ["dnf", "-q", f"--installroot={root}", "--releasever=40",
              "--setopt=reposdir=/dev/null", "--nogpgcheck", "--noplugins"]
    subprocess.run([*common, f"--repofrompath=p,{v1}", "--repo=p", "-y", "install",
                    "busybox", "pony-filesystem"], check=True, env=env, capture_output=True)
    listed = subprocess.run([*common, f"--repofrompath=p,{both}", "--repo=p", "updateinfo",
                             "list", "--security"], check=True, env=env, capture_output=True,
                            text=True).stdout
    assert "FEDORA-2024-b7e1c3d2a9" in listed and "busybox-1.35.0-2.fc40" in listed
    assert "Important/Sec." in listed
