"""Cosign-compatible image signatures, and the host policy that makes podman require them.

Every published image gets a "simple signing" payload naming it, signed with the build service's
current key and stored as a ``.sig`` attachment (see :mod:`alicorn.chain.attach`), exactly as
``cosign sign --key`` stores it.  podman reads it when ``registries.d`` turns on
``use-sigstore-attachments`` for the registry, and checks it when ``policy.json`` has a
``sigstoreSigned`` requirement for the registry.

The signed identity is ``<registry>/<name>:<tag>``.  podman's default ``signedIdentity``,
``matchRepoDigestOrExact``, accepts it for a pull by digest (the repositories match) and for a
pull of that tag (the references are equal).  cosign's own default, the repository alone, is
refused by ``matchRepoDigestOrExact`` for both, so Alicorn does not use it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from alicorn.chain.attach import (
    ANNOTATION_SIGNATURE,
    MEDIA_SIMPLESIGNING,
    SIG,
    Layer,
    attach,
    fetch_attachment,
)
from alicorn.chain.keys import KeyRing, PublicKey, SigningKey
from alicorn.digest import Digest, canonical_json
from alicorn.errors import Error, RegistryError
from alicorn.fs import replace_file
from alicorn.proc import BuildLog, run, which
from alicorn.registry.client import RegistryClient, push_tiny_image

SIGNATURE_TYPE = "cosign container image signature"
CREATOR = "alicorn"

POLICY_JSON = Path("/etc/containers/policy.json")
REGISTRIES_D = Path("/etc/containers/registries.d")
PROBE_REPOSITORY = "alicorn-probe/sigstore"
_MARKER = "# Written by alicorn"
_OUR_KEY_PATH = re.compile(r".*/keys/public/[0-9a-f]{64}\.pem")


class SignatureError(Error):
    """An image's signature is missing, made with a key that is not ours, or names another
    image."""


class PolicyError(Error):
    """The host's container policy cannot be set up as asked."""


@dataclass(frozen=True)
class ImageSignature:
    identity: str          # the docker-reference signed: <registry>/<name>:<tag>
    image_digest: Digest
    key_id: str
    payload_digest: Digest
    attachment: Digest     # the digest of the .sig manifest that holds it


@dataclass(frozen=True)
class HostPolicy:
    addr: str
    policy_path: Path
    registries_d_file: Path
    key_paths: tuple[Path, ...]   # the keys podman trusts for the registry
    podman_verifies: bool         # podman here really checks sigstore signatures
    detail: str                   # what the check saw, for a person
    notes: tuple[str, ...] = ()


# -- signing ----------------------------------------------------------------------------------
def docker_reference(addr: str, name: str, tag: str) -> str:
    """The identity a signature names: ``<registry>/<name>:<tag>``."""
    return f"{addr}/{name}:{tag}"


def signature_payload(identity: str, image_digest: Digest) -> bytes:
    """The simple-signing payload cosign and containers/image sign and check.

    No timestamp: the same image under the same name gives the same payload, so signing
    again is a no-op rather than one more signature.
    """
    return canonical_json({
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": str(image_digest)},
            "type": SIGNATURE_TYPE,
        },
        "optional": {"creator": CREATOR},
    })


def signature_layer(payload: bytes, key: SigningKey) -> Layer:
    """``payload`` as a cosign signature layer signed with ``key``."""
    sig = base64.b64encode(key.sign(payload)).decode()
    return Layer(payload, MEDIA_SIMPLESIGNING, {ANNOTATION_SIGNATURE: sig})


