"""The checks between composing an image and publishing it.

    compose | cache → fixed → SBOMs → provenance → tests → gate → publish

fixed   a rebuild asked for by the rebuild service (``options["expect_fixed"]``: advisory
        ids) must hold the fixed versions: the advisories are matched against the image's
        packages the way a scan matches them, and any finding left fails the build with the
        reason (the repositories lack the fixed version).
tests   the recipe's tests against the *candidate* image, loaded into podman from its OCI
        layout before the registry sees it (:mod:`alicorn.acceptance.runner`).  Results:
        ``tests.json``, sealed.
gate    the security gate (:func:`alicorn.gate.run.run_gate`) on the same candidate, compared
        with the published image it replaces.  Results: ``gate.json`` and the reports under
        ``gate/``, sealed.

The gate runs even when the tests failed, so that both results are on record; the image is
published only when both passed.  ``--skip-checks`` (``options["skip_checks"]``) records the
tests and the gate as skipped, for development.  What the checks log goes to ``checks.log``:
the build log has ended (the provenance names it) before the tests start.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alicorn.chain.record import GATE, GATE_DIR, TESTS, BuildFiles
from alicorn.compose import Package
from alicorn.digest import canonical_json
from alicorn.errors import BadInput, Error
from alicorn.events.model import MISSING_FIX
from alicorn.proc import BuildLog
from alicorn.recipe import Recipe
from alicorn.store.builds import BuildStore
from alicorn.store.models import BuildRow

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"

TESTS_PREDICATE = "https://alicorn.dev/attestation/tests/v1"
GATE_PREDICATE = "https://alicorn.dev/attestation/gate/v1"

# What BuildRow.checks keeps of each test's detail (tests.json has it whole).
_DETAIL = 200


class ChecksFailed(Error):
    """The candidate image did not pass a check; it is not published."""


@dataclass
class CheckState:
    """The checks of one build as they run: what goes into ``BuildRow.checks`` (``row``)
    and, with the digests of the sealed result files (``files``), into the record."""

    fixed: str | None = None
    tests: str | None = None
    gate: str | None = None
    tests_detail: list[dict[str, Any]] = field(default_factory=list)
    gate_summary: str | None = None
    fixed_detail: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fixed": self.fixed, "tests": self.tests, "gate": self.gate,
                               "tests_detail": self.tests_detail,
                               "gate_summary": self.gate_summary}
        if self.fixed_detail is not None:
            out["fixed_detail"] = self.fixed_detail
        return out

    def record(self) -> dict[str, Any]:
        return {**self.row(), "files": dict(sorted(self.files.items()))}


# -- fixed -------------------------------------------------------------------------------------
def check_fixed(database_url: str, advisory_ids: Sequence[str], packages: Sequence[Package],
                *, target: str, log: BuildLog | None = None) -> str | None:
    """Why the image with ``packages`` still needs one of ``advisory_ids`` (None: every one
    is fixed or does not apply).  An advisory the store does not hold is bad input: the
    rebuild service names only advisories it imported."""
    from alicorn.advisories.store import AdvisoryStore
    from alicorn.inventory.model import Inventory
    from alicorn.match.affected import _distro, package_from_row
    from alicorn.match.index import AdvisoryIndex
    from alicorn.match.matcher import match

    if isinstance(advisory_ids, str) or not all(isinstance(a, str) for a in advisory_ids):
        raise BadInput(f"expect_fixed must be a list of advisory ids, not {advisory_ids!r}")
    store = AdvisoryStore(database_url)
    advisories = []
    for advisory_id in advisory_ids:
        advisory = store.get(advisory_id)
        if advisory is None:
            raise BadInput(f"advisory {advisory_id} (expected to be fixed) is not in the "
                           "advisory store", hint="alicorn advisories import it first")
        advisories.append(advisory)
    inventory = Inventory(target=target, kind="alicorn",
                          packages=tuple(package_from_row(p) for p in packages),
                          distro=_distro(packages), digest=target)
    findings = match(inventory, AdvisoryIndex(advisories))
    if log is not None:
        log.write(f"fixed: {len(advisories)} advisories checked against {len(packages)} "
                  f"packages, {len(findings)} still apply")
    if not findings:
        return None
    reasons = []
    for f in findings:
        fix = f"fixes it in {f.fixed_version}" if f.fixed_version else "has no fix yet"
        reasons.append(f"{f.package.name} {f.package.version} is installed, "
                       f"{f.advisory.id} {fix}")
    return f"the repositories {MISSING_FIX}: " + "; ".join(reasons)


# -- tests -------------------------------------------------------------------------------------
def run_tests(recipe: Recipe, layout: Path, digest: str, files: BuildFiles, state: CheckState,
              *, skip: bool, log: BuildLog) -> dict[str, Any]:
    """Run the recipe's tests on the candidate in ``layout``; writes ``tests.json`` (sealed)
    and returns its content.  A test that fails makes ``state.tests`` "failed"; trouble
    running them at all (podman broken) does too, with the reason as the one result."""
    from alicorn.acceptance.runner import TestResult, run_layout_tests

    started = time.monotonic()
    results: list[TestResult] = []
    reason = None
    if skip:
        state.tests, reason = SKIPPED, "--skip-checks"
    elif not recipe.tests:
        state.tests, reason = SKIPPED, "the recipe has no tests"
    else:
        try:
            results = run_layout_tests(layout, log=log)
        except Error as e:
            results = [TestResult("the tests run", False, e.diagnostics(), 0.0)]
        state.tests = PASSED if results and all(r.passed for r in results) else FAILED
    log.write(f"tests {state.tests}" + (f" ({reason})" if reason else "")
              + f" in {time.monotonic() - started:.1f} s")
    state.tests_detail = [{"name": r.name, "passed": r.passed,
                           "detail": _short(r.detail)} for r in results]
    doc = {"image": digest, "state": state.tests, "reason": reason,
           "tests": [{"name": r.name, "passed": r.passed, "detail": r.detail,
                      "seconds": r.seconds} for r in results],
           "seconds": round(time.monotonic() - started, 3)}
    state.files[TESTS] = str(files.write_sealed(TESTS, canonical_json(doc)))
    return doc


def tests_failure(doc: dict[str, Any]) -> str:
    failed = [t for t in doc["tests"] if not t["passed"]]
    return "the tests failed: " + "; ".join(
        f"{t['name']}: {_short(t['detail'], 2 * _DETAIL)}" for t in failed)


# -- gate --------------------------------------------------------------------------------------
def previous_build(store: BuildStore, recipe_name: str, build_id: str,
                   trigger: dict[str, Any] | None) -> BuildRow | None:
    """The published image this build replaces: the trigger's ``previous_build``, else the
    newest published, finished build of the same recipe name."""
    if trigger and trigger.get("previous_build"):
        return store.get(str(trigger["previous_build"]))
    row = store.latest_published(recipe_name)
    return row if row is None or row.id != build_id else None


def run_gate(recipe: Recipe, layout: Path, digest: str, packages: Sequence[Package],
             previous: BuildRow | None, database_url: str, files: BuildFiles,
             state: CheckState, *, skip: bool, log: BuildLog) -> dict[str, Any]:
    """Run the security gate on the candidate; writes ``gate.json`` and seals what the gate
    wrote under ``gate/``; returns gate.json's content."""
    started = time.monotonic()
    out_dir = files.path(GATE_DIR)
    doc: dict[str, Any]
    if skip:
        state.gate = SKIPPED
        state.gate_summary = "skipped (--skip-checks)"
        doc = {"passed": None, "summary": state.gate_summary, "tree": None, "checks": []}
    else:
        from alicorn.gate.model import GateContext

        out_dir.mkdir(mode=0o755, exist_ok=True)
        ctx = GateContext(
            layout=layout, digest=digest, config=_config(layout), recipe=recipe,
            packages=tuple(packages), database_url=database_url, out_dir=out_dir, log=log,
            previous_digest=previous.digest if previous is not None else None,
            previous_packages=(tuple(_package(p) for p in previous.packages)
                               if previous is not None else None))
        result, problem = None, None
        try:
            from alicorn.gate.run import run_gate as gate

            result = gate(ctx)
        except ImportError as e:
            problem = f"alicorn.gate is incomplete: {e}"
        except Error as e:
            problem = e.diagnostics()
        if result is None:
            # A gate that cannot run fails: an image is never published on a guess.
            state.gate = FAILED
            state.gate_summary = f"the gate could not run: {problem}"
            doc = {"passed": False, "summary": state.gate_summary, "tree": None,
                   "checks": []}
        else:
            state.gate = PASSED if result.passed else FAILED
            state.gate_summary = result.summary
            doc = result.to_json()
    doc = {"image": digest, "state": state.gate,
           "previous": previous.digest if previous is not None else None, **doc,
           "seconds": round(time.monotonic() - started, 3)}
    log.write(f"gate {state.gate}: {state.gate_summary} "
              f"({time.monotonic() - started:.1f} s)")
    state.files.update(_seal_dir(files, out_dir))
    state.files[GATE] = str(files.write_sealed(GATE, canonical_json(doc)))
    return doc


