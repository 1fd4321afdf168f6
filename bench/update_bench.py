#!/usr/bin/env python3
"""Updating a running module under load: Alicorn's rollout beside a stop-and-start update.

    .venv/bin/python bench/update_bench.py [--rate 600] [--requests 20000] [--json FILE]
    .venv/bin/python bench/update_bench.py --quick          # shorter: 3 s before, peers to v2 only
    .venv/bin/python bench/update_bench.py --home DIR       # build the images once, reuse them

The pony images are built first, in a temporary ALICORN_HOME, as tests/conftest.py's
``pony_images`` builds them (the recipe variants are replicated below): ``v1`` (busybox
1.35.0-1), ``v2`` (after the repository got 1.35.0-2), ``broken`` (its web server answers 404
from the start) and ``soured`` (serves for SOURED_AFTER seconds after it starts, then its web
server stops: connections refused, the container keeps running).

Then, each scenario under its own steady open-loop load (alicorn.rollout.load.Load, ``--rate``
requests per second over keep-alive connections, nothing retried), which runs ``--before``
seconds before the operation, through it, and after it until the scenario has ``--requests``
requests (and at least ``--after`` seconds):

a. ``update``: module deployed with v1 (2 replicas behind HAProxy), Controller.update to v2;
b. ``broken``: Controller.update to broken (must roll back before the switch);
c. ``soured``: Controller.update to soured (must roll back during the soak); the time from
   bad health to traffic back on the old digest comes from the soured containers' start
   (podman's StartedAt + SOURED_AFTER) and the controller's events;
d. the peer, what ``podman auto-update`` does to each container's unit: ``podman stop`` (its
   default 10 s grace), ``podman rm``, ``podman run`` of the new image on the same published
   port, one container after the other, no readiness wait and no rollback (auto-update rolls
   back only when a unit fails to start, and these start): v1 → v2 (d1) behind the same
   HAProxy as Alicorn's (its class, so the same checks, retries, redispatch and
   mark-down-on-error; the two servers set once, never changed), (d1') behind a plain
   hand-written HAProxy (checks every 1 s, fall 2, 3 retries, redispatch), (d2) straight on
   the two published ports (the load split in two halves); then (d3) v1 → broken and (d4)
   v1 → soured behind the plain HAProxy (not with --quick).

A table goes to stdout; ``--json FILE`` gets every figure, the per-second buckets and the
controller's events.  Exit status: 0 done, 1 a scenario failed to run, 2 a tool is missing,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE = ROOT / "examples" / "pony" / "rpm"
sys.path.insert(0, str(ROOT / "src"))
ALICORN = [sys.executable, "-m", "alicorn"]

from alicorn.errors import Error  # noqa: E402
from alicorn.rollout.load import Load, LoadResult, Record, summarize  # noqa: E402

PAGE = "Hello from pony"
SOURED_AFTER = 6          # tests/conftest.py PonyImages.SOURED_AFTER
BB = "/usr/bin/busybox"
TOOLS = ("rpmbuild", "createrepo_c", "dnf", "busybox", "podman", "skopeo", "docker-registry",
         "haproxy")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def sh(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True,
       timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def podman(*args: str, check: bool = True, timeout: float = 300) -> str:
    return sh(["podman", *args], check=check, timeout=timeout).stdout


def free_port() -> int:
    from alicorn.config import free_port as fp
    return fp()


# -- the images ----------------------------------------------------------------------------------

def _variant(example: Path, name: str, entrypoint: list[str]) -> Path:
    """pony.yaml with another entrypoint and tag (as tests/conftest.py's _pony_variant)."""
    lines = [("entrypoint: " + json.dumps(entrypoint)) if line.startswith("entrypoint:")
             else line for line in (example / "pony.yaml").read_text().splitlines()]
    path = example / f"{name}.yaml"
    path.write_text("\n".join([*lines, f"tag: {name}"]) + "\n")
    return path


class Home:
    """An ALICORN_HOME holding the four pony images (built once; ``images.json`` keeps them)."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.example = root / "pony"
        self.env = {**os.environ, "ALICORN_HOME": str(self.home)}
        self.images: dict[str, dict[str, Any]] = {}

    def alicorn(self, *args: str, check: bool = True,
                timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return sh([*ALICORN, *args], env=self.env, check=check, timeout=timeout)

    def build(self, recipe: Path, *extra: str) -> dict[str, Any]:
        out = self.alicorn("build", str(recipe), "--json", *extra).stdout
        result: dict[str, Any] = json.loads(out.splitlines()[-1])
        if result.get("state") != "done":
            raise RuntimeError(f"building {recipe.name} failed: {result}")
        return result

    def prepare(self) -> None:
        saved = self.root / "images.json"
        if saved.exists():
            self.images = json.loads(saved.read_text())
            self.alicorn("registry", "start", check=False)   # the registry may be down
            return
        shutil.copytree(EXAMPLE, self.example, ignore=shutil.ignore_patterns("repo"))

        def repo(version: str) -> None:
            sh([str(self.example / "build-repo"), str(self.example / "repo"), "--version",
                version])

        broken = _variant(self.example, "broken", [BB, "httpd", "-f", "-v", "-p", "80", "-h",
                                                   "/etc"])
        soured = _variant(self.example, "soured", [
            BB, "sh", "-c", f"{BB} httpd -f -p 80 -h /var/www/html & {BB} sleep "
                            f"{SOURED_AFTER}; kill $!; exec {BB} sleep 1000000"])
        repo("1")
        t0 = time.monotonic()
        self.images["broken"] = self.build(broken, "--skip-checks")
        self.images["soured"] = self.build(soured, "--skip-checks")
        self.images["v1"] = self.build(self.example / "pony.yaml")
        repo("both")
        self.images["v2"] = self.build(self.example / "pony.yaml")
        say(f"images built in {time.monotonic() - t0:.0f} s: " + ", ".join(
            f"{k} {v['digest'][:19]}" for k, v in self.images.items()))
        saved.write_text(json.dumps(self.images, indent=2) + "\n")

    def cleanup(self) -> list[str]:
        problems = []
        down = self.alicorn("down", check=False, timeout=120)
        if down.returncode != 0:
            problems.append(f"alicorn down failed: {down.stderr.strip()}")
        try:
            port = json.loads((self.home / "config.json").read_text())["registry_port"]
            path = Path("/etc/containers/registries.conf.d") / \
                f"50-alicorn-127.0.0.1-{port}.conf"
            if path.exists() and path.read_text().startswith("# Written by alicorn"):
                path.unlink()
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"could not check the registries.conf.d file: {e}")
        return problems


# -- running a scenario under load ---------------------------------------------------------------

class Scenario:
    """One operation under one steady load (or two halves of it, for the proxy-less peer)."""

    def __init__(self, args: argparse.Namespace, urls: list[str]):
        self.args = args
        self.loads = [Load(u, rate=args.rate / len(urls), contains=PAGE,
                           connections=max(4, args.connections // len(urls)),
                           timeout=args.timeout) for u in urls]
        self.marks: dict[str, float] = {}

    def run(self, operation: Callable[[], dict[str, Any]], *,
            after_s: float | None = None) -> dict[str, Any]:
        a = self.args
        for load in self.loads:
            load.start()
        try:
            time.sleep(a.before)
            self.marks["start"] = time.time()
            detail = operation()
            self.marks["end"] = time.time()
            # Enough requests in all, and some time after the operation (a stop-and-start
            # peer's new container may still be coming up; a rollout's old replicas drain).
            t_after = time.monotonic() + (a.after if after_s is None else after_s)
            while True:
                total = sum(len(load.records()) for load in self.loads)
                if total >= a.requests and time.monotonic() >= t_after:
                    break
                time.sleep(0.25)
        finally:
            for load in self.loads:
                load.stop()
        records = sorted((r for load in self.loads for r in load.records()),
                         key=lambda r: r.due)
        t0 = min(r.due for r in records)
        t1 = max(r.due for r in records) + 1e-6
        whole = summarize(records, t0, t1)
        before = summarize(records, t0, self.marks["start"])
        during = summarize(records, self.marks["start"], self.marks["end"])
        after = summarize(records, self.marks["end"], t1)
        return {"marks": self.marks, "operation_s": self.marks["end"] - self.marks["start"],
                "longest_gap_s": round(max(longest_gap(load.records()) for load in self.loads),
                                       3),
                "connections_opened": sum(load.connections_opened for load in self.loads),
                "load": brief(whole), "before": brief(before), "during": brief(during),
                "after": brief(after), "buckets": [b.as_json() for b in whole.buckets],
                "backlog_max": max(load.backlog_max for load in self.loads),
                "failures": failure_spans(records), **detail}


def brief(r: LoadResult) -> dict[str, Any]:
    out = r.as_json()
    out.pop("buckets")
    return out


def longest_gap(records: list[Record]) -> float:
    """The longest time in which no request got a good answer (answers' end times; records
    in due order): the downtime a client sees, whether requests failed or hung meanwhile."""
    ends = sorted(r.due + r.latency for r in records if r.error is None)
    if not records:
        return 0.0
    # From the load's start and up to its end: an outage still going on when the load
    # stops counts up to there.
    ends = [records[0].due, *ends, max(r.due + r.latency for r in records)]
    return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)


def failure_spans(records: list[Record], gap: float = 0.5) -> list[dict[str, Any]]:
    """Runs of failed requests (a run ends when ``gap`` seconds pass without a failure)."""
    spans: list[dict[str, Any]] = []
    for r in records:
        if r.error is None:
            continue
        if spans and r.due - spans[-1]["last"] <= gap:
            spans[-1]["last"] = r.due
            spans[-1]["count"] += 1
            spans[-1]["errors"][r.error] = spans[-1]["errors"].get(r.error, 0) + 1
        else:
            spans.append({"first": r.due, "last": r.due, "count": 1, "errors": {r.error: 1}})
    for s in spans:
        s["seconds"] = round(s["last"] - s["first"], 3)
    return spans


def _podman_time(text: str) -> float:
    """podman's ``2026-12-02 06:20:01.123456789 +0000 UTC`` as a POSIX time."""
    date, clock, zone = text.split()[:3]
    whole, _, frac = clock.partition(".")
    t = datetime.strptime(f"{date} {whole} {zone}", "%Y-%m-%d %H:%M:%S %z").timestamp()
    return t + (float("0." + frac) if frac else 0.0)


class StartWatcher:
    """Notes when containers with a given label started (podman's StartedAt), while they
    exist: the soured replicas are gone once rolled back."""

    def __init__(self, *filters: str):
        self.filters = [f for flt in filters for f in ("--filter", flt)]
        self.started: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StartWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            proc = sh(["podman", "ps", "--format", "{{.Names}}", *self.filters], check=False,
                      timeout=30)
            for name in proc.stdout.split():
                if name in self.started:
                    continue
                out = sh(["podman", "inspect", "--format", "{{.State.StartedAt}}", name],
                         check=False, timeout=30).stdout.strip()
                with contextlib.suppress(ValueError, IndexError):
                    t = _podman_time(out)
                    if t > 0:
                        self.started[name] = t


# -- a) b) c): Alicorn ---------------------------------------------------------------------------

def _events(ctl: Any, module: str, op: str | None) -> list[dict[str, Any]]:
    status: dict[str, Any] = ctl.status(module)
    events: list[dict[str, Any]] = status.get("events") or []
    return [e for e in events if op is None or e.get("op") == op]


def _iso(text: str) -> float:
    t = datetime.fromisoformat(text)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()   # naive = UTC here


def alicorn_scenarios(args: argparse.Namespace, home: Home, out: dict[str, Any]) -> bool:
    from alicorn.config import load_settings
    from alicorn.rollout.controller import Controller
    settings = load_settings(home.home)
    ctl = Controller(settings)
    module = f"ubench-{os.getpid()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    img = home.images
    ok = True
    try:
        t0 = time.monotonic()
        deployed = ctl.deploy(module, img["v1"]["image"], port=port, replicas=2,
                              address="127.0.0.1", soak=args.soak, drain=args.drain,
                              deadline=args.deadline)
        say(f"deployed {module} (v1, 2 replicas) on :{port} in {time.monotonic() - t0:.1f} s:"
            f" {deployed.result}")
        out["alicorn_deploy"] = deployed.as_json()

        def update(to: str) -> Callable[[], dict[str, Any]]:
            def op() -> dict[str, Any]:
                outcome = ctl.update(module, to=img[to]["image"])
                return {"outcome": outcome.as_json(),
                        "events": _events(ctl, module, outcome.op_id)}
            return op

        expected = {"update": ("v2", "updated"), "broken": ("broken", "rolled_back"),
                    "soured": ("soured", "rolled_back")}
        for name, (to, want) in expected.items():
            say(f"{name}: update to {to} under {args.rate:g} req/s …")
            watcher = StartWatcher(f"label=org.alicorn.module={module}",
                                   f"label=org.alicorn.digest={img[to]['digest']}")
            try:
                with watcher:
                    res = Scenario(args, [url]).run(update(to))
            except (RuntimeError, OSError, Error) as e:
                say(f"  {name} could not run: {e}")
                out[name] = {"error": str(e)}
                ok = False
                continue
            res["new_started"] = watcher.started
            res["expected"] = want
            res["as_expected"] = res["outcome"]["result"] == want
            ok &= res["as_expected"]
            if name == "soured":
                res["recovery"] = soured_recovery(res, watcher.started)
            out[name] = res
            say(f"  {res['outcome']['result']} ({res['outcome'].get('reason')}); "
                f"{res['load']['failed']} failed of {res['load']['requests']}; "
                f"p99 before {res['before']['p99_ms']:.1f} ms, during "
                f"{res['during']['p99_ms']:.1f} ms; {res['operation_s']:.1f} s")
    finally:
        with contextlib.suppress(Exception):
            ctl.remove(module)
    return ok


def soured_recovery(res: dict[str, Any], started: dict[str, float]) -> dict[str, Any]:
    """Bad health → traffic back on the old digest, from podman's start times and the
    controller's events (their ``at`` and ``kind``)."""
    events = res["events"]
    rec: dict[str, Any] = {"event_kinds": [e["kind"] for e in events]}
    if started:
        # The first soured replica to start is the first whose web server stops.
        rec["bad_health_at"] = min(started.values()) + SOURED_AFTER
        rec["bad_health_source"] = (f"first soured container's StartedAt + {SOURED_AFTER} s "
                                    "(its web server stops then)")
    # The controller records its "rollback" event right after the proxy got the old
    # replicas back as its only servers: traffic is back on the old digest then.
    back = [e for e in events if e["kind"] == "rollback"]
    if back:
        rec["traffic_back_at"] = _iso(back[0]["at"])
        rec["traffic_back_message"] = back[0]["message"]
    rec["op_end_at"] = res["marks"]["end"]
    outcome = res.get("outcome", {})
    for key in ("failure_to_switch_s", "detected_to_switch_s"):
        if key in outcome:
            rec[f"controller_{key}"] = outcome[key]
    if "bad_health_at" in rec:
        for key in ("traffic_back_at", "op_end_at"):
            if key in rec:
                rec[key.removesuffix("_at") + "_after_bad_s"] = round(
                    rec[key] - rec["bad_health_at"], 3)
    return rec


# -- d) the peer: stop and start -----------------------------------------------------------------

_PEER_RUNS = itertools.count(1)

PLAIN_HAPROXY = """\
global
    maxconn 4096
    pidfile {pidfile}
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 10s
    timeout http-keep-alive 10s
    retries 3
    option redispatch
    option http-server-close
frontend www
    bind 127.0.0.1:{port}
    default_backend pony
backend pony
    balance roundrobin
    option httpchk GET /
    default-server check inter 1s fall 2 rise 2
{servers}
"""


class Peer:
    """Two pony containers on published ports, updated as podman auto-update restarts their
    units: stop (10 s grace), rm, run the new image on the same port, one after the other."""

    def __init__(self, tmp: Path, images: dict[str, dict[str, Any]], tag: str):
        from alicorn.run.podman import ulimit_args
        self.tmp = tmp
        self.images = images
        # Unique per run: a proxy directory of an earlier round must not be reused.
        self.prefix = f"ubench-peer-{os.getpid()}-{next(_PEER_RUNS)}-{tag}"
        self.ports = [free_port(), free_port()]
        self.names = [f"{self.prefix}-{i}" for i in range(2)]
        self.ulimits = ulimit_args()
        self.haproxy: Any = None
        self.haproxy_pid: int | None = None

    def run(self, i: int, image: str) -> None:
        podman("run", "--detach", "--name", self.names[i], *self.ulimits,
               "--label", f"org.alicorn.bench={self.prefix}",
               "--publish", f"127.0.0.1:{self.ports[i]}:80", image)

    def wait(self, port: int, timeout: float = 60) -> float:
        from alicorn.run.podman import wait_http
        t0 = time.monotonic()
        wait_http(f"http://127.0.0.1:{port}/", timeout=timeout, contains=PAGE)
        return time.monotonic() - t0

    def start(self, image: str) -> None:
        for i in range(2):
            self.run(i, image)
        for p in self.ports:
            self.wait(p)

    def proxy(self, image: str) -> int:
        """Alicorn's own HAProxy (same configuration, checks, retries and redispatch) with the
        two containers as its servers, set once and never changed: only the orchestration
        differs from the rollout's."""
        from alicorn.rollout.haproxy import HAProxy
        from alicorn.rollout.model import Backend
        from alicorn.rollout.replicas import image_facts
        port = free_port()
        self.haproxy = HAProxy(self.tmp / f"{self.prefix}-proxy", module=self.prefix,
                               address="127.0.0.1", port=port,
                               readiness=image_facts(image).readiness)
        self.haproxy.start()
        self.haproxy.set_backends([Backend(name=n, host="127.0.0.1", port=p)
                                   for n, p in zip(self.names, self.ports, strict=True)])
        self.wait(port)
        return port

    def plain_proxy(self) -> int:
        """A plain HAProxy: health checks every second, 3 retries, redispatch (no observe,
        no retry-on), as one would write it by hand."""
        port = free_port()
        pidfile = self.tmp / f"{self.prefix}.pid"
        servers = "\n".join(f"    server r{i} 127.0.0.1:{p}" for i, p in enumerate(self.ports))
        cfg = self.tmp / f"{self.prefix}.cfg"
        cfg.write_text(PLAIN_HAPROXY.format(port=port, pidfile=pidfile, servers=servers))
        sh(["haproxy", "-D", "-f", str(cfg)])
        self.haproxy_pid = int(pidfile.read_text().split()[0])
        self.wait(port)
        return port

    def update(self, image: str) -> dict[str, Any]:
        steps = []
        for i in range(2):
            t0 = time.time()
            podman("stop", self.names[i])           # podman's default: 10 s, then SIGKILL
            t1 = time.time()
            podman("rm", self.names[i])
            t2 = time.time()
            # Like auto-update's restart of the unit: done once podman run returns; no
            # readiness wait, no look at the answers (it rolls back only when the unit
            # fails to start, and these containers start).
            self.run(i, image)
            t3 = time.time()
            steps.append({"container": self.names[i], "stop_s": round(t1 - t0, 3),
                          "rm_s": round(t2 - t1, 3), "run_s": round(t3 - t2, 3)})
        return {"steps": steps}

    def cleanup(self) -> None:
        if self.haproxy is not None:
            with contextlib.suppress(Exception):
                self.haproxy.stop()
            self.haproxy = None
        if self.haproxy_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.haproxy_pid, 15)
            self.haproxy_pid = None
        podman("rm", "--force", "--ignore", *self.names, check=False)


