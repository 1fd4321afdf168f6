"""Content addressing: canonical JSON and sha256 digests.

Ids, cache keys and provenance subjects are all sha256 of canonical JSON, so that equal content
gives an equal id wherever it is computed (the osbuild way).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` the same way every time: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


@dataclass(frozen=True, order=True)
class Digest:
    """A ``sha256:<hex>`` content digest."""

    value: str

    def __post_init__(self) -> None:
        if not _DIGEST_RE.fullmatch(self.value):
            raise ValueError(f"not a sha256 digest: {self.value!r}")

    @property
    def hex(self) -> str:
        return self.value.split(":", 1)[1]

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> Digest:
        text = text.strip()
        if re.fullmatch(r"[0-9a-f]{64}", text):
            text = "sha256:" + text
        return cls(text)

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def of_json(cls, value: Any) -> Digest:
        return cls.of_bytes(canonical_json(value))

    @classmethod
    def of_file(cls, path: Path) -> Digest:
        with open(path, "rb") as f:
            return cls.of_stream(f)

    @classmethod
    def of_stream(cls, stream: BinaryIO) -> Digest:
        h = hashlib.sha256()
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            h.update(chunk)
        return cls("sha256:" + h.hexdigest())


def is_digest(text: str) -> bool:
    return bool(_DIGEST_RE.fullmatch(text.strip()))
