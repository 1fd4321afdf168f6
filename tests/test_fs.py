"""resolve_in_root on real trees with hostile symlinks: it resolves as a chroot would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alicorn.errors import BadInput
from alicorn.fs import resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    for d in ("etc/nginx", "usr/bin", "var/www", "a/b/c", "srv"):
        (r / d).mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.symlink("/etc", r / "var" / "www" / "html")               # absolute, points at /etc
    os.symlink("../../../../../../../etc", r / "a" / "b" / "c" / "up")   # climbs past /
    os.symlink("busybox", r / "usr" / "bin" / "sh")               # relative, same directory
    os.symlink("usr/bin", r / "bin")                              # relative at the top
    os.symlink("/", r / "srv" / "root")
    os.symlink("..", r / "srv" / "parent")
    return r


def test_absolute_symlink_stays_inside_root(root: Path) -> None:
    assert resolve_in_root(root, "/var/www/html/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "/var/www/html") == root / "etc"
    assert resolve_in_root(root, "srv/root/etc/nginx") == root / "etc" / "nginx"
    # The host's /etc is never the answer.
    assert not str(resolve_in_root(root, "/var/www/html/passwd")).startswith("/etc")


def test_relative_dotdot_symlinks_clamp_at_root(root: Path) -> None:
    assert resolve_in_root(root, "/a/b/c/up/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "srv/parent/srv/parent/etc") == root / "etc"
    assert resolve_in_root(root, "srv/parent/../../etc") == root / "etc"


def test_dotdot_in_the_path_clamps_at_root(root: Path) -> None:
    assert resolve_in_root(root, "../../../etc/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "/a/b/../../../../etc") == root / "etc"
    assert resolve_in_root(root, "/..") == root
    assert resolve_in_root(root, "/") == root
    assert resolve_in_root(root, "") == root


def test_relative_symlinks_resolve_beside_the_link(root: Path) -> None:
    assert resolve_in_root(root, "/usr/bin/sh") == root / "usr" / "bin" / "busybox"
    assert resolve_in_root(root, "/bin/sh") == root / "usr" / "bin" / "busybox"


def test_dot_and_duplicate_slashes(root: Path) -> None:
    assert resolve_in_root(root, "//etc/./nginx//") == root / "etc" / "nginx"
    assert resolve_in_root(root, "etc/nginx") == root / "etc" / "nginx"


def test_symlink_loops_raise(root: Path) -> None:
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("self", root / "self")
    os.symlink("/deep/x", root / "deep")
    for path in ("/loop-a", "/loop-b/file", "/self", "/deep"):
        with pytest.raises(BadInput, match="too many levels of symbolic links") as info:
            resolve_in_root(root, path)
        assert path in str(info.value)
    # A loop in the last component is not followed when follow_last is False.
    assert resolve_in_root(root, "/self", follow_last=False) == root / "self"


def test_forty_links_are_followed(root: Path) -> None:
    (root / "end").mkdir()
    os.symlink("end", root / "l0")
    for i in range(1, 41):
        os.symlink(f"l{i - 1}", root / f"l{i}")
    assert resolve_in_root(root, "l39") == root / "end"         # 40 links
    with pytest.raises(BadInput):
        resolve_in_root(root, "l40")                              # 41 links


def test_follow_last_false_returns_the_link(root: Path) -> None:
    assert resolve_in_root(root, "/var/www/html", follow_last=False) == \
        root / "var" / "www" / "html"
    assert resolve_in_root(root, "/usr/bin/sh", follow_last=False) == root / "usr" / "bin" / "sh"
    # Links before the last component are still followed.
    assert resolve_in_root(root, "/bin/sh", follow_last=False) == root / "usr" / "bin" / "sh"
    assert resolve_in_root(root, "/var/www/html/passwd", follow_last=False) == \
        root / "etc" / "passwd"


def test_missing_components_are_appended(root: Path) -> None:
    assert resolve_in_root(root, "/etc/missing/deeper/file") == \
        root / "etc" / "missing" / "deeper" / "file"
    assert resolve_in_root(root, "/var/www/html/new/index.html") == \
        root / "etc" / "new" / "index.html"
    assert resolve_in_root(root, "/nope/../etc") == root / "etc"
    assert not (root / "etc" / "missing").exists()


def test_dangling_symlink_resolves_to_its_target(root: Path) -> None:
    os.symlink("/opt/app/current", root / "app")
    assert resolve_in_root(root, "/app/bin") == root / "opt" / "app" / "current" / "bin"


@pytest.mark.parametrize("target", ["/", "..", "../..", "/..", "/../../etc", "./../x",
                                    "///etc", "/./../etc"])
def test_never_outside_root(root: Path, target: str) -> None:
    os.symlink(target, root / "srv" / "hostile")
    for path in ("/srv/hostile", "/srv/hostile/passwd", "/srv/hostile/../.."):
        resolved = resolve_in_root(root, path)
        assert resolved == root or root in resolved.parents, (target, path, resolved)


def test_double_slash_target_stays_inside_root(root: Path) -> None:
    os.symlink("//etc", root / "srv" / "escape")
    assert resolve_in_root(root, "/srv/escape/passwd") == root / "etc" / "passwd"
