"""What the chain of identity costs: on top of a build, and to verify images with it.

    .venv/bin/python bench/chain_bench.py [--rounds N] [--images N] [--example debian|rpm|all]
                                          [--fill distinct|cached] [--minutes M | --verify-all]
                                          [--out FILE] [--keep]

Everything runs in one fresh temporary ALICORN_HOME (see bench/README.md, "Chain of identity"):

chain       ``alicorn build RECIPE --no-cache --json`` for each example, N rounds, the examples
            alternating.  The worker that runs these builds is alicorn's own ``serve()``, started
            by this script with timers around the chain's functions (the same code, the same
            steps; the timers only read the clock).  The chain's share of a build is the time in
            the chain's own work: the inputs entry (log append and head signature, inside the
            ``inputs`` step), the ``provenance`` step (SBOMs, the build log closed, the DSSE
            signature; from progress.jsonl), the part of ``publish`` after the image push
            (attestation, SBOMs and signature attached), and the sealing after the last step
            (log digests, record, log append, head signature; the database row update is left
            out), plus opening the transparency log for the build.
verify-one  ``alicorn verify DIGEST --json``, online and ``--offline``, for each example's image
            (the median of --verify-repeats), while the log is small and again after the fill;
            the same in-process, to tell the CLI's start-up from the verification.
fill        --images real RPM-pony builds, run in this process by the worker's own
            ``serve(settings, once=True)``, submitted as the CLI submits them, pushed to the
            registry: each has its own record, provenance, SBOMs, logs and log entries.
            ``distinct`` (default) gives each build its own SOURCE_DATE_EPOCH, hence its own
            image (a full compose every time); ``cached`` reuses one image (faster, but then only
            the newest build of the image verifies online: see README).
verify-all  every filled build verified in this process with one Verifier, offline and online
            alternately, in a shuffled order, until the run's time budget (--minutes) is spent
            (--verify-all: no budget).  Per image: median, p99, mean, and the total, measured or
            extrapolated to all builds.  Where the time goes (layer hashing, log proofs,
            signature checks, registry, SBOMs) comes from timers around those functions, and a
            cProfile of a few verifications.

Prints a table, writes every sample to a JSON file (default ``bench/results/chain-<UTC
time>.json``; bench/results/ is git-ignored).  Exits 0 when done, 1 when a build or a
verification that must succeed did not, 2 when the host lacks a tool, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import itertools
import json
import os
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/ is not a package: its sibling is imported from the path.
from build_time import (
    BenchError,
    Example,
    alicorn_bin,
    debian_example,
    machine,
    rpm_example,
    say,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# The chain's share of a build that the project aims for.
TARGET_SHARE = 0.05
# What the chain's parts are called in tables and JSON, in the order a build runs them.
PARTS = ("log_open", "inputs_entry", "provenance", "attachments", "seal")
PART_NAMES = {
    "log_open": "open the log (per build)",
    "inputs_entry": "inputs entry (append + head)",
    "provenance": "provenance step (SBOMs, sign)",
    "attachments": "publish after the push (.att/.sbom/.sig)",
    "seal": "seal (record, append, head)",
}
FILL_EPOCH = 1_000_000          # the first SOURCE_DATE_EPOCH of the distinct fill builds


# -- timers inside the worker -------------------------------------------------------------------

def _timed_functions() -> list[tuple[Any, str, str]]:
    """``(owner, attribute, key)`` of what the build timer wraps.

    ``attach.attach`` is what the pipeline calls for the attestation and the SBOMs;
    ``sign_image`` calls its own import of it, so the two are counted apart.
    """
    from alicorn.build import pipeline
    from alicorn.chain import attach, sbom, sigstore
    from alicorn.chain.keys import KeyRing
    from alicorn.chain.seal import Chain
    from alicorn.chain.translog import TransparencyLog
    from alicorn.registry.client import RegistryClient
    from alicorn.registry.local import Registry
    from alicorn.store.builds import BuildStore

    return [
        (Chain, "__init__", "log_open"),
        (Chain, "log_inputs", "log_inputs"),
        (Chain, "write_sboms", "write_sboms"),
        (Chain, "sign_provenance", "sign_provenance"),
        (Chain, "seal", "chain_seal"),
        (TransparencyLog, "append", "log_append"),
        (TransparencyLog, "sign_head", "sign_head"),
        (KeyRing, "current", "key_load"),
        (sbom, "spdx_json", "spdx"),
        (sbom, "cyclonedx_json", "cyclonedx"),
        (pipeline.Build, "_publish", "publish_total"),
        (Registry, "push", "registry_push"),
        (attach, "attach", "attach_att_sbom"),
        (sigstore, "sign_image", "sign_image"),
        (pipeline.Build, "_seal", "seal_total"),
        (BuildStore, "finish", "store_finish"),
        (RegistryClient, "_request", "registry_http"),    # each one a new TCP connection
        *_optional("alicorn.chain.gpgsign", "sign_manifest", "gpg_sign"),
    ]


def _optional(module: str, name: str, key: str) -> list[tuple[Any, str, str]]:
    """A target that the source tree may or may not have yet (it changes while this runs)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return []
    return [(mod, name, key)] if hasattr(mod, name) else []


