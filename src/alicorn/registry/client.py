"""A small client for the Docker Registry HTTP API v2 (the OCI distribution API).

Enough to put signatures, attestations and SBOMs next to an image the way cosign does: upload
blobs and manifests, read them back, list tags.  Images themselves are copied by skopeo
(:meth:`alicorn.registry.local.Registry.push`); this client handles the small documents around
them, so everything it reads is size-limited and checked against its digest.

Loopback registries are spoken to over plain HTTP (Alicorn's own registry never leaves the
host); any other registry over HTTPS.  There is no authentication: the registries Alicorn
publishes to accept anonymous pushes on loopback.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from email.message import Message
from http.client import HTTPResponse
from typing import IO, Any

from alicorn.digest import Digest, canonical_json, is_digest
from alicorn.errors import RegistryError

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DEFAULT_ACCEPT = (MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST)

MAX_MANIFEST_BYTES = 4 << 20      # what containers/image accepts for a manifest
DEFAULT_MAX_BLOB_BYTES = 4 << 20  # signatures, attestations, SBOMs: never image layers

# The repository-name and tag grammar of the distribution spec; checking them keeps a name
# from reaching into another part of the URL.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def is_loopback(addr: str) -> bool:
    """True when ``addr`` (``host[:port]``) names this host only."""
    host = urllib.parse.urlsplit(f"//{addr}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """The v2 API of the registry at ``addr`` (``host:port``)."""

    def __init__(self, addr: str, *, timeout: float = 30.0, scheme: str | None = None):
        self.addr = addr
        self.timeout = timeout
        self.scheme = scheme or ("http" if is_loopback(addr) else "https")
        self._opener = urllib.request.build_opener(_NoRedirectToHttp())

    # -- blobs ------------------------------------------------------------------------------
    def blob_exists(self, name: str, digest: Digest) -> bool:
        """Whether ``name`` already holds the blob ``digest``."""
        status, _, _ = self._request("HEAD", f"/v2/{self._name(name)}/blobs/{digest}",
                                     what=f"look for blob {digest.hex[:12]} in {name}",
                                     ok=(200, 404))
        return status == 200

    def push_blob(self, name: str, data: bytes) -> Digest:
        """Upload ``data`` as a blob of ``name`` (one POST, one PUT); returns its digest.

        Nothing is sent when the registry already holds the blob.
        """
        digest = Digest.of_bytes(data)
        if self.blob_exists(name, digest):
            return digest
        what = f"upload blob {digest.hex[:12]} to {name}"
        _, headers, _ = self._request("POST", f"/v2/{self._name(name)}/blobs/uploads/",
                                      what=what, ok=(202,))
        location = headers.get("Location")
        if not location:
            raise self._error(f"{what}: the registry gave no upload location")
        url = urllib.parse.urljoin(self._url("/"), location)
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        _, headers, _ = self._request(
            "PUT", url + sep + urllib.parse.urlencode({"digest": str(digest)}), what=what,
            body=data, headers={"Content-Type": "application/octet-stream"}, ok=(201,))
        self._check_digest_header(headers, digest, what)
        return digest

    def get_blob(self, name: str, digest: Digest, *,
                 max_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> bytes:
        """The blob ``digest`` of ``name``, checked against its digest and at most
        ``max_bytes`` long."""
        what = f"read blob {digest.hex[:12]} from {name}"
        _, _, data = self._request("GET", f"/v2/{self._name(name)}/blobs/{digest}", what=what,
                                   ok=(200,), max_bytes=max_bytes)
        if Digest.of_bytes(data) != digest:
            raise self._error(f"{what}: the registry sent content whose digest is "
                              f"{Digest.of_bytes(data)}, not {digest}",
                              hint="the registry's storage may be corrupt")
        return data

    # -- manifests --------------------------------------------------------------------------
    def push_manifest(self, name: str, reference: str, manifest: bytes,
                      media_type: str) -> Digest:
        """Store ``manifest`` as ``name:reference`` (a tag or its own digest)."""
        digest = Digest.of_bytes(manifest)
        ref = self._reference(reference)
        if is_digest(ref) and Digest(ref) != digest:
            raise RegistryError(f"cannot store a manifest whose digest is {digest} under {ref}")
        what = f"push manifest {name}:{ref}"
        if len(manifest) > MAX_MANIFEST_BYTES:
            raise self._error(f"{what}: the manifest is {len(manifest)} bytes, more than "
                              f"{MAX_MANIFEST_BYTES}")
        _, headers, _ = self._request("PUT", f"/v2/{self._name(name)}/manifests/{ref}",
                                      what=what, body=manifest,
                                      headers={"Content-Type": media_type}, ok=(201,))
        self._check_digest_header(headers, digest, what)
        return digest

    def get_manifest(self, name: str, reference: str, *, accept: tuple[str, ...] = DEFAULT_ACCEPT
                     ) -> tuple[bytes, str, Digest] | None:
        """``(bytes, media type, digest)`` of ``name:reference``; None when there is none."""
        ref = self._reference(reference)
        what = f"read manifest {name}:{ref}"
        status, headers, data = self._request(
            "GET", f"/v2/{self._name(name)}/manifests/{ref}", what=what, ok=(200, 404),
            headers={"Accept": ", ".join(accept)}, max_bytes=MAX_MANIFEST_BYTES)
        if status == 404:
            return None
        digest = Digest.of_bytes(data)
        if is_digest(ref) and Digest(ref) != digest:
            raise self._error(f"{what}: the registry sent a manifest whose digest is {digest}")
        self._check_digest_header(headers, digest, what)
        media_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip()
        if not media_type:
            try:
                media_type = str(json.loads(data).get("mediaType", ""))
            except (ValueError, AttributeError):
                media_type = ""
        return data, media_type, digest

    def list_tags(self, name: str) -> list[str]:
        """The tags of ``name`` (empty when the repository does not exist)."""
        what = f"list the tags of {name}"
        tags: list[str] = []
        path: str | None = f"/v2/{self._name(name)}/tags/list?n=1000"
        while path:
            status, headers, data = self._request("GET", path, what=what, ok=(200, 404),
                                                  max_bytes=MAX_MANIFEST_BYTES)
            if status == 404:
                return []
            try:
                tags.extend(str(t) for t in (json.loads(data).get("tags") or []))
            except (ValueError, AttributeError) as e:
                raise self._error(f"{what}: the answer is not a tag list: {e}") from e
            path = _next_link(headers.get("Link"))
        return sorted(tags)

    # -- plumbing ---------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.addr}{path}"

    def _name(self, name: str) -> str:
        if not _NAME_RE.fullmatch(name) or len(name) > 255:
            raise RegistryError(f"{name!r} is not a valid repository name",
                                hint="use lower-case letters, digits, '.', '_', '-' and '/'")
        return name

    @staticmethod
    def _reference(reference: str) -> str:
        if is_digest(reference) or _TAG_RE.fullmatch(reference):
            return reference
        raise RegistryError(f"{reference!r} is neither a tag nor a sha256 digest")

    def _error(self, message: str, *, hint: str | None = None) -> RegistryError:
        return RegistryError(message, where=f"registry {self.addr}", hint=hint)

    def _check_digest_header(self, headers: Message, digest: Digest, what: str) -> None:
        said = headers.get("Docker-Content-Digest")
        if said and said.strip() != str(digest):
            raise self._error(f"{what}: the registry says the digest is {said.strip()}, "
                              f"but the content's digest is {digest}")

    def _request(self, method: str, path_or_url: str, *, what: str, ok: tuple[int, ...],
                 body: bytes | None = None, headers: Mapping[str, str] | None = None,
                 max_bytes: int = 1 << 20) -> tuple[int, Message, bytes]:
        url = path_or_url if "://" in path_or_url else self._url(path_or_url)
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        try:
            resp: HTTPResponse = self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            with e:
                if e.code in ok:
                    data = b"" if method == "HEAD" else _read_limited(e, max_bytes, what, self)
                    return e.code, e.headers, data
                detail = _error_detail(e)
            hint = None
            if e.code in (401, 403):
                hint = "the registry wants credentials; Alicorn pushes anonymously"
            raise self._error(f"{what}: HTTP {e.code}{detail}", hint=hint) from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise self._error(f"{what}: the registry is not reachable ({reason})",
                              hint="check that the registry runs (alicorn registry status)"
                              ) from e
        with resp:
            if resp.status not in ok:
                raise self._error(f"{what}: unexpected HTTP {resp.status}")
            data = b"" if method == "HEAD" else _read_limited(resp, max_bytes, what, self)
            return resp.status, resp.headers, data


class _NoRedirectToHttp(urllib.request.HTTPRedirectHandler):
    """Follow redirects (registries send blob reads to storage) but never from HTTPS to HTTP."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if req.full_url.startswith("https:") and not newurl.startswith("https:"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_limited(resp: IO[bytes], max_bytes: int, what: str, client: RegistryClient) -> bytes:
    length = getattr(resp, "headers", {}).get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise client._error(f"{what}: {length} bytes is more than the {max_bytes} allowed")
    data = resp.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise client._error(f"{what}: more than the {max_bytes} bytes allowed")
    return data


