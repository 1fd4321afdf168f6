"""GPG "simple signing" of published images, and the host policy that makes podman require it.

Why this exists next to :mod:`alicorn.chain.sigstore`: Debian 12's containers/image (5.23) is
built with sigstore verification removed, so a ``sigstoreSigned`` rule refuses every image.
What it does verify is the older format of containers-signature(5): an OpenPGP signed message
whose payload names the manifest digest and the image's name, kept in a *lookaside* store
beside the registry, and required by a ``signedBy`` rule with ``keyType: GPGKeys``.

On disk::

    $ALICORN_HOME/keys/gpg/                    GNUPGHOME (0700): the signing key
    $ALICORN_HOME/keys/gpg-keys.json           our keys: fingerprint, created, retired
    $ALICORN_HOME/keys/public/gpg-pubring.gpg  every key, current and retired (the policy's
                                               keyPath); gpg-pubring.asc is the same, armoured
    <lookaside>/<name>@sha256=<hex>/signature-N   what containers/image reads (N = 1, 2, ...)

What this host's containers/image does (seen with skopeo 1.9.3 and podman 4.3.1, both linked
with gpgme): ed25519 keys verify; the keyring file may be binary or armoured; signatures are
read as ``signature-1``, ``signature-2``, ... up to the first missing number (a gap hides the
rest); one signature that holds is enough; the signing key's fingerprint must be a primary key
of the keyring.  With ``matchRepoDigestOrExact`` a signature naming ``<registry>/<name>:<tag>``
is accepted for a pull of exactly that tag and for a pull by digest from that repository; one
naming the repository alone is refused both ways, one naming another tag is refused for a pull
by tag.  Two registries.d entries for one registry make every pull from it fail.

In a cluster every builder publishes its keys' public halves (armoured) to the database's
``signing_keys`` (kind ``gpg``, id the fingerprint); :meth:`GpgKeyRing.verifying_pubring`
is then a keyring of every builder's keys, written on the verifier's host from the database
(``keys/public/cluster-pubring.gpg``).  The lookaside signatures the worker wrote reach the
other hosts with the build's files (:mod:`alicorn.cluster.files`).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import enum
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from alicorn.chain.keys import SigningKeyError
from alicorn.chain.sigstore import (
    _MARKER,
    POLICY_JSON,
    REGISTRIES_D,
    PolicyError,
    SignatureError,
    _is_ours,
    _locked,
    _parse_policy,
    _shadowing,
    registries_d_file,
    split_reference,
)
from alicorn.digest import Digest
from alicorn.errors import ToolError
from alicorn.fs import replace_file
from alicorn.proc import BuildLog, run, which
from alicorn.registry.client import RegistryClient, push_tiny_image

if TYPE_CHECKING:
    from alicorn.config import Settings

UID = "Alicorn build service <builds@alicorn.invalid>"
KEY_ALGORITHM = "ed25519"            # gpgme-backed containers/image verifies it (see above)
SIGNATURE_TYPE = "atomic container signature"
PROBE_REPOSITORY = "alicorn-probe/gpg"
_OUR_PUBRING = re.compile(r"/.*/keys/public/gpg-pubring\.(gpg|asc)")
_SIGNATURE = re.compile(r"signature-([1-9][0-9]*)")
_REGISTRY_HOST = re.compile(r"localhost(:[0-9]+)?|[^/]*[.:][^/]*")


# -- the key ring -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GpgKey:
    fingerprint: str
    created: int
    retired: int | None = None   # when it stopped signing; what it signed stays valid

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "created": self.created,
                "retired": self.retired, "algorithm": KEY_ALGORITHM}


class GpgKeyRing:
    """The build service's GPG keys under ``keys_dir`` (``$ALICORN_HOME/keys``).

    One key signs at a time.  :meth:`rotate` makes a new one and deletes the old *secret*
    key, keeping its public key in :attr:`pubring`, so what it signed keeps verifying and
    nothing can be signed with it any more.
    """

    def __init__(self, keys_dir: Path, database_url: str | None = None):
        self.dir = keys_dir
        self.home = keys_dir / "gpg"
        self.index = keys_dir / "gpg-keys.json"
        self.public_dir = keys_dir / "public"
        self.pubring = self.public_dir / "gpg-pubring.gpg"
        self.pubring_armored = self.public_dir / "gpg-pubring.asc"
        self.cluster_pubring = self.public_dir / "cluster-pubring.gpg"
        self.database_url = database_url

    def public_keys(self) -> list[GpgKey]:
        """Every key this build service has signed with, oldest first."""
        if not self.index.exists():
            return []
        try:
            data = json.loads(self.index.read_text())
            return [GpgKey(k["fingerprint"], int(k["created"]), k.get("retired"))
                    for k in data["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SigningKeyError(f"the GPG key index is unreadable: {e}",
                                  where=str(self.index)) from e

    def current(self, *, log: BuildLog | None = None) -> GpgKey:
        """The key that signs now, generated on first use."""
        with self._lock():
            signing = [k for k in self.public_keys() if k.retired is None]
            if signing:
                return signing[-1]
            key = self._generate(log)
            self._write_index([*self.public_keys(), key])
            self.export(log=log)
            return key

    def rotate(self, *, log: BuildLog | None = None) -> GpgKey:
        """Retire the signing key and start signing with a new one; returns the new key."""
        with self._lock():
            now = int(time.time())
            old = self.public_keys()
            new = self._generate(log)
            self._write_index([GpgKey(k.fingerprint, k.created, k.retired or now)
                               for k in old] + [new])
            self.export(log=log)
            for k in old:
                if k.retired is None:
                    # Its public key stays in the keyring; only the power to sign goes.
                    self._gpg("--yes", "--delete-secret-keys", k.fingerprint, log=log,
                              what="gpg --delete-secret-keys")
            return new

    def export(self, *, log: BuildLog | None = None) -> None:
        """Write :attr:`pubring` (binary, for policy.json) and :attr:`pubring_armored`: the
        public keys of the index, current and retired, and no other key GNUPGHOME holds."""
        fingerprints = [k.fingerprint for k in self.public_keys()]
        if not fingerprints:
            return
        self.public_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.public_dir, prefix=".gpg-export.") as tmp:
            for path, armour in ((self.pubring, []), (self.pubring_armored, ["--armor"])):
                out = Path(tmp) / path.name
                self._gpg(*armour, "--output", str(out), "--export", *fingerprints, log=log,
                          what="gpg --export")
                os.chmod(out, 0o644)
                os.replace(out, path)
        self.publish(log=log)

    def publish(self, *, log: BuildLog | None = None) -> None:
        """Write the public halves of this ring's keys (armoured) to the database's
        ``signing_keys``, those not there yet, and the retirement of those that are; a no-op
        without a database."""
        if self.database_url is None:
            return
        from alicorn.chain.keys import publish_public

        keys = self.public_keys()
        if not keys:
            return
        there = {fp: retired for fp, retired, _ in _published_gpg(self.database_url)}
        rows = []
        for k in keys:
            if k.fingerprint in there and (there[k.fingerprint] is not None
                                           or k.retired is None):
                continue
            armoured = self._gpg("--armor", "--export", k.fingerprint, log=log,
                                 what="gpg --export")
            if "BEGIN PGP PUBLIC KEY BLOCK" in armoured:
                rows.append((k.fingerprint, "gpg", armoured, k.created, k.retired))
        publish_public(self.database_url, rows)

    def verifying_pubring(self) -> Path:
        """The keyring to verify signatures with: :attr:`pubring`; with a database, a keyring
        of every key builders published there and this ring's (:attr:`cluster_pubring`,
        rewritten when they change)."""
        if self.database_url is None:
            return self.pubring
        parts = [_dearmor(armoured) for _, _, armoured in _published_gpg(self.database_url)]
        if self.pubring.is_file():
            parts.append(self.pubring.read_bytes())
        data = b"".join(p for p in parts if p)
        if not data:
            return self.pubring
        if not self.cluster_pubring.is_file() or self.cluster_pubring.read_bytes() != data:
            self.public_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".cluster-pubring.", dir=self.public_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.cluster_pubring)
        return self.cluster_pubring

    def stop_agent(self) -> None:
        """Stop the gpg-agent that signing started for :attr:`home` (it outlives us)."""
        if self.home.is_dir():
            run([which("gpgconf", package="gpgconf"), "--homedir", str(self.home), "--kill",
                 "gpg-agent"], check=False, what="gpgconf --kill gpg-agent")

    # -- inside ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One generator or rotator at a time (two workers starting together make one key)."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        with open(self.home / ".alicorn.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    _socket_dir_made = False

    def _short_socket_dir(self) -> None:
        """gpg-agent's sockets live in GNUPGHOME unless /run/user/UID exists, and a socket's
        path is limited to 107 bytes: for a deep ALICORN_HOME, make that directory (as a
        login would) and have gpgconf put the sockets under it."""
        if self._socket_dir_made or len(str(self.home)) + len("/S.gpg-agent.browser") <= 107:
            return
        self._socket_dir_made = True
        run_user = Path(f"/run/user/{os.getuid()}")
        try:
            run_user.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return  # the error of gpg itself then says the path is too long
        run([which("gpgconf", package="gpgconf"), "--homedir", str(self.home),
             "--create-socketdir"], check=False, what="gpgconf --create-socketdir")

    def _gpg(self, *args: str, log: BuildLog | None, what: str) -> str:
        gpg = which("gpg", package="gnupg")
        self._short_socket_dir()
        try:
            return run([gpg, "--homedir", str(self.home), "--batch", "--no-tty", *args],
                       log=log, what=what, timeout=120).stdout
        except ToolError as e:
            if "too long" in e.output:
                e.hint = (f"gpg-agent's socket under {self.home} has too long a path: use a "
                          "shorter ALICORN_HOME")
            raise

    def _generate(self, log: BuildLog | None) -> GpgKey:
        # No passphrase: the worker signs unattended; the key is protected by GNUPGHOME's mode.
        # --yes: after a rotation a key with the same user id already exists.
        out = self._gpg("--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                        "--status-fd", "1", "--quick-gen-key", UID, KEY_ALGORITHM, "sign",
                        "never", log=log, what="gpg --quick-gen-key")
        created = [line.split()[3] for line in out.splitlines()
                   if line.startswith("[GNUPG:] KEY_CREATED ")]
        if len(created) != 1:
            raise SigningKeyError(f"gpg made no key in {self.home}",
                                  hint="see the build log for gpg's output")
        return GpgKey(created[0], int(time.time()))

    def _write_index(self, keys: list[GpgKey]) -> None:
        tmp = self.index.with_name(f".{self.index.name}.tmp")
        tmp.write_text(json.dumps({"keys": [k.to_json() for k in keys]}, indent=2,
                                  sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.index)


def gpg_keyring_for(settings: Settings) -> GpgKeyRing:
    """The GPG key ring of ``settings``' home; in a cluster (the Celery backend) it publishes
    its keys to the database and verifies with every builder's."""
    from alicorn.cluster.config import load_queue_config

    celery = load_queue_config(settings).celery
    return GpgKeyRing(settings.keys_dir, settings.database_url if celery else None)