#: The peer's runs: (key, in front of the containers, the image they move to).
PEERS = [("peer_haproxy", "alicorn-haproxy", "v2"), ("peer_plain", "plain-haproxy", "v2"),
         ("peer_direct", "direct", "v2"), ("peer_broken", "plain-haproxy", "broken"),
         ("peer_soured", "plain-haproxy", "soured")]


def peer_scenarios(args: argparse.Namespace, tmp: Path, home: Home,
                   out: dict[str, Any]) -> None:
    img = home.images
    refs = [img[key]["image"] for key in ("v1", "v2", "broken", "soured")]
    for ref in refs:
        podman("pull", "--quiet", "--tls-verify=false", ref, timeout=600)
    try:
        run_peers(args, tmp, img, out)
    finally:
        # Untag what the peers pulled (no --force: an image a container uses stays).
        podman("rmi", "--ignore", *refs, check=False)


def run_peers(args: argparse.Namespace, tmp: Path, img: dict[str, dict[str, Any]],
              out: dict[str, Any]) -> None:
    for name, front, to in PEERS:
        if args.quick and to != "v2":
            continue
        peer = Peer(tmp, img, name.removeprefix("peer_"))
        try:
            peer.start(img["v1"]["image"])
            if front == "alicorn-haproxy":
                urls = [f"http://127.0.0.1:{peer.proxy(img['v1']['image'])}/"]
            elif front == "plain-haproxy":
                urls = [f"http://127.0.0.1:{peer.plain_proxy()}/"]
            else:
                urls = [f"http://127.0.0.1:{p}/" for p in peer.ports]
            say(f"{name}: stop-and-start v1 → {to} ({front}) under {args.rate:g} req/s …")
            # A bad image's outage starts once both containers run it (soured: 6 s later):
            # the load goes on long enough after the replacement to see it.
            res = Scenario(args, urls).run(partial(peer.update, img[to]["image"]),
                                           after_s=None if to == "v2" else
                                           max(args.after, SOURED_AFTER + 9))
        except (RuntimeError, OSError, Error) as e:
            say(f"  {name} could not run: {e}")
            out[name] = {"error": str(e)}
            continue
        finally:
            peer.cleanup()
        res["front"], res["to"] = front, to
        out[name] = res
        say(f"  {res['load']['failed']} failed of {res['load']['requests']} "
            f"({res['load']['errors']}); p99 before {res['before']['p99_ms']:.1f} ms, "
            f"during {res['during']['p99_ms']:.1f} ms; {res['operation_s']:.1f} s")


