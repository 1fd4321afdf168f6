"""Scan targets: every form a person may name, read end to end by the real collector, and
podman images and containers read through the real podman."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_unpack import d, f, layout_of, sym, tar_dir

from alicorn.config import Settings, load_settings
from alicorn.image.layer import write_layer
from alicorn.image.oci import new_layout, store_layout, write_image
from alicorn.inventory.model import Inventory, InventoryError
from alicorn.inventory.targets import (
    ModuleRef,
    inventory_of,
    inventory_of_modules,
    is_host_root,
    podman_modules,
)
from alicorn.recipe import parse_recipe
from alicorn.run.podman import ulimit_args
from conftest import require

STATUS = (b"Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n"
          b"Architecture: amd64\nSource: bash\n\n")
METADATA = b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n"
SITE = "usr/lib/python3/site-packages"


def rootfs_entries() -> list[tuple[tarfile.TarInfo, bytes]]:
    """A root filesystem with one deb and one Python distribution."""
    return [d("etc"), f("etc/os-release", b'ID=debian\nVERSION_ID="12"\n'),
            f("var/lib/dpkg/status", STATUS),
            f(f"{SITE}/foo-1.0.dist-info/METADATA", METADATA)]


def found(inv: Inventory) -> set[tuple[str, str, str]]:
    return {(p.type, p.name, p.version) for p in inv.packages}


EXPECTED = {("deb", "bash", "5.2.15-2+b2"), ("pypi", "foo", "1.0")}


def write_rootfs(root: Path) -> Path:
    for info, data in rootfs_entries():
        path = root / info.name
        if info.isdir():
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


def leftovers(settings: Settings) -> list[Path]:
    """What unpacking left in its directory under ALICORN_HOME."""
    work = settings.home / "unpack"
    return list(work.iterdir()) if work.exists() else []


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(tmp_path / "home")


def test_a_directory_is_a_rootfs_read_in_place(tmp_path: Path, settings: Settings) -> None:
    root = write_rootfs(tmp_path / "root")
    inv = inventory_of(str(root), settings=settings)
    assert inv.kind == "rootfs" and inv.target == str(root)
    assert found(inv) == EXPECTED
    assert inv.distro is not None and inv.distro.id == "debian"
    assert inv.errors == ()
    # Nothing was unpacked for it.
    assert leftovers(settings) == []


def test_oci_layout_is_unpacked_and_cleaned_up(tmp_path: Path, settings: Settings) -> None:
    # The second layer writes through a symlink planted by the first, out of the root: the
    # write stays inside, and the scan says what it skipped.
    img = layout_of(tmp_path / "layout", [
        [*rootfs_entries(), sym("escape", "../../../../../..")],
        [f("../outside", b"x"), f("escape/landed", b"y")]], ref="debian:12")
    inv = inventory_of(str(img.layout), settings=settings)
    assert inv.kind == "oci-layout"
    assert inv.digest == str(img.manifest) and inv.name == "debian:12"
    assert found(inv) == EXPECTED
    assert any("'../outside'" in w and "'..' component" in w for w in inv.warnings)
    assert not (tmp_path / "outside").exists() and not (tmp_path / "landed").exists()
    assert leftovers(settings) == []


def test_layout_ref_picks_one_image(tmp_path: Path, settings: Settings) -> None:
    img = layout_of(tmp_path / "layout", [rootfs_entries()], ref="pony:2")
    inv = inventory_of(f"{img.layout}:pony:2", settings=settings)
    assert inv.kind == "oci-layout" and found(inv) == EXPECTED
    with pytest.raises(InventoryError, match="no image named 'nope'"):
        inventory_of(f"{img.layout}:nope", settings=settings)


def test_oci_and_docker_archives(tmp_path: Path, settings: Settings) -> None:
    require("skopeo")
    img = layout_of(tmp_path / "layout", [rootfs_entries()])
    oci = tar_dir(img.layout, tmp_path / "oci.tar")
    docker = tmp_path / "docker.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{img.layout}:1",
                    f"docker-archive:{docker}:example.org/pony:1"], check=True,
                   capture_output=True, timeout=120)
    by_oci = inventory_of(str(oci), settings=settings)
    by_docker = inventory_of(str(docker), settings=settings)
    assert (by_oci.kind, by_docker.kind) == ("oci-archive", "docker-archive")
    assert by_oci.digest == str(img.manifest)
    assert by_docker.digest == str(img.config) and by_docker.name == "example.org/pony:1"
    assert found(by_oci) == found(by_docker) == EXPECTED
    assert leftovers(settings) == []


def test_a_file_that_is_no_image(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(InventoryError) as e:
        inventory_of(str(path), settings=settings)
    assert e.value.where == str(path) and "podman:NAME" in (e.value.hint or "")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InventoryError, match="not a directory or a regular file"):
        inventory_of(str(fifo), settings=settings)
    # A tar of a root filesystem (podman export) is named as such, with what to do.
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "os-release").write_text("ID=debian\n")
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(src, arcname=".")
    with pytest.raises(InventoryError, match="a tar, but not an OCI archive") as e:
        inventory_of(str(tarball), settings=settings)
    assert "unpack it into a directory" in (e.value.hint or "")


def test_a_path_that_does_not_exist_is_named_as_one(tmp_path: Path, settings: Settings) -> None:
    for text in (str(tmp_path / "nowhere"), "./surely/not/here", "~/surely-not-here"):
        with pytest.raises(InventoryError) as e:
            inventory_of(text, settings=settings)
        assert (e.value.message, e.value.where) == ("no such file or directory", text)


RECIPE = """\
recipe: 1
name: pony
tag: v1
distribution: {type: debian, release: bookworm}
repositories: [{name: main, suite: bookworm}]
packages: [bash]
"""


def test_image_alicorn_built_by_digest_or_prefix(tmp_path: Path, settings: Settings) -> None:
    # Written by Alicorn's own layer and image writers, and stored the way a build stores it.
    rootfs = write_rootfs(tmp_path / "rootfs")
    layout = tmp_path / "layout"
    blobs = new_layout(layout)
    with open(blobs / "partial", "wb") as out:
        layer = write_layer(rootfs, out, source_date_epoch=1_700_000_000, threads=1)
    (blobs / "partial").rename(blobs / layer.digest.hex)
    recipe = parse_recipe(RECIPE, file=str(tmp_path / "pony.yaml"), base_dir=tmp_path)
    info = write_image(layout, recipe, [layer], 1_700_000_000)
    stored = store_layout(layout, settings.images_dir, info.digest)
    assert stored == settings.image_dir(info.digest.hex)
    for target in (str(info.digest), info.digest.hex[:12]):
        inv = inventory_of(target, settings=settings)
        assert inv.kind == "alicorn" and inv.target == target
        assert inv.digest == str(info.digest) and inv.name == "v1"
        assert found(inv) == EXPECTED
    # Another stored image with the same 12-digit prefix makes the prefix ambiguous.
    twin = settings.images_dir / (info.digest.hex[:12] + "0" * 52)
    shutil.copytree(stored, twin)
    with pytest.raises(InventoryError, match="prefix of 2 images"):
        inventory_of(info.digest.hex[:12], settings=settings)
    assert leftovers(settings) == []


def test_no_such_target_lists_the_forms(tmp_path: Path, settings: Settings) -> None:
    name = f"surely-no-such-thing-{secrets.token_hex(4)}"
    with pytest.raises(InventoryError) as e:
        inventory_of(name, settings=settings)
    assert f"no such target {name!r}" in e.value.message
    hint = e.value.hint or ""
    for form in ("host", "DIR[:REF]", "sha256:<digest>", "podman:NAME"):
        assert form in hint
    with pytest.raises(InventoryError, match="podman knows no image"):
        inventory_of(f"podman-image:{name}", settings=settings)


def test_host(settings: Settings) -> None:
    inv = inventory_of("host", settings=settings)
    assert inv.kind == "host" and inv.target == "host"
    # The host's own package database is read: python3 (which runs this test) is in it.
    distro = "deb" if Path("/var/lib/dpkg/status").exists() else "rpm"
    assert "python3" in {p.name for p in inv.packages if p.type == distro}


def test_the_host_root_by_path_is_the_host(tmp_path: Path) -> None:
    """``alicorn scan /`` gets the host's exclusions (container storage, /tmp), not those of
    an image root; any spelling of / counts, and no other directory does."""
    (tmp_path / "to-root").symlink_to("/")
    for spelling in ("/", "//", "/.", "/usr/..", str(tmp_path / "to-root")):
        assert is_host_root(Path(spelling)), spelling
    assert not is_host_root(tmp_path)
    assert not is_host_root(tmp_path / "missing")


# -- podman ----------------------------------------------------------------------------------------

def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120,
                          check=check)


def mounted() -> str:
    """What podman has mounted now (containers and images)."""
    return podman("mount").stdout + podman("image", "mount").stdout


@pytest.fixture
def podman_image(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A tiny image in podman's storage and a stopped container of it (unique names,
    removed afterwards): (image reference, container name)."""
    require("podman", "skopeo")
    token = secrets.token_hex(4)
    ref, name = f"localhost/alicorn-test-targets-{token}:1", f"alicorn-test-targets-{token}"
    img = layout_of(tmp_path / "layout", [rootfs_entries()])
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{img.layout}:1",
                    f"containers-storage:{ref}"], check=True, capture_output=True, timeout=120)
    try:
        podman("create", "--name", name, "--label", f"org.alicorn.module={name}", ref,
               "/bin/true")
        yield ref, name
    finally:
        podman("rm", "--force", "--ignore", name, check=False)
        podman("rmi", "--force", ref, check=False)


