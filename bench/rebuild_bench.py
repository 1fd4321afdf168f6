#!/usr/bin/env python3
"""Advisory-driven rebuilds: how long until the fixed image is out, and how fast the planner
finds what to rebuild.

    .venv/bin/python bench/rebuild_bench.py pony [--rounds 3] [--interval 10]
    .venv/bin/python bench/rebuild_bench.py plan [--images 10000] [--repeat 5]
    .venv/bin/python bench/rebuild_bench.py all

pony: the RPM pony built from its repository at ``--version 1``, the service running (``alicorn
serve --detach --interval I``); then the repository is rewritten with ``--version both`` (the
busybox security update and its advisory) and the clock runs until the registry's
``pony-rpm:latest`` names a new image.  The breakdown comes from the database and the rebuild's
``progress.jsonl``: detection (repository rewritten → event recorded: the poll, the import),
planning (→ the rebuild's build submitted), queue, compose, tests, gate, publish, and the
rest of the build's steps.  Beside it, the peer: the same update handled by hand in a fresh
ALICORN_HOME (``alicorn advisories import REPO`` then ``alicorn build pony.yaml``, which runs
the same tests and gate).  Each round uses fresh homes; contenders alternate.

plan: a temporary database with N published builds whose package sets look like real images
(Debian images from this host's dpkg database: its required/important packages plus a random
share of the rest, a tenth at an older version; Fedora images from a Fedora 40 minimal
package list; RPM ponies; a tenth layered on another image), and their CycloneDX SBOMs as
files.  Then "what must be rebuilt?" for one advisory (the pony's busybox update) and for
100 (rpm, Debian, and names no image has), each contender in a fresh process:

* planner: ``alicorn.events.planner.plan`` (the indexed lookup, plus layering);
* naive: read every image's CycloneDX SBOM, match it with the scanner's matcher, then add the
  images layered on an affected one — the same answer, or the run fails;
* grep: ``grep -rlF`` for the advisories' package names over the SBOM files — not an
  answer (no versions, no layering), a floor for "look at every SBOM".

Results go to bench/results/rebuild-<time>.json (git-ignored) and a table to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE = ROOT / "examples" / "pony" / "rpm"
sys.path.insert(0, str(ROOT / "src"))
ALICORN = [sys.executable, "-m", "alicorn"]

PONY_ADVISORY = "FEDORA-2024-b7e1c3d2a9"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def sh(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True,
       timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
    return proc


def _status_mib(field: str) -> float:
    """VmRSS / VmHWM of this process.  (getrusage's ru_maxrss survives exec on Linux, so a
    child would report its parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def rss_mib() -> float:
    return _status_mib("VmRSS")


# -- pony: advisory → fixed image published ------------------------------------------------------


class Home:
    """One ALICORN_HOME with a copy of the RPM example beside it."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.example = root / "pony"
        shutil.copytree(EXAMPLE, self.example, ignore=shutil.ignore_patterns("repo"))
        self.env = {**os.environ, "ALICORN_HOME": str(self.home)}

    def alicorn(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh([*ALICORN, *args], env=self.env, check=check)

    def repo(self, version: str) -> None:
        sh([str(self.example / "build-repo"), str(self.example / "repo"), "--version", version])

    def build(self) -> dict[str, Any]:
        out = self.alicorn("build", str(self.example / "pony.yaml"), "--json").stdout
        result: dict[str, Any] = json.loads(out.splitlines()[-1])
        return result

    def events(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.alicorn("events", "--json").stdout)
        return data

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.home / 'alicorn.db'}?mode=ro", uri=True,
                               timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def down(self) -> None:
        self.alicorn("down", check=False)


def _utc(text: str | None) -> float | None:
    """A naive-UTC database timestamp as a POSIX time."""
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _tag_digest(registry: str, name: str) -> str | None:
    req = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/latest", method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return str(resp.headers["Docker-Content-Digest"])
    except OSError:
        return None


def _steps(progress: Path) -> dict[str, float]:
    """Seconds per step of a build, from its progress.jsonl."""
    marks: list[tuple[str, float]] = []
    for line in progress.read_text().splitlines():
        item = json.loads(line)
        if item["event"] == "step":
            marks.append((item["name"], item["t"]))
        elif item["event"] == "finish":
            marks.append(("(end)", item["t"]))
    out: dict[str, float] = {}
    for (name, t), (_, t_next) in itertools.pairwise(marks):
        out[name] = out.get(name, 0.0) + t_next - t
    return out


def service_round(tmp: Path, interval: float, timeout: float) -> dict[str, Any]:
    h = Home(tmp)
    try:
        h.repo("1")
        h.alicorn("serve", "--detach", "--interval", f"{interval:g}")
        old = h.build()
        if old["state"] != "done":
            raise SystemExit(f"the first build failed: {old}")
        registry = old["image"].split("/")[0]
        # Let the service look at the repository once as it was (its first sight), then
        # update it at a random point of its polling cycle, as an update would land.
        time.sleep(interval + 1 + random.Random(tmp.name).uniform(0, interval))
        t_update0 = time.time()
        h.repo("both")
        t_update = time.time()
        while True:
            now = time.time()
            digest = _tag_digest(registry, "pony-rpm")
            if digest and digest != old["digest"]:
                t_published = now
                break
            if now - t_update > timeout:
                raise SystemExit(f"no new pony-rpm within {timeout:.0f} s; events: "
                                 f"{json.dumps(h.events(), indent=1)}")
            time.sleep(0.05)
        deadline = time.time() + timeout
        while True:
            [event] = [e for e in h.events() if e["advisory"] == PONY_ADVISORY]
            if event["state"] in ("done", "failed", "skipped") or time.time() > deadline:
                break
            time.sleep(0.5)
        build = event["builds"][0]
        with h.db() as conn:
            ev = conn.execute("SELECT created_at, updated_at FROM events WHERE id = ?",
                              (event["id"],)).fetchone()
            row = conn.execute("SELECT created_at, started_at, finished_at FROM builds "
                               "WHERE id = ?", (build["build_id"],)).fetchone()
        steps = _steps(h.home / "builds" / build["build_id"] / "progress.jsonl")
        t_event = _utc(ev["created_at"])
        t_submitted, t_started = _utc(row["created_at"]), _utc(row["started_at"])
        t_finished = _utc(row["finished_at"])
        assert t_event and t_submitted and t_started and t_finished
        named = {"compose": steps.get("compose", 0.0), "tests": steps.get("tests", 0.0),
                 "gate": steps.get("gate", 0.0), "publish": steps.get("publish", 0.0)}
        return {
            "state": event["state"], "tests": build["tests"], "gate": build["gate"],
            "new_digest": build["new_digest"], "old_digest": old["digest"],
            "repo_rewrite_s": t_update - t_update0,
            "total_s": t_published - t_update,
            "detection_s": t_event - t_update,
            "planning_s": t_submitted - t_event,
            "queue_s": t_started - t_submitted,
            **{f"{k}_s": v for k, v in named.items()},
            "other_steps_s": sum(steps.values()) - sum(named.values()),
            "observed_after_finish_s": t_published - t_finished,
            "steps": steps,
        }
    finally:
        h.down()


def manual_round(tmp: Path) -> dict[str, Any]:
    h = Home(tmp)
    try:
        h.repo("1")
        old = h.build()
        h.repo("both")
        t0 = time.time()
        h.alicorn("advisories", "import", str(h.example / "repo"))
        t_import = time.time()
        new = h.build()
        t1 = time.time()
        if new["state"] != "done" or new["digest"] == old["digest"]:
            raise SystemExit(f"the manual rebuild did not give a new image: {new}")
        steps = _steps(h.home / "builds" / new["build_id"] / "progress.jsonl")
        return {"total_s": t1 - t0, "import_s": t_import - t0, "build_s": t1 - t_import,
                "compose_s": steps.get("compose", 0.0), "tests_s": steps.get("tests", 0.0),
                "gate_s": steps.get("gate", 0.0), "publish_s": steps.get("publish", 0.0),
                "steps": steps}
    finally:
        h.down()


def run_pony(args: argparse.Namespace, results: dict[str, Any]) -> int:
    for tool in ("rpmbuild", "createrepo_c", "dnf", "podman", "skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            say(f"pony: {tool} is missing (run scripts/bootstrap)")
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="alicorn-rebuild-bench-"))
    service: list[dict[str, Any]] = []
    manual: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            order = ["service", "manual"] if r % 2 == 0 else ["manual", "service"]
            for kind in order:
                d = tmp / f"{kind}-{r}"
                d.mkdir()
                if kind == "service":
                    s = service_round(d, args.interval, args.timeout)
                    service.append(s)
                    say(f"round {r + 1} service: {s['total_s']:.1f} s to the fixed image "
                        f"({s['state']}, tests {s['tests']}, gate {s['gate']}); detection "
                        f"{s['detection_s']:.1f}, compose {s['compose_s']:.2f}, tests "
                        f"{s['tests_s']:.2f}, gate {s['gate_s']:.2f}, publish "
                        f"{s['publish_s']:.2f}")
                else:
                    m = manual_round(d)
                    manual.append(m)
                    say(f"round {r + 1} manual: {m['total_s']:.1f} s (import "
                        f"{m['import_s']:.2f}, build {m['build_s']:.2f})")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"kept {tmp}")

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    keys = ["total_s", "detection_s", "planning_s", "queue_s", "compose_s", "tests_s",
            "gate_s", "publish_s", "other_steps_s", "observed_after_finish_s"]
    summary = {k: med(service, k) for k in keys}
    manual_summary = {k: med(manual, k) for k in
                      ("total_s", "import_s", "build_s", "compose_s", "tests_s", "gate_s",
                       "publish_s")}
    results["pony"] = {"interval": args.interval, "rounds": args.rounds, "service": service,
                       "manual": manual, "service_median": summary,
                       "manual_median": manual_summary,
                       "ratio_service_to_manual": summary["total_s"] / manual_summary["total_s"]}
    print(f"\npony: repository update → fixed pony-rpm published (median of {args.rounds}, "
          f"service polling every {args.interval:g} s)")
    print(f"  service {summary['total_s']:.1f} s (min {min(s['total_s'] for s in service):.1f},"
          f" max {max(s['total_s'] for s in service):.1f}); by hand (import + build) "
          f"{manual_summary['total_s']:.1f} s; ratio "
          f"{results['pony']['ratio_service_to_manual']:.2f}")
    print("  " + ", ".join(f"{k.removesuffix('_s')} {summary[k]:.2f}" for k in keys[1:]))
    ok = all(s["state"] == "done" and s["tests"] == "passed" and s["gate"] == "passed"
             for s in service)
    return 0 if ok else 1


# -- plan: what to rebuild among 10k images -------------------------------------------------------

# The packages of a Fedora 40 minimal container (fedora-minimal's package set, give or take).
FEDORA_BASE = """
alternatives audit-libs basesystem bash bzip2-libs ca-certificates coreutils-single
crypto-policies curl cyrus-sasl-lib dnf5 elfutils-default-yama-scope elfutils-libelf
elfutils-libs expat fedora-gpg-keys fedora-release-common fedora-release-container
fedora-release-identity-container fedora-repos file-libs filesystem fmt gawk glib2 glibc
glibc-common glibc-minimal-langpack gmp gnupg2 gnutls gpgme grep json-c keyutils-libs
krb5-libs libacl libarchive libassuan libattr libblkid libbrotli libcap libcap-ng libcom_err
libcurl libdnf5 libdnf5-cli libeconf libffi libgcc libgcrypt libgomp libgpg-error libidn2
libksba libmodulemd libmount libnghttp2 libpsl librepo libselinux libsemanage libsepol
libsmartcols libsolv libssh libssh-config libstdc++ libtasn1 libunistring libuuid libverto
libxcrypt libxml2 libyaml libzstd lua-libs lz4-libs mpfr ncurses-base ncurses-libs nettle
npth openldap openssl-libs p11-kit p11-kit-trust pam-libs pcre2 pcre2-syntax popt
publicsuffix-list-dafsa readline rpm rpm-libs rpm-sequoia sdbus-cpp sed setup shadow-utils
sqlite-libs systemd-libs tpm2-tss tzdata xz-libs zchunk-libs zlib-ng-compat
""".split()  # noqa: SIM905
# What applications add on top of it.
FEDORA_EXTRA = """
httpd httpd-core httpd-filesystem httpd-tools apr apr-util mod_http2 mod_lua nginx
nginx-core nginx-filesystem python3 python3-libs python3-pip python3-setuptools
python3-requests python3-urllib3 python3-idna perl-interpreter perl-libs ruby ruby-libs
rubygems nodejs nodejs-libs npm java-21-openjdk-headless javapackages-filesystem tomcat
postgresql postgresql-server postgresql-private-libs mariadb mariadb-server redis valkey
git-core less vim-minimal findutils procps-ng iproute iputils hostname tar gzip unzip
which jq oniguruma libevent libuv brotli libpq openssh openssh-clients
""".split()  # noqa: SIM905
PONY = (("pony-filesystem", "3.18-1.fc40", "noarch"), ("pony-content", "1.0-1.fc40", "noarch"))


def _h(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def fedora_versions(name: str) -> tuple[str, str]:
    """(older, newer) version-release of ``name``: fixed per name."""
    h = _h(name)
    v = f"{1 + h % 9}.{h // 9 % 30}.{h // 270 % 10}"
    return f"{v}-{1 + h // 2700 % 4}.fc40", f"{v}-{2 + h // 2700 % 4}.fc40"


def host_debs() -> list[dict[str, str]]:
    """This host's Debian packages: name, version, source, source version, priority, arch."""
    out = sh(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${source:Package}\t"
              "${source:Version}\t${Priority}\t${Architecture}\n"]).stdout
    rows = []
    for line in out.splitlines():
        name, version, source, source_version, priority, arch = line.split("\t")
        rows.append({"name": name, "version": version, "source": source or name,
                     "source_version": source_version or version, "priority": priority,
                     "arch": arch})
    return rows


