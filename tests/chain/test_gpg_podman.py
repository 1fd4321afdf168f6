"""GPG simple signing in a real lookaside store, enforced by the real podman through the host's
policy.json and registries.d, and checked by Alicorn's own verifier, which must agree with
podman in every case.

Debian 12's podman cannot check sigstore signatures, but it does check these: this is what
makes podman on such a host refuse images Alicorn did not sign.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alicorn.chain.gpgsign import (
    GpgHostPolicy,
    GpgKey,
    GpgKeyRing,
    default_lookaside_dir,
    gpg_requirement,
    host_gpg_policy,
    registries_d_entry,
    remove_host_gpg_policy,
    sign_manifest,
    signature_dir,
    verify_manifest_signatures,
    write_registries_d,
)
from alicorn.chain.sigstore import (
    POLICY_JSON,
    REGISTRIES_D,
    PolicyError,
    SignatureError,
    registries_d_file,
)
from alicorn.config import Settings, load_settings
from alicorn.digest import Digest, canonical_json
from alicorn.registry.client import MEDIA_OCI_MANIFEST, tiny_image
from alicorn.registry.local import Registry
from conftest import Cli, require

pytestmark = pytest.mark.integration

NO_SIGNATURE = "A signature was required, but no signature exists"
REJECTED = "Source image rejected"
NAMES = ("gpg/pony", "gpg/unsigned", "gpg/otherkey", "gpg/copied", "gpg/othertag",
         "gpg/repoonly", "gpg/old")


@dataclass
class GpgWorld:
    settings: Settings
    keyring: GpgKeyRing        # the build service's, after one rotation
    stranger: GpgKeyRing       # someone else's
    lookaside: Path
    policy: GpgHostPolicy
    manifests: dict[str, bytes]
    old_key: GpgKey
    new_key: GpgKey
    policy_before: bytes

    @property
    def addr(self) -> str:
        return self.settings.registry

    def ref(self, name: str, tag: str = "1") -> str:
        return f"{self.addr}/{name}:{tag}"

    def at(self, name: str) -> str:
        return f"{self.addr}/{name}@{Digest.of_bytes(self.manifests[name])}"

    def verify(self, name: str, reference: str) -> str | None:
        """None when Alicorn's verifier accepts ``name`` pulled as ``reference``, else why
        not."""
        try:
            verify_manifest_signatures(self.manifests[name], reference,
                                       lookaside_dir=self.lookaside,
                                       pubring=self.keyring.pubring)
        except SignatureError as e:
            return e.message
        return None


def oci_layout(root: Path, text: str) -> tuple[Path, bytes]:
    """A one-file OCI image layout tagged ``1``; returns it and its manifest."""
    layer, config, manifest = tiny_image(text.encode(), filename="hello.txt")
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (layer, config, manifest):
        (blobs / Digest.of_bytes(blob).hex).write_bytes(blob)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(canonical_json({
        "schemaVersion": 2, "manifests": [{
            "mediaType": MEDIA_OCI_MANIFEST, "digest": str(Digest.of_bytes(manifest)),
            "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
    return root, manifest


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)


def pull(ref: str) -> subprocess.CompletedProcess[str]:
    """``podman pull`` as a person types it, after dropping any local copy of ``ref``."""
    podman("rmi", "--force", ref)
    return podman("pull", "--quiet", ref)


def gpg_fingerprints(*args: str) -> list[str]:
    out = subprocess.run(["gpg", "--batch", "--with-colons", *args], capture_output=True,
                         text=True, check=True).stdout
    return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]


@pytest.fixture(scope="module")
def gworld(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgWorld]:
    require("podman", "skopeo", "docker-registry", "gpg", "gpgv")
    if not POLICY_JSON.is_file():
        pytest.skip(f"{POLICY_JSON} is missing: podman is not set up on this host")
    policy_before = POLICY_JSON.read_bytes()
    had_registries_d = REGISTRIES_D.is_dir()
    tmp = tmp_path_factory.mktemp("gpg")
    cli = Cli(tmp / "home")
    settings = load_settings(cli.home)
    keyring = GpgKeyRing(settings.keys_dir)
    stranger = GpgKeyRing(tmp / "stranger")
    lookaside = default_lookaside_dir(settings.home, settings.registry)
    addr = settings.registry
    manifests: dict[str, bytes] = {}
    try:
        cli("registry", "start", check=True, timeout=60)
        registry = Registry(settings)
        for name in NAMES:
            layout, manifest = oci_layout(tmp / name.replace("/", "-"), f"{name}\n")
            registry.push(layout, name, "1", Digest.of_bytes(manifest))
            manifests[name] = manifest

        def sign(name: str, ring: GpgKeyRing = keyring, tag: str = "1") -> Path:
            return sign_manifest(manifests[name], f"{addr}/{name}:{tag}", keyring=ring,
                                 lookaside_dir=lookaside, repo_name=name)

        sign("gpg/old")
        old_key = keyring.current()
        new_key = keyring.rotate()
        sign("gpg/pony")
        sign("gpg/otherkey", stranger)
        sign("gpg/othertag", tag="2")
        # A genuine signature of gpg/pony next to another image: replaying it must not work.
        copied = signature_dir(lookaside, "gpg/copied", Digest.of_bytes(manifests["gpg/copied"]))
        copied.mkdir(parents=True)
        shutil.copy(signature_dir(lookaside, "gpg/pony", Digest.of_bytes(
            manifests["gpg/pony"])) / "signature-1", copied / "signature-1")
        # The repository alone, as cosign signs: sign_manifest refuses to, skopeo does not.
        repo_only = signature_dir(lookaside, "gpg/repoonly",
                                  Digest.of_bytes(manifests["gpg/repoonly"]))
        repo_only.mkdir(parents=True)
        (tmp / "repoonly.json").write_bytes(manifests["gpg/repoonly"])
        subprocess.run(["skopeo", "standalone-sign", str(tmp / "repoonly.json"),
                        f"{addr}/gpg/repoonly", new_key.fingerprint,
                        "-o", str(repo_only / "signature-1")],
                       env={"GNUPGHOME": str(keyring.home), "PATH": "/usr/bin:/bin"},
                       check=True, capture_output=True)

        policy = host_gpg_policy(addr, lookaside_dir=lookaside, pubring=keyring.pubring)
        yield GpgWorld(settings, keyring, stranger, lookaside, policy, manifests, old_key,
                       new_key, policy_before)
    finally:
        remove_host_gpg_policy(addr)
        for name, manifest in manifests.items():
            podman("rmi", "--force", f"{addr}/{name}:1",
                   f"{addr}/{name}@{Digest.of_bytes(manifest)}")
        cli.down()
        keyring.stop_agent()
        stranger.stop_agent()
        if not had_registries_d:
            with contextlib.suppress(OSError):
                REGISTRIES_D.rmdir()
        assert POLICY_JSON.read_bytes() == policy_before, "policy.json was not restored"
        assert not registries_d_file(addr).exists()
        left = podman("images", "--format", "{{.Repository}}", "--filter",
                      f"reference={addr}/*/*").stdout.split()
        assert not left, f"pulled images left behind: {left}"


# -- what podman does, and that Alicorn's verifier says the same ----------------------------------
def test_gpg_host_policy_is_the_signedby_rule_and_a_lookaside(gworld: GpgWorld) -> None:
    policy = json.loads(POLICY_JSON.read_text())
    assert policy["transports"]["docker"][gworld.addr] == [
        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(gworld.keyring.pubring),
         "signedIdentity": {"type": "matchRepoDigestOrExact"}}]
    del policy["transports"]["docker"][gworld.addr]
    for key in ("docker", "transports"):
        container = policy["transports"] if key == "docker" else policy
        if not container[key]:
            del container[key]
    assert policy == json.loads(gworld.policy_before)
    assert gworld.policy.probed, gworld.policy.detail
    assert registries_d_file(gworld.addr).read_text() == registries_d_entry(
        gworld.addr, lookaside_dir=gworld.lookaside, use_sigstore_attachments=False)
    assert f"lookaside: \"file://{gworld.lookaside}\"" in registries_d_file(gworld.addr).read_text()


def test_gpg_signed_image_pulls_by_digest_and_by_tag(gworld: GpgWorld) -> None:
    for ref in (gworld.at("gpg/pony"), gworld.ref("gpg/pony")):
        out = pull(ref)
        assert out.returncode == 0, out.stderr
        assert gworld.verify("gpg/pony", ref) is None
    got = verify_manifest_signatures(gworld.manifests["gpg/pony"], gworld.ref("gpg/pony"),
                                     lookaside_dir=gworld.lookaside,
                                     pubring=gworld.keyring.pubring)
    assert got.fingerprint == gworld.new_key.fingerprint
    assert got.identity == gworld.ref("gpg/pony")
    assert got.path.name == "signature-1"


def test_gpg_unsigned_image_is_refused(gworld: GpgWorld) -> None:
    for ref in (gworld.ref("gpg/unsigned"), gworld.at("gpg/unsigned")):
        out = pull(ref)
        assert out.returncode != 0
        assert NO_SIGNATURE in out.stderr, out.stderr
        assert "is not signed" in (gworld.verify("gpg/unsigned", ref) or "")


def test_gpg_image_signed_with_another_key_is_refused(gworld: GpgWorld) -> None:
    stranger = gworld.stranger.current().fingerprint
    for ref in (gworld.ref("gpg/otherkey"), gworld.at("gpg/otherkey")):
        out = pull(ref)
        assert out.returncode != 0
        assert REJECTED in out.stderr and "Invalid GPG signature" in out.stderr, out.stderr
        assert stranger in out.stderr
        why = gworld.verify("gpg/otherkey", ref) or ""
        assert f"made with the key {stranger}, which is not in" in why, why


def test_gpg_signature_for_another_digest_is_refused(gworld: GpgWorld) -> None:
    pony = Digest.of_bytes(gworld.manifests["gpg/pony"])
    for ref in (gworld.ref("gpg/copied"), gworld.at("gpg/copied")):
        out = pull(ref)
        assert out.returncode != 0
        assert f"Signature for digest {pony} does not match" in out.stderr, out.stderr
        why = gworld.verify("gpg/copied", ref) or ""
        assert f"is for the image {pony}, not" in why, why


def test_gpg_identity_of_another_tag_holds_for_digest_pulls_only(gworld: GpgWorld) -> None:
    """matchRepoDigestOrExact: by tag, the signed name must be exactly the pulled one; by
    digest, any tag of the same repository will do."""
    by_tag = pull(gworld.ref("gpg/othertag"))
    assert by_tag.returncode != 0
    assert f"Signature for identity {gworld.ref('gpg/othertag', '2')} is not accepted" \
        in by_tag.stderr, by_tag.stderr
    why = gworld.verify("gpg/othertag", gworld.ref("gpg/othertag")) or ""
    assert f"names {gworld.ref('gpg/othertag', '2')}, not {gworld.ref('gpg/othertag')}" in why
    by_digest = pull(gworld.at("gpg/othertag"))
    assert by_digest.returncode == 0, by_digest.stderr
    assert gworld.verify("gpg/othertag", gworld.at("gpg/othertag")) is None


def test_gpg_identity_of_the_repository_alone_is_refused(gworld: GpgWorld) -> None:
    for ref in (gworld.ref("gpg/repoonly"), gworld.at("gpg/repoonly")):
        out = pull(ref)
        assert out.returncode != 0
        assert f"Signature for identity {gworld.addr}/gpg/repoonly is not accepted" \
            in out.stderr, out.stderr
        assert "names the repository" in (gworld.verify("gpg/repoonly", ref) or "")


def test_gpg_rotation_keeps_old_signatures_valid(gworld: GpgWorld) -> None:
    old, new = gworld.old_key.fingerprint, gworld.new_key.fingerprint
    assert old != new
    for name, key in (("gpg/old", old), ("gpg/pony", new)):
        for ref in (gworld.ref(name), gworld.at(name)):
            out = pull(ref)
            assert out.returncode == 0, out.stderr
            got = verify_manifest_signatures(gworld.manifests[name], ref,
                                             lookaside_dir=gworld.lookaside,
                                             pubring=gworld.keyring.pubring)
            assert got.fingerprint == key
    ring = gworld.keyring
    assert sorted(gpg_fingerprints("--show-keys", str(ring.pubring))) == sorted([old, new])
    assert sorted(gpg_fingerprints("--show-keys", str(ring.pubring_armored))) == \
        sorted([old, new])
    # The retired key can no longer sign; its public half is all that is left of it.
    assert gpg_fingerprints("--homedir", str(ring.home), "--list-secret-keys") == [new]
    assert [(k.fingerprint, k.retired is not None) for k in ring.public_keys()] == \
        [(old, True), (new, False)]
    assert ring.current() == gworld.new_key
    assert (ring.home.stat().st_mode & 0o777) == 0o700


def test_gpg_signatures_are_containers_signature_documents(gworld: GpgWorld,
                                                           tmp_path: Path) -> None:
    digest = Digest.of_bytes(gworld.manifests["gpg/pony"])
    sig = gworld.lookaside / f"gpg/pony@sha256={digest.hex}" / "signature-1"
    out = subprocess.run(["gpgv", "--homedir", str(tmp_path), "--keyring",
                          str(gworld.keyring.pubring), "--output", "-", str(sig)],
                         capture_output=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["critical"] == {"type": "atomic container signature",
                               "image": {"docker-manifest-digest": str(digest)},
                               "identity": {"docker-reference": gworld.ref("gpg/pony")}}
    assert (sig.stat().st_mode & 0o777) == 0o644


def test_gpg_signing_again_adds_nothing_and_never_overwrites(gworld: GpgWorld) -> None:
    name, manifest = "gpg/pony", gworld.manifests["gpg/pony"]
    directory = signature_dir(gworld.lookaside, name, Digest.of_bytes(manifest))
    first = directory / "signature-1"
    before = first.read_bytes()
    again = sign_manifest(manifest, gworld.ref(name), keyring=gworld.keyring,
                          lookaside_dir=gworld.lookaside)
    assert again == first and first.read_bytes() == before
    assert sorted(p.name for p in directory.iterdir()) == ["signature-1"]
    second = sign_manifest(manifest, gworld.ref(name, "stable"), keyring=gworld.keyring,
                           lookaside_dir=gworld.lookaside)
    try:
        assert second == directory / "signature-2" and first.read_bytes() == before
        assert gworld.verify(name, gworld.ref(name, "stable")) is None
        assert gworld.verify(name, gworld.ref(name)) is None
    finally:
        second.unlink()


def test_gpg_sign_refuses_what_podman_would_not_accept(gworld: GpgWorld) -> None:
    manifest = gworld.manifests["gpg/pony"]
    kw = {"keyring": gworld.keyring, "lookaside_dir": gworld.lookaside}
    for bad in (f"{gworld.addr}/gpg/pony", f"{gworld.at('gpg/pony')}", "gpg/pony:1"):
        with pytest.raises(SignatureError, match="is not <registry>/<name>:<tag>"):
            sign_manifest(manifest, bad, **kw)  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="is not in the repository"):
        sign_manifest(manifest, gworld.ref("gpg/pony"), repo_name="gpg/other",
                      **kw)  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="the manifest to sign is"):
        sign_manifest(manifest, gworld.ref("gpg/pony"), **kw,  # type: ignore[arg-type]
                      manifest_digest=Digest.of_bytes(gworld.manifests["gpg/old"]))


def test_gpg_verify_sees_what_podman_sees_of_a_gap(gworld: GpgWorld) -> None:
    """containers/image reads signature-1, -2, ... up to the first missing one."""
    name = "gpg/unsigned"
    directory = signature_dir(gworld.lookaside, name, Digest.of_bytes(gworld.manifests[name]))
    directory.mkdir(parents=True)
    try:
        shutil.copy(signature_dir(gworld.lookaside, "gpg/pony", Digest.of_bytes(
            gworld.manifests["gpg/pony"])) / "signature-1", directory / "signature-2")
        out = pull(gworld.ref(name))
        assert out.returncode != 0 and NO_SIGNATURE in out.stderr, out.stderr
        why = gworld.verify(name, gworld.ref(name)) or ""
        assert "is not signed" in why and "ignores signature-2" in why, why
    finally:
        shutil.rmtree(directory)


def test_gpg_probe_leaves_no_signature_behind(gworld: GpgWorld) -> None:
    probe = gworld.lookaside / "alicorn-probe"
    assert not any(p.is_file() for p in probe.rglob("*")), list(probe.rglob("*"))


# -- the host policy itself, in scratch files ------------------------------------------------------
ODD_POLICY = ('{\n\t"default": [{"type": "reject"}],\n\t"transports": {\n\t\t"docker": {\n'
              '\t\t\t"quay.io/acme": [{"type": "insecureAcceptAnything"}]\n\t\t},\n'
              '\t\t"docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}\n\t}\n}\n')


@pytest.fixture
def gscratch(tmp_path: Path) -> tuple[Path, Path, Path]:
    policy = tmp_path / "containers" / "policy.json"
    policy.parent.mkdir()
    policy.write_text(ODD_POLICY)
    os_mode = 0o640
    policy.chmod(os_mode)
    pubring = tmp_path / "home" / "keys" / "public" / "gpg-pubring.gpg"
    pubring.parent.mkdir(parents=True)
    pubring.write_bytes(b"")
    return policy, tmp_path / "containers" / "registries.d", pubring


def test_gpg_host_policy_is_idempotent_and_byte_reversible(
        gscratch: tuple[Path, Path, Path], tmp_path: Path) -> None:
    policy, registries_d, pubring = gscratch
    addr = "127.0.0.1:5999"
    lookaside = tmp_path / "lookaside"
    kw = {"lookaside_dir": lookaside, "pubring": pubring, "policy_path": policy,
          "registries_d": registries_d, "probe": False}
    host_gpg_policy(addr, **kw)  # type: ignore[arg-type]
    written = policy.read_bytes()
    host_gpg_policy(addr, **kw)  # type: ignore[arg-type]
    assert policy.read_bytes() == written
    assert (policy.stat().st_mode & 0o777) == 0o640
    doc = json.loads(written)
    assert doc["transports"]["docker"][addr] == [gpg_requirement(pubring)]
    assert doc["transports"]["docker"]["quay.io/acme"] == [{"type": "insecureAcceptAnything"}]
    # Only the new member was added: every line of the original is still there, in order.
    lines = written.decode().splitlines()
    assert [line for line in lines if line in ODD_POLICY.splitlines()] == ODD_POLICY.splitlines()
    assert lookaside.is_dir()
    assert remove_host_gpg_policy(addr, policy_path=policy, registries_d=registries_d)
    assert policy.read_text() == ODD_POLICY
    assert not registries_d_file(addr, registries_d).exists()
    assert not remove_host_gpg_policy(addr, policy_path=policy, registries_d=registries_d)


def test_gpg_host_policy_leaves_foreign_rules_alone(gscratch: tuple[Path, Path, Path],
                                                    tmp_path: Path) -> None:
    policy, registries_d, pubring = gscratch
    kw = {"lookaside_dir": tmp_path / "lookaside", "pubring": pubring, "policy_path": policy,
          "registries_d": registries_d, "probe": False}
    with pytest.raises(PolicyError, match="that Alicorn did not write"):
        host_gpg_policy("quay.io/acme", **kw)  # type: ignore[arg-type]
    assert not remove_host_gpg_policy("quay.io/acme", policy_path=policy,
                                      registries_d=registries_d)
    assert policy.read_text() == ODD_POLICY
    assert not registries_d.exists() or not any(registries_d.iterdir())
    # Another file configuring the registry: containers/image would refuse every pull.
    registries_d.mkdir()
    (registries_d / "site.yaml").write_text('docker:\n  "127.0.0.1:5999":\n    lookaside: '
                                            'file:///var/lib/containers/sigstore\n')
    with pytest.raises(PolicyError, match="already configures"):
        host_gpg_policy("127.0.0.1:5999", **kw)  # type: ignore[arg-type]
    assert policy.read_text() == ODD_POLICY
    assert sorted(p.name for p in registries_d.iterdir()) == ["site.yaml"]
    # A key ring that is not one of Alicorn's.
    elsewhere = tmp_path / "pubring.gpg"
    elsewhere.write_bytes(b"")
    with pytest.raises(PolicyError, match="not an Alicorn key ring"):
        host_gpg_policy("127.0.0.1:5998", **{**kw, "pubring": elsewhere})  # type: ignore[arg-type]


def test_gpg_and_sigstore_share_one_registries_d_entry_and_scope(
        gscratch: tuple[Path, Path, Path], tmp_path: Path) -> None:
    policy, registries_d, pubring = gscratch
    addr = "127.0.0.1:5999"
    lookaside = tmp_path / "lookaside"
    # What sigstore.host_policy writes today: its registries.d file and its rule.
    sigstore_rule = {"type": "sigstoreSigned",
                     "keyPath": f"{tmp_path}/home/keys/public/{'a' * 64}.pem",
                     "signedIdentity": {"type": "matchRepoDigestOrExact"}}
    registries_d.mkdir()
    registries_d_file(addr, registries_d).write_text(
        f"# Written by alicorn: podman reads cosign signatures\n"
        f"docker:\n  \"{addr}\":\n    use-sigstore-attachments: true\n")
    doc = json.loads(ODD_POLICY)
    doc["transports"]["docker"][addr] = [sigstore_rule]
    policy.write_text(json.dumps(doc, indent=4) + "\n")
    before = policy.read_bytes()

    result = host_gpg_policy(addr, lookaside_dir=lookaside, pubring=pubring,
                             policy_path=policy, registries_d=registries_d, probe=False)
    assert json.loads(policy.read_text())["transports"]["docker"][addr] == [
        sigstore_rule, gpg_requirement(pubring)]
    assert any("sigstoreSigned rule" in note for note in result.notes)
    assert registries_d_file(addr, registries_d).read_text() == registries_d_entry(
        addr, lookaside_dir=lookaside, use_sigstore_attachments=True)
    assert [p.name for p in registries_d.iterdir()] == [registries_d_file(addr).name]

    assert remove_host_gpg_policy(addr, policy_path=policy, registries_d=registries_d)
    assert json.loads(policy.read_bytes()) == json.loads(before)
    assert registries_d_file(addr, registries_d).read_text() == registries_d_entry(
        addr, lookaside_dir=None, use_sigstore_attachments=True)
    # What sigstore's removal should then call: the file goes when it configures nothing.
    assert write_registries_d(addr, registries_d=registries_d,
                              use_sigstore_attachments=False) is None
    assert not any(registries_d.iterdir())
