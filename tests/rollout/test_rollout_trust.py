"""Only images whose signature and provenance verify under the host's policy run: the real
signed pony images, and images in the same registry that are unsigned, signed by a stranger,
signed without provenance or with someone else's provenance."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from alicorn.chain import attach, dsse, provenance
from alicorn.chain.keys import KeyRing, SigningKey
from alicorn.chain.sigstore import sign_image
from alicorn.config import Settings, load_settings
from alicorn.digest import Digest, canonical_json
from alicorn.errors import BadInput, RegistryError
from alicorn.registry.client import RegistryClient, push_tiny_image
from alicorn.rollout.interface import NoSuchImage, UntrustedImage
from alicorn.rollout.trust import podman_enforces, resolve, verify_image
from conftest import PonyImages, free_port, require

pytestmark = pytest.mark.integration

NAME = "pony-rpm"


@dataclass(frozen=True)
class Env:
    pony: PonyImages
    settings: Settings
    client: RegistryClient
    ours: SigningKey


@pytest.fixture(scope="module")
def env(pony_images: PonyImages) -> Env:
    require("podman", "docker-registry")
    settings = load_settings(pony_images.cli.home)
    return Env(pony_images, settings, RegistryClient(pony_images.registry),
               KeyRing(settings.keys_dir).current())


def _tiny(env: Env, repo: str, text: str, tag: str = "latest") -> Digest:
    return push_tiny_image(env.client, repo, tag, text.encode())[1]


def _v1_provenance(env: Env) -> attach.Layer:
    layers = attach.fetch_attachment(env.client, NAME, Digest(env.pony.v1["digest"]), attach.ATT)
    for layer in layers:
        if layer.annotations.get(attach.ANNOTATION_PREDICATE_TYPE) == provenance.PREDICATE_TYPE:
            return layer
    raise AssertionError(f"v1 has no provenance among {len(layers)} attestations")


def _provenance_layer(envelope: dict[str, object]) -> attach.Layer:
    return attach.Layer(canonical_json(envelope), attach.MEDIA_DSSE,
                        {attach.ANNOTATION_PREDICATE_TYPE: provenance.PREDICATE_TYPE})


# -- (a) the real images, every way of naming them ----------------------------------------------

def test_v1_verifies_by_every_kind_of_reference(env: Env) -> None:
    v1, repository = env.pony.v1, env.pony.repository
    refs = [v1["image"], v1["digest"], v1["build_id"], v1["build_id"][:10],
            f"{NAME}@{v1['digest']}"]
    for ref in refs:
        trusted = verify_image(env.settings, ref)
        assert (trusted.digest, trusted.repository, trusted.ref) == \
            (v1["digest"], repository, v1["image"]), ref
        assert trusted.build_id == v1["build_id"], ref
        assert trusted.recipe == NAME
        assert trusted.key_id == env.ours.key_id
    assert resolve(env.settings, v1["digest"], repository=repository) == \
        (repository, v1["digest"])
    assert resolve(env.settings, v1["digest"], repository=NAME) == (repository, v1["digest"])


def test_tags_resolve_to_what_they_name_now(env: Env) -> None:
    v2, broken, repository = env.pony.v2, env.pony.broken, env.pony.repository
    for ref in (f"{repository}:latest", repository, f"{NAME}:latest", NAME):
        assert resolve(env.settings, ref) == (repository, v2["digest"]), ref
    trusted = verify_image(env.settings, f"{NAME}:broken")
    assert (trusted.digest, trusted.build_id) == (broken["digest"], broken["build_id"])


# -- (b) to (d): images that must not run -------------------------------------------------------

def test_an_unsigned_image_is_refused(env: Env) -> None:
    digest = _tiny(env, "trust-unsigned", "unsigned")
    with pytest.raises(UntrustedImage) as e:
        verify_image(env.settings, f"{env.pony.registry}/trust-unsigned@{digest}")
    assert "no signature" in e.value.message and str(digest) in e.value.message


def test_an_image_signed_by_a_stranger_is_refused_naming_the_key(env: Env, tmp_path: Path
                                                                 ) -> None:
    stranger = KeyRing(tmp_path / "keys").current()
    digest = _tiny(env, "trust-stranger", "stranger")
    sign_image(env.client, "trust-stranger", "latest", digest, stranger)
    with pytest.raises(UntrustedImage) as e:
        verify_image(env.settings, f"{env.pony.registry}/trust-stranger:latest")
    assert "signature" in e.value.message and str(digest) in e.value.message
    # A stranger's build service attests its images with the key it signs them with: that
    # is how the refusal can name the key (a cosign signature names none).
    stmt = {"_type": "https://in-toto.io/Statement/v1", "predicateType": provenance.PREDICATE_TYPE,
            "subject": [{"name": "x", "digest": {"sha256": digest.hex}}], "predicate": {}}
    attach.attach(env.client, "trust-stranger", digest, attach.ATT,
                  [_provenance_layer(dsse.sign(canonical_json(stmt), stranger))])
    with pytest.raises(UntrustedImage) as e:
        verify_image(env.settings, f"{env.pony.registry}/trust-stranger@{digest}")
    assert f"unknown key {stranger.key_id[:16]}" in e.value.message


def test_signed_by_us_without_provenance_or_with_another_images_is_refused(
        env: Env, tmp_path: Path) -> None:
    repo = "trust-noprov"
    ref = f"{env.pony.registry}/{repo}:latest"
    digest = _tiny(env, repo, "no provenance")
    sign_image(env.client, repo, "latest", digest, env.ours)
    with pytest.raises(UntrustedImage) as e:
        verify_image(env.settings, ref)
    assert "no provenance" in e.value.message

    # v1's real, validly signed provenance, copied next to another image.
    v1_layer = _v1_provenance(env)
    attach.attach(env.client, repo, digest, attach.ATT, [v1_layer])
    with pytest.raises(UntrustedImage) as e:
        verify_image(env.settings, ref)
    assert f"provenance is about another digest, {env.pony.v1['digest']}" in e.value.message

    # A provenance about this image whose signature was made over something else.
    stmt = json.loads(base64.b64decode(json.loads(v1_layer.data)["payload"]))
    stmt["subject"][0]["digest"] = {"sha256": digest.hex}
    forged = dsse.sign(canonical_json(stmt), env.ours)
    forged["signatures"][0]["sig"] = json.loads(v1_layer.data)["signatures"][0]["sig"]
    attach.attach(env.client, repo, digest, attach.ATT, [_provenance_layer(forged)])
    with pytest.raises(UntrustedImage) as e:
        verify_image(env.settings, ref)
    assert "provenance signature is invalid" in e.value.message

    # A provenance about this image, signed by a key the host does not know.
    stranger = KeyRing(tmp_path / "keys").current()
    attach.attach(env.client, repo, digest, attach.ATT,
                  [_provenance_layer(dsse.sign(canonical_json(stmt), stranger))])
    with pytest.raises(UntrustedImage) as e:
        verify_image(env.settings, ref)
    assert f"provenance is signed by the unknown key {stranger.key_id[:16]}" in e.value.message

    # Signed properly, it is trusted: the refusals above were about the provenance alone.
    attach.attach(env.client, repo, digest, attach.ATT,
                  [_provenance_layer(dsse.sign(canonical_json(stmt), env.ours))])
    trusted = verify_image(env.settings, ref)
    assert trusted.digest == str(digest) and trusted.build_id == env.pony.v1["build_id"]


def test_pinned_keys_replace_the_hosts(env: Env, tmp_path: Path) -> None:
    other = KeyRing(tmp_path / "other").current()
    pem = tmp_path / "other.pem"
    pem.write_text(other.public.pem)
    with pytest.raises(UntrustedImage) as e:
        verify_image(env.settings, env.pony.v1["image"], keys=[pem])
    assert "signature" in e.value.message and env.pony.v1["digest"] in e.value.message
    assert f"unknown key {env.ours.key_id[:16]}" in e.value.message
    assert e.value.hint is not None and str(pem) in e.value.hint
    ours = tmp_path / "ours.pem"
    ours.write_text(env.ours.public.pem)
    assert verify_image(env.settings, env.pony.v1["image"], keys=[ours]).digest == \
        env.pony.v1["digest"]


# -- (e) what does not exist ----------------------------------------------------------------------

def test_missing_digests_and_tags_are_no_such_image(env: Env) -> None:
    missing = "sha256:" + "0" * 64
    repository = env.pony.repository
    for ref, kw, words in [
            (f"{repository}@{missing}", {}, [repository, missing]),
            (missing, {"repository": repository}, [repository, missing]),
            (missing, {}, [missing, "no build"]),
            (f"{repository}:no-such-tag", {}, [f"{repository}:no-such-tag", "latest"]),
            (f"{env.pony.registry}/no-such-repo:latest", {}, ["no-such-repo"])]:
        with pytest.raises(NoSuchImage) as e:
            verify_image(env.settings, ref, **kw)
        assert isinstance(e.value, BadInput)
        text = e.value.diagnostics()
        assert all(w in text for w in words), (ref, text)
    with pytest.raises(NoSuchImage):
        resolve(env.settings, f"{repository}@sha256:nothex")


def test_an_unreachable_registry_is_a_registry_error(env: Env) -> None:
    addr = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError) as e:
        resolve(env.settings, f"{addr}/pony:latest")
    assert addr in e.value.diagnostics() and "not reachable" in e.value.message


# -- podman's own check ---------------------------------------------------------------------------

def test_podman_enforces_reads_the_most_specific_rule(env: Env, tmp_path: Path) -> None:
    addr, repository = env.pony.registry, env.pony.repository
    policy = tmp_path / "policy.json"
    signed = [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}]
    anything = [{"type": "insecureAcceptAnything"}]
    cases = [
        ({"default": anything}, False),
        ({"default": anything, "transports": {"docker": {addr: signed}}}, True),
        ({"default": signed}, True),
        ({"default": signed, "transports": {"docker": {repository: anything}}}, False),
        ({"default": anything, "transports": {"docker": {"": [{"type": "sigstoreSigned"}]}}},
         True),
    ]
    for doc, want in cases:
        policy.write_text(json.dumps(doc))
        assert podman_enforces(env.settings, repository, policy_path=policy) is want, doc
    policy.write_text("{not json")
    assert podman_enforces(env.settings, NAME, policy_path=policy) is False
    # The host's own policy: the registry's start installed the rule unless it said why not.
    log = (env.settings.registry_dir / "registry.log").read_text()
    assert podman_enforces(env.settings, repository) is \
        ("podman will not require signatures" not in log)