def sign_image(client: RegistryClient, name: str, tag: str, image_digest: Digest,
               key: SigningKey, *, tag_moved: bool = True) -> ImageSignature:
    """Sign ``<registry>/name:tag`` (which must be ``image_digest``) with ``key`` and add the
    signature to the image's ``.sig`` attachment, keeping the signatures already there.

    Signing the same image under the same name with the same key again changes nothing.
    ``tag_moved=False``: the image is pushed by digest and the tag moves to it only after
    signing (a publisher that moves the tag last); then ``name@image_digest`` must exist.
    """
    if tag_moved:
        held = client.get_manifest(name, tag)
        if held is None:
            raise RegistryError(f"{client.addr}/{name}:{tag} does not exist; nothing to sign",
                                hint="push the image before signing it")
        if held[2] != image_digest:
            raise SignatureError(f"{client.addr}/{name}:{tag} is {held[2]}, not "
                                 f"{image_digest}; refusing to sign a tag that names another "
                                 "image", hint="another push moved the tag: build and publish "
                                               "again")
    elif client.get_manifest(name, str(image_digest)) is None:
        raise RegistryError(f"{client.addr}/{name}@{image_digest} does not exist; nothing to "
                            "sign", hint="push the image before signing it")
    identity = docker_reference(client.addr, name, tag)
    payload = signature_payload(identity, image_digest)
    existing = fetch_attachment(client, name, image_digest, SIG)
    if not any(layer.data == payload and _verifies(layer, key.public) for layer in existing):
        existing.append(signature_layer(payload, key))
    attachment = attach(client, name, image_digest, SIG, existing)
    return ImageSignature(identity=identity, image_digest=image_digest, key_id=key.key_id,
                          payload_digest=Digest.of_bytes(payload), attachment=attachment)


# -- verifying --------------------------------------------------------------------------------
def verify_image_signature(client: RegistryClient, name: str, image_digest: Digest,
                           keys: Sequence[PublicKey], *, tag: str | None = None) -> str:
    """The id of the key whose signature on ``name@image_digest`` holds; else
    :class:`SignatureError` saying why none does.

    The rules are podman's (``sigstoreSigned`` with ``matchRepoDigestOrExact``): the signature
    verifies with one of ``keys``, its payload names exactly this manifest digest, and its
    identity is this repository with a tag or digest (exactly ``name:tag`` when ``tag`` is
    given).
    """
    where = f"{client.addr}/{name}@{image_digest}"
    if not keys:
        raise SignatureError(f"cannot verify {where}: no public key to verify with",
                             hint="the build service's keys are in ALICORN_HOME/keys")
    layers = fetch_attachment(client, name, image_digest, SIG)
    signatures = [layer for layer in layers if layer.media_type == MEDIA_SIMPLESIGNING]
    if not signatures:
        raise SignatureError(f"{where} is not signed",
                             hint="images published by this build service are signed when "
                                  "they are pushed; this one was not published by it")
    repository = f"{client.addr}/{name}"
    reasons: list[str] = []
    for layer in signatures:
        key = next((k for k in keys if _verifies(layer, k)), None)
        if key is None:
            continue
        try:
            identity, signed_digest = parse_payload(layer.data)
        except SignatureError as e:
            reasons.append(e.message)
            continue
        if signed_digest != image_digest:
            reasons.append(f"a signature by key {key.key_id[:16]}… is for the image "
                           f"{signed_digest}, not {image_digest}")
            continue
        repo, ref_tag, ref_digest = split_reference(identity)
        if repo != repository or (ref_tag is None and ref_digest is None):
            reasons.append(f"a signature by key {key.key_id[:16]}… names {identity}, "
                           f"not the repository {repository}")
            continue
        if tag is not None and identity != docker_reference(client.addr, name, tag):
            reasons.append(f"a signature by key {key.key_id[:16]}… names {identity}, "
                           f"not {repository}:{tag}")
            continue
        return key.key_id
    if not reasons:
        raise SignatureError(
            f"none of the {len(signatures)} signature(s) on {where} was made with one of this "
            "build service's keys",
            hint="the image was signed by someone else, or with a key that is not in "
                 "ALICORN_HOME/keys/keys.json")
    raise SignatureError(f"no signature on {where} holds: " + "; ".join(reasons),
                         hint="the signature was copied from another image or name: do not "
                              "trust this image")


