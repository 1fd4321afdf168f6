"""Only images that verify under the host's policy run.

The host's policy is the build service's public keys in ``$ALICORN_HOME/keys`` (current and
retired), or only the PEM keys a caller pins.  An image is trusted when, in its registry:

1. a cosign-style signature (``.sig``) by one of those keys names exactly this manifest
   digest and this repository (:func:`alicorn.chain.sigstore.verify_image_signature`, which
   applies podman's own ``matchRepoDigestOrExact`` rules);
2. its attestations (``.att``) hold SLSA provenance in a DSSE envelope signed by one of those
   keys, whose subject is this digest; the build id, recipe and source come from it.

This is checked before anything is pulled, and the rollout then pulls by digest, so what runs
is what was checked.  podman checks again at pull time only if the host's containers policy
requires signatures for the registry: the local registry's start installs that rule (GPG
simple signing, which Debian's podman verifies: see
:meth:`alicorn.registry.local.Registry.require_signatures` and :mod:`alicorn.chain.gpgsign`).
:func:`podman_enforces` says whether it is there, for ``status`` and warnings.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alicorn.chain import attach, dsse, provenance
from alicorn.chain.dsse import KeyLookup
from alicorn.chain.keys import PinnedKeys, PublicKey, SigningKeyError, keyring_for
from alicorn.chain.sigstore import (
    POLICY_JSON,
    SignatureError,
    split_reference,
    verify_image_signature,
)
from alicorn.config import Settings
from alicorn.digest import Digest, is_digest
from alicorn.errors import NotFound, RegistryError
from alicorn.registry.client import RegistryClient
from alicorn.rollout.interface import NoSuchImage, UntrustedImage
from alicorn.rollout.model import TrustedImage

# A build id (or a prefix of one, as `alicorn builds` shows them): hex, shorter than a digest.
_BUILD_ID = re.compile(r"[0-9a-f]{6,63}")
_SIGNATURE_TYPES = ("signedBy", "sigstoreSigned")


# -- references ----------------------------------------------------------------------------------

def _split(settings: Settings, text: str) -> tuple[str, str, str | None, str | None]:
    """``(addr, name, tag, digest)`` of ``[addr/]name[:tag][@digest]``; the home's registry
    when the first component is not a host (docker's rule: it has a '.' or a ':', or is
    ``localhost``)."""
    rest, tag, digest = split_reference(text)
    if "@" in text and not (digest and is_digest(digest)):
        raise NoSuchImage(f"{text!r}: {digest or ''!r} is not a sha256 digest",
                          hint="a digest is sha256: and 64 hex digits")
    first, slash, path = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        addr, rest = first, path
    else:
        addr = settings.registry
    if not rest:
        raise NoSuchImage(f"{text!r} names no repository",
                          hint="addr/name@sha256:…, addr/name:tag, name:tag, sha256:… or a "
                               "build id")
    return addr, rest, tag, digest or None


def _client(settings: Settings, addr: str) -> RegistryClient:
    """A client for ``addr``; the home's own registry is started first if Alicorn manages it
    and it is down (after a reboot), as ``alicorn run`` does."""
    if addr == settings.registry and settings.registry_managed:
        from alicorn.registry.local import Registry
        Registry(settings).ensure_running()
    return RegistryClient(addr)


def _lookup(settings: Settings, ref: str, addr: str, name: str, reference: str) -> str:
    """The manifest digest of ``name:reference`` in ``addr``; NoSuchImage when there is none."""
    client = _client(settings, addr)
    got = client.get_manifest(name, reference)
    if got is not None:
        return str(got[2])
    sep = "@" if is_digest(reference) else ":"
    hint = None
    if not is_digest(reference):
        tags = [t for t in client.list_tags(name) if not t.startswith("sha256-")]
        hint = (f"its tags are {', '.join(tags)}" if tags else
                f"the registry has no repository {name}")
    raise NoSuchImage(f"{addr}/{name}{sep}{reference} does not exist"
                      + (f" (asked for {ref!r})" if ref != f"{addr}/{name}{sep}{reference}"
                         else ""), where=f"registry {addr}", hint=hint)


def _from_build(settings: Settings, ident: str) -> tuple[str, str]:
    """The published image of the build ``ident`` (an id, id prefix or image digest)."""
    from alicorn.store.builds import BuildStore

    row = BuildStore(settings.database_url).resolve(ident)
    if not row.image_ref or not row.digest:
        raise NoSuchImage(f"build {row.id} published no image ({row.state})",
                          hint="only finished, published builds can run")
    return row.image_ref.split("@", 1)[0], row.digest


def resolve(settings: Settings, ref: str, *, repository: str | None = None) -> tuple[str, str]:
    """``(repository, digest)`` for ``ref``: ``addr/name@sha256:…``, ``addr/name:tag``,
    ``name:tag`` or ``name`` (the local registry), ``sha256:…`` (in ``repository``, or of a
    build in this home) or a build id.  NoSuchImage when the registry has no such image.

    ``repository`` is ``addr/name`` (or ``name``, in the home's registry).  The digest is
    always looked up in the registry: a reference that resolves is one that can be pulled.
    RegistryError (naming the registry) when it cannot be reached.
    """
    ref = ref.strip()
    if is_digest(ref):
        if repository is not None:
            addr, name, _, _ = _split(settings, repository)
        else:
            try:
                repo, _ = _from_build(settings, ref)
            except NotFound:
                raise NoSuchImage(f"no build in this home produced {ref}",
                                  hint="give the repository too (addr/name@sha256:…)") from None
            addr, name = repo.split("/", 1)
        return f"{addr}/{name}", _lookup(settings, ref, addr, name, ref)
    if _BUILD_ID.fullmatch(ref):
        try:
            repo, built = _from_build(settings, ref)
        except NotFound:
            pass  # not a build of this home: a repository name that happens to be hex
        else:
            addr, name = repo.split("/", 1)
            return repo, _lookup(settings, ref, addr, name, built)
    addr, name, tag, pinned = _split(settings, ref)
    return f"{addr}/{name}", _lookup(settings, ref, addr, name, pinned or tag or "latest")


# -- verification --------------------------------------------------------------------------------

def _policy(settings: Settings, keys: Sequence[Path]) -> tuple[list[PublicKey], KeyLookup, str]:
    """The trusted keys, a lookup over them, and where they come from (for messages)."""
    if keys:
        pinned = PinnedKeys.from_pem_files(list(keys))
        return list(pinned.keys.values()), pinned, ", ".join(str(k) for k in keys)
    ring = keyring_for(settings)  # this host's keys, and every builder's in the database
    return ring.public_keys(), ring, str(ring.index)


def _untrusted(image: str, link: str, message: str, *, hint: str | None = None
               ) -> UntrustedImage:
    return UntrustedImage(f"{image} is not trusted: {link}: {message}", hint=hint)


def _registry_down(e: RegistryError) -> bool:
    """The registry did not answer (as opposed to answering with something malformed)."""
    return isinstance(e.__cause__, (urllib.error.URLError, OSError))


def _payload(layer: attach.Layer) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(envelope, unverified statement)`` of an attestation layer, or None when it is not
    a DSSE envelope of an in-toto statement.  The statement is read before verifying only
    to tell provenance from the other attestations (tests, gate); nothing is taken from it
    before its signature holds."""
    try:
        envelope = json.loads(layer.data)
        stmt = json.loads(base64.b64decode(envelope["payload"], validate=True))
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(envelope, dict) or not isinstance(stmt, dict):
        return None
    return envelope, stmt


def _envelope_key_ids(envelope: dict[str, Any]) -> list[str]:
    sigs = envelope.get("signatures")
    return [str(s.get("keyid", "")) for s in sigs if isinstance(s, dict)] \
        if isinstance(sigs, list) else []


def _provenance(image: str, digest: str, layers: list[attach.Layer], lookup: KeyLookup
                ) -> tuple[dict[str, Any], str]:
    """The verified provenance statement about ``digest`` among ``layers``, and its key."""
    candidates = []
    for layer in layers:
        parsed = _payload(layer)
        if parsed is not None and parsed[1].get("predicateType") == provenance.PREDICATE_TYPE:
            candidates.append(parsed[0])
    if not candidates:
        raise _untrusted(image, "no provenance",
                         f"its attestations ({len(layers)}) hold no SLSA provenance",
                         hint="images published by this build service carry their provenance;"
                              " this one was not published by it")
    reasons = []
    for envelope in candidates:
        try:
            verified = dsse.verify(envelope, lookup)
        except SigningKeyError:
            ids = ", ".join(f"{k[:16]}…" for k in _envelope_key_ids(envelope))
            reasons.append(f"the provenance is signed by the unknown key {ids or '(none)'}")
            continue
        except dsse.EnvelopeError as e:
            reasons.append(f"the provenance signature is invalid ({e.message})")
            continue
        try:
            stmt = verified.json()
            subject = provenance.subject_digest(stmt)
        except (ValueError, TypeError, AttributeError) as e:
            reasons.append(f"the provenance is malformed ({e})")
            continue
        if subject != digest:
            reasons.append(f"the provenance is about another digest, {subject}")
            continue
        return stmt, verified.key_id
    raise _untrusted(image, "provenance", "; ".join(reasons),
                     hint="the provenance was copied from another image or signed elsewhere: "
                          "do not run this image")


def _unknown_signers(layers: list[attach.Layer], trusted: set[str]) -> list[str]:
    """Key ids of attestation signers the host does not trust.  A cosign signature names no
    key, but an image built elsewhere is usually attested by the key that signed it."""
    found: list[str] = []
    for layer in layers:
        parsed = _payload(layer)
        for key_id in _envelope_key_ids(parsed[0]) if parsed else []:
            if key_id and key_id not in trusted and key_id not in found:
                found.append(key_id)
    return found


def _details(stmt: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``(build id, recipe name, source)`` from a verified provenance statement."""
    predicate = stmt.get("predicate") or {}
    build_id = ((predicate.get("runDetails") or {}).get("metadata") or {}).get("invocationId")
    # The subject is <registry>/<recipe name> (build/pipeline.py names images so).
    subject = (stmt.get("subject") or [{}])[0].get("name")
    recipe = str(subject).split("/", 1)[-1] if subject else None
    src = ((predicate.get("buildDefinition") or {}).get("externalParameters") or {}) \
        .get("source") or {}
    source = None
    if isinstance(src, dict) and src.get("url"):
        source = f"{src['url']}@{src['commit']}" if src.get("commit") else str(src["url"])
    return (str(build_id) if build_id else None), recipe, source


def verify_image(settings: Settings, ref: str, *, repository: str | None = None,
                 keys: Sequence[Path] = ()) -> TrustedImage:
    """Resolve ``ref`` and check its signature and provenance; UntrustedImage saying which
    link failed.  ``keys``: trust only these PEM public keys instead of the host's.

    NoSuchImage when the reference resolves to nothing, RegistryError when the registry does
    not answer; any other failure is UntrustedImage.  This checks the registry, before the
    pull; whether podman checks again at pull time is :func:`podman_enforces`.
    """
    repo, digest = resolve(settings, ref, repository=repository)
    image = f"{repo}@{digest}"
    addr, name = repo.split("/", 1)
    client = RegistryClient(addr)
    public, lookup, source = _policy(settings, keys)
    trusted = {k.key_id for k in public}
    if not public:
        raise _untrusted(image, "signature", f"the host trusts no key ({source} is empty)",
                         hint="publish an image first (that creates the build service's key), "
                              "or pass the publisher's public key")
    try:
        try:
            key_id = verify_image_signature(client, name, Digest(digest), public)
        except SignatureError as e:
            sigs = [s for s in attach.fetch_attachment(client, name, Digest(digest), attach.SIG)
                    if s.media_type == attach.MEDIA_SIMPLESIGNING]
            if not sigs:
                raise _untrusted(image, "no signature", "it is not signed", hint=e.hint) from e
            unknown = _unknown_signers(attach.fetch_attachment(client, name, Digest(digest),
                                                               attach.ATT), trusted)
            message = e.message
            if unknown:
                message += ("; it was signed by the unknown key "
                            + ", ".join(f"{k[:16]}…" for k in unknown))
            hint = e.hint if not keys else f"only the keys in {source} are trusted here"
            raise _untrusted(image, "signature", message, hint=hint) from e
        layers = attach.fetch_attachment(client, name, Digest(digest), attach.ATT)
    except RegistryError as e:
        if _registry_down(e):
            raise
        raise _untrusted(image, "registry", e.message) from e
    stmt, _ = _provenance(image, digest, layers, lookup)
    try:
        build_id, recipe, src = _details(stmt)
    except (AttributeError, TypeError, IndexError):
        # Signed by a trusted key and about this image, but not shaped as ours: what it
        # cannot say stays unknown rather than refusing an image that verified.
        build_id, recipe, src = None, None, None
    return TrustedImage(ref=image, digest=digest, repository=repo, key_id=key_id,
                        build_id=build_id, recipe=recipe, source=src)


# -- podman's own check --------------------------------------------------------------------------

def _scope_names(repository: str) -> list[str]:
    """The ``transports.docker`` scopes that can apply to ``repository``, most specific first
    (containers-policy.json(5)): the repository, its parent namespaces, the registry."""
    parts = repository.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def podman_enforces(settings: Settings, repository: str, *,
                    policy_path: Path | None = None) -> bool:
    """Whether podman on this host refuses unsigned images of ``repository`` (``addr/name``)
    by itself: the most specific rule of the containers policy that applies to it requires a
    signature (``signedBy`` or ``sigstoreSigned``).

    Reads ``~/.config/containers/policy.json`` when it exists (podman then ignores the host's)
    or ``/etc/containers/policy.json``.  False when there is no policy or it is unreadable.
    :func:`verify_image` is what keeps untrusted images out either way; this says whether a
    pull outside Alicorn would be refused too.
    """
    if policy_path is None:
        user = Path.home() / ".config" / "containers" / "policy.json"
        policy_path = user if user.exists() else POLICY_JSON
    if "/" not in repository:
        repository = f"{settings.registry}/{repository}"
    try:
        doc = json.loads(policy_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    docker = (doc.get("transports") or {}).get("docker") or {}
    if not isinstance(docker, dict):
        return False
    rules: Any = None
    for scope in _scope_names(repository):
        if scope in docker:
            rules = docker[scope]
            break
    else:
        rules = docker.get("", doc.get("default"))
    return isinstance(rules, list) and any(
        isinstance(r, dict) and r.get("type") in _SIGNATURE_TYPES for r in rules)

