"""NpmSource on this host's real npm installation and on crafted node_modules trees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from alicorn.inventory import npm
from alicorn.inventory.npm import NpmSource
from alicorn.inventory.rootfs import RootFS
from conftest import require


def _pkg(d: Path, doc: object) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "package.json").write_text(json.dumps(doc))


def test_the_hosts_real_npm_tree(tmp_path: Path) -> None:
    require("npm")
    real = Path("/usr/lib/node_modules/npm")
    if not (real / "package.json").is_file():
        pytest.skip("npm is not installed under /usr/lib/node_modules")
    root = tmp_path / "root"
    shutil.copytree(real, root / "usr/lib/node_modules/npm", symlinks=True)
    result = NpmSource().read(RootFS(root))
    assert result.warnings == ()
    version = subprocess.run(["npm", "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    top = [p for p in result.packages if p.path == "usr/lib/node_modules/npm/package.json"]
    assert [(p.name, p.version) for p in top] == [("npm", version)]
    # Every dependency npm bundles in its own node_modules is found, scoped ones included.
    expected = set()
    for pj in (real / "node_modules").rglob("package.json"):
        rel = pj.relative_to(real).parts
        if (len(rel) >= 3 and rel[-3] == "node_modules") or \
                (len(rel) >= 4 and rel[-4] == "node_modules" and rel[-3].startswith("@")):
            doc = json.loads(pj.read_text())
            if not pj.is_symlink() and doc.get("name") and doc.get("version"):
                expected.add((doc["name"], doc["version"]))
    assert len(expected) > 50 and any(n.startswith("@") for n, _ in expected)
    assert {(p.name, p.version) for p in result.packages} - {("npm", version)} == expected


def test_scoped_nested_and_not_packages(tmp_path: Path) -> None:
    root = tmp_path / "root"
    app = root / "srv/app"
    _pkg(app, {"name": "myapp", "version": "1.0.0"})                 # the app: not a dependency
    _pkg(app / "node_modules/lodash", {"name": "lodash", "version": "4.17.20"})
    _pkg(app / "node_modules/lodash/lib", {"type": "module"})        # not a package
    _pkg(app / "node_modules/@babel/core", {"name": "@babel/core", "version": "7.12.0"})
    _pkg(app / "node_modules/@babel/core/node_modules/semver", {"name": "semver",
                                                                "version": "5.7.1"})
    _pkg(app / "node_modules/bad", {"name": "bad", "version": 3})
    (app / "node_modules/broken").mkdir()
    (app / "node_modules/broken/package.json").write_text("{not json")
    result = NpmSource().read(RootFS(root))
    got = {(p.name, p.version, p.path) for p in result.packages}
    assert got == {
        ("lodash", "4.17.20", "srv/app/node_modules/lodash/package.json"),
        ("@babel/core", "7.12.0", "srv/app/node_modules/@babel/core/package.json"),
        ("semver", "5.7.1", "srv/app/node_modules/@babel/core/node_modules/semver/package.json"),
    }
    babel = next(p for p in result.packages if p.name == "@babel/core")
    assert babel.purl == "pkg:npm/%40babel/core@7.12.0" and babel.type == "npm"
    assert any("bad/package.json: no string name and version" in w for w in result.warnings)
    assert any("broken/package.json: not read" in w for w in result.warnings)


def test_huge_and_escaping_package_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    nm = root / "usr/lib/node_modules"
    _pkg(nm / "big", {"name": "big", "version": "1.0.0", "pad": "x" * 5000})
    monkeypatch.setattr(npm, "MAX_PACKAGE_JSON", 1000)
    (nm / "link").mkdir(parents=True)
    _pkg(tmp_path / "outside", {"name": "stolen", "version": "6.6.6"})
    os.symlink(str(tmp_path / "outside/package.json"), nm / "link/package.json")
    os.symlink(str(tmp_path / "outside"), nm / "linkdir")
    result = NpmSource().read(RootFS(root))
    assert result.packages == ()
    assert any("big/package.json: not read" in w and "more than the 1000" in w
               for w in result.warnings), result.warnings