def older_deb(version: str) -> str:
    """A version dpkg orders just before ``version`` (an earlier upload of it)."""
    return f"{version}~bench1"


def _component(kind: str, name: str, version: str, arch: str, source: str, purl: str
               ) -> dict[str, Any]:
    return {"bom-ref": purl, "hashes": [{"alg": "SHA-256", "content": hashlib.sha256(
        purl.encode()).hexdigest()}], "name": name, "properties": [
        {"name": "alicorn:source", "value": source}], "purl": purl, "type": "library",
        "version": version}


def populate(tmp: Path, images: int, seed: int) -> dict[str, Any]:
    """The database (builds + build_packages, as builds record them) and the SBOM files."""
    from sqlalchemy import insert

    from alicorn.store.db import engine_for
    from alicorn.store.models import BuildRow, PackageRow
    rng = random.Random(seed)
    debs = host_debs()
    deb_base = [d for d in debs if d["priority"] in ("required", "important")]
    deb_extra = [d for d in debs if d["priority"] not in ("required", "important")]
    url = f"sqlite:///{tmp / 'bench.db'}"
    engine = engine_for(url)
    sboms = tmp / "sboms"
    sboms.mkdir()
    now = datetime(2026, 1, 1)
    plain: list[tuple[str, str]] = []                   # (name, digest) of non-layered images
    packages_of: dict[str, list[dict[str, Any]]] = {}
    rows_total = 0
    sbom_bytes = 0
    t0 = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, images, 500):
            builds, rows = [], []
            for i in range(start, min(images, start + 500)):
                bid = f"b{i:08d}"
                name = f"img{i:05d}"
                digest = f"sha256:{hashlib.sha256(name.encode()).hexdigest()}"
                kind = ("debian", "debian", "debian", "debian", "fedora", "fedora", "fedora",
                        "fedora", "pony", "layered")[i % 10]
                base: tuple[str, str] | None = None
                pkgs: list[dict[str, Any]] = []
                if kind == "layered" and plain:
                    base = rng.choice(plain)
                    pkgs = [dict(p) for p in packages_of[base[0]]]
                    have = {p["name"] for p in pkgs}
                    if pkgs[0]["type"] == "rpm":
                        added = [_fedora_pkg(n, rng) for n in rng.sample(FEDORA_EXTRA, k=5)]
                    else:
                        added = [_deb_pkg(d, rng) for d in rng.sample(deb_extra, k=5)]
                    pkgs += [p for p in added if p["name"] not in have]
                elif kind == "debian" or kind == "layered":
                    chosen = deb_base + rng.sample(deb_extra, k=rng.randrange(20, 120))
                    pkgs = [_deb_pkg(d, rng) for d in chosen]
                elif kind == "fedora":
                    chosen_names = FEDORA_BASE + rng.sample(FEDORA_EXTRA, k=rng.randrange(0, 25))
                    pkgs = [_fedora_pkg(n, rng) for n in chosen_names]
                else:
                    release = "2.fc40" if rng.random() < 0.3 else "1.fc40"
                    pkgs = [_rpm("busybox", f"1.35.0-{release}", "x86_64", "alicorn",
                                 "pony-40")]
                    pkgs += [_rpm(n, v, a, "alicorn", "pony-40") for n, v, a in PONY]
                if base is None:
                    plain.append((name, digest))
                packages_of[name] = pkgs
                builds.append(dict(
                    id=bid, state="done", created_at=now, started_at=now, finished_at=now,
                    argv=["alicorn", "build", f"{name}.yaml"], submitter="bench",
                    source_kind="file", recipe_path=f"/recipes/{name}.yaml", recipe_name=name,
                    options={}, digest=digest, image_ref=f"127.0.0.1:5000/{name}@{digest}",
                    published=True, base_digest=base[1] if base else None,
                    inputs={"base": {"name": base[0], "digest": base[1]}} if base else {}))
                for p in pkgs:
                    rows.append(dict(build_id=bid, **{k: p[k] for k in (
                        "type", "name", "version", "arch", "source", "purl")}))
                doc = {"$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
                       "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                       "metadata": {"component": {
                           "type": "container", "name": name, "version": digest,
                           "properties": [{"name": "alicorn:base_digest", "value": base[1]}]
                           if base else []}},
                       "components": [_component(**{k: p[k] for k in (
                           "name", "version", "arch", "source", "purl")}, kind=p["type"])
                           for p in pkgs]}
                text = json.dumps(doc, indent=2, sort_keys=True)
                (sboms / f"{name}.cdx.json").write_text(text)
                sbom_bytes += len(text)
            conn.execute(insert(BuildRow), builds)
            conn.execute(insert(PackageRow), rows)
            rows_total += len(rows)
    fill = time.perf_counter() - t0
    pools = {"fedora": FEDORA_BASE + FEDORA_EXTRA,
             "debian_sources": sorted({d["source"] for d in debs}),
             "debian_versions": {d["source"]: d["source_version"] for d in debs}}
    (tmp / "pools.json").write_text(json.dumps(pools))
    return {"images": images, "rows": rows_total, "fill_s": fill, "sbom_bytes": sbom_bytes,
            "db_bytes": (tmp / "bench.db").stat().st_size, "url": url,
            "layered": sum(1 for i in range(images) if i % 10 == 9)}


