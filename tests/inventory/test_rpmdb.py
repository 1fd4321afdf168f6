"""RpmdbSource on real rpm databases that rpm itself wrote (sqlite) or that Berkeley DB wrote
from rpm's headers (the bdb format rpm reads with bdb_ro), checked against the rpm CLI."""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from alicorn.inventory.rootfs import RootFS
from alicorn.inventory.rpmdb import RpmdbSource, source_name
from conftest import EXAMPLES, require

BUILD_REPO = EXAMPLES / "pony" / "rpm" / "build-repo"
DBPATH = "/usr/lib/sysimage/rpm"

_SPEC = """\
Name: {name}
Version: {version}
Release: {release}
{epoch}Summary: A tiny test package
License: MIT
BuildArch: noarch
# No generated dependencies (python(abi) = 3.12 ...): dnf installs these into an empty root.
AutoReqProv: no
%description
A tiny test package.
{subpackage}
%install
mkdir -p %{{buildroot}}{dir}
echo {name} > %{{buildroot}}{dir}/{file}
{install}
%files
{dir}/{file}
{files}
"""

#: The tiny packages: (name, epoch, version, release, extra spec text).
TINY = [
    ("tiny-epoch", 2, "1.0~rc1", "3.fc40"),
    ("tiny-caret", None, "2.0^git20240101.abc", "1.fc40"),
    ("tiny-zero-epoch", 0, "1.0", "1.fc40"),
]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(tmp), "LC_ALL": "C", "SOURCE_DATE_EPOCH": "1711929600"}


def build_tiny_rpms(out: Path) -> list[Path]:
    """rpmbuild the TINY packages, a source package with a differently named subpackage and a
    python3 package that owns a dist-info directory; returns the binary RPMs."""
    require("rpmbuild")
    top = out / "rpmbuild"
    specs = []
    for name, epoch, version, release in TINY:
        specs.append((name, _SPEC.format(
            name=name, version=version, release=release,
            epoch=f"Epoch: {epoch}\n" if epoch is not None else "", subpackage="",
            dir="/usr/share/tiny", file=name, install="", files="")))
    # Source tiny-src builds only the subpackage tiny-libs.
    specs.append(("tiny-src", _SPEC.format(
        name="tiny-src", version="1.2", release="1.fc40", epoch="",
        subpackage="%package -n tiny-libs\nSummary: libs\n%description -n tiny-libs\nlibs\n",
        dir="/usr/share/tiny", file="src", install="",
        files="%files -n tiny-libs\n/usr/share/tiny-libs").replace(
            "%install\n", "%install\nmkdir -p %{buildroot}/usr/share/tiny-libs\n")))
    many = "\n".join(f"/usr/share/tiny-many/a-rather-long-file-name-to-make-a-big-header-{i:04}"
                     for i in range(400))
    specs.append(("tiny-many", _SPEC.format(
        name="tiny-many", version="1.0", release="1.fc40", epoch="", subpackage="",
        dir="/usr/share/tiny", file="many",
        install=("mkdir -p %{buildroot}/usr/share/tiny-many\n"
                 "for i in $(seq -w 0000 0399); do : > "
                 "%{buildroot}/usr/share/tiny-many/a-rather-long-file-name-to-make-a-big-header-$i;"
                 " done"),
        files=many)))
    site = "/usr/lib/python3.12/site-packages"
    specs.append(("python3-tinyreq", _SPEC.format(
        name="python3-tinyreq", version="2.31.0", release="1.fc40", epoch="", subpackage="",
        dir=site + "/tinyreq", file="__init__.py",
        install=(f"mkdir -p %{{buildroot}}{site}/tinyreq-2.31.0.dist-info\n"
                 f"printf 'Metadata-Version: 2.1\\nName: TinyReq\\nVersion: 2.31.0\\n' > "
                 f"%{{buildroot}}{site}/tinyreq-2.31.0.dist-info/METADATA"),
        files=f"{site}/tinyreq-2.31.0.dist-info/")))
    (top / "SPECS").mkdir(parents=True)
    for name, text in specs:
        spec = top / "SPECS" / f"{name}.spec"
        spec.write_text(text)
        subprocess.run(["rpmbuild", "-bb", "--nodeps", "--quiet", "--define", f"_topdir {top}",
                        "--define", "_binary_payload w9.gzdio", str(spec)],
                       check=True, capture_output=True, env=_env(out))
    return sorted((top / "RPMS").glob("*/*.rpm"))


