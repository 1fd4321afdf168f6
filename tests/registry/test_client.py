"""The registry API client against the real local registry, and against one that lies."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from alicorn.config import load_settings
from alicorn.digest import Digest, canonical_json
from alicorn.errors import RegistryError
from alicorn.registry.client import (
    MAX_MANIFEST_BYTES,
    MEDIA_OCI_MANIFEST,
    RegistryClient,
    is_loopback,
)
from conftest import Cli, free_port, require

CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryClient]:
    require("docker-registry")
    cli = Cli(tmp_path_factory.mktemp("registry-client") / "home")
    cli("registry", "start", check=True, timeout=60)
    try:
        yield RegistryClient(load_settings(cli.home).registry)
    finally:
        cli.down()


def manifest_for(client: RegistryClient, name: str, config: bytes, *layers: bytes) -> bytes:
    for blob in (config, *layers):
        client.push_blob(name, blob)
    return canonical_json({
        "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": CONFIG_MEDIA, "digest": str(Digest.of_bytes(config)),
                   "size": len(config)},
        "layers": [{"mediaType": "application/octet-stream", "digest": str(Digest.of_bytes(x)),
                    "size": len(x)} for x in layers]})


@pytest.mark.integration
def test_blob_round_trip(client: RegistryClient) -> None:
    data = b"a blob for the round trip\n"
    digest = Digest.of_bytes(data)
    assert not client.blob_exists("client/blobs", digest)
    assert client.push_blob("client/blobs", data) == digest
    assert client.blob_exists("client/blobs", digest)
    assert client.push_blob("client/blobs", data) == digest   # already there: no upload
    assert client.get_blob("client/blobs", digest) == data


@pytest.mark.integration
def test_manifest_round_trip_by_tag_and_by_digest(client: RegistryClient) -> None:
    manifest = manifest_for(client, "client/manifests", b"{}", b"layer one")
    digest = client.push_manifest("client/manifests", "v1", manifest, MEDIA_OCI_MANIFEST)
    assert digest == Digest.of_bytes(manifest)
    for ref in ("v1", str(digest)):
        assert client.get_manifest("client/manifests", ref) == (manifest, MEDIA_OCI_MANIFEST,
                                                                digest)
    assert client.push_manifest("client/manifests", str(digest), manifest,
                                MEDIA_OCI_MANIFEST) == digest
    client.push_manifest("client/manifests", "v2", manifest, MEDIA_OCI_MANIFEST)
    assert client.list_tags("client/manifests") == ["v1", "v2"]


@pytest.mark.integration
def test_what_is_not_there(client: RegistryClient) -> None:
    assert client.get_manifest("client/manifests", "no-such-tag") is None
    assert client.get_manifest("client/nothing-here", "v1") is None
    assert client.get_manifest("client/nothing-here", "sha256:" + "0" * 64) is None
    assert client.list_tags("client/nothing-here") == []
    with pytest.raises(RegistryError, match=r"read blob 000000000000 from client/blobs: HTTP 404"
                       ) as e:
        client.get_blob("client/blobs", Digest("sha256:" + "0" * 64))
    assert e.value.where == f"registry {client.addr}"


@pytest.mark.integration
def test_the_registry_refuses_a_manifest_with_missing_blobs(client: RegistryClient) -> None:
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": CONFIG_MEDIA, "digest": "sha256:" + "1" * 64, "size": 2},
        "layers": []})
    # The registry's own words (its error code) are kept in the message.
    with pytest.raises(RegistryError,
                       match=r"push manifest client/broken:v1: HTTP 400 \(MANIFEST_BLOB_UNKNOWN"):
        client.push_manifest("client/broken", "v1", manifest, MEDIA_OCI_MANIFEST)


@pytest.mark.integration
def test_size_limits(client: RegistryClient) -> None:
    data = b"x" * 4096
    digest = client.push_blob("client/blobs", data)
    with pytest.raises(RegistryError, match="more than the 1000"):
        client.get_blob("client/blobs", digest, max_bytes=1000)
    assert client.get_blob("client/blobs", digest, max_bytes=4096) == data
    with pytest.raises(RegistryError, match="more than"):
        client.push_manifest("client/big", "v1", b" " * (MAX_MANIFEST_BYTES + 1),
                             MEDIA_OCI_MANIFEST)


def test_names_and_references_are_checked() -> None:
    client = RegistryClient("127.0.0.1:1")
    for name in ("Upper/case", "../escape", "a//b", "", "a/"):
        with pytest.raises(RegistryError, match="not a valid repository name"):
            client.get_manifest(name, "v1")
    with pytest.raises(RegistryError, match="neither a tag nor"):
        client.get_manifest("ok/name", "../../v2/_catalog")
    with pytest.raises(RegistryError, match="cannot store a manifest whose digest"):
        client.push_manifest("ok/name", "sha256:" + "2" * 64, b"{}", MEDIA_OCI_MANIFEST)


def test_an_unreachable_registry_says_so() -> None:
    client = RegistryClient(f"127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(RegistryError, match="not reachable") as e:
        client.list_tags("any/thing")
    assert e.value.where == f"registry {client.addr}"
    assert "alicorn registry status" in (e.value.hint or "")


def test_loopback_is_plain_http_and_the_rest_https() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:5000")
    assert is_loopback("[::1]:5000") and is_loopback("127.3.4.5")
    assert not is_loopback("registry.example.com") and not is_loopback("10.0.0.1:5000")
    assert RegistryClient("127.0.0.1:5000").scheme == "http"
    assert RegistryClient("registry.example.com").scheme == "https"


# -- a registry that lies ---------------------------------------------------------------------
class _Liar(http.server.BaseHTTPRequestHandler):
    """Serves content that does not match the digest asked for or announced."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if "/blobs/" in self.path:
            self._send(200, b"not what you asked for", {})
        elif self.path.endswith("/manifests/v1"):
            body = b'{"schemaVersion":2}'
            self._send(200, body, {"Content-Type": MEDIA_OCI_MANIFEST,
                                   "Docker-Content-Digest": "sha256:" + "3" * 64})
        elif "/manifests/sha256:" in self.path:
            self._send(200, b'{"schemaVersion":2}', {"Content-Type": MEDIA_OCI_MANIFEST})
        elif self.path.endswith("/manifests/huge"):
            self._send(200, b" " * (MAX_MANIFEST_BYTES + 10), {})
        else:
            self._send(404, json.dumps({"errors": [{"code": "NAME_UNKNOWN",
                                                    "message": "nope"}]}).encode(), {})

    do_HEAD = do_GET

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(201, b"", {"Docker-Content-Digest": "sha256:" + "4" * 64})


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hangs up on an oversized answer: a broken pipe here is expected


@pytest.fixture
def liar() -> Iterator[RegistryClient]:
    server = _QuietServer(("127.0.0.1", 0), _Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RegistryClient(f"127.0.0.1:{server.server_address[1]}", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_a_blob_that_does_not_match_its_digest_is_refused(liar: RegistryClient) -> None:
    with pytest.raises(RegistryError, match="sent content whose digest is"):
        liar.get_blob("x/y", Digest("sha256:" + "5" * 64))


def test_a_manifest_that_does_not_match_its_digest_is_refused(liar: RegistryClient) -> None:
    with pytest.raises(RegistryError, match="the registry says the digest is sha256:3333"):
        liar.get_manifest("x/y", "v1")
    with pytest.raises(RegistryError, match="sent a manifest whose digest is"):
        liar.get_manifest("x/y", "sha256:" + "6" * 64)
    with pytest.raises(RegistryError, match="more than"):
        liar.get_manifest("x/y", "huge")


def test_a_push_the_registry_misrecords_is_refused(liar: RegistryClient) -> None:
    with pytest.raises(RegistryError, match="the registry says the digest is sha256:4444"):
        liar.push_manifest("x/y", "v1", b"{}", MEDIA_OCI_MANIFEST)