def parse_payload(payload: bytes) -> tuple[str, Digest]:
    """``(docker-reference, manifest digest)`` of a simple-signing payload, read as strictly
    as containers/image reads it (exactly these fields)."""
    try:
        doc = json.loads(payload)
        _exact(doc, {"critical", "optional"}, "the payload")
        critical = doc["critical"]
        _exact(critical, {"type", "image", "identity"}, "critical")
        if critical["type"] != SIGNATURE_TYPE:
            raise ValueError(f"its type is {critical['type']!r}, not {SIGNATURE_TYPE!r}")
        _exact(critical["image"], {"docker-manifest-digest"}, "critical.image")
        _exact(critical["identity"], {"docker-reference"}, "critical.identity")
        identity = critical["identity"]["docker-reference"]
        if not isinstance(identity, str):
            raise ValueError("critical.identity.docker-reference is not a string")
        return identity, Digest(str(critical["image"]["docker-manifest-digest"]))
    except (ValueError, TypeError, KeyError) as e:
        raise SignatureError(f"a signature's payload is not a cosign simple-signing payload: "
                             f"{e}") from e


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """``(repository, tag, digest)`` of a docker reference (``host:port/name:tag@digest``)."""
    rest, _, digest = ref.partition("@")
    last = rest.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
    return rest, tag, digest or None