def rpm_install(root: Path, rpms: list[Path], *, justdb: bool = False) -> None:
    """Install ``rpms`` into ``root`` with the rpm CLI, database at Fedora's place, sqlite."""
    argv = ["rpm", "--root", str(root), "--dbpath", DBPATH, "--define", "_db_backend sqlite",
            "-i", "--nodeps", "--noscripts", "--notriggers", "--ignorearch"]
    if justdb:
        argv.append("--justdb")
    subprocess.run([*argv, *map(str, rpms)], check=True, capture_output=True,
                   env=_env(root.parent))


def rpm_cli_nevras(dbpath: Path, backend: str = "sqlite") -> list[str]:
    """What ``rpm -qa`` lists, gpg-pubkey left out as the source leaves it out."""
    out = subprocess.run(
        ["rpm", "--dbpath", str(dbpath), "--define", f"_db_backend {backend}", "-qa", "--qf",
         "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE}.%{ARCH}\\n"],
        check=True, capture_output=True, text=True).stdout
    return sorted(line for line in out.splitlines() if not line.startswith("gpg-pubkey "))


def _nevras(packages: object) -> list[str]:
    return sorted(f"{p.name} {p.epoch or 0}:{p.version.split(':')[-1]}.{p.arch}"
                  for p in packages)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tiny_rpms(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return build_tiny_rpms(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pony_rpms(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    require("rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    repo = tmp_path_factory.mktemp("pony-repo")
    subprocess.run([str(BUILD_REPO), str(repo), "--version", "1"], check=True,
                   capture_output=True)
    return sorted((repo / "Packages").glob("*.rpm"))


def _gpg_key(tmp: Path) -> Path:
    require("gpg")
    home = tmp / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home), "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "Tiny Signer <tiny@example.invalid>", "rsa2048",
                    "sign", "never"], check=True, capture_output=True)
    key = tmp / "key.asc"
    key.write_bytes(subprocess.run([*gpg, "--armor", "--export"], check=True,
                                   capture_output=True).stdout)
    return key


@pytest.fixture(scope="module")
def fedora_root(tmp_path_factory: pytest.TempPathFactory, tiny_rpms: list[Path],
                pony_rpms: list[Path]) -> Path:
    """A root with Fedora's layout: the pony packages (database only), the tiny ones
    installed for real, an imported signing key, os-release saying fedora."""
    base = tmp_path_factory.mktemp("fedora")
    root = base / "root"
    root.mkdir()
    rpm_install(root, pony_rpms, justdb=True)
    rpm_install(root, tiny_rpms)
    subprocess.run(["rpm", "--root", str(root), "--dbpath", DBPATH, "--import",
                    str(_gpg_key(base))], check=True, capture_output=True, env=_env(base))
    (root / "usr/lib/os-release").parent.mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/os-release").write_text("ID=fedora\nVERSION_ID=40\n")
    (root / "etc").mkdir(exist_ok=True)
    os.symlink("../usr/lib/os-release", root / "etc/os-release")
    (root / "var/lib").mkdir(parents=True, exist_ok=True)
    os.symlink("../../usr/lib/sysimage/rpm", root / "var/lib/rpm")
    return root


def test_source_name_from_the_srpm_file_name() -> None:
    assert source_name("openssl-3.1.1-4.fc39.src.rpm") == "openssl"
    assert source_name("python-requests-2.31.0-1.fc40.src.rpm") == "python-requests"
    assert source_name("kernel-6.5.6-300.fc39.nosrc.rpm") == "kernel"
    assert source_name(None) is None
    assert source_name("garbage.src.rpm") is None


def test_sqlite_rpmdb_is_read_completely(fedora_root: Path) -> None:
    result = RpmdbSource().read(RootFS(fedora_root))
    assert result.errors == ()
    # The same packages as the rpm CLI on the same database (less the signing key).
    cli = rpm_cli_nevras(fedora_root / DBPATH.lstrip("/"))
    assert len(cli) == 11
    assert _nevras(result.packages) == cli
    by_name = {p.name: p for p in result.packages}
    assert "gpg-pubkey" not in by_name
    e = by_name["tiny-epoch"]
    assert (e.version, e.epoch, e.release, e.arch) == ("2:1.0~rc1-3.fc40", 2, "3.fc40", "noarch")
    assert e.evr == "2:1.0~rc1-3.fc40" and e.nevra == "tiny-epoch-2:1.0~rc1-3.fc40.noarch"
    assert e.purl == "pkg:rpm/fedora/tiny-epoch@1.0~rc1-3.fc40?arch=noarch&epoch=2"
    c = by_name["tiny-caret"]
    assert (c.version, c.epoch) == ("2.0^git20240101.abc-1.fc40", None)
    z = by_name["tiny-zero-epoch"]
    assert (z.version, z.epoch) == ("1.0-1.fc40", 0)
    assert by_name["tiny-libs"].source == "tiny-src"
    bb = by_name["busybox"]
    assert (bb.version, bb.arch, bb.source) == ("1.35.0-1.fc40", "x86_64", "busybox")
    assert bb.path == "usr/lib/sysimage/rpm"


def test_gpg_pubkey_headers_are_in_the_database_but_not_reported(fedora_root: Path) -> None:
    out = subprocess.run(["rpm", "--dbpath", str(fedora_root / DBPATH.lstrip("/")), "-qa",
                          "gpg-pubkey"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("gpg-pubkey-")
    assert not any(p.name == "gpg-pubkey"
                   for p in RpmdbSource().read(RootFS(fedora_root)).packages)


def test_owned_paths_are_root_relative(fedora_root: Path) -> None:
    owned = RpmdbSource().read(RootFS(fedora_root)).owned_paths
    assert "usr/share/tiny/tiny-epoch" in owned
    assert "usr/bin/busybox" in owned
    assert "usr/lib/python3.12/site-packages/tinyreq-2.31.0.dist-info" in owned
    assert not any(p.startswith("/") for p in owned)


def test_var_lib_rpm_symlink_counts_once(fedora_root: Path) -> None:
    result = RpmdbSource().read(RootFS(fedora_root))
    assert not any("more than one" in w for w in result.warnings)


def test_uncheckpointed_wal_is_read_too(tmp_path: Path, tiny_rpms: list[Path]) -> None:
    """rpm leaves recent transactions in rpmdb.sqlite-wal; a copy without it misses them."""
    root = tmp_path / "root"
    rpm_install(root, tiny_rpms[:1])
    db = root / DBPATH.lstrip("/")
    # Hold a reader open so that sqlite cannot checkpoint while rpm adds another package.
    con = sqlite3.connect(db / "rpmdb.sqlite")
    con.execute("BEGIN")
    con.execute("SELECT count(*) FROM Packages").fetchone()
    rpm_install(root, tiny_rpms[1:2])
    snapshot = tmp_path / "snapshot"
    shutil.copytree(db, snapshot)
    con.close()
    if not (snapshot / "rpmdb.sqlite-wal").stat().st_size:
        pytest.skip("sqlite checkpointed anyway; nothing left in the WAL to test")
    image = tmp_path / "image"
    (image / "usr/lib/sysimage").mkdir(parents=True)
    shutil.copytree(snapshot, image / DBPATH.lstrip("/"))
    # The main file alone holds only the first package: the second is in the WAL.
    alone = tmp_path / "alone.sqlite"
    shutil.copy(snapshot / "rpmdb.sqlite", alone)
    with sqlite3.connect(alone) as c:
        assert c.execute("SELECT count(*) FROM Packages").fetchone()[0] == 1
    (image / DBPATH.lstrip("/") / "rpmdb.sqlite-shm").unlink(missing_ok=True)
    result = RpmdbSource().read(RootFS(image))
    assert result.errors == ()
    assert len(result.packages) == 2


def test_absolute_symlink_to_var_lib_rpm_is_the_roots(tmp_path: Path, fedora_root: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "usr/lib/sysimage").mkdir(parents=True)
    shutil.copytree(fedora_root / DBPATH.lstrip("/"), root / "var/lib/rpm")
    os.symlink("/var/lib/rpm", root / "usr/lib/sysimage/rpm")
    result = RpmdbSource().read(RootFS(root))
    assert result.errors == ()
    assert len(result.packages) == 11
    assert {p.path for p in result.packages} == {"var/lib/rpm"}
    # Without the root's var/lib/rpm the link dangles: the host's /var/lib/rpm is not read.
    shutil.rmtree(root / "var/lib/rpm")
    assert RpmdbSource().read(RootFS(root)) == RpmdbSource().read(RootFS(tmp_path / "root"))
    assert RpmdbSource().read(RootFS(root)).packages == ()


def _bdb_from(sqlite_dbpath: Path, dest: Path) -> None:
    """A BerkeleyDB hash ``Packages`` (RHEL 8's format) holding the same headers, written by
    Berkeley DB itself (db5.3_load), keyed by header number as rpm's bdb backend keys it."""
    require("db5.3_load")
    records = _headers(sqlite_dbpath)
    lines = ["VERSION=3", "format=bytevalue", "type=hash", "HEADER=END"]
    # rpm's bdb backend keeps the highest header number used under key 0 (rpmdb.c's
    # pkgInstance); real databases have it, and a reader must not take it for a header.
    lines += [" " + struct.pack("=I", 0).hex(),
              " " + struct.pack("=I", max(n for n, _ in records)).hex()]
    for num, blob in records:
        lines += [" " + struct.pack("=I", num).hex(), " " + blob.hex()]
    lines.append("DATA=END")
    dest.mkdir(parents=True)
    subprocess.run(["db5.3_load", str(dest / "Packages")], input="\n".join(lines) + "\n",
                   text=True, check=True, capture_output=True)


def test_berkeley_db_rpmdb_is_read_with_bdb_ro(tmp_path: Path, fedora_root: Path) -> None:
    """This rpm (4.18) reads BerkeleyDB only through bdb_ro and cannot write it ("available
    backends: sqlite bdb_ro dummy"), so Berkeley DB's own db5.3_load writes the file."""
    root = tmp_path / "centos"
    _bdb_from(fedora_root / DBPATH.lstrip("/"), root / "var/lib/rpm")
    import rpm

    sizes = {rpm.hdr(b)[rpm.RPMTAG_NAME]: len(b) for _, b in
             _headers(fedora_root / DBPATH.lstrip("/"))}
    assert sizes["tiny-many"] > 4 * 4096
    result = RpmdbSource().read(RootFS(root))
    assert result.errors == ()
    cli = rpm_cli_nevras(root / "var/lib/rpm", "bdb_ro")
    assert len(cli) == 11
    assert _nevras(result.packages) == cli
    assert {p.path for p in result.packages} == {"var/lib/rpm"}
    assert "usr/bin/busybox" in result.owned_paths
    # tiny-many's header is larger than a Berkeley DB page: it is read from overflow pages.
    assert sum(p.startswith("usr/share/tiny-many/") for p in result.owned_paths) == 400
    # The missing index files (Name, Basenames, ...) rpm complains about are not warnings.
    assert result.warnings == ()


def test_garbled_sqlite_is_an_error_naming_the_path(tmp_path: Path, fedora_root: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/sysimage").mkdir(parents=True)
    shutil.copytree(fedora_root / DBPATH.lstrip("/"), root / DBPATH.lstrip("/"))
    db = root / DBPATH.lstrip("/") / "rpmdb.sqlite"
    data = bytearray(db.read_bytes())
    for i in range(4096, len(data), 7):
        data[i] ^= 0x5A
    db.write_bytes(bytes(data))
    result = RpmdbSource().read(RootFS(root))
    assert result.packages == ()
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{DBPATH}: ")
    assert "malformed" in result.errors[0]
    assert "alicorn-rpmdb-" not in result.errors[0]     # our private copy is not named


def test_truncated_sqlite_is_an_error(tmp_path: Path, fedora_root: Path) -> None:
    root = tmp_path / "root"
    (root / DBPATH.lstrip("/")).mkdir(parents=True)
    src = (fedora_root / DBPATH.lstrip("/") / "rpmdb.sqlite").read_bytes()
    (root / DBPATH.lstrip("/") / "rpmdb.sqlite").write_bytes(src[:3000])
    result = RpmdbSource().read(RootFS(root))
    assert result.errors and DBPATH in result.errors[0]
    assert result.packages == ()


def test_empty_sqlite_file_is_not_a_silent_empty_result(tmp_path: Path) -> None:
    (tmp_path / "r" / DBPATH.lstrip("/")).mkdir(parents=True)
    (tmp_path / "r" / DBPATH.lstrip("/") / "rpmdb.sqlite").write_bytes(b"")
    result = RpmdbSource().read(RootFS(tmp_path / "r"))
    assert result.packages == ()
    assert len(result.errors) == 1 and result.errors[0].startswith(f"{DBPATH}: ")


def test_one_unparsable_header_is_an_error_the_rest_still_read(tmp_path: Path,
                                                                fedora_root: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/sysimage").mkdir(parents=True)
    shutil.copytree(fedora_root / DBPATH.lstrip("/"), root / DBPATH.lstrip("/"))
    con = sqlite3.connect(root / DBPATH.lstrip("/") / "rpmdb.sqlite")
    con.execute("UPDATE Packages SET blob = x'0001020304050607' WHERE hnum = 2")
    con.commit()
    con.close()
    result = RpmdbSource().read(RootFS(root))
    assert len(result.errors) == 1
    assert "rpm read 11 of the 12 headers" in result.errors[0]
    assert "skipping h#" in result.errors[0]
    assert len(result.packages) == 10    # 12 headers less the broken one and the signing key


def _headers(dbpath: Path) -> list[tuple[int, bytes]]:
    import rpm

    rpm.addMacro("_dbpath", str(dbpath))
    try:
        ts = rpm.TransactionSet()
        records = [(h[rpm.RPMTAG_DBINSTANCE], h.unload()) for h in ts.dbMatch()]
        ts.closeDB()
    finally:
        rpm.delMacro("_dbpath")
    return records


def _ndb_from(sqlite_dbpath: Path, dest: Path) -> None:
    """An ndb Packages.db (SUSE's format) holding the same headers, laid out as rpm's
    lib/backend/ndb/rpmpkg.c writes it; this rpm has no ndb backend to write one."""
    records = _headers(sqlite_dbpath)
    out = bytearray(4096)
    struct.pack_into("<4sIIII", out, 0, b"RpmP", 0, 1, 1, max(n for n, _ in records) + 1)
    for off in range(32, 4096, 16):
        struct.pack_into("<4sIII", out, off, b"Slot", 0, 0, 0)
    blkoff = 4096 // 16
    for i, (num, blob) in enumerate(records):
        blkcnt = (16 + len(blob) + 12 + 15) // 16
        body = struct.pack("<4sIII", b"BlbS", num, 1711929600, len(blob)) + blob + \
            bytes(blkcnt * 16 - (16 + len(blob) + 12))
        out += body + struct.pack("<II4s", zlib.adler32(body), len(blob), b"BlbE")
        # Slots need not be in blob order: put them backwards.
        struct.pack_into("<4sIII", out, 4096 - 16 * (i + 1), b"Slot", num, blkoff, blkcnt)
        blkoff += blkcnt
    dest.mkdir(parents=True)
    (dest / "Packages.db").write_bytes(bytes(out))


def test_ndb_rpmdb_is_read_through_its_blobs(tmp_path: Path, fedora_root: Path) -> None:
    sqlite_db = fedora_root / DBPATH.lstrip("/")
    root = tmp_path / "suse"
    _ndb_from(sqlite_db, root / "usr/lib/sysimage/rpm")
    result = RpmdbSource().read(RootFS(root))
    assert result.errors == ()
    assert _nevras(result.packages) == rpm_cli_nevras(sqlite_db)
    assert sum(p.startswith("usr/share/tiny-many/") for p in result.owned_paths) == 400


def test_ndb_with_a_broken_blob_is_an_error_the_rest_still_read(tmp_path: Path,
                                                                  fedora_root: Path) -> None:
    root = tmp_path / "suse"
    db = root / "usr/lib/sysimage/rpm"
    _ndb_from(fedora_root / DBPATH.lstrip("/"), db)
    data = bytearray((db / "Packages.db").read_bytes())
    data[4096 + 100] ^= 0xFF        # inside the first blob
    (db / "Packages.db").write_bytes(bytes(data))
    result = RpmdbSource().read(RootFS(root))
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{DBPATH}: ndb Packages.db: header ")
    assert "adler32" in result.errors[0]
    assert len(result.packages) == 10    # 12 headers less the broken one and the signing key


def test_ndb_that_is_garbage_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "r/var/lib/rpm").mkdir(parents=True)
    (tmp_path / "r/var/lib/rpm/Packages.db").write_bytes(os.urandom(4096))
    result = RpmdbSource().read(RootFS(tmp_path / "r"))
    assert result.packages == ()
    assert result.errors == ("/var/lib/rpm: ndb Packages.db: not an ndb package database "
                             "(no RpmP magic)",)


def test_debian_root_has_no_rpmdb(tmp_path: Path) -> None:
    root = tmp_path / "debian"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    shutil.copy("/var/lib/dpkg/status", root / "var/lib/dpkg/status")
    assert RpmdbSource().read(RootFS(root)) == RpmdbSource().read(RootFS(tmp_path))
    assert RpmdbSource().read(RootFS(root)).packages == ()
    assert RpmdbSource().read(RootFS(root)).errors == ()


def test_rpm_macros_do_not_leak_between_reads(fedora_root: Path) -> None:
    import rpm

    before = rpm.expandMacro("%{_dbpath} %{_db_backend}")
    RpmdbSource().read(RootFS(fedora_root))
    assert rpm.expandMacro("%{_dbpath} %{_db_backend}") == before


def test_valid_but_empty_rpmdb_is_a_warning(tmp_path: Path, fedora_root: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/sysimage").mkdir(parents=True)
    shutil.copytree(fedora_root / DBPATH.lstrip("/"), root / DBPATH.lstrip("/"))
    con = sqlite3.connect(root / DBPATH.lstrip("/") / "rpmdb.sqlite")
    con.execute("DELETE FROM Packages")
    con.commit()
    con.close()
    result = RpmdbSource().read(RootFS(root))
    assert result.packages == ()
    assert result.errors == ()
    assert result.warnings == (f"{DBPATH}: the sqlite rpm database lists no packages",)


def test_rpmdb_links_that_loop_or_dangle(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "usr/lib/sysimage").mkdir(parents=True)
    os.symlink("rpm", root / "usr/lib/sysimage/rpm")          # a loop
    (root / "var/lib/rpm").mkdir(parents=True)
    os.symlink("/nonexistent/rpmdb.sqlite", root / "var/lib/rpm/rpmdb.sqlite")
    result = RpmdbSource().read(RootFS(root))
    assert result.packages == ()
    assert any("/usr/lib/sysimage/rpm: a symlink that dangles, loops" in w
               for w in result.warnings)
    assert result.errors == ("/var/lib/rpm: rpm database not copied: /var/lib/rpm/rpmdb.sqlite:"
                             " is not a regular file inside the root (a link out of it?)",)
