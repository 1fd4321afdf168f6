"""Signatures, attestations and SBOMs stored next to an image, the way cosign stores them.

For the image ``name@sha256:<hex>`` cosign keeps each kind of attachment as a small OCI image
tagged ``sha256-<hex>.<suffix>`` in the same repository: ``.sig`` for signatures, ``.att`` for
attestations (DSSE envelopes), ``.sbom`` for SBOMs.  Each attachment is one layer; the layer's
media type says what it is and its annotations carry what does not fit in the blob (the
signature over a simple-signing payload, an attestation's predicate type).  The config is the
minimal one go-containerregistry writes for an empty image with layers appended, so that
cosign, podman (containers/image reads ``.sig`` when ``use-sigstore-attachments`` is on) and
crane all read what Alicorn writes, and Alicorn reads what they write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from alicorn.digest import Digest
from alicorn.errors import RegistryError
from alicorn.registry.client import MEDIA_OCI_MANIFEST, RegistryClient

SIG = ".sig"
ATT = ".att"
SBOM = ".sbom"
# Alicorn's own kind: the security gate's results (gate.json) and its reports (OpenSCAP ARF
# and HTML), for people and tools that want the evidence itself rather than a statement.
GATE = ".gate"

MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
MEDIA_DSSE = "application/vnd.dsse.envelope.v1+json"
MEDIA_SPDX_JSON = "text/spdx+json"
MEDIA_CYCLONEDX_JSON = "application/vnd.cyclonedx+json"
MEDIA_GATE_JSON = "application/vnd.alicorn.gate.v1+json"
MEDIA_ARF_XML = "application/vnd.oscap.arf+xml"
MEDIA_HTML = "text/html"
MEDIA_JSON = "application/json"
GATE_MEDIA_TYPES = (MEDIA_GATE_JSON, MEDIA_ARF_XML, MEDIA_HTML, MEDIA_JSON, "application/xml")
ANNOTATION_TITLE = "org.opencontainers.image.title"

ANNOTATION_SIGNATURE = "dev.cosignproject.cosign/signature"
ANNOTATION_PREDICATE_TYPE = "predicateType"

# containers/image reads at most 4 MiB per attachment layer (iolimits.MaxSignatureBodySize);
# SBOMs of large images can be bigger, so they get more room.
MAX_LAYER_BYTES = {SIG: 4 << 20, ATT: 4 << 20, SBOM: 64 << 20, GATE: 64 << 20}
MAX_LAYERS = 1000

# go-containerregistry's zero time: what cosign's configs carry in "created" and "history".
_ZERO_TIME = "0001-01-01T00:00:00Z"


class Layer(NamedTuple):
    """One attachment: its bytes, their media type and the layer's annotations."""

    data: bytes
    media_type: str
    annotations: Mapping[str, str]

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.data)


def attachment_tag(image_digest: Digest, suffix: str) -> str:
    """``sha256-<hex>.<suffix>``: where cosign looks for ``suffix`` attachments of the image."""
    return f"sha256-{image_digest.hex}.{_suffix(suffix)[1:]}"


def attach(client: RegistryClient, name: str, image_digest: Digest, suffix: str,
           layers: Sequence[Layer | tuple[bytes, str, Mapping[str, str]]]) -> Digest:
    """Make ``layers`` the ``suffix`` attachments of ``name@image_digest``, replacing what was
    there; returns the attachment manifest's digest.

    To add to what is there, use :func:`append`.
    """
    suffix = _suffix(suffix)
    checked = [_check_layer(Layer(*layer), suffix) for layer in layers]
    if not checked:
        raise RegistryError(f"no {suffix} attachment to write for {name}@{image_digest}")
    if len(checked) > MAX_LAYERS:
        raise RegistryError(f"{len(checked)} {suffix} attachments for {name}@{image_digest} "
                            f"are more than the {MAX_LAYERS} allowed")
    for layer in checked:
        client.push_blob(name, layer.data)
    config = cosign_config(layer.digest for layer in checked)
    config_digest = client.push_blob(name, config)
    manifest = attachment_manifest(config, config_digest, checked)
    return client.push_manifest(name, attachment_tag(image_digest, suffix), manifest,
                                MEDIA_OCI_MANIFEST)


def append(client: RegistryClient, name: str, image_digest: Digest, suffix: str,
           layers: Sequence[Layer | tuple[bytes, str, Mapping[str, str]]]) -> Digest:
    """Add ``layers`` to the ``suffix`` attachments of ``name@image_digest``, keeping those
    already there (an identical layer is not added twice).

    Two writers appending at the same moment can lose one of the two additions: the registry
    has no compare-and-swap on tags.  Alicorn's worker signs one build at a time.
    """
    suffix = _suffix(suffix)
    existing = fetch_attachment(client, name, image_digest, suffix)
    seen = {_identity(layer) for layer in existing}
    new = [_check_layer(Layer(*layer), suffix) for layer in layers]
    added = [layer for layer in new if _identity(layer) not in seen]
    return attach(client, name, image_digest, suffix, [*existing, *added])


