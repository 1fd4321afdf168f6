"""Wheels pinned by hash and the recipe's files, installed into a root filesystem."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from wheels import make_wheel

from alicorn.build.artifacts import install_artifacts
from alicorn.build.files import add_files
from alicorn.errors import ComposeError
from alicorn.recipe import parse_recipe

BASE = """\
recipe: 1
name: t
distribution: {type: debian, release: bookworm}
repositories: [{name: b, suite: bookworm}]
packages: [python3]
"""


def _recipe(base: Path, extra: str):  # type: ignore[no-untyped-def]
    return parse_recipe(BASE + extra, file=str(base / "r.yaml"), base_dir=base)


def test_wheel_installs_into_the_images_site_packages(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    rootfs = tmp_path / "root"
    (rootfs / "usr/lib/python3.11").mkdir(parents=True)
    r = _recipe(tmp_path, f"artifacts:\n  - type: wheel\n    url: w/{wheel.name}\n"
                          f"    sha256: {sha}\n")
    pkgs = install_artifacts(r, rootfs, tmp_path / "dl")
    site = rootfs / "usr/local/lib/python3.11/dist-packages"
    assert (site / "ponytools/__init__.py").read_text() == "VERSION = '1.2.3'\n"
    assert (site / "ponytools-1.2.3.dist-info/INSTALLER").read_text() == "alicorn\n"
    assert [(p.type, p.name, p.version, p.purl, p.checksum) for p in pkgs] == [
        ("pypi", "ponytools", "1.2.3", "pkg:pypi/ponytools@1.2.3", f"sha256:{sha}")]


def test_wheel_with_wrong_hash_is_refused(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w")
    rootfs = tmp_path / "root"
    (rootfs / "usr/lib/python3.11").mkdir(parents=True)
    r = _recipe(tmp_path, f"artifacts:\n  - type: wheel\n    url: w/{wheel.name}\n"
                          f"    sha256: '{'0' * 64}'\n")
    with pytest.raises(ComposeError, match="but the recipe pins 0000"):
        install_artifacts(r, rootfs, tmp_path / "dl")
    assert not (rootfs / "usr/local").exists()


def test_wheel_needs_python_or_a_target(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    rootfs = tmp_path / "root"
    rootfs.mkdir()
    r = _recipe(tmp_path, f"artifacts:\n  - type: wheel\n    url: w/{wheel.name}\n"
                          f"    sha256: {sha}\n")
    with pytest.raises(ComposeError, match="has no Python"):
        install_artifacts(r, rootfs, tmp_path / "dl")
    r = _recipe(tmp_path, f"artifacts:\n  - type: wheel\n    url: w/{wheel.name}\n"
                          f"    sha256: {sha}\n    target: /opt/py\n")
    install_artifacts(r, rootfs, tmp_path / "dl")
    assert (rootfs / "opt/py/ponytools/__init__.py").is_file()


def test_files_are_written_with_mode_and_owner(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("<p>hi</p>\n")
    rootfs = tmp_path / "root"
    (rootfs / "etc").mkdir(parents=True)
    r = _recipe(tmp_path, "files:\n"
                          "  - {path: /var/www/html/index.html, source: page.html}\n"
                          "  - {path: /etc/motd, content: \"hello\\n\", mode: '0600', "
                          "owner: '33:33'}\n"
                          "  - {path: /srv/data, directory: true, mode: '0750'}\n")
    add_files(r, rootfs)
    assert (rootfs / "var/www/html/index.html").read_text() == "<p>hi</p>\n"
    motd = os.stat(rootfs / "etc/motd")
    assert (motd.st_mode & 0o777, motd.st_uid, motd.st_gid) == (0o600, 33, 33)
    assert (rootfs / "etc/motd").read_text() == "hello\n"
    assert os.stat(rootfs / "srv/data").st_mode & 0o777 == 0o750


def test_files_never_escape_the_root_through_symlinks(tmp_path: Path) -> None:
    rootfs = tmp_path / "root"
    (rootfs / "var/www").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    # A hostile or careless root: the content directory points at the host's directory.
    os.symlink(str(outside), rootfs / "var/www/html")
    r = _recipe(tmp_path, "files:\n  - {path: /var/www/html/index.html, content: x}\n")
    add_files(r, rootfs)
    assert list(outside.iterdir()) == []
    assert (rootfs / str(outside).lstrip("/") / "index.html").read_text() == "x"
