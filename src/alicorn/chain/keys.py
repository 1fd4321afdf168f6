"""The build service's signing keys.

ECDSA P-256 with SHA-256: what cosign and sigstore use by default, so podman's
``sigstoreSigned`` policy, DSSE verifiers and anyone with OpenSSL can check our signatures.

Private keys live in ``$ALICORN_HOME/keys/private`` (mode 0700, files 0400): only the worker,
which signs, reads them.  The public keys, current and retired, are in ``keys/public`` and in
``keys.json``, so that signatures made before a rotation stay verifiable.  A key id is the
sha256 of the public key's DER (SubjectPublicKeyInfo).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from alicorn.digest import Digest
from alicorn.errors import Error


class SigningKeyError(Error):
    """A key is missing, unreadable or not ours."""


def key_id_of(public: ec.EllipticCurvePublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return Digest.of_bytes(der).hex


@functools.lru_cache(maxsize=64)
def _load_public_pem(pem: str) -> object:
    return serialization.load_pem_public_key(pem.encode())


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    pem: str
    created: int
    retired: int | None = None   # when it stopped signing; it still verifies what it signed

    def _key(self) -> ec.EllipticCurvePublicKey:
        key = _load_public_pem(self.pem)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SigningKeyError(f"key {self.key_id} is not an ECDSA key")
        return key

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key().verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "pem": self.pem, "created": self.created,
                "retired": self.retired, "algorithm": "ecdsa-p256-sha256"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublicKey:
        key = cls(key_id=data["key_id"], pem=data["pem"], created=int(data["created"]),
                  retired=data.get("retired"))
        if key_id_of(key._key()) != key.key_id:
            raise SigningKeyError(f"public key {key.key_id} does not match its id")
        return key


class PinnedKeys:
    """Public keys a verifier chose to trust, looked up like a KeyRing's."""

    def __init__(self, keys: list[PublicKey]):
        self.keys = {k.key_id: k for k in keys}

    def find(self, key_id: str) -> PublicKey:
        try:
            return self.keys[key_id]
        except KeyError:
            raise SigningKeyError(f"key {key_id[:16]}… is not one of the trusted keys",
                                  hint="pass the build service's public key with --key") from None

    @classmethod
    def from_pem_files(cls, paths: list[Path]) -> PinnedKeys:
        keys = []
        for path in paths:
            try:
                pem = path.read_text()
                public = serialization.load_pem_public_key(pem.encode())
            except (OSError, ValueError) as e:
                raise SigningKeyError(f"{path}: not a PEM public key: {e}") from e
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise SigningKeyError(f"{path}: not an ECDSA public key")
            keys.append(PublicKey(key_id=key_id_of(public), pem=pem, created=0))
        return cls(keys)


class SigningKey:
    def __init__(self, private: ec.EllipticCurvePrivateKey, created: int):
        self._private = private
        public = private.public_key()
        self.key_id = key_id_of(public)
        self.public = PublicKey(
            key_id=self.key_id, created=created,
            pem=public.public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo).decode())

    def sign(self, data: bytes) -> bytes:
        """A DER-encoded ECDSA signature over sha256(data)."""
        return self._private.sign(data, ec.ECDSA(hashes.SHA256()))

    def private_pem(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())


class KeyRing:
    """The keys under ``directory`` (``$ALICORN_HOME/keys``)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.public_dir = directory / "public"
        self.private_dir = directory / "private"
        self.index = directory / "keys.json"

    # -- public side: anyone may read ---------------------------------------------------------
    _cache: tuple[tuple[int, int], list[PublicKey]] | None = None

    def public_keys(self) -> list[PublicKey]:
        try:
            st = self.index.stat()
        except FileNotFoundError:
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == stamp:
            return list(self._cache[1])  # parsing PEM for every lookup is most of a verify
        try:
            data = json.loads(self.index.read_text())
            keys = [PublicKey.from_json(k) for k in data["keys"]]
        except (OSError, ValueError, KeyError) as e:
            raise SigningKeyError(f"the key index {self.index} is unreadable: {e}") from e
        self._cache = (stamp, keys)
        return list(keys)

    def find(self, key_id: str) -> PublicKey:
        for key in self.public_keys():
            if key.key_id == key_id:
                return key
        raise SigningKeyError(f"key {key_id[:16]}… is not one of this build service's keys",
                        hint=f"the known keys are listed in {self.index}")

    def _write_index(self, keys: list[PublicKey]) -> None:
        self.public_dir.mkdir(parents=True, exist_ok=True)
        for key in keys:
            (self.public_dir / f"{key.key_id}.pem").write_text(key.pem)
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": [k.to_json() for k in keys]}, indent=2,
                                  sort_keys=True) + "\n")
        os.replace(tmp, self.index)

    # -- private side: the worker only --------------------------------------------------------
    def _private_path(self, key_id: str) -> Path:
        return self.private_dir / f"{key_id}.pem"

    def current(self) -> SigningKey:
        """The key that signs now, generated on first use."""
        keys = [k for k in self.public_keys() if k.retired is None]
        if not keys:
            return self._generate()
        key = keys[-1]
        try:
            pem = self._private_path(key.key_id).read_bytes()
        except OSError as e:
            raise SigningKeyError(f"cannot read the signing key {self._private_path(key.key_id)}: "
                            f"{e.strerror}", hint="only the worker can sign") from e
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey) or \
                key_id_of(private.public_key()) != key.key_id:
            raise SigningKeyError(f"the signing key file for {key.key_id} holds another key")
        return SigningKey(private, key.created)

    def _generate(self) -> SigningKey:
        self.private_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(self.private_dir, 0o700)
        key = SigningKey(ec.generate_private_key(ec.SECP256R1()), int(time.time()))
        path = self._private_path(key.key_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_pem())
        self._write_index([*self.public_keys(), key.public])
        return key

    def rotate(self) -> SigningKey:
        """Retire the current key (it keeps verifying) and start signing with a new one."""
        now = int(time.time())
        keys = [PublicKey(k.key_id, k.pem, k.created, k.retired if k.retired else now)
                for k in self.public_keys()]
        self._write_index(keys)
        return self._generate()
