"""OCI image layouts from a real recipe and a real layer, read back by skopeo."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from alicorn.digest import Digest, canonical_json
from alicorn.errors import ImageError
from alicorn.image.layer import LayerInfo, write_layer
from alicorn.image.oci import (
    DEFAULT_PATH,
    LABEL_CONTENT_PATH,
    LABEL_HEALTHCHECK,
    LABEL_RECIPE_DIGEST,
    LABEL_TESTS,
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    ImageInfo,
    image_config,
    new_layout,
    read_manifest,
    rfc3339,
    store_layout,
    write_image,
)
from alicorn.recipe import Recipe, parse_recipe
from conftest import require

EPOCH = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"

RECIPE = """\
# a small web server
recipe: 1
name: web/pony
tag: v1
distribution:
  type: debian
  release: bookworm
  architecture: x86_64
repositories:
  - name: main
    suite: bookworm
packages: [nginx-light]
entrypoint: ["/usr/sbin/nginx", "-g", "daemon off;"]
cmd: ["-c", "/etc/nginx/nginx.conf"]
user: "33:33"
workdir: /srv
ports: [8080, 80]
volumes: [/var/cache/nginx, /data]
stop_signal: SIGQUIT
env:
  LANG: C.UTF-8
labels:
  org.opencontainers.image.description: demo
  org.alicorn.recipe.digest: spoofed
content_path: /srv/www
healthcheck:
  http: {path: /, port: 80}
tests:
  - name: serves
    http: {port: 80, contains: pony}