# -- the report ----------------------------------------------------------------------------------

ROWS = [("a) alicorn update v1→v2", "update"), ("b) alicorn update → broken", "broken"),
        ("c) alicorn update → soured", "soured"),
        ("d1) stop-and-start v1→v2, Alicorn's HAProxy", "peer_haproxy"),
        ("d1') stop-and-start v1→v2, plain HAProxy", "peer_plain"),
        ("d2) stop-and-start v1→v2, direct", "peer_direct"),
        ("d3) stop-and-start → broken, plain HAProxy", "peer_broken"),
        ("d4) stop-and-start → soured, plain HAProxy", "peer_soured")]


def summary(rounds: list[dict[str, Any]]) -> str:
    """Every round's figures side by side (failed requests, p99, gaps)."""
    lines = ["| scenario | failed (each round) | of requests | p99 before | p99 during | "
             "longest gap | failing at the end |", "|---|---|---|---|---|---|---|"]

    def each(key: str, fn: Callable[[dict[str, Any]], str]) -> str:
        return " / ".join(fn(r[key]) if "error" not in r[key] else "error"
                          for r in rounds if key in r)

    for label, key in ROWS:
        if not any(key in r for r in rounds):
            continue
        lines.append(
            f"| {label} | {each(key, lambda x: str(x['load']['failed']))} | "
            f"{each(key, lambda x: str(x['load']['requests']))} | "
            f"{each(key, lambda x: format(x['before']['p99_ms'], '.0f'))} ms | "
            f"{each(key, lambda x: format(x['during']['p99_ms'], '.0f'))} ms | "
            f"{each(key, lambda x: format(x['longest_gap_s'], '.2f'))} s | "
            f"{each(key, lambda x: format(_end_failing(x), '.0%'))} |")
    recs = [r["soured"]["recovery"] for r in rounds if "recovery" in r.get("soured", {})]
    if recs:
        lines.append("\nsoured, bad health → traffic back on the old digest: " + " / ".join(
            f"{x.get('traffic_back_after_bad_s', float('nan')):.2f}" for x in recs) + " s")
    return "\n".join(lines)


