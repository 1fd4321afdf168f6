"""One build, start to end, as the worker runs it.

recipe source → recipe → inputs → (cache | compose → artifacts → files → layer → image) → publish

Every step writes to the build's log and reports to its monitor.  A failure at any step records
the build as failed with the reason; the image is published only as the very last step, so a
failed build never leaves a half-published image behind.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicorn import __version__
from alicorn.build.artifacts import install_artifacts
from alicorn.build.files import add_files
from alicorn.compose import BuildContext, Package, composer_for
from alicorn.config import Settings
from alicorn.digest import Digest
from alicorn.errors import Error
from alicorn.fs import remove_tree
from alicorn.image.layer import write_layer
from alicorn.image.oci import new_layout, read_manifest, store_layout, write_image
from alicorn.monitor import FileMonitor
from alicorn.proc import BuildLog
from alicorn.recipe import Recipe, load_recipe, parse_recipe
from alicorn.registry.local import Registry
from alicorn.source import git
from alicorn.store.builds import DONE, FAILED, BuildStore
from alicorn.store.models import BuildRow

BUILDER_ID = f"alicorn/{__version__}"
STEPS = ("source", "recipe", "inputs", "compose", "artifacts", "files", "layer", "image",
         "publish")


@dataclass
class Outcome:
    state: str
    digest: str | None = None
    image: str | None = None
    error: str | None = None


class Build:
    """The work of one claimed build."""

    def __init__(self, settings: Settings, store: BuildStore, row: BuildRow):
        self.settings = settings
        self.store = store
        self.row = row
        self.dir = settings.build_dir(row.id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.work = settings.work_dir / row.id
        self.log = BuildLog(self.dir / "build.log")
        self.monitor = FileMonitor(self.dir / "progress.jsonl")
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
        # The key leaves out what does not change the image: where the recipe came from
        # (a commit and a file with equal content build the same image, given the same epoch).
        keyed = {k: v for k, v in inputs.items() if k != "source"}
        keyed["recipe"] = {"digest": str(recipe.digest)}
        key = Digest.of_json(keyed)
        self.log.write(f"input key {key}")
        return inputs, key, int(epoch)

    def _compose(self, recipe: Recipe, ctx: BuildContext, epoch: int) -> tuple[Path, list[Package]]:
        rootfs = self.work / "rootfs"
        composer = composer_for(recipe, ctx)
        self.monitor.step("compose")
        composer.compose(rootfs)
        self.monitor.step("artifacts", total=len(recipe.artifacts))
        extra = install_artifacts(recipe, rootfs, self.work / "artifacts")
        self.monitor.step("files", total=len(recipe.files))
        add_files(recipe, rootfs)
        packages = composer.packages(rootfs) + extra
        self.log.write(f"{len(packages)} packages in the image")
        return rootfs, packages

    def _image(self, recipe: Recipe, rootfs: Path,
               epoch: int) -> tuple[Digest, Path, dict[str, Any]]:
        self.monitor.step("layer")
        layout = self.work / "oci"
        blobs = new_layout(layout)
        tmp = blobs / "layer.tmp"
        with open(tmp, "wb") as f:
            layer = write_layer(rootfs, f, source_date_epoch=epoch,
                                level=int(self.options.get("compression_level", 1)))
        os.replace(tmp, blobs / layer.digest.hex)
        self.log.write(f"layer {layer.digest} ({layer.size} bytes, diff_id {layer.diff_id})")
        self.monitor.step("image")
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
        try:
            outcome = self._run()
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
        if outcome.state != DONE:
            # Free the space first: a build that failed on a full disk must still be recorded.
            remove_tree(self.work)
        if outcome.error:
            self.log.write(f"FAILED: {outcome.error}")
        self.log.write(f"{outcome.state} in {time.monotonic() - started:.1f} s")
        self.log.close()
        log_path = self.dir / "build.log"
        log_digest = str(Digest.of_file(log_path))
        os.chmod(log_path, 0o444)
        self.store.finish(self.row.id, outcome.state, packages=self._packages,
                          log_digest=log_digest, error=outcome.error, digest=outcome.digest,
                          image_ref=outcome.image, published=outcome.image is not None,
                          **self._extra)
        self.monitor.finish(outcome.state, digest=outcome.digest, image=outcome.image,
                            error=outcome.error)
        # After a success the tree goes after the record, so nobody waits for the deletion.
        # (A worker that dies before this leaves it to collect_garbage.)
        remove_tree(self.work)
        return outcome

    _packages: list[Package]
    _extra: dict[str, Any]

    def _run(self) -> Outcome:
        self._packages = []
        self._extra = {}
        recipe, source, commit_time = self._load_recipe()
        self._extra.update(recipe_name=recipe.name, recipe_digest=str(recipe.digest),
                           recipe_content=recipe.text)
        cache = self.settings.cache_dir / recipe.distribution
        ctx = BuildContext(log=self.log, monitor=self.monitor, workdir=self.work,
                           cache_dir=cache, source_date_epoch=0)
        inputs, key, epoch = self._inputs(recipe, ctx, source, commit_time)
        ctx.source_date_epoch = epoch
        self.store.update(self.row.id, input_key=str(key), inputs=inputs)

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

        if self.options.get("no_push"):
            return Outcome(DONE, digest=str(digest))
        self.monitor.step("publish")
        registry = Registry(self.settings)
        ref = registry.push(layout, recipe.name, recipe.tag, digest, log=self.log)
        self.log.write(f"published {ref}")
        return Outcome(DONE, digest=str(digest), image=ref)