def publish_gpg_keys(settings: Settings) -> None:
    """Publish this host's GPG public keys to the database (a no-op with none here)."""
    ring = gpg_keyring_for(settings)
    if ring.database_url is not None and ring.index.exists():
        ring.publish()


def _published_gpg(database_url: str) -> list[tuple[str, int | None, str]]:
    """(fingerprint, retired, armoured public key) of the GPG keys in ``signing_keys``."""
    from sqlalchemy import select

    from alicorn.store.db import session_factory
    from alicorn.store.models import SigningKeyRow

    with session_factory(database_url)() as s:
        return [(r.key_id, r.retired, r.public) for r in s.scalars(
            select(SigningKeyRow).where(SigningKeyRow.kind == "gpg")
            .order_by(SigningKeyRow.created, SigningKeyRow.key_id))]


def _dearmor(text: str) -> bytes:
    """The binary OpenPGP packets of the ASCII-armoured blocks in ``text`` (RFC 4880 §6.2);
    b"" for what is not armour."""
    out = []
    for block in re.findall(r"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)"
                            r"-----END PGP PUBLIC KEY BLOCK-----", text, re.S):
        head, sep, body = block.partition("\n\n")
        if not sep:
            head, sep, body = block.partition("\r\n\r\n")
        lines = [line.strip() for line in (body if sep else head).splitlines()]
        lines = [line for line in lines if line and not line.startswith("=")]
        try:
            out.append(base64.b64decode("".join(lines), validate=True))
        except ValueError:
            continue
    return b"".join(out)


