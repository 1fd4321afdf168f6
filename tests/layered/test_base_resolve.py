"""Resolving a layered recipe's base against a real build store and image store, the layered
config, and what the recipe loader accepts for layered recipes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from alicorn.build.base import merge_packages, resolve_base, unpack_base
from alicorn.compose.interface import Package
from alicorn.config import Settings, load_settings
from alicorn.digest import Digest
from alicorn.errors import ImageError, RecipeError
from alicorn.image.layer import write_layer
from alicorn.image.oci import layered_config, new_layout, store_layout, write_image
from alicorn.recipe import Recipe, parse_recipe
from alicorn.store.builds import DONE, BuildStore, Submission

BASE = """recipe: 1
name: {name}
distribution: {{type: {kind}, release: "40"}}
repositories: [{{name: r, url: /nowhere, {extra}}}]
packages: [busybox]
entrypoint: [/usr/bin/busybox, httpd]
env: {{A: base, B: base}}
labels: {{keep: base, over: base}}
ports: [80]
"""

CHILD = """recipe: 1
name: site
distribution: {type: rpm, release: "40"}
# the base
base: pony
env: {B: child}
labels: {over: child}
tests:
  - name: page
    http: {path: /site.html}
"""


def recipe(text: str, name: str = "r.yaml") -> Recipe:
    return parse_recipe(text, file=name, base_dir=Path("/tmp"))


def base_text(name: str = "pony", kind: str = "rpm") -> str:
    extra = "gpgcheck: false" if kind == "rpm" else "suite: bookworm"
    return BASE.format(name=name, kind=kind, extra=extra).replace(
        "url: /nowhere", "url: /nowhere" if kind == "rpm" else "url: http://x.invalid/debian")


@pytest.fixture
def env(tmp_path: Path) -> tuple[Settings, BuildStore]:
    settings = load_settings(tmp_path / "home")
    return settings, BuildStore(settings.database_url)


def publish(env: tuple[Settings, BuildStore], text: str, tmp_path: Path, *,
            content: bytes = b"v1", published: bool = True,
            packages: tuple[Package, ...] = ()) -> Digest:
    """A done build of ``text`` whose image (one layer holding /file) is in the store."""
    settings, store = env
    r = recipe(text)
    tree = tmp_path / f"tree-{os.urandom(4).hex()}"
    tree.mkdir()
    (tree / "file").write_bytes(content)
    layout = tmp_path / f"layout-{os.urandom(4).hex()}"
    blobs = new_layout(layout)
    buf = io.BytesIO()
    layer = write_layer(tree, buf, source_date_epoch=0)
    (blobs / layer.digest.hex).write_bytes(buf.getvalue())
    info = write_image(layout, r, [layer], 0)
    store_layout(layout, settings.images_dir, info.digest)
    row = store.submit(Submission(argv=["t"], source_kind="file", recipe_path="/tmp/r.yaml",
                                  recipe_content=text))
    store.finish(row.id, DONE, packages=packages, digest=str(info.digest),
                 published=published, recipe_name=r.name, recipe_content=text)
    return info.digest


def test_by_name_the_newest_published_build(env: tuple[Settings, BuildStore],
                                            tmp_path: Path) -> None:
    old = publish(env, base_text(), tmp_path, content=b"old")
    newest = publish(env, base_text(), tmp_path, content=b"newest")
    publish(env, base_text(), tmp_path, content=b"unpublished", published=False)
    publish(env, base_text("other"), tmp_path, content=b"other recipe")
    base = resolve_base(recipe(CHILD), env[1], env[0])
    assert base.digest == newest and base.name == "pony" and base.distribution == "rpm"
    assert base.inputs() == {"name": "pony", "digest": str(newest), "build_id": base.build_id}
    # The rebuild service's pin wins over the name.
    pinned = resolve_base(recipe(CHILD), env[1], env[0], pinned=str(old))
    assert pinned.digest == old
    root = tmp_path / "root"
    unpack_base(pinned, root)
    assert (root / "file").read_bytes() == b"old"


def test_errors_name_the_base_field(env: tuple[Settings, BuildStore], tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as e:
        resolve_base(recipe(CHILD, "site.yaml"), env[1], env[0])
    assert e.value.where == "site.yaml:5" and e.value.field == "base"
    assert "no published build of recipe 'pony'" in e.value.message
    unpublished = publish(env, base_text(), tmp_path, published=False)
    with pytest.raises(RecipeError, match="no published build"):
        resolve_base(recipe(CHILD), env[1], env[0])
    # By digest, a done build needs no publishing; but it must be of the named recipe.
    assert resolve_base(recipe(CHILD.replace("base: pony", f"base: {{digest: '{unpublished}'}}")),
                        env[1], env[0]).digest == unpublished
    other = publish(env, base_text("other"), tmp_path)
    with pytest.raises(RecipeError, match="built from recipe 'other', not 'pony'"):
        resolve_base(recipe(CHILD), env[1], env[0], pinned=str(other))
    with pytest.raises(RecipeError, match="not a sha256 manifest digest"):
        resolve_base(recipe(CHILD), env[1], env[0], pinned="latest")


def test_distribution_must_match(env: tuple[Settings, BuildStore], tmp_path: Path) -> None:
    publish(env, base_text(kind="debian"), tmp_path)
    with pytest.raises(RecipeError, match="is a debian image; this recipe's distribution is rpm"):
        resolve_base(recipe(CHILD), env[1], env[0])


def test_base_image_gone_or_damaged(env: tuple[Settings, BuildStore], tmp_path: Path) -> None:
    import shutil
    digest = publish(env, base_text(), tmp_path)
    base = resolve_base(recipe(CHILD), env[1], env[0])
    blob = base.layout / "blobs" / "sha256" / base.layers[0].digest.hex
    os.chmod(blob, 0o644)
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ImageError, match="does not match its digest"):
        unpack_base(base, tmp_path / "root")
    shutil.rmtree(env[0].image_dir(digest.hex))
    with pytest.raises(RecipeError, match="is not in the image store"):
        resolve_base(recipe(CHILD), env[1], env[0])


def test_packages_are_the_roots_with_the_bases_checksums(env: tuple[Settings, BuildStore],
                                                         tmp_path: Path) -> None:
    pkgs = (Package("rpm", "busybox", "1.35.0-1", "x86_64", checksum="sha256:" + "a" * 64),
            Package("pypi", "ponytools", "1.2.3"))
    publish(env, base_text(), tmp_path, packages=pkgs)
    base = resolve_base(recipe(CHILD), env[1], env[0])
    merged = merge_packages(base, [Package("rpm", "busybox", "1.35.0-1", "x86_64"),
                                   Package("rpm", "pony-content", "1.0-1", "noarch")])
    assert [(p.name, p.checksum) for p in merged] == [
        ("ponytools", None), ("busybox", "sha256:" + "a" * 64), ("pony-content", None)]


def test_layered_config_merges_child_over_base() -> None:
    from alicorn.image.layer import LayerInfo
    base_recipe = recipe(base_text())
    layer = LayerInfo(Digest("sha256:" + "1" * 64), Digest("sha256:" + "2" * 64), 1)
    own = LayerInfo(Digest("sha256:" + "3" * 64), Digest("sha256:" + "4" * 64), 1)
    from alicorn.image.oci import image_config
    base_cfg = image_config(base_recipe, [layer], 0)
    child = recipe(CHILD)
    base_digest = Digest("sha256:" + "5" * 64)
    cfg = layered_config(child, base_cfg, base_digest, [layer, own], 100)
    c = cfg["config"]
    assert c["Entrypoint"] == ["/usr/bin/busybox", "httpd"]
    assert c["ExposedPorts"] == {"80/tcp": {}}
    assert "A=base" in c["Env"] and "B=child" in c["Env"] and any(
        e.startswith("PATH=") for e in c["Env"])
    assert c["Labels"]["keep"] == "base" and c["Labels"]["over"] == "child"
    assert c["Labels"]["org.alicorn.recipe.digest"] == str(child.digest)
    assert c["Labels"]["org.opencontainers.image.title"] == "site"
    assert "site.html" in c["Labels"]["org.alicorn.tests"]
    assert cfg["rootfs"]["diff_ids"] == [str(layer.diff_id), str(own.diff_id)]
    assert len(cfg["history"]) == 2 and str(base_digest) in cfg["history"][1]["created_by"]
    assert cfg["created"] == "1970-01-01T00:01:40Z"


def test_loader_accepts_layered_recipes_and_refuses_debian_packages() -> None:
    r = recipe(CHILD)
    assert r.base is not None and r.base.image == "pony" and r.packages == ()
    assert r.repositories == ()
    deb = ("recipe: 1\nname: s\ndistribution: {type: debian, release: bookworm}\n"
           "base: pony\nrepositories: [{name: m, suite: bookworm}]\npackages: [curl]\n")
    with pytest.raises(RecipeError, match="a layered Debian recipe cannot add packages yet") as e:
        recipe(deb, "deb.yaml")
    assert e.value.field == "packages" and e.value.where == "deb.yaml:6"
    files_only = ("recipe: 1\nname: s\ndistribution: {type: debian, release: bookworm}\n"
                  "base: pony\nfiles: [{path: /x, content: y}]\n")
    assert recipe(files_only).files[0].path == "/x"
    with pytest.raises(RecipeError, match="packages need repositories"):
        recipe(CHILD + "packages: [x]\n")