def _rpm(name: str, version: str, arch: str, vendor: str, distro: str) -> dict[str, Any]:
    return {"type": "rpm", "name": name, "version": version, "arch": arch,
            "source": f"{name}-{version}.src.rpm",
            "purl": f"pkg:rpm/{vendor}/{name}@{version}?arch={arch}&distro={distro}"}


def _fedora_pkg(name: str, rng: random.Random) -> dict[str, Any]:
    old, new = fedora_versions(name)
    arch = "noarch" if _h(name) % 5 == 0 else "x86_64"
    return _rpm(name, old if rng.random() < 0.1 else new, arch, "fedora", "fedora-40")


def _deb_pkg(d: dict[str, str], rng: random.Random) -> dict[str, Any]:
    version = older_deb(d["version"]) if rng.random() < 0.1 else d["version"]
    return {"type": "deb", "name": d["name"], "version": version, "arch": d["arch"],
            "source": d["source"],
            "purl": f"pkg:deb/debian/{d['name']}@{version}?arch={d['arch']}&distro=debian-12"}


def advisories(tmp: Path, count: int, seed: int) -> list[Any]:
    """The pony's busybox advisory, then rpm, Debian and unmatched ones up to ``count``."""
    from alicorn.advisories.model import Advisory, Affected, PackageRef, Range, Reference
    pools = json.loads((tmp / "pools.json").read_text())
    rng = random.Random(seed)
    out = [Advisory(id=PONY_ADVISORY, type="security", severity="Important",
                    title="busybox-1.35.0-2.fc40", description="", issued=None, updated=None,
                    release="Fedora 40", status="stable",
                    references=(Reference("cve", "CVE-2022-48174"),),
                    packages=(PackageRef("busybox", "0", "1.35.0", "2.fc40", "x86_64"),))]
    fedora = rng.sample(pools["fedora"], k=min(len(pools["fedora"]), count))
    sources = rng.sample(pools["debian_sources"], k=min(len(pools["debian_sources"]), count))
    i = 0
    while len(out) < count:
        cve = Reference("cve", f"CVE-2025-{20000 + i}")
        if i % 10 == 9:
            out.append(Advisory(
                id=f"FEDORA-2025-absent{i:04d}", type="security", severity="Moderate",
                title="", description="", issued=None, updated=None, release="Fedora 40",
                status="stable", references=(cve,),
                packages=(PackageRef(f"nosuch-{i}", "0", "1.0", "1.fc40", "x86_64"),)))
        elif i % 2:
            name = fedora[i % len(fedora)]
            _, new = fedora_versions(name)
            version, release = new.rsplit("-", 1)
            arch = "noarch" if _h(name) % 5 == 0 else "x86_64"
            out.append(Advisory(
                id=f"FEDORA-2025-{i:010x}", type="security", severity="Important", title="",
                description="", issued=None, updated=None, release="Fedora 40",
                status="stable", references=(cve,),
                packages=(PackageRef(name, "0", version, release, arch),)))
        else:
            src = sources[i % len(sources)]
            fixed = pools["debian_versions"][src]
            out.append(Advisory(
                id=f"DSA-{5000 + i}-1", type="security", severity=None, title="",
                description="", issued=None, updated=None, release="12", status=None,
                references=(cve,), format="debian",
                affected=(Affected("Debian:12", src, ranges=(Range(
                    "ECOSYSTEM", (("introduced", "0"), ("fixed", fixed))),)),)))
        i += 1
    return out[:count]