def gate_reports(files: BuildFiles, state: CheckState) -> list[tuple[str, Path]]:
    """The gate's report files (name inside the build dir, path), as sealed."""
    return [(name, files.path(name)) for name in sorted(state.files)
            if name.startswith(GATE_DIR + "/")]


def _seal_dir(files: BuildFiles, out_dir: Path) -> dict[str, str]:
    """Make every file the gate wrote read-only; their digests by name (``gate/…``)."""
    from alicorn.digest import Digest

    found: dict[str, str] = {}
    if not out_dir.is_dir():
        return found
    for path in sorted(out_dir.rglob("*")):
        if path.is_symlink():
            raise ChecksFailed(f"the gate left a symbolic link in its reports: {path}")
        if path.is_file():
            os.chmod(path, 0o444)
            found[str(path.relative_to(files.dir))] = str(Digest.of_file(path))
    return found


def _config(layout: Path) -> dict[str, Any]:
    from alicorn.digest import Digest
    from alicorn.image.oci import read_manifest

    _, manifest = read_manifest(layout)
    digest = Digest(manifest["config"]["digest"])
    config: dict[str, Any] = json.loads((layout / "blobs" / "sha256" / digest.hex).read_bytes())
    return config


def _package(p: Any) -> Package:
    return Package(type=p.type, name=p.name, version=p.version, arch=p.arch, source=p.source,
                   checksum=p.checksum, purl=p.purl)


def _short(text: str, limit: int = _DETAIL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- attestations ------------------------------------------------------------------------------
def statement(image_name: str, digest: str, predicate_type: str,
              predicate: dict[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1 about the image whose predicate is a check's results."""
    from alicorn.chain.provenance import STATEMENT_TYPE

    algo, _, hexa = digest.partition(":")
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": image_name, "digest": {algo: hexa}}],
            "predicateType": predicate_type, "predicate": predicate}