def fetch_attachment(client: RegistryClient, name: str, image_digest: Digest, suffix: str
                     ) -> list[Layer]:
    """The ``suffix`` attachments of ``name@image_digest``, each checked against its digest
    and size; empty when there are none."""
    suffix = _suffix(suffix)
    tag = attachment_tag(image_digest, suffix)
    got = client.get_manifest(name, tag, accept=(MEDIA_OCI_MANIFEST,))
    if got is None:
        return []
    data, media_type, _ = got
    where = f"{client.addr}/{name}:{tag}"
    if media_type != MEDIA_OCI_MANIFEST:
        raise RegistryError(f"{where} is a {media_type or 'untyped'} manifest, not an OCI image "
                            "manifest as cosign writes")
    try:
        manifest = json.loads(data)
        descriptors = manifest["layers"]
        if not isinstance(descriptors, list):
            raise TypeError("layers is not a list")
    except (ValueError, KeyError, TypeError) as e:
        raise RegistryError(f"{where} is not an attachment manifest: {e}") from e
    if len(descriptors) > MAX_LAYERS:
        raise RegistryError(f"{where} has {len(descriptors)} layers, more than the "
                            f"{MAX_LAYERS} allowed")
    layers: list[Layer] = []
    for i, desc in enumerate(descriptors):
        try:
            digest = Digest(str(desc["digest"]))
            size = int(desc["size"])
            media = str(desc["mediaType"])
            annotations = {str(k): str(v) for k, v in (desc.get("annotations") or {}).items()}
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise RegistryError(f"{where}: layer {i} is not a valid descriptor: {e}") from e
        limit = MAX_LAYER_BYTES[suffix]
        if size > limit:
            raise RegistryError(f"{where}: layer {i} is {size} bytes, more than the {limit} "
                                "allowed")
        blob = client.get_blob(name, digest, max_bytes=limit)
        if len(blob) != size:
            raise RegistryError(f"{where}: layer {i} is {len(blob)} bytes, its descriptor "
                                f"says {size}")
        layers.append(Layer(blob, media, annotations))
    return layers


def cosign_config(layer_digests: Iterable[Digest]) -> bytes:
    """The config go-containerregistry writes for an empty image with these layers appended
    (what cosign pushes): a layer's diff id is its digest, as the layers are not compressed."""
    diff_ids = [str(d) for d in layer_digests]
    config: dict[str, Any] = {
        "architecture": "",
        "created": _ZERO_TIME,
        "history": [{"created": _ZERO_TIME} for _ in diff_ids],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }
    return _go_json(config)


def attachment_manifest(config: bytes, config_digest: Digest, layers: Sequence[Layer]) -> bytes:
    """An OCI image manifest in go-containerregistry's field order, as cosign writes it."""
    def descriptor(layer: Layer) -> dict[str, Any]:
        desc: dict[str, Any] = {"mediaType": layer.media_type, "size": len(layer.data),
                                "digest": str(layer.digest)}
        if layer.annotations:
            desc["annotations"] = dict(sorted(layer.annotations.items()))
        return desc

    return _go_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "size": len(config),
                   "digest": str(config_digest)},
        "layers": [descriptor(layer) for layer in layers],
    })


def gate_media_type(name: str) -> str | None:
    """The media type of a gate report by its file name (OpenSCAP's ARF, HTML, JSON); None
    for a file of another kind, which is not attached."""
    if name.endswith(".html"):
        return MEDIA_HTML
    if name.endswith(".json"):
        return MEDIA_JSON
    if name.endswith(".xml"):
        return MEDIA_ARF_XML if "arf" in name.rsplit("/", 1)[-1].lower() else "application/xml"
    return None


def _go_json(value: Any) -> bytes:
    # Go's encoding/json: no spaces, fields in struct order, map keys sorted, UTF-8 as is.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _suffix(suffix: str) -> str:
    s = suffix if suffix.startswith(".") else "." + suffix
    if s not in MAX_LAYER_BYTES:
        raise ValueError(f"unknown attachment kind {suffix!r}: use .sig, .att, .sbom or .gate")
    return s


def _identity(layer: Layer) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    return str(layer.digest), layer.media_type, tuple(sorted(layer.annotations.items()))


def _check_layer(layer: Layer, suffix: str) -> Layer:
    """Refuse what cosign's readers would not take for this kind of attachment."""
    if not isinstance(layer.data, bytes):
        raise TypeError("attachment data must be bytes")
    problem = None
    if suffix == SIG and layer.media_type == MEDIA_SIMPLESIGNING \
            and not layer.annotations.get(ANNOTATION_SIGNATURE):
        problem = f"a signature layer needs the {ANNOTATION_SIGNATURE} annotation"
    elif suffix == ATT and layer.media_type != MEDIA_DSSE:
        problem = f"an attestation is a DSSE envelope ({MEDIA_DSSE}), not {layer.media_type}"
    elif suffix == ATT and not layer.annotations.get(ANNOTATION_PREDICATE_TYPE):
        problem = f"an attestation needs the {ANNOTATION_PREDICATE_TYPE} annotation"
    elif suffix == SBOM and layer.media_type not in (MEDIA_SPDX_JSON, MEDIA_CYCLONEDX_JSON):
        problem = (f"an SBOM is {MEDIA_SPDX_JSON} or {MEDIA_CYCLONEDX_JSON}, "
                   f"not {layer.media_type}")
    elif suffix == GATE and layer.media_type not in GATE_MEDIA_TYPES:
        problem = f"a gate report is one of {', '.join(GATE_MEDIA_TYPES)}, not {layer.media_type}"
    if problem:
        raise RegistryError(f"cannot attach this {suffix} layer: {problem}")
    if len(layer.data) > MAX_LAYER_BYTES[suffix]:
        raise RegistryError(f"a {suffix} attachment of {len(layer.data)} bytes is more than "
                            f"the {MAX_LAYER_BYTES[suffix]} readers accept")
    annotations = dict(layer.annotations)
    if suffix == ATT:
        # cosign's attestation layers carry an empty signature annotation: the signature is
        # inside the envelope.  Matching it keeps cosign's own tools at ease with ours.
        annotations.setdefault(ANNOTATION_SIGNATURE, "")
    return Layer(layer.data, layer.media_type, annotations)