def contender(name: str, tmp: Path, count: int, repeat: int, seed: int) -> dict[str, Any]:
    """One contender, in this (fresh) process; prints its JSON."""
    import logging
    logging.getLogger("alicorn").setLevel(logging.ERROR)
    from alicorn.events.planner import plan
    from alicorn.match.affected import package_from_row
    from alicorn.match.index import AdvisoryIndex
    from alicorn.match.matcher import match
    advs = advisories(tmp, count, seed)
    url = f"sqlite:///{tmp / 'bench.db'}"
    if name == "planner":
        from alicorn.store.db import engine_for
        engine_for(url)         # the schema check every open does, outside the timing
    rss0 = rss_mib()
    times: list[float] = []
    answer: set[str] = set()
    extra: dict[str, Any] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        if name == "planner":
            result = plan(url, advs)
            answer = {r.image for r in result.rebuilds}
            extra = {"skipped": len(result.skipped), "layered_rebuilds": sum(
                1 for r in result.rebuilds if r.parent is not None)}
        elif name == "naive":
            from types import SimpleNamespace
            from urllib.parse import parse_qs, urlsplit

            from alicorn.inventory.model import Distro, Inventory
            index = AdvisoryIndex(advs)
            direct: set[str] = set()
            children: dict[str, set[str]] = {}
            by_digest: dict[str, str] = {}
            for path in sorted((tmp / "sboms").iterdir()):
                doc = json.loads(path.read_text())
                meta = doc["metadata"]["component"]
                by_digest[meta["version"]] = meta["name"]
                for prop in meta.get("properties", []):
                    if prop["name"] == "alicorn:base_digest":
                        children.setdefault(prop["value"], set()).add(meta["name"])
                packages = []
                distro = None
                for c in doc["components"]:
                    purl = c["purl"]
                    q = parse_qs(urlsplit(purl).query)
                    source = next((p["value"] for p in c.get("properties", [])
                                   if p["name"] == "alicorn:source"), None)
                    packages.append(package_from_row(SimpleNamespace(
                        type=purl[4:].split("/", 1)[0], name=c["name"], version=c["version"],
                        arch=q.get("arch", [None])[0], source=source, purl=purl)))
                    if distro is None and q.get("distro"):
                        ident, _, ver = q["distro"][0].rpartition("-")
                        distro = Distro(id=ident, version_id=ver or None)
                inv = Inventory(target=meta["name"], kind="alicorn", packages=tuple(packages),
                                distro=distro, digest=meta["version"])
                if match(inv, index):
                    direct.add(meta["name"])
            answer = set(direct)
            frontier = sorted(direct)
            name_to_digest = {v: k for k, v in by_digest.items()}
            while frontier:
                nxt = []
                for img in frontier:
                    for child in children.get(name_to_digest[img], ()):
                        if child not in answer:
                            answer.add(child)
                            nxt.append(child)
                frontier = nxt
        else:   # grep: which SBOM files mention one of the names at all
            names = sorted({p.name for a in advs for p in a.packages} |
                           {f.name for a in advs for f in a.affected})
            patterns = tmp / "patterns.txt"
            patterns.write_text("".join(f'"name": "{n}"\n' for n in names))
            proc = subprocess.run(["grep", "-rlF", "-f", str(patterns), str(tmp / "sboms")],
                                  capture_output=True, text=True)
            answer = {Path(p).name.removesuffix(".cdx.json") for p in proc.stdout.split()}
        times.append(time.perf_counter() - t0)
    return {"contender": name, "advisories": count, "times_s": times,
            "median_s": statistics.median(times), "images": sorted(answer),
            "rss_before_mib": rss0, "peak_rss_mib": peak_rss_mib(), **extra}