# -- signing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpgSignature:
    path: Path               # <lookaside>/<name>@sha256=<hex>/signature-N
    fingerprint: str         # the key that made it
    identity: str            # the docker-reference it names
    manifest_digest: Digest  # the manifest it is for


def default_lookaside_dir(home: Path, addr: str) -> Path:
    """Where the signatures of images in the registry ``addr`` are kept on this host."""
    return home / "lookaside" / addr.replace(":", "-").replace("[", "").replace("]", "")


def signature_dir(lookaside_dir: Path, repo_name: str, manifest_digest: Digest) -> Path:
    """The directory containers/image reads for ``repo_name@manifest_digest``."""
    return lookaside_dir / f"{repo_name}@sha256={manifest_digest.hex}"


def stored_signatures(directory: Path) -> list[Path]:
    """``signature-1``, ``signature-2``, ... as containers/image reads them: up to the first
    missing number."""
    found: list[Path] = []
    while (directory / f"signature-{len(found) + 1}").is_file():
        found.append(directory / f"signature-{len(found) + 1}")
    return found


def sign_manifest(manifest: bytes, docker_reference: str, *, keyring: GpgKeyRing,
                  lookaside_dir: Path, repo_name: str | None = None,
                  manifest_digest: Digest | None = None, log: BuildLog | None = None) -> Path:
    """Sign ``manifest`` as ``docker_reference`` (``<registry>/<name>:<tag>``) with the key
    ring's current key and store the signature where podman looks for it; returns its path.

    The signature goes to the first free ``signature-N``; existing signatures are never
    overwritten.  When a signature by the current key for this name and manifest is already
    there, nothing is added and its path is returned.
    """
    digest = Digest.of_bytes(manifest)
    if manifest_digest is not None and manifest_digest != digest:
        raise SignatureError(f"the manifest to sign is {digest}, not {manifest_digest}",
                             hint="sign the manifest bytes the registry holds")
    name = _tagged_name(docker_reference)
    if repo_name is not None and repo_name != name:
        raise SignatureError(f"{docker_reference} is not in the repository {repo_name}")
    key = keyring.current(log=log)
    directory = signature_dir(lookaside_dir, name, digest)
    for path in stored_signatures(directory):
        opened = _open(path, keyring.pubring, log=log)
        if isinstance(opened, tuple) and opened[0] == key.fingerprint:
            with contextlib.suppress(SignatureError):
                if _read_payload(opened[1]) == (docker_reference, digest):
                    return path
    with tempfile.TemporaryDirectory(prefix="alicorn-sign-") as tmp:
        (Path(tmp) / "manifest.json").write_bytes(manifest)
        run([which("skopeo"), "standalone-sign", f"{tmp}/manifest.json", docker_reference,
             key.fingerprint, "--output", f"{tmp}/signature"],
            env={"GNUPGHOME": str(keyring.home)}, log=log, what="skopeo standalone-sign",
            timeout=120)
        return _store(directory, (Path(tmp) / "signature").read_bytes())


