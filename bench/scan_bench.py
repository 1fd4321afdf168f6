#!/usr/bin/env python3
"""Scanning benchmarks: alicorn scan beside dnf and OpenSCAP, and at scale.

    .venv/bin/python bench/scan_bench.py peers  [--packages 300] [--advisories 200] [--rounds 3]
    .venv/bin/python bench/scan_bench.py scale  [--images 1000] [--advisories 100000]
    .venv/bin/python bench/scan_bench.py lookup [--images 10000] [--queries 200]
    .venv/bin/python bench/scan_bench.py all

peers: one RPM installroot (N real noarch packages installed with dnf, release 1) and one
repository with their release-2 builds and a Bodhi-style updateinfo.xml (M advisories,
severities, CVEs, bugzilla ids, some naming packages the root already has at the fixed
version).  Contenders, alternated per round, each a fresh process as a person runs it:
``dnf updateinfo list --security`` (cache warm, -C), ``dnf list-security`` (our plugin, on
dnf's own repo data), ``oscap-chroot ROOT oval eval`` with the OVAL ``alicorn advisories
export`` generated, and ``alicorn scan ROOT --json`` with the same updateinfo imported.  The
answers are compared: the same (advisory, package) pairs, or the run fails.

scale: in one process, 100k advisories (the real PyPA, rubysec and GitHub data from
../shared/data plus synthetic rpm and Debian advisories) indexed once, then 1,000 synthetic
image inventories (rpm, deb, pypi, gem packages whose names the advisories use) matched
against it: index build time, per-image match time, peak memory.

lookup: 10k images recorded as builds (their package sets in the database, as a build records
them), then "which images does this advisory affect?" for Q advisories: the indexed lookup
(alicorn.match.affected) beside the naive way (match every image's inventory).

Results go to bench/results/scan-<time>.json (git-ignored) and a table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

DNF = "/usr/bin/dnf"
RELEASEVER = "40"
SEVERITIES = ("Critical", "Important", "Moderate", "Low")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def sh(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True,
       cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
    return proc


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


# -- peers --------------------------------------------------------------------------------------

SPEC_HEAD = """\
Name: bench
Version: 1.0
Release: %{rel}
Summary: benchmark packages
License: MIT
BuildArch: noarch
%description
Benchmark packages.
%install
mkdir -p %{buildroot}/usr/share/bench
for i in $(seq -w 1 %{count}); do echo "bp$i %{rel}" > %{buildroot}/usr/share/bench/bp$i.txt; done
"""


def _spec(count: int) -> str:
    width = len(str(count))
    parts = [SPEC_HEAD.replace("%{count}", str(count))]
    for i in range(1, count + 1):
        n = f"bp{i:0{width}d}"
        parts.append(f"%package -n {n}\nSummary: {n}\n%description -n {n}\n{n}\n"
                     f"%files -n {n}\n/usr/share/bench/{n}.txt\n")
    return "\n".join(parts)


def _names(count: int) -> list[str]:
    width = len(str(count))
    return [f"bp{i:0{width}d}" for i in range(1, count + 1)]


def _updateinfo(names: list[str], count: int,
                rng: random.Random) -> tuple[str, set[tuple[str, str]]]:
    """Bodhi-style updateinfo for ``count`` advisories over the release-2 builds; returns the
    XML and the (advisory, package) pairs dnf should report as security updates."""
    from xml.sax.saxutils import quoteattr
    expected: set[tuple[str, str]] = set()
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<updates>"]
    for i in range(count):
        adv = f"FEDORA-2024-{i:010x}"
        kind = "security" if i % 5 else "bugfix"
        severity = SEVERITIES[i % 4] if kind == "security" else "None"
        pkgs = rng.sample(names, k=1 + i % 3)
        # A tenth names release 1, which the root already has: never listed.
        release = "1" if i % 10 == 3 else "2"
        refs = [f'<reference href="https://bugzilla.redhat.com/{2000000 + i}" '
                f'id="{2000000 + i}" type="bugzilla" title="bug {i}"/>']
        if kind == "security":
            refs.append(f'<reference href="https://www.cve.org/CVERecord?id=CVE-2024-{10000 + i}"'
                        f' id="CVE-2024-{10000 + i}" type="cve" title="CVE-2024-{10000 + i}"/>')
        refs.append(f'<reference href="https://bodhi.fedoraproject.org/updates/{adv}" '
                    f'id="{adv}" type="self" title="{adv}"/>')
        pkglist = "".join(
            f'<package name="{p}" version="1.0" release="{release}" epoch="0" arch="noarch" '
            f'src="bench-1.0-{release}.src.rpm"><filename>{p}-1.0-{release}.noarch.rpm'
            f"</filename></package>" for p in pkgs)
        out.append(
            f'<update from="updates@fedoraproject.org" status="stable" type="{kind}" '
            f'version="2.0"><id>{adv}</id><title>{quoteattr(adv)[1:-1]}</title>'
            f'<issued date="2024-04-01 00:00:00"/><updated date="2024-04-02 00:00:00"/>'
            f"<release>Fedora {RELEASEVER}</release><severity>{severity}</severity>"
            f"<summary>update {i}</summary><description>Update {i}.</description>"
            f"<references>{''.join(refs)}</references>"
            f'<pkglist><collection short="F{RELEASEVER}"><name>Fedora {RELEASEVER}</name>'
            f"{pkglist}</collection></pkglist></update>")
        if kind == "security" and release == "2":
            expected.update((adv, p) for p in pkgs)
    out.append("</updates>")
    return "\n".join(out) + "\n", expected


class Peers:
    def __init__(self, tmp: Path, packages: int, advisories: int, seed: int = 4):
        self.tmp = tmp
        self.count = packages
        self.advisories = advisories
        self.rng = random.Random(seed)
        self.home = tmp / "home"
        self.root = tmp / "root"
        self.repo1 = tmp / "repo1"
        self.repo2 = tmp / "repo2"
        self.oval = tmp / "feed.oval.xml"
        self.dnfhome = tmp / "dnfhome"
        self.expected: set[tuple[str, str]] = set()

    @property
    def env(self) -> dict[str, str]:
        # Debian's rpm keeps its database in ~/.rpmdb; point it at Fedora's place.
        return {**os.environ, "HOME": str(self.dnfhome), "ALICORN_HOME": str(self.home),
                "LC_ALL": "C.UTF-8"}

    def dnf_args(self, repo: Path, name: str) -> list[str]:
        return [DNF, f"--installroot={self.root}", f"--releasever={RELEASEVER}",
                "--setopt=reposdir=/dev/null", f"--repofrompath={name},file://{repo}",
                f"--setopt={name}.gpgcheck=0", "--setopt=install_weak_deps=False",
                f"--setopt=cachedir={self.tmp / 'dnfcache'}", "-q"]

    def prepare(self) -> None:
        self.dnfhome.mkdir()
        (self.dnfhome / ".rpmmacros").write_text("%_dbpath /usr/lib/sysimage/rpm\n")
        spec = self.tmp / "bench.spec"
        spec.write_text(_spec(self.count))
        for rel, repo in (("1", self.repo1), ("2", self.repo2)):
            top = self.tmp / f"rpmbuild{rel}"
            sh(["rpmbuild", "-bb", "--define", f"_topdir {top}", "--define", f"rel {rel}",
                "--define", "_binary_payload w1.gzdio", str(spec)], env=self.env)
            repo.mkdir()
            for rpm in (top / "RPMS" / "noarch").glob("*.rpm"):
                shutil.move(rpm, repo / rpm.name)
            sh(["createrepo_c", "-q", str(repo)])
        xml, self.expected = _updateinfo(_names(self.count), self.advisories, self.rng)
        ui = self.tmp / "updateinfo.xml"
        ui.write_text(xml)
        sh(["modifyrepo_c", "--mdtype=updateinfo", str(ui), str(self.repo2 / "repodata")])
        say(f"peers: installing {self.count} packages into {self.root}")
        sh([*self.dnf_args(self.repo1, "r1"), "-y", "install", *_names(self.count)],
           env=self.env)
        sh([*self.dnf_args(self.repo2, "r2"), "makecache"], env=self.env)
        alicorn = str(ROOT / ".venv" / "bin" / "alicorn")
        sh([alicorn, "advisories", "import", str(self.repo2)], env=self.env)
        out = sh([alicorn, "advisories", "export", "--format", "oval", "--type", "security"],
                 env=self.env).stdout
        self.oval.write_text(out)

    # Each contender returns the (advisory, package name) pairs it reports.
    def dnf_updateinfo(self) -> set[tuple[str, str]]:
        out = sh([*self.dnf_args(self.repo2, "r2"), "-C", "updateinfo", "list", "--security"],
                 env=self.env).stdout
        pairs = set()
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0].startswith("FEDORA-"):
                pairs.add((fields[0], fields[2].rsplit("-", 2)[0]))
        return pairs

    def dnf_list_security(self) -> set[tuple[str, str]]:
        out = sh([*self.dnf_args(self.repo2, "r2"), "-C", "list-security", "--json"],
                 env=self.env).stdout
        return {(e["advisory"], e["package"].rsplit("-", 2)[0]) for e in json.loads(out)}

    def oscap(self) -> set[tuple[str, str]]:
        results = self.tmp / "oscap-results.xml"
        sh(["oscap-chroot", str(self.root), "oval", "eval", "--results", str(results),
            str(self.oval)], env=self.env, check=False)
        return _oval_true_pairs(results, self.oval)

    def alicorn_scan(self) -> set[tuple[str, str]]:
        proc = sh([str(ROOT / ".venv" / "bin" / "alicorn"), "scan", str(self.root), "--json"],
                  env=self.env, check=False)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"alicorn scan failed: {proc.stderr}")
        doc = json.loads(proc.stdout)
        return {(f["advisory"], f["package"]["name"]) for f in doc["findings"]}


def _oval_true_pairs(results: Path, oval: Path) -> set[tuple[str, str]]:
    """(advisory, package) for every definition oscap found true, with the packages of the
    definition whose own "evr less than" test was true."""
    import defusedxml.ElementTree as ET
    tree = ET.parse(results)

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    defs_true = set()
    tests_true = set()
    for el in tree.iter():
        if local(el.tag) == "definition" and el.get("result") == "true":
            defs_true.add(el.get("definition_id"))
        if local(el.tag) == "test" and el.get("result") == "true":
            tests_true.add(el.get("test_id"))
    doc = ET.parse(oval)
    adv_of: dict[str, str] = {}
    pkgs_of: dict[str, set[str]] = {}
    for el in doc.iter():
        if local(el.tag) != "definition":
            continue
        did = el.get("id", "")
        for ref in el.iter():
            if local(ref.tag) == "reference" and ref.get("source", "").upper() in (
                    "SELF", "FEDORA", "ALICORN", "ADVISORY"):
                adv_of.setdefault(did, ref.get("ref_id", ""))
        title = next((t.text for t in el.iter() if local(t.tag) == "title"), "") or ""
        adv_of.setdefault(did, title.split()[0] if title else did)
        # "bp156.noarch is earlier than 0:1.0-2": the package whose version test held
        pkgs_of[did] = {(c.get("comment") or "").split()[0].rsplit(".", 1)[0]
                        for c in el.iter()
                        if local(c.tag) == "criterion" and c.get("test_ref") in tests_true
                        and "is earlier than" in (c.get("comment") or "")}
    pairs = set()
    for did in defs_true:
        for p in pkgs_of.get(did, set()) or {""}:
            pairs.add((adv_of.get(did, did), p))
    return pairs


def run_peers(args: argparse.Namespace, results: dict[str, Any]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="alicorn-scan-bench-"))
    status = 0
    try:
        peers = Peers(tmp, args.packages, args.advisories)
        t_prep, _ = timed(peers.prepare)
        say(f"peers: prepared in {t_prep:.1f} s; {len(peers.expected)} expected pairs")
        contenders = {"dnf updateinfo": peers.dnf_updateinfo,
                      "dnf list-security": peers.dnf_list_security,
                      "oscap-chroot": peers.oscap, "alicorn scan": peers.alicorn_scan}
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        answers: dict[str, set[tuple[str, str]]] = {}
        names = list(contenders)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                seconds, answer = timed(contenders[name])
                samples[name].append(seconds)
                answers[name] = answer
                say(f"  round {r + 1} {name}: {seconds:.3f} s, {len(answer)} pairs")
        summary: dict[str, Any] = {}
        for name in names:
            pairs = answers[name]
            same = pairs == peers.expected
            summary[name] = {"median_s": statistics.median(samples[name]),
                             "samples_s": samples[name], "pairs": len(pairs),
                             "same_answer": same}
            if not same:
                status = 1
                extra = sorted(pairs - peers.expected)[:5]
                missing = sorted(peers.expected - pairs)[:5]
                say(f"  {name}: DIFFERENT answer; extra {extra} missing {missing}")
        base = summary["alicorn scan"]["median_s"]
        for name in names:
            summary[name]["ratio_to_alicorn"] = summary[name]["median_s"] / base
        results["peers"] = {"packages": args.packages, "advisories": args.advisories,
                            "rounds": args.rounds, "expected_pairs": len(peers.expected),
                            "contenders": summary}
        print(f"\npeers: {args.packages} installed packages, {args.advisories} advisories, "
              f"{args.rounds} rounds (median wall time, fresh process each)")
        print(f"{'contender':<20}{'median s':>10}{'x alicorn':>11}  same answer")
        for name in names:
            s = summary[name]
            print(f"{name:<20}{s['median_s']:>10.3f}{s['ratio_to_alicorn']:>11.1f}  "
                  f"{'yes' if s['same_answer'] else 'NO'}")
    finally:
        if status == 0 and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"kept {tmp}")
    return status


# -- scale --------------------------------------------------------------------------------------


def _real_advisories() -> list[Any]:
    from alicorn.advisories.feeds import load
    out: list[Any] = []
    for sub in ("osv/pypi/vulns", "rubysec/gems", "ghsa/advisories"):
        path = SHARED / sub
        if path.exists():
            out.extend(load(path).advisories)
    return out


def _synthetic(count: int, rpm_names: list[str], deb_sources: list[str],
               rng: random.Random) -> list[Any]:
    from alicorn.advisories.model import Advisory, Affected, PackageRef, Range, Reference
    out = []
    for i in range(count):
        cve = Reference(type="cve", id=f"CVE-2025-{100000 + i}")
        if i % 4:
            pkgs = tuple(PackageRef(name=n, epoch="0", version=f"{1 + i % 7}.{i % 13}",
                                    release=f"{1 + i % 3}.fc40", arch="x86_64")
                         for n in rng.sample(rpm_names, k=1 + i % 3))
            out.append(Advisory(id=f"FEDORA-2025-{i:010x}", type="security",
                                severity=SEVERITIES[i % 4], title="", description="",
                                issued=None, updated=None, release="Fedora 40", status="stable",
                                references=(cve,), packages=pkgs))
        else:
            src = rng.choice(deb_sources)
            fixed = f"{1 + i % 7}.{i % 13}-{1 + i % 3}+deb12u1"
            out.append(Advisory(
                id=f"DEBIAN-{src}-{i}", type="security", severity=None, title="",
                description="", issued=None, updated=None, release="12", status=None,
                references=(cve,), format="debian",
                affected=(Affected("Debian:12", src, ranges=(Range(
                    "ECOSYSTEM", (("introduced", "0"), ("fixed", fixed))),)),)))
    return out


def _inventories(count: int, rpm_names: list[str], deb_sources: list[str],
                 pypi: list[tuple[str, str]], gems: list[tuple[str, str]],
                 rng: random.Random) -> list[Any]:
    from alicorn.inventory.model import Distro, Inventory, Package
    out = []
    fedora = Distro(id="fedora", version_id="40")
    debian = Distro(id="debian", version_id="12")
    for i in range(count):
        pkgs: list[Package] = []
        if i % 2:
            distro = fedora
            for n in rng.sample(rpm_names, k=300):
                v, r = f"{1 + rng.randrange(7)}.{rng.randrange(13)}", f"{1 + rng.randrange(3)}.fc40"
                pkgs.append(Package(type="rpm", name=n, version=f"{v}-{r}", arch="x86_64",
                                    epoch=None, release=r, source=n))
        else:
            distro = debian
            for n in rng.sample(deb_sources, k=300):
                v = f"{1 + rng.randrange(7)}.{rng.randrange(13)}-{1 + rng.randrange(3)}"
                pkgs.append(Package(type="deb", name=f"lib{n}", version=v, arch="amd64",
                                    source=n))
        for name, version in rng.sample(pypi, k=min(40, len(pypi))):
            pkgs.append(Package(type="pypi", name=name, version=version))
        for name, version in rng.sample(gems, k=min(20, len(gems))):
            pkgs.append(Package(type="gem", name=name, version=version))
        out.append(Inventory(target=f"image-{i}", kind="oci-layout", packages=tuple(pkgs),
                             distro=distro, digest=f"sha256:{i:064x}"))
    return out


def _upstream_versions(advisories: list[Any], ecosystem: str) -> list[tuple[str, str]]:
    """(name, a version some advisory names) for packages of ``ecosystem``."""
    seen: dict[str, str] = {}
    for a in advisories:
        for aff in a.affected:
            if aff.ecosystem == ecosystem and aff.name not in seen:
                versions = [v for r in aff.ranges for k, v in r.events if k != "introduced"]
                if aff.versions:
                    seen[aff.name] = aff.versions[0]
                elif versions:
                    seen[aff.name] = versions[0]
    return sorted(seen.items())


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_scale(args: argparse.Namespace, results: dict[str, Any]) -> int:
    import logging

    from alicorn.match.index import AdvisoryIndex
    # Undecidable matches (PyPA lists versions such as "0.1-bulbasaur") are logged per image.
    logging.getLogger("alicorn").setLevel(logging.ERROR)
    from alicorn.match.matcher import match
    rng = random.Random(7)
    rss0 = peak_rss_mib()
    t_real, real = timed(_real_advisories)
    rpm_names = [f"pkg{i:05d}" for i in range(20000)]
    deb_sources = [f"src{i:05d}" for i in range(8000)]
    synthetic = _synthetic(max(0, args.advisories - len(real)), rpm_names, deb_sources, rng)
    advisories = real + synthetic
    pypi = _upstream_versions(real, "PyPI")
    gems = [(n, v) for n, v in _upstream_versions(real, "RubyGems")]
    t_inv, inventories = timed(lambda: _inventories(args.images, rpm_names, deb_sources,
                                                    pypi, gems, rng))
    t_index, index = timed(lambda: AdvisoryIndex(advisories))
    rss_index = peak_rss_mib()
    per_image = []
    findings = 0
    t0 = time.perf_counter()
    for inv in inventories:
        t1 = time.perf_counter()
        findings += len(match(inv, index))
        per_image.append(time.perf_counter() - t1)
    t_match = time.perf_counter() - t0
    packages = sum(len(i.packages) for i in inventories)
    results["scale"] = {
        "advisories": len(advisories), "real_advisories": len(real), "images": len(inventories),
        "packages": packages, "findings": findings, "load_real_s": t_real,
        "index_build_s": t_index, "match_total_s": t_match,
        "match_per_image_median_ms": statistics.median(per_image) * 1000,
        "match_per_image_p99_ms": sorted(per_image)[int(len(per_image) * 0.99) - 1] * 1000,
        "packages_per_s": packages / t_match, "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": rss0, "rss_after_index_mib": rss_index, "inventories_s": t_inv,
    }
    s = results["scale"]
    print(f"\nscale: {s['advisories']} advisories ({s['real_advisories']} real), "
          f"{s['images']} images, {s['packages']} packages")
    print(f"  load real feeds {t_real:.2f} s; index {t_index:.2f} s; match {t_match:.2f} s "
          f"({s['match_per_image_median_ms']:.2f} ms median per image, p99 "
          f"{s['match_per_image_p99_ms']:.2f} ms; {s['packages_per_s']:.0f} packages/s); "
          f"{findings} findings; peak RSS {s['peak_rss_mib']:.0f} MiB")
    return 0


# -- lookup -------------------------------------------------------------------------------------


def run_lookup(args: argparse.Namespace, results: dict[str, Any]) -> int:
    from sqlalchemy import insert

    from alicorn.advisories.model import Advisory, Affected, PackageRef, Range
    from alicorn.inventory.model import Distro, Inventory
    from alicorn.match.affected import affected_images, package_from_row
    from alicorn.match.index import AdvisoryIndex
    from alicorn.match.matcher import match
    from alicorn.store.db import engine_for
    from alicorn.store.models import BuildRow, PackageRow
    tmp = Path(tempfile.mkdtemp(prefix="alicorn-lookup-bench-"))
    try:
        url = f"sqlite:///{tmp / 'a.db'}"
        engine = engine_for(url)
        rng = random.Random(11)
        rpm_names = [f"pkg{i:05d}" for i in range(5000)]
        deb_sources = [f"src{i:05d}" for i in range(3000)]
        now = datetime(2026, 1, 1)
        t0 = time.perf_counter()
        inventories: list[Any] = []
        with engine.begin() as conn:
            for start in range(0, args.images, 500):
                builds, rows = [], []
                for i in range(start, min(args.images, start + 500)):
                    bid = f"b{i:08d}"
                    builds.append(dict(
                        id=bid, state="done", created_at=now, argv=[], submitter="bench",
                        source_kind="file", recipe_path=f"/r/{i}.yaml", recipe_name=f"img{i}",
                        options={}, digest=f"sha256:{i:064x}", published=True))
                    if i % 2:
                        for n in rng.sample(rpm_names, k=args.packages):
                            v = f"{1 + rng.randrange(7)}.{rng.randrange(13)}-1.fc40"
                            rows.append(dict(build_id=bid, type="rpm", name=n, version=v,
                                             arch="x86_64", source=f"{n}-{v}.src.rpm",
                                             purl=f"pkg:rpm/fedora/{n}@{v}?distro=fedora-40"))
                    else:
                        for n in rng.sample(deb_sources, k=args.packages):
                            v = f"{1 + rng.randrange(7)}.{rng.randrange(13)}-1"
                            rows.append(dict(build_id=bid, type="deb", name=f"lib{n}",
                                             version=v, arch="amd64", source=n,
                                             purl=f"pkg:deb/debian/lib{n}@{v}"
                                                  "?distro=debian-12"))
                conn.execute(insert(BuildRow), builds)
                conn.execute(insert(PackageRow), rows)
                by_build: dict[str, list[Any]] = {}
                for r in rows:
                    by_build.setdefault(r["build_id"], []).append(PackageRow(**r))
                for bid, prs in by_build.items():
                    deb = prs[0].type == "deb"
                    inventories.append(Inventory(
                        target=bid, kind="alicorn",
                        packages=tuple(package_from_row(p) for p in prs),
                        distro=Distro("debian", "12") if deb else Distro("fedora", "40")))
        t_fill = time.perf_counter() - t0
        queries = []
        for i in range(args.queries):
            if i % 2:
                queries.append(Advisory(
                    id=f"F-{i}", type="security", severity="Important", title="",
                    description="", issued=None, updated=None, release=None, status=None,
                    packages=(PackageRef(rng.choice(rpm_names), "0", "4.6", "1.fc40",
                                         "x86_64"),)))
            else:
                queries.append(Advisory(
                    id=f"D-{i}", type="security", severity=None, title="", description="",
                    issued=None, updated=None, release=None, status=None,
                    affected=(Affected("Debian:12", rng.choice(deb_sources), ranges=(Range(
                        "ECOSYSTEM", (("introduced", "0"), ("fixed", "4.6-1"))),)),)))
        fast, slow, agree = [], [], True
        for q in queries:
            t1 = time.perf_counter()
            hits = affected_images(url, [q], latest_only=False)
            fast.append(time.perf_counter() - t1)
            if len(slow) < args.naive_queries:
                t1 = time.perf_counter()
                index = AdvisoryIndex([q])
                naive = {inv.target for inv in inventories if match(inv, index)}
                slow.append(time.perf_counter() - t1)
                agree = agree and naive == {h.build_id for h in hits}
        results["lookup"] = {
            "images": args.images, "packages_per_image": args.packages,
            "rows": args.images * args.packages, "fill_s": t_fill,
            "queries": len(fast), "indexed_median_ms": statistics.median(fast) * 1000,
            "indexed_p99_ms": sorted(fast)[max(0, int(len(fast) * 0.99) - 1)] * 1000,
            "naive_queries": len(slow), "naive_median_ms": statistics.median(slow) * 1000,
            "same_answer": agree,
        }
        s = results["lookup"]
        print(f"\nlookup: {args.images} images x {args.packages} packages "
              f"({s['rows']} rows, filled in {t_fill:.1f} s)")
        print(f"  advisory → affected images: indexed {s['indexed_median_ms']:.1f} ms median "
              f"(p99 {s['indexed_p99_ms']:.1f}), naive {s['naive_median_ms']:.0f} ms median "
              f"(x{s['naive_median_ms'] / s['indexed_median_ms']:.0f}); same answer: "
              f"{'yes' if agree else 'NO'}")
        return 0 if agree else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["peers", "scale", "lookup", "all"])
    parser.add_argument("--packages", type=int, default=None,
                        help="peers: installed packages (300); lookup: packages per image (200)")
    parser.add_argument("--advisories", type=int, default=None,
                        help="peers: advisories (200); scale: advisories in all (100000)")
    parser.add_argument("--images", type=int, default=None,
                        help="scale: inventories (1000); lookup: images (10000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--naive-queries", type=int, default=10)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(),
                               "cpus": os.cpu_count()}
    status = 0
    parts = ["peers", "scale", "lookup"] if args.part == "all" else [args.part]
    for part in parts:
        ns = argparse.Namespace(**vars(args))
        if part == "peers":
            ns.packages = args.packages or 300
            ns.advisories = args.advisories or 200
            status |= run_peers(ns, results)
        elif part == "scale":
            ns.advisories = args.advisories or 100_000
            ns.images = args.images or 1000
            status |= run_scale(ns, results)
        else:
            ns.images = args.images or 10_000
            ns.packages = args.packages or 200
            status |= run_lookup(ns, results)
    out = args.out or HERE / "results" / f"scan-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results: {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
