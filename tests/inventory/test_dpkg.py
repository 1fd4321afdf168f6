"""DpkgSource on this host's real dpkg database, on crafted status files and distroless
status.d, and on hostile roots."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from alicorn.inventory.dpkg import DpkgSource, parse_source
from alicorn.inventory.rootfs import RootFS
from conftest import require

_STANZA = """\
Package: {name}
Status: {status}
Architecture: amd64
Version: {version}
{extra}Description: test
 a continuation line
"""


def _root(tmp_path: Path, status: str) -> Path:
    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(status)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\nVERSION_CODENAME=bookworm\n")
    return root


def test_host_dpkg_database_matches_dpkg_query() -> None:
    require("dpkg-query")
    if not Path("/var/lib/dpkg/status").is_file():
        pytest.skip("this host has no dpkg database")
    out = subprocess.run(["dpkg-query", "-W", "-f",
                          "${db:Status-Abbrev}|${Package}|${Version}|${Architecture}|"
                          "${source:Package}\\n"],
                         check=True, capture_output=True, text=True).stdout
    expected = {}
    for line in out.splitlines():
        abbrev, name, version, arch, source = line.split("|")
        if abbrev.strip() == "ii":
            expected[(name, arch)] = (version, source)
    result = DpkgSource().read(RootFS("/"))
    assert result.errors == ()
    got = {(p.name, p.arch): (p.version, p.source) for p in result.packages}
    assert got == expected
    ssl = next(p for p in result.packages if p.name == "libssl3")
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libssl3"],
                             check=True, capture_output=True, text=True).stdout
    assert ssl.version == version
    assert ssl.source == "openssl"
    assert ssl.purl == f"pkg:deb/debian/libssl3@{version}?arch=amd64"
    # Its files come from info/libssl3:amd64.list.
    listed = Path("/var/lib/dpkg/info/libssl3:amd64.list").read_text().split()
    assert {p.lstrip("/") for p in listed if p != "/."} <= result.owned_paths


def test_source_with_version_and_epochs(tmp_path: Path) -> None:
    status = "\n".join([
        _STANZA.format(name="libfoo1", status="install ok installed", version="1:2.3-4+deb12u1",
                       extra="Source: foo (2.3-4)\n"),
        _STANZA.format(name="bar", status="install ok installed", version="5.0-1", extra=""),
        _STANZA.format(name="baz-bin", status="install ok installed", version="1.0-1+b2",
                       extra="Source: baz (1.0-1)\n"),
    ])
    result = DpkgSource().read(RootFS(_root(tmp_path, status)))
    assert result.errors == () and result.warnings == ()
    by = {p.name: p for p in result.packages}
    foo = by["libfoo1"]
    assert (foo.version, foo.epoch, foo.source, foo.source_version, foo.arch) == \
        ("1:2.3-4+deb12u1", 1, "foo", "2.3-4", "amd64")
    assert foo.path == "var/lib/dpkg/status" and foo.type == "deb"
    assert (by["bar"].source, by["bar"].source_version, by["bar"].epoch) == ("bar", None, None)
    assert (by["baz-bin"].source, by["baz-bin"].source_version) == ("baz", "1.0-1")


def test_parse_source() -> None:
    assert parse_source("openssl", "libssl3", "3.0") == ("openssl", None)
    assert parse_source("glibc (2.36-9)", "libc6", "2.36-9+b1") == ("glibc", "2.36-9")
    assert parse_source("glibc (2.36-9)", "libc6", "2.36-9") == ("glibc", None)
    assert parse_source(None, "bash", "5.2") == ("bash", None)


def test_states_on_disk_are_reported_config_files_are_not(tmp_path: Path) -> None:
    status = "\n".join([
        _STANZA.format(name="ok", status="install ok installed", version="1", extra=""),
        _STANZA.format(name="half", status="install ok half-configured", version="1", extra=""),
        _STANZA.format(name="unpacked", status="install ok unpacked", version="1", extra=""),
        _STANZA.format(name="removed", status="deinstall ok config-files", version="1",
                       extra=""),
        _STANZA.format(name="gone", status="purge ok not-installed", version="1", extra=""),
        _STANZA.format(name="held", status="hold ok installed", version="1", extra=""),
    ])
    result = DpkgSource().read(RootFS(_root(tmp_path, status)))
    assert sorted(p.name for p in result.packages) == ["half", "held", "ok", "unpacked"]
    assert sum("half-configured" in w for w in result.warnings) == 1
    assert sum("unpacked" in w for w in result.warnings) == 1


def test_malformed_stanza_is_a_warning_with_its_line_others_still_read(tmp_path: Path) -> None:
    status = (
        _STANZA.format(name="good", status="install ok installed", version="1.0", extra="")
        + "\nPackage: broken\nStatus: install ok installed\nthis line is garbage\n"
        + "Version: 1\n\n"
        + "Package: noversion\nStatus: install ok installed\n\n"
        + "Package: nostatus\nVersion: 1\n\n"
        + _STANZA.format(name="good2", status="install ok installed", version="2.0", extra=""))
    result = DpkgSource().read(RootFS(_root(tmp_path, status)))
    assert sorted(p.name for p in result.packages) == ["good", "good2"]
    assert any(w.startswith("/var/lib/dpkg/status:10:") and "not a 'Field: value'" in w
               for w in result.warnings), result.warnings
    assert any("/var/lib/dpkg/status:13:" in w and "without Package or Version" in w
               for w in result.warnings), result.warnings
    assert any("nostatus" in w and "no valid Status" in w for w in result.warnings)


def test_owned_paths_from_info_lists_with_and_without_arch(tmp_path: Path) -> None:
    status = "\n".join([
        _STANZA.format(name="python3-requests", status="install ok installed",
                       version="2.28.1+dfsg-1", extra="Source: requests\n"),
        _STANZA.format(name="libz", status="install ok installed", version="1", extra=""),
    ])
    root = _root(tmp_path, status)
    (root / "var/lib/dpkg/info/python3-requests.list").write_text(
        "/.\n/usr\n/usr/lib/python3/dist-packages/requests-2.28.1.egg-info\n"
        "/usr/lib/python3/dist-packages/requests-2.28.1.egg-info/PKG-INFO\n")
    (root / "var/lib/dpkg/info/libz:amd64.list").write_text("/usr/lib/libz.so.1\n")
    result = DpkgSource().read(RootFS(root))
    assert "usr/lib/python3/dist-packages/requests-2.28.1.egg-info/PKG-INFO" in \
        result.owned_paths
    assert "usr/lib/libz.so.1" in result.owned_paths
    assert "" not in result.owned_paths and "." not in result.owned_paths


def test_distroless_status_d(tmp_path: Path) -> None:
    root = tmp_path / "root"
    d = root / "var/lib/dpkg/status.d"
    d.mkdir(parents=True)
    (d / "libc6").write_text("Package: libc6\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\n"
                             "Source: glibc\n")
    (d / "libc6.md5sums").write_text("0123456789abcdef0123456789abcdef  lib/x86_64/libc.so.6\n")
    (d / "tzdata").write_text("Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n")
    result = DpkgSource().read(RootFS(root))
    assert result.errors == ()
    by = {p.name: p for p in result.packages}
    assert set(by) == {"libc6", "tzdata"}
    assert (by["libc6"].source, by["libc6"].path) == ("glibc", "var/lib/dpkg/status.d/libc6")
    assert "lib/x86_64/libc.so.6" in result.owned_paths


def test_status_linking_out_of_the_root_does_not_read_the_hosts_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    # The host's /var/lib/dpkg/status is a real status file: through a naive link it would
    # list this host's packages.
    os.symlink("../../../../../../../../var/lib/dpkg/status", root / "var/lib/dpkg/status")
    result = DpkgSource().read(RootFS(root))
    assert result.packages == ()
    # Not silence either: the database is there and cannot be read.
    assert len(result.errors) == 1 and "/var/lib/dpkg/status: dpkg status not read" in \
        result.errors[0]
    os.unlink(root / "var/lib/dpkg/status")
    os.symlink("/etc/shadow", root / "var/lib/dpkg/status")
    result = DpkgSource().read(RootFS(root))
    assert result.packages == () and len(result.errors) == 1
    assert "shadow" not in "".join(result.warnings)


def test_status_symlink_loop_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    os.symlink("status", root / "var/lib/dpkg/status")
    result = DpkgSource().read(RootFS(root))
    assert result.packages == ()
    assert len(result.errors) == 1 and "too many levels of symbolic links" in result.errors[0]


def test_status_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    root = _root(tmp_path, "")
    shutil.move(root / "var/lib/dpkg/status", root / "var/lib/dpkg/status-real")
    (root / "var/lib/dpkg/status-real").write_text(
        _STANZA.format(name="a", status="install ok installed", version="1", extra=""))
    os.symlink("/var/lib/dpkg/status-real", root / "var/lib/dpkg/status")
    assert [p.name for p in DpkgSource().read(RootFS(root)).packages] == ["a"]


def test_a_2gb_sparse_status_is_refused_as_an_error(tmp_path: Path) -> None:
    root = _root(tmp_path, "")
    with open(root / "var/lib/dpkg/status", "wb") as f:
        f.truncate(2 * 1024 ** 3)
    result = DpkgSource().read(RootFS(root))
    assert result.packages == ()
    assert len(result.errors) == 1
    assert "/var/lib/dpkg/status" in result.errors[0] and "more than" in result.errors[0]


def test_status_file_without_stanzas_is_an_error(tmp_path: Path) -> None:
    result = DpkgSource().read(RootFS(_root(tmp_path, "\n\n")))
    assert result.errors == ("/var/lib/dpkg/status: holds no package stanzas",)


def test_no_dpkg_at_all_is_empty_without_errors(tmp_path: Path) -> None:
    result = DpkgSource().read(RootFS(tmp_path))
    assert result.packages == () and result.errors == () and result.warnings == ()
