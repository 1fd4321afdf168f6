"""Sealed build records.

When a build ends the worker writes ``builds/ID/record.json``: one canonical JSON document
holding everything the build consumed and produced, by value or by digest.  The same bytes are
appended to the transparency log, so the record can be checked against the log by anyone, and
the database row (which a web page or a person might edit) against the record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicorn.digest import Digest, canonical_json
from alicorn.errors import Error

RECORD_TYPE = "alicorn.build-record/v1"
INPUTS_TYPE = "alicorn.build-inputs/v1"

RECORD = "record.json"
PROVENANCE = "provenance.dsse.json"
SPDX = "sbom.spdx.json"
CYCLONEDX = "sbom.cdx.json"
BUILD_LOG = "build.log"
PUBLISH_LOG = "publish.log"
# The checks run on the candidate image before it is published: their log (the build log has
# ended by then), the tests' and the gate's results, the gate's reports (ARF, HTML) under
# GATE_DIR, and the signed in-toto statements about both that are attached to the image.
CHECKS_LOG = "checks.log"
TESTS = "tests.json"
GATE = "gate.json"
GATE_DIR = "gate"
TESTS_ATTESTATION = "tests.dsse.json"
GATE_ATTESTATION = "gate.dsse.json"


class RecordError(Error):
    """A build's sealed files are missing or unreadable."""


@dataclass(frozen=True)
class BuildFiles:
    """The files of one build under ``$ALICORN_HOME/builds/ID``."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    def write_sealed(self, name: str, data: bytes) -> Digest:
        """Write ``name`` once, read-only; returns its digest."""
        path = self.path(name)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
        return Digest.of_bytes(data)

    def read(self, name: str) -> bytes:
        try:
            return self.path(name).read_bytes()
        except OSError as e:
            raise RecordError(f"{self.path(name)} is missing or unreadable: {e.strerror}") from e

    def digest(self, name: str) -> Digest:
        return Digest.of_bytes(self.read(name))

    def record(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.read(RECORD))
        return data


def inputs_entry(build_id: str, argv: list[str], source: dict[str, Any],
                 recipe: dict[str, Any], inputs: dict[str, Any]) -> bytes:
    """The transparency-log entry written before the root is composed."""
    return canonical_json({"type": INPUTS_TYPE, "build_id": build_id, "argv": argv,
                           "source": source, "recipe": recipe, "inputs": inputs})


def inputs_entry_of(record: dict[str, Any]) -> bytes:
    """The inputs entry a sealed record implies: it must equal the one logged before the
    build composed anything."""
    src = record["source"]
    return inputs_entry(record["build_id"], record["argv"],
                        {"url": src["url"], "ref": src["ref"], "commit": src["commit"]},
                        {"path": record["recipe"]["path"], "digest": record["recipe"]["digest"]},
                        record["inputs"])


def record_bytes(record: dict[str, Any]) -> bytes:
    return canonical_json({"type": RECORD_TYPE, **record})