class BuildTimer:
    """Times the chain's functions during each build; hands one dict per build to ``sink``."""

    def __init__(self, sink: Callable[[dict[str, Any]], None]):
        self.sink = sink
        self.current: dict[str, Any] | None = None
        self._undo: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        from alicorn.build.pipeline import Build

        for owner, name, key in _timed_functions():
            self._wrap(owner, name, self._adder(key))
        timer = self

        def around_init(orig: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(orig)
            def init(build: Any, *a: Any, **kw: Any) -> Any:
                timer.current = {}        # Build.__init__ opens the log: count it for this build
                return orig(build, *a, **kw)
            return init

        def around_run(orig: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(orig)
            def run(build: Any) -> Any:
                rec = timer.current if timer.current is not None else {}
                rec["build_id"] = build.row.id
                t0 = time.perf_counter()
                try:
                    return orig(build)
                finally:
                    rec["run_total"] = time.perf_counter() - t0
                    timer.current = None
                    timer.sink(rec)
            return run

        def around_inner(orig: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(orig)
            def inner(build: Any) -> Any:
                try:
                    return orig(build)
                finally:
                    if timer.current is not None:
                        timer.current["run_end"] = time.time()
            return inner

        self._wrap(Build, "__init__", around_init)
        self._wrap(Build, "run", around_run)
        self._wrap(Build, "_run", around_inner)

    def uninstall(self) -> None:
        for owner, name, orig in reversed(self._undo):
            setattr(owner, name, orig)
        self._undo.clear()

    def _adder(self, key: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def around(orig: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(orig)
            def timed(*a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return orig(*a, **kw)
                finally:
                    rec = self.current
                    if rec is not None:
                        rec[key] = rec.get(key, 0.0) + time.perf_counter() - t0
                        rec[f"{key}.calls"] = rec.get(f"{key}.calls", 0) + 1
            return timed
        return around

    def _wrap(self, owner: Any, name: str,
              around: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        orig = getattr(owner, name)
        self._undo.append((owner, name, orig))
        setattr(owner, name, around(orig))


def worker_main(timings: Path) -> int:
    """The hidden ``--worker`` mode: alicorn's worker loop with the build timer installed."""
    from alicorn.config import load_settings
    from alicorn.worker.local import serve

    with open(timings, "a", encoding="utf-8", buffering=1) as f:
        def sink(rec: dict[str, Any]) -> None:
            f.write(json.dumps(rec, sort_keys=True) + "\n")

        BuildTimer(sink).install()
        serve(load_settings(), idle_exit=1800)
    return 0


def progress_events(home: Path, build_id: str) -> list[dict[str, Any]]:
    path = home / "builds" / build_id / "progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chain_parts(rec: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The chain's seconds in one build, from its timers and its progress.jsonl."""
    steps = {e["name"]: e["t"] for e in events if e["event"] == "step"}
    finish = next(e["t"] for e in events if e["event"] == "finish")
    first = next(e["t"] for e in events if e["event"] == "step")
    prov_end = steps.get("publish", rec["run_end"])
    parts = {
        "log_open": rec.get("log_open", 0.0),
        "inputs_entry": rec["log_inputs"],
        "provenance": prov_end - steps["provenance"],
        "attachments": rec.get("publish_total", 0.0) - rec.get("registry_push", 0.0),
        "seal": (finish - rec["run_end"]) - rec.get("store_finish", 0.0),
    }
    detail = {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()
              if isinstance(v, float | int) and k != "run_end"}
    return {
        "parts": {k: round(v, 4) for k, v in parts.items()},
        "chain": round(sum(parts.values()), 4),
        "worker_span": round(finish - first, 3),
        "steps": {name: round(t_next - t, 3) for (name, t), (_, t_next) in
                  itertools.pairwise(sorted([*steps.items(), ("finish", finish)],
                                            key=lambda x: x[1]))},
        "timers": detail,
    }


# -- where verification spends its time ---------------------------------------------------------

def _split_targets() -> list[tuple[Any, str, str]]:
    """``(owner, attribute, category)`` for the verification split (exclusive times)."""
    from alicorn.chain import attach, dsse, sbom, sigstore
    from alicorn.chain import verify as v
    from alicorn.chain.keys import KeyRing, PublicKey
    from alicorn.chain.translog import TransparencyLog
    from alicorn.registry.client import RegistryClient

    return [
        (v.Verifier, "verify", "other (record, database row, files, JSON)"),
        (v, "_layer_digests", "layer hashing (sha256 + inflate)"),
        (v, "_blob", "layer hashing (sha256 + inflate)"),
        (TransparencyLog, "latest_head", "log reads (heads)"),
        (TransparencyLog, "heads", "log reads (heads)"),
        *([(TransparencyLog, "head_covering", "log reads (heads)")]
          if hasattr(TransparencyLog, "head_covering") else []),
        (TransparencyLog, "consistency_proof", "log proofs: consistency, every head"),
        (v, "verify_consistency", "log proofs: consistency, every head"),
        (TransparencyLog, "inclusion_proof", "log proofs: inclusion (record, inputs)"),
        (TransparencyLog, "entry", "log proofs: inclusion (record, inputs)"),
        (v, "verify_inclusion", "log proofs: inclusion (record, inputs)"),
        (v, "verify_head", "signatures: tree heads (every head)"),
        (dsse, "verify", "signatures: provenance (DSSE)"),
        (sigstore, "_verifies", "signatures: image (.sig)"),
        (KeyRing, "public_keys", "signatures: key lookups (keys.json, PEM)"),
        (PublicKey, "_key", "signatures: key lookups (keys.json, PEM)"),
        (sbom, "packages_from_spdx", "SBOMs read back (parse + validate)"),
        (sbom, "packages_from_cyclonedx", "SBOMs read back (parse + validate)"),
        (RegistryClient, "get_manifest", "registry (HTTP)"),
        (RegistryClient, "get_blob", "registry (HTTP)"),
        (attach, "fetch_attachment", "registry (HTTP)"),
        *_optional("alicorn.chain.gpgsign", "verify_manifest_signatures",
                   "signatures: image (GPG, gpgv)"),
    ]


class Split:
    """Exclusive time per category: a nested call's time counts for its own category only."""

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.calls = 0
        self.mode = "offline"
        self._stack: list[str] = []
        self._t = 0.0
        self._undo: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        for owner, name, cat in _split_targets():
            orig = getattr(owner, name)
            self._undo.append((owner, name, orig))
            setattr(owner, name, self._timed(orig, cat))

    def uninstall(self) -> None:
        for owner, name, orig in reversed(self._undo):
            setattr(owner, name, orig)
        self._undo.clear()

    def _timed(self, orig: Callable[..., Any], cat: str) -> Callable[..., Any]:
        @functools.wraps(orig)
        def timed(*a: Any, **kw: Any) -> Any:
            now = time.perf_counter()
            self.calls += 1
            if self._stack:
                self.totals[self.mode][self._stack[-1]] += now - self._t
            self._stack.append(cat)
            self._t = now
            try:
                return orig(*a, **kw)
            finally:
                now = time.perf_counter()
                self.totals[self.mode][self._stack.pop()] += now - self._t
                self._t = now
        return timed


def wrapper_cost() -> float:
    """Seconds one Split wrapper adds to a call (a no-op timed 100,000 times)."""
    class Probe:
        def noop(self) -> None:
            pass

    split = Split()
    probe = Probe()
    bare = Probe.noop
    t0 = time.perf_counter()
    for _ in range(100_000):
        bare(probe)
    t1 = time.perf_counter()
    timed = split._timed(bare, "probe")
    for _ in range(100_000):
        timed(probe)
    t2 = time.perf_counter()
    return max(0.0, ((t2 - t1) - (t1 - t0)) / 100_000)


# -- the run ------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Run:
    """The run's temporary directory, ALICORN_HOME, instrumented worker and samples."""

    tmp: Path
    started: float = field(default_factory=time.monotonic)
    worker: subprocess.Popen[bytes] | None = None
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from alicorn.config import load_settings

        self.home = self.tmp / "home"
        self.logs = self.tmp / "logs"
        self.logs.mkdir(parents=True)
        self.timings = self.tmp / "worker-timings.jsonl"
        os.environ["ALICORN_HOME"] = str(self.home)
        self.env = {**os.environ}
        self.alicorn = alicorn_bin()
        self.settings = load_settings(self.home)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # the instrumented worker ---------------------------------------------------------------
    def start_worker(self) -> None:
        from alicorn.worker.local import worker_running

        log = open(self.logs / "worker.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(self.timings)],
            env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while not worker_running(self.settings):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the timed worker did not start; see {self.logs}/worker.log")
            time.sleep(0.05)

    def stop_worker(self) -> None:
        if self.worker is None or self.worker.poll() is not None:
            return
        self.worker.send_signal(signal.SIGTERM)
        try:
            self.worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()

    def worker_record(self, build_id: str) -> dict[str, Any]:
        """The timed worker's line for ``build_id`` (written just after the build's finish)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.timings.exists():
                for line in self.timings.read_text().splitlines():
                    rec = json.loads(line)
                    if rec.get("build_id") == build_id:
                        return rec  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise BenchError(f"the timed worker wrote no timings for build {build_id}")

    # building through the CLI --------------------------------------------------------------
    def cli_build(self, ex: Example) -> dict[str, Any]:
        argv = [self.alicorn, "build", str(ex.recipe_path), "--no-cache", "--json"]
        load = os.getloadavg()[0]
        wall0 = time.time()
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, cwd=REPO,
                              stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        wall1 = time.time()
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError) as e:
            raise BenchError(f"alicorn build printed no result (exit {proc.returncode}): "
                             f"{proc.stderr.strip()[-500:]}") from e
        if result.get("state") != "done" or result.get("cached_from"):
            raise BenchError(f"alicorn build {result.get('build_id')} {result.get('state')}"
                             f" (cached_from {result.get('cached_from')}): {result.get('error')}")
        build_id = result["build_id"]
        events = progress_events(self.home, build_id)
        parts = chain_parts(self.worker_record(build_id), events)
        first = next(e["t"] for e in events if e["event"] == "step")
        finish = next(e["t"] for e in events if e["event"] == "finish")
        return {"build_id": build_id, "digest": result["digest"], "seconds": round(seconds, 3),
                "queue": round(first - wall0, 3), "follow": round(wall1 - finish, 3),
                "load_before": round(load, 2), **parts,
                "share": round(parts["chain"] / seconds, 4),
                "share_of_worker": round(parts["chain"] / parts["worker_span"], 4)}

    # verifying -----------------------------------------------------------------------------
    def cli_verify(self, digest: str, *, offline: bool) -> dict[str, Any]:
        argv = [self.alicorn, "verify", digest, "--json"] + (["--offline"] if offline else [])
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, cwd=REPO,
                              stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        try:
            result = json.loads(proc.stdout)
        except ValueError as e:
            raise BenchError(f"alicorn verify {digest} printed no result (exit "
                             f"{proc.returncode}): {proc.stderr.strip()[-300:]}") from e
        return {"seconds": round(seconds, 3), "verified": result["verified"],
                "broken": result["broken"], "exit": proc.returncode}

    def log_heads(self) -> tuple[int, int]:
        """(entries, signed heads) of the transparency log now."""
        from alicorn.chain.translog import TransparencyLog

        log = TransparencyLog(self.settings.database_url)
        return log.size(), len(log.heads())

    def verify_one(self, examples: dict[str, str], repeats: int) -> dict[str, Any]:
        """Each example's image through the CLI and in-process, online and offline."""
        from alicorn.chain.verify import Verifier
        from alicorn.store.builds import BuildStore

        store = BuildStore(self.settings.database_url)
        size, heads = self.log_heads()
        out: dict[str, Any] = {"log_entries": size, "signed_heads": heads, "examples": {}}
        for name, digest in examples.items():
            cli: dict[str, list[dict[str, Any]]] = {"offline": [], "online": []}
            inproc: dict[str, list[float]] = {"offline": [], "online": []}
            verifiers = {"offline": Verifier(self.settings, registry=False),
                         "online": Verifier(self.settings, registry=True)}
            for r in range(repeats):
                for mode in (("offline", "online") if r % 2 == 0 else ("online", "offline")):
                    sample = self.cli_verify(digest, offline=mode == "offline")
                    cli[mode].append(sample)
                    if not sample["verified"]:
                        self.failures.append(f"alicorn verify {digest} ({mode}): broken link "
                                             f"{sample['broken']}")
                    row = store.resolve(digest)
                    t0 = time.perf_counter()
                    report = verifiers[mode].verify(row)
                    inproc[mode].append(time.perf_counter() - t0)
                    if not report.verified:
                        self.failures.append(f"Verifier.verify {digest} ({mode}): "
                                             f"{report.broken}")
            out["examples"][name] = {
                "digest": digest,
                **{f"cli_{m}": {"median": round(med([s["seconds"] for s in v]), 3),
                                "samples": [s["seconds"] for s in v]} for m, v in cli.items()},
                **{f"inprocess_{m}": {"median": round(med(v), 4),
                                      "samples": [round(x, 4) for x in v]}
                   for m, v in inproc.items()},
            }
            say(f"verify {name} ({heads} heads): CLI offline "
                f"{out['examples'][name]['cli_offline']['median']:.2f} s, online "
                f"{out['examples'][name]['cli_online']['median']:.2f} s; in-process offline "
                f"{out['examples'][name]['inprocess_offline']['median']:.3f} s, online "
                f"{out['examples'][name]['inprocess_online']['median']:.3f} s")
        return out

    def online_by_build(self, build_ids: list[str]) -> list[dict[str, Any]]:
        """Every example build verified online by its id, not by its digest."""
        from alicorn.chain.verify import Verifier
        from alicorn.store.builds import BuildStore

        store = BuildStore(self.settings.database_url)
        verifier = Verifier(self.settings, registry=True)
        out = []
        for build_id in build_ids:
            report = verifier.verify(store.get(build_id))
            out.append({"build_id": build_id, "verified": report.verified,
                        "broken": report.broken.link if report.broken else None,
                        "detail": report.broken.detail if report.broken else None})
        return out

    # the fill ------------------------------------------------------------------------------
    def fill(self, ex: Example, n: int, mode: str, curve_every: int) -> dict[str, Any]:
        """``n`` real builds of the RPM pony, in this process, by the worker's serve()."""
        from alicorn.chain.verify import Verifier
        from alicorn.store.builds import BuildStore, Submission
        from alicorn.worker.local import serve

        store = BuildStore(self.settings.database_url)
        content = ex.recipe_path.read_text()
        recs: list[dict[str, Any]] = []
        timer = BuildTimer(recs.append)
        timer.install()
        verifier = Verifier(self.settings, registry=False)
        samples: list[dict[str, Any]] = []
        curve: list[dict[str, Any]] = []
        t_start = time.perf_counter()
        try:
            for i in range(n):
                options: dict[str, Any] = {"no_cache": False, "no_push": False,
                                           "compression_level": 1}
                argv = ["alicorn", "build", str(ex.recipe_path), "--json"]
                if mode == "distinct":
                    options["source_date_epoch"] = FILL_EPOCH + i
                    argv += ["--source-date-epoch", str(FILL_EPOCH + i)]
                row = store.submit(Submission(argv=argv, source_kind="file",
                                              recipe_path=str(ex.recipe_path),
                                              recipe_content=content, options=options))
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    ran = serve(self.settings, once=True)
                seconds = time.perf_counter() - t0
                done = store.get(row.id)
                if ran != 1 or done.state != "done":
                    raise BenchError(f"fill build {row.id} ({i + 1}/{n}) {done.state}: "
                                     f"{done.error}")
                rec = next(r for r in recs if r["build_id"] == row.id)
                parts = chain_parts(rec, progress_events(self.home, row.id))
                samples.append({"build_id": row.id, "digest": done.digest,
                                "cached_from": done.cached_from, "seconds": round(seconds, 4),
                                "chain": parts["chain"], "parts": parts["parts"],
                                "worker_span": parts["worker_span"], "timers": parts["timers"]})
                if (i + 1) % curve_every == 0 or i + 1 == n:
                    size, heads = self.log_heads()
                    t0 = time.perf_counter()
                    ok = verifier.verify(done).verified
                    curve.append({"builds": i + 1, "log_entries": size, "signed_heads": heads,
                                  "offline_verify_seconds": round(time.perf_counter() - t0, 4),
                                  "verified": ok})
                    say(f"fill {i + 1}/{n}: {time.perf_counter() - t_start:.0f} s so far, "
                        f"build median {med([s['seconds'] for s in samples]):.3f} s; one "
                        f"offline verify at {heads} heads: "
                        f"{curve[-1]['offline_verify_seconds']:.3f} s")
        finally:
            timer.uninstall()
        total = time.perf_counter() - t_start
        secs = [s["seconds"] for s in samples]
        chains = [s["chain"] for s in samples]
        k = max(1, min(100, n // 4))
        return {
            "mode": mode, "builds": n, "distinct_digests": len({s["digest"] for s in samples}),
            "seconds_total": round(total, 2),
            "build_seconds": {"median": round(med(secs), 4), "p99": round(pct(secs, 0.99), 4)},
            "chain_seconds": {"median": round(med(chains), 4),
                              "first_k_median": round(med(chains[:k]), 4),
                              "last_k_median": round(med(chains[-k:]), 4), "k": k},
            "chain_share_median": round(med([c / s for c, s in zip(chains, secs,
                                                                    strict=True)]), 4),
            "parts_median": {p: round(med([s["parts"][p] for s in samples]), 4) for p in PARTS},
            "timers_median": {t: round(med([s["timers"].get(t, 0) for s in samples]), 4)
                              for t in sorted({t for s in samples for t in s["timers"]})},
            "curve": curve, "samples": samples,
        }

    def verify_all(self, build_ids: list[str], deadline: float | None) -> dict[str, Any]:
        """Every build (until ``deadline``) with one Verifier per mode, modes alternating."""
        from alicorn.chain.verify import Verifier
        from alicorn.store.builds import BuildStore

        store = BuildStore(self.settings.database_url)
        rows = [store.get(b) for b in build_ids]     # read before the clock: not timed
        size, heads = self.log_heads()
        order = random.Random(0).sample(range(len(rows)), len(rows))
        verifiers = {"offline": Verifier(self.settings, registry=False),
                     "online": Verifier(self.settings, registry=True)}
        times: dict[str, list[float]] = {"offline": [], "online": []}
        broken: dict[str, list[str]] = {"offline": [], "online": []}
        split = Split()
        split.install()
        t_start = time.perf_counter()
        try:
            for j, i in enumerate(order):
                for mode in (("offline", "online") if j % 2 == 0 else ("online", "offline")):
                    split.mode = mode
                    t0 = time.perf_counter()
                    report = verifiers[mode].verify(rows[i])
                    times[mode].append(time.perf_counter() - t0)
                    if not report.verified:
                        broken[mode].append(f"{rows[i].id}: {report.broken}")
                if (j + 1) % 25 == 0:
                    say(f"verified {j + 1}/{len(rows)} builds both ways in "
                        f"{time.perf_counter() - t_start:.0f} s (offline median "
                        f"{med(times['offline']):.3f} s, online {med(times['online']):.3f} s)")
                if deadline is not None and time.monotonic() > deadline:
                    break
        finally:
            split.uninstall()
        per_call = wrapper_cost()
        calls = split.calls
        out: dict[str, Any] = {"builds": len(rows), "log_entries": size, "signed_heads": heads,
                               "wrapper_calls": calls,
                               "wrapper_seconds_estimate": round(calls * per_call, 4),
                               "modes": {}}
        for mode, v in times.items():
            spent = sum(v)
            cats = {c: round(s, 4) for c, s in sorted(split.totals[mode].items(),
                                                      key=lambda x: -x[1])}
            out["modes"][mode] = {
                "verified_count": len(v), "complete": len(v) == len(rows),
                "median": round(med(v), 4), "p99": round(pct(v, 0.99), 4),
                "mean": round(spent / len(v), 4), "max": round(max(v), 4),
                "seconds_measured": round(spent, 2),
                "seconds_for_all": round(spent / len(v) * len(rows), 1),
                "failures": broken[mode],
                "split_seconds": cats,
                "split_share": {c: round(s / spent, 4) for c, s in cats.items()},
                "samples": [round(x, 4) for x in v],
            }
        return out

    def profile(self, build_ids: list[str]) -> dict[str, list[str]]:
        """cProfile of a few verifications per mode: the top functions, as text."""
        from alicorn.chain.verify import Verifier
        from alicorn.store.builds import BuildStore

        store = BuildStore(self.settings.database_url)
        out: dict[str, list[str]] = {}
        for mode in ("offline", "online"):
            verifier = Verifier(self.settings, registry=mode == "online")
            rows = [store.get(b) for b in build_ids]
            prof = cProfile.Profile()
            prof.enable()
            for row in rows:
                verifier.verify(row)
            prof.disable()
            for order, count in (("cumulative", 30), ("tottime", 20)):
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(count)
                lines = [ln.rstrip() for ln in buf.getvalue().splitlines() if ln.strip()]
                out[f"{mode} by {order} ({len(rows)} verifications)"] = lines
        return out

    # cleaning up ---------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        problems = []
        self.stop_worker()
        down = subprocess.run([self.alicorn, "down"], env=self.env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        if down.returncode != 0:
            problems.append(f"alicorn down failed: {down.stderr.strip()}")
        # GPG signing (when the tree has it) starts a gpg-agent for this home that outlives us.
        gpg_home = self.home / "keys" / "gpg"
        if gpg_home.is_dir() and shutil.which("gpgconf"):
            subprocess.run(["gpgconf", "--homedir", str(gpg_home), "--kill", "gpg-agent"],
                           capture_output=True, stdin=subprocess.DEVNULL)
        try:
            port = json.loads((self.home / "config.json").read_text())["registry_port"]
            path = Path("/etc/containers/registries.conf.d") / \
                f"50-alicorn-127.0.0.1-{port}.conf"
            if path.exists() and path.read_text().startswith("# Written by alicorn"):
                path.unlink()
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"could not check the registries.conf.d file: {e}")
        return problems


# -- summaries and tables -----------------------------------------------------------------------

def chain_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    chain = [s["chain"] for s in samples]
    secs = [s["seconds"] for s in samples]
    timers = sorted({k for s in samples for k in s["timers"]})
    return {
        "rounds": len(samples),
        "build_seconds": {"median": round(med(secs), 3), "min": round(min(secs), 3),
                          "max": round(max(secs), 3)},
        "worker_span_median": round(med([s["worker_span"] for s in samples]), 3),
        "chain_seconds": {"median": round(med(chain), 4), "min": round(min(chain), 4),
                          "max": round(max(chain), 4)},
        "share_median": round(med([s["share"] for s in samples]), 4),
        "share_per_round": [s["share"] for s in samples],
        "share_of_worker_median": round(med([s["share_of_worker"] for s in samples]), 4),
        "target_met": med([s["share"] for s in samples]) < TARGET_SHARE,
        "parts_median": {p: round(med([s["parts"][p] for s in samples]), 4) for p in PARTS},
        "timers_median": {k: round(med([s["timers"].get(k, 0.0) for s in samples]), 4)
                          for k in timers},
        "steps_median": {k: round(med([s["steps"].get(k, 0.0) for s in samples]), 3)
                         for k in samples[0]["steps"]},
        "digests": sorted({s["digest"] for s in samples}),
    }


def chain_table(name: str, s: dict[str, Any]) -> str:
    t = s["timers_median"]
    rows = [f"{name}: chain cost over {s['rounds']} --no-cache build(s)",
            f"  build (CLI wall)      {s['build_seconds']['median']:8.3f} s median "
            f"[{s['build_seconds']['min']:.2f}-{s['build_seconds']['max']:.2f}]; worker "
            f"{s['worker_span_median']:.3f} s",
            f"  chain                 {s['chain_seconds']['median']:8.3f} s median "
            f"[{s['chain_seconds']['min']:.3f}-{s['chain_seconds']['max']:.3f}]",
            f"  chain / build         {s['share_median'] * 100:7.2f} % (target < "
            f"{TARGET_SHARE * 100:.0f} %: {'met' if s['target_met'] else 'NOT met'}; per round "
            + ", ".join(f"{x * 100:.2f}" for x in s["share_per_round"]) + "); of the worker's "
            f"time {s['share_of_worker_median'] * 100:.2f} %"]
    for p in PARTS:
        rows.append(f"    {PART_NAMES[p]:<42} {s['parts_median'][p] * 1000:8.1f} ms")
    rows.append("    within: "
                + ", ".join(f"{k} {t.get(k, 0.0) * 1000:.1f}" for k in (
                    "log_append", "sign_head", "key_load", "spdx", "cyclonedx",
                    "sign_provenance", "attach_att_sbom", "sign_image", "gpg_sign",
                    "chain_seal", "store_finish", "registry_push") if k in t) + " ms")
    if "registry_http.calls" in t:
        rows.append(f"    the attachments took {t['registry_http.calls']:.0f} HTTP requests to the "
                    f"registry, {t.get('registry_http', 0.0) * 1000:.1f} ms in all")
    rows.append("  steps (median s): " + ", ".join(f"{k} {v:.3f}"
                                                   for k, v in s["steps_median"].items()))
    return "\n".join(rows)


def verify_one_table(title: str, v: dict[str, Any]) -> str:
    rows = [f"{title} (log: {v['log_entries']} entries, {v['signed_heads']} signed heads)",
            f"  {'example':<8} {'CLI offline':>12} {'CLI online':>11} {'in-proc off':>12} "
            f"{'in-proc on':>11}"]
    for name, e in v["examples"].items():
        rows.append(f"  {name:<8} {e['cli_offline']['median']:>10.3f} s "
                    f"{e['cli_online']['median']:>9.3f} s {e['inprocess_offline']['median']:>10.3f}"
                    f" s {e['inprocess_online']['median']:>9.3f} s")
    return "\n".join(rows)


def verify_all_table(v: dict[str, Any]) -> str:
    rows = [f"verify {v['builds']} builds in-process, one Verifier per mode (log: "
            f"{v['log_entries']} entries, {v['signed_heads']} signed heads)"]
    for mode, m in v["modes"].items():
        what = "all" if m["complete"] else f"{m['verified_count']} of {v['builds']} (sampled)"
        total = (f"{m['seconds_measured']:.1f} s" if m["complete"] else
                 f"{m['seconds_measured']:.1f} s measured, ~{m['seconds_for_all']:.0f} s for all")
        rows.append(f"  {mode:<8} {what}: median {m['median']:.3f} s, p99 {m['p99']:.3f} s, "
                    f"mean {m['mean']:.3f} s; total {total}; failures {len(m['failures'])}")
        for cat, share in m["split_share"].items():
            rows.append(f"      {share * 100:5.1f} %  {cat}")
    rows.append(f"  (the split's timers: {v['wrapper_calls']} calls, about "
                f"{v['wrapper_seconds_estimate']:.2f} s of the measured time)")
    return "\n".join(rows)


# -- main ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def phase(results: dict[str, Any], name: str, run: Run) -> Iterator[None]:
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    yield
    results["phases"][name] = {"seconds": round(time.monotonic() - t0, 1),
                               "load_before": round(load, 2),
                               "load_after": round(os.getloadavg()[0], 2),
                               "at": round(run.elapsed(), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="--no-cache builds per example "
                        "for the chain's cost (default 3)")
    parser.add_argument("--images", type=int, default=1000,
                        help="builds to fill the store with and verify (default 1000)")
    parser.add_argument("--example", choices=("debian", "rpm", "all"), default="all",
                        help="examples for the chain's cost and verify-one (the fill is RPM)")
    parser.add_argument("--fill", choices=("distinct", "cached"), default="distinct",
                        help="distinct: one image per build (default); cached: one image")
    parser.add_argument("--verify-repeats", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=24.0,
                        help="time budget of the whole run: verifying the fill stops when "
                             "it would overrun (default 24)")
    parser.add_argument("--verify-all", action="store_true",
                        help="verify every filled build, whatever the time")
    parser.add_argument("--curve-every", type=int, default=100,
                        help="time one offline verify every N fill builds (default 100)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return worker_main(args.worker)
    if args.rounds < 1 or args.images < 1 or args.verify_repeats < 1:
        parser.error("--rounds, --images and --verify-repeats must be at least 1")
    tools = ["skopeo", "docker-registry", "dnf", "rpmbuild", "createrepo_c"]
    if args.example in ("debian", "all"):
        tools.append("mmdebstrap")
    for tool in tools:
        if shutil.which(tool) is None:
            say(f"chain_bench: {tool} is not installed (scripts/bootstrap installs it)")
            return 2
    if os.geteuid() != 0:
        say("chain_bench: the Debian compose runs mmdebstrap --mode=root: run as root")
        return 2

    info = machine()
    out_path = args.out or RESULTS / f"chain-{info['date'].replace(':', '')}.json"
    tmp = Path(tempfile.mkdtemp(prefix="alicorn-chain-bench-"))
    run = Run(tmp)
    say(f"ALICORN_HOME={run.home} (temporary)")
    results: dict[str, Any] = {
        "machine": info, "notes": [], "phases": {},
        "config": {"rounds": args.rounds, "images": args.images, "fill": args.fill,
                   "verify_repeats": args.verify_repeats, "minutes": args.minutes,
                   "verify_all": args.verify_all, "example": args.example},
    }
    failed: str | None = None
    try:
        rpm = rpm_example(tmp)
        if isinstance(rpm, str):
            raise BenchError(rpm)
        examples: list[Example] = []
        if args.example in ("debian", "all"):
            examples.append(debian_example())
        if args.example in ("rpm", "all"):
            examples.append(rpm)
        run.start_worker()

        # 1. the chain's cost on top of a build
        samples: dict[str, list[dict[str, Any]]] = {ex.name: [] for ex in examples}
        with phase(results, "chain", run):
            warmups = []
            for ex in examples:
                say(f"{ex.name}: warm-up build (not measured)")
                warmups.append(run.cli_build(ex))
            for r in range(args.rounds):
                for ex in (examples if r % 2 == 0 else list(reversed(examples))):
                    s = run.cli_build(ex)
                    s["round"] = r + 1
                    samples[ex.name].append(s)
                    say(f"{ex.name} round {r + 1}/{args.rounds}: build {s['seconds']:.2f} s, "
                        f"chain {s['chain'] * 1000:.0f} ms ({s['share'] * 100:.2f} %)")
        results["chain"] = {name: {**chain_summary(v), "samples": v}
                            for name, v in samples.items()}
        results["chain_warmups"] = warmups
        run.stop_worker()

        # 2. one image, while the log is small
        digests = {name: v[-1]["digest"] for name, v in samples.items()}
        with phase(results, "verify_one_before", run):
            results["verify_one_before_fill"] = run.verify_one(digests, args.verify_repeats)
        ids = [s["build_id"] for s in warmups] + \
            [s["build_id"] for v in samples.values() for s in v]
        results["online_by_build_id"] = run.online_by_build(ids)

        # 3. the fill, then verifying it
        with phase(results, "fill", run):
            fill = run.fill(rpm, args.images, args.fill, max(1, args.curve_every))
        results["fill"] = fill
        fill_ids = [s["build_id"] for s in fill["samples"]]
        # Keep three minutes for what follows the verification (verify-one, profile).
        deadline = None if args.verify_all else \
            time.monotonic() + max(60.0, args.minutes * 60 - run.elapsed() - 180)
        with phase(results, "verify_all", run):
            results["verify_all"] = run.verify_all(fill_ids, deadline)
        with phase(results, "verify_one_after", run):
            results["verify_one_after_fill"] = run.verify_one(digests, args.verify_repeats)
        with phase(results, "profile", run):
            pick = random.Random(1).sample(fill_ids, min(3, len(fill_ids)))
            results["profile"] = run.profile(pick)
        if args.fill == "distinct":
            for mode, m in results["verify_all"]["modes"].items():
                if m["failures"]:
                    run.failures.append(f"{len(m['failures'])} fill builds failed to verify "
                                        f"{mode}: {m['failures'][:3]}")
    except BenchError as e:
        failed = str(e)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        results["notes"] += run.cleanup()
        if args.keep or failed:
            say(f"kept {tmp} (logs under {run.logs}, builds under {run.home / 'builds'})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        say(f"chain_bench: {failed}")
        return 130 if failed == "interrupted" else 1

    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    info["run_seconds"] = round(run.elapsed(), 1)
    results["failures"] = run.failures
    print(f"{info['date']}  {info['host']}: {info['cpus']} cpus ({info['cpu_model']}), "
          f"{info['memory']}; load average {info['load_average_at_start'][0]} at start, "
          f"{info['load_average_at_end'][0]} at end; {info['run_seconds'] / 60:.1f} min; "
          f"alicorn at {info['git_commit']}"
          + (f" with {len(info['src_changes'])} changed file(s) in src/"
             if info["src_changes"] else ""))
    print()
    for name, s in results["chain"].items():
        print(chain_table(name, s))
        print()
    print(verify_one_table("verify one image, median of "
                           f"{args.verify_repeats}, before the fill",
                           results["verify_one_before_fill"]))
    print(verify_one_table("verify one image, after the fill", results["verify_one_after_fill"]))
    stale = [x for x in results["online_by_build_id"] if not x["verified"]]
    print(f"online verify of the example builds by build id: {len(stale)} of "
          f"{len(results['online_by_build_id'])} fail"
          + (f" ({stale[0]['broken']}: {stale[0]['detail']})" if stale else ""))
    print()
    f = results["fill"]
    print(f"fill: {f['builds']} {f['mode']} RPM-pony builds in {f['seconds_total']:.0f} s, "
          f"{f['distinct_digests']} image digest(s); per build median "
          f"{f['build_seconds']['median']:.3f} s, chain {f['chain_seconds']['median'] * 1000:.0f}"
          f" ms ({f['chain_share_median'] * 100:.1f} %; first {f['chain_seconds']['k']} "
          f"{f['chain_seconds']['first_k_median'] * 1000:.0f} ms, last "
          f"{f['chain_seconds']['last_k_median'] * 1000:.0f} ms)")
    ft = f["timers_median"]
    print("  chain parts (median ms): " + ", ".join(
        f"{PART_NAMES[p]} {f['parts_median'][p] * 1000:.1f}" for p in PARTS)
        + f"; {ft.get('registry_http.calls', 0):.0f} HTTP requests to the registry "
        f"({ft.get('registry_http', 0.0) * 1000:.0f} ms), gpg "
        f"{ft.get('gpg_sign', 0.0) * 1000:.0f} ms, sign_image "
        f"{ft.get('sign_image', 0.0) * 1000:.0f} ms, .att+.sbom "
        f"{ft.get('attach_att_sbom', 0.0) * 1000:.0f} ms")
    print("  one offline verify as the log grows: " + ", ".join(
        f"{c['signed_heads']} heads {c['offline_verify_seconds']:.3f} s" for c in f["curve"]))
    print()
    print(verify_all_table(results["verify_all"]))
    print()
    for key, lines in results["profile"].items():
        if "tottime" in key:
            print(f"profile, {key}:")
            body = [ln for ln in lines if ln.lstrip()[:1].isdigit() or "ncalls" in ln]
            print("\n".join("  " + ln for ln in body[:13]))
    for note in results["notes"]:
        print(f"note: {note}")
    for problem in run.failures:
        print(f"FAILED: {problem}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out_path}")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
