"""The openscap check with the real oscap on real roots: the RPM pony's packages installed
with dnf --installroot from the example's repository, layered with alicorn's own writer."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gate_layouts import context, directory, entry, make_layout, tree_layout

from alicorn.gate.openscap import CONTENT_DIR, datastream_for, profile_id
from alicorn.gate.run import run_gate
from alicorn.inventory.model import Distro
from conftest import EXAMPLES, require

pytestmark = pytest.mark.integration

EXAMPLE = EXAMPLES / "pony" / "rpm"
TAILORED = "xccdf_org.alicorn.pony_profile_standard_container"
FEDORA_DS = CONTENT_DIR / "ssg-fedora-ds.xml"


@pytest.fixture(scope="module")
def pony_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("rpmbuild", "createrepo_c", "dnf", "busybox", "oscap-chroot")
    if not FEDORA_DS.is_file():
        require("ssg-fedora-ds.xml (ssg-nondebian)")
    base = tmp_path_factory.mktemp("oscap")
    repo = base / "repo"
    subprocess.run([str(EXAMPLE / "build-repo"), str(repo), "--version", "1"], check=True,
                   capture_output=True)
    home = base / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text("%_dbpath /usr/lib/sysimage/rpm\n")
    root = base / "root"
    subprocess.run(["dnf", "-q", f"--installroot={root}", "--releasever=40",
                    "--setopt=reposdir=/dev/null", "--nogpgcheck", "--noplugins",
                    "--setopt=install_weak_deps=False", f"--repofrompath=p,{repo}",
                    "--repo=p", "-y", "install", "pony-filesystem", "busybox", "pony-content"],
                   check=True, capture_output=True, env={**os.environ, "HOME": str(home)})
    for leftover in ("var/cache/dnf", "var/lib/dnf", "var/log"):
        shutil.rmtree(root / leftover, ignore_errors=True)
    return root


@pytest.fixture(scope="module")
def pony_layout(pony_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tree_layout(tmp_path_factory.mktemp("layout") / "pony", pony_root)


def _recipe_dir(tmp_path: Path) -> Path:
    d = tmp_path / "recipe"
    d.mkdir()
    shutil.copy(EXAMPLE / "openscap-tailoring.xml", d)
    return d


def test_the_tailored_profile_evaluates_real_rules_and_passes(pony_layout: Path,
                                                              tmp_path: Path) -> None:
    gate = [{"openscap": {"profile": TAILORED, "tailoring": "openscap-tailoring.xml"}}]
    ctx = context(pony_layout, tmp_path, gate=gate, recipe_dir=_recipe_dir(tmp_path))
    result = run_gate(ctx)
    (check,) = result.checks
    assert check.passed, check.detail
    counts = check.data["results"]
    assert counts["pass"] >= 15 and "fail" not in counts and "error" not in counts
    assert check.detail.startswith(f"{counts['pass']} rules evaluated")
    assert check.data["datastream"] == str(FEDORA_DS)
    assert check.data["profile"] == TAILORED
    assert set(check.files) == {"arf", "html"}
    arf = ctx.out_dir / check.files["arf"]
    assert arf.stat().st_size > 1000 and b"TestResult" in arf.read_bytes()
    assert b"<html" in (ctx.out_dir / check.files["html"]).read_bytes()[:5000].lower()
    # The image's own modes were seen: rpm -V finds every file's mode as packaged (unpacking
    # alone would have made /etc/shadow 0600 instead of 0000).
    from alicorn.gate.openscap import parse_arf
    rules = parse_arf(arf)
    assert rules["xccdf_org.ssgproject.content_rule_rpm_verify_permissions"] == "pass"
    assert rules["xccdf_org.ssgproject.content_rule_rpm_verify_hashes"] == "pass"
    print(f"openscap on the RPM pony: {check.seconds:.1f} s ({check.data['seconds']})")


def test_the_plain_profile_fails_on_host_rules_unless_allowed(pony_layout: Path,
                                                               tmp_path: Path) -> None:
    host_rules = ["aide_build_database", "configure_crypto_policy",
                  "configure_kerberos_crypto_policy", "configure_openssl_crypto_policy",
                  "no_direct_root_logins", "service_chronyd_or_ntpd_enabled",
                  "service_firewalld_enabled", "set_firewalld_default_zone"]
    gate = {"any-of": [{"openscap": {"profile": "standard"}},
                       {"openscap": {"profile": "standard", "allow_failed": host_rules}}]}
    ctx = context(pony_layout, tmp_path, gate=gate)
    result = run_gate(ctx)
    plain, allowed = result.checks
    assert not plain.passed
    assert "service_firewalld_enabled: fail" in plain.problems
    assert {p.split(":")[0] for p in plain.problems} <= set(host_rules)
    assert allowed.passed and "allowed to fail" in allowed.detail
    assert result.passed
    # Two runs of one profile keep both reports.
    assert plain.files["arf"] != allowed.files["arf"]
    assert (ctx.out_dir / plain.files["arf"]).is_file()
    assert (ctx.out_dir / allowed.files["arf"]).is_file()


def test_a_vacuous_run_is_refused(pony_root: Path, tmp_path: Path) -> None:
    # The same root without its Fedora identity: SSG's Fedora content (picked by
    # ID_LIKE=fedora) applies to nothing in it.
    root = tmp_path / "root"
    shutil.copytree(pony_root, root, symlinks=True)
    (root / "etc/system-release-cpe").unlink()
    layout = tree_layout(tmp_path / "layout", root)
    ctx = context(layout, tmp_path, gate=[{"openscap": {"html": False}}])
    (check,) = run_gate(ctx).checks
    assert not check.passed
    assert check.detail.startswith("vacuous run refused: no rule was evaluated")
    assert "pass" not in check.data["results"] and "fail" not in check.data["results"]
    assert check.data["results"]["notapplicable"] > 0
    # The results are kept (they show why); html: false skips the slow HTML report.
    assert set(check.files) == {"arf"} and (ctx.out_dir / check.files["arf"]).is_file()
    assert not list(ctx.out_dir.glob("*.html"))


def test_a_missing_profile_fails_the_check(pony_layout: Path, tmp_path: Path) -> None:
    (check,) = run_gate(context(pony_layout, tmp_path,
                                gate=[{"openscap": {"profile": "no_such_profile"}}])).checks
    assert not check.passed
    assert check.detail.startswith("could not run: oscap xccdf eval failed")


def test_no_content_for_the_distribution(tmp_path: Path) -> None:
    os_release = b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12"\n'
    layout = make_layout(tmp_path / "layout", [[
        directory("usr"), directory("usr/lib"), entry("usr/lib/os-release", os_release),
        directory("etc"), entry("etc/os-release", None, kind=b"2",
                                linkname="../usr/lib/os-release")]])
    if (CONTENT_DIR / "ssg-debian12-ds.xml").exists():
        pytest.skip("this host has Debian 12 content")
    result = run_gate(context(layout, tmp_path, gate={"any-of": [
        "openscap", {"openscap": {"required": False}}]}))
    required, optional = result.checks
    assert not required.passed
    assert required.detail == ("no SCAP Security Guide content for the image's distribution "
                               f"(debian 12) in {CONTENT_DIR}")
    assert optional.passed and optional.detail.endswith("; not required")


def test_datastream_choice(tmp_path: Path) -> None:
    for name in ("fedora", "rhel9", "cs9", "centos7", "debian11", "ubuntu2204", "sle15"):
        (tmp_path / f"ssg-{name}-ds.xml").write_text("<x/>")

    def pick(ident: str, version: str | None, like: tuple[str, ...] = ()) -> str | None:
        found = datastream_for(Distro(id=ident, version_id=version, id_like=like), tmp_path)
        return found.name if found else None

    assert pick("fedora", "40") == "ssg-fedora-ds.xml"
    assert pick("rhel", "9.4") == "ssg-rhel9-ds.xml"
    assert pick("centos", "9") == "ssg-cs9-ds.xml"
    assert pick("centos", "7") == "ssg-centos7-ds.xml"
    assert pick("debian", "11") == "ssg-debian11-ds.xml"
    assert pick("debian", "12") is None
    assert pick("ubuntu", "22.04") == "ssg-ubuntu2204-ds.xml"
    assert pick("sles", "15.5") == "ssg-sle15-ds.xml"
    assert pick("pony", "40", ("fedora",)) == "ssg-fedora-ds.xml"
    assert pick("alpine", "3.19") is None
    assert datastream_for(None, tmp_path) is None
    assert profile_id("standard") == "xccdf_org.ssgproject.content_profile_standard"
    assert profile_id(TAILORED) == TAILORED