def _exact(value: Any, fields: set[str], what: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    if set(value) != fields:
        raise ValueError(f"{what} has the fields {sorted(value)}, expected {sorted(fields)}")


def _verifies(layer: Layer, key: PublicKey) -> bool:
    try:
        sig = base64.b64decode(layer.annotations.get(ANNOTATION_SIGNATURE, ""), validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(sig) and key.verify(sig, layer.data)


# -- the host's policy ------------------------------------------------------------------------
def registries_d_file(addr: str, registries_d: Path = REGISTRIES_D) -> Path:
    safe = addr.replace(":", "-").replace("[", "").replace("]", "")
    return registries_d / f"alicorn-{safe}.yaml"


def host_policy(client: RegistryClient, keyring: KeyRing, *, policy_path: Path = POLICY_JSON,
                registries_d: Path = REGISTRIES_D, force: bool = False,
                log: BuildLog | None = None) -> HostPolicy:
    """Make podman on this host require our signature on every image from the registry.

    Writes ``registries.d/alicorn-<addr>.yaml`` (read ``.sig`` attachments from the registry)
    and a ``sigstoreSigned`` rule for the registry into ``policy.json``, leaving the rest of
    that file as it was.  Idempotent; :func:`remove_host_policy` undoes it.

    Before trusting the rule, a throwaway image signed with a throwaway key is pulled with it
    in a scratch store.  If podman here cannot verify sigstore signatures (Debian 12's podman
    is built without), the rule would refuse every image of the registry, signed or not, so
    :class:`PolicyError` is raised and nothing is left written, unless ``force``.  (The
    check reads signatures through the host's registries.d: with another ``registries_d``
    it always fails.)
    """
    addr = client.addr
    keys = keyring.public_keys()
    current = [k for k in keys if k.retired is None]
    if not current:
        raise PolicyError("the build service has no signing key yet",
                          hint="publish an image first (signing creates the key)")
    with _locked(policy_path.parent):
        policy = _read_policy(policy_path)
        scope = policy.get("transports", {}).get("docker", {}).get(addr)
        if scope is not None and not _is_ours(scope):
            raise PolicyError(f"{policy_path} already has a rule for {addr} that Alicorn did "
                              "not write", where=str(policy_path),
                              hint=f"remove transports.docker[\"{addr}\"] from it yourself, "
                                   "or keep it and do not install Alicorn's policy")
        yaml_file, created = _write_registries_d(addr, registries_d)
        try:
            ok, detail = _probe(client, log=log)
        except BaseException:
            if created:
                _unset_sigstore(addr, registries_d)
            raise
        if not ok and not force:
            if created:
                _unset_sigstore(addr, registries_d)
            raise PolicyError(f"podman on this host cannot verify sigstore signatures "
                              f"({detail}); requiring them would refuse every image of {addr}",
                              hint="install a podman whose containers/image verifies "
                                   "sigstoreSigned (Debian 12's is built without it)")
        key_dir = keyring.public_dir
        notes: list[str] = []
        if len(keys) > 1 and ok and _probe(client, log=log, key_paths=True)[0]:
            trusted = keys
            requirement: dict[str, Any] = {
                "type": "sigstoreSigned",
                "keyPaths": [str(key_dir / f"{k.key_id}.pem") for k in trusted],
                "signedIdentity": {"type": "matchRepoDigestOrExact"}}
        else:
            # keyPath only (containers/image before keyPaths): several requirements would all
            # have to hold, so podman trusts the current key alone, and images signed with a
            # retired key need a signature with the current key as well (sign_image again).
            trusted = [current[-1]]
            requirement = {"type": "sigstoreSigned",
                           "keyPath": str(key_dir / f"{current[-1].key_id}.pem"),
                           "signedIdentity": {"type": "matchRepoDigestOrExact"}}
            if len(keys) > 1:
                notes.append("podman here trusts one key per rule: images signed only with a "
                             "retired key must be signed again with the current one")
        for k in trusted:
            path = key_dir / f"{k.key_id}.pem"
            if not path.is_file():
                raise PolicyError(f"the public key file {path} is missing",
                                  hint="the key index and the key files disagree")
        kept = [r for r in scope or [] if not _is_our_sigstore(r)]  # our GPG rule stays
        policy.setdefault("transports", {}).setdefault("docker", {})[addr] = [*kept, requirement]
        _write_policy(policy_path, policy)
    notes.extend(_shadowing())
    return HostPolicy(addr=addr, policy_path=policy_path, registries_d_file=yaml_file,
                      key_paths=tuple(key_dir / f"{k.key_id}.pem" for k in trusted),
                      podman_verifies=ok, detail=detail, notes=tuple(notes))


def remove_host_policy(addr: str, *, policy_path: Path = POLICY_JSON,
                       registries_d: Path = REGISTRIES_D) -> bool:
    """Undo :func:`host_policy` for ``addr``; True when there was something to undo.

    Only what Alicorn wrote goes: a rule for ``addr`` that someone else wrote stays.
    """
    removed = False
    with _locked(policy_path.parent):
        if policy_path.exists():
            policy = _read_policy(policy_path)
            transports = policy.get("transports", {})
            docker = transports.get("docker", {})
            if addr in docker and _is_ours(docker[addr]) and \
                    any(_is_our_sigstore(r) for r in docker[addr]):
                rest = [r for r in docker[addr] if not _is_our_sigstore(r)]
                if rest:
                    docker[addr] = rest
                else:
                    del docker[addr]
                if not docker:
                    del transports["docker"]
                if not transports:
                    del policy["transports"]
                _write_policy(policy_path, policy)
                removed = True
        removed = _unset_sigstore(addr, registries_d) or removed
    return removed


def _unset_sigstore(addr: str, registries_d: Path) -> bool:
    """Turn sigstore attachments off in Alicorn's registries.d entry, keeping the rest (the GPG
    lookaside); True if they were on."""
    from alicorn.chain.gpgsign import _read_entry, write_registries_d

    path = registries_d_file(addr, registries_d)
    _, on = _read_entry(path, addr)
    if on:
        write_registries_d(addr, registries_d=registries_d, use_sigstore_attachments=False)
    return on


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise Alicorn's edits of the host's container configuration."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise PolicyError(f"cannot use {directory}: {e.strerror}", where=str(directory),
                          hint="is podman installed? its configuration lives there") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_policy(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"default": [{"type": "insecureAcceptAnything"}]}
    except OSError as e:
        raise PolicyError(f"cannot read {path}: {e.strerror}", where=str(path)) from e
    return _parse_policy(text, path)


def _parse_policy(text: str, path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise PolicyError(f"not valid JSON: {e}", where=str(path),
                          hint="podman refuses every pull until it is fixed") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("transports", {}), dict) \
            or not isinstance(doc.get("transports", {}).get("docker", {}), dict):
        raise PolicyError("not a containers-policy.json(5) document", where=str(path))
    return doc


def _write_policy(path: Path, policy: dict[str, Any]) -> None:
    """Replace ``path`` atomically (podman may read it at any moment), keeping its mode."""
    text = json.dumps(policy, indent=4) + "\n"
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    replace_file(path, text, mode=mode)


def _is_our_sigstore(req: Any) -> bool:
    if not isinstance(req, dict) or req.get("type") != "sigstoreSigned":
        return False
    paths = req.get("keyPaths") or [req.get("keyPath")]
    return all(isinstance(p, str) and _OUR_KEY_PATH.fullmatch(p) for p in paths)


def _is_ours(scope: Any) -> bool:
    """A rule Alicorn wrote: sigstoreSigned requirements with keys from a key ring, and
    Alicorn's GPG requirement (chain.gpgsign)."""
    from alicorn.chain.gpgsign import is_alicorn_gpg_requirement

    if not isinstance(scope, list) or not scope:
        return False
    return all(_is_our_sigstore(r) or is_alicorn_gpg_requirement(r) for r in scope)


def _write_registries_d(addr: str, registries_d: Path) -> tuple[Path, bool]:
    """Turn on sigstore attachments in Alicorn's one registries.d entry for ``addr`` (shared
    with the GPG lookaside); returns the file and whether the setting is new."""
    from alicorn.chain.gpgsign import _read_entry, write_registries_d

    path = registries_d_file(addr, registries_d)
    _, before = _read_entry(path, addr)
    written = write_registries_d(addr, registries_d=registries_d, use_sigstore_attachments=True)
    assert written is not None
    return written, not before


def _shadowing() -> list[str]:
    """Per-user files that make podman ignore the host-wide ones for this user."""
    home = Path.home() / ".config" / "containers"
    notes = []
    if (home / "policy.json").exists():
        notes.append(f"{home / 'policy.json'} exists: podman run by this user ignores "
                     f"{POLICY_JSON}")
    if (home / "registries.d").is_dir():
        notes.append(f"{home / 'registries.d'} exists: podman run by this user ignores "
                     f"{REGISTRIES_D}")
    return notes


# -- can podman here verify? ------------------------------------------------------------------
def _probe(client: RegistryClient, *, log: BuildLog | None = None,
           key_paths: bool = False) -> tuple[bool, str]:
    """Pull a throwaway image, signed with a throwaway key, under a policy requiring that key,
    into a scratch store.  True when podman accepts it; else podman's reason.

    With ``key_paths``, the policy names the key in ``keyPaths`` (newer containers/image).
    """
    podman = which("podman")
    key = SigningKey(ec.generate_private_key(ec.SECP256R1()), int(time.time()))
    digest = _push_probe_image(client)
    identity = docker_reference(client.addr, PROBE_REPOSITORY, "probe")
    attach(client, PROBE_REPOSITORY, digest, SIG,
           [signature_layer(signature_payload(identity, digest), key)])
    with tempfile.TemporaryDirectory(prefix="alicorn-sigstore-probe-") as tmp:
        keyfile = Path(tmp) / "probe.pem"
        keyfile.write_text(key.public.pem)
        keys: dict[str, Any] = ({"keyPaths": [str(keyfile)]} if key_paths
                                else {"keyPath": str(keyfile)})
        policy = {"default": [{"type": "reject"}],
                  "transports": {"docker": {f"{client.addr}/{PROBE_REPOSITORY}": [
                      {"type": "sigstoreSigned", **keys,
                       "signedIdentity": {"type": "matchRepoDigestOrExact"}}]}}}
        policy_file = Path(tmp) / "policy.json"
        policy_file.write_text(json.dumps(policy))
        proc = run([podman, "--root", f"{tmp}/root", "--runroot", f"{tmp}/run",
                    "--storage-driver", "vfs", "pull", "--quiet", "--tls-verify=false",
                    "--signature-policy", str(policy_file), identity],
                   check=False, log=log, what="podman pull (sigstore check)", timeout=120)
    if proc.returncode == 0:
        return True, "podman accepted a signed image and checks the key"
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    return False, (lines[-1] if lines else f"podman exited {proc.returncode}")


def _push_probe_image(client: RegistryClient) -> Digest:
    """A one-file image, always the same, in :data:`PROBE_REPOSITORY`."""
    return push_tiny_image(client, PROBE_REPOSITORY, "probe",
                           b"alicorn checks that podman verifies sigstore signatures\n")[1]
