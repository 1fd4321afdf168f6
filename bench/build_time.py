"""How long an alicorn build takes, next to the bare tools that compose the same root.

    .venv/bin/python bench/build_time.py [--rounds N] [--example debian|rpm|all] [--out FILE]

Contenders, run side by side in one process and one fresh ALICORN_HOME (see bench/README.md):

floor           the composer's own tool (mmdebstrap / dnf) with exactly the argv that
                ``Composer.floor_argv`` gives, then ``tar -cf`` of the root: the least any
                builder has to do to turn these packages into one layer
alicorn         ``alicorn build RECIPE --no-cache --json``, end to end (queue, worker, compose,
                files, layer, image, push to the local registry), timed around the CLI call
alicorn-cached  ``alicorn build RECIPE --json`` with unchanged inputs: must reuse an image
buildah         the same floor compose, then buildah from scratch / mount / cp -a / config /
                commit to an oci-archive / rm

Every round runs each contender once, in an order rotated by one each round, so that machine
noise (mirror latency, page cache, a neighbour's load) falls on all of them alike.  All alicorn
--no-cache builds of the run, the unmeasured warm-up included, must give one image digest.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alicorn import __version__ as ALICORN_VERSION
from alicorn.compose import BuildContext, composer_for
from alicorn.monitor import Monitor
from alicorn.proc import BuildLog
from alicorn.recipe import Recipe, load_recipe

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
EXAMPLES = REPO / "examples" / "pony"
CONTENDERS = ("floor", "alicorn", "alicorn-cached", "buildah")
# alicorn builds a recipe file with SOURCE_DATE_EPOCH 0 unless told otherwise; the floor and
# buildah get the same so that all three compose the same root.
EPOCH = 0
# The alicorn/floor ratio the project aims for, and the cached build's time.
TARGET_RATIO = 1.15
TARGET_CACHED = 2.0


class BenchError(Exception):
    """A contender failed or the host cannot run the benchmark; printed without a traceback."""


@dataclass
class Sample:
    """One timed run of one contender."""

    seconds: float
    round: int
    position: int                # 0 = ran first in its round
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Example:
    """One recipe under test and what its contenders need."""

    name: str                    # "debian" | "rpm"
    recipe_path: Path
    recipe: Recipe
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    digests: list[str] = field(default_factory=list)   # every alicorn --no-cache build's


# -- running things -----------------------------------------------------------------------------

def sh(argv: list[str], *, env: dict[str, str] | None = None, log: Path | None = None,
       what: str | None = None) -> str:
    """Run ``argv``; return its stdout.  Output goes to ``log`` (appended) when one is given."""
    if log is not None:
        with open(log, "ab") as f:
            f.write(f"$ {shlex.join(argv)}\n".encode())
            proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=f,
                                  stdin=subprocess.DEVNULL)
            f.write(proc.stdout)
    else:
        proc = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = (proc.stderr or b"").decode(errors="replace").strip().splitlines()[-10:]
        where = f"; see {log}" if log is not None else ""
        raise BenchError(f"{what or Path(argv[0]).name} failed (exit {proc.returncode})"
                         f"{where}: {' | '.join(tail)}")
    return proc.stdout.decode(errors="replace")


def alicorn_bin() -> str:
    here = Path(sys.executable).parent / "alicorn"
    found = str(here) if here.exists() else shutil.which("alicorn")
    if found is None:
        raise BenchError("the alicorn command is not installed in this Python's environment")
    return found


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


# -- the contenders -----------------------------------------------------------------------------

class Bench:
    """The run's state: its temporary directory, ALICORN_HOME and buildah storage."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.home = tmp / "home"
        self.env = {**os.environ, "ALICORN_HOME": str(self.home)}
        self.alicorn = alicorn_bin()
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True)
        # Private buildah storage: the host's containers storage is neither used nor touched.
        # overlay is what this host's containers.conf picks; no "buildah run" happens, so no
        # runtime or isolation flag is needed.
        self.buildah = ["buildah", "--root", str(tmp / "buildah" / "root"),
                        "--runroot", str(tmp / "buildah" / "run"), "--storage-driver", "overlay"]
        self._serial = 0

    def _scratch(self, what: str) -> Path:
        self._serial += 1
        path = self.tmp / f"{what}-{self._serial}"
        path.mkdir()
        return path

    # alicorn ------------------------------------------------------------------------------------
    def alicorn_build(self, ex: Example, *, no_cache: bool) -> Sample:
        argv = [self.alicorn, "build", str(ex.recipe_path), "--json"]
        if no_cache:
            argv.insert(3, "--no-cache")
        wall0 = time.time()
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, cwd=REPO,
                              stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        wall1 = time.time()
        lines = proc.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError) as e:
            raise BenchError(f"alicorn build printed no result (exit {proc.returncode}): "
                             f"{proc.stderr.strip()[-500:]}") from e
        if result.get("state") != "done":
            raise BenchError(f"alicorn build {result.get('build_id')} {result.get('state')}: "
                             f"{result.get('error')} (log {result.get('log')})")
        if no_cache and result.get("cached_from"):
            raise BenchError(f"alicorn build --no-cache reused build {result['cached_from']}")
        if not no_cache and not result.get("cached_from"):
            raise BenchError(f"alicorn build {result['build_id']} with unchanged inputs did not "
                             "reuse an image (cached_from is empty)")
        detail = {"build_id": result["build_id"], "digest": result["digest"],
                  "image": result.get("image"),
                  "cached_from": result.get("cached_from"),
                  "phases": self._phases(result["build_id"], wall0, wall1)}
        return Sample(seconds, 0, 0, detail)

    def _phases(self, build_id: str, wall0: float, wall1: float) -> dict[str, float]:
        """Seconds per pipeline step, from the build's progress.jsonl (millisecond times).

        "queue" runs from the CLI call to the worker's first step (CLI start-up, submit, the
        worker's poll); "follow" from the worker's finish to the CLI's exit (the CLI's poll).
        """
        path = self.home / "builds" / build_id / "progress.jsonl"
        marks: list[tuple[str, float]] = []
        for line in path.read_text().splitlines():
            ev = json.loads(line)
            if ev["event"] == "step":
                marks.append((ev["name"], ev["t"]))
            elif ev["event"] == "finish":
                marks.append(("finish", ev["t"]))
        phases = {"queue": marks[0][1] - wall0} if marks else {}
        for (name, t), (_, t_next) in itertools.pairwise(marks):
            phases[name] = phases.get(name, 0.0) + t_next - t
        if marks:
            phases["follow"] = wall1 - marks[-1][1]
        return {k: round(v, 3) for k, v in phases.items()}

    # floor --------------------------------------------------------------------------------------
    def _floor_setup(self, ex: Example, scratch: Path) -> tuple[list[str], dict[str, str], Path]:
        """The floor's argv, environment and (empty) root, made before the clock starts."""
        cache = self.home / "cache" / ex.recipe.distribution
        cache.mkdir(parents=True, exist_ok=True)
        ctx = BuildContext(log=BuildLog(scratch / "composer.log"), monitor=Monitor(),
                           workdir=scratch / "work", cache_dir=cache, source_date_epoch=EPOCH)
        ctx.workdir.mkdir(mode=0o700)
        rootfs = scratch / "rootfs"
        rootfs.mkdir()
        argv = composer_for(ex.recipe, ctx).floor_argv(rootfs)
        ctx.log.close()
        # What alicorn's composers add to the environment (the RPM floor_argv carries its own
        # through env(1)).
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "LC_ALL": "C.UTF-8"}
        return argv, env, rootfs

    def floor(self, ex: Example) -> Sample:
        scratch = self._scratch(f"floor-{ex.name}")
        log = self.logs / f"{scratch.name}.log"
        argv, env, rootfs = self._floor_setup(ex, scratch)
        out = scratch / "out.tar"
        t0 = time.perf_counter()
        sh(argv, env=env, log=log, what="floor compose")
        t1 = time.perf_counter()
        sh(["tar", "-C", str(rootfs), "-cf", str(out), "."], log=log, what="floor tar")
        t2 = time.perf_counter()
        detail = {"compose": round(t1 - t0, 3), "tar": round(t2 - t1, 3),
                  "tar_bytes": out.stat().st_size}
        shutil.rmtree(scratch)
        return Sample(t2 - t0, 0, 0, detail)

    # buildah ------------------------------------------------------------------------------------
    def _buildah_config(self, recipe: Recipe, ctr: str) -> list[str]:
        argv = [*self.buildah, "config"]
        if recipe.entrypoint:
            argv += ["--entrypoint", json.dumps(list(recipe.entrypoint))]
        for port in recipe.ports:
            argv += ["--port", f"{port}/tcp"]
        if recipe.stop_signal:
            argv += ["--stop-signal", recipe.stop_signal]
        if recipe.user:
            argv += ["--user", recipe.user]
        if recipe.workdir:
            argv += ["--workingdir", recipe.workdir]
        return [*argv, ctr]

    def buildah_build(self, ex: Example) -> Sample:
        scratch = self._scratch(f"buildah-{ex.name}")
        log = self.logs / f"{scratch.name}.log"
        argv, env, rootfs = self._floor_setup(ex, scratch)
        out = scratch / "image.oci.tar"
        b = self.buildah
        t0 = time.perf_counter()
        sh(argv, env=env, log=log, what="buildah's compose")
        t1 = time.perf_counter()
        ctr = sh([*b, "from", "--quiet", "scratch"], log=log).strip()
        mnt = sh([*b, "mount", ctr], log=log).strip()
        sh(["cp", "-a", f"{rootfs}/.", f"{mnt}/"], log=log, what="cp -a into the container")
        sh(self._buildah_config(ex.recipe, ctr), log=log)
        sh([*b, "commit", "--quiet", "--timestamp", str(EPOCH), ctr, f"oci-archive:{out}"],
           log=log, what="buildah commit")
        sh([*b, "rm", ctr], log=log)
        t2 = time.perf_counter()
        detail = {"compose": round(t1 - t0, 3), "buildah": round(t2 - t1, 3),
                  "archive_bytes": out.stat().st_size}
        shutil.rmtree(scratch)
        return Sample(t2 - t0, 0, 0, detail)

    def buildah_warm(self) -> None:
        """Create buildah's storage outside the clock (its first use initialises it)."""
        ctr = sh([*self.buildah, "from", "--quiet", "scratch"]).strip()
        sh([*self.buildah, "rm", ctr])

    def _forget_registry(self) -> list[str]:
        """Remove the registries.conf.d entry alicorn wrote for this run's registry.

        alicorn trusts its loopback registry by writing a file named after the port, and
        ``alicorn down`` leaves it; a fresh ALICORN_HOME gets a new port each run, so without
        this every run would leave one more file in /etc/containers behind.
        """
        try:
            port = json.loads((self.home / "config.json").read_text())["registry_port"]
        except (OSError, ValueError, KeyError):
            return []
        path = Path("/etc/containers/registries.conf.d") / f"50-alicorn-127.0.0.1-{port}.conf"
        try:
            if path.read_text().startswith("# Written by alicorn"):
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            return [f"could not remove {path}: {e.strerror}"]
        return []

    def cleanup(self) -> list[str]:
        """Stop what alicorn started, release buildah's storage; returns what went wrong."""
        problems = []
        down = subprocess.run([self.alicorn, "down"], env=self.env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        if down.returncode != 0:
            problems.append(f"alicorn down failed: {down.stderr.strip()}")
        problems += self._forget_registry()
        if (self.tmp / "buildah").exists():
            for argv in ([*self.buildah, "rm", "--all"], [*self.buildah, "rmi", "--all"]):
                subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL)
            # overlay storage may keep mounts below its root; never delete through a mount.
            root = str(self.tmp)
            with open("/proc/self/mounts") as f:
                mounts = [ln.split()[1] for ln in f if ln.split()[1].startswith(root)]
            for m in sorted(mounts, reverse=True):
                subprocess.run(["umount", m], capture_output=True)
        return problems