def _end_failing(r: dict[str, Any]) -> float:
    """The share of failed requests in the last second of the load."""
    last = r["buckets"][-2] if len(r["buckets"]) > 1 else r["buckets"][-1]
    return float(last["failed"] / last["requests"]) if last["requests"] else 0.0


def table(out: dict[str, Any]) -> str:
    lines = ["| scenario | result | requests | failed | rate req/s | p99 before | p99 during "
             "| max during | operation | longest gap without an answer | failing at the end |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, key in ROWS:
        r = out.get(key)
        if not r:
            continue
        if "error" in r:
            lines.append(f"| {label} | could not run: {r['error'][:80]} | | | | | | | | | |")
            continue
        result = r.get("outcome", {}).get("result", "replaced")
        lines.append(
            f"| {label} | {result} | {r['load']['requests']} | {r['load']['failed']} | "
            f"{r['load']['rate']:.0f} | {r['before']['p99_ms']:.1f} ms | "
            f"{r['during']['p99_ms']:.1f} ms | {r['during']['max_ms']:.0f} ms | "
            f"{r['operation_s']:.1f} s | {r['longest_gap_s']:.2f} s | "
            f"{_end_failing(r):.0%} |")
    rec = (out.get("soured") or {}).get("recovery")
    if rec:
        lines.append("")
        lines.append("soured: " + ", ".join(
            f"{k} {v:.2f} s" for k, v in rec.items() if k.endswith("_after_bad_s")) +
            f" (bad health = {rec.get('bad_health_source', 'unknown')})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=600.0, help="requests per second (600)")
    parser.add_argument("--requests", type=int, default=20_000,
                        help="at least this many requests per scenario (20000)")
    parser.add_argument("--before", type=float, default=8.0,
                        help="seconds of load before each operation (8)")
    parser.add_argument("--after", type=float, default=5.0,
                        help="at least this many seconds of load after it (5)")
    parser.add_argument("--connections", type=int, default=16,
                        help="keep-alive connections to begin with (16; more are opened "
                             "when every one is busy)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request timeout (5 s)")
    parser.add_argument("--soak", type=float, default=10.0, help="the module's soak (10 s)")
    parser.add_argument("--drain", type=float, default=5.0, help="the module's drain (5 s)")
    parser.add_argument("--deadline", type=float, default=30.0,
                        help="the module's progress deadline (30 s; Alicorn's default is "
                             "120 s): how long the update to broken waits for readiness")
    parser.add_argument("--quick", action="store_true",
                        help="at least 5000 requests per scenario (the operation itself "
                             "takes 13-36 s), 3 s before; peers to v2 only")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every scenario this many times (1)")
    parser.add_argument("--only", choices=["alicorn", "peer"], help="run one side only")
    parser.add_argument("--home", type=Path,
                        help="build the images in DIR once and reuse them (kept)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.before = min(args.requests, 5000), min(args.before, 3.0)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        say(f"missing: {', '.join(missing)} (run scripts/bootstrap)")
        return 2
    keep = args.home is not None
    root = args.home.resolve() if keep else Path(tempfile.mkdtemp(prefix="alicorn-update-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    home = Home(root)
    out: dict[str, Any] = {
        "started": datetime.now().astimezone().isoformat(), "cpus": os.cpu_count(),
        "rate": args.rate, "requests_per_scenario": args.requests, "soak": args.soak,
        "drain": args.drain, "deadline": args.deadline, "connections": args.connections,
        "soured_after": SOURED_AFTER, "rounds": [],
        "load_average": os.getloadavg()}
    status = 0
    try:
        home.prepare()
        out["images"] = {k: v["image"] for k, v in home.images.items()}
        for r in range(args.rounds):
            say(f"-- round {r + 1} of {args.rounds} (load average "
                f"{os.getloadavg()[0]:.1f})")
            this: dict[str, Any] = {"load_average": os.getloadavg()}
            out["rounds"].append(this)
            if args.only != "peer":
                status |= 0 if alicorn_scenarios(args, home, this) else 1
            if args.only != "alicorn":
                peer_scenarios(args, root, home, this)
            print(f"\nround {r + 1}:\n{table(this)}", flush=True)
    except KeyboardInterrupt:
        status = 130
    finally:
        out["load_average_end"] = os.getloadavg()
        if not keep:
            for p in home.cleanup():
                say(p)
            shutil.rmtree(root, ignore_errors=True)
        if len(out["rounds"]) > 1:
            print(f"\nall {len(out['rounds'])} rounds:\n{summary(out['rounds'])}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
            say(f"results: {args.json}")
    return status


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
