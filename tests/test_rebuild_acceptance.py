"""Advisory-driven rebuilds, tried as a new user would (issue 5's acceptance).

One ALICORN_HOME for the whole file, one story in stages, each a module-scoped fixture that
waits for the service and returns what ``alicorn events --json`` then says:

1. the RPM pony's repository at ``--version 1``; ``alicorn build pony.yaml`` and the layered
   ``site.yaml`` on it, both published; the rebuild service running: the one the first
   ``alicorn build`` started in the background (it runs the builds, and watches the
   repositories the images' recipes use, every 10 s);
2. ``updated``: the repository rewritten with ``--version both`` (busybox 1.35.0-2 and its
   advisory FEDORA-2024-b7e1c3d2a9) and *no further alicorn command* but read-only ones
   (events, scan, show, trace): a fixed pony-rpm is published, tested and gated, with
   provenance naming the advisory and the image it replaces, and pony-site is rebuilt on it
   after it;
3. ``hand``: advisories imported by hand: one for a package no image has (skipped; imported
   twice, still one event) and one naming a busybox the repository does not have (the
   rebuild fails: the repository lacks the fixed version; nothing is published);
4. ``broken``: the repository rewritten with ``--version 3`` (a further busybox security
   update, and a pony-content whose page no longer says "Hello from pony"): the rebuild's
   test fails, the event fails naming it, and the registry's tag still gives the good image.

Every wait is bounded; a timeout prints the last events and the service's log.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, Cli, require

pytestmark = pytest.mark.integration

ADVISORY, CVE = "FEDORA-2024-b7e1c3d2a9", "CVE-2022-48174"
BROKEN_ADVISORY, BROKEN_CVE = "FEDORA-2024-3e5d8f1a6c", "CVE-2023-42363"
LACKING_ADVISORY, LACKING_CVE = "FEDORA-2024-9c0ffee123", "CVE-2024-58251"
ABSENT_ADVISORY, ABSENT_CVE = "FEDORA-2024-1a2b3c4d5e", "CVE-2024-51234"
FINAL = ("done", "failed", "skipped")
# "pony-rpm: the repositories lack the fixed version: busybox 1.35.0-2.fc40 is installed, …"
LACKS = re.compile(r"\blacks? the fixed version\b")
# How long one stage may take: the service's poll, the rebuild of pony-rpm (compose, tests in
# podman, the gate), then pony-site's.  Far above what it takes; a hang fails, not a slow run.
STAGE_TIMEOUT = float(os.environ.get("ALICORN_TEST_REBUILD_TIMEOUT", "240"))
# The background service `alicorn build` starts looks at the repositories this often.
POLL = 10.0


# -- helpers ------------------------------------------------------------------------------------


def build_repo(example: Path, version: str) -> None:
    subprocess.run([str(example / "build-repo"), str(example / "repo"), "--version", version],
                   check=True, capture_output=True)


@dataclass
class Service:
    """The rebuild service of one ALICORN_HOME: the one ``alicorn build`` started in the
    background (``run/worker.pid``, ``run/worker.log``)."""

    home: Path

    @property
    def log(self) -> Path:
        return self.home / "run" / "worker.log"

    def pid(self) -> int | None:
        try:
            return int((self.home / "run" / "worker.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no service log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        pid = self.pid()
        try:
            if pid is None:
                raise ProcessLookupError
            os.kill(pid, 0)
        except ProcessLookupError:
            pytest.fail(f"the background service (pid {pid}) is not running:\n{self.tail()}")


@dataclass
class World:
    cli: Cli
    example: Path
    service: Service
    pony: dict[str, Any]
    site: dict[str, Any]
    registry: str
    pulled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Stage:
    event: dict[str, Any]
    events: list[dict[str, Any]]
    seconds: float


def events(cli: Cli) -> list[dict[str, Any]]:
    proc = cli("events", "--json", timeout=120)
    assert proc.returncode == 0, f"alicorn events --json: {proc.returncode}\n{proc.stderr}"
    data = json.loads(proc.stdout)
    assert isinstance(data, list), data
    return data


def of(advisory: str, evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in evs if e["advisory"] == advisory]


def wait_for(world: World, *advisories: str, timeout: float = STAGE_TIMEOUT) -> Stage:
    """Poll ``alicorn events --json`` (read-only) until every advisory's event is final."""
    t0 = time.monotonic()
    seen: list[dict[str, Any]] = []
    while True:
        world.service.check_alive()
        seen = events(world.cli)
        found = [of(a, seen) for a in advisories]
        if all(f and all(e["state"] in FINAL for e in f) for f in found):
            return Stage(event=found[0][0], events=seen, seconds=time.monotonic() - t0)
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"no final event for {', '.join(advisories)} within {timeout:.0f} s; "
                        f"events: {json.dumps(seen, indent=1)}\nservice log:\n"
                        f"{world.service.tail()}")
        time.sleep(1)