# -- examples -----------------------------------------------------------------------------------

def debian_example() -> Example:
    path = EXAMPLES / "debian" / "pony.yaml"
    return Example("debian", path, load_recipe(path))


def rpm_example(tmp: Path) -> Example | str:
    """The RPM example in a private copy with its repository built, or why it is skipped."""
    src = EXAMPLES / "rpm"
    missing = [n for n in ("pony.yaml", "build-repo") if not (src / n).is_file()]
    if missing:
        return f"rpm example skipped: {', '.join(f'{src}/{n}' for n in missing)} missing"
    # A copy, so that the example's own repo/ (someone else's working tree) is left alone; the
    # recipe's repository url "repo" is relative to the recipe, so it lands beside the copy.
    copy = tmp / "example-rpm"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("repo", "__pycache__"))
    sh([sys.executable, str(copy / "build-repo"), str(copy / "repo")], log=tmp / "logs" /
       "build-repo.log", what="build-repo")
    path = copy / "pony.yaml"
    return Example("rpm", path, load_recipe(path))


# -- the run ------------------------------------------------------------------------------------

def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_example(bench: Bench, ex: Example, rounds: int) -> None:
    runners: dict[str, Callable[[], Sample]] = {
        "floor": lambda: bench.floor(ex),
        "alicorn": lambda: bench.alicorn_build(ex, no_cache=True),
        "alicorn-cached": lambda: bench.alicorn_build(ex, no_cache=False),
        "buildah": lambda: bench.buildah_build(ex),
    }
    # Unmeasured: starts the worker and the registry, fills the package cache that the floor
    # and buildah share with alicorn, and leaves an image for alicorn-cached to reuse.
    say(f"{ex.name}: warm-up build (not measured)")
    warm = bench.alicorn_build(ex, no_cache=True)
    ex.digests.append(warm.detail["digest"])
    ex.samples = {name: [] for name in CONTENDERS}
    for r in range(rounds):
        order = CONTENDERS[r % len(CONTENDERS):] + CONTENDERS[:r % len(CONTENDERS)]
        for pos, name in enumerate(order):
            load = os.getloadavg()[0]
            sample = runners[name]()
            sample.round, sample.position = r + 1, pos
            sample.detail["load_before"] = round(load, 2)
            ex.samples[name].append(sample)
            if name == "alicorn":
                ex.digests.append(sample.detail["digest"])
            say(f"{ex.name} round {r + 1}/{rounds}: {name:<15} {sample.seconds:7.2f} s")