def _tagged_name(docker_reference: str) -> str:
    """The repository path of ``<registry>/<name>:<tag>``; anything else is refused."""
    repo, tag, digest = split_reference(docker_reference)
    host, _, name = repo.partition("/")
    if tag is None or digest is not None or not name or not _REGISTRY_HOST.fullmatch(host):
        raise SignatureError(f"{docker_reference!r} is not <registry>/<name>:<tag>",
                             hint="sign the name the image is published under, with its tag: "
                                  "podman accepts that for pulls by tag and by digest")
    return name


def _store(directory: Path, signature: bytes) -> Path:
    """``signature`` as the first free ``signature-N`` of ``directory``, never replacing one
    (``link`` fails on an existing name, so two signers at once both keep theirs)."""
    _mkdirs(directory)
    fd, tmp = tempfile.mkstemp(prefix=".signature.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(signature)
        os.chmod(tmp, 0o644)
        n = 1
        while True:
            path = directory / f"signature-{n}"
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                n += 1
    finally:
        os.unlink(tmp)


def _mkdirs(directory: Path) -> None:
    """``directory`` and its parents, readable by everyone (podman may run as another user)."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
            os.chmod(d, 0o755)


# -- verifying --------------------------------------------------------------------------------
def verify_manifest_signatures(manifest: bytes, docker_reference: str, *, lookaside_dir: Path,
                               pubring: Path, log: BuildLog | None = None) -> GpgSignature:
    """The first stored signature that podman's ``signedBy`` rule (``matchRepoDigestOrExact``,
    the keys in ``pubring``) accepts for pulling ``manifest`` as ``docker_reference``
    (``<registry>/<name>:<tag>`` or ``<registry>/<name>@<digest>``); else
    :class:`SignatureError` saying what is wrong with each signature: missing, made with
    another key, for another manifest, or naming another image.
    """
    digest = Digest.of_bytes(manifest)
    repo, tag, ref_digest = split_reference(docker_reference)
    name = repo.partition("/")[2]
    if not name or (tag is None and ref_digest is None):
        raise SignatureError(f"{docker_reference!r} names no tag and no digest",
                             hint="verify <registry>/<name>:<tag> or <registry>/<name>@<digest>")
    if ref_digest is not None and ref_digest != str(digest):
        raise SignatureError(f"the manifest is {digest}, not the {ref_digest} that "
                             f"{docker_reference} names")
    directory = signature_dir(lookaside_dir, name, digest)
    signatures = stored_signatures(directory)
    if not signatures:
        stray = sorted(p.name for p in directory.glob("signature-*")) if directory.is_dir() \
            else []
        raise SignatureError(
            f"{repo}@{digest} is not signed: no signature in {directory}"
            + (f" (podman reads from signature-1 on and ignores {', '.join(stray)})"
               if stray else ""),
            hint="images this build service publishes are signed when they are pushed; this "
                 "one was not published by it")
    if not pubring.is_file():
        raise SignatureError(f"cannot verify {docker_reference}: the keyring {pubring} is "
                             "missing", hint="the build service's public keys are in "
                                             "ALICORN_HOME/keys/public")
    reasons = []
    for path in signatures:
        opened = _open(path, pubring, log=log)
        if isinstance(opened, str):
            reasons.append(f"{path.name} {opened}")
            continue
        fingerprint, payload = opened
        try:
            identity, signed = _read_payload(payload)
        except SignatureError as e:
            reasons.append(f"{path.name}: {e.message}")
            continue
        by = f"{path.name} (key {fingerprint[-16:]})"
        if signed != digest:
            reasons.append(f"{by} is for the image {signed}, not {digest}")
            continue
        problem = _identity_problem(identity, docker_reference)
        if problem:
            reasons.append(f"{by} {problem}")
            continue
        return GpgSignature(path, fingerprint, identity, digest)
    raise SignatureError(f"no signature of {docker_reference} holds: " + "; ".join(reasons),
                         hint="do not trust this image; if it is ours, publish it again so "
                              "that it is signed with the current key")


def _identity_problem(identity: str, pulled: str) -> str | None:
    """Why ``matchRepoDigestOrExact`` refuses a signature naming ``identity`` for a pull of
    ``pulled``; None when it accepts it."""
    repo, tag, digest = split_reference(identity)
    pulled_repo, pulled_tag, _ = split_reference(pulled)
    if tag is None and digest is None:
        return (f"names the repository {identity} alone, which podman accepts for no pull "
                "(it needs a tag or digest)")
    if pulled_tag is not None:
        return None if identity == pulled else f"names {identity}, not {pulled}"
    return None if repo == pulled_repo else f"names {identity}, not the repository {pulled_repo}"


def _open(path: Path, pubring: Path, *, log: BuildLog | None) -> tuple[str, bytes] | str:
    """``(fingerprint, payload)`` of the signed message at ``path`` when one key of
    ``pubring`` made its only signature and it holds; else what is wrong with it."""
    gpgv = which("gpgv")
    with tempfile.TemporaryDirectory(prefix="alicorn-gpgv-") as tmp:
        proc = run([gpgv, "--homedir", tmp, "--keyring", str(pubring.absolute()),
                    "--status-fd", "2", "--output", f"{tmp}/payload", str(path)],
                   check=False, log=log, what="gpgv")
        status = [line[9:].split() for line in proc.stderr.splitlines()
                  if line.startswith("[GNUPG:] ") and len(line) > 9]
        payload = Path(tmp, "payload").read_bytes() if Path(tmp, "payload").exists() else b""
    words = {s[0]: s[1:] for s in status}
    count = sum(1 for s in status if s[0] == "NEWSIG")
    if count != 1 or "NODATA" in words:
        return ("is not a signed message" if count == 0
                else f"holds {count} signatures; podman accepts exactly one")
    if "ERRSIG" in words:
        # ERRSIG <long key id> <algo> <hash> <class> <time> <rc> <fingerprint>
        errsig = words["ERRSIG"]
        key = errsig[6] if len(errsig) > 6 else errsig[0]
        if "NO_PUBKEY" in words:
            return f"is made with the key {key}, which is not in {pubring}"
        return f"is made with the key {key} and cannot be checked"
    for bad, why in (("BADSIG", "does not match what it signs (corrupt or altered)"),
                     ("EXPKEYSIG", "is made with an expired key"),
                     ("REVKEYSIG", "is made with a revoked key"),
                     ("EXPSIG", "has expired")):
        if bad in words:
            return why
    valid = words.get("VALIDSIG")
    if proc.returncode != 0 or "GOODSIG" not in words or not valid or len(valid) < 10:
        return f"does not verify (gpgv exit status {proc.returncode})"
    if valid[0] != valid[9]:
        return (f"is made with the subkey {valid[0]}; podman trusts primary keys only")
    return valid[0], payload


def _read_payload(payload: bytes) -> tuple[str, Digest]:
    """``(docker-reference, manifest digest)`` of a containers-signature(5) payload, read as
    strictly as containers/image reads it."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("a member appears twice")
        return dict(pairs)

    try:
        doc = json.loads(payload, object_pairs_hook=no_duplicates)
        _exact(doc, {"critical", "optional"}, "the payload")
        critical, optional = doc["critical"], doc["optional"]
        _exact(critical, {"type", "image", "identity"}, "critical")
        if critical["type"] != SIGNATURE_TYPE:
            raise ValueError(f"its type is {critical['type']!r}, not {SIGNATURE_TYPE!r}")
        _exact(critical["image"], {"docker-manifest-digest"}, "critical.image")
        _exact(critical["identity"], {"docker-reference"}, "critical.identity")
        identity = critical["identity"]["docker-reference"]
        digest = critical["image"]["docker-manifest-digest"]
        if not isinstance(identity, str) or not isinstance(digest, str):
            raise ValueError("the identity and the digest must be strings")
        if not isinstance(optional, dict):
            raise ValueError("optional is not an object")
        return identity, Digest(digest)
    except (ValueError, TypeError, KeyError) as e:
        raise SignatureError(f"its payload is not a container signature: {e}") from e


