"""Sealing a build: SBOMs, signed provenance, the record, and their place in the log.

The worker calls this; it alone reads the signing key.  Everything it writes under
``builds/ID`` is read-only once written, and the record's bytes go into the transparency log,
whose signed head then covers them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alicorn.chain import dsse, provenance, sbom
from alicorn.chain.keys import SigningKey, keyring_for
from alicorn.chain.record import (
    CYCLONEDX,
    PROVENANCE,
    RECORD,
    SPDX,
    BuildFiles,
    inputs_entry,
    record_bytes,
)
from alicorn.chain.translog import TransparencyLog
from alicorn.compose import Package
from alicorn.config import Settings
from alicorn.digest import Digest, canonical_json


class Chain:
    """The build service's side of the chain of identity for one ALICORN_HOME."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # In a cluster the new keys' public halves go to the database for the other hosts.
        self.keys = keyring_for(settings)
        self.log = TransparencyLog(settings.database_url, self.keys)
        self._key: SigningKey | None = None

    @property
    def key(self) -> SigningKey:
        if self._key is None:
            self._key = self.keys.current()
        return self._key

    def log_inputs(self, build_id: str, argv: list[str], source: dict[str, Any],
                   recipe: dict[str, Any], inputs: dict[str, Any]) -> int:
        """Append the inputs to the log before anything is composed; returns the index."""
        index = self.log.append(inputs_entry(build_id, argv, source, recipe, inputs),
                                kind="inputs", subject=build_id)
        self.log.sign_head(self.key)
        return index

    def write_sboms(self, files: BuildFiles, image_name: str, digest: Digest,
                    packages: list[Package], epoch: int) -> dict[str, str]:
        created = datetime.fromtimestamp(epoch, UTC)
        spdx = sbom.spdx_json(image_name, str(digest), packages, created=created)
        cdx = sbom.cyclonedx_json(image_name, str(digest), packages, created=created)
        return {SPDX: str(files.write_sealed(SPDX, spdx)),
                CYCLONEDX: str(files.write_sealed(CYCLONEDX, cdx))}

    def sign_provenance(self, files: BuildFiles, stmt: dict[str, Any]) -> dict[str, Any]:
        """Sign the statement; returns the DSSE envelope (also written to the build's files)."""
        envelope = dsse.sign(canonical_json(stmt), self.key)
        files.write_sealed(PROVENANCE, canonical_json(envelope))
        return envelope

    def seal(self, files: BuildFiles, record: dict[str, Any], subject: str) -> tuple[str, int]:
        """Write the record, append it to the log and sign the new head."""
        data = record_bytes(record)
        digest = files.write_sealed(RECORD, data)
        index = self.log.append(data, kind="build", subject=subject)
        self.log.sign_head(self.key)
        return str(digest), index


def statement_for(*, image_name: str, digest: Digest, build_id: str, builder: str,
                  version: str, argv: list[str], source: dict[str, Any],
                  recipe: dict[str, Any], inputs: dict[str, Any], key: str,
                  packages: list[Package], byproducts: dict[str, str],
                  started: datetime | None, finished: datetime | None,
                  inputs_index: int | None,
                  trigger: dict[str, Any] | None = None) -> dict[str, Any]:
    return provenance.statement(
        image_name=image_name, image_digest=str(digest), build_id=build_id,
        builder_id=builder, builder_version=version, argv=argv, source=source, recipe=recipe,
        inputs={**inputs, "key": key}, packages=[package_json(p) for p in packages],
        byproducts=byproducts, started=started, finished=finished, inputs_entry=inputs_index,
        trigger=trigger)


def package_json(p: Package) -> dict[str, Any]:
    return {"type": p.type, "name": p.name, "version": p.version, "arch": p.arch,
            "source": p.source, "checksum": p.checksum, "purl": p.purl}


def envelope_digest(envelope: dict[str, Any]) -> str:
    return str(Digest.of_bytes(canonical_json(envelope)))