@pytest.mark.integration
def test_podman_image_and_container(podman_image: tuple[str, str], settings: Settings) -> None:
    ref, name = podman_image
    image_id = podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    by_image = inventory_of(ref, settings=settings)
    assert by_image.kind == "podman-image" and by_image.name == ref
    assert by_image.digest == f"sha256:{image_id}"
    assert found(by_image) == EXPECTED
    by_container = inventory_of(f"podman:{name}", settings=settings)
    assert by_container.kind == "podman-container" and by_container.name == name
    assert found(by_container) == EXPECTED
    assert inventory_of(name, settings=settings).kind == "podman-container"
    assert name not in mounted() and image_id not in mounted()


@pytest.mark.integration
def test_archives_podman_saves(podman_image: tuple[str, str], tmp_path: Path,
                               settings: Settings) -> None:
    ref, _ = podman_image
    image_id = podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    for fmt in ("oci-archive", "docker-archive"):
        path = tmp_path / f"{fmt}.tar"
        podman("save", "--quiet", "--format", fmt, "--output", str(path), ref)
        inv = inventory_of(str(path), settings=settings)
        assert inv.kind == fmt and inv.name == ref
        assert found(inv) == EXPECTED
        if fmt == "docker-archive":
            assert inv.digest == f"sha256:{image_id}"  # the image id is its config's digest
    assert leftovers(settings) == []


