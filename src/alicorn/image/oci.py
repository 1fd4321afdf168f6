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
    _apply_settings(config, recipe)
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


def _apply_settings(config: dict[str, Any], recipe: Recipe) -> None:
    """Set the process settings the recipe gives (user, workdir, entrypoint, cmd, ports,
    volumes, stop signal) in an OCI ``config`` object, replacing what it held."""
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


def layered_config(recipe: Recipe, base: dict[str, Any], base_digest: Digest,
                   layers: list[LayerInfo], epoch: int) -> dict[str, Any]:
    """The config of an image layered on ``base`` (that image's config): the base's with the
    recipe's settings applied.  Entrypoint, cmd, user, workdir, ports, volumes and stop signal
    replace the base's when the recipe gives them; env and labels are merged, the recipe's
    winning; the recipe digest label is the child's, the tests, healthcheck and content path
    labels too when the recipe has them (else the base's stay).  ``layers`` are all of the
    image's, the base's first; the history gains one entry naming the base."""
    given = recipe.data
    inherited = dict(base.get("config") or {})
    env: dict[str, str] = {}
    for item in inherited.get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    env.update(dict(recipe.env))
    env.setdefault("PATH", DEFAULT_PATH)
    labels = {**(inherited.get("Labels") or {}), **dict(recipe.labels)}
    labels["org.opencontainers.image.title"] = dict(recipe.labels).get(
        "org.opencontainers.image.title", recipe.name)
    labels[LABEL_RECIPE_DIGEST] = str(recipe.digest)
    if "content_path" in given or LABEL_CONTENT_PATH not in labels:
        labels[LABEL_CONTENT_PATH] = recipe.content_path
    if recipe.healthcheck is not None:
        labels[LABEL_HEALTHCHECK] = json.dumps(given["healthcheck"], sort_keys=True)
    if recipe.tests:
        labels[LABEL_TESTS] = json.dumps(given["tests"], sort_keys=True)
    config = {**inherited, "Env": [f"{k}={v}" for k, v in sorted(env.items())],
              "Labels": labels}
    _apply_settings(config, recipe)
    created = rfc3339(epoch)
    history = [*(base.get("history") or []),
               {"created": created,
                "created_by": f"alicorn build (recipe {recipe.digest}) on base {base_digest}"}]
    return {
        "created": created,
        "architecture": base.get("architecture", recipe.oci_architecture),
        "os": base.get("os", "linux"),
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in layers]},
        "history": history,
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


def write_image(layout: Path, recipe: Recipe, layers: list[LayerInfo], epoch: int, *,
                base_config: dict[str, Any] | None = None,
                base_digest: Digest | None = None) -> ImageInfo:
    """Write config, manifest and index into ``layout``, whose blobs already hold the layers.

    With ``base_config`` (and the base's ``base_digest``) the image is layered: ``layers``
    start with the base's, and the config is :func:`layered_config`'s."""
    for layer in layers:
        if not (layout / "blobs" / "sha256" / layer.digest.hex).is_file():
            raise ImageError(f"layer {layer.digest} is missing from {layout}")
    if base_config is not None:
        assert base_digest is not None
        doc = layered_config(recipe, base_config, base_digest, layers, epoch)
    else:
        doc = image_config(recipe, layers, epoch)
    config = canonical_json(doc)
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