def _error_detail(e: urllib.error.HTTPError) -> str:
    """The registry's own words for an error (``{"errors": [{"code", "message"}]}``)."""
    try:
        body = json.loads(e.read(64 << 10) or b"{}")
        errors = body.get("errors") or []
        parts = [f"{x.get('code', '')}: {x.get('message', '')}".strip(": ") for x in errors]
        return (" (" + "; ".join(p for p in parts if p) + ")") if parts else ""
    except (ValueError, AttributeError, OSError):
        return ""


def _next_link(link: str | None) -> str | None:
    """The path of the next page from a ``Link: <...>; rel="next"`` header."""
    if not link:
        return None
    m = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link)
    if not m:
        return None
    parts = urllib.parse.urlsplit(m.group(1))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def tiny_image(text: bytes, *, filename: str = "alicorn-probe") -> tuple[bytes, bytes, bytes]:
    """A one-file image, always the same for the same arguments: (layer, config, manifest)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(filename)
        info.size, info.mtime, info.mode = len(text), 0, 0o644
        tar.addfile(info, io.BytesIO(text))
    layer = gzip.compress(buf.getvalue(), mtime=0)
    config = canonical_json({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [str(Digest.of_bytes(buf.getvalue()))]}})
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": str(Digest.of_bytes(config)), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": str(Digest.of_bytes(layer)), "size": len(layer)}]})
    return layer, config, manifest


def push_tiny_image(client: RegistryClient, repository: str, tag: str,
                    text: bytes) -> tuple[bytes, Digest]:
    """Push :func:`tiny_image` of ``text``; returns its manifest and digest.  Used to probe what
    podman on this host does with a registry's images."""
    layer, config, manifest = tiny_image(text)
    client.push_blob(repository, layer)
    client.push_blob(repository, config)
    return manifest, client.push_manifest(repository, tag, manifest, MEDIA_OCI_MANIFEST)