def summary(ex: Example) -> dict[str, Any]:
    stats: dict[str, dict[str, float]] = {}
    for name, samples in ex.samples.items():
        secs = [s.seconds for s in samples]
        stats[name] = {"median": round(statistics.median(secs), 3), "min": round(min(secs), 3),
                       "max": round(max(secs), 3)}
    floor = stats["floor"]["median"]

    def paired(name: str) -> list[float]:
        return [round(a.seconds / f.seconds, 3)
                for a, f in zip(ex.samples[name], ex.samples["floor"], strict=True)]

    # The composes are the same argv, yet one mirror hiccup or a neighbour's load moves them by
    # seconds; what each contender adds on top of its own compose is far steadier.
    compose = {
        "floor": [x.detail["compose"] for x in ex.samples["floor"]],
        "alicorn": [x.detail["phases"].get("compose", 0.0) for x in ex.samples["alicorn"]],
        "buildah": [x.detail["compose"] for x in ex.samples["buildah"]],
    }
    overhead = {
        "floor (tar)": [x.detail["tar"] for x in ex.samples["floor"]],
        "alicorn": [x.seconds - x.detail["phases"].get("compose", 0.0)
                    for x in ex.samples["alicorn"]],
        "buildah": [x.detail["buildah"] for x in ex.samples["buildah"]],
    }
    med_compose = statistics.median(compose["floor"])
    med_over = {k: statistics.median(v) for k, v in overhead.items()}
    same_compose = (med_compose + med_over["alicorn"]) / (med_compose + med_over["floor (tar)"])
    phases: dict[str, dict[str, float]] = {}
    for name in ("alicorn", "alicorn-cached"):
        keys = dict.fromkeys(k for s in ex.samples[name] for k in s.detail["phases"])
        phases[name] = {k: round(statistics.median(s.detail["phases"].get(k, 0.0)
                                                   for s in ex.samples[name]), 3) for k in keys}
    return {
        "stats": stats,
        "ratios": {
            "alicorn/floor": round(stats["alicorn"]["median"] / floor, 3),
            "buildah/floor": round(stats["buildah"]["median"] / floor, 3),
            "alicorn/floor per round": paired("alicorn"),
            "buildah/floor per round": paired("buildah"),
            "alicorn/floor at equal compose time": round(same_compose, 3),
        },
        "compose_seconds": {k: {"median": round(statistics.median(v), 3),
                                "min": round(min(v), 3), "max": round(max(v), 3)}
                            for k, v in compose.items()},
        "overhead_beyond_compose_seconds": {
            k: {"median": round(statistics.median(v), 3), "min": round(min(v), 3),
                "max": round(max(v), 3)} for k, v in overhead.items()},
        "alicorn_cached_seconds": stats["alicorn-cached"]["median"],
        "targets_met": {
            f"alicorn/floor <= {TARGET_RATIO}":
                stats["alicorn"]["median"] / floor <= TARGET_RATIO,
            f"alicorn-cached <= {TARGET_CACHED} s":
                stats["alicorn-cached"]["median"] <= TARGET_CACHED,
        },
        "reproducible": len(set(ex.digests)) == 1,
        "digests": ex.digests,
        "alicorn_phases_median": phases,
    }


