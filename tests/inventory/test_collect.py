"""collect(): every source over one root, merged; distro-owned language packages reported once,
as the distro package; a failing source is an error, not a crash."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from test_rpmdb import BUILD_REPO, DBPATH, _nevras, build_tiny_rpms, rpm_cli_nevras, rpm_install

from alicorn.inventory.collect import collect, collect_with, default_sources
from alicorn.inventory.interface import PackageSource, SourceResult
from alicorn.inventory.model import InventoryError
from alicorn.inventory.rootfs import RootFS
from conftest import require


def _meta(d: Path, name: str, version: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / ("METADATA" if d.name.endswith(".dist-info") else "PKG-INFO")).write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _jar(path: Path, group: str, artifact: str, version: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"META-INF/maven/{group}/{artifact}/pom.properties",
                    f"groupId={group}\nartifactId={artifact}\nversion={version}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


@pytest.fixture
def debian_root(tmp_path: Path) -> Path:
    """A merged-/usr Debian root: python3-requests and libcommons-io-java from dpkg (listed
    under /lib, as some packages still ship them), plus pip- and npm-installed packages."""
    root = tmp_path / "debian"
    (root / "usr/lib").mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: python3-requests\nStatus: install ok installed\nArchitecture: all\n"
        "Source: requests\nVersion: 2.28.1+dfsg-1\n\n"
        "Package: libcommons-io-java\nStatus: install ok installed\nArchitecture: all\n"
        "Source: commons-io\nVersion: 2.11.0-2\n\n")
    _meta(root / "usr/lib/python3/dist-packages/requests-2.28.1.egg-info", "requests", "2.28.1")
    (info / "python3-requests.list").write_text(
        "/.\n/lib/python3/dist-packages/requests-2.28.1.egg-info\n"
        "/lib/python3/dist-packages/requests-2.28.1.egg-info/PKG-INFO\n")
    _jar(root / "usr/share/java/commons-io-2.11.0.jar", "commons-io", "commons-io", "2.11.0")
    (info / "libcommons-io-java.list").write_text("/usr/share/java/commons-io-2.11.0.jar\n")
    # Not owned by any deb: reported as themselves.
    _meta(root / "usr/local/lib/python3.11/dist-packages/urllib3-1.26.5.dist-info",
          "urllib3", "1.26.5")
    _jar(root / "opt/app/log4j-core-2.14.1.jar", "org.apache.logging.log4j", "log4j-core",
         "2.14.1")
    nm = root / "opt/app/node_modules/lodash"
    nm.mkdir(parents=True)
    (nm / "package.json").write_text('{"name": "lodash", "version": "4.17.20"}')
    return root


def test_debian_root_distro_owned_reported_once(debian_root: Path) -> None:
    inv = collect(debian_root, target=str(debian_root), kind="rootfs", name="x", digest="sha256:1")
    assert inv.errors == ()
    assert (inv.target, inv.kind, inv.name, inv.digest) == \
        (str(debian_root), "rootfs", "x", "sha256:1")
    assert inv.distro is not None
    assert (inv.distro.id, inv.distro.version_id, inv.distro.codename) == \
        ("debian", "12", "bookworm")
    got = sorted((p.type, p.name, p.version) for p in inv.packages)
    assert got == [
        ("deb", "libcommons-io-java", "2.11.0-2"),
        ("deb", "python3-requests", "2.28.1+dfsg-1"),
        ("maven", "org.apache.logging.log4j:log4j-core", "2.14.1"),
        ("npm", "lodash", "4.17.20"),
        ("pypi", "urllib3", "1.26.5"),
    ]
    requests = next(p for p in inv.packages if p.name == "python3-requests")
    assert requests.source == "requests"


def test_fedora_root_python_owned_by_an_rpm_is_the_rpm(tmp_path: Path) -> None:
    rpms = build_tiny_rpms(tmp_path / "build")
    root = tmp_path / "fedora"
    root.mkdir()
    rpm_install(root, [r for r in rpms if r.name.startswith("python3-tinyreq")])
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/os-release").write_text("ID=fedora\nVERSION_ID=40\n")
    owned = root / "usr/lib/python3.12/site-packages/tinyreq-2.31.0.dist-info/METADATA"
    assert owned.is_file()     # installed by rpm itself
    _meta(root / "usr/local/lib/python3.12/site-packages/tinyreq-2.32.0.dist-info",
          "TinyReq", "2.32.0")
    inv = collect(root, target="t", kind="rootfs")
    assert inv.errors == ()
    got = sorted((p.type, p.name, p.version) for p in inv.packages)
    assert got == [("pypi", "tinyreq", "2.32.0"), ("rpm", "python3-tinyreq", "2.31.0-1.fc40")]
    rpm_pkg = next(p for p in inv.packages if p.type == "rpm")
    assert rpm_pkg.purl == "pkg:rpm/fedora/python3-tinyreq@2.31.0-1.fc40?arch=noarch"


def test_a_corrupt_rpmdb_makes_the_inventory_say_so(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / DBPATH.lstrip("/")).mkdir(parents=True)
    (root / DBPATH.lstrip("/") / "rpmdb.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(500))
    _meta(root / "usr/lib/python3.12/site-packages/x-1.dist-info", "x", "1")
    inv = collect(root, target="t", kind="rootfs")
    assert [p.name for p in inv.packages] == ["x"]
    assert len(inv.errors) == 1 and inv.errors[0].startswith(f"rpmdb: {DBPATH}: ")


class _Broken(PackageSource):
    name = "broken"

    def read(self, root: RootFS) -> SourceResult:
        raise KeyError("a bug")


def test_a_failing_source_is_an_error_with_its_traceback(debian_root: Path) -> None:
    inv = collect_with(RootFS(debian_root), [_Broken(), *default_sources()], target="t",
                       kind="rootfs")
    assert len(inv.packages) == 5
    assert len(inv.errors) == 1
    assert inv.errors[0].startswith("broken: failed unexpectedly (KeyError")
    assert "Traceback" in inv.errors[0] and "raise KeyError" in inv.errors[0]


def test_warnings_of_the_shared_walk_are_reported_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    d = root / "opt"
    for i in range(70):
        d = d / f"d{i}"
    d.mkdir(parents=True)
    inv = collect(root, target="t", kind="rootfs")
    assert sum("deeper than" in w for w in inv.warnings) == 1


def test_not_a_directory_is_an_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError):
        collect(tmp_path / "nope", target="t", kind="rootfs")


def test_empty_root_is_empty(tmp_path: Path) -> None:
    inv = collect(tmp_path, target="t", kind="rootfs")
    assert inv.packages == () and inv.errors == () and inv.distro is None


def test_host_kind_skips_container_storage_and_scratch(tmp_path: Path) -> None:
    root = tmp_path / "host"
    layer = root / "var/lib/containers/storage/overlay/abc/diff"
    _meta(layer / "usr/lib/python3.12/site-packages/inimage-1.0.dist-info", "inimage", "1.0")
    _meta(root / "home/u/.local/share/containers/storage/overlay/x/diff/usr/lib/python3/"
          "site-packages/rootless-1.0.dist-info", "rootless", "1.0")
    _meta(root / "tmp/t/site-packages/scratch-1.0.dist-info", "scratch", "1.0")
    _meta(root / "usr/lib/python3.12/site-packages/onhost-1.0.dist-info", "onhost", "1.0")
    # Another system's disk mounted under /mnt or /media is not this host's software.
    _meta(root / "mnt/backup/usr/lib/python3/site-packages/mounted-1.0.dist-info", "mounted",
          "1.0")
    _meta(root / "media/usb/lib/site-packages/stick-1.0.dist-info", "stick", "1.0")
    assert [p.name for p in collect(root, target="host", kind="host").packages] == ["onhost"]
    # The same tree as an image root: everything in it is the image's.
    assert sorted(p.name for p in collect(root, target="r", kind="rootfs").packages) == \
        ["inimage", "mounted", "onhost", "rootless", "scratch", "stick"]


@pytest.mark.integration
def test_a_root_dnf_installed(tmp_path: Path) -> None:
    """dnf --installroot, as the RPM composer runs it: the pony repository's packages and the
    tiny ones, a real transaction writing a real rpmdb; read completely, merged-/usr and all."""
    require("dnf", "rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    repo = tmp_path / "repo"
    subprocess.run([str(BUILD_REPO), str(repo), "--version", "1"], check=True,
                   capture_output=True)
    tiny = build_tiny_rpms(tmp_path / "tiny")
    home = tmp_path / "home"
    home.mkdir()
    # Debian's rpm keeps its database in ~/.rpmdb; put it where Fedora's does.
    (home / ".rpmmacros").write_text(f"%_dbpath {DBPATH}\n")
    root = tmp_path / "root"
    subprocess.run(
        ["dnf", "-y", "-q", "--installroot", str(root), "--releasever", "40",
         "--setopt=reposdir=/dev/null", f"--setopt=cachedir={home}/cache",
         "--setopt=install_weak_deps=False", "--nogpgcheck", "--forcearch", "x86_64",
         "--repofrompath", f"pony,{repo.as_uri()}", "--repo", "pony", "install",
         "busybox", "pony-content", "pony-filesystem", *map(str, tiny)],
        check=True, capture_output=True, env={**os.environ, "HOME": str(home)})
    assert (root / "lib").is_symlink()      # pony-filesystem's merged /usr
    _meta(root / "usr/local/lib/python3.12/site-packages/piponly-1.0.dist-info", "piponly",
          "1.0")
    inv = collect(root, target=str(root), kind="rootfs")
    assert inv.errors == ()
    assert inv.distro is not None and inv.distro.id == "pony"
    rpms = [p for p in inv.packages if p.type == "rpm"]
    assert _nevras(rpms) == rpm_cli_nevras(root / DBPATH.lstrip("/"))
    assert len(rpms) == 4 + len(tiny)      # with fedora-release-pony, pony-filesystem's
    assert [(p.type, p.name) for p in inv.packages if p.type != "rpm"] == [("pypi", "piponly")]
    bb = next(p for p in rpms if p.name == "busybox")
    assert bb.purl == "pkg:rpm/pony/busybox@1.35.0-1.fc40?arch=x86_64"
