"""Acceptance: a Debian pony image built from bookworm without bookworm-security gets exactly the
CVEs that Debian's advisories name for its installed source packages, and none after the fixed
packages are installed.

Two root filesystems are composed with mmdebstrap the way the pony recipe composes its image
(examples/pony/debian/pony.yaml: same variant, packages, doc exclusion and the host's mirrors):
one from bookworm alone, one from bookworm + bookworm-security.  The advisories come from the
security suite's own changelogs (:func:`fetch_security_advisories`), the inventory from the
roots' dpkg databases, the findings from the matcher.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import apt_pkg
import pytest

from alicorn.advisories.debian import fetch_security_advisories
from alicorn.advisories.interface import FeedResult
from alicorn.compose.debian import host_mirror
from alicorn.inventory.collect import collect
from alicorn.inventory.model import Inventory
from alicorn.match.index import AdvisoryIndex
from alicorn.match.matcher import scan
from alicorn.proc import run
from alicorn.recipe.loader import load_recipe
from conftest import EXAMPLES, require, require_network_archive

pytestmark = [pytest.mark.integration, pytest.mark.network]

CACHE = Path.home() / ".cache" / "alicorn-test-debs"
PONY = EXAMPLES / "pony" / "debian" / "pony.yaml"
TIMINGS: dict[str, float] = {}


def compose(root: Path, suites: list[str]) -> None:
    """mmdebstrap as alicorn.compose.debian runs it for the pony, with the given suites."""
    recipe = load_recipe(PONY)
    archives = CACHE / "mmdebstrap-archives"
    archives.mkdir(parents=True, exist_ok=True)
    argv = ["mmdebstrap", "--mode=root", "--format=directory",
            f"--variant={recipe.variant or 'essential'}",
            f"--architectures={recipe.oci_architecture}",
            "--include=" + ",".join(recipe.packages)]
    if recipe.exclude_docs:
        for path in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*"):
            argv.append(f"--dpkgopt=path-exclude={path}")
        argv.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    argv += ["--skip=download/empty", "--skip=essential/unlink",
             f'--setup-hook=mkdir -p "$1"/var/cache/apt/archives/ {archives}',
             f"--setup-hook=sync-in {archives} /var/cache/apt/archives/",
             f"--customize-hook=sync-out /var/cache/apt/archives {archives}"]
    sources = [f"deb {host_mirror(s)} {s} main" for s in suites]
    run([*argv, suites[0], str(root), *sources], env={"LC_ALL": "C.UTF-8"},
        what="mmdebstrap", timeout=1200)


def source_versions(inventory: Inventory) -> dict[str, str]:
    """source package → the lowest source version installed of it."""
    out: dict[str, str] = {}
    for p in inventory.packages:
        if p.type != "deb":
            continue
        name, version = p.source or p.name, p.source_version or p.version
        if name not in out or apt_pkg.version_compare(version, out[name]) < 0:
            out[name] = version
    return out


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Inventory, Inventory]]:
    require_network_archive()
    require("mmdebstrap")
    apt_pkg.init_system()
    base = tmp_path_factory.mktemp("debian-acceptance")
    inventories = []
    for name, suites in (("bookworm", ["bookworm"]),
                         ("security", ["bookworm", "bookworm-security"])):
        root = base / name
        started = time.monotonic()
        compose(root, suites)
        TIMINGS[f"mmdebstrap {name}"] = time.monotonic() - started
        inventory = collect(root, target=str(root), kind="rootfs")
        assert inventory.errors == (), inventory.errors
        assert inventory.distro is not None and inventory.distro.version_id == "12"
        assert any(p.name == "nginx-light" for p in inventory.packages)
        inventories.append(inventory)
    yield inventories[0], inventories[1]
    print("timings:", {k: round(v, 1) for k, v in TIMINGS.items()})


@pytest.fixture(scope="module")
def feed(roots: tuple[Inventory, Inventory]) -> FeedResult:
    started = time.monotonic()
    result = fetch_security_advisories(
        inventory=roots[0], mirror_security=host_mirror("bookworm-security"),
        mirror=host_mirror("bookworm"), cache_dir=CACHE / "archive")
    TIMINGS["fetch_security_advisories"] = time.monotonic() - started
    return result


def test_the_unpatched_image_gets_exactly_the_cves_debian_names(
        roots: tuple[Inventory, Inventory], feed: FeedResult) -> None:
    old, new = roots
    before, after = source_versions(old), source_versions(new)
    assert feed.warnings == (), feed.warnings
    # The sources bookworm-security updates in this image: what differs between the roots.
    updated = {s for s, v in before.items()
               if s in after and apt_pkg.version_compare(v, after[s]) < 0}
    assert updated, "bookworm-security updates none of the pony's packages (unexpected)"
    # Every advisory is for an updated source, above its bookworm version, at most its
    # security version: the changelog entries between the two.
    for advisory in feed.advisories:
        [affected] = advisory.affected
        assert affected.name in updated, advisory.id
        [fixed] = affected.fixed_versions
        assert apt_pkg.version_compare(before[affected.name], fixed) < 0, advisory.id
        assert apt_pkg.version_compare(fixed, after[affected.name]) <= 0, advisory.id
        assert advisory.cves, advisory.id
    expected = {c for a in feed.advisories if a.affected[0].name in updated for c in a.cves}
    assert expected, "no CVE named between the bookworm and bookworm-security versions"

    result = scan(old, AdvisoryIndex(feed.advisories))
    assert result.complete
    found = {c for f in result.findings for c in f.cves}
    assert found == expected
    # Each finding is an installed deb of an updated source, below the advisory's fix.
    for finding in result.findings:
        assert finding.package.type == "deb"
        assert (finding.package.source or finding.package.name) in updated
        assert finding.fixed_version is not None
        installed = finding.package.source_version or finding.package.version
        assert apt_pkg.version_compare(installed, finding.fixed_version) < 0
    # nginx-light itself is among them when bookworm-security updates nginx.
    if "nginx" in updated:
        assert any(f.package.name == "nginx-light" for f in result.findings)


def test_the_patched_image_gets_none(roots: tuple[Inventory, Inventory],
                                     feed: FeedResult) -> None:
    _, new = roots
    result = scan(new, AdvisoryIndex(feed.advisories))
    assert result.complete
    assert result.findings == ()
    assert len(feed.advisories) > 0
