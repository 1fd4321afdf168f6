"""Deterministic layers from real trees: every kind of file a root filesystem holds, read back
with Python's gzip and tarfile and with GNU tar.  Nothing is mocked; we are root, so ownership,
device nodes and file capabilities are the real thing."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shutil
import socket
import stat
import struct
import subprocess
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from alicorn.errors import ImageError
from alicorn.image.layer import BLOCK, MEDIA_TYPE_GZIP, LayerInfo, iter_tree, write_layer
from conftest import require

if os.geteuid() != 0:
    pytest.skip("needs root (chown, mknod, security.capability)", allow_module_level=True)

EPOCH = 1_700_000_000
PAST = 1_500_000_000
FUTURE = 1_900_000_000
CAP_XATTR = "security.capability"
# struct vfs_cap_data, revision 2 with the effective bit; permitted = CAP_NET_BIND_SERVICE (10).
CAP_BLOB = struct.pack("<IIIII", 0x02000000 | 0x1, 1 << 10, 0, 0, 0)
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str                  # dir, file, symlink, hardlink, fifo, chr
    data: bytes = b""
    target: str = ""           # symlink target, or the path a hard link shares an inode with
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = PAST
    cap: bool = False


# Short constructors, so that TREE reads like a listing.
def D(path: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, "dir", mode=mode, uid=uid, gid=gid)


def F(path: str, data: bytes = b"", mode: int = 0o644, *, uid: int = 0, gid: int = 0,
      mtime: int = PAST, cap: bool = False) -> Entry:
    return Entry(path, "file", data=data, mode=mode, uid=uid, gid=gid, mtime=mtime, cap=cap)


TREE = [
    Entry("bin", "symlink", target="usr/bin"),
    D("dev"),
    Entry("dev/null", "chr", mode=0o666),
    D("dev/pts"),
    D("etc"),
    F("etc/empty"),
    F("etc/hostname", b"pony\n", mtime=FUTURE),
    Entry("etc/localtime", "symlink", target="/usr/share/zoneinfo/UTC"),
    D("home"),
    D("home/user", 0o700, uid=1000, gid=1000),
    F("home/user/notes", b"mine\n", 0o600, uid=1000, gid=1000),
    D("opt"),
    Entry("opt/null", "chr", mode=0o600),
    Entry("opt/z-link", "hardlink", target="etc/hostname"),
    D("proc", 0o555),
    F("proc/x", b"runtime only"),
    D("run"),
    D("run/lock"),
    D("srv"),
    F("srv/B", b"upper case sorts first\n"),
    D("srv/a"),
    F("srv/a/b", b"b\n"),
    F("srv/a-b", b"a-b\n"),
    F("srv/bigid", b"x", uid=3_000_000, gid=3_000_001),
    D("srv/dev"),
    F("srv/dev/keep", b"only the top-level /dev is emptied\n"),
    F("srv/" + "long-name-" * 12, b"needs a pax path\n"),
    F("srv/\u00e9t\u00e9", b"non-ascii name\n"),
    D("sys", 0o555),
    D("sys/kernel"),
    D("tmp", 0o1777),
    D("usr"),
    D("usr/bin"),
    F("usr/bin/hard-a", b"same inode\n", 0o755),
    Entry("usr/bin/hard-b", "hardlink", target="usr/bin/hard-a"),
    F("usr/bin/ping", b"\x7fELF pretend\n", 0o755, cap=True),
    F("usr/bin/tool", b"#!/bin/sh\nexit 0\n", 0o4755),
    D("var"),
    Entry("var/fifo", "fifo", mode=0o620),
    F("var/new", b"new\n", mtime=FUTURE),
    F("var/old", b"old\n", mtime=PAST - 12345),
]
BY_PATH = {e.path: e for e in TREE}
RUNTIME = ("dev", "proc", "run", "sys")


def component_key(name: str) -> list[bytes]:
    return [os.fsencode(part) for part in name.split("/")]


def expected_names() -> list[str]:
    names = [e.path for e in TREE if e.path.split("/")[0] not in RUNTIME or "/" not in e.path]
    return sorted(names, key=component_key)


def set_capability(path: Path) -> None:
    if shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_bind_service+ep", str(path)], check=True,
                       capture_output=True)
    else:
        os.setxattr(path, CAP_XATTR, CAP_BLOB)


def make_socket(path: Path) -> None:
    """A bound unix socket at ``path`` (bound from its directory: sun_path is short)."""
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind(path.name)
        s.close()
    finally:
        os.chdir(cwd)


def build_tree(root: Path, entries: Iterable[Entry] = TREE, *, reverse: bool = False,
               atime_offset: int = 0, socket_at: str | None = None) -> Path:
    """Create ``entries`` under ``root``; ``reverse`` creates them in the opposite order."""
    order = list(entries)
    if reverse:
        order.reverse()
    root.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}          # hard link group -> first path created
    for e in order:
        path = root / e.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if e.kind == "dir":
            path.mkdir(exist_ok=True)
        elif e.kind in ("file", "hardlink"):
            group = e.target if e.kind == "hardlink" else e.path
            if group in made:
                os.link(made[group], path)
            else:
                path.write_bytes(BY_PATH[group].data)
                made[group] = path
        elif e.kind == "symlink":
            os.symlink(e.target, path)
        elif e.kind == "fifo":
            os.mkfifo(path)
        elif e.kind == "chr":
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        else:
            raise AssertionError(e.kind)
    if socket_at:
        make_socket(root / socket_at)
    # Attributes after every entry exists, so creating children cannot move a parent's mtime.
    # chown clears setuid bits and file capabilities, so it goes first.
    for e in order:
        if e.kind == "hardlink":
            continue
        path = root / e.path
        os.chown(path, e.uid, e.gid, follow_symlinks=False)
        if e.kind != "symlink":
            os.chmod(path, e.mode)
        if e.cap:
            set_capability(path)
        os.utime(path, (e.mtime + atime_offset + 7, e.mtime), follow_symlinks=False)
    os.utime(root, (PAST, PAST))
    return root


def write(root: Path, **kw: int) -> tuple[LayerInfo, bytes]:
    buf = io.BytesIO()
    kw.setdefault("source_date_epoch", EPOCH)
    info = write_layer(root, buf, **kw)
    return info, buf.getvalue()


def open_tar(blob: bytes) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:",
                        encoding="utf-8", errors="surrogateescape")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_tree(tmp_path_factory.mktemp("layer") / "rootfs", socket_at="var/sock")
    assert stat.S_ISSOCK(os.lstat(root / "var" / "sock").st_mode)
    return root


@pytest.fixture(scope="module")
def layer(tree: Path) -> tuple[LayerInfo, bytes]:
    return write(tree, threads=2)


@pytest.fixture(scope="module")
def members(layer: tuple[LayerInfo, bytes]) -> dict[str, tarfile.TarInfo]:
    with open_tar(layer[1]) as tar:
        return {m.name: m for m in tar.getmembers()}


# -- the blob and its digests ------------------------------------------------------------------

def test_digests_and_size(layer: tuple[LayerInfo, bytes]) -> None:
    info, blob = layer
    assert info.media_type == MEDIA_TYPE_GZIP
    assert str(info.digest) == sha256(blob)
    assert str(info.diff_id) == sha256(gzip.decompress(blob))
    assert info.size == len(blob)
    assert info.digest != info.diff_id


def test_one_plain_gzip_member_without_name_or_time(layer: tuple[LayerInfo, bytes]) -> None:
    blob = layer[1]
    assert blob[:10] == GZIP_HEADER
    d = zlib.decompressobj(wbits=31)
    tar = d.decompress(blob) + d.flush()
    assert d.eof
    assert d.unused_data == b""
    crc, isize = struct.unpack("<II", blob[-8:])
    assert crc == zlib.crc32(tar)
    assert isize == len(tar) & 0xFFFFFFFF
    assert len(tar) % 512 == 0


def test_raw_names_have_no_leading_slash_or_dot(layer: tuple[LayerInfo, bytes]) -> None:
    raw = gzip.decompress(layer[1])
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for m in tar.getmembers():
            assert not m.name.startswith(("/", "./")), m.name
            assert m.name not in ("", ".")
    # tarfile strips a directory's trailing slash on reading; the header keeps it.
    assert b"etc/\x00" in raw


# -- the listing -------------------------------------------------------------------------------

def test_listing_is_exactly_the_tree_in_order(layer: tuple[LayerInfo, bytes]) -> None:
    with open_tar(layer[1]) as tar:
        names = tar.getnames()
    assert names == expected_names()
    assert len(names) == len(set(names))
    seen: set[str] = set()
    for name in names:
        parent = name.rpartition("/")[0]
        assert not parent or parent in seen, f"{name} before its parent"
        seen.add(name)
    assert names == sorted(names, key=component_key)


def test_order_is_bytewise_per_path_component(layer: tuple[LayerInfo, bytes]) -> None:
    # Entries of a directory are sorted by the bytes of their names and each directory's
    # contents follow it, so "srv/a/b" comes before "srv/a-b" although "-" < "/".
    with open_tar(layer[1]) as tar:
        srv = [n for n in tar.getnames() if n.startswith("srv/") and n.count("/") <= 2]
    assert srv[:5] == ["srv/B", "srv/a", "srv/a/b", "srv/a-b", "srv/bigid"]
    assert srv[-1] == "srv/\u00e9t\u00e9"


def test_iter_tree_matches_the_layer(tree: Path, layer: tuple[LayerInfo, bytes]) -> None:
    listed = iter_tree(tree)
    assert listed == sorted(listed, key=component_key)
    with open_tar(layer[1]) as tar:
        # iter_tree also yields the socket, which the layer leaves out.
        assert [n for n in listed if n != "var/sock"] == tar.getnames()
    assert "var/sock" in listed


# -- metadata ----------------------------------------------------------------------------------

def test_metadata_matches_the_tree(tree: Path, members: dict[str, tarfile.TarInfo]) -> None:
    for name, m in members.items():
        st = os.lstat(tree / name)
        assert m.uname == "" and m.gname == "", name
        assert (m.uid, m.gid) == (st.st_uid, st.st_gid), name
        assert m.mode == stat.S_IMODE(st.st_mode), name
        assert m.mtime == min(int(st.st_mtime), EPOCH), name
        if m.isreg():
            assert m.size == st.st_size, name


def test_ownership_modes_and_times(members: dict[str, tarfile.TarInfo]) -> None:
    assert members["usr/bin/tool"].mode == 0o4755
    assert members["tmp"].mode == 0o1777
    assert members["tmp"].isdir()
    assert members["proc"].mode == 0o555
    home = members["home/user"]
    assert (home.uid, home.gid, home.mode) == (1000, 1000, 0o700)
    notes = members["home/user/notes"]
    assert (notes.uid, notes.gid, notes.mode) == (1000, 1000, 0o600)
    assert (members["srv/bigid"].uid, members["srv/bigid"].gid) == (3_000_000, 3_000_001)
    assert (members["etc"].uid, members["etc"].gid) == (0, 0)
    assert members["etc/hostname"].mtime == EPOCH          # from the future: clamped
    assert members["var/new"].mtime == EPOCH
    assert members["var/old"].mtime == PAST - 12345        # from the past: kept
    assert members["etc"].mtime == PAST


def test_file_contents(members: dict[str, tarfile.TarInfo], layer: tuple[LayerInfo, bytes]) -> None:
    with open_tar(layer[1]) as tar:
        for e in TREE:
            if e.kind == "file" and e.path in members:
                f = tar.extractfile(e.path)
                assert f is not None
                assert f.read() == e.data, e.path
    assert members["etc/empty"].isreg()
    assert members["etc/empty"].size == 0


def test_symlinks_keep_their_targets(members: dict[str, tarfile.TarInfo]) -> None:
    assert members["bin"].issym()
    assert members["bin"].linkname == "usr/bin"
    assert members["etc/localtime"].issym()
    assert members["etc/localtime"].linkname == "/usr/share/zoneinfo/UTC"
    assert members["etc/localtime"].size == 0


def test_hard_links_point_at_the_first_path(members: dict[str, tarfile.TarInfo]) -> None:
    first = members["usr/bin/hard-a"]
    assert first.isreg()
    assert first.size == len(b"same inode\n")
    second = members["usr/bin/hard-b"]
    assert second.type == tarfile.LNKTYPE
    assert second.linkname == "usr/bin/hard-a"
    assert second.size == 0
    assert second.mode == 0o755
    # Across directories: etc/ sorts before opt/, so etc/hostname carries the data.
    assert members["etc/hostname"].isreg()
    assert members["etc/hostname"].size == 5
    assert members["opt/z-link"].type == tarfile.LNKTYPE
    assert members["opt/z-link"].linkname == "etc/hostname"


def test_special_files(members: dict[str, tarfile.TarInfo]) -> None:
    assert members["var/fifo"].isfifo()
    assert members["var/fifo"].mode == 0o620
    assert members["opt/null"].ischr()
    assert (members["opt/null"].devmajor, members["opt/null"].devminor) == (1, 3)
    assert "var/sock" not in members


def test_capability_xattr_in_pax_header(tree: Path, members: dict[str, tarfile.TarInfo]) -> None:
    on_disk = os.getxattr(tree / "usr/bin/ping", CAP_XATTR)
    magic, permitted = struct.unpack("<II", on_disk[:8])
    assert magic & 0xFF000000 in (0x02000000, 0x03000000)
    assert permitted & (1 << 10)
    value = members["usr/bin/ping"].pax_headers["SCHILY.xattr." + CAP_XATTR]
    assert value.encode("utf-8", "surrogateescape") == on_disk
    for name, m in members.items():
        if name != "usr/bin/ping":
            assert not any(k.startswith("SCHILY.xattr.") for k in m.pax_headers), name


def test_runtime_directories_are_present_but_empty(members: dict[str, tarfile.TarInfo]) -> None:
    for d in RUNTIME:
        assert members[d].isdir(), d
        assert not [n for n in members if n.startswith(d + "/")], d
    assert "dev/null" not in members
    assert "proc/x" not in members
    assert members["dev"].mode == 0o755
    # Only the top-level ones: a dev/ deeper down is ordinary content.
    assert members["srv/dev/keep"].isreg()


def test_gnu_tar_extracts_it_faithfully(tree: Path, layer: tuple[LayerInfo, bytes],
                                        tmp_path: Path) -> None:
    require("tar")
    blob_path = tmp_path / "layer.tar.gz"
    blob_path.write_bytes(layer[1])
    listing = subprocess.run(["tar", "--numeric-owner", "-tvzf", str(blob_path)],
                             check=True, capture_output=True, text=True).stdout
    assert "1000/1000" in listing
    assert "usr/bin/hard-b link to usr/bin/hard-a" in listing
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=security.*",
                    "-xpzf", str(blob_path), "-C", str(out)], check=True, capture_output=True)
    assert stat.S_IMODE(os.lstat(out / "usr/bin/tool").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(out / "tmp").st_mode) == 0o1777
    assert os.lstat(out / "home/user/notes").st_uid == 1000
    a, b = os.lstat(out / "usr/bin/hard-a"), os.lstat(out / "usr/bin/hard-b")
    assert a.st_ino == b.st_ino
    assert os.readlink(out / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert os.getxattr(out / "usr/bin/ping", CAP_XATTR) == \
        os.getxattr(tree / "usr/bin/ping", CAP_XATTR)
    assert os.listdir(out / "dev") == []
    assert int(os.lstat(out / "var/new").st_mtime) == EPOCH


def test_empty_tree(tmp_path: Path) -> None:
    info, blob = write(tmp_path)
    raw = gzip.decompress(blob)
    assert str(info.diff_id) == sha256(raw)
    assert set(raw) == {0}
    with open_tar(blob) as tar:
        assert tar.getnames() == []


def test_missing_root_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        write(tmp_path / "nope")


# -- determinism -------------------------------------------------------------------------------

def test_same_tree_twice_gives_the_same_bytes(tree: Path, layer: tuple[LayerInfo, bytes]) -> None:
    again = write(tree, threads=2)
    assert again == layer


def test_thread_count_does_not_change_the_bytes(tree: Path,
                                                layer: tuple[LayerInfo, bytes]) -> None:
    assert write(tree, threads=1) == layer
    assert write(tree) == layer


def test_copy_made_in_another_order_gives_the_same_layer(
        tmp_path: Path, layer: tuple[LayerInfo, bytes], tree: Path) -> None:
    # Shift inode numbers, then create everything in reverse order with other atimes.
    for i in range(50):
        (tmp_path / f"filler-{i}").write_bytes(b"x")
    other = build_tree(tmp_path / "copy", reverse=True, atime_offset=999)
    assert os.lstat(other / "etc/hostname").st_ino != os.lstat(tree / "etc/hostname").st_ino
    assert os.lstat(other / "etc/hostname").st_atime != os.lstat(tree / "etc/hostname").st_atime
    # In the copy the inode was created as opt/z-link; the layer still names etc/hostname first.
    info, blob = write(other, threads=1)
    assert info == layer[0]
    assert blob == layer[1]


def _mutations() -> dict[str, object]:
    def one_byte(root: Path) -> None:
        p = root / "srv/a/b"
        st = os.lstat(p)
        p.write_bytes(b"c\n")
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    def mode(root: Path) -> None:
        os.chmod(root / "srv/a/b", 0o640)

    def owner(root: Path) -> None:
        os.chown(root / "srv/a/b", 0, 1000)

    def mtime(root: Path) -> None:
        os.utime(root / "srv/a/b", (PAST, PAST + 1))

    def symlink(root: Path) -> None:
        p = root / "bin"
        p.unlink()
        os.symlink("usr/sbin", p)
        os.utime(p, (PAST, PAST), follow_symlinks=False)
        os.utime(root, (PAST, PAST))

    def capability(root: Path) -> None:
        os.removexattr(root / "usr/bin/ping", CAP_XATTR)

    def new_file(root: Path) -> None:
        p = root / "srv/a/c"
        p.write_bytes(b"")
        os.utime(p, (PAST, PAST))
        os.utime(p.parent, (PAST, PAST))

    return {f.__name__: f for f in (one_byte, mode, owner, mtime, symlink, capability, new_file)}


@pytest.mark.parametrize("mutation", sorted(_mutations()))
def test_any_change_changes_the_digest(tmp_path: Path, layer: tuple[LayerInfo, bytes],
                                       mutation: str) -> None:
    root = build_tree(tmp_path / "rootfs")
    base, _ = write(root, threads=1)
    assert base == layer[0]
    _mutations()[mutation](root)  # type: ignore[operator]
    changed, _ = write(root, threads=1)
    assert changed.digest != base.digest
    assert changed.diff_id != base.diff_id


@pytest.mark.parametrize("what", ["future mtime", "atime", "runtime content", "socket"])
def test_changes_the_layer_ignores(tmp_path: Path, layer: tuple[LayerInfo, bytes],
                                   what: str) -> None:
    root = build_tree(tmp_path / "rootfs")
    if what == "future mtime":
        os.utime(root / "var/new", (FUTURE, FUTURE + 1000))
    elif what == "atime":
        for p in (root / "srv/a/b", root / "etc"):
            st = os.lstat(p)
            os.utime(p, ns=(st.st_atime_ns + 10**12, st.st_mtime_ns))
    elif what == "runtime content":
        (root / "proc/x").write_bytes(b"something else entirely")
        (root / "run/new").mkdir()
        os.utime(root / "run", (PAST, PAST))
        os.utime(root / "proc", (PAST, PAST))
    else:
        make_socket(root / "srv/a/sock")
        os.utime(root / "srv/a", (PAST, PAST))
    info, blob = write(root, threads=1)
    assert info == layer[0]
    assert blob == layer[1]


# -- more than one compression block -----------------------------------------------------------

BIG_EPOCH = 1_600_000_000


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big") / "rootfs"
    rng = random.Random(20240101)
    files = {
        "data/random.bin": rng.randbytes(3 * BLOCK // 2 + 17),
        "data/text.txt": b"".join(b"pony %d says hello\n" % i for i in range(80_000)),
        "data/zeros": bytes(BLOCK // 3),
    }
    for i in range(40):
        files[f"data/small/{i:03d}"] = rng.randbytes(rng.randrange(0, 3000))
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_big_tree_round_trips(big_tree: Path, tmp_path: Path) -> None:
    info, blob = write(big_tree, source_date_epoch=BIG_EPOCH, threads=2)
    raw = gzip.decompress(blob)
    assert len(raw) > 3 * BLOCK
    assert str(info.diff_id) == sha256(raw)
    assert str(info.digest) == sha256(blob)
    assert info.size == len(blob)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        got = {}
        for m in tar.getmembers():
            if m.isreg():
                f = tar.extractfile(m)
                assert f is not None
                got[m.name] = f.read()
    assert got == _files_of(big_tree)

    require("tar")
    path = tmp_path / "big.tar.gz"
    path.write_bytes(blob)
    listing = subprocess.run(["tar", "-tvzf", str(path)], check=True, capture_output=True,
                             text=True).stdout
    assert "data/random.bin" in listing
    assert len(listing.splitlines()) == len(iter_tree(big_tree))
    subprocess.run(["gzip", "-t", str(path)], check=True, capture_output=True)


def test_big_tree_is_independent_of_threads(big_tree: Path) -> None:
    one = write(big_tree, source_date_epoch=BIG_EPOCH, threads=1)
    two = write(big_tree, source_date_epoch=BIG_EPOCH, threads=2)
    four = write(big_tree, source_date_epoch=BIG_EPOCH, threads=4)
    assert one == two == four


def test_level_changes_the_blob_not_the_diff_id(big_tree: Path) -> None:
    fast, fast_blob = write(big_tree, source_date_epoch=BIG_EPOCH, level=1, threads=2)
    best, best_blob = write(big_tree, source_date_epoch=BIG_EPOCH, level=9, threads=2)
    assert fast.diff_id == best.diff_id
    assert fast.digest != best.digest
    assert fast_blob != best_blob
    assert best.size < fast.size
    assert gzip.decompress(fast_blob) == gzip.decompress(best_blob)


def test_tar_of_exactly_whole_blocks(tmp_path: Path) -> None:
    # One header, the data, two zero records, padded to 10240: exactly 5 MiB, so the last
    # compression block is empty.
    (tmp_path / "f").write_bytes(b"ab" * ((5 * BLOCK - 4096) // 2))
    os.utime(tmp_path / "f", (PAST, PAST))
    info, blob = write(tmp_path, threads=2)
    raw = gzip.decompress(blob)
    assert len(raw) == 5 * BLOCK
    assert str(info.diff_id) == sha256(raw)
    with open_tar(blob) as tar:
        f = tar.extractfile("f")
        assert f is not None
        assert f.read() == (tmp_path / "f").read_bytes()