def table(ex: Example, s: dict[str, Any]) -> str:
    where = (ex.recipe_path.relative_to(REPO) if ex.recipe_path.is_relative_to(REPO)
             else f"{ex.recipe.name} (a temporary copy of examples/pony/{ex.name})")
    rows = [f"{ex.name}: {where}",
            f"  {'contender':<15} {'median':>8} {'min':>8} {'max':>8} {'/floor':>7}"]
    floor = s["stats"]["floor"]["median"]
    for name in CONTENDERS:
        st = s["stats"][name]
        rows.append(f"  {name:<15} {st['median']:>7.2f}s {st['min']:>7.2f}s {st['max']:>7.2f}s "
                    f"{st['median'] / floor:>7.3f}")
    r = s["ratios"]
    met = s["targets_met"]
    rows += [
        f"  alicorn/floor  {r['alicorn/floor']:.3f} (target <= {TARGET_RATIO}: "
        f"{'met' if met[f'alicorn/floor <= {TARGET_RATIO}'] else 'NOT met'}; per round "
        f"{', '.join(f'{x:.3f}' for x in r['alicorn/floor per round'])})",
        f"  buildah/floor  {r['buildah/floor']:.3f}",
        "  compose alone (s, median [min-max]): " + ", ".join(
            f"{k} {v['median']:.2f} [{v['min']:.2f}-{v['max']:.2f}]"
            for k, v in s["compose_seconds"].items()),
        "  added beyond the compose (s, median [min-max]): " + ", ".join(
            f"{k} {v['median']:.2f} [{v['min']:.2f}-{v['max']:.2f}]"
            for k, v in s["overhead_beyond_compose_seconds"].items()),
        f"  alicorn/floor at equal compose time {r['alicorn/floor at equal compose time']:.3f}",
        f"  alicorn-cached {s['alicorn_cached_seconds']:.2f} s (target <= {TARGET_CACHED} s: "
        f"{'met' if met[f'alicorn-cached <= {TARGET_CACHED} s'] else 'NOT met'})",
        f"  reproducible   {'yes' if s['reproducible'] else 'NO'}: "
        f"{len(s['digests'])} --no-cache builds, "
        f"{len(set(s['digests']))} digest(s) {', '.join(sorted(set(s['digests'])))}",
    ]
    for name, phases in s["alicorn_phases_median"].items():
        rows.append(f"  {name} phases (median s): "
                    + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    return "\n".join(rows)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    # Others may be editing src/ while this runs: say which files differed from the commit.
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.split("\n")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(), "cpus": os.cpu_count(), "cpu_model": model, "memory": mem,
        "kernel": platform.release(), "python": platform.python_version(),
        "alicorn": ALICORN_VERSION, "git_commit": commit or None,
        "src_changes": [ln.strip() for ln in dirty if ln.strip()],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "tools": {
            "mmdebstrap": tool_version(["mmdebstrap", "--version"]),
            "dnf": tool_version(["dnf", "--version"]),
            "buildah": tool_version(["buildah", "--version"]),
            "skopeo": tool_version(["skopeo", "--version"]),
            "tar": tool_version(["tar", "--version"]),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per example (default 3)")
    parser.add_argument("--example", choices=("debian", "rpm", "all"), default="all")
    parser.add_argument("--out", type=Path, help="results JSON (default: bench/results/"
                        "build_time-<UTC time>.json)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs, ALICORN_HOME) for inspection")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for tool in ("mmdebstrap", "buildah", "tar", "skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            say(f"build_time: {tool} is not installed (scripts/bootstrap installs it)")
            return 2
    if os.geteuid() != 0:
        say("build_time: the floor runs mmdebstrap --mode=root and buildah mount: run as root")
        return 2

    info = machine()
    out_path = args.out or RESULTS / f"build_time-{info['date'].replace(':', '')}.json"
    tmp = Path(tempfile.mkdtemp(prefix="alicorn-bench-"))
    bench = Bench(tmp)
    say(f"ALICORN_HOME={bench.home} (temporary)")
    examples: list[Example] = []
    notes: list[str] = []
    failed: str | None = None
    try:
        bench.buildah_warm()
        if args.example in ("debian", "all"):
            examples.append(debian_example())
        if args.example in ("rpm", "all"):
            rpm = rpm_example(tmp)
            if isinstance(rpm, str):
                if args.example == "rpm":
                    raise BenchError(rpm)
                notes.append(rpm)
                say(rpm)
            else:
                examples.append(rpm)
        for ex in examples:
            run_example(bench, ex, args.rounds)
    except BenchError as e:
        failed = str(e)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        notes += bench.cleanup()
        if args.keep or failed:
            say(f"kept {tmp} (logs under {tmp / 'logs'}, builds under {bench.home / 'builds'})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        say(f"build_time: {failed}")
        return 130 if failed == "interrupted" else 1

    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, Any] = {"machine": info, "rounds": args.rounds, "notes": notes,
                               "examples": {}}
    print(f"{info['date']}  {info['host']}: {info['cpus']} cpus ({info['cpu_model']}), "
          f"{info['memory']}; load average {info['load_average_at_start'][0]} at start, "
          f"{info['load_average_at_end'][0]} at end; alicorn at {info['git_commit']}"
          + (f" with {len(info['src_changes'])} changed file(s) in src/"
             if info["src_changes"] else ""))
    print()
    for ex in examples:
        s = summary(ex)
        results["examples"][ex.name] = {
            "recipe": str(ex.recipe_path), "recipe_digest": str(ex.recipe.digest), **s,
            "samples": {name: [{"seconds": round(x.seconds, 3), "round": x.round,
                                "position": x.position, **x.detail} for x in samples]
                        for name, samples in ex.samples.items()},
        }
        print(table(ex, s))
        print()
    for note in notes:
        print(f"note: {note}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
