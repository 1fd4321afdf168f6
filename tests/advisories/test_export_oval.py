"""OVAL from advisories: oscap validates it, and oscap-chroot flags exactly the outdated packages
of a root installed with dnf from real RPMs."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alicorn.advisories.export_oval import (
    LINUX_DEF,
    OVAL_DEF,
    evaluate,
    export,
    render,
    rpmdb_path,
    validate,
)
from alicorn.advisories.model import Advisory, PackageRef, Reference
from alicorn.advisories.updateinfo import parse_updateinfo, read_repodata
from alicorn.errors import BadInput, ToolError
from conftest import EXAMPLES, SHARED_DATA, require

BUILD_REPO = EXAMPLES / "pony" / "rpm" / "build-repo"
PONY_ADVISORY = "FEDORA-2024-b7e1c3d2a9"
T0 = datetime(2024, 4, 1, tzinfo=UTC)
NS = {"d": OVAL_DEF, "l": LINUX_DEF}


def _adv(ident: str, *packages: PackageRef, **kw: object) -> Advisory:
    fields: dict[str, object] = dict(
        id=ident, type="security", severity="Moderate", title=f"{ident} title",
        description="", issued=T0, updated=T0, release="Fedora 40", status="stable",
        packages=packages, references=(Reference("cve", f"CVE-2024-{len(ident)}"),))
    fields.update(kw)
    return Advisory(**fields)  # type: ignore[arg-type]


def _pkg(name: str, evr: str, arch: str, **kw: object) -> PackageRef:
    epoch, _, vr = evr.rpartition(":")
    version, release = vr.rsplit("-", 1)
    return PackageRef(name, epoch or "0", version, release, arch, **kw)  # type: ignore[arg-type]


# What the old root holds: busybox-1.35.0-1.fc40.x86_64, pony-content-1.0-1.fc40.noarch,
# pony-filesystem-3.18-1.fc40.noarch.  Each synthetic advisory and whether it applies.
SYNTHETIC = {
    "TEST-content-newer": (_adv("TEST-content-newer", _pkg("pony-content", "1.0-2.fc40",
                                                            "noarch")), True),
    # The same fix built for another arch does not update a noarch package (dnf's rule).
    "TEST-content-other-arch": (_adv("TEST-content-other-arch",
                                     _pkg("pony-content", "1.0-2.fc40", "x86_64")), False),
    "TEST-not-installed": (_adv("TEST-not-installed", _pkg("nginx", "1.24.0-1.fc40",
                                                            "x86_64")), False),
    "TEST-same-version": (_adv("TEST-same-version", _pkg("pony-filesystem", "3.18-1.fc40",
                                                          "noarch")), False),
    # An epoch outranks any version: 1:3.0 is newer than (0:)3.18.
    "TEST-epoch": (_adv("TEST-epoch", _pkg("pony-filesystem", "1:3.0-1.fc40", "noarch")), True),
    # A tilde sorts before the release it leads to: 1.35.0~rc1 is older than 1.35.0.
    "TEST-tilde": (_adv("TEST-tilde", _pkg("busybox", "1.35.0~rc1-9.fc40", "x86_64")), False),
    # OR over packages: one outdated package of several is enough.
    "TEST-or": (_adv("TEST-or", _pkg("nginx", "9-1", "x86_64"),
                     _pkg("pony-content", "1.0-1.fc40.1", "noarch")), True),
}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require("rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    base = tmp_path_factory.mktemp("repos")
    for name, args in (("v1", ["--version", "1"]), ("both", [])):
        subprocess.run([str(BUILD_REPO), str(base / name), *args], check=True,
                       capture_output=True)
    return base / "v1", base / "both"


def _dnf(root: Path, repo: Path, home: Path, *args: str) -> None:
    subprocess.run(["dnf", "-q", f"--installroot={root}", "--releasever=40",
                    "--setopt=reposdir=/dev/null", "--nogpgcheck", "--noplugins",
                    f"--repofrompath=p,{repo}", "--repo=p", "-y", *args],
                   check=True, capture_output=True, env={**os.environ, "HOME": str(home)})


@pytest.fixture(scope="module")
def old_root(repos: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("dnf")
    v1, _ = repos
    base = tmp_path_factory.mktemp("root")
    home = base / "home"
    home.mkdir()
    # Debian's rpm keeps its database in ~/.rpmdb: put it where Fedora does.
    (home / ".rpmmacros").write_text("%_dbpath /usr/lib/sysimage/rpm\n")
    root = base / "root"
    _dnf(root, v1, home, "install", "busybox", "pony-filesystem", "pony-content")
    return root


def _feed(repos: tuple[Path, Path]) -> list[Advisory]:
    return [*read_repodata(repos[1]), *(a for a, _ in SYNTHETIC.values())]


def _by_advisory(xml: bytes) -> dict[str, str]:
    """advisory id (from the SELF reference) -> OVAL definition id."""
    root = ET.fromstring(xml)
    out = {}
    for d in root.iterfind("d:definitions/d:definition", NS):
        ref = d.find("d:metadata/d:reference[@source='SELF']", NS)
        assert ref is not None
        out[ref.get("ref_id", "")] = d.get("id", "")
    return out


def test_the_document_is_valid_oval(repos: tuple[Path, Path], tmp_path: Path) -> None:
    require("oscap")
    feed = _feed(repos)
    if (SHARED_DATA / "updateinfo").is_dir():
        for path in sorted((SHARED_DATA / "updateinfo").glob("*.xml")):
            feed += parse_updateinfo(path.read_bytes(), source=str(path))
    result = export(feed)
    path = tmp_path / "feed.oval.xml"
    path.write_bytes(result.data)
    validate(path)  # raises with oscap's complaint otherwise

    root = ET.fromstring(result.data)
    assert root.findtext("d:generator/{http://oval.mitre.org/XMLSchema/oval-common-5}"
                         "schema_version", namespaces=NS) == "5.11"
    definitions = root.findall("d:definitions/d:definition", NS)
    assert len(definitions) == result.definitions
    assert all(d.get("class") == "patch" for d in definitions)
    assert len({d.get("id") for d in definitions}) == len(definitions)
    # The module-only advisories of the shared files are left out, and said so.
    assert all("module" in s for s in result.skipped)

    # And oscap's validation is not vacuous: a broken reference is refused.
    broken = tmp_path / "broken.xml"
    broken.write_bytes(result.data.replace(b'state_ref="oval:org.alicorn:ste:',
                                           b'state_ref="oval:org.alicorn:ste:9', 1))
    with pytest.raises(ToolError, match="not valid OVAL"):
        validate(broken)


def test_metadata_mirrors_red_hat(repos: tuple[Path, Path]) -> None:
    xml = render(read_repodata(repos[1]), timestamp=T0)
    root = ET.fromstring(xml)
    (d,) = root.findall("d:definitions/d:definition", NS)
    meta = d.find("d:metadata", NS)
    assert meta is not None
    assert meta.findtext("d:title", namespaces=NS) == \
        f"{PONY_ADVISORY}: busybox-1.35.0-2.fc40 (Important)"
    assert meta.find("d:affected", NS).get("family") == "unix"  # type: ignore[union-attr]
    assert meta.findtext("d:affected/d:platform", namespaces=NS) == "Fedora 40"
    refs = {(r.get("source"), r.get("ref_id")) for r in meta.iterfind("d:reference", NS)}
    assert refs == {("SELF", PONY_ADVISORY), ("CVE", "CVE-2022-48174"),
                    ("BZ", "CVE-2022-48174")}
    assert meta.findtext("d:advisory/d:severity", namespaces=NS) == "Important"
    assert meta.find("d:advisory/d:updated", NS).get("date") == "2024-04-01"  # type: ignore[union-attr]
    assert meta.findtext("d:advisory/d:cve", namespaces=NS) == "CVE-2022-48174"
    state = root.find("d:states/l:rpminfo_state/l:evr", NS)
    assert root.find("d:states/l:rpminfo_state[l:evr]/l:arch", NS).text == "x86_64"  # type: ignore[union-attr]
    assert state is not None and state.text == "0:1.35.0-2.fc40"
    assert (state.get("datatype"), state.get("operation")) == ("evr_string", "less than")
    assert root.findtext("d:generator/{http://oval.mitre.org/XMLSchema/oval-common-5}"
                         "timestamp", namespaces=NS) == "2024-04-01T00:00:00"


def test_ids_are_stable_and_output_deterministic(repos: tuple[Path, Path]) -> None:
    feed = _feed(repos)
    first = render(feed, timestamp=T0)
    assert render(list(reversed(feed)), timestamp=T0) == first
    # An advisory keeps its definition id whatever else the feed holds.
    alone = _by_advisory(render(read_repodata(repos[1]), timestamp=T0))
    assert alone[PONY_ADVISORY] == _by_advisory(first)[PONY_ADVISORY]
    assert alone[PONY_ADVISORY].startswith("oval:org.alicorn:def:")


def test_what_is_left_out_is_said() -> None:
    module_only = _adv("TEST-module", _pkg("nodejs", "20-1", "x86_64", modules=("nodejs:20",)))
    withdrawn = _adv("TEST-withdrawn", _pkg("a", "1-1", "noarch"), withdrawn=T0)
    osv = _adv("GHSA-1", format="osv")
    result = export([module_only, withdrawn, osv, SYNTHETIC["TEST-epoch"][0]])
    assert result.definitions == 1
    assert [s.split(":")[0] for s in result.skipped] == ["GHSA-1", "TEST-module",
                                                          "TEST-withdrawn"]


def test_hostile_text_still_gives_well_formed_xml(tmp_path: Path) -> None:
    require("oscap")
    evil = _adv("TEST-evil\x00<&>", _pkg("p\x07", "1-1", "noarch"),
                title="]]><script>\x1b", description="\ud800 bad surrogate",
                references=(Reference("self", "x", "javascript:alert(1) space"),
                            Reference("bugzilla", "1", "https://bz/1\n"),))
    xml = render([evil])
    path = tmp_path / "evil.xml"
    path.write_bytes(xml)
    validate(path)
    root = ET.fromstring(xml)
    refs = list(root.iter(f"{{{OVAL_DEF}}}reference"))
    assert all(r.get("ref_url") is None for r in refs)  # neither URL is usable


def test_rpmdb_path_is_found_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(BadInput, match="no rpm database"):
        rpmdb_path(root)
    (root / "usr/lib/sysimage/rpm").mkdir(parents=True)
    (root / "var/lib").mkdir(parents=True)
    # Fedora's layout: var/lib/rpm -> ../../usr/lib/sysimage/rpm; an absolute link is taken
    # inside the root, not on the host.
    (root / "var/lib/rpm").symlink_to("/usr/lib/sysimage/rpm")
    with pytest.raises(BadInput):
        rpmdb_path(root)
    (root / "usr/lib/sysimage/rpm/rpmdb.sqlite").write_bytes(b"")
    assert rpmdb_path(root) == "/usr/lib/sysimage/rpm"
    (root / "usr/lib/sysimage/rpm/rpmdb.sqlite").unlink()
    (root / "var/lib/rpm").unlink()
    (root / "var/lib/rpm").mkdir()
    (root / "var/lib/rpm/Packages").write_bytes(b"")
    assert rpmdb_path(root) == "/var/lib/rpm"


def test_oscap_chroot_flags_exactly_the_outdated_packages(
        repos: tuple[Path, Path], old_root: Path, tmp_path: Path) -> None:
    require("oscap", "oscap-chroot", "dnf")
    feed = _feed(repos)
    oval = tmp_path / "feed.oval.xml"
    oval.write_bytes(render(feed))
    ids = _by_advisory(oval.read_bytes())
    expected = {PONY_ADVISORY} | {k for k, (_, applies) in SYNTHETIC.items() if applies}

    results = evaluate(oval, root=old_root, workdir=tmp_path / "before")
    assert set(results) == set(ids.values())
    flagged = {a for a, d in ids.items() if results[d] == "true"}
    assert flagged == expected
    assert all(results[d] == "false" for a, d in ids.items() if a not in expected)

    # alicorn's own matcher (what `alicorn scan` uses) gives the same answer on the root.
    from alicorn.inventory.collect import collect
    from alicorn.match.index import AdvisoryIndex
    from alicorn.match.matcher import match

    inventory = collect(old_root, target=str(old_root), kind="rootfs")
    assert not inventory.errors
    assert {f.advisory.id for f in match(inventory, AdvisoryIndex(feed))} == flagged

    # dnf, from the same repository, names the same advisory for the root.
    listed = subprocess.run(
        ["dnf", "-q", f"--installroot={old_root}", "--releasever=40",
         "--setopt=reposdir=/dev/null", "--nogpgcheck", "--noplugins",
         f"--repofrompath=p,{repos[1]}", "--repo=p", "updateinfo", "list", "--security"],
        check=True, capture_output=True, text=True,
        env={**os.environ, "HOME": str(tmp_path / "before" / "oscap-home")}).stdout
    assert PONY_ADVISORY in listed


def test_after_the_update_nothing_of_the_repository_is_flagged(
        repos: tuple[Path, Path], old_root: Path, tmp_path: Path) -> None:
    require("oscap", "oscap-chroot", "dnf")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text("%_dbpath /usr/lib/sysimage/rpm\n")
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(old_root), str(root)], check=True)
    _dnf(root, repos[1], home, "upgrade")
    installed = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/lib/sysimage/rpm",
                                "-q", "busybox"], check=True, capture_output=True,
                               text=True).stdout
    assert "1.35.0-2.fc40" in installed

    repo_oval = tmp_path / "repo.oval.xml"
    repo_oval.write_bytes(render(read_repodata(repos[1])))
    results = evaluate(repo_oval, root=root, workdir=tmp_path / "repo")
    assert list(results.values()) == ["false"]

    # The synthetic advisories are for packages the repository does not update: unchanged.
    oval = tmp_path / "feed.oval.xml"
    oval.write_bytes(render(_feed(repos)))
    ids = _by_advisory(oval.read_bytes())
    results = evaluate(oval, root=root, workdir=tmp_path / "after")
    flagged = {a for a, d in ids.items() if results[d] == "true"}
    assert flagged == {k for k, (_, applies) in SYNTHETIC.items() if applies}


def test_without_the_macro_oscap_sees_no_packages(old_root: Path, repos: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    """Why evaluate() sets %_dbpath: Debian's default finds no database in the chroot, and
    every definition comes out false — a silent "no findings"."""
    require("oscap", "oscap-chroot")
    default = subprocess.run(["rpm", "--eval", "%_dbpath"], capture_output=True, text=True,
                             check=True).stdout.strip()
    if not default.endswith("/.rpmdb"):
        pytest.skip(f"this rpm's default %_dbpath is {default}, not Debian's ~/.rpmdb")
    oval = tmp_path / "repo.oval.xml"
    oval.write_bytes(render(read_repodata(repos[1])))
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    subprocess.run(["oscap-chroot", str(old_root), "oval", "eval", "--results",
                    str(tmp_path / "res.xml"), str(oval)], check=True, capture_output=True,
                   env={**os.environ, "HOME": str(empty_home)})
    from alicorn.advisories.export_oval import parse_results
    assert list(parse_results((tmp_path / "res.xml").read_bytes(), source="r").values()) == \
        ["false"]
    assert list(evaluate(oval, root=old_root, workdir=tmp_path / "w").values()) == ["true"]


def test_alicorns_oval_reader_reads_the_export_back(repos: tuple[Path, Path]) -> None:
    from alicorn.advisories.oval import parse_oval

    feed = _feed(repos)
    result = parse_oval(render(feed), source="export.xml")
    back = {a.id: a for a in result.advisories}
    assert set(back) == {a.id for a in feed}
    for original in feed:
        again = back[original.id]
        assert {(p.name, p.arch, p.epoch, p.version, p.release) for p in again.packages} == \
            {(p.name, p.arch, p.epoch, p.version, p.release) for p in original.packages}
        assert again.cves == original.cves and again.severity == original.severity


def test_one_definition_per_advisory_id_the_newest_record_wins() -> None:
    import dataclasses

    base, _ = SYNTHETIC["TEST-epoch"]
    from_oval = dataclasses.replace(base, format="oval")
    newer_oval = dataclasses.replace(base, format="oval", updated=datetime(2025, 1, 1,
                                                                           tzinfo=UTC))
    same_date = export([from_oval, base])
    assert same_date.definitions == 1
    assert same_date.skipped == ("TEST-epoch: the oval record; the updateinfo one is exported",)
    assert export([base, newer_oval]).skipped == \
        ("TEST-epoch: the updateinfo record; the oval one is exported",)


def test_an_old_build_beside_the_fixed_one_is_not_flagged(
        repos: tuple[Path, Path], old_root: Path, tmp_path: Path) -> None:
    """dnf looks at the newest installed build of each name.arch only (an old kernel beside a
    new one is no finding); the "earlier than" test has check="all" for that."""
    require("oscap", "oscap-chroot", "rpm")
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(old_root), str(root)], check=True)
    fixed = next(repos[1].rglob("busybox-1.35.0-2.fc40.x86_64.rpm"))
    # Both builds side by side, as installonly packages (kernels) are.
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/lib/sysimage/rpm", "-i",
                    "--nodeps", "--replacefiles", "--noscripts", str(fixed)], check=True,
                   capture_output=True)
    both = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/lib/sysimage/rpm",
                           "-q", "busybox"], check=True, capture_output=True,
                          text=True).stdout.split()
    assert both == ["busybox-1.35.0-1.fc40.x86_64", "busybox-1.35.0-2.fc40.x86_64"]
    oval = tmp_path / "repo.oval.xml"
    oval.write_bytes(render(read_repodata(repos[1])))
    assert list(evaluate(oval, root=root, workdir=tmp_path / "w").values()) == ["false"]

    from alicorn.inventory.collect import collect
    from alicorn.match.index import AdvisoryIndex
    from alicorn.match.matcher import match

    inventory = collect(root, target=str(root), kind="rootfs")
    assert match(inventory, AdvisoryIndex(read_repodata(repos[1]))) == ()
