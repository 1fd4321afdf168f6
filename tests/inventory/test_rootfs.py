"""RootFS on real trees with hostile symlinks, loops, huge files and raced-in links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alicorn.inventory.model import InventoryError
from alicorn.inventory.rootfs import RootFS, TooLarge, UnsafePath


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    for d in ("etc", "usr/lib", "var/lib/rpm", "var/lib/dpkg", "usr/lib/sysimage", "opt/app"):
        (r / d).mkdir(parents=True)
    (r / "var/lib/rpm/rpmdb.sqlite").write_bytes(b"inside the root")
    # Absolute: means the root's /var/lib/rpm, never the host's.
    os.symlink("/var/lib/rpm", r / "usr/lib/sysimage/rpm")
    # Climbs far above the root: a chroot stops at its /.
    os.symlink("../../../../../../etc/shadow", r / "var/lib/dpkg/status")
    os.symlink("loop-b", r / "opt/loop-a")
    os.symlink("loop-a", r / "opt/loop-b")
    os.symlink("/", r / "opt/host")           # the root's / (a cycle), or the host's if naive
    os.symlink(".", r / "opt/app/self")
    return r


def test_absolute_symlink_resolves_inside_the_root(root: Path) -> None:
    fs = RootFS(root)
    assert fs.read_bytes("usr/lib/sysimage/rpm/rpmdb.sqlite", max_size=100) == b"inside the root"
    assert fs.relpath("/usr/lib/sysimage/rpm") == "var/lib/rpm"
    assert fs.is_dir("usr/lib/sysimage/rpm")
    assert fs.iterdir("usr/lib/sysimage/rpm") == ["rpmdb.sqlite"]


def test_escaping_symlink_reads_the_roots_file_not_the_hosts(root: Path) -> None:
    fs = RootFS(root)
    assert Path("/etc/shadow").exists()      # the host's, which must stay unread
    assert not fs.exists("var/lib/dpkg/status")
    with pytest.raises(FileNotFoundError):
        fs.read_bytes("var/lib/dpkg/status")
    (root / "etc/shadow").write_text("root:inside:::\n")
    assert fs.read_text("var/lib/dpkg/status") == "root:inside:::\n"


def test_symlink_loop_is_an_unsafe_path_not_a_hang(root: Path) -> None:
    fs = RootFS(root)
    with pytest.raises(UnsafePath, match="too many levels"):
        fs.read_bytes("opt/loop-a")
    assert not fs.exists("opt/loop-a")
    assert not fs.is_file("opt/loop-b/x")


def test_a_2gb_sparse_file_is_refused_by_the_size_cap(root: Path) -> None:
    big = root / "var/lib/dpkg/status.real"
    with open(big, "wb") as f:
        f.truncate(2 * 1024 ** 3)
    fs = RootFS(root)
    with pytest.raises(TooLarge, match=str(2 * 1024 ** 3)):
        fs.read_bytes("var/lib/dpkg/status.real", max_size=256 * 1024 * 1024)
    with pytest.raises(TooLarge):
        fs.open("var/lib/dpkg/status.real", max_size=1024)


def test_a_fifo_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "etc/os-release")
    fs = RootFS(root)
    with pytest.raises(UnsafePath, match="not a regular file"):
        fs.read_bytes("etc/os-release")
    assert fs.os_release() is None


class _Racy(RootFS):
    """What a reader sees when a directory is swapped for a symlink after the name was
    resolved: the host path it opens goes through the link."""

    def host_path(self, path: str, *, follow: bool = True) -> Path:
        return self.path / path.lstrip("/")


def test_a_raced_in_link_out_of_the_root_is_caught_on_the_open_descriptor(root: Path) -> None:
    os.symlink("/etc", root / "opt/etc-link")
    fs = _Racy(root)
    # An intermediate component leads out: the descriptor's real path says so.
    with pytest.raises(UnsafePath, match="outside the root"):
        fs.read_bytes("opt/etc-link/hostname")
    # The final component is a link: lstat refuses it, and if it raced in after the lstat,
    # O_NOFOLLOW does.
    with pytest.raises(UnsafePath, match="not a regular file"):
        fs.read_bytes("opt/host")
    with pytest.raises(UnsafePath, match="became a symlink"):
        fs._open_fd("opt/host", os.O_RDONLY | os.O_NOFOLLOW)


def test_walk_never_follows_symlinks_out_or_around(root: Path) -> None:
    (root / "opt/app/lib").mkdir()
    (root / "opt/app/lib/a.jar").write_bytes(b"x")
    fs = RootFS(root)
    walk = fs.walk("")
    files = walk.files()
    assert "opt/app/lib/a.jar" in files
    assert "var/lib/rpm/rpmdb.sqlite" in files
    # Symlinks are neither files nor directories of the walk: the root's "/" link, the loop,
    # "self" are not entered and nothing of the host appears.
    assert not any(p.startswith(("opt/host", "opt/app/self", "usr/lib/sysimage/rpm"))
                   for p in files)
    assert all((root / p).is_file() and not (root / p).is_symlink() for p in files)
    assert walk.warnings == ()
    # A FIFO or a symlink to a file is no file of the walk either (the walk reads the
    # kernel's entry types, not a stat per entry).
    os.mkfifo(root / "opt/app/lib/pipe.jar")
    (root / "opt/app/lib/link.jar").symlink_to("a.jar")
    later = RootFS(root).walk("").files()
    assert "opt/app/lib/a.jar" in later
    assert not {"opt/app/lib/pipe.jar", "opt/app/lib/link.jar"} & set(later)
    # Walks are shared: the same walk is the same object.
    assert fs.walk("") is walk


def test_walk_starting_at_a_symlink_walks_its_target_inside_the_root(root: Path) -> None:
    walk = RootFS(root).walk("usr/lib/sysimage/rpm")
    assert walk.top == "var/lib/rpm"
    assert walk.files() == ["var/lib/rpm/rpmdb.sqlite"]


def test_walk_caps_entries_and_depth_with_a_warning(root: Path) -> None:
    deep = root / "opt/deep"
    d = deep
    for i in range(30):
        d = d / f"d{i}"
    d.mkdir(parents=True)
    (d / "bottom.jar").write_bytes(b"x")
    fs = RootFS(root)
    shallow = fs.walk("opt/deep", max_depth=10)
    assert not any(p.endswith("bottom.jar") for p in shallow.files())
    assert any("deeper than 10 levels" in w for w in shallow.warnings)
    assert any(p.endswith("bottom.jar") for p in fs.walk("opt/deep").files())
    capped = fs.walk("", max_entries=5)
    assert any("stopped after 5 entries" in w for w in capped.warnings)


def test_walk_skips_the_pseudo_filesystems(root: Path) -> None:
    (root / "proc/1").mkdir(parents=True)
    (root / "proc/1/environ").write_text("SECRET=1")
    assert not any(p.startswith("proc/") for p in RootFS(root).walk("").files())


def test_os_release_through_fedoras_relative_link_and_the_usr_lib_fallback(root: Path) -> None:
    (root / "usr/lib/os-release").write_text(
        'NAME="Fedora Linux"\nVERSION="40 (Container Image)"\nID=fedora\nVERSION_ID=40\n'
        'PRETTY_NAME="Fedora Linux 40 (Container Image)"\n# comment\nID_LIKE="rhel centos"\n')
    fs = RootFS(root)
    d = fs.os_release()
    assert d is not None and (d.id, d.version_id) == ("fedora", "40")
    assert d.id_like == ("rhel", "centos")
    assert d.pretty_name == "Fedora Linux 40 (Container Image)"
    os.symlink("../usr/lib/os-release", root / "etc/os-release")
    assert RootFS(root).os_release() == d


def test_os_release_debian(root: Path) -> None:
    (root / "etc/os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
        'VERSION_CODENAME=bookworm\n')
    d = RootFS(root).os_release()
    assert d is not None and (d.id, d.version_id, d.codename) == ("debian", "12", "bookworm")


def test_a_root_that_is_not_a_directory_is_an_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not a directory"):
        RootFS(tmp_path / "missing")


def test_glob_dirs_follows_links_inside_and_answers_canonically(root: Path) -> None:
    (root / "usr/lib/ruby/gems/3.2.0/specifications").mkdir(parents=True)
    (root / "usr/lib/ruby/gems/3.3.0/specifications").mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    fs = RootFS(root)
    assert fs.glob_dirs("lib/ruby/gems/*/specifications") == [
        "usr/lib/ruby/gems/3.2.0/specifications", "usr/lib/ruby/gems/3.3.0/specifications"]


def test_a_device_node_is_not_opened(root: Path) -> None:
    try:
        os.mknod(root / "etc/disk", 0o600 | 0o060000, os.makedev(7, 0))   # a loop block device
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    with pytest.raises(UnsafePath, match="not a regular file"):
        RootFS(root).read_bytes("etc/disk")