def _exact(value: Any, fields: set[str], what: str) -> None:
    if not isinstance(value, dict) or set(value) != fields:
        raise ValueError(f"{what} must have exactly the members {sorted(fields)}")


# -- registries.d: one entry per registry, for both kinds of signature ------------------------
class Keep(enum.Enum):
    """Leave this setting of the registries.d entry as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


def registries_d_entry(addr: str, *, lookaside_dir: Path | None,
                       use_sigstore_attachments: bool) -> str:
    """The text of Alicorn's registries.d file for ``addr``: where GPG signatures are read
    (``lookaside``), and whether cosign ``.sig`` attachments are.

    containers/image refuses every pull from a registry configured in two entries, so the
    GPG and the sigstore host policies share this one file.
    """
    lines = [f"{_MARKER}: where podman finds the signatures of images in",
             f"# Alicorn's registry {addr}.  Removed with Alicorn's host policy.",
             "docker:", f"  {json.dumps(addr)}:"]
    if lookaside_dir is not None:
        lines.append(f"    lookaside: {json.dumps(lookaside_dir.absolute().as_uri())}")
    if use_sigstore_attachments:
        lines.append("    use-sigstore-attachments: true")
    return "\n".join(lines) + "\n"


def write_registries_d(addr: str, *, registries_d: Path = REGISTRIES_D,
                       lookaside_dir: Path | Literal[Keep.KEEP] | None = KEEP,
                       use_sigstore_attachments: bool | Literal[Keep.KEEP] = KEEP
                       ) -> Path | None:
    """Set what is given in Alicorn's registries.d entry for ``addr``, keeping the rest of it;
    the file goes when it would configure nothing.  Returns the file, or None when removed.

    Refuses (:class:`PolicyError`) when a file Alicorn did not write configures ``addr``.
    """
    path = registries_d_file(addr, registries_d)
    for other in sorted(registries_d.glob("*.yaml")) if registries_d.is_dir() else []:
        if other == path:
            continue
        try:
            doc = yaml.safe_load(other.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and addr in (doc.get("docker") or {}):
            raise PolicyError(f"{other} already configures {addr}", where=str(other),
                              hint="containers/image allows one entry per registry: remove "
                                   f"the {addr} entry from it, or add 'lookaside: "
                                   "file://<Alicorn's lookaside directory>' to it yourself")
    old_lookaside, old_sigstore = _read_entry(path, addr)
    lookaside = old_lookaside if lookaside_dir is KEEP else lookaside_dir
    sigstore = old_sigstore if use_sigstore_attachments is KEEP else use_sigstore_attachments
    if lookaside is None and not sigstore:
        path.unlink(missing_ok=True)
        return None
    text = registries_d_entry(addr, lookaside_dir=lookaside, use_sigstore_attachments=sigstore)
    if path.exists() and path.read_text() == text:
        return path
    try:
        registries_d.mkdir(parents=True, exist_ok=True)
        replace_file(path, text, mode=0o644)
    except OSError as e:
        raise PolicyError(f"cannot write {path}: {e.strerror}", where=str(path),
                          hint="the host's container configuration is root's to change") from e
    return path


def _read_entry(path: Path, addr: str) -> tuple[Path | None, bool]:
    """``(lookaside directory, use-sigstore-attachments)`` of Alicorn's file for ``addr``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, False
    if not text.startswith(_MARKER):
        raise PolicyError(f"{path} exists and was not written by Alicorn", where=str(path),
                          hint="remove it, or configure the registry's signatures yourself")
    try:
        entry = (yaml.safe_load(text) or {}).get("docker", {}).get(addr) or {}
    except (yaml.YAMLError, AttributeError):
        entry = {}
    url = entry.get("lookaside") if isinstance(entry, dict) else None
    lookaside = None
    if isinstance(url, str) and url.startswith("file://"):
        lookaside = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    return lookaside, bool(isinstance(entry, dict) and entry.get("use-sigstore-attachments"))


