"""Evidence bundles: everything needed to check a build's chain offline, in one file.

``alicorn trace DIGEST --bundle FILE`` writes one; ``alicorn verify --bundle FILE --key PEM``
checks it on any machine, with no access to the build service: the signed tree head against the
pinned key, the record's and the inputs' inclusion in the log, the provenance's signature and
subject, and the digests of the logs and SBOMs the provenance and the record name.  The image
itself is checked against the digest wherever it is pulled (podman checks that).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from alicorn.chain import dsse, provenance, sbom
from alicorn.chain.keys import PinnedKeys, PublicKey
from alicorn.chain.record import (
    BUILD_LOG,
    CHECKS_LOG,
    CYCLONEDX,
    GATE,
    GATE_ATTESTATION,
    PROVENANCE,
    PUBLISH_LOG,
    RECORD,
    SPDX,
    TESTS,
    TESTS_ATTESTATION,
    BuildFiles,
    inputs_entry_of,
)
from alicorn.chain.translog import SignedTreeHead, TransparencyLog, verify_head, verify_inclusion
from alicorn.chain.verify import Report
from alicorn.digest import Digest, canonical_json
from alicorn.errors import BadInput, Error
from alicorn.store.models import BuildRow

BUNDLE_TYPE = "alicorn.evidence-bundle/v1"
_FILES = (BUILD_LOG, CHECKS_LOG, PUBLISH_LOG, SPDX, CYCLONEDX, TESTS, GATE, TESTS_ATTESTATION,
          GATE_ATTESTATION)
MAX_BUNDLE_BYTES = 256 << 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_bundle(row: BuildRow, files: BuildFiles, log: TransparencyLog,
                keys: list[PublicKey]) -> dict[str, Any]:
    head = log.latest_head()
    if head is None or row.record_index is None:
        raise BadInput(f"build {row.id} has no sealed log entry")
    bundle: dict[str, Any] = {
        "type": BUNDLE_TYPE,
        "digest": row.digest,
        "build_id": row.id,
        "head": head.to_json(),
        "record": {"index": row.record_index, "data": _b64(files.read(RECORD)),
                   "proof": [h.hex() for h in log.inclusion_proof(row.record_index,
                                                                  head.tree_size)]},
        "files": {name: _b64(files.read(name)) for name in _FILES
                  if files.path(name).exists()},
        "keys": [k.to_json() for k in keys],
    }
    if row.inputs_index is not None:
        bundle["inputs"] = {"index": row.inputs_index,
                            "data": _b64(log.entry(row.inputs_index)),
                            "proof": [h.hex() for h in log.inclusion_proof(row.inputs_index,
                                                                           head.tree_size)]}
    if files.path(PROVENANCE).exists():
        bundle["provenance"] = json.loads(files.read(PROVENANCE))
    return bundle


def verify_bundle(raw: bytes, pinned: PinnedKeys | None) -> tuple[Report, list[str]]:
    """Check a bundle; returns the report and notes (e.g. that its keys were not pinned)."""
    notes: list[str] = []
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BadInput(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        b = json.loads(raw)
        if b.get("type") != BUNDLE_TYPE:
            raise BadInput(f"not an evidence bundle (type {b.get('type')!r})")
        head = SignedTreeHead.from_json(b["head"])
        record_bytes = base64.b64decode(b["record"]["data"], validate=True)
        files = {k: base64.b64decode(v, validate=True) for k, v in b["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(f"the bundle is malformed: {e}") from e
    if pinned is None:
        pinned = PinnedKeys([PublicKey.from_json(k) for k in b.get("keys", [])])
        notes.append("the keys came from the bundle itself: pin the build service's public "
                     "key with --key to trust the result")
    report = Report(str(b.get("build_id")), b.get("digest"))
    try:
        verify_head(head, pinned.find(head.key_id))
        proof = [bytes.fromhex(h) for h in b["record"]["proof"]]
        verify_inclusion(record_bytes, int(b["record"]["index"]), proof, head)
        record = json.loads(record_bytes)
        if "inputs" in b:
            logged = base64.b64decode(b["inputs"]["data"], validate=True)
            verify_inclusion(logged, int(b["inputs"]["index"]),
                             [bytes.fromhex(h) for h in b["inputs"]["proof"]], head)
            if logged != inputs_entry_of(record):
                raise Error("the inputs logged before the build differ from the record's")
    except (Error, ValueError, KeyError) as e:
        report.add("transparency log", False, e.diagnostics() if isinstance(e, Error) else
                   f"malformed: {e}")
        return report, notes
    report.add("transparency log", True, f"record is entry {b['record']['index']} of the "
                                         f"signed tree of size {head.tree_size}")
    if record["image"]["digest"] != b.get("digest"):
        report.add("record", False, "the record is about another image")
        return report, notes
    for name, want in record["logs"].items():
        got = str(Digest.of_bytes(files.get(name, b"")))
        if got != want:
            report.add("build log", False, f"{name} hashes to {got}, the record names {want}")
            return report, notes
    report.add("build log", True, "the logs hash to the digests the record names")
    # The tests' and the gate's results (the gate's own reports stay out of the bundle).
    sealed = (record.get("checks") or {}).get("files") or {}
    for name in (TESTS, GATE, TESTS_ATTESTATION, GATE_ATTESTATION):
        if name in sealed and str(Digest.of_bytes(files.get(name, b""))) != sealed[name]:
            report.add("checks", False, f"{name} is not the one the record names")
            return report, notes
    if sealed:
        report.add("checks", True, f"tests {record['checks'].get('tests')}, gate "
                                   f"{record['checks'].get('gate')}: the results the record "
                                   "names")
    if record["state"] != "done":
        return report, notes
    try:
        envelope = b["provenance"]
        if str(Digest.of_bytes(canonical_json(envelope))) != record["provenance"]["digest"]:
            raise Error("the provenance is not the one the record names")
        stmt = dsse.verify(envelope, pinned).json()
        if provenance.subject_digest(stmt) != b["digest"]:
            raise Error("the provenance is about another image")
        named = provenance.byproduct_digests(stmt)
        for name in (BUILD_LOG, SPDX, CYCLONEDX):
            if str(Digest.of_bytes(files.get(name, b""))) != named.get(name):
                raise Error(f"{name} is not the one the provenance names")
    except (Error, ValueError, KeyError) as e:
        report.add("provenance", False, e.diagnostics() if isinstance(e, Error) else str(e))
        return report, notes
    report.add("provenance", True, "signed, about this image, names these logs and SBOMs")
    expected_pkgs = sorted((p["name"], p["version"], p["type"], p["purl"])
                           for p in record["packages"])
    for name, parse in ((SPDX, sbom.packages_from_spdx), (CYCLONEDX, sbom.packages_from_cyclonedx)):
        if sorted(tuple(x) for x in parse(files[name])) != expected_pkgs:
            report.add("SBOM", False, f"{name} lists other packages than the record")
            return report, notes
    report.add("SBOM", True, f"both SBOMs list the {len(expected_pkgs)} recorded packages")
    return report, notes
