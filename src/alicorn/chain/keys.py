"""The build service's signing keys.

ECDSA P-256 with SHA-256: what cosign and sigstore use by default, so podman's
``sigstoreSigned`` policy, DSSE verifiers and anyone with OpenSSL can check our signatures.

Private keys live in ``$ALICORN_HOME/keys/private`` (mode 0700, files 0400): only the worker,
which signs, reads them.  The public keys, current and retired, are in ``keys/public`` and in
``keys.json``, so that signatures made before a rotation stay verifiable.  A key id is the
sha256 of the public key's DER (SubjectPublicKeyInfo).

In a cluster (several builder hosts, one database) every builder also publishes the public
half of its keys to the database's ``signing_keys`` when it makes or rotates one, and a
verifier on any host (the API host holds no private key) finds keys there too:
:func:`keyring_for` gives the ring that does both.  A key read from the database is checked
against its id like one from the index.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from alicorn.digest import Digest
from alicorn.errors import Error

if TYPE_CHECKING:
    from alicorn.config import Settings

# How long the keys read from the database are reused before asking again (a key not found
# asks again at once).
DB_KEYS_TTL = 10.0


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
    """The keys under ``directory`` (``$ALICORN_HOME/keys``); with ``database_url``, also the
    public keys every builder published there (and this ring's are published there)."""

    def __init__(self, directory: Path, database_url: str | None = None):
        self.dir = directory
        self.public_dir = directory / "public"
        self.private_dir = directory / "private"
        self.index = directory / "keys.json"
        self.database_url = database_url

    # -- public side: anyone may read ---------------------------------------------------------
    _cache: tuple[tuple[int, int], list[PublicKey]] | None = None
    _db_cache: tuple[float, list[PublicKey]] | None = None
    _published: bool = False

    def public_keys(self) -> list[PublicKey]:
        """This host's keys, then those only the database holds (other builders'), oldest
        first within each."""
        local = self.local_keys()
        if self.database_url is None:
            return local
        if local and not self._published and self.private_dir.is_dir():
            # A builder's keys made before it joined a cluster: published once per process.
            self.publish(local)
        known = {k.key_id for k in local}
        return local + [k for k in self._db_keys() if k.key_id not in known]

    def _db_keys(self, *, fresh: bool = False) -> list[PublicKey]:
        now = time.monotonic()
        if not fresh and self._db_cache is not None and now - self._db_cache[0] < DB_KEYS_TTL:
            return list(self._db_cache[1])
        assert self.database_url is not None
        keys = read_published(self.database_url, "ecdsa")
        self._db_cache = (now, keys)
        return list(keys)

    def publish(self, keys: list[PublicKey] | None = None) -> None:
        """Write the public keys (this ring's by default) to the database's
        ``signing_keys``; a key already there gets its retirement updated."""
        if self.database_url is None:
            return
        keys = self.local_keys() if keys is None else keys
        publish_public(self.database_url, [
            (k.key_id, "ecdsa", k.pem, k.created, k.retired) for k in keys])
        self._published = True
        self._db_cache = None

    def local_keys(self) -> list[PublicKey]:
        """The keys of this host's index (``keys.json``)."""
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
        if self.database_url is not None:
            for key in self._db_keys(fresh=True):  # published since the last look
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
        self.publish(keys)

    # -- private side: the worker only --------------------------------------------------------
    def _private_path(self, key_id: str) -> Path:
        return self.private_dir / f"{key_id}.pem"

    def current(self) -> SigningKey:
        """The key that signs now, generated on first use (only a builder calls this: a host
        that verifies or serves never needs a private key)."""
        keys = [k for k in self.local_keys() if k.retired is None]
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
        self._write_index([*self.local_keys(), key.public])
        return key

    def rotate(self) -> SigningKey:
        """Retire the current key (it keeps verifying) and start signing with a new one."""
        now = int(time.time())
        keys = [PublicKey(k.key_id, k.pem, k.created, k.retired if k.retired else now)
                for k in self.local_keys()]
        self._write_index(keys)
        return self._generate()


def keyring_for(settings: Settings) -> KeyRing:
    """The key ring of ``settings``' home; in a cluster (the Celery backend) it also finds
    the keys builders published to the database and publishes this host's."""
    from alicorn.cluster.config import load_queue_config

    celery = load_queue_config(settings).celery
    return KeyRing(settings.keys_dir, settings.database_url if celery else None)


def publish_keys(settings: Settings) -> None:
    """Publish this host's public keys to the database (a no-op with no keys here)."""
    ring = keyring_for(settings)
    if ring.database_url is not None and ring.local_keys():
        ring.publish()


# -- the database's signing_keys --------------------------------------------------------------

def publish_public(database_url: str,
                   keys: list[tuple[str, str, str, int, int | None]]) -> None:
    """Upsert ``(key_id, kind, public, created, retired)`` rows into ``signing_keys``; a row
    keeps its public key (an id names one key), only its retirement may be set."""
    from datetime import UTC, datetime

    from sqlalchemy.exc import IntegrityError

    from alicorn.store.db import session_factory
    from alicorn.store.models import SigningKeyRow

    if not keys:
        return
    sessions = session_factory(database_url)
    for attempt in range(2):
        try:
            with sessions.begin() as s:
                for key_id, kind, public, created, retired in keys:
                    row = s.get(SigningKeyRow, key_id)
                    if row is None:
                        s.add(SigningKeyRow(key_id=key_id, kind=kind, public=public,
                                            created=created, retired=retired,
                                            host=socket.gethostname()[:256],
                                            published_at=datetime.now(UTC).replace(
                                                tzinfo=None)))
                    elif retired is not None and row.retired is None:
                        row.retired = retired
            return
        except IntegrityError:  # another process of this builder published it meanwhile
            if attempt:
                raise


def read_published(database_url: str, kind: str) -> list[PublicKey]:
    """The ECDSA keys (``kind`` "ecdsa") in ``signing_keys``, oldest first; a row whose key
    does not match its id is left out."""
    from sqlalchemy import select

    from alicorn.store.db import session_factory
    from alicorn.store.models import SigningKeyRow

    with session_factory(database_url)() as s:
        rows = list(s.scalars(select(SigningKeyRow).where(SigningKeyRow.kind == kind)
                              .order_by(SigningKeyRow.created, SigningKeyRow.key_id)))
    keys = []
    for r in rows:
        try:
            keys.append(PublicKey.from_json({"key_id": r.key_id, "pem": r.public,
                                             "created": r.created, "retired": r.retired}))
        except (SigningKeyError, ValueError):
            continue
    return keys
