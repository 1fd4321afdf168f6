"""The RPM composer against real tools: rpmbuild and createrepo_c build the pony repository,
dnf composes it, rpm reads it back.  Nothing is mocked."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from alicorn.compose.interface import BuildContext, Package
from alicorn.compose.rpm import RpmComposer
from alicorn.errors import ComposeError
from alicorn.monitor import Monitor
from alicorn.proc import BuildLog
from alicorn.recipe import Recipe, load_recipe

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pony" / "rpm"
BUILD_REPO = EXAMPLE / "build-repo"
SOURCE_DATE_EPOCH = 1700000000

_missing = [t for t in ("rpmbuild", "createrepo_c", "modifyrepo_c", "dnf", "rpm")
            if shutil.which(t) is None]
if _missing:
    pytest.skip(f"needs {', '.join(_missing)} (Debian: rpm, createrepo-c, dnf)",
                allow_module_level=True)
pytest.importorskip("rpm", reason="needs the rpm Python bindings (Debian: python3-rpm)")


class RecordingMonitor(Monitor):
    def __init__(self) -> None:
        self.events: list[tuple[int, int | None, str | None]] = []

    def progress(self, done: int, total: int | None = None, detail: str | None = None) -> None:
        self.events.append((done, total, detail))


def build_repo(out: Path, version: str) -> Path:
    subprocess.run([sys.executable, str(BUILD_REPO), str(out), "--version", version],
                   check=True, capture_output=True, text=True,
                   env={**os.environ, "SOURCE_DATE_EPOCH": "1711929600"})
    return out


@pytest.fixture(scope="session")
def pony_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example exactly as shipped: pony.yaml next to the repo build-repo makes."""
    d = tmp_path_factory.mktemp("pony-rpm")
    shutil.copy(EXAMPLE / "pony.yaml", d / "pony.yaml")
    build_repo(d / "repo", "both")
    return d


