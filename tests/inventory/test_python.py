"""PythonSource on this project's real virtualenv and on crafted site-packages."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

from alicorn.inventory.python import PythonSource
from alicorn.inventory.rootfs import RootFS


def _dist_info(site: Path, dirname: str, text: str | None) -> None:
    d = site / dirname
    d.mkdir(parents=True)
    if text is not None:
        (d / ("METADATA" if dirname.endswith(".dist-info") else "PKG-INFO")).write_text(text)


def test_the_project_virtualenv_as_a_root() -> None:
    venv = Path(sys.prefix)
    result = PythonSource().read(RootFS(venv))
    found = {p.name: p.version for p in result.packages}
    # importlib.metadata, reading the same directories, agrees on every distribution it sees
    # in the venv's own site-packages.
    site = next(venv.glob("lib/python3*/site-packages"))
    expected = {}
    for dist in metadata.distributions(path=[str(site)]):
        from packaging.utils import canonicalize_name
        expected[canonicalize_name(dist.metadata["Name"])] = dist.version
    assert expected and len(expected) > 10
    assert {k: found.get(k) for k in expected} == expected
    pkg = next(p for p in result.packages if p.name == "packageurl-python")
    assert pkg.purl == f"pkg:pypi/packageurl-python@{pkg.version}"
    assert pkg.path is not None and pkg.path.endswith(".dist-info")
    assert pkg.path.startswith("lib/python3")


def test_everywhere_python_installs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _dist_info(root / "usr/lib/python3.12/site-packages", "Requests-2.31.0.dist-info",
               "Metadata-Version: 2.1\nName: Requests\nVersion: 2.31.0\n\nlong text\n")
    _dist_info(root / "usr/lib/python3/dist-packages", "urllib3-1.26.12.egg-info",
               "Metadata-Version: 1.2\nName: urllib3\nVersion: 1.26.12\n")
    (root / "usr/local/lib/python3.11/site-packages").mkdir(parents=True)
    (root / "usr/local/lib/python3.11/site-packages/six-1.16.0.egg-info").write_text(
        "Metadata-Version: 1.1\nName: six\nVersion: 1.16.0\n")
    _dist_info(root / "opt/app/venv/lib/python3.11/site-packages", "Jinja2-2.10.dist-info",
               "Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10\n")
    _dist_info(root / "srv/x/.venv/lib/python3.11/site-packages", "zope.interface-5.0.dist-info",
               "Metadata-Version: 2.1\nName: zope.interface\nVersion: 5.0\n")
    # A source checkout's egg-info is not an installed package.
    _dist_info(root / "home/dev/src", "mything.egg-info",
               "Metadata-Version: 2.1\nName: mything\nVersion: 0.1\n")
    result = PythonSource().read(RootFS(root))
    assert result.warnings == ()
    got = {(p.name, p.version, p.path) for p in result.packages}
    assert got == {
        ("requests", "2.31.0", "usr/lib/python3.12/site-packages/Requests-2.31.0.dist-info"),
        ("urllib3", "1.26.12", "usr/lib/python3/dist-packages/urllib3-1.26.12.egg-info"),
        ("six", "1.16.0", "usr/local/lib/python3.11/site-packages/six-1.16.0.egg-info"),
        ("jinja2", "2.10", "opt/app/venv/lib/python3.11/site-packages/Jinja2-2.10.dist-info"),
        ("zope-interface", "5.0",
         "srv/x/.venv/lib/python3.11/site-packages/zope.interface-5.0.dist-info"),
    }


def test_broken_metadata_is_a_warning(tmp_path: Path) -> None:
    site = tmp_path / "root/usr/lib/python3.12/site-packages"
    _dist_info(site, "nometa-1.0.dist-info", None)
    _dist_info(site, "noname-3.2.dist-info", "Metadata-Version: 2.1\nSummary: x\n")
    _dist_info(site, "garbage.dist-info", "\x00\x01 not an email at all")
    _dist_info(site, "ok-1.0.dist-info", "Name: ok\nVersion: 1.0\n")
    result = PythonSource().read(RootFS(tmp_path / "root"))
    assert {(p.name, p.version) for p in result.packages} == {("ok", "1.0"), ("noname", "3.2")}
    assert any("nometa-1.0.dist-info: no METADATA" in w for w in result.warnings)
    assert any("noname-3.2.dist-info/METADATA: no Name or Version; taken from" in w
               for w in result.warnings)
    assert any("garbage.dist-info/METADATA: no Name or Version, skipped" in w
               for w in result.warnings)


def test_metadata_linking_out_of_the_root_is_not_read(tmp_path: Path) -> None:
    site = tmp_path / "root/usr/lib/python3.12/site-packages"
    d = site / "evil-1.0.dist-info"
    d.mkdir(parents=True)
    outside = tmp_path / "outside-METADATA"
    outside.write_text("Name: stolen\nVersion: 9\n")
    os.symlink(str(outside), d / "METADATA")
    result = PythonSource().read(RootFS(tmp_path / "root"))
    assert result.packages == ()
    assert any("evil-1.0.dist-info: no METADATA" in w for w in result.warnings)