@pytest.mark.integration
def test_modules_share_the_image_until_a_container_changes(
        podman_image: tuple[str, str]) -> None:
    ref, name = podman_image
    modules = [m for m in podman_modules() if ref in m.names or m.container == name]
    by_kind = {m.kind: m for m in modules}
    assert set(by_kind) == {"podman-image", "podman-container"}
    image, container = by_kind["podman-image"], by_kind["podman-container"]
    assert container.image_id == image.id and container.image == ref
    assert container.deployed_by_alicorn and container.module == name
    assert not image.deployed_by_alicorn and not container.running
    assert image.digest is not None and image.digest.startswith("sha256:")

    first = inventory_of_modules(modules)
    assert [i.kind for i in first] == ["podman-image", "podman-container"]
    assert found(first[0]) == found(first[1]) == EXPECTED
    assert first[1].name == name and first[1].target == container.target

    # A change under /tmp only (scratch space) leaves the container sharing its image's
    # inventory, although a scan of the container itself sees it.
    baz = ("pypi", "baz", "3.0")
    add_dist(name, "tmp/site-packages", "baz", "3.0")
    shared = inventory_of_modules(modules)
    assert found(shared[1]) == EXPECTED
    assert found(inventory_of(f"podman:{name}")) == EXPECTED | {baz}

    # pip installs into the container: its inventory is now its own.
    add_dist(name, SITE, "bar", "2.0")
    second = inventory_of_modules(modules)
    assert found(second[0]) == EXPECTED
    assert found(second[1]) == EXPECTED | {("pypi", "bar", "2.0"), baz}
    assert name not in mounted() and image.id not in mounted()