@pytest.fixture(scope="session")
def repo_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repo(tmp_path_factory.mktemp("repo-v1") / "repo", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by all composes, as the worker shares it between builds.
    return tmp_path_factory.mktemp("dnf-cache")


def make_ctx(base: Path, cache_dir: Path) -> BuildContext:
    base.mkdir(parents=True, exist_ok=True)
    return BuildContext(log=BuildLog(base / "build.log"), monitor=RecordingMonitor(),
                        workdir=base / "work", cache_dir=cache_dir,
                        source_date_epoch=SOURCE_DATE_EPOCH)


def variant(tmp: Path, pony_dir: Path, *, url: str, extra: str = "",
            exclude_docs: bool = False) -> Recipe:
    """pony.yaml with another repository url (and optionally more packages)."""
    text = (pony_dir / "pony.yaml").read_text()
    assert "    url: repo\n" in text
    text = text.replace("    url: repo\n", f"    url: {url}\n")
    if extra:
        text = text.replace("  - pony-content\n", f"  - pony-content\n  - {extra}\n")
    if exclude_docs:
        text = text.replace('  release: "40"\n', '  release: "40"\n  exclude_docs: true\n')
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "pony.yaml").write_text(text)
    return load_recipe(tmp / "pony.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything about a tree that ends up in an image layer except mtimes."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                content: object = ("symlink", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                content = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                content = ("other",)
            out[rel] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, content)
    return out


# -- composing ------------------------------------------------------------------------------

def test_compose_pony(pony_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(pony_dir / "pony.yaml")
    ctx = make_ctx(tmp_path, cache_dir)
    composer = RpmComposer(recipe, ctx)
    rootfs = tmp_path / "rootfs"
    started = time.monotonic()
    composer.compose(rootfs)
    elapsed = time.monotonic() - started

    busybox = rootfs / "usr/bin/busybox"
    assert busybox.is_file() and os.access(busybox, os.X_OK)
    assert os.readlink(rootfs / "usr/bin/httpd") == "busybox"
    assert "Hello from pony" in (rootfs / "var/www/html/index.html").read_text()
    assert (rootfs / "tmp").lstat().st_mode & 0o7777 == 0o1777
    assert (rootfs / "usr/share/doc/busybox/RELEASE").read_text().startswith(
        "busybox 1.35.0-2.fc40")

    # The rpm database where Fedora keeps it, self-contained, with the compatibility symlink.
    dbdir = rootfs / "usr/lib/sysimage/rpm"
    assert (dbdir / "rpmdb.sqlite").is_file()
    assert not (dbdir / "rpmdb.sqlite-shm").exists()
    assert not (dbdir / "rpmdb.sqlite-wal").exists()
    assert os.readlink(rootfs / "var/lib/rpm") == "../../usr/lib/sysimage/rpm"
    assert not (rootfs / "root/.rpmdb").exists()
    # Nothing of dnf's own state, logs or caches.
    for leftover in ("var/lib/dnf", "var/cache/dnf", "var/log/dnf.log", "var/log/hawkey.log",
                     "var/log/dnf.rpm.log", "var/log/dnf.librepo.log", "etc/dnf"):
        assert not (rootfs / leftover).exists(), leftover
    assert sorted(p.name for p in (rootfs / "var/log").iterdir()) == []

    before = snapshot(rootfs)
    packages = composer.packages(rootfs)
    assert snapshot(rootfs) == before, "packages() must not change the composed root"
    def sha(name: str, version: str) -> str:
        """The sha256 of the package file in the repository, as the build must record it."""
        rpm_file = next((pony_dir / "repo").rglob(f"{name}-{version}.*.rpm"))
        return "sha256:" + hashlib.sha256(rpm_file.read_bytes()).hexdigest()

    assert packages == [
        Package(type="rpm", name="busybox", version="1.35.0-2.fc40", arch="x86_64",
                source="busybox-1.35.0-2.fc40.src.rpm",
                checksum=sha("busybox", "1.35.0-2.fc40"),
                purl="pkg:rpm/alicorn/busybox@1.35.0-2.fc40?arch=x86_64&distro=pony-40"),
        Package(type="rpm", name="fedora-release-pony", version="3.18-1.fc40", arch="noarch",
                source="pony-filesystem-3.18-1.fc40.src.rpm",
                checksum=sha("fedora-release-pony", "3.18-1.fc40"),
                purl="pkg:rpm/alicorn/fedora-release-pony@3.18-1.fc40?arch=noarch"
                     "&distro=pony-40"),
        Package(type="rpm", name="pony-content", version="1.0-1.fc40", arch="noarch",
                source="pony-content-1.0-1.fc40.src.rpm",
                checksum=sha("pony-content", "1.0-1.fc40"),
                purl="pkg:rpm/alicorn/pony-content@1.0-1.fc40?arch=noarch&distro=pony-40"),
        Package(type="rpm", name="pony-filesystem", version="3.18-1.fc40", arch="noarch",
                source="pony-filesystem-3.18-1.fc40.src.rpm",
                checksum=sha("pony-filesystem", "3.18-1.fc40"),
                purl="pkg:rpm/alicorn/pony-filesystem@3.18-1.fc40?arch=noarch&distro=pony-40"),
    ]

    # rpm itself agrees, and the install times come from SOURCE_DATE_EPOCH.
    out = subprocess.run(
        ["rpm", "--root", str(rootfs), "--dbpath", "/usr/lib/sysimage/rpm", "-qa",
         "--qf", "%{NAME} %{INSTALLTIME} %{INSTALLTID}\n"],
        check=True, capture_output=True, text=True).stdout
    times = {line.split()[0]: (int(line.split()[1]), int(line.split()[2]))
             for line in out.splitlines()}
    assert set(times) == {"busybox", "pony-content", "pony-filesystem", "fedora-release-pony"}
    assert {tid for _, tid in times.values()} == {SOURCE_DATE_EPOCH}
    assert sorted(t for t, _ in times.values()) == [SOURCE_DATE_EPOCH + i for i in range(4)]

    monitor = ctx.monitor
    assert isinstance(monitor, RecordingMonitor)
    assert (4, 4, None) in monitor.events
    assert any(d and "busybox" in d for _, _, d in monitor.events)
    print(f"compose took {elapsed:.2f} s")


def test_two_composes_are_byte_identical(pony_dir: Path, cache_dir: Path,
                                         tmp_path: Path) -> None:
    recipe = load_recipe(pony_dir / "pony.yaml")
    roots = []
    for i in (1, 2):
        if i == 2:
            time.sleep(1.1)  # a different wall-clock second: it must not show anywhere
        rootfs = tmp_path / f"rootfs{i}"
        RpmComposer(recipe, make_ctx(tmp_path / f"build{i}", cache_dir)).compose(rootfs)
        roots.append(snapshot(rootfs))
    first, second = roots
    assert first.keys() == second.keys()
    different = [k for k in first if first[k] != second[k]]
    assert different == []
    assert "usr/lib/sysimage/rpm/rpmdb.sqlite" in first


def test_exclude_docs(pony_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    recipe = variant(tmp_path / "recipe", pony_dir, url=str(pony_dir / "repo"),
                     exclude_docs=True)
    rootfs = tmp_path / "rootfs"
    RpmComposer(recipe, make_ctx(tmp_path, cache_dir)).compose(rootfs)
    assert (rootfs / "usr/bin/busybox").is_file()
    assert not (rootfs / "usr/share/doc/busybox/RELEASE").exists()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_compose_from_http_repository(pony_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    handler = functools.partial(QuietHandler, directory=str(pony_dir / "repo"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        recipe = variant(tmp_path / "recipe", pony_dir, url=url)
        composer = RpmComposer(recipe, make_ctx(tmp_path, cache_dir))
        (state,) = composer.repo_states()
        assert state.url == url.rstrip("/")
        rootfs = tmp_path / "rootfs"
        composer.compose(rootfs)

        # A server that answers, but not with a repository.
        missing = RpmComposer(variant(tmp_path / "recipe404", pony_dir, url=url + "Packages/"),
                              make_ctx(tmp_path / "404", cache_dir))
        with pytest.raises(ComposeError, match=r"repository 'pony' .* HTTP 404"):
            missing.repo_states()
        with pytest.raises(ComposeError, match=r"repository 'pony' .*not reachable"):
            missing.compose(tmp_path / "rootfs404")
    finally:
        server.shutdown()
        server.server_close()
    assert [p.version for p in composer.packages(rootfs) if p.name == "busybox"] == [
        "1.35.0-2.fc40"]
    # keepcache: the downloaded packages stay in the shared cache for the next build.
    assert any(cache_dir.glob("pony-*/packages/busybox-1.35.0-2.fc40.x86_64.rpm"))


# -- errors ---------------------------------------------------------------------------------

def test_unknown_package(pony_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    recipe = variant(tmp_path / "recipe", pony_dir, url=str(pony_dir / "repo"),
                     extra="no-such-package")
    with pytest.raises(ComposeError) as info:
        RpmComposer(recipe, make_ctx(tmp_path, cache_dir)).compose(tmp_path / "rootfs")
    assert ("package 'no-such-package' is not in any of the recipe's repositories (pony)"
            in str(info.value))


@pytest.mark.parametrize("kind", ["missing-directory", "not-a-repository", "http-refused"])
def test_unreachable_repository(kind: str, pony_dir: Path, cache_dir: Path,
                                tmp_path: Path) -> None:
    if kind == "missing-directory":
        url = str(tmp_path / "no" / "such" / "repo")
    elif kind == "not-a-repository":
        (tmp_path / "empty").mkdir()
        url = str(tmp_path / "empty")
    else:
        url = f"http://127.0.0.1:{free_port()}/"
    recipe = variant(tmp_path / "recipe", pony_dir, url=url)
    composer = RpmComposer(recipe, make_ctx(tmp_path, cache_dir))
    shown = url.rstrip("/")
    with pytest.raises(ComposeError) as info:
        composer.repo_states()
    assert "repository 'pony'" in str(info.value) and shown in str(info.value)
    with pytest.raises(ComposeError) as info:
        composer.compose(tmp_path / "rootfs")
    assert "repository 'pony'" in str(info.value) and shown in str(info.value)
    assert "not reachable" in str(info.value)


# -- repository states ------------------------------------------------------------------------

def test_repo_states_follow_the_repository(pony_dir: Path, repo_v1: Path, cache_dir: Path,
                                           tmp_path: Path) -> None:
    both = RpmComposer(load_recipe(pony_dir / "pony.yaml"), make_ctx(tmp_path / "a", cache_dir))
    (state,) = both.repo_states()
    repomd = (pony_dir / "repo/repodata/repomd.xml").read_bytes()
    assert state.name == "pony"
    assert state.url == (pony_dir / "repo").resolve().as_uri()
    assert state.metadata_digest == "sha256:" + hashlib.sha256(repomd).hexdigest()
    assert both.repo_states() == [state]

    v1 = RpmComposer(variant(tmp_path / "recipe", pony_dir, url=str(repo_v1)),
                     make_ctx(tmp_path / "b", cache_dir))
    (old,) = v1.repo_states()
    assert old.metadata_digest != state.metadata_digest

    # The older repository composes the older busybox, through the same shared cache.
    rootfs = tmp_path / "rootfs"
    v1.compose(rootfs)
    assert [p.version for p in v1.packages(rootfs) if p.name == "busybox"] == ["1.35.0-1.fc40"]


def test_floor_argv_is_the_dnf_call(pony_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    composer = RpmComposer(load_recipe(pony_dir / "pony.yaml"), make_ctx(tmp_path, cache_dir))
    argv = composer.floor_argv(tmp_path / "rootfs")
    assert argv[0] == "env" and "dnf" in argv
    dnf = argv[argv.index("dnf"):]
    assert f"--installroot={(tmp_path / 'rootfs').resolve()}" in dnf
    assert dnf[-4:] == ["install", "pony-filesystem", "busybox", "pony-content"]
    assert any(a.startswith("SOURCE_DATE_EPOCH=") for a in argv[:argv.index("dnf")])