# -- policy.json ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpgHostPolicy:
    addr: str
    policy_path: Path
    registries_d_file: Path
    pubring: Path
    lookaside_dir: Path
    probed: bool         # podman here was seen accepting a signed image and refusing another
    detail: str          # what the probe saw, for a person
    notes: tuple[str, ...] = ()


def gpg_requirement(pubring: Path) -> dict[str, Any]:
    """The ``signedBy`` requirement for images signed with a key in ``pubring``."""
    return {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(pubring.absolute()),
            "signedIdentity": {"type": "matchRepoDigestOrExact"}}


def is_alicorn_gpg_requirement(req: Any) -> bool:
    """A ``signedBy`` requirement this module wrote (its keyPath is a key ring of ours)."""
    return (isinstance(req, dict) and req.get("type") == "signedBy"
            and req.get("keyType") == "GPGKeys" and set(req) <= {
                "type", "keyType", "keyPath", "signedIdentity"}
            and isinstance(req.get("keyPath"), str)
            and bool(_OUR_PUBRING.fullmatch(req["keyPath"])))


def host_gpg_policy(addr: str, *, lookaside_dir: Path, pubring: Path,
                    policy_path: Path = POLICY_JSON, registries_d: Path = REGISTRIES_D,
                    probe: bool = True, force: bool = False,
                    log: BuildLog | None = None) -> GpgHostPolicy:
    """Make podman on this host require a GPG signature by a key in ``pubring`` on every image
    from the registry ``addr``, read from ``lookaside_dir``.

    Writes the ``lookaside`` into Alicorn's registries.d entry for ``addr`` (keeping its
    sigstore setting) and ``transports.docker[addr]`` into ``policy.json``: one ``signedBy``
    rule, beside Alicorn's ``sigstoreSigned`` rule if there is one (both must then hold).  The
    rest of ``policy.json`` stays byte for byte as it was.  Idempotent and atomic;
    :func:`remove_host_gpg_policy` undoes it.

    With ``probe``, before the rule is written podman pulls a throwaway image signed with a
    throwaway key into a scratch store, once under a policy trusting that key (it must
    accept) and once under one trusting another key (it must refuse); the registry must be
    up.  If podman does not do both, nothing stays written and :class:`PolicyError` is
    raised, unless ``force``.  (The probe reads signatures through the host's registries.d,
    so with another ``registries_d`` it fails.)
    """
    pubring = pubring.absolute()
    lookaside_dir = lookaside_dir.absolute()
    if not pubring.is_file():
        raise PolicyError(f"the keyring {pubring} is missing",
                          hint="sign an image first (signing creates the key and exports it)")
    requirement = gpg_requirement(pubring)
    if not is_alicorn_gpg_requirement(requirement):
        raise PolicyError(f"{pubring} is not an Alicorn key ring (…/keys/public/"
                          "gpg-pubring.gpg)")
    notes: list[str] = []
    with _locked(policy_path.parent):
        text = _read_text(policy_path)
        doc = _parse_policy(text, policy_path)
        scope = doc.get("transports", {}).get("docker", {}).get(addr)
        if scope is not None and not all(is_alicorn_gpg_requirement(r) or _is_ours([r])
                                         for r in scope):
            raise PolicyError(f"{policy_path} already has a rule for {addr} that Alicorn did "
                              "not write", where=str(policy_path),
                              hint=f"remove transports.docker[\"{addr}\"] from it yourself, "
                                   "or keep it and do not install Alicorn's policy")
        kept = [r for r in scope or [] if not is_alicorn_gpg_requirement(r)]
        if kept:
            notes.append(f"Alicorn's sigstoreSigned rule for {addr} stays: podman requires "
                         "both signatures")
        _mkdirs(lookaside_dir)
        yaml_file = registries_d_file(addr, registries_d)
        yaml_before = yaml_file.read_text() if yaml_file.exists() else None
        written = write_registries_d(addr, registries_d=registries_d,
                                     lookaside_dir=lookaside_dir)
        assert written is not None
        ok, detail = True, "not probed"
        try:
            if probe:
                ok, detail = _probe(addr, lookaside_dir, log=log)
            if not ok and not force:
                raise PolicyError(f"podman on this host does not check GPG signatures as "
                                  f"expected ({detail}); the rule would not protect {addr}",
                                  hint="check that podman's containers/image is built with "
                                       "gpgme, and that gpg works")
            new_text = _set_scope(text, doc, addr, [*kept, requirement], policy_path)
            if new_text != text:
                replace_file(policy_path, new_text, mode=policy_path.stat().st_mode & 0o7777)
        except BaseException:
            if yaml_before is None:
                yaml_file.unlink(missing_ok=True)
            elif yaml_file.read_text() != yaml_before:
                replace_file(yaml_file, yaml_before, mode=0o644)
            raise
    notes.extend(_shadowing())
    return GpgHostPolicy(addr=addr, policy_path=policy_path, registries_d_file=written,
                         pubring=pubring, lookaside_dir=lookaside_dir, probed=probe and ok,
                         detail=detail, notes=tuple(notes))


