"""OCI image layouts: config, manifest and index written from a recipe and its layers.

The config's times come from SOURCE_DATE_EPOCH and every JSON document is written in canonical
form, so equal inputs give an equal manifest digest.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alicorn.digest import Digest, canonical_json
from alicorn.errors import ImageError
from alicorn.image import (
    LABEL_CONTENT_PATH,
    LABEL_HEALTHCHECK,
    LABEL_RECIPE_DIGEST,
    LABEL_TESTS,
)
from alicorn.image.layer import LayerInfo
from alicorn.recipe import Recipe

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"



@dataclass(frozen=True)
class ImageInfo:
    layout: Path                 # an OCI image layout directory
    digest: Digest               # of the manifest
    manifest_size: int
    config_digest: Digest
    layers: tuple[LayerInfo, ...]
    tag: str


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_config(recipe: Recipe, layers: list[LayerInfo], epoch: int) -> dict[str, Any]:
    env = dict(recipe.env)
    env.setdefault("PATH", DEFAULT_PATH)
    labels = dict(recipe.labels)
    labels.setdefault("org.opencontainers.image.title", recipe.name)
    labels[LABEL_RECIPE_DIGEST] = str(recipe.digest)
    labels[LABEL_CONTENT_PATH] = recipe.content_path
    if recipe.healthcheck is not None:
        labels[LABEL_HEALTHCHECK] = json.dumps(recipe.data["healthcheck"], sort_keys=True)
    if recipe.tests:
        labels[LABEL_TESTS] = json.dumps(recipe.data["tests"], sort_keys=True)
    config: dict[str, Any] = {
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "Labels": labels,
    }
    if recipe.user:
        config["User"] = recipe.user
    if recipe.workdir:
        config["WorkingDir"] = recipe.workdir
    if recipe.entrypoint:
        config["Entrypoint"] = list(recipe.entrypoint)
    if recipe.cmd:
        config["Cmd"] = list(recipe.cmd)
    if recipe.ports:
        config["ExposedPorts"] = {f"{p}/tcp": {} for p in sorted(recipe.ports)}
    if recipe.volumes:
        config["Volumes"] = {v: {} for v in sorted(recipe.volumes)}
    if recipe.stop_signal:
        config["StopSignal"] = recipe.stop_signal
    created = rfc3339(epoch)
    return {
        "created": created,
        "architecture": recipe.oci_architecture,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in layers]},
        "history": [{"created": created,
                     "created_by": f"alicorn build (recipe {recipe.digest})"}],
    }


def _write_blob(layout: Path, data: bytes) -> Digest:
    digest = Digest.of_bytes(data)
    path = layout / "blobs" / "sha256" / digest.hex
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def new_layout(layout: Path) -> Path:
    """Create an empty OCI image layout at ``layout``; returns the blobs directory."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    return blobs


def write_image(layout: Path, recipe: Recipe, layers: list[LayerInfo], epoch: int) -> ImageInfo:
    """Write config, manifest and index into ``layout``, whose blobs already hold the layers."""
    for layer in layers:
        if not (layout / "blobs" / "sha256" / layer.digest.hex).is_file():
            raise ImageError(f"layer {layer.digest} is missing from {layout}")
    config = canonical_json(image_config(recipe, layers, epoch))
    config_digest = _write_blob(layout, config)
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": str(config_digest), "size": len(config)},
        "layers": [{"mediaType": layer.media_type, "digest": str(layer.digest),
                    "size": layer.size} for layer in layers],
    })
    digest = _write_blob(layout, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{"mediaType": MEDIA_MANIFEST, "digest": str(digest),
                       "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": recipe.tag}}],
    }
    (layout / "index.json").write_bytes(canonical_json(index))
    return ImageInfo(layout=layout, digest=digest, manifest_size=len(manifest),
                     config_digest=config_digest, layers=tuple(layers), tag=recipe.tag)


def read_manifest(layout: Path) -> tuple[Digest, dict[str, Any]]:
    """The manifest digest and document of the single image in ``layout``, checked."""
    try:
        index = json.loads((layout / "index.json").read_bytes())
        desc = index["manifests"][0]
        digest = Digest(desc["digest"])
        data = (layout / "blobs" / "sha256" / digest.hex).read_bytes()
    except (OSError, KeyError, IndexError, ValueError) as e:
        raise ImageError(f"{layout} is not a readable OCI image layout: {e}") from e
    if Digest.of_bytes(data) != digest:
        raise ImageError(f"manifest {digest} in {layout} does not match its digest")
    manifest: dict[str, Any] = json.loads(data)
    return digest, manifest


def store_layout(src: Path, images_dir: Path, digest: Digest) -> Path:
    """Move a finished layout into the image store under its manifest digest (atomically)."""
    dest = images_dir / digest.hex
    if dest.exists():
        shutil.rmtree(src, ignore_errors=True)
        return dest
    images_dir.mkdir(parents=True, exist_ok=True)
    tmp = images_dir / f".{digest.hex}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crashed process whose pid was reused
    os.rename(src, tmp)  # src and the store share ALICORN_HOME's filesystem
    try:
        os.replace(tmp, dest)
    except OSError:
        if not dest.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another build stored the same image first
    return dest