def add_dist(container: str, site: str, dist: str, version: str) -> None:
    """Install a Python distribution's metadata into a container's filesystem."""
    mount = Path(podman("mount", container).stdout.strip())
    try:
        meta = mount / site / f"{dist}-{version}.dist-info"
        meta.mkdir(parents=True)
        (meta / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    finally:
        podman("unmount", container)


def test_unreadable_module_is_an_error_not_an_omission() -> None:
    require("podman")
    ghost = ModuleRef(kind="podman-image", target="podman-image:" + "f" * 64, id="f" * 64,
                      names=(), image_id="f" * 64)
    [inv] = inventory_of_modules([ghost])
    assert inv.packages == () and inv.errors
    assert "podman cannot mount" in inv.errors[0]


def test_podman_modules_json_fields_are_what_podman_prints() -> None:
    # Guards the field names podman_modules reads against the podman installed here.
    require("podman")
    images = json.loads(podman("images", "--format", "json").stdout or "[]")
    containers = json.loads(podman("ps", "--all", "--format", "json").stdout or "[]")
    for img in images:
        assert {"Id", "Names", "Digest", "Labels"} <= set(img)
    for c in containers:
        assert {"Id", "Names", "Image", "ImageID", "State", "Labels"} <= set(c)
    assert len(podman_modules()) >= len(images)


@pytest.mark.integration
def test_running_container_sees_what_changed_inside(tmp_path: Path) -> None:
    require("podman", "skopeo", "busybox")
    busybox = Path(shutil.which("busybox") or "")
    ldd = subprocess.run(["ldd", str(busybox)], capture_output=True, text=True)
    if "not a dynamic executable" not in ldd.stdout + ldd.stderr:
        pytest.skip("needs a statically linked busybox (Debian's busybox-static)")
    token = secrets.token_hex(4)
    ref, name = f"localhost/alicorn-test-running-{token}:1", f"alicorn-test-running-{token}"
    img = layout_of(tmp_path / "layout", [[*rootfs_entries(),
                                           f("bin/busybox", busybox.read_bytes(), mode=0o755)]])
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{img.layout}:1",
                    f"containers-storage:{ref}"], check=True, capture_output=True, timeout=120)
    try:
        podman("run", "--detach", "--name", name, "--network", "none", *ulimit_args(), ref,
               "/bin/busybox", "sleep", "600")
        podman("exec", name, "/bin/busybox", "sh", "-c",
               f"/bin/busybox mkdir -p /{SITE}/qux-4.0.dist-info && /bin/busybox printf "
               f"'Metadata-Version: 2.1\\nName: qux\\nVersion: 4.0\\n' "
               f"> /{SITE}/qux-4.0.dist-info/METADATA")
        [container] = [m for m in podman_modules() if m.container == name]
        assert container.running and not container.deployed_by_alicorn
        [inv] = inventory_of_modules([container])
        assert found(inv) == EXPECTED | {("pypi", "qux", "4.0")}
        assert found(inventory_of(name)) == EXPECTED | {("pypi", "qux", "4.0")}
        # Reading it did not take the running container's root away.
        state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        assert state == "true"
        podman("exec", name, "/bin/busybox", "true")
    finally:
        podman("rm", "--force", "--ignore", "--time", "0", name, check=False)
        podman("rmi", "--force", ref, check=False)