def remove_host_gpg_policy(addr: str, *, policy_path: Path = POLICY_JSON,
                           registries_d: Path = REGISTRIES_D) -> bool:
    """Undo :func:`host_gpg_policy` for ``addr``; True when there was something to undo.

    Only what it wrote goes: Alicorn's sigstore rule and ``use-sigstore-attachments`` stay, and
    a rule for ``addr`` that someone else wrote stays.
    """
    removed = False
    with _locked(policy_path.parent):
        if policy_path.exists():
            text = _read_text(policy_path)
            doc = _parse_policy(text, policy_path)
            scope = doc.get("transports", {}).get("docker", {}).get(addr)
            if scope and all(is_alicorn_gpg_requirement(r) or _is_ours([r]) for r in scope) \
                    and any(is_alicorn_gpg_requirement(r) for r in scope):
                rest = [r for r in scope if not is_alicorn_gpg_requirement(r)]
                new_text = _set_scope(text, doc, addr, rest or None, policy_path)
                replace_file(policy_path, new_text, mode=policy_path.stat().st_mode & 0o7777)
                removed = True
        path = registries_d_file(addr, registries_d)
        if path.exists() and path.read_text().startswith(_MARKER) \
                and _read_entry(path, addr)[0] is not None:
            write_registries_d(addr, registries_d=registries_d, lookaside_dir=None)
            removed = True
    return removed


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError as e:
        raise PolicyError(f"{path} is missing: podman refuses every pull without it",
                          where=str(path),
                          hint="reinstall it (Debian: golang-github-containers-common) "
                               "before installing Alicorn's policy") from e
    except OSError as e:
        raise PolicyError(f"cannot read {path}: {e.strerror}", where=str(path)) from e


# -- editing policy.json in place -------------------------------------------------------------
# Only the members on the way to transports.docker[addr] are touched: a new member goes first in
# its object, followed by a copy of the white space that followed the brace, so that removing
# it again (up to the next member's key) gives back the same bytes.

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class _Member:
    key: str
    start: int        # the key's opening quote
    value: int        # the value's first character
    end: int          # just after the value


@dataclass(frozen=True)
class _Object:
    open: int
    members: tuple[_Member, ...]

    def get(self, key: str) -> _Member | None:
        return next((m for m in self.members if m.key == key), None)


def _object_at(text: str, pos: int) -> _Object:
    if text[pos] != "{":
        raise ValueError(f"expected an object at offset {pos}")
    i = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    members: list[_Member] = []
    if text[i] == "}":
        return _Object(pos, ())
    while True:
        if text[i] != '"':
            raise ValueError(f"expected a member name at offset {i}")
        key, j = _DECODER.raw_decode(text, i)
        j = _WS.match(text, j).end()  # type: ignore[union-attr]
        if text[j] != ":":
            raise ValueError(f"expected ':' at offset {j}")
        value = _WS.match(text, j + 1).end()  # type: ignore[union-attr]
        _, end = _DECODER.raw_decode(text, value)
        if any(m.key == key for m in members):
            raise ValueError(f"the member {key!r} appears twice")
        members.append(_Member(key, i, value, end))
        k = _WS.match(text, end).end()  # type: ignore[union-attr]
        if text[k] == "}":
            return _Object(pos, tuple(members))
        if text[k] != ",":
            raise ValueError(f"expected ',' or '}}' at offset {k}")
        i = _WS.match(text, k + 1).end()  # type: ignore[union-attr]


def _path(text: str) -> list[_Object]:
    """The top-level object, then ``transports`` and ``transports.docker`` where present."""
    chain = [_object_at(text, _WS.match(text).end())]  # type: ignore[union-attr]
    for key in ("transports", "docker"):
        member = chain[-1].get(key)
        if member is None:
            break
        chain.append(_object_at(text, member.value))
    return chain


def _dump(value: Any, text: str, obj: _Object) -> str:
    """``value`` as JSON, indented like the members of ``obj`` when they are one a line."""
    if obj.members:
        gap = text[obj.open + 1:obj.members[0].start]
        if "\n" in gap:
            indent = gap.rsplit("\n", 1)[1]
            return json.dumps(value, indent=4).replace("\n", "\n" + indent)
    return json.dumps(value, separators=(", ", ": "))


