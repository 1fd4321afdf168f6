"""One build, start to end, as the worker runs it.

source → recipe → inputs (logged) → (cache | compose → artifacts → files → layer → image)
→ fixed check → SBOMs → provenance (signed) → tests → gate → publish (image by digest,
attestations, SBOMs, gate reports, signatures, then the tag) → sealed record

Every step writes to the build's log and reports to its monitor.  A failure at any step records
the build as failed with the reason; the image is published only at the end, so a failed build
never leaves a half-published image behind.  The build log ends before the provenance is signed
(the provenance names its digest); what the checks (alicorn.build.checks) do goes to
``checks.log``, what publishing does to ``publish.log``.  A build its checks fail keeps its
candidate's digest (the image stays in the local store, unpublished).  Every build, failed
ones too, ends with a sealed record in the transparency log.

A build can be cancelled while it runs (``alicorn cancel``, the API): a thread polls the
build's row for a cancel request; on one it stops the command running now (proc.Stopper:
SIGTERM, then SIGKILL) and the build stops at its next step boundary, or as soon as the stopped
command returns, and ends failed ("cancelled by WHO") with its logs closed and its record sealed
like any failed build.  Once publishing has begun a cancel no longer stops the build: it is
recorded ("cancel requested by WHO during publishing: finishing" in publish.log) and the build
finishes, so that nothing is left half-published.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicorn import __version__
from alicorn.build import checks
from alicorn.build.artifacts import install_artifacts
from alicorn.build.base import BaseImage, link_blobs, merge_packages, resolve_base, unpack_base
from alicorn.build.files import add_files
from alicorn.chain import attach, dsse
from alicorn.chain.record import (
    BUILD_LOG,
    CHECKS_LOG,
    CYCLONEDX,
    GATE,
    GATE_ATTESTATION,
    PUBLISH_LOG,
    SPDX,
    TESTS_ATTESTATION,
    BuildFiles,
)
from alicorn.chain.seal import Chain, envelope_digest, package_json, statement_for
from alicorn.compose import BuildContext, Package, composer_for
from alicorn.config import Settings
from alicorn.digest import Digest, canonical_json
from alicorn.errors import Error
from alicorn.fs import remove_tree
from alicorn.image.layer import PathState, snapshot, write_diff_layer, write_layer
from alicorn.image.oci import new_layout, read_manifest, store_layout, write_image
from alicorn.monitor import FileMonitor
from alicorn.proc import BuildLog, Cancelled, Stopper
from alicorn.recipe import Recipe, load_recipe, parse_recipe
from alicorn.registry.client import RegistryClient
from alicorn.registry.local import Registry
from alicorn.source import git
from alicorn.store.builds import DONE, FAILED, BuildStore
from alicorn.store.models import BuildRow

BUILDER_ID = f"alicorn/{__version__}"
# How often the worker looks for a cancel request of the build it runs, in seconds.
CANCEL_POLL = 0.5

__all__ = ["BUILDER_ID", "Build", "Cancelled", "Outcome"]


@dataclass
class Outcome:
    state: str
    digest: str | None = None
    image: str | None = None
    error: str | None = None


def _note(log: BuildLog, line: str) -> None:
    """Write to ``log`` from another thread than the build's, unless the build closed it."""
    with suppress(ValueError):  # closed meanwhile
        log.write(line)