def run_plan(args: argparse.Namespace, results: dict[str, Any]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="alicorn-plan-bench-"))
    status = 0
    try:
        say(f"plan: recording {args.images} images (database + CycloneDX files) in {tmp}")
        meta = populate(tmp, args.images, args.seed)
        say(f"plan: {meta['rows']} package rows, filled in {meta['fill_s']:.1f} s")
        results["plan"] = {"setup": {k: v for k, v in meta.items() if k != "url"}, "runs": []}
        for count in (1, 100):
            row: dict[str, Any] = {"advisories": count}
            for name, repeat in (("planner", args.repeat), ("naive", args.naive_repeat),
                                 ("grep", args.repeat)):
                proc = sh([sys.executable, __file__, "_contender", name, str(tmp),
                           "--count", str(count), "--repeat", str(repeat),
                           "--seed", str(args.seed)])
                data = json.loads(proc.stdout)
                row[name] = data
                say(f"  {count} advisor{'y' if count == 1 else 'ies'}, {name}: "
                    f"{data['median_s'] * 1000:.0f} ms median of {repeat}, "
                    f"{len(data['images'])} images, peak RSS {data['peak_rss_mib']:.0f} MiB")
            same = row["planner"]["images"] == row["naive"]["images"]
            row["same_answer"] = same
            covered = set(row["planner"]["images"]) - {
                f"img{i:05d}" for i in range(args.images) if i % 10 == 9} <= set(
                row["grep"]["images"])
            row["grep_covers_direct"] = covered
            status |= 0 if same else 1
            for name in ("planner", "naive", "grep"):
                row[name]["images"] = len(row[name]["images"])
            results["plan"]["runs"].append(row)
        s = results["plan"]
        print(f"\nplan: {args.images} images ({s['setup']['layered']} layered), "
              f"{s['setup']['rows']} packages recorded; SBOMs "
              f"{s['setup']['sbom_bytes'] / 2**20:.0f} MiB, database "
              f"{s['setup']['db_bytes'] / 2**20:.0f} MiB")
        print("| advisories | rebuilds | planner | naive (SBOM + matcher) | naive/planner | "
              "grep -rlF | planner RSS | naive RSS | same answer |")
        for row in s["runs"]:
            p, n, g = row["planner"], row["naive"], row["grep"]
            print(f"| {row['advisories']} | {p['images']} | {p['median_s'] * 1000:.0f} ms | "
                  f"{n['median_s'] * 1000:.0f} ms | {n['median_s'] / p['median_s']:.0f}x | "
                  f"{g['median_s'] * 1000:.0f} ms ({g['images']} files) | "
                  f"{p['peak_rss_mib']:.0f} MiB (+{p['peak_rss_mib'] - p['rss_before_mib']:.0f})"
                  f" | {n['peak_rss_mib']:.0f} MiB "
                  f"(+{n['peak_rss_mib'] - n['rss_before_mib']:.0f}) | "
                  f"{'yes' if row['same_answer'] else 'NO'} |")
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["pony", "plan", "all", "_contender"])
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help="pony: rounds (3)")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="pony: the service's polling interval in seconds (10, its default)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="pony: give up on a round after this many seconds (300)")
    parser.add_argument("--images", type=int, default=10_000, help="plan: images (10000)")
    parser.add_argument("--repeat", type=int, default=5, help="plan: runs of the planner (5)")
    parser.add_argument("--naive-repeat", type=int, default=1,
                        help="plan: runs of the naive peer (1)")
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.part == "_contender":
        name, tmp = args.args
        print(json.dumps(contender(name, Path(tmp), args.count, args.repeat, args.seed)))
        return 0
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(),
                               "cpus": os.cpu_count()}
    status = 0
    if args.part in ("plan", "all"):
        status |= run_plan(args, results)
    if args.part in ("pony", "all"):
        status |= run_pony(args, results)
    out = args.out or HERE / "results" / f"rebuild-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results: {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