def manifest_digest(registry: str, name: str, tag: str = "latest") -> str:
    """What the registry's tag points at (read with the registry's HTTP API, not alicorn)."""
    req = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/{tag}", method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.headers["Docker-Content-Digest"])


def registry_get(registry: str, path: str) -> Any:
    """A manifest (JSON) or blob (bytes) from the registry's HTTP API."""
    req = urllib.request.Request(f"http://{registry}/v2/{path}", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        data = resp.read()
    return json.loads(data) if "/manifests/" in path else data


def build_rows(world: World, *build_ids: str) -> dict[str, sqlite3.Row]:
    """The builds' rows, read-only straight from the database (times the CLI does not show)."""
    db = world.cli.home / "alicorn.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        marks = ",".join("?" * len(build_ids))
        rows = conn.execute(f"SELECT * FROM builds WHERE id IN ({marks})", build_ids).fetchall()
    return {r["id"]: r for r in rows}


def scan(world: World, digest: str) -> tuple[int, dict[str, Any]]:
    proc = world.cli("scan", digest, "--json", timeout=300)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def statement(world: World, digest: str) -> dict[str, Any]:
    proc = world.cli("trace", digest, "--json", timeout=300)
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["verified"], \
        [c for c in data.get("checks", []) if not c.get("ok", True)] or proc.stderr
    payload = json.loads(base64.b64decode(data["provenance"]["payload"]))
    assert isinstance(payload, dict)
    return payload


def updateinfo(advisory: str, cve: str, package: str, version: str, release: str,
               arch: str = "x86_64") -> str:
    """One Bodhi-style security advisory, as a feed file someone imports by hand."""
    nvr = f"{package}-{version}-{release}"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="updates@fedoraproject.org" status="stable" type="security" version="2.0">
    <id>{advisory}</id>
    <title>{nvr}</title>
    <issued date="2024-04-04 00:00:00"/>
    <updated date="2024-04-05 00:00:00"/>
    <release>Fedora 40</release>
    <severity>Important</severity>
    <summary>{nvr} security update</summary>
    <description>Security fix for {cve}.</description>
    <references>
      <reference href="https://www.cve.org/CVERecord?id={cve}" id="{cve}" type="cve" title="{cve}"/>
    </references>
    <pkglist>
      <collection short="F40">
        <name>Fedora 40</name>
        <package name="{package}" version="{version}" release="{release}" epoch="0" arch="{arch}" src="{nvr}.src.rpm">
          <filename>{nvr}.{arch}.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
</updates>
"""  # noqa: E501


# -- the story ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require("podman", "skopeo", "docker-registry", "rpmbuild", "createrepo_c", "dnf", "busybox")
    base = tmp_path_factory.mktemp("rebuild")
    example = base / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", example, ignore=shutil.ignore_patterns("repo"))
    build_repo(example, "1")
    cli = Cli(base / "home")
    world_: World | None = None
    try:
        # The first build starts the service in the background: it runs the builds, and
        # from now on watches the repositories the images' recipes use.
        rc, pony = cli.json("build", str(example / "pony.yaml"))
        assert rc == 0, pony
        rc, site = cli.json("build", str(example / "site.yaml"))
        assert rc == 0, site
        service = Service(cli.home)
        service.check_alive()
        assert events(cli) == []
        world_ = World(cli=cli, example=example, service=service, pony=pony, site=site,
                       registry=pony["image"].split("/")[0])
        yield world_
    finally:
        for ref in world_.pulled if world_ else []:
            subprocess.run(["podman", "rmi", "-f", ref], capture_output=True)
        cli.down()


@pytest.fixture(scope="module")
def updated(world: World) -> Stage:
    """The security update lands in the repository; nothing else is asked of alicorn."""
    build_repo(world.example, "both")
    return wait_for(world, ADVISORY)


@pytest.fixture(scope="module")
def hand(world: World, updated: Stage) -> Stage:
    """Advisories imported by hand: one for a package no image has (twice), one naming a
    busybox build the repository does not have."""
    feeds = world.example.parent / "feeds"
    feeds.mkdir(exist_ok=True)
    absent = feeds / "absent.xml"
    absent.write_text(updateinfo(ABSENT_ADVISORY, ABSENT_CVE, "lighttpd", "1.4.76", "1.fc40"))
    lacking = feeds / "lacking.xml"
    lacking.write_text(updateinfo(LACKING_ADVISORY, LACKING_CVE, "busybox", "1.35.0",
                                  "9.fc40"))
    for path in (absent, absent, lacking):
        world.cli("advisories", "import", str(path), check=True, timeout=120)
    return wait_for(world, ABSENT_ADVISORY, LACKING_ADVISORY)


@pytest.fixture(scope="module")
def broken(world: World, hand: Stage) -> Stage:
    """A further busybox security update, shipped with a pony-content that breaks the page."""
    build_repo(world.example, "3")
    return wait_for(world, BROKEN_ADVISORY)


# -- 2: the update is rebuilt, tested, gated, published; the layered site follows -------------


def _picked(build: dict[str, Any]) -> dict[str, Any]:
    return {k: build[k] for k in ("image", "old_digest", "state", "tests", "gate")}


def test_the_update_makes_one_event_whose_builds_passed(world: World, updated: Stage) -> None:
    event = updated.event
    assert len(of(ADVISORY, updated.events)) == 1
    assert event["state"] == "done", event
    assert event["cves"] == [CVE]
    assert [_picked(b) for b in event["builds"]] == [
        {"image": "pony-rpm", "old_digest": world.pony["digest"], "state": "done",
         "tests": "passed", "gate": "passed"},
        {"image": "pony-site", "old_digest": world.site["digest"], "state": "done",
         "tests": "passed", "gate": "passed"},
    ]
    pony, site = event["builds"]
    assert site["parent"] == "pony-rpm"
    for b in (pony, site):
        assert b["new_digest"].startswith("sha256:") and b["new_digest"] != b["old_digest"]
    assert updated.seconds < STAGE_TIMEOUT


def test_the_fixed_pony_is_published_and_its_scan_is_clean(world: World,
                                                            updated: Stage) -> None:
    pony = updated.event["builds"][0]
    assert manifest_digest(world.registry, "pony-rpm") == pony["new_digest"]
    rc, before = scan(world, world.pony["digest"])
    assert rc == 1 and {f["advisory"] for f in before["findings"]} == {ADVISORY}
    rc, after = scan(world, pony["new_digest"])
    assert rc == 0, after
    assert after["findings"] == [] and after["complete"] is True
    assert CVE not in json.dumps(after)
    shown = json.loads(world.cli("show", pony["build_id"], "--json", check=True).stdout)
    assert shown["digest"] == pony["new_digest"] and shown["state"] == "done"
    first = json.loads(world.cli("show", world.pony["build_id"], "--json",
                                 check=True).stdout)
    expected = {p["name"]: p["version"] for p in first["package_list"]}
    assert expected["busybox"] == "1.35.0-1.fc40"
    # The same packages, only busybox moved to the fixed build.
    assert {p["name"]: p["version"] for p in shown["package_list"]} == \
        {**expected, "busybox": "1.35.0-2.fc40"}


def test_provenance_names_the_advisory_and_the_previous_image(world: World,
                                                              updated: Stage) -> None:
    pony = updated.event["builds"][0]
    new = statement(world, pony["new_digest"])
    assert [s["digest"]["sha256"] for s in new["subject"]] == \
        [pony["new_digest"].removeprefix("sha256:")]
    text = json.dumps(new["predicate"])
    assert ADVISORY in text, "the rebuild's provenance does not name the advisory"
    assert world.pony["digest"] in text, "the rebuild's provenance does not name the image " \
        "it replaces"
    old = json.dumps(statement(world, world.pony["digest"])["predicate"])
    assert ADVISORY not in old


def test_the_build_records_why_it_ran_and_what_its_checks_said(world: World,
                                                              updated: Stage) -> None:
    pony = updated.event["builds"][0]
    shown = json.loads(world.cli("show", pony["build_id"], "--json", check=True).stdout)
    assert shown["trigger"]["advisories"] == [ADVISORY]
    assert shown["trigger"]["previous_digest"] == world.pony["digest"]
    assert shown["trigger"]["previous_build"] == world.pony["build_id"]
    assert (shown["checks"]["tests"], shown["checks"]["gate"], shown["checks"]["fixed"]) == \
        ("passed", "passed", "passed")
    assert [(t["name"], t["passed"]) for t in shown["checks"]["tests_detail"]] == \
        [("the page is served", True)]


def test_test_and_gate_records_are_attached_to_the_image(world: World,
                                                         updated: Stage) -> None:
    """Beside the SBOMs and the provenance, the registry holds the signed test and gate
    statements and the gate's own report, under cosign-style tags of the image's digest."""
    new = updated.event["builds"][0]["new_digest"]
    tag = new.replace(":", "-")
    att = registry_get(world.registry, f"pony-rpm/manifests/{tag}.att")
    kinds = [layer.get("annotations", {}).get("predicateType") for layer in att["layers"]]
    assert kinds == ["https://slsa.dev/provenance/v1", "https://alicorn.dev/attestation/tests/v1",
                     "https://alicorn.dev/attestation/gate/v1"]
    gate = registry_get(world.registry, f"pony-rpm/manifests/{tag}.gate")
    [report] = [layer for layer in gate["layers"]
                if layer["mediaType"] == "application/vnd.alicorn.gate.v1+json"]
    doc = json.loads(registry_get(world.registry, f"pony-rpm/blobs/{report['digest']}"))
    assert doc["passed"] is True
    names = {c["name"] for c in doc["checks"]}
    assert any("openscap" in n for n in names), names
    assert all(c["passed"] for c in doc["checks"]), doc["checks"]


def test_the_layered_site_is_rebuilt_on_the_new_base_after_it(world: World,
                                                              updated: Stage) -> None:
    pony, site = updated.event["builds"]
    shown = json.loads(world.cli("show", site["build_id"], "--json", check=True).stdout)
    assert shown["base_digest"] == pony["new_digest"]
    rows = build_rows(world, pony["build_id"], site["build_id"])
    parent, child = rows[pony["build_id"]], rows[site["build_id"]]
    assert child["base_digest"] == pony["new_digest"]
    assert child["recipe_name"] == "pony-site" and parent["recipe_name"] == "pony-rpm"
    assert parent["finished_at"] is not None and child["started_at"] is not None
    assert child["started_at"] >= parent["finished_at"], (dict(parent), dict(child))
    assert manifest_digest(world.registry, "pony-site") == site["new_digest"]
    # The site image carries the base's layers: its busybox is the fixed one.
    rc, before = scan(world, world.site["digest"])
    assert rc == 1 and {f["advisory"] for f in before["findings"]} == {ADVISORY}
    rc, after = scan(world, site["new_digest"])
    assert rc == 0 and after["findings"] == [], after


# -- 3: advisories imported by hand ----------------------------------------------------------


def test_an_advisory_for_a_package_no_image_has_is_skipped_and_recorded(hand: Stage) -> None:
    [event] = of(ABSENT_ADVISORY, hand.events)
    assert event["state"] == "skipped", event
    assert event["builds"] == []
    assert "lighttpd" in (event["reason"] or ""), event


def test_the_same_advisory_imported_twice_is_one_event(world: World, hand: Stage) -> None:
    assert len(of(ABSENT_ADVISORY, hand.events)) == 1
    # And the repository's advisory, imported by hand after the service read it: no new
    # event, no new rebuild.
    before = events(world.cli)
    world.cli("advisories", "import", str(world.example / "repo"), check=True, timeout=120)
    time.sleep(POLL + 3)
    after = events(world.cli)
    assert of(ADVISORY, after) == of(ADVISORY, before)
    assert len(after) == len(before)


def test_a_repository_that_lacks_the_fixed_version_fails_the_rebuild(world: World,
                                                                     updated: Stage,
                                                                     hand: Stage) -> None:
    [event] = of(LACKING_ADVISORY, hand.events)
    assert event["state"] == "failed", event
    assert LACKS.search(event["reason"] or ""), event
    good = updated.event["builds"][0]["new_digest"]
    pony = event["builds"][0]
    assert (pony["image"], pony["old_digest"], pony["state"]) == ("pony-rpm", good, "failed")
    assert LACKS.search(pony["reason"] or ""), pony
    assert "1.35.0-9.fc40" in (pony["reason"] or ""), pony
    # A failed parent fails its children without building them.
    assert [(b["image"], b["state"]) for b in event["builds"][1:]] == [("pony-site", "failed")]
    assert event["builds"][1]["build_id"] is None
    assert manifest_digest(world.registry, "pony-rpm") == good
    assert manifest_digest(world.registry, "pony-site") == updated.event["builds"][1][
        "new_digest"]


# -- 4: an update that breaks the web server's content is not published ----------------------


def test_the_broken_update_fails_naming_the_test(world: World, updated: Stage,
                                                 broken: Stage) -> None:
    event = broken.event
    assert len(of(BROKEN_ADVISORY, broken.events)) == 1
    assert event["state"] == "failed", event
    assert event["cves"] == [BROKEN_CVE]
    assert "pony-rpm" in event["reason"] and "the page is served" in event["reason"], event
    good = updated.event["builds"][0]["new_digest"]
    pony = event["builds"][0]
    assert _picked(pony) == {"image": "pony-rpm", "old_digest": good, "state": "failed",
                             "tests": "failed", "gate": pony["gate"]}
    assert pony["gate"] in (None, "passed", "failed")
    assert [(b["image"], b["state"], b["build_id"]) for b in event["builds"][1:]] == \
        [("pony-site", "failed", None)]
    # The candidate was built (the broken page is in it) but kept back: not even its
    # manifest reached the registry.
    shown = json.loads(world.cli("show", pony["build_id"], "--json", check=True).stdout)
    versions = {p["name"]: p["version"] for p in shown["package_list"]}
    assert (versions["busybox"], versions["pony-content"]) == ("1.35.0-3.fc40", "1.0-2.fc40")
    assert shown["state"] == "failed" and shown["checks"]["tests"] == "failed", shown
    assert [(t["name"], t["passed"]) for t in shown["checks"]["tests_detail"]] == \
        [("the page is served", False)]
    assert "does not contain 'Hello from pony'" in shown["checks"]["tests_detail"][0]["detail"]
    candidate = shown["digest"]
    assert candidate and candidate not in (good, pony["old_digest"])
    with pytest.raises(urllib.error.HTTPError) as missing:
        manifest_digest(world.registry, "pony-rpm", candidate)
    assert missing.value.code == 404
    # Its logs are kept: what the tests saw is in the build's checks log.
    checks_log = world.cli.home / "builds" / pony["build_id"] / "checks.log"
    assert "FAIL the page is served" in checks_log.read_text()
    leftovers = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"],
                               capture_output=True, text=True, check=True).stdout
    assert "alicorn-test-" not in leftovers


def test_the_registry_still_gives_the_good_image(world: World, updated: Stage,
                                                 broken: Stage) -> None:
    good = updated.event["builds"][0]["new_digest"]
    assert manifest_digest(world.registry, "pony-rpm") == good
    assert manifest_digest(world.registry, "pony-site") == updated.event["builds"][1][
        "new_digest"]
    ref = f"{world.registry}/pony-rpm:latest"
    world.pulled.append(ref)
    pulled = subprocess.run(["podman", "pull", "-q", ref], capture_output=True, text=True,
                            timeout=300)
    assert pulled.returncode == 0, pulled.stderr
    inspected = subprocess.run(["podman", "image", "inspect", "--format", "{{.Digest}}", ref],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert inspected == good


def test_the_example_repository_at_version_3_has_the_broken_update(tmp_path: Path) -> None:
    """The repository build-repo makes for stage 4, read with rpm and dnf's metadata alone."""
    require("rpmbuild", "createrepo_c", "busybox")
    example = tmp_path / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", example, ignore=shutil.ignore_patterns("repo"))
    build_repo(example, "3")
    both = tmp_path / "both"
    subprocess.run([str(example / "build-repo"), str(both)], check=True, capture_output=True)
    names = {p.name for p in (example / "repo" / "Packages").iterdir()}
    earlier = {p.name for p in (both / "Packages").iterdir()}
    # Everything `both` has, byte for byte, plus the broken update's two packages.
    assert names - earlier == {"busybox-1.35.0-3.fc40.x86_64.rpm",
                               "pony-content-1.0-2.fc40.noarch.rpm"}
    assert earlier <= names and "pony-content-1.0-1.fc40.noarch.rpm" in earlier
    for name in earlier:
        assert (example / "repo" / "Packages" / name).read_bytes() == \
            (both / "Packages" / name).read_bytes(), name
    listed = subprocess.run(["rpm", "-qlp", str(example / "repo" / "Packages" /
                                                "pony-content-1.0-2.fc40.noarch.rpm")],
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == ["/var/www/html/index.html"]
    from alicorn.advisories.feeds import load
    advisories = {a.id: a for a in load(example / "repo").advisories}
    assert sorted(advisories) == [BROKEN_ADVISORY, ADVISORY]
    fixed = advisories[BROKEN_ADVISORY].packages[0]
    assert (fixed.name, fixed.version, fixed.release) == ("busybox", "1.35.0", "3.fc40")
    assert {r.id for r in advisories[BROKEN_ADVISORY].references if r.type == "cve"} == \
        {BROKEN_CVE}
    # The same advisory as in `both`: an importer sees it unchanged.
    again = {a.id: a for a in load(both).advisories}
    assert replace(again[ADVISORY], source=None) == replace(advisories[ADVISORY], source=None)
    # The page the broken update ships no longer greets.
    page = subprocess.run(
        f"rpm2archive - < {example / 'repo/Packages/pony-content-1.0-2.fc40.noarch.rpm'} "
        "| tar xzOf - ./var/www/html/index.html", shell=True, capture_output=True, text=True,
        check=True).stdout
    assert "<html" in page and "Hello from pony" not in page