class Build:
    """The work of one claimed build."""

    def __init__(self, settings: Settings, store: BuildStore, row: BuildRow):
        self.settings = settings
        self.store = store
        self.row = row
        self.dir = settings.build_dir(row.id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.work = settings.work_dir / row.id
        self.files = BuildFiles(self.dir)
        self.log = BuildLog(self.dir / BUILD_LOG)
        self.chain = Chain(settings)
        # Cancelling: the commands of this build (stopped on a request), who cancelled it,
        # and whether a request can still stop it (not once publishing has begun).
        self.stopper = Stopper()
        self._cancel_lock = threading.Lock()
        self._cancelled: tuple[str, str] | None = None   # (by, at)
        self._cancel_open = True
        self.monitor = FileMonitor(self.dir / "progress.jsonl",
                                   before_step=lambda _name: self.stopper.check())
        self.options: dict[str, Any] = dict(row.options or {})

    # -- the steps -------------------------------------------------------------------------
    def _load_recipe(self) -> tuple[Recipe, dict[str, Any], int | None]:
        row = self.row
        self.monitor.step("source")
        if row.source_kind == "git":
            assert row.source_url and row.source_ref
            self.log.write(f"fetching {row.source_url} at {row.source_ref}")
            checkout = git.fetch(row.source_url, row.source_ref, self.work / "src", log=self.log)
            self.store.update(row.id, source_commit=checkout.commit)
            self.log.write(f"resolved {row.source_ref} to commit {checkout.commit}")
            self.monitor.message(f"commit {checkout.commit}")
            self.monitor.step("recipe")
            recipe_file = (checkout.path / row.recipe_path).resolve()
            if checkout.path.resolve() not in recipe_file.parents:
                raise Error(f"recipe path {row.recipe_path!r} leaves the repository")
            recipe = load_recipe(recipe_file,
                                 display_name=f"{row.recipe_path}@{checkout.commit[:12]}")
            source = {"url": row.source_url, "ref": row.source_ref, "commit": checkout.commit}
            return recipe, source, checkout.commit_time
        self.monitor.step("recipe")
        assert row.recipe_content is not None
        path = Path(row.recipe_path)
        recipe = parse_recipe(row.recipe_content, file=str(path), base_dir=path.parent)
        return recipe, {"url": None, "ref": None, "commit": None}, None

    def _inputs(self, recipe: Recipe, ctx: BuildContext, source: dict[str, Any],
                commit_time: int | None) -> tuple[dict[str, Any], Digest, int]:
        self.monitor.step("inputs")
        composer = composer_for(recipe, ctx)
        repos = composer.repo_states()
        files = {}
        for spec in recipe.files:
            if spec.source is not None:
                files[spec.path] = str(Digest.of_file(recipe.resolve(spec.source)))
        # SOURCE_DATE_EPOCH: given by the submitter, else the commit's time, else 0, so
        # that it is always a function of the inputs.
        epoch = self.options.get("source_date_epoch")
        if epoch is None:
            epoch = commit_time if commit_time is not None else 0
        inputs = {
            "builder": BUILDER_ID,
            "recipe": {"path": self.row.recipe_path, "digest": str(recipe.digest)},
            "source": source,
            "repositories": [{"name": r.name, "url": r.url, "metadata": r.metadata_digest}
                             for r in repos],
            "artifacts": [{"url": a.url, "sha256": a.sha256} for a in recipe.artifacts],
            "files": files,
            "source_date_epoch": epoch,
            "compression_level": self.options.get("compression_level", 1),
        }
        # A layered recipe: its base (the rebuild service pins it by digest) is an input.
        self._base: BaseImage | None = None
        if recipe.base is not None:
            self._base = resolve_base(recipe, self.store, self.settings,
                                      pinned=self.options.get("base_digest"))
            inputs["base"] = self._base.inputs()
            self.log.write(f"base {self._base.name} {self._base.digest} "
                           f"(build {self._base.build_id})")
        # The key leaves out what does not change the image: where the recipe came from
        # (a commit and a file with equal content build the same image, given the same epoch),
        # and which build made the base (its digest is the base).
        keyed = {k: v for k, v in inputs.items() if k != "source"}
        keyed["recipe"] = {"digest": str(recipe.digest)}
        if "base" in inputs:
            keyed["base"] = {"name": inputs["base"]["name"], "digest": inputs["base"]["digest"]}
        key = Digest.of_json(keyed)
        self.log.write(f"input key {key}")
        return inputs, key, int(epoch)

    def _compose(self, recipe: Recipe, ctx: BuildContext, epoch: int) -> tuple[Path, list[Package]]:
        rootfs = self.work / "rootfs"
        composer = composer_for(recipe, ctx)
        self.monitor.step("compose")
        base = self._base
        self._snapshot: dict[str, PathState] | None = None
        if base is not None:
            # A layered image: the base's root, then this recipe's packages and files on it;
            # the snapshot is what the image's own layer is the difference from.
            self.log.write(f"unpacking the base {base.name} {base.digest} "
                           f"({len(base.layers)} layers)")
            unpack_base(base, rootfs)
            self._snapshot = snapshot(rootfs)
            if recipe.packages:
                composer.compose(rootfs)
            else:
                self.log.write("no packages to add: no package manager runs")
        else:
            composer.compose(rootfs)
        self.monitor.step("artifacts", total=len(recipe.artifacts))
        extra = install_artifacts(recipe, rootfs, self.work / "artifacts")
        self.monitor.step("files", total=len(recipe.files))
        add_files(recipe, rootfs)
        packages = composer.packages(rootfs) + extra
        if base is not None:
            packages = merge_packages(base, packages)
        self.log.write(f"{len(packages)} packages in the image")
        return rootfs, packages

    def _image(self, recipe: Recipe, rootfs: Path,
               epoch: int) -> tuple[Digest, Path, dict[str, Any]]:
        self.monitor.step("layer")
        layout = self.work / "oci"
        blobs = new_layout(layout)
        tmp = blobs / "layer.tmp"
        level = int(self.options.get("compression_level", 1))
        base = self._base
        with open(tmp, "wb") as f:
            if base is not None and self._snapshot is not None:
                layer = write_diff_layer(rootfs, self._snapshot, f, source_date_epoch=epoch,
                                         level=level)
            else:
                layer = write_layer(rootfs, f, source_date_epoch=epoch, level=level)
        os.replace(tmp, blobs / layer.digest.hex)
        self.log.write(f"layer {layer.digest} ({layer.size} bytes, diff_id {layer.diff_id})")
        self.monitor.step("image")
        if base is not None:
            link_blobs(base, layout)
            info = write_image(layout, recipe, [*base.layers, layer], epoch,
                               base_config=base.config, base_digest=base.digest)
        else:
            info = write_image(layout, recipe, [layer], epoch)
        stored = store_layout(layout, self.settings.images_dir, info.digest)
        outputs = {
            "manifest": str(info.digest), "config": str(info.config_digest),
            "layers": [{"digest": str(x.digest), "diff_id": str(x.diff_id), "size": x.size}
                       for x in info.layers],
        }
        self.log.write(f"image {info.digest}")
        return info.digest, stored, outputs

    # -- the whole build -------------------------------------------------------------------
    def run(self) -> Outcome:
        started = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o700)
        self.log.write(f"build {self.row.id} on {socket.gethostname()} by {BUILDER_ID}")
        self.log.write(f"argv {self.row.argv}")
        self._packages: list[Package] = []
        self._extra: dict[str, Any] = {}
        self._record: dict[str, Any] = {}
        self._checks: checks.CheckState | None = None
        self._candidate: str | None = None
        watching = threading.Event()
        watcher = threading.Thread(target=self._watch_cancel, args=(watching,), daemon=True,
                                   name=f"cancel-watch-{self.row.id}")
        watcher.start()
        try:
            trigger = self.options.get("trigger", self.row.trigger)
            if trigger is not None and not isinstance(trigger, dict):
                raise Error(f"the build's trigger must be an object, not {trigger!r}")
            self._extra["trigger"] = trigger
            with self.stopper.active():
                outcome = self._run()
        except checks.ChecksFailed as e:
            # The candidate stays in the local store, unpublished, under its digest, so that
            # whoever asked for the build can name what failed.
            outcome = Outcome(FAILED, digest=self._candidate, error=e.diagnostics())
        except Error as e:
            outcome = Outcome(FAILED, error=e.diagnostics())
        except KeyboardInterrupt:
            outcome = Outcome(FAILED, error="the worker was interrupted")
        except OSError as e:
            msg = f"{e.strerror or e} ({e.filename})" if e.filename else str(e)
            if e.errno == 28:
                msg = f"the disk is full: {msg}"
            outcome = Outcome(FAILED, error=msg)
        except Exception:
            self.log.write(traceback.format_exc())
            outcome = Outcome(FAILED, error="internal error in the worker; see the build log")
        # No request stops the build from here on; the watcher may still be stopping a
        # command: its log lines go before the logs close.
        with self._cancel_lock:
            self._cancel_open = False
            cancelled = self._cancelled
        watching.set()
        watcher.join(timeout=self.stopper.grace + 5)
        if cancelled is not None:
            # Whatever the stopped step reported (a killed tool, an interrupted fetch), the
            # reason the build ended is the cancel.
            by, at = cancelled
            outcome = Outcome(FAILED, error=f"cancelled by {by}")
            self._record["cancel"] = {"requested_by": by, "requested_at": at,
                                      "stopped": True}
        if outcome.state != DONE:
            # Free the space first: a build that failed on a full disk must still be recorded.
            remove_tree(self.work)
        log = self.log if not self.log.closed else \
            self._publish_log or self._checks_log or self.checks_log
        if outcome.error:
            log.write(f"FAILED: {outcome.error}")
        log.write(f"{outcome.state} in {time.monotonic() - started:.1f} s")
        logs = {}
        for name, each in ((BUILD_LOG, self.log), (CHECKS_LOG, self._checks_log),
                           (PUBLISH_LOG, self._publish_log)):
            if each is not None:
                each.close()
                os.chmod(each.path, 0o444)
                logs[name] = str(Digest.of_file(each.path))
        self._seal(outcome, logs)
        self.monitor.finish(outcome.state, digest=outcome.digest, image=outcome.image,
                            error=outcome.error)
        os.chmod(self.monitor.path, 0o444)
        # After a success the tree goes after the record, so nobody waits for the deletion.
        # (A worker that dies before this leaves it to collect_garbage.)
        remove_tree(self.work)
        return outcome

    _publish_log: BuildLog | None = None
    _checks_log: BuildLog | None = None
    # Whether the build is still this worker's (the cluster sets it: its heartbeat); asked
    # before the tag moves.
    still_ours: Callable[[], bool] | None = None

    # -- cancelling ------------------------------------------------------------------------
    def _watch_cancel(self, watching: threading.Event) -> None:
        """Poll the build's row for a cancel request until ``watching`` is set; on one, stop
        the build (or, once publishing has begun, only record it)."""
        while not watching.wait(CANCEL_POLL):
            try:
                request = self.store.cancel_request(self.row.id)
            except Exception:  # a busy or vanished database (any driver's error): ask again
                continue
            if request is None:
                continue
            at, by = request[0].isoformat() + "Z", request[1]
            with self._cancel_lock:
                if not self._cancel_open:
                    self._record["cancel"] = {"requested_by": by, "requested_at": at,
                                              "stopped": False}
                    if self._publish_log is not None:
                        _note(self._publish_log,
                              f"cancel requested by {by} during publishing: finishing")
                    return
                self._cancelled = (by, at)
            # The build log, or the checks log once the build log has ended.
            log = self._checks_log if self.log.closed and self._checks_log else self.log
            _note(log, f"cancel requested by {by} at {at}: stopping the build")
            self.monitor.message(f"cancel requested by {by}: stopping")
            self.stopper.stop(f"cancelled by {by}", log=None if log.closed else log)
            return

    def _begin_publishing(self) -> None:
        """From here a cancel no longer stops the build (nothing may be half-published);
        raises Cancelled when one came before."""
        log = self.publish_log  # made here: the watcher writes to it and must not make it
        with self._cancel_lock:
            if self._cancelled is not None:
                raise Cancelled(f"cancelled by {self._cancelled[0]}")
            self._cancel_open = False
        log.write("publishing: a cancel requested from now on is recorded, and the build "
                  "finishes")

    @property
    def checks_log(self) -> BuildLog:
        if self._checks_log is None:
            self._checks_log = BuildLog(self.dir / CHECKS_LOG)
        return self._checks_log

    @property
    def publish_log(self) -> BuildLog:
        if self._publish_log is None:
            self._publish_log = BuildLog(self.dir / PUBLISH_LOG)
        return self._publish_log

    def _seal(self, outcome: Outcome, logs: dict[str, str]) -> None:
        """Write the sealed record, append it to the log, and finish the database row."""
        row = self.store.get(self.row.id)
        if "recipe_content" not in self._extra and row.recipe_content is not None:
            # A recipe file that did not parse: the text submitted is still what was built
            # from, and the record says so (as the database row does).
            self._extra.update(recipe_content=row.recipe_content, recipe_digest=str(
                Digest.of_bytes(row.recipe_content.encode())))
        record = {
            "build_id": row.id, "state": outcome.state, "error": outcome.error,
            "argv": row.argv, "submitter": row.submitter,
            "created": row.created_at.isoformat() + "Z",
            "started": row.started_at.isoformat() + "Z" if row.started_at else None,
            "builder": BUILDER_ID, "worker": row.worker,
            "source": {"kind": row.source_kind, "url": row.source_url, "ref": row.source_ref,
                       "commit": row.source_commit},
            "recipe": {"path": row.recipe_path, "digest": self._extra.get("recipe_digest"),
                       "content": self._extra.get("recipe_content")},
            "inputs": row.inputs, "input_key": row.input_key, "inputs_index": row.inputs_index,
            "packages": [package_json(p) for p in self._packages],
            "image": {"digest": outcome.digest, "reference": outcome.image,
                      "outputs": self._extra.get("outputs")},
            "cached_from": self._extra.get("cached_from"),
            "logs": logs,
            "trigger": self._extra.get("trigger"),
            "checks": self._checks.record() if self._checks is not None else None,
            **self._record,
        }
        if self._checks is not None:
            self._extra["checks"] = self._checks.row()
        subject = outcome.digest or row.id
        record_digest, index = self.chain.seal(self.files, record, subject)
        self.store.finish(self.row.id, outcome.state, packages=self._packages,
                          log_digest=logs.get(BUILD_LOG), error=outcome.error,
                          digest=outcome.digest, image_ref=outcome.image,
                          published=outcome.image is not None, record_digest=record_digest,
                          record_index=index, **self._extra)

    def _run(self) -> Outcome:
        recipe, source, commit_time = self._load_recipe()
        self._extra.update(recipe_name=recipe.name, recipe_digest=str(recipe.digest),
                           recipe_content=recipe.text)
        cache = self.settings.cache_dir / recipe.distribution
        ctx = BuildContext(log=self.log, monitor=self.monitor, workdir=self.work,
                           cache_dir=cache, source_date_epoch=0)
        inputs, key, epoch = self._inputs(recipe, ctx, source, commit_time)
        ctx.source_date_epoch = epoch
        recipe_ref = {"path": self.row.recipe_path, "digest": str(recipe.digest)}
        inputs_index = self.chain.log_inputs(self.row.id, list(self.row.argv), source,
                                             recipe_ref, inputs)
        self.log.write(f"inputs recorded as entry {inputs_index} of the transparency log")
        self.store.update(self.row.id, input_key=str(key), inputs=inputs,
                          inputs_index=inputs_index)
        if self._base is not None:
            self._extra["base_digest"] = str(self._base.digest)
            self.store.update(self.row.id, base_digest=str(self._base.digest))

        cached = None if self.options.get("no_cache") else self.store.find_cached(str(key),
                                                                                 self.row.id)
        if cached is not None and cached.digest and \
                self.settings.image_dir(Digest(cached.digest).hex).is_dir():
            self.log.write(f"inputs are unchanged since build {cached.id}: reusing image "
                           f"{cached.digest}")
            self.monitor.message(f"unchanged inputs: image of build {cached.id}")
            digest = Digest(cached.digest)
            layout = self.settings.image_dir(digest.hex)
            read_manifest(layout)  # the stored image must still be whole
            self._packages = [Package(type=p.type, name=p.name, version=p.version, arch=p.arch,
                                      source=p.source, checksum=p.checksum, purl=p.purl)
                              for p in cached.packages]
            self._extra.update(outputs=cached.outputs, cached_from=cached.id)
        else:
            rootfs, self._packages = self._compose(recipe, ctx, epoch)
            digest, layout, outputs = self._image(recipe, rootfs, epoch)
            self._extra["outputs"] = outputs

        self._check_fixed(digest)

        # The provenance: SBOMs and the build log are its byproducts, so the log ends here.
        self.monitor.step("provenance")
        image_name = f"{self.settings.registry}/{recipe.name}"
        byproducts = self.chain.write_sboms(self.files, image_name, digest, self._packages,
                                            epoch)
        self.log.write(f"SBOMs written: {byproducts}")
        self.log.write("the build log ends here; the provenance names its digest")
        self.log.close()
        os.chmod(self.log.path, 0o444)
        byproducts[BUILD_LOG] = str(Digest.of_file(self.log.path))
        row = self.store.get(self.row.id)
        stmt = statement_for(
            image_name=image_name, digest=digest, build_id=row.id, builder=BUILDER_ID,
            version=__version__, argv=list(row.argv), source=source, recipe=recipe_ref,
            inputs=inputs, key=str(key), packages=self._packages, byproducts=byproducts,
            started=row.started_at, finished=None, inputs_index=inputs_index,
            trigger=self._extra.get("trigger"))
        envelope = self.chain.sign_provenance(self.files, stmt)
        provenance_digest = envelope_digest(envelope)
        self._extra["provenance_digest"] = provenance_digest
        self._record.update(provenance={"digest": provenance_digest,
                                        "key_id": self.chain.key.key_id},
                            sboms={SPDX: byproducts[SPDX], CYCLONEDX: byproducts[CYCLONEDX]})

        self._run_checks(recipe, digest, layout, image_name)
        if self.options.get("no_push"):
            return Outcome(DONE, digest=str(digest))
        return self._publish(recipe, digest, layout, envelope)

    # -- the checks before publishing (alicorn.build.checks) -------------------------------
    def _check_fixed(self, digest: Digest) -> None:
        """A rebuild for advisories must hold their fixed versions, or it fails here."""
        self._candidate = str(digest)
        expected = self.options.get("expect_fixed")
        if not expected:
            return
        self.monitor.step("fixed")
        self._checks = checks.CheckState()
        reason = checks.check_fixed(self.settings.database_url, expected, self._packages,
                                    target=str(digest), log=self.log)
        self._checks.fixed = checks.FAILED if reason else checks.PASSED
        self._checks.fixed_detail = reason
        if reason:
            raise checks.ChecksFailed(reason)
        self.log.write(f"fixed: {', '.join(expected)} fixed in the image")

    def _run_checks(self, recipe: Recipe, digest: Digest, layout: Path, image_name: str) -> None:
        """The recipe's tests and the security gate on the candidate, both run and recorded
        (and attested) whatever the other says; fails the build unless both passed."""
        state = self._checks = self._checks or checks.CheckState()
        log = self.checks_log
        skip = bool(self.options.get("skip_checks"))
        self.monitor.step("tests")
        tests = checks.run_tests(recipe, layout, str(digest), self.files, state, skip=skip,
                                 log=log)
        self.monitor.step("gate")
        previous = checks.previous_build(self.store, recipe.name, self.row.id,
                                         self._extra.get("trigger"))
        gate = checks.run_gate(recipe, layout, str(digest), self._packages, previous,
                               self.settings.database_url, self.files, state, skip=skip,
                               log=log)
        for name, predicate_type, doc in (
                (TESTS_ATTESTATION, checks.TESTS_PREDICATE, tests),
                (GATE_ATTESTATION, checks.GATE_PREDICATE, gate)):
            envelope = dsse.sign(canonical_json(checks.statement(
                image_name, str(digest), predicate_type, doc)), self.chain.key)
            state.files[name] = str(self.files.write_sealed(name, canonical_json(envelope)))
        problems = []
        if state.tests == checks.FAILED:
            problems.append(checks.tests_failure(tests))
        if state.gate == checks.FAILED:
            why = (state.gate_summary or "").removeprefix("failed: ")
            problems.append(f"the gate failed: {why}")
        if problems:
            raise checks.ChecksFailed("; ".join(problems) + "; nothing was published")
        log.write(f"checks: tests {state.tests}, gate {state.gate}")

    def _publish(self, recipe: Recipe, digest: Digest, layout: Path,
                 envelope: dict[str, Any]) -> Outcome:
        """Push the image by digest, then its attestations, SBOMs, gate reports and signatures
        (cosign's tag scheme), and only then move the tag: a tag never names an image whose
        attachments are missing, and a failure on the way leaves the tag where it was."""
        from alicorn.chain.gpgsign import default_lookaside_dir, gpg_keyring_for, sign_manifest
        from alicorn.chain.sigstore import sign_image

        self._begin_publishing()
        self.monitor.step("publish")
        log = self.publish_log
        registry = Registry(self.settings)
        ref = registry.push(layout, recipe.name, recipe.tag, digest, log=log, move_tag=False)
        client = RegistryClient(self.settings.registry)
        # One attestation per build: a rebuild of the same image adds its own, and the
        # earlier builds' stay verifiable.  (The SBOMs of one image are the same bytes.)
        attestations = [(canonical_json(envelope), attach.MEDIA_DSSE,
                         {"predicateType": "https://slsa.dev/provenance/v1"})]
        for name, predicate_type in ((TESTS_ATTESTATION, checks.TESTS_PREDICATE),
                                     (GATE_ATTESTATION, checks.GATE_PREDICATE)):
            if self.files.path(name).exists():
                attestations.append((self.files.read(name), attach.MEDIA_DSSE,
                                     {"predicateType": predicate_type}))
        attach.append(client, recipe.name, digest, attach.ATT, attestations)
        attach.attach(client, recipe.name, digest, attach.SBOM, [
            (self.files.read(SPDX), attach.MEDIA_SPDX_JSON, {}),
            (self.files.read(CYCLONEDX), attach.MEDIA_CYCLONEDX_JSON, {})])
        if self._checks is not None and GATE in self._checks.files:
            reports = [(self.files.read(GATE), attach.MEDIA_GATE_JSON,
                        {attach.ANNOTATION_TITLE: GATE})]
            for name, path in checks.gate_reports(self.files, self._checks):
                media_type = attach.gate_media_type(name)
                if media_type is None:
                    log.write(f"{name} is not JSON, XML or HTML: kept in the build only")
                    continue
                reports.append((path.read_bytes(), media_type, {attach.ANNOTATION_TITLE: name}))
            attach.append(client, recipe.name, digest, attach.GATE, reports)
        signature = sign_image(client, recipe.name, recipe.tag, digest, self.chain.key,
                               tag_moved=False)
        # The signature podman on Debian checks: GPG simple signing in the lookaside store.
        gpg = sign_manifest((layout / "blobs" / "sha256" / digest.hex).read_bytes(),
                            signature.identity, keyring=gpg_keyring_for(self.settings),
                            lookaside_dir=default_lookaside_dir(self.settings.home,
                                                                self.settings.registry),
                            repo_name=recipe.name, manifest_digest=digest, log=log)
        # Last: the tag.  Until here whoever pulls recipe.name:recipe.tag gets the image it
        # replaces.  In the cluster, only while the build is still this worker's: one the
        # reaper took (its lease ran out) has a retry that publishes instead.
        if self.still_ours is not None and not self.still_ours():
            raise Error("the build was taken from this worker (its lease ran out) before its "
                        "tag moved: not publishing (its retry publishes)")
        registry.move_tag(layout, recipe.name, recipe.tag, digest, log=log)
        log.write(f"published {ref}; attestations, SBOMs, gate reports and signatures "
                  f"({signature.identity}: sigstore by key {signature.key_id[:16]}, GPG "
                  f"{gpg.name}) attached before the tag moved")
        return Outcome(DONE, digest=str(digest), image=ref)
