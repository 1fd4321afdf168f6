"""DSSE envelopes (Dead Simple Signing Envelope, as in-toto and sigstore use them)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Protocol

from alicorn.chain.keys import PublicKey, SigningKey
from alicorn.errors import Error

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


class KeyLookup(Protocol):
    """Where verification finds a public key by id (a KeyRing, or keys a verifier pinned)."""

    def find(self, key_id: str) -> PublicKey: ...


class EnvelopeError(Error):
    """An envelope is malformed or its signature does not hold."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """The pre-authentication encoding that is what actually gets signed."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign(payload: bytes, key: SigningKey, payload_type: str = INTOTO_PAYLOAD_TYPE
         ) -> dict[str, Any]:
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key.key_id,
                        "sig": base64.b64encode(key.sign(pae(payload_type, payload))).decode()}],
    }


@dataclass(frozen=True)
class Verified:
    payload: bytes
    payload_type: str
    key_id: str

    def json(self) -> Any:
        return json.loads(self.payload)


def verify(envelope: dict[str, Any], keys: KeyLookup) -> Verified:
    """Check the envelope's signatures against the key ring; returns the payload."""
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        payload_type = envelope["payloadType"]
        signatures = envelope["signatures"]
    except (KeyError, TypeError, ValueError) as e:
        raise EnvelopeError(f"not a DSSE envelope: {e}") from e
    if not signatures:
        raise EnvelopeError("the envelope carries no signature")
    for s in signatures:
        key = keys.find(str(s.get("keyid", "")))
        try:
            sig = base64.b64decode(s["sig"], validate=True)
        except (KeyError, ValueError) as e:
            raise EnvelopeError(f"signature by {key.key_id[:16]}… is not base64") from e
        if key.verify(sig, pae(payload_type, payload)):
            return Verified(payload=payload, payload_type=payload_type, key_id=key.key_id)
    raise EnvelopeError("no signature on the envelope verifies with the build service's keys")
