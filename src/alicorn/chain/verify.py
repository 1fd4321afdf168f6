"""Walking back from an image digest to its inputs, checking every link on the way.

The chain, from the image back:

    image (manifest, config, layers)  ←  provenance (signed, names the image and the byproducts)
    ←  build log, SBOMs  ←  sealed record  ←  transparency log (signed heads, proofs)
    tests, gate results and their signed statements  ←  sealed record
    database row  ↔  sealed record          registry  ↔  local image, signature, attachments

Each link is one :class:`Check`; the first that fails is the broken link.  Everything but the
registry checks runs offline, from $ALICORN_HOME and the public keys.

In a cluster the build's worker is another host: its files come from the shared store
(:func:`alicorn.cluster.files.materialize`, each checked against its seal), the public keys
from the database (:func:`alicorn.chain.keys.keyring_for`), and the image, which only the
worker's store and the registry hold, from the registry (unless ``fetch_image`` is False).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alicorn.chain import dsse, provenance, sbom
from alicorn.chain.keys import keyring_for
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
from alicorn.chain.translog import (
    SignedTreeHead,
    TransparencyLog,
    verify_consistency,
    verify_head,
    verify_inclusion,
)
from alicorn.config import Settings
from alicorn.digest import Digest, canonical_json
from alicorn.errors import Error
from alicorn.store.models import BuildRow


@dataclass(frozen=True)
class Check:
    link: str
    ok: bool
    detail: str


@dataclass
class Report:
    build_id: str
    digest: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def broken(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def add(self, link: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(link, ok, detail))
        return ok


class _Broken(Exception):
    """Stops a group of checks after its first failure (the rest would only repeat it)."""


class Verifier:
    def __init__(self, settings: Settings, *, registry: bool = True,
                 witnessed: list[SignedTreeHead] | None = None,
                 fetch_image: bool | None = None):
        """``fetch_image``: read the image from the registry when this host's store does not
        hold it (default: with the registry checks, or in a cluster)."""
        from alicorn.cluster.files import shared

        self.settings = settings
        self.keys = keyring_for(settings)
        self.log = TransparencyLog(settings.database_url, self.keys)
        self.check_registry = registry
        self.witnessed = witnessed or []
        self.fetch_image = (registry or shared(settings)) if fetch_image is None \
            else fetch_image

    def verify(self, row: BuildRow) -> Report:
        from alicorn.cluster.files import materialize

        report = Report(row.id, row.digest)
        try:
            files = BuildFiles(materialize(self.settings, row.id))
        except Error as e:
            report.add("shared store", False, e.diagnostics())
            return report
        steps = [("record", self._record), ("transparency log", self._log),
                 ("database", self._database), ("provenance", self._provenance),
                 ("build log", self._byproducts), ("checks", self._checks),
                 ("image", self._image),
                 ("registry", self._registry)]
        state: dict[str, Any] = {}
        for link, step in steps:
            try:
                step(row, files, report, state)
            except _Broken:
                continue
            except Error as e:
                report.add(link, False, e.diagnostics())
        return report

    # -- the record and the transparency log -----------------------------------------------
    def _record(self, row: BuildRow, files: BuildFiles, report: Report,
                state: dict[str, Any]) -> None:
        data = files.read(RECORD)
        digest = str(Digest.of_bytes(data))
        if not report.add("record", digest == row.record_digest,
                          f"record.json has digest {digest}" if digest == row.record_digest else
                          f"record.json hashes to {digest}, but the build was sealed with "
                          f"{row.record_digest}: the record was altered"):
            raise _Broken
        state["record_bytes"] = data
        state["record"] = json.loads(data)

    def _log(self, row: BuildRow, files: BuildFiles, report: Report,
             state: dict[str, Any]) -> None:
        if "record" not in state or row.record_index is None:
            report.add("transparency log", False, "the build has no sealed log entry")
            raise _Broken
        head = self.log.latest_head()
        if head is None:
            report.add("transparency log", False, "the log has no signed tree head")
            raise _Broken
        verify_head(head, self.keys.find(head.key_id))
        # The head signed when the record was sealed, and every head a witness kept, must be
        # prefixes of the latest: the record was logged then, and nothing was rewritten since.
        # (Every head of the log at once is `alicorn log check`'s audit, not one image's.)
        sealed = self.log.head_covering(row.record_index)
        for old in [*([sealed] if sealed else []), *self.witnessed]:
            verify_head(old, self.keys.find(old.key_id))
            if old.tree_size <= head.tree_size:
                verify_consistency(old, head, self.log.consistency_proof(old.tree_size,
                                                                          head.tree_size))
        proof = self.log.inclusion_proof(row.record_index, head.tree_size)
        verify_inclusion(state["record_bytes"], row.record_index, proof, head)
        detail = (f"record is entry {row.record_index} of the tree of size {head.tree_size} "
                  f"(root {head.root_hash[:16]}…, signed by key {head.key_id[:16]}…)")
        record = state["record"]
        if row.inputs_index is not None:
            logged = self.log.entry(row.inputs_index)
            verify_inclusion(logged, row.inputs_index,
                             self.log.inclusion_proof(row.inputs_index, head.tree_size), head)
            if logged != inputs_entry_of(record):
                report.add("transparency log", False,
                           f"the inputs logged before the build (entry {row.inputs_index}) "
                           "differ from the sealed record's")
                raise _Broken
            detail += f"; inputs logged first as entry {row.inputs_index}"
        report.add("transparency log", True, detail)

    def _database(self, row: BuildRow, files: BuildFiles, report: Report,
                  state: dict[str, Any]) -> None:
        if "record" not in state:
            raise _Broken
        r = state["record"]
        db_packages = sorted((p.type, p.name, p.version, p.purl) for p in row.packages)
        rec_packages = sorted((p["type"], p["name"], p["version"], p["purl"])
                              for p in r["packages"])
        pairs = [
            ("argv", list(row.argv), r["argv"]),
            ("state", row.state, r["state"]),
            ("image digest", row.digest, r["image"]["digest"]),
            ("image reference", row.image_ref, r["image"]["reference"]),
            ("recipe digest", row.recipe_digest, r["recipe"]["digest"]),
            ("recipe content", row.recipe_content, r["recipe"]["content"]),
            ("source commit", row.source_commit, r["source"]["commit"]),
            ("source URL", row.source_url, r["source"]["url"]),
            ("inputs", row.inputs, r["inputs"]),
            ("packages", db_packages, rec_packages),
            ("build log digest", row.log_digest, r["logs"].get(BUILD_LOG)),
            ("trigger", row.trigger, r.get("trigger")),
            ("checks", row.checks, {k: v for k, v in r["checks"].items() if k != "files"}
             if r.get("checks") else None),
        ]
        for name, db, sealed in pairs:
            if db != sealed:
                report.add("database", False, f"the database's {name} differs from the sealed "
                                              "record's: the database was altered")
                raise _Broken
        content = r["recipe"]["content"]
        if content is not None and str(Digest.of_bytes(content.encode())) != \
                r["recipe"]["digest"]:
            report.add("recipe", False, "the recorded recipe does not hash to its digest")
            raise _Broken
        report.add("database", True, "the database row matches the sealed record")

    # -- provenance and byproducts ---------------------------------------------------------
    def _provenance(self, row: BuildRow, files: BuildFiles, report: Report,
                    state: dict[str, Any]) -> None:
        r = state.get("record")
        if r is None or r["state"] != "done":
            raise _Broken
        data = files.read(PROVENANCE)
        envelope = json.loads(data)
        digest = str(Digest.of_bytes(canonical_json(envelope)))
        if digest != r["provenance"]["digest"] or data != canonical_json(envelope):
            report.add("provenance", False, f"{PROVENANCE} hashes to {digest}, not to the "
                                            f"sealed {r['provenance']['digest']}")
            raise _Broken
        verified = dsse.verify(envelope, self.keys)
        stmt = verified.json()
        subject = provenance.subject_digest(stmt)
        if subject != row.digest:
            report.add("provenance", False, f"the provenance is about {subject}, "
                                            f"not {row.digest}")
            raise _Broken
        params = stmt["predicate"]["buildDefinition"]["externalParameters"]
        if params["argv"] != r["argv"] or params["recipe"]["digest"] != r["recipe"]["digest"] \
                or params["source"].get("commit") != r["source"]["commit"]:
            report.add("provenance", False, "the provenance's argv, recipe or commit differ "
                                            "from the sealed record's")
            raise _Broken
        if params.get("trigger") != r.get("trigger"):
            report.add("provenance", False, "the provenance's trigger (the advisories and the "
                                            "image it replaces) differs from the sealed "
                                            "record's")
            raise _Broken
        state["byproducts"] = provenance.byproduct_digests(stmt)
        report.add("provenance", True, f"signed by key {verified.key_id[:16]}…, names "
                                       f"{subject}")

    def _byproducts(self, row: BuildRow, files: BuildFiles, report: Report,
                    state: dict[str, Any]) -> None:
        named = state.get("byproducts")
        r = state.get("record")
        if r is None:
            raise _Broken
        # The logs are sealed for every build, failed ones too.
        for name in (BUILD_LOG, CHECKS_LOG, PUBLISH_LOG):
            want = r["logs"].get(name)
            if want is None:
                continue
            got = str(files.digest(name))
            if got != want:
                report.add("build log", False, f"{name} hashes to {got}, but the sealed "
                                               f"record names {want}: the log was altered")
                raise _Broken
        if named is None:
            report.add("build log", True, "the logs match the sealed record")
            return
        if named.get(BUILD_LOG) != r["logs"].get(BUILD_LOG):
            report.add("build log", False, "the provenance names another build log")
            raise _Broken
        report.add("build log", True, f"{BUILD_LOG} {named[BUILD_LOG]} as the provenance names")
        expected = sorted((p["name"], p["version"], p["type"], p["purl"]) for p in r["packages"])
        for name, parse in ((SPDX, sbom.packages_from_spdx),
                            (CYCLONEDX, sbom.packages_from_cyclonedx)):
            data = files.read(name)
            got = str(Digest.of_bytes(data))
            if got != named.get(name):
                report.add("SBOM", False, f"{name} hashes to {got}, but the provenance names "
                                          f"{named.get(name)}: the SBOM was altered")
                raise _Broken
            if sorted(tuple(x) for x in parse(data)) != expected:
                report.add("SBOM", False, f"{name} lists other packages than the record")
                raise _Broken
        report.add("SBOM", True, f"SPDX and CycloneDX list the {len(expected)} recorded packages")

    # -- the checks before publishing ------------------------------------------------------
    def _checks(self, row: BuildRow, files: BuildFiles, report: Report,
                state: dict[str, Any]) -> None:
        """The tests' and the gate's results and reports are the sealed ones, and their
        signed statements are about this image and say what the results say."""
        r = state.get("record")
        sealed = (r.get("checks") or {}).get("files") if r is not None else None
        if not sealed:
            raise _Broken  # a build from before the checks, or one that never reached them
        for name, want in sorted(sealed.items()):
            got = str(files.digest(name))
            if got != want:
                report.add("checks", False, f"{name} hashes to {got}, but the sealed record "
                                            f"names {want}: the results were altered")
                raise _Broken
        for name, result in ((TESTS_ATTESTATION, TESTS), (GATE_ATTESTATION, GATE)):
            if name not in sealed:
                continue
            verified = dsse.verify(json.loads(files.read(name)), self.keys)
            stmt = verified.json()
            if provenance.subject_digest(stmt) != row.digest or \
                    canonical_json(stmt.get("predicate")) != \
                    canonical_json(json.loads(files.read(result))):
                report.add("checks", False, f"{name} is not a statement of {result} about "
                                            f"{row.digest}")
                raise _Broken
        c = r["checks"] if r is not None else {}
        report.add("checks", True, f"tests {c.get('tests')}, gate {c.get('gate')}"
                                   + (f", fixed {c['fixed']}" if c.get("fixed") else "")
                                   + f": {len(sealed)} result files as sealed, statements "
                                     "signed")
        state["check_files"] = sealed

    # -- the image -------------------------------------------------------------------------
    def _image(self, row: BuildRow, files: BuildFiles, report: Report,
               state: dict[str, Any]) -> None:
        r = state.get("record")
        if r is None or r["state"] != "done" or row.digest is None:
            raise _Broken
        digest = Digest(row.digest)
        layout = self.settings.image_dir(digest.hex)
        blobs = layout / "blobs" / "sha256"
        if not (blobs / digest.hex).is_file() and row.image_ref and self.fetch_image:
            with tempfile.TemporaryDirectory(prefix="alicorn-verify-") as tmp:
                self._image_blobs(row.image_ref, digest, Path(tmp))
                self._image_in(Path(tmp), digest, r, report,
                               where=" (from the registry: its builder's store holds it)")
            return
        self._image_in(blobs, digest, r, report)

    def _image_blobs(self, image_ref: str, digest: Digest, blobs: Path) -> None:
        """The image's manifest, config and layers from the registry into ``blobs``."""
        from alicorn.registry.client import RegistryClient

        addr, _, rest = image_ref.partition("/")
        name = rest.split("@", 1)[0].rsplit(":", 1)[0]
        client = RegistryClient(addr)
        got = client.get_manifest(name, str(digest))
        if got is None:
            raise Error(f"the image {digest} is not on this host and {addr} does not hold "
                        f"{name}@{digest}")
        (blobs / digest.hex).write_bytes(got[0])
        manifest = json.loads(got[0])
        for each in [manifest["config"], *manifest["layers"]]:
            d = Digest(each["digest"])
            (blobs / d.hex).write_bytes(client.get_blob(name, d, max_bytes=1 << 34))

    def _image_in(self, blobs: Path, digest: Digest, r: dict[str, Any], report: Report, *,
                  where: str = "") -> None:
        manifest_bytes = _blob(blobs, digest, "manifest")
        manifest = json.loads(manifest_bytes)
        config_digest = Digest(manifest["config"]["digest"])
        config = json.loads(_blob(blobs, config_digest, "config"))
        outputs = r["image"]["outputs"] or {}
        if str(config_digest) != outputs.get("config"):
            report.add("image", False, f"the image's config {config_digest} is not the "
                                       f"recorded {outputs.get('config')}")
            raise _Broken
        diff_ids = config["rootfs"]["diff_ids"]
        for i, layer in enumerate(manifest["layers"]):
            path = blobs / Digest(layer["digest"]).hex
            try:
                got, diff = _layer_digests(path)
            except Error as e:
                report.add("image", False, f"layer {i} ({layer['digest']}): {e.message}: the "
                                           "layer was altered or is damaged")
                raise _Broken from e
            if got != layer["digest"]:
                report.add("image", False, f"layer {i} ({layer['digest']}) hashes to {got}: "
                                           "the layer was altered")
                raise _Broken
            if diff != diff_ids[i]:
                report.add("image", False, f"layer {i} unpacks to {diff}, not to the diff_id "
                                           f"{diff_ids[i]} its config names")
                raise _Broken
        report.add("image", True, f"manifest, config and {len(manifest['layers'])} layer(s) "
                                  f"hash to their digests{where}")

    def _registry(self, row: BuildRow, files: BuildFiles, report: Report,
                  state: dict[str, Any]) -> None:
        r = state.get("record")
        if not self.check_registry or r is None or not row.image_ref or row.digest is None:
            raise _Broken
        from alicorn.chain import attach
        from alicorn.chain.sigstore import verify_image_signature
        from alicorn.registry.client import RegistryClient

        addr, _, rest = row.image_ref.partition("/")
        name = rest.split("@", 1)[0]
        client = RegistryClient(addr)
        digest = Digest(row.digest)
        got = client.get_manifest(name, str(digest))
        if got is None:
            report.add("registry", False, f"{addr} does not hold {name}@{digest}")
            raise _Broken
        key_id = verify_image_signature(client, name, digest, self.keys.public_keys())
        att = attach.fetch_attachment(client, name, digest, attach.ATT)
        if not any(layer.data == files.read(PROVENANCE) for layer in att):
            report.add("registry", False, "the attestation in the registry is not the "
                                          "sealed provenance")
            raise _Broken
        boms = {layer.data for layer in attach.fetch_attachment(client, name, digest,
                                                                 attach.SBOM)}
        if boms != {files.read(SPDX), files.read(CYCLONEDX)}:
            report.add("registry", False, "the SBOMs in the registry are not the sealed ones")
            raise _Broken
        sealed = state.get("check_files") or {}
        for each in (TESTS_ATTESTATION, GATE_ATTESTATION):
            if each in sealed and not any(layer.data == files.read(each) for layer in att):
                report.add("registry", False, f"the registry's attestations lack the sealed "
                                              f"{each}")
                raise _Broken
        if GATE in sealed:
            gate = attach.fetch_attachment(client, name, digest, attach.GATE)
            if not any(layer.data == files.read(GATE) for layer in gate):
                report.add("registry", False, "the registry's .gate attachment lacks the "
                                              f"sealed {GATE}")
                raise _Broken
        from alicorn.chain.gpgsign import gpg_keyring_for, verify_manifest_signatures

        with self._lookaside(files, addr, name, digest) as lookaside:
            gpg = verify_manifest_signatures(
                got[0], row.image_ref, lookaside_dir=lookaside,
                pubring=gpg_keyring_for(self.settings).verifying_pubring())
        report.add("registry", True, f"{addr}/{name}@{digest}: sigstore signature by key "
                                     f"{key_id[:16]}…, GPG signature by {gpg.fingerprint[-16:]}, "
                                     "attestations, SBOMs"
                                     + (" and gate results" if GATE in sealed else "")
                                     + " match")


    @contextlib.contextmanager
    def _lookaside(self, files: BuildFiles, addr: str, name: str,
                   digest: Digest) -> Iterator[Path]:
        """This host's lookaside store for ``addr``; when it lacks the image's signatures
        and the build's files hold them (a build of another host), a store made of those."""
        from alicorn.chain.gpgsign import default_lookaside_dir, signature_dir
        from alicorn.cluster.files import LOOKASIDE

        here = default_lookaside_dir(self.settings.home, addr)
        theirs = files.path(LOOKASIDE)
        if (signature_dir(here, name, digest) / "signature-1").is_file() or \
                not (theirs / "signature-1").is_file():
            yield here
            return
        with tempfile.TemporaryDirectory(prefix="alicorn-lookaside-") as tmp:
            directory = signature_dir(Path(tmp), name, digest)
            directory.mkdir(parents=True)
            for sig in theirs.glob("signature-*"):
                shutil.copyfile(sig, directory / sig.name)
            yield Path(tmp)


def _blob(blobs: Path, digest: Digest, what: str) -> bytes:
    try:
        data = (blobs / digest.hex).read_bytes()
    except OSError as e:
        raise Error(f"the image's {what} blob {digest} is missing from the store") from e
    if Digest.of_bytes(data) != digest:
        raise Error(f"the image's {what} blob hashes to {Digest.of_bytes(data)}, not "
                    f"{digest}: it was altered")
    return data


def _layer_digests(path: Path) -> tuple[str, str]:
    """The sha256 of a gzip layer blob and of what it unpacks to, in one pass."""
    blob = hashlib.sha256()
    tar = hashlib.sha256()
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                blob.update(chunk)
                tar.update(inflate.decompress(chunk))
        tar.update(inflate.flush())
    except (OSError, zlib.error, gzip.BadGzipFile) as e:
        raise Error(f"it cannot be read: {e}") from e
    return "sha256:" + blob.hexdigest(), "sha256:" + tar.hexdigest()