"""

MINIMAL = """\
recipe: 1
name: bare
distribution: {type: debian, release: bookworm}
repositories: [{name: main, suite: bookworm}]
packages: [busybox]
"""


def recipe(tmp_path: Path, text: str = RECIPE) -> Recipe:
    return parse_recipe(text, file=str(tmp_path / "web.yaml"), base_dir=tmp_path)


def make_rootfs(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("pony\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    os.chmod(root / "usr" / "bin" / "hello", 0o755)
    for p in sorted(root.rglob("*"), reverse=True):
        os.utime(p, (EPOCH - 100, EPOCH - 100))
    return root


def add_layer(layout: Path, rootfs: Path) -> LayerInfo:
    blobs = new_layout(layout)
    partial = blobs / "partial"
    with open(partial, "wb") as f:
        info = write_layer(rootfs, f, source_date_epoch=EPOCH, threads=1)
    partial.rename(blobs / info.digest.hex)
    return info


def build(tmp_path: Path, name: str, r: Recipe, epoch: int = EPOCH) -> tuple[ImageInfo, Path]:
    rootfs = tmp_path / "rootfs"
    if not rootfs.exists():
        make_rootfs(rootfs)
    layout = tmp_path / name
    layer = add_layer(layout, rootfs)
    return write_image(layout, r, [layer], epoch), layout


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True).stdout


def blob(layout: Path, digest: Digest | str) -> bytes:
    return (layout / "blobs" / "sha256" / Digest.parse(str(digest)).hex).read_bytes()


@pytest.fixture
def image(tmp_path: Path) -> tuple[ImageInfo, Path, Recipe]:
    r = recipe(tmp_path)
    info, layout = build(tmp_path, "layout", r)
    return info, layout, r


# -- the layout on disk ------------------------------------------------------------------------

def test_layout_files(image: tuple[ImageInfo, Path, Recipe]) -> None:
    info, layout, r = image
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_bytes())
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == MEDIA_INDEX
    [desc] = index["manifests"]
    assert desc == {"mediaType": MEDIA_MANIFEST, "digest": str(info.digest),
                    "size": info.manifest_size,
                    "annotations": {"org.opencontainers.image.ref.name": "v1"}}
    assert info.tag == r.tag == "v1"
    # Every blob is stored under its own digest.
    for p in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name


def test_manifest_and_config_documents(image: tuple[ImageInfo, Path, Recipe]) -> None:
    info, layout, r = image
    raw = blob(layout, info.digest)
    assert len(raw) == info.manifest_size
    manifest = json.loads(raw)
    assert raw == canonical_json(manifest)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == MEDIA_MANIFEST
    config_raw = blob(layout, info.config_digest)
    assert manifest["config"] == {"mediaType": MEDIA_CONFIG, "digest": str(info.config_digest),
                                  "size": len(config_raw)}
    [layer] = info.layers
    assert manifest["layers"] == [{"mediaType": layer.media_type, "digest": str(layer.digest),
                                   "size": layer.size}]
    assert config_raw == canonical_json(image_config(r, [layer], EPOCH))


def test_read_manifest(image: tuple[ImageInfo, Path, Recipe]) -> None:
    info, layout, _ = image
    digest, manifest = read_manifest(layout)
    assert digest == info.digest
    assert manifest["config"]["digest"] == str(info.config_digest)


# -- skopeo reads it ---------------------------------------------------------------------------

def test_skopeo_raw_manifest_is_the_digest(image: tuple[ImageInfo, Path, Recipe]) -> None:
    require("skopeo")
    info, layout, _ = image
    raw = skopeo("inspect", "--raw", f"oci:{layout}:v1")
    assert Digest.of_bytes(raw) == info.digest


def test_skopeo_config(image: tuple[ImageInfo, Path, Recipe]) -> None:
    require("skopeo")
    info, layout, r = image
    config: dict[str, Any] = json.loads(skopeo("inspect", "--config", f"oci:{layout}:v1"))
    c = config["config"]
    assert c["Entrypoint"] == ["/usr/sbin/nginx", "-g", "daemon off;"]
    assert c["Cmd"] == ["-c", "/etc/nginx/nginx.conf"]
    assert c["ExposedPorts"] == {"80/tcp": {}, "8080/tcp": {}}
    assert c["User"] == "33:33"
    assert c["WorkingDir"] == "/srv"
    assert c["StopSignal"] == "SIGQUIT"
    assert set(c["Volumes"]) == {"/data", "/var/cache/nginx"}
    assert c["Env"] == ["LANG=C.UTF-8", f"PATH={DEFAULT_PATH}"]
    labels = c["Labels"]
    assert labels[LABEL_RECIPE_DIGEST] == str(r.digest)          # the recipe cannot spoof it
    assert labels[LABEL_CONTENT_PATH] == "/srv/www"
    assert labels["org.opencontainers.image.title"] == "web/pony"
    assert labels["org.opencontainers.image.description"] == "demo"
    assert json.loads(labels[LABEL_HEALTHCHECK]) == {"http": {"path": "/", "port": 80}}
    assert json.loads(labels[LABEL_TESTS]) == [
        {"name": "serves", "http": {"port": 80, "contains": "pony"}}]
    assert config["created"] == rfc3339(EPOCH) == CREATED
    assert config["architecture"] == "amd64"
    assert config["os"] == "linux"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [str(info.layers[0].diff_id)]}
    assert config["history"] == [{"created": CREATED,
                                  "created_by": f"alicorn build (recipe {r.digest})"}]


def test_skopeo_inspect_summary(image: tuple[ImageInfo, Path, Recipe]) -> None:
    require("skopeo")
    info, layout, _ = image
    summary = json.loads(skopeo("inspect", f"oci:{layout}:v1"))
    assert summary["Digest"] == str(info.digest)
    assert summary["Layers"] == [str(info.layers[0].digest)]
    assert summary["Created"].startswith("2023-11-14T22:13:20")


def test_skopeo_copy_validates_the_layout(image: tuple[ImageInfo, Path, Recipe],
                                          tmp_path: Path) -> None:
    require("skopeo")
    info, layout, _ = image
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    other = tmp_path / "other"
    subprocess.run(["skopeo", "--policy", str(policy), "copy", f"oci:{layout}:v1",
                    f"oci:{other}:x"], check=True, capture_output=True)
    # Nothing needed converting, so the copy is byte for byte the same image.
    assert Digest.of_bytes(skopeo("inspect", "--raw", f"oci:{other}:x")) == info.digest
    assert blob(other, info.layers[0].digest) == blob(layout, info.layers[0].digest)


# -- determinism -------------------------------------------------------------------------------

def test_same_inputs_same_manifest(tmp_path: Path, image: tuple[ImageInfo, Path, Recipe]) -> None:
    info, layout, _ = image
    again, layout2 = build(tmp_path, "again", recipe(tmp_path))
    assert again.digest == info.digest
    assert again.config_digest == info.config_digest
    assert (layout2 / "index.json").read_bytes() == (layout / "index.json").read_bytes()
    # Writing over an existing layout gives the same documents again.
    third = write_image(layout, recipe(tmp_path), list(info.layers), EPOCH)
    assert third == info


def test_other_epoch_other_manifest(tmp_path: Path, image: tuple[ImageInfo, Path, Recipe]) -> None:
    info, _, _ = image
    later, layout = build(tmp_path, "later", recipe(tmp_path), epoch=EPOCH + 1)
    assert later.digest != info.digest
    assert later.config_digest != info.config_digest
    assert later.layers == info.layers
    config = json.loads(blob(layout, later.config_digest))
    assert config["created"] == "2023-11-14T22:13:21Z"


def test_recipe_bytes_change_the_manifest(tmp_path: Path,
                                          image: tuple[ImageInfo, Path, Recipe]) -> None:
    info, _, r = image
    other = recipe(tmp_path, RECIPE.replace("# a small web server", "# a tiny web server"))
    assert other.digest != r.digest
    changed, layout = build(tmp_path, "changed", other)
    assert changed.digest != info.digest
    assert json.loads(blob(layout, changed.config_digest))["config"]["Labels"][
        LABEL_RECIPE_DIGEST] == str(other.digest)


# -- the config from a minimal recipe ----------------------------------------------------------

def test_minimal_recipe_config(tmp_path: Path) -> None:
    r = recipe(tmp_path, MINIMAL)
    layer = LayerInfo(digest=Digest.of_bytes(b"blob"), diff_id=Digest.of_bytes(b"tar"), size=4)
    config = image_config(r, [layer], 0)
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert config["architecture"] == "amd64"
    assert config["config"] == {
        "Env": [f"PATH={DEFAULT_PATH}"],
        "Labels": {"org.opencontainers.image.title": "bare",
                   LABEL_RECIPE_DIGEST: str(r.digest),
                   LABEL_CONTENT_PATH: "/var/www/html"},
    }
    assert config["rootfs"]["diff_ids"] == [str(layer.diff_id)]


def test_recipe_path_and_title_are_kept(tmp_path: Path) -> None:
    text = MINIMAL + "env:\n  PATH: /opt/bin\nlabels:\n  org.opencontainers.image.title: Bare\n"
    config = image_config(recipe(tmp_path, text), [], EPOCH)["config"]
    assert config["Env"] == ["PATH=/opt/bin"]
    assert config["Labels"]["org.opencontainers.image.title"] == "Bare"


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(EPOCH) == CREATED
    assert rfc3339(951_782_400) == "2000-02-29T00:00:00Z"


# -- refusals ----------------------------------------------------------------------------------

def test_read_manifest_detects_altered_manifest(image: tuple[ImageInfo, Path, Recipe]) -> None:
    info, layout, _ = image
    path = layout / "blobs" / "sha256" / info.digest.hex
    raw = path.read_bytes()
    altered = raw.replace(b'"schemaVersion":2', b'"schemaVersion":3')
    assert altered != raw and len(altered) == len(raw)
    path.write_bytes(altered)
    with pytest.raises(ImageError, match="does not match its digest"):
        read_manifest(layout)


def test_read_manifest_of_a_broken_layout(tmp_path: Path,
                                          image: tuple[ImageInfo, Path, Recipe]) -> None:
    with pytest.raises(ImageError, match="not a readable OCI image layout"):
        read_manifest(tmp_path / "nowhere")
    info, layout, _ = image
    (layout / "blobs" / "sha256" / info.digest.hex).unlink()
    with pytest.raises(ImageError, match="not a readable OCI image layout"):
        read_manifest(layout)
    (layout / "index.json").write_text("{not json")
    with pytest.raises(ImageError, match="not a readable OCI image layout"):
        read_manifest(layout)
    (layout / "index.json").write_text('{"manifests": []}')
    with pytest.raises(ImageError, match="not a readable OCI image layout"):
        read_manifest(layout)
    (layout / "index.json").write_text('{"manifests": [{"digest": "md5:abc"}]}')
    with pytest.raises(ImageError, match="not a readable OCI image layout"):
        read_manifest(layout)


def test_write_image_refuses_a_missing_layer(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    new_layout(layout)
    missing = LayerInfo(digest=Digest.of_bytes(b"never written"),
                        diff_id=Digest.of_bytes(b"tar"), size=13)
    with pytest.raises(ImageError, match=f"layer {missing.digest} is missing"):
        write_image(layout, recipe(tmp_path), [missing], EPOCH)
    assert not (layout / "index.json").exists()
    assert list((layout / "blobs" / "sha256").iterdir()) == []


# -- the image store ---------------------------------------------------------------------------

def test_store_layout_moves_and_is_idempotent(tmp_path: Path,
                                              image: tuple[ImageInfo, Path, Recipe]) -> None:
    info, layout, _ = image
    spare = tmp_path / "spare"
    shutil.copytree(layout, spare)
    images = tmp_path / "store" / "images"
    dest = store_layout(layout, images, info.digest)
    assert dest == images / info.digest.hex
    assert not layout.exists()
    assert read_manifest(dest)[0] == info.digest
    assert sorted(p.name for p in images.iterdir()) == [info.digest.hex]   # no temporary left
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    again = store_layout(spare, images, info.digest)
    assert again == dest
    assert not spare.exists()
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in images.iterdir()) == [info.digest.hex]


def test_store_layout_survives_a_stale_temporary(tmp_path: Path,
                                                 image: tuple[ImageInfo, Path, Recipe]) -> None:
    info, layout, _ = image
    images = tmp_path / "images"
    (images / f".{info.digest.hex}.{os.getpid()}").mkdir(parents=True)  # left by a crash
    dest = store_layout(layout, images, info.digest)
    assert (dest / "index.json").is_file()
    assert read_manifest(dest)[0] == info.digest
