"""Hand-made OCI layouts and gate contexts for the gate's tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from alicorn.compose.interface import Package
from alicorn.digest import canonical_json
from alicorn.gate.model import GateContext
from alicorn.image.layer import write_layer
from alicorn.image.oci import MEDIA_CONFIG, MEDIA_INDEX, MEDIA_MANIFEST, new_layout
from alicorn.proc import BuildLog
from alicorn.recipe.loader import parse_recipe

Entry = tuple[tarfile.TarInfo, bytes | None]

RECIPE = """\
recipe: 1
name: gate-test
distribution: {type: rpm, release: "40"}
repositories: [{name: r, url: repo, gpgcheck: false}]
packages: [busybox]
"""


def entry(name: str, data: bytes | None = b"", *, mode: int = 0o644, kind: bytes = tarfile.REGTYPE,
          linkname: str = "", size: int | None = None) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    if kind == tarfile.REGTYPE:
        info.size = len(data or b"") if size is None else size
    else:
        data = None
    return info, data


def directory(name: str, mode: int = 0o755) -> Entry:
    return entry(name, None, mode=mode, kind=tarfile.DIRTYPE)


def tar_bytes(entries: Sequence[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return "sha256:" + digest


def make_layout(layout: Path, layers: Sequence[Sequence[Entry] | bytes], *,
                config: dict[str, Any] | None = None) -> Path:
    """An OCI layout whose image has ``layers`` (entry lists, or raw uncompressed tar bytes),
    each gzip-compressed, with correct digests and diff_ids."""
    new_layout(layout)
    descs, diff_ids = [], []
    for layer in layers:
        raw = layer if isinstance(layer, bytes) else tar_bytes(layer)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        blob = gzip.compress(raw, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": _blob(layout, blob), "size": len(blob)})
    return _finish(layout, descs, diff_ids, config)


def tree_layout(layout: Path, root: Path, *, config: dict[str, Any] | None = None) -> Path:
    """An OCI layout of one layer holding the directory tree ``root`` (alicorn's own writer)."""
    blobs = new_layout(layout)
    tmp = blobs / "layer.tmp"
    with open(tmp, "wb") as out:
        info = write_layer(root, out, source_date_epoch=0)
    tmp.rename(blobs / info.digest.hex)
    desc = {"mediaType": info.media_type, "digest": str(info.digest), "size": info.size}
    return _finish(layout, [desc], [str(info.diff_id)], config)


def _finish(layout: Path, descs: list[dict[str, Any]], diff_ids: list[str],
            config: dict[str, Any] | None) -> Path:
    doc = {"architecture": "amd64", "os": "linux", "config": config or {},
           "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cfg = canonical_json(doc)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                               "config": {"mediaType": MEDIA_CONFIG,
                                          "digest": _blob(layout, cfg), "size": len(cfg)},
                               "layers": descs})
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
             "manifests": [{"mediaType": MEDIA_MANIFEST, "digest": _blob(layout, manifest),
                            "size": len(manifest)}]}
    (layout / "index.json").write_bytes(canonical_json(index))
    return layout


def image_config(layout: Path) -> tuple[str, dict[str, Any]]:
    index = json.loads((layout / "index.json").read_bytes())
    digest = index["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())
    config = json.loads((layout / "blobs" / "sha256" /
                         manifest["config"]["digest"].split(":")[1]).read_bytes())
    return digest, config


def context(layout: Path, tmp: Path, *, gate: Any = None, recipe_dir: Path | None = None,
            packages: Sequence[Package] = (), previous: Sequence[Package] | None = None,
            database_url: str | None = None, recipe_text: str = RECIPE) -> GateContext:
    """A GateContext for ``layout``: a minimal recipe (with ``gate`` when given) in
    ``recipe_dir`` (default ``tmp/recipe``)."""
    base = recipe_dir or tmp / "recipe"
    base.mkdir(parents=True, exist_ok=True)
    text = recipe_text + (yaml.safe_dump({"gate": gate}) if gate is not None else "")
    (base / "gate-test.yaml").write_text(text)
    recipe = parse_recipe(text, file=str(base / "gate-test.yaml"), base_dir=base)
    digest, config = image_config(layout)
    out = tmp / "out"
    return GateContext(layout=layout, digest=digest, config=config, recipe=recipe,
                       packages=tuple(packages), database_url=database_url or
                       f"sqlite:///{tmp / 'advisories.sqlite'}", out_dir=out,
                       log=BuildLog(tmp / "gate.log"),
                       previous_digest="sha256:" + "0" * 64 if previous is not None else None,
                       previous_packages=tuple(previous) if previous is not None else None)