def _insert(text: str, obj: _Object, key: str, value: Any) -> str:
    member = f"{json.dumps(key)}: {_dump(value, text, obj)}"
    if not obj.members:
        return text[:obj.open + 1] + member + text[obj.open + 1:]
    first = obj.members[0].start
    return text[:first] + member + "," + text[obj.open + 1:first] + text[first:]


def _remove(text: str, obj: _Object, key: str) -> str:
    members = obj.members
    i = next(n for n, m in enumerate(members) if m.key == key)
    if i + 1 < len(members):
        cut = members[i].start, members[i + 1].start
    elif i > 0:
        cut = members[i - 1].end, members[i].end
    else:
        cut = members[i].start, members[i].end
    return text[:cut[0]] + text[cut[1]:]


def _set_scope(text: str, doc: dict[str, Any], addr: str, scope: list[dict[str, Any]] | None,
               path: Path) -> str:
    """``text`` with ``transports.docker[addr]`` set to ``scope`` (removed when None, with
    ``docker`` and ``transports`` when that leaves them empty), all else byte-identical."""
    want = copy.deepcopy(doc)
    docker = want.setdefault("transports", {}).setdefault("docker", {})
    if scope is None:
        docker.pop(addr, None)
        if not docker:
            del want["transports"]["docker"]
        if not want["transports"]:
            del want["transports"]
    else:
        docker[addr] = scope
    if want == doc:
        return text
    try:
        chain = _path(text)
        if scope is not None:
            if len(chain) == 3 and (member := chain[2].get(addr)) is not None:
                new = text[:member.value] + _dump(scope, text, chain[2]) + text[member.end:]
            else:
                # The missing part of the way: docker[addr], or transports.docker[addr].
                keys = ["transports", "docker", addr][len(chain) - 1:]
                nest: Any = scope
                for key in reversed(keys[1:]):
                    nest = {key: nest}
                new = _insert(text, chain[-1], keys[0], nest)
        else:
            new = _remove(text, chain[2], addr)
            for depth in (2, 1):
                chain = _path(new)
                if len(chain) > depth and not chain[depth].members:
                    new = _remove(new, chain[depth - 1], ("transports", "docker")[depth - 1])
        if json.loads(new) == want:
            return new
    except (ValueError, IndexError):
        pass
    raise PolicyError("cannot edit it in place without touching other rules", where=str(path),
                      hint=f"set transports.docker[\"{addr}\"] yourself")


# -- can podman here check GPG signatures? ----------------------------------------------------
def _probe(addr: str, lookaside_dir: Path, *, log: BuildLog | None = None) -> tuple[bool, str]:
    """Pull a throwaway image, signed with a throwaway key, into a scratch store: under a
    policy trusting that key podman must accept it, under one trusting another key refuse it.
    ``(True, what was seen)`` when both hold; else ``(False, what podman said)``."""
    podman = which("podman")
    client = RegistryClient(addr)
    manifest, digest = _push_probe_image(client)
    identity = f"{addr}/{PROBE_REPOSITORY}:probe"
    # Short: gpg-agent's socket lives in GNUPGHOME and its path is limited to 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="alicorn-gpg-probe-"))
    signature: Path | None = None
    try:
        ring = GpgKeyRing(tmp / "keys")
        other = GpgKeyRing(tmp / "other")
        other.current(log=log)
        signature = sign_manifest(manifest, identity, keyring=ring, lookaside_dir=lookaside_dir,
                                  manifest_digest=digest, log=log)
        for trusted, must_accept in ((ring.pubring, True), (other.pubring, False)):
            policy = tmp / "policy.json"
            policy.write_text(json.dumps({
                "default": [{"type": "reject"}],
                "transports": {"docker": {f"{addr}/{PROBE_REPOSITORY}": [
                    gpg_requirement(trusted)]}}}))
            proc = run([podman, "--root", f"{tmp}/root", "--runroot", f"{tmp}/run",
                        "--storage-driver", "vfs", "pull", "--quiet", "--tls-verify=false",
                        "--signature-policy", str(policy), identity],
                       check=False, log=log, what="podman pull (GPG check)", timeout=120)
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            said = lines[-1] if lines else f"podman exited {proc.returncode}"
            if must_accept and proc.returncode != 0:
                return False, f"a correctly signed image was refused: {said}"
            if not must_accept and (proc.returncode == 0 or "rejected" not in said):
                return False, f"an image signed with an untrusted key was not refused: {said}"
        return True, ("podman accepts an image signed with a trusted key and refuses one "
                      "signed with another key")
    finally:
        if signature is not None:
            signature.unlink(missing_ok=True)
        for r in (tmp / "keys", tmp / "other"):
            GpgKeyRing(r).stop_agent()
        shutil.rmtree(tmp, ignore_errors=True)


def _push_probe_image(client: RegistryClient) -> tuple[bytes, Digest]:
    """A one-file image, always the same, as ``PROBE_REPOSITORY:probe``."""
    return push_tiny_image(client, PROBE_REPOSITORY, "probe",
                           b"alicorn checks that podman verifies GPG signatures\n")
