"""Diff layers, whiteouts and the strict unpacking of a base image, on real trees.

We are root: ownership, setuid bits, device nodes and file capabilities are the real thing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import tarfile
from pathlib import Path

import pytest

from alicorn.build.base import apply_layer
from alicorn.errors import ImageError
from alicorn.image.layer import diff_entries, snapshot, write_diff_layer, write_layer

if os.geteuid() != 0:
    pytest.skip("needs root (chown, mknod, security.capability)", allow_module_level=True)

EPOCH = 1_700_000_000
CAP = "security.capability"
CAP_BLOB = struct.pack("<IIIII", 0x02000000 | 0x1, 1 << 10, 0, 0, 0)


def make_base(root: Path) -> None:
    """A small root filesystem with every kind of entry a base image holds."""
    for d in ("etc", "usr/bin", "usr/lib/sysimage/rpm", "var/www/html", "var/old/deep",
              "srv/dir-to-file", "srv/keep", "dev", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "etc/hostname").write_text("pony\n")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    tool = root / "usr/bin/tool"
    tool.write_bytes(b"#!/bin/sh\n")
    os.chown(tool, 0, 0)
    os.chmod(tool, 0o4755)
    ping = root / "usr/bin/ping"
    ping.write_bytes(b"\x7fELF ping\n")
    os.chmod(ping, 0o755)
    os.setxattr(ping, CAP, CAP_BLOB)
    (root / "usr/bin/busybox").write_bytes(b"\x7fELF busybox\n")
    os.link(root / "usr/bin/busybox", root / "usr/bin/sh")
    os.symlink("usr/bin", root / "bin")
    os.symlink("/usr/lib/sysimage/rpm", root / "usr/lib/rpm-link")
    (root / "var/www/html/index.html").write_text("Hello from pony\n")
    web = root / "var/www/html"
    os.chown(web, 48, 48)
    (root / "var/old/deep/file").write_text("old\n")
    (root / "var/gone").write_text("to be removed\n")
    (root / "srv/dir-to-file/child").write_text("x\n")
    (root / "srv/file-to-dir").write_text("x\n")
    (root / "srv/keep/same").write_text("unchanged\n")
    os.mknod(root / "srv/fifo", stat.S_IFIFO | 0o600)
    owned = root / "srv/owned"
    owned.write_text("mine\n")
    os.chown(owned, 1000, 1001)


def change(root: Path) -> None:
    """What a child build does to its base's root."""
    (root / "var/www/html/site.html").write_text("The pony site\n")     # new
    (root / "etc/hostname").write_text("site\n")                          # changed content
    os.chmod(root / "etc/passwd", 0o600)                                  # changed mode
    (root / "var/gone").unlink()                                          # removed file
    for p in sorted((root / "var/old").rglob("*"), reverse=True):         # removed tree
        p.unlink() if p.is_file() else p.rmdir()
    (root / "var/old").rmdir()
    (root / "srv/dir-to-file/child").unlink()
    (root / "srv/dir-to-file").rmdir()
    (root / "srv/dir-to-file").write_text("now a file\n")                 # dir -> file
    (root / "srv/file-to-dir").unlink()
    (root / "srv/file-to-dir").mkdir()                                    # file -> dir
    (root / "srv/file-to-dir/inside").write_text("in\n")
    os.link(root / "var/www/html/site.html", root / "srv/site-link")     # new hard link


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """What a layer must carry of every path: type, mode, owner, content or target, xattr,
    and which paths share an inode."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            body: object = None
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(full)
            try:
                cap = os.getxattr(full, CAP, follow_symlinks=False)
            except OSError:
                cap = None
            link = None
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                link = inodes.setdefault(st.st_ino, rel)
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                        st.st_gid, body, cap, link)
    return out


def layer_of(root: Path) -> bytes:
    buf = io.BytesIO()
    write_layer(root, buf, source_date_epoch=EPOCH)
    return buf.getvalue()


def diff_of(root: Path, before: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    write_diff_layer(root, before, buf, source_date_epoch=EPOCH)  # type: ignore[arg-type]
    return buf.getvalue()


def apply(blob: bytes, root: Path, diff_id: str | None = None) -> None:
    from alicorn.digest import Digest
    apply_layer(io.BytesIO(blob), root, label="test layer",
                diff_id=Digest(diff_id) if diff_id else None)


def names(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return tar.getnames()


@pytest.fixture
def base_blob(tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    src.mkdir()
    make_base(src)
    return layer_of(src)


def test_unpacking_keeps_setuid_owners_capabilities_and_hard_links(base_blob: bytes,
                                                                  tmp_path: Path) -> None:
    src = tmp_path / "src"
    root = tmp_path / "root"
    root.mkdir()
    apply(base_blob, root)
    assert tree(root) == tree(src)
    assert stat.S_IMODE(os.lstat(root / "usr/bin/tool").st_mode) == 0o4755
    assert os.getxattr(root / "usr/bin/ping", CAP) == CAP_BLOB
    assert os.lstat(root / "usr/bin/sh").st_ino == os.lstat(root / "usr/bin/busybox").st_ino
    assert (os.lstat(root / "srv/owned").st_uid, os.lstat(root / "srv/owned").st_gid) == \
        (1000, 1001)
    assert stat.S_ISFIFO(os.lstat(root / "srv/fifo").st_mode)
    assert os.readlink(root / "usr/lib/rpm-link") == "/usr/lib/sysimage/rpm"


def test_diff_layer_holds_only_changes_and_whiteouts(base_blob: bytes, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    apply(base_blob, root)
    before = snapshot(root)
    change(root)
    listed = names(diff_of(root, before))
    assert listed == sorted(listed, key=lambda n: [p.encode() for p in n.split("/")])
    assert "var/www/html/site.html" in listed and "srv/site-link" in listed
    assert "etc/hostname" in listed and "etc/passwd" in listed
    assert "var/.wh.gone" in listed and "var/.wh.old" in listed
    # The removed directory's contents go with it; no whiteout for each of them.
    assert not any(n.startswith("var/old/") for n in listed)
    # A directory that became a file, a file that became a directory: replaced whole.
    assert "srv/dir-to-file" in listed and "srv/.wh.dir-to-file" not in listed
    assert "srv/file-to-dir/inside" in listed
    # Unchanged files stay in the base's layer only; the directories above changes come too.
    for unchanged in ("usr/bin/busybox", "usr/bin/ping", "srv/keep/same", "srv/owned", "bin"):
        assert unchanged not in listed
    assert {"var", "var/www", "var/www/html", "srv"} <= set(listed)
    with tarfile.open(fileobj=io.BytesIO(diff_of(root, before))) as tar:
        wh = tar.getmember("var/.wh.gone")
        assert (wh.mode, wh.uid, wh.gid, wh.size, wh.mtime) == (0, 0, 0, 0, EPOCH)
        link = tar.getmember("srv/site-link")
        assert (link.islnk() and link.linkname == "var/www/html/site.html") or \
            tar.getmember("var/www/html/site.html").islnk()
        assert all(m.mtime <= EPOCH for m in tar.getmembers())


def test_base_plus_diff_is_the_changed_tree(base_blob: bytes, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    apply(base_blob, root)
    before = snapshot(root)
    change(root)
    diff = diff_of(root, before)
    again = tmp_path / "again"
    again.mkdir()
    apply(base_blob, again)
    apply(diff, again)
    assert tree(again) == tree(root)
    assert not (again / "var/old").exists() and not (again / "var/gone").exists()
    assert os.lstat(again / "srv/site-link").st_ino == \
        os.lstat(again / "var/www/html/site.html").st_ino


def test_unchanged_root_gives_an_empty_diff(base_blob: bytes, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    apply(base_blob, root)
    assert diff_entries(root, snapshot(root)) == ([], [])
    # Reading a file changes nothing that counts (atime is not in the snapshot).
    before = snapshot(root)
    (root / "etc/hostname").read_bytes()
    assert diff_entries(root, before) == ([], [])


def test_diff_layer_is_deterministic(base_blob: bytes, tmp_path: Path) -> None:
    digests = set()
    for name in ("one", "two"):
        root = tmp_path / name
        root.mkdir()
        apply(base_blob, root)
        before = snapshot(root)
        change(root)
        digests.add(hashlib.sha256(diff_of(root, before)).hexdigest())
    assert len(digests) == 1


def _tar(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes], gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            if isinstance(e, tuple):
                info, data = e
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(e)
    return gzip.compress(buf.getvalue(), mtime=0) if gz else buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def test_opaque_whiteout_clears_the_lower_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    apply(_tar(_info("d", tarfile.DIRTYPE, mode=0o755), (_info("d/old"), b"old"),
               (_info("d/older"), b"older")), root)
    apply(_tar(_info("d", tarfile.DIRTYPE, mode=0o755), (_info("d/new"), b"new"),
               _info("d/.wh..wh..opq")), root)
    assert sorted(os.listdir(root / "d")) == ["new"]


@pytest.mark.parametrize("evil, why", [
    ((_info("../escape"),), "climbs out of the root"),
    ((_info("/etc/absolute"),), "absolute path"),
    ((_info("link", tarfile.SYMTYPE, linkname="/outside"), _info("link/file")),
     "through the symlink /link"),
    ((_info("link", tarfile.SYMTYPE, linkname="../.."), _info("link/x/y")),
     "through the symlink /link"),
    ((_info("hard", tarfile.LNKTYPE, linkname="../../etc/passwd"),), "climbs out"),
    ((_info("d", tarfile.DIRTYPE, mode=0o755), _info("hard", tarfile.LNKTYPE, linkname="d")),
     "not a regular file"),
    ((_info("s", tarfile.SYMTYPE, linkname="/etc/passwd"),
      _info("hard", tarfile.LNKTYPE, linkname="s")), "not a regular file"),
    ((_info("l", tarfile.SYMTYPE, linkname="/"), _info("hard", tarfile.LNKTYPE,
                                                       linkname="l/etc/passwd")),
     "through the symlink /l"),
])
def test_unpacking_refuses_escapes(evil: tuple[tarfile.TarInfo, ...], why: str,
                                   tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    root = tmp_path / "root"
    root.mkdir()
    entries = [(e, b"payload") if e.isreg() else e for e in evil]
    with pytest.raises(ImageError, match=why):
        apply(_tar(*entries), root)
    assert not outside.exists() and not (tmp_path / "escape").exists()
    assert not any(p.is_file() and p.read_bytes() == b"payload"
                   for p in tmp_path.rglob("*") if not p.is_symlink())


def test_unpacking_checks_the_diff_id(base_blob: bytes, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    good = "sha256:" + hashlib.sha256(gzip.decompress(base_blob)).hexdigest()
    apply(base_blob, root, diff_id=good)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ImageError, match="not to the diff_id"):
        apply(base_blob, other, diff_id="sha256:" + "0" * 64)


def test_truncated_layer_is_an_error(base_blob: bytes, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ImageError):
        apply(base_blob[: len(base_blob) // 2], root)
