"""``dnf list-security`` run by the real system dnf, against dnf's own ``updateinfo``.

One installroot holds old builds: the pony's busybox 1.35.0-1 and a handful of tiny packages.
Two repositories carry the advisories: the pony's (Bodhi's busybox advisory) and one written
here with several severities, CVEs, bugs and arches, a package already at the fixed version,
one newer than the fix, a lower-epoch "fix", a bugfix advisory and a modular one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from lsec_repos import Pkg, Ref, Update, build_rpms, make_repo, rpm_home, run

from alicorn.dnf_plugin import install as plugin_install
from alicorn.dnf_plugin.list_security import (
    Filters,
    Hit,
    InstalledRpm,
    enabled_modules,
    feed_hits,
    list_lines,
    module_lines,
    module_reports,
    notice_url,
    store_advisories,
    summary_lines,
)
from conftest import ALICORN, EXAMPLES, SHARED_DATA, require

BUILD_REPO = EXAMPLES / "pony" / "rpm" / "build-repo"
DNF = "/usr/bin/dnf"
BODHI = "https://bodhi.fedoraproject.org/updates/"

OLD = [
    Pkg("alpha", "1.0", "1"),
    Pkg("beta", "2.0", "1", "noarch"),
    Pkg("gamma", "3.0", "2"),
    Pkg("delta", "4.0", "5", "noarch"),
    Pkg("epsilon", "1.0", "1", epoch=1),
    Pkg("zeta", "0.9", "1"),
]
NEW = [
    Pkg("alpha", "1.0", "2"),
    Pkg("beta", "2.0", "3", "noarch"),
    Pkg("epsilon", "1.0", "2", epoch=1),
]


def _cve(n: int) -> Ref:
    return Ref("cve", f"CVE-2024-{n}", f"https://www.cve.org/CVERecord?id=CVE-2024-{n}")


def _bz(n: int) -> Ref:
    return Ref("bugzilla", str(n), f"https://bugzilla.redhat.com/show_bug.cgi?id={n}")


def _self(aid: str) -> Ref:
    return Ref("self", aid, BODHI + aid)


UPDATES = [
    # Listed: alpha 1.0-1 -> 1.0-2 (x86_64; the i686 build must not match the x86_64 install).
    Update("TEST-2024-0001", "security", "Critical",
           (Pkg("alpha", "1.0", "2"), Pkg("alpha", "1.0", "2", "i686")),
           (_cve(1001), _bz(2001), _self("TEST-2024-0001")), "2024-03-01 00:00:00"),
    # Listed: a second advisory for the same build, and a shared CVE.
    Update("TEST-2024-0009", "security", "Moderate", (Pkg("alpha", "1.0", "2"),),
           (_cve(1001), _cve(1009), _self("TEST-2024-0009")), "2024-03-05 00:00:00"),
    # Listed: noarch beta, two CVEs.
    Update("TEST-2024-0002", "security", "Moderate", (Pkg("beta", "2.0", "3", "noarch"),),
           (_cve(1002), _cve(1003), _bz(2002), _self("TEST-2024-0002"))),
    # Listed, without a severity (Bodhi writes "None").
    Update("TEST-2024-0007", "security", None, (Pkg("beta", "2.0", "2", "noarch"),),
           (_cve(1007), _self("TEST-2024-0007"))),
    # Not listed: gamma is installed at the fixed build.
    Update("TEST-2024-0003", "security", "Low", (Pkg("gamma", "3.0", "2"),),
           (_cve(1004), _self("TEST-2024-0003"))),
    # Not listed: delta is installed newer than the fix.
    Update("TEST-2024-0004", "security", "Important", (Pkg("delta", "4.0", "3", "noarch"),),
           (_cve(1005), _bz(2004), _self("TEST-2024-0004"))),
    # Listed: an epoch; no "self" reference, so the notice is the first address given.
    Update("TEST-2024-0005", "security", "Important", (Pkg("epsilon", "1.0", "2", epoch=1),),
           (_cve(1006), _bz(2005))),
    # Not listed: a higher version at a lower epoch is older.
    Update("TEST-2024-0006", "security", "Important", (Pkg("epsilon", "9.0", "1"),),
           (_cve(1010), _self("TEST-2024-0006"))),
    # Not listed: a bugfix, not a security advisory.
    Update("TEST-2024-0008", "bugfix", None, (Pkg("zeta", "0.9", "2"),),
           (_bz(2008), _self("TEST-2024-0008"))),
    # Not listed: a module stream's build, and no module is enabled in the root.
    Update("TEST-2024-0010", "security", "Critical", (Pkg("zeta", "0.9", "3"),),
           (_cve(1011), _self("TEST-2024-0010")), modules=(("zetamod", "1"),)),
]

# What dnf updateinfo list --security shows for this root and both repositories.
EXPECTED = [
    ("TEST-2024-0001", "Critical/Sec.", "alpha-1.0-2.x86_64"),
    ("TEST-2024-0009", "Moderate/Sec.", "alpha-1.0-2.x86_64"),
    ("TEST-2024-0007", "Unknown/Sec.", "beta-2.0-2.noarch"),
    ("TEST-2024-0002", "Moderate/Sec.", "beta-2.0-3.noarch"),
    ("FEDORA-2024-b7e1c3d2a9", "Important/Sec.", "busybox-1.35.0-2.fc40.x86_64"),
    ("TEST-2024-0005", "Important/Sec.", "epsilon-1:1.0-2.x86_64"),
]


@dataclass(frozen=True)
class World:
    base: Path
    root: Path
    home: Path           # HOME with the .rpmmacros that Debian's rpm needs
    norepos: Path        # an empty reposdir: no repo files at all
    alicorn_home: Path   # an empty ALICORN_HOME
    pony: Path
    sec: Path
    sec_xml: Path
    plugin_dir: Path
    conf_dir: Path

    def repo_args(self, repos: str) -> list[str]:
        """``on``: both repositories; ``disabled``: defined, and disabled; ``off``: none."""
        if repos == "off":
            return []
        defined = [f"--repofrompath=pony,{self.pony}", f"--repofrompath=sec,{self.sec}"]
        if repos == "disabled":
            return [*defined, "--disablerepo=*"]
        return [*defined, "--repo=pony", "--repo=sec"]

    def dnf(self, *args: str, plugins: bool = True, repos: str = "on",
            root: Path | None = None, env: dict[str, str] | None = None,
            check: bool = True, quiet: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [DNF, *(["-q"] if quiet else []), f"--installroot={root or self.root}",
                "--releasever=40",
                f"--setopt=reposdir={self.norepos}", "--nogpgcheck"]
        if plugins:
            argv += [f"--setopt=pluginpath={self.plugin_dir}",
                     f"--setopt=pluginconfpath={self.conf_dir}"]
        else:
            argv.append("--noplugins")
        argv += self.repo_args(repos)
        full_env = {**os.environ, "HOME": str(self.home), "LC_ALL": "C.UTF-8",
                    "ALICORN_HOME": str(self.alicorn_home)}
        full_env.pop("ALICORN_DATABASE_URL", None)
        full_env.update(env or {})
        proc = subprocess.run([*argv, *args], capture_output=True, text=True, env=full_env,
                              timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv + list(args))} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    require("dnf", "rpmbuild", "createrepo_c", "modifyrepo_c", "busybox")
    if not Path(DNF).is_file():
        pytest.skip(f"the system dnf is not at {DNF}")
    base = tmp_path_factory.mktemp("lsec")
    run([BUILD_REPO, base / "pony-v1", "--version", "1"])
    run([BUILD_REPO, base / "pony-both"])
    build_rpms(OLD, base / "old", base / "build-old")
    make_repo(base / "old")
    build_rpms(NEW, base / "sec", base / "build-new")
    xml = make_repo(base / "sec", UPDATES)
    assert xml is not None
    home = rpm_home(base)
    norepos = base / "norepos"
    norepos.mkdir()
    alicorn_home = base / "alicorn-home"
    alicorn_home.mkdir()
    root = base / "root"
    run([DNF, "-q", "-y", f"--installroot={root}", "--releasever=40",
         f"--setopt=reposdir={norepos}", "--nogpgcheck", "--noplugins",
         f"--repofrompath=pony,{base / 'pony-v1'}", f"--repofrompath=old,{base / 'old'}",
         "--repo=pony", "--repo=old", "install", "busybox", "pony-filesystem",
         *(p.name for p in OLD)], env={**os.environ, "HOME": str(home)})
    prefix = base / "plugin"
    written = plugin_install.install(prefix=prefix)
    shim = next(p for p in written if p.name == plugin_install.SHIM_NAME)
    conf = next(p for p in written if p.name == plugin_install.CONF_NAME)
    return World(base=base, root=root, home=home, norepos=norepos, alicorn_home=alicorn_home,
                 pony=base / "pony-both", sec=base / "sec", sec_xml=xml,
                 plugin_dir=shim.parent, conf_dir=conf.parent)


def _columns(stdout: str, n: int = 3) -> list[tuple[str, ...]]:
    return [tuple(line.split()[:n]) for line in stdout.splitlines() if line.strip()]


def _security(rows: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [r for r in rows if r[1].endswith("/Sec.")]


def _json(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    data = json.loads(proc.stdout)
    assert isinstance(data, list)
    return data


# -- against dnf's own updateinfo -------------------------------------------------------------


def test_lists_what_dnf_updateinfo_list_security_lists(world: World) -> None:
    theirs = _columns(world.dnf("updateinfo", "list", "--security", plugins=False).stdout)
    ours = world.dnf("list-security").stdout
    assert _columns(ours) == theirs == EXPECTED
    urls = {line.split()[0]: line.split()[3] for line in ours.splitlines()}
    assert urls["TEST-2024-0001"] == BODHI + "TEST-2024-0001"
    assert urls["FEDORA-2024-b7e1c3d2a9"] == BODHI + "FEDORA-2024-b7e1c3d2a9"
    # No "self" reference: the first address the advisory gives.
    assert urls["TEST-2024-0005"] == "https://www.cve.org/CVERecord?id=CVE-2024-1006"


def test_json_has_the_cves_and_bugs_of_dnf_updateinfo_list_cves_and_bzs(world: World) -> None:
    entries = _json(world.dnf("list-security", "--json"))
    assert {(e["advisory"], e["update"]) for e in entries} == {(a, n) for a, _, n in EXPECTED}
    ids = {a for a, _, _ in EXPECTED}

    cves = _security(_columns(world.dnf("updateinfo", "list", "cves", plugins=False).stdout))
    # dnf's "list cves" also prints the ids of references that are neither CVEs nor bugs
    # (Bodhi's "self"): only the CVE lines are CVEs.
    theirs_cves = {(c, n) for c, _, n in cves if c.startswith("CVE-")}
    ours_cves = {(c, e["update"]) for e in entries for c in e["cves"]}  # type: ignore[attr-defined]
    assert ours_cves == theirs_cves
    assert ("CVE-2024-1003", "beta-2.0-3.noarch") in ours_cves
    assert not any(c == "CVE-2024-1004" for c, _ in ours_cves)  # gamma is at the fix

    bzs = _security(_columns(world.dnf("updateinfo", "list", "bzs", plugins=False).stdout))
    theirs_bzs = {(b, n) for b, _, n in bzs if b not in ids}
    ours_bzs = {(b, e["update"]) for e in entries for b in e["bugzilla"]}  # type: ignore[attr-defined]
    assert ours_bzs == theirs_bzs
    assert ("2001", "alpha-1.0-2.x86_64") in ours_bzs

    by_id = {e["advisory"]: e for e in entries}
    assert by_id["TEST-2024-0001"]["package"] == "alpha-1.0-1.x86_64"
    assert by_id["TEST-2024-0005"]["package"] == "epsilon-1:1.0-1.x86_64"
    assert by_id["TEST-2024-0007"]["severity"] is None
    assert by_id["FEDORA-2024-b7e1c3d2a9"]["package"] == "busybox-1.35.0-1.fc40.x86_64"
    assert by_id["FEDORA-2024-b7e1c3d2a9"]["cves"] == ["CVE-2022-48174"]
    assert by_id["TEST-2024-0002"]["url"] == BODHI + "TEST-2024-0002"
    for e in entries:
        assert set(e) >= {"advisory", "severity", "package", "cves", "bugzilla", "url"}


def test_stdout_holds_only_the_listing_without_quiet(world: World) -> None:
    proc = world.dnf("list-security", "--json", quiet=False)
    assert {e["advisory"] for e in _json(proc)} == {a for a, _, _ in EXPECTED}
    assert "Added pony repo" in proc.stderr
    proc = world.dnf("list-security", "--cve", "CVE-1999-0001", quiet=False)
    assert proc.stdout == ""
    assert "No security update matches the filters given: 9 installed packages" in proc.stderr


@pytest.mark.parametrize(("filters", "expected"), [
    (["--cve", "CVE-2024-1001"], {"TEST-2024-0001", "TEST-2024-0009"}),
    (["--cve", "CVE-2022-48174"], {"FEDORA-2024-b7e1c3d2a9"}),
    (["--bz", "2002"], {"TEST-2024-0002"}),
    (["--advisory", "TEST-2024-0005"], {"TEST-2024-0005"}),
    (["--advisory", "TEST-2024-000[17]"], {"TEST-2024-0001", "TEST-2024-0007"}),
    (["--sec-severity", "Moderate"], {"TEST-2024-0002", "TEST-2024-0009"}),
    (["--sec-severity", "Critical", "--sec-severity", "Important"],
     {"TEST-2024-0001", "TEST-2024-0005", "FEDORA-2024-b7e1c3d2a9"}),
    # gamma's Low advisory is already installed: nothing.
    (["--sec-severity", "Low"], set()),
    # dnf's filters are a union.
    (["--cve", "CVE-2024-1006", "--bz", "2001"], {"TEST-2024-0005", "TEST-2024-0001"}),
    # A bugfix advisory's bug: not a security update.
    (["--bz", "2008"], set()),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_filters_agree_with_dnf_updateinfo(world: World, filters: list[str],
                                          expected: set[str]) -> None:
    theirs = _security(_columns(world.dnf("updateinfo", "list", *filters,
                                          plugins=False).stdout))
    ours = _columns(world.dnf("list-security", *filters).stdout)
    assert ours == theirs
    assert {r[0] for r in ours} == expected


def test_package_spec_filters_like_dnf(world: World) -> None:
    theirs = _security(_columns(world.dnf("updateinfo", "list", "beta", plugins=False).stdout))
    ours = _columns(world.dnf("list-security", "beta").stdout)
    assert ours == theirs
    assert {r[0] for r in ours} == {"TEST-2024-0002", "TEST-2024-0007"}


UNKNOWN_LINE = "        1 Unknown Security notice(s)\n"


def test_summary_is_dnf_updateinfo_summary(world: World) -> None:
    theirs = world.dnf("updateinfo", "--summary", "--security", plugins=False).stdout
    ours = world.dnf("list-security", "--summary").stdout
    # One deliberate difference: dnf counts an advisory whose severity is Bodhi's "None" in
    # the total but under no severity; list-security counts it as Unknown, as dnf does for
    # an advisory without <severity> (and as both list it: "Unknown/Sec.").
    assert ours.replace(UNKNOWN_LINE, "") == theirs
    assert "    6 Security notice(s)\n" in ours
    assert "        2 Moderate Security notice(s)\n" in ours
    assert "        1 Unknown Security notice(s)\n" in ours
    counts = json.loads(world.dnf("list-security", "--summary", "--json").stdout)
    assert counts == {"security": 6, "by_severity": {"Critical": 1, "Important": 2,
                                                     "Moderate": 2, "Low": 0, "Unknown": 1}}


# -- without repositories -----------------------------------------------------------------------


def test_feed_files_give_the_answer_of_the_repositories(world: World) -> None:
    from_repos = _json(world.dnf("list-security", "--json"))
    # An installroot with no repo files at all, the repositories' directories as feeds.
    from_dirs = _json(world.dnf("list-security", "--json", f"--feed={world.sec}",
                                f"--feed={world.pony / 'repodata'}", repos="off"))
    assert from_dirs == from_repos
    # Repositories configured but disabled; the feed a plain updateinfo.xml.
    from_file = _json(world.dnf("list-security", "--json", "--feed", str(world.sec_xml),
                                "--feed", str(world.pony), repos="disabled"))
    assert from_file == from_repos
    # The same advisories from the repositories and from a feed are listed once.
    both = _json(world.dnf("list-security", "--json", f"--feed={world.sec}"))
    assert both == from_repos
    text = world.dnf("list-security", f"--feed={world.sec}", f"--feed={world.pony}",
                     repos="off").stdout
    assert _columns(text) == EXPECTED


def test_filters_and_summary_work_on_feeds(world: World) -> None:
    feeds = [f"--feed={world.sec}", f"--feed={world.pony}"]
    for filters in (["--cve", "CVE-2024-1001"], ["--sec-severity", "Moderate"], ["beta"]):
        with_repos = world.dnf("list-security", *filters).stdout
        assert world.dnf("list-security", *filters, *feeds, repos="off").stdout == with_repos
    assert world.dnf("list-security", "--summary", *feeds, repos="off").stdout == \
        world.dnf("list-security", "--summary").stdout


def _import_into_store(home: Path, repos: Sequence[Path]) -> None:
    """``alicorn advisories import``, as a person fills the store."""
    proc = subprocess.run([*ALICORN, "advisories", "import", *map(str, repos)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ALICORN_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert (home / "alicorn.db").is_file()


def test_the_imported_feed_answers_without_repositories(world: World, tmp_path: Path) -> None:
    home = tmp_path / "alicorn-home"
    home.mkdir()
    _import_into_store(home, [world.sec, world.pony])
    from_repos = _json(world.dnf("list-security", "--json"))
    env = {"ALICORN_HOME": str(home)}
    assert _json(world.dnf("list-security", "--json", repos="off", env=env)) == from_repos
    assert _json(world.dnf("list-security", "--json", env=env,
                                     repos="disabled")) == from_repos
    assert _columns(world.dnf("list-security", "--cve", "CVE-2024-1002", repos="off",
                              env=env).stdout) == \
        [("TEST-2024-0002", "Moderate/Sec.", "beta-2.0-3.noarch")]


def test_the_configured_home_is_used_when_the_environment_names_none(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "configured-home"
    home.mkdir()
    _import_into_store(home, [world.sec])
    # A second installation whose configuration names the home.
    monkeypatch.setenv("ALICORN_HOME", str(home))
    written = plugin_install.install(prefix=tmp_path / "p")
    conf = next(p for p in written if p.name == plugin_install.CONF_NAME)
    assert f"home = {home}\n" in conf.read_text()
    shim = next(p for p in written if p.name == plugin_install.SHIM_NAME)
    env = {k: v for k, v in os.environ.items()
           if k not in ("ALICORN_HOME", "ALICORN_DATABASE_URL")}
    argv = [DNF, "-q", f"--installroot={world.root}", "--releasever=40",
            f"--setopt=reposdir={world.norepos}", f"--setopt=pluginpath={shim.parent}",
            f"--setopt=pluginconfpath={conf.parent}", "list-security"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env={**env, "HOME": str(world.home)})
    assert proc.returncode == 0, proc.stderr
    assert {r[0] for r in _columns(proc.stdout)} == \
        {"TEST-2024-0001", "TEST-2024-0009", "TEST-2024-0002", "TEST-2024-0007",
         "TEST-2024-0005"}


def test_no_advisory_source_is_an_error_not_a_clean_answer(world: World) -> None:
    proc = world.dnf("list-security", repos="off", check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "no advisories to check against" in proc.stderr
    assert str(world.alicorn_home) in proc.stderr


def test_a_hostile_or_missing_feed_is_a_clear_error(world: World, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?>\n<!DOCTYPE u [<!ENTITY a "aaaaaaaaaa">'
                    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n<updates>&b;</updates>\n')
    proc = world.dnf("list-security", f"--feed={bomb}", repos="off", check=False)
    assert proc.returncode == 1
    assert "unsafe XML refused" in proc.stderr and str(bomb) in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = tmp_path / "nope.xml"
    proc = world.dnf("list-security", f"--feed={missing}", repos="off", check=False)
    assert proc.returncode == 1
    assert "cannot read it: No such file" in proc.stderr and str(missing) in proc.stderr
    not_a_repo = tmp_path / "empty-dir"
    not_a_repo.mkdir()
    proc = world.dnf("list-security", f"--feed={not_a_repo}", repos="off", check=False)
    assert proc.returncode == 1 and "holds no feed files" in proc.stderr


def test_an_empty_rpm_database_is_an_error(world: World, tmp_path: Path) -> None:
    empty = tmp_path / "emptyroot"
    empty.mkdir()
    proc = world.dnf("list-security", root=empty, check=False)
    assert proc.returncode == 1
    assert "lists no installed packages" in proc.stderr
    assert proc.stdout == ""
    # A damaged database is named as one, with the command that shows rpm's view of it.
    damaged = tmp_path / "damaged"
    (damaged / "usr/lib/sysimage/rpm").mkdir(parents=True)
    (damaged / "usr/lib/sysimage/rpm/rpmdb.sqlite").write_bytes(b"\x13not sqlite" * 4096)
    proc = world.dnf("list-security", root=damaged, check=False)
    assert proc.returncode == 1
    assert (f"the rpm database {damaged}/usr/lib/sysimage/rpm lists no installed packages: it "
            "is empty, or damaged") in proc.stderr
    assert f"rpm --root {damaged} --dbpath /usr/lib/sysimage/rpm -qa" in proc.stderr


def test_finds_the_roots_database_without_debians_rpmmacros(world: World,
                                                            tmp_path: Path) -> None:
    # Debian's rpm looks for the database in ~/.rpmdb; with a HOME that does not move it,
    # the plugin still reads the root's /usr/lib/sysimage/rpm.
    bare = tmp_path / "bare-home"
    bare.mkdir()
    proc = world.dnf("list-security", env={"HOME": str(bare)})
    assert _columns(proc.stdout) == EXPECTED
    assert not (world.root / "root" / ".rpmdb").exists()


# -- on advisory data written by others ---------------------------------------------------------

# createrepo_c's test errata (Red Hat style: no severity, no references, a mangled date).
ERRATA = SHARED_DATA / "updateinfo" / "createrepo_c-updateinfo_03.xml"
ERRATA_INSTALLED = [
    Pkg("walrus", "5.20", "1", "noarch"),   # older: RHEA-2012:0055 applies
    Pkg("penguin", "0.9.1", "1", "noarch"),  # at the erratum's build
    Pkg("shark", "0.2", "1", "noarch"),     # newer than the erratum's
    Pkg("crow", "0.7", "9", "noarch"),      # older: RHEA-2012:0056
    Pkg("stork", "0.12", "1", "noarch"),    # older release: RHEA-2012:0056
    Pkg("bear", "4.1", "1", "noarch"),      # at RHEA-2012:0057's build
    Pkg("gorilla", "0.1", "1", "noarch"),   # an enhancement only
]


def test_agrees_with_dnf_on_createrepo_c_errata(world: World, tmp_path: Path) -> None:
    if not ERRATA.is_file():
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(f"{ERRATA} is missing: the shared advisory data must sit beside "
                        "the clone")
        pytest.skip(f"the shared advisory data is not at {SHARED_DATA}")
    build_rpms(ERRATA_INSTALLED, tmp_path / "old", tmp_path / "build")
    make_repo(tmp_path / "old")
    repo = tmp_path / "errata"
    make_repo(repo)
    copy = tmp_path / "updateinfo.xml"
    shutil.copyfile(ERRATA, copy)
    run(["modifyrepo_c", "--mdtype=updateinfo", copy, repo / "repodata"])
    root = tmp_path / "root"
    run([DNF, "-q", "-y", f"--installroot={root}", "--releasever=40",
         f"--setopt=reposdir={world.norepos}", "--nogpgcheck", "--noplugins",
         f"--repofrompath=old,{tmp_path / 'old'}", "--repo=old", "install",
         *(p.name for p in ERRATA_INSTALLED)], env={**os.environ, "HOME": str(world.home)})
    repo_args = [f"--repofrompath=errata,{repo}", "--repo=errata"]
    theirs = _columns(world.dnf(*repo_args, "updateinfo", "list", "--security", root=root,
                                repos="off", plugins=False).stdout)
    assert theirs == [("RHEA-2012:0056", "Unknown/Sec.", "crow-0.8-1.noarch"),
                      ("RHEA-2012:0056", "Unknown/Sec.", "stork-0.12-2.noarch"),
                      ("RHEA-2012:0055", "Unknown/Sec.", "walrus-5.21-1.noarch")]
    ours = world.dnf(*repo_args, "list-security", root=root, repos="off").stdout
    assert _columns(ours) == theirs
    # No references at all: no notice address to print.
    assert all(len(line.split()) == 3 for line in ours.splitlines())
    from_repo = _json(world.dnf(*repo_args, "list-security", "--json", root=root, repos="off"))
    from_file = _json(world.dnf("list-security", "--json", f"--feed={ERRATA}", root=root,
                                repos="off"))
    assert from_file == from_repo
    assert {e["package"] for e in from_file} == {"crow-0.7-9.noarch", "stork-0.12-1.noarch",
                                                 "walrus-5.20-1.noarch"}


# -- modules ----------------------------------------------------------------------------------

OSV_REQUESTS = {
    "id": "GHSA-x84v-xcm2-53pg", "aliases": ["CVE-2018-18074"],
    "modified": "2024-01-01T00:00:00Z", "published": "2018-10-29T00:00:00Z",
    "summary": "Insufficiently Protected Credentials in Requests",
    "database_specific": {"severity": "HIGH"},
    "affected": [{"package": {"ecosystem": "PyPI", "name": "requests"},
                  "ranges": [{"type": "ECOSYSTEM",
                              "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}]}],
    "references": [{"type": "ADVISORY",
                    "url": "https://nvd.nist.gov/vuln/detail/CVE-2018-18074"}],
}


@dataclass(frozen=True)
class Podman:
    env: dict[str, str]
    osv: Path
    image: str
    container: str


@pytest.fixture(scope="module")
def podman(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """A podman store of its own (nothing else on the host is listed) holding one image made
    from the installroot plus an old Python package, and a container of it."""
    require("podman", "tar")
    base = tmp_path_factory.mktemp("podman")
    conf = base / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{base / "graph"}"\n'
                    f'runroot = "{base / "run"}"\n')
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}
    rootfs = base / "rootfs"
    shutil.copytree(world.root, rootfs, symlinks=True)
    dist = rootfs / "usr/lib/python3.12/site-packages/requests-2.19.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: requests\nVersion: 2.19.0\n")
    run(["tar", "-C", rootfs, "-cf", base / "image.tar", "."])
    image, container = "localhost/lsec-module:1", "lsec-module"
    run(["podman", "import", base / "image.tar", image], env=env)
    run(["podman", "create", "--name", container, image, "/usr/bin/busybox", "true"], env=env)
    osv = base / "GHSA-x84v-xcm2-53pg.json"
    osv.write_text(json.dumps(OSV_REQUESTS))
    yield Podman(env=env, osv=osv, image=image, container=container)
    subprocess.run(["podman", "rm", "-a", "-f"], env=env, capture_output=True, timeout=120)
    subprocess.run(["podman", "rmi", "-a", "-f"], env=env, capture_output=True, timeout=120)


def test_modules_lists_the_images_and_containers_that_need_updates(world: World,
                                                                   podman: Podman) -> None:
    feeds = [f"--feed={world.sec}", f"--feed={world.pony}", f"--feed={podman.osv}"]
    text = world.dnf("list-security", "--modules", *feeds, env=podman.env).stdout
    lines = text.splitlines()
    # The host's own lines come first, unchanged.
    assert _columns("\n".join(lines[:len(EXPECTED)])) == EXPECTED
    assert "Modules needing security updates: 2 of 2" in lines
    module_lines = [ln for ln in lines if ln.startswith("  ")]
    assert len(module_lines) == 2
    image_line = next(ln for ln in module_lines if podman.image in ln)
    # Six rpm findings (the host's) and the wheel's one (GitHub's HIGH is Important).
    assert "(podman-image) sha256:" in image_line
    assert image_line.endswith("7 findings: 1 Critical, 3 Important, 2 Moderate, 1 Unknown")
    assert any(ln.startswith(f"  {podman.container} (podman-container)")
               for ln in module_lines)

    verbose = world.dnf("-v", "list-security", "--modules", *feeds, env=podman.env).stdout
    assert "      pypi requests 2.19.0" in verbose
    assert ("          GHSA-x84v-xcm2-53pg Important/Sec. CVE-2018-18074; fixed in 2.20.0"
            in verbose)
    assert "      rpm alpha 1.0-1" in verbose
    assert "TEST-2024-0001 Critical/Sec. CVE-2024-1001; fixed in 1.0-2" in verbose

    entries = _json(world.dnf("list-security", "--modules", "--json", *feeds, env=podman.env))
    host = [e for e in entries if "module" not in e]
    assert host == _json(world.dnf("list-security", "--json"))
    wheel = [e for e in entries if e.get("package_type") == "pypi"]
    assert {e["module"]["kind"] for e in wheel} == {"podman-image", "podman-container"}  # type: ignore[index]
    assert all(e["cves"] == ["CVE-2018-18074"] and e["package"] == "requests-2.19.0"
               and e["fixed_version"] == "2.20.0" for e in wheel)

    counts = json.loads(world.dnf("list-security", "--modules", "--summary", "--json", *feeds,
                                  env=podman.env).stdout)
    assert counts["security"] == 6
    assert {(m["kind"], m["findings"], m["complete"]) for m in counts["modules"]} == \
        {("podman-image", 7, True), ("podman-container", 7, True)}

    only = world.dnf("list-security", "--modules", "--cve", "CVE-2018-18074", *feeds,
                     env=podman.env).stdout
    assert "1 finding: 1 Important" in only and _columns(only)[0][0] == "Modules"


def test_modules_without_advisories_for_them_is_an_error(world: World, podman: Podman) -> None:
    proc = world.dnf("list-security", "--modules", env=podman.env, check=False)
    assert proc.returncode == 1
    assert "--modules needs advisories" in proc.stderr


# -- the plugin in dnf --------------------------------------------------------------------------


def test_dnf_itself_is_unchanged_with_the_plugin_loaded(world: World) -> None:
    without = world.dnf("updateinfo", "list", "--security", plugins=False).stdout
    assert world.dnf("updateinfo", "list", "--security").stdout == without
    # dnf's own yum-compatible aliases stay dnf's: "list-sec" lists every type of advisory.
    listed = world.dnf("list-sec").stdout
    assert "TEST-2024-0008" in listed and "bugfix" in listed
    # With the plugin disabled, "list-security" is dnf's alias again.
    builtin = world.dnf("--disableplugin=list-security", "list-security").stdout
    assert "TEST-2024-0008" in builtin
    assert "TEST-2024-0008" not in world.dnf("list-security").stdout
    helped = world.dnf("--help").stdout
    assert "list-security" in helped and "Alicorn" in helped


def test_install_is_idempotent_and_uninstall_removes_it(tmp_path: Path) -> None:
    if not plugin_install.dnf_available():
        pytest.skip("the system has no dnf")
    prefix = tmp_path / "prefix"
    first = plugin_install.install(prefix=prefix)
    assert {p.name for p in first} == {plugin_install.SHIM_NAME, plugin_install.CONF_NAME,
                                       plugin_install.UPDATE_SHIM_NAME,
                                       plugin_install.UPDATE_CONF_NAME}
    where = plugin_install.system_dnf()
    assert where is not None
    shim = prefix / where.plugin_dir.relative_to("/") / plugin_install.SHIM_NAME
    conf = prefix / where.conf_dir.relative_to("/") / plugin_install.CONF_NAME
    assert shim in first and conf in first
    assert plugin_install.install(prefix=prefix) == []
    assert "[main]\nenabled = 1\n" in conf.read_text()
    # The configuration is the administrator's once written; the shim is rewritten.
    conf.write_text("[main]\nenabled = 0\n")
    shim.write_text("# changed\n")
    assert plugin_install.install(prefix=prefix) == [shim]
    assert conf.read_text() == "[main]\nenabled = 0\n"
    # The shim puts alicorn's directories at the end of sys.path and imports the command.
    src = Path(plugin_install.__file__).resolve().parents[2]
    assert repr(str(src)) in shim.read_text()
    probe = subprocess.run([where.python, "-c",
                            "import runpy, sys; before = list(sys.path); "
                            f"runpy.run_path({str(shim)!r}); "
                            "assert sys.path[:len(before)] == before; "
                            "import alicorn.dnf_plugin.list_security as m; print(m.__file__)"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().startswith(str(src))
    removed = plugin_install.uninstall(prefix=prefix)
    assert shim in removed and not shim.exists()
    # The edited configuration lost the marker: it is not ours to remove.
    assert conf.exists()
    assert plugin_install.uninstall(prefix=prefix) == []


# -- the pieces, without dnf --------------------------------------------------------------------


def _hit(aid: str, severity: str | None, update: str = "p-1-2.x86_64", **kw: object) -> Hit:
    values: dict[str, object] = {"name": "p", "installed": "p-1-1.x86_64", "cves": (),
                                 "bugzilla": (), "url": None, **kw}
    return Hit(advisory=aid, severity=severity, update=update, **values)  # type: ignore[arg-type]


def test_filters_are_a_union_and_cves_ignore_case() -> None:
    h = _hit("FEDORA-1", "Low", cves=("CVE-2024-1",), bugzilla=("7",))
    assert Filters().accepts(h)
    assert Filters(cves=("cve-2024-1",)).accepts(h)
    assert Filters(bugzilla=("7",), severities=("Critical",)).accepts(h)
    assert not Filters(bugzilla=("8",), severities=("Critical",)).accepts(h)
    assert Filters(specs=("FEDORA-*",)).accepts(h) and Filters(specs=("p",)).accepts(h)
    assert not Filters(specs=("fedora-*",)).accepts(h)  # dnf's globs are case-sensitive


def test_listing_and_summary_layout() -> None:
    hits = [_hit("A-1", "Important", url="https://x/A-1"), _hit("LONGER-2", None),
            _hit("A-1", "Important", installed="p-1-1.i686", update="p-1-2.x86_64")]
    assert list_lines(hits) == ["A-1      Important/Sec. p-1-2.x86_64 https://x/A-1",
                                "LONGER-2 Unknown/Sec.   p-1-2.x86_64"]
    assert summary_lines(hits) == ["Updates Information Summary: available",
                                   "    2 Security notice(s)",
                                   "        1 Important Security notice(s)",
                                   "        1 Unknown Security notice(s)"]
    assert summary_lines([]) == [] and list_lines([]) == []


def test_notice_url_prefers_the_notice_over_cve_and_bug_pages() -> None:
    assert notice_url([("cve", "c"), ("other", "n"), ("bugzilla", "b")]) == "n"
    assert notice_url([("cve", None), ("bugzilla", "b")]) == "b"
    assert notice_url([("cve", None)]) is None


def test_feed_hits_compare_evrs_as_rpm_does() -> None:
    from alicorn.advisories.model import Advisory, PackageRef

    def adv(aid: str, epoch: str, version: str, release: str, arch: str = "x86_64",
            modules: tuple[str, ...] = ()) -> Advisory:
        return Advisory(id=aid, type="security", severity="Low", title="", description="",
                        issued=None, updated=None, release=None, status="stable",
                        packages=(PackageRef("p", epoch, version, release, arch,
                                             modules=modules),))

    installed = [InstalledRpm("p", 0, "1.0~rc1", "1", "x86_64")]
    advisories = [adv("TILDE", "0", "1.0", "1"), adv("CARET", "0", "1.0~rc1^git1", "1"),
                  adv("OLDER", "0", "1.0~beta", "9"), adv("ARCH", "0", "2.0", "1", "i686"),
                  adv("EPOCH", "1", "0.1", "1"), adv("MODULE", "0", "3.0", "1",
                                                     modules=("pmod:1",))]
    found = {h.advisory for h in feed_hits(installed, advisories)}
    assert found == {"TILDE", "CARET", "EPOCH"}
    with_module = {h.advisory for h in feed_hits(installed, advisories,
                                                 enabled_modules={"pmod:1"})}
    assert with_module == found | {"MODULE"}


def test_enabled_modules_come_from_dnfs_state_files(tmp_path: Path) -> None:
    d = tmp_path / "etc" / "dnf" / "modules.d"
    d.mkdir(parents=True)
    (d / "nodejs.module").write_text("[nodejs]\nname=nodejs\nstream=18\nprofiles=\n"
                                     "state=enabled\n")
    (d / "perl.module").write_text("[perl]\nname=perl\nstream=5.30\nstate=disabled\n")
    (d / "broken.module").write_text("this is not ini\n")
    assert enabled_modules(tmp_path) == {"nodejs:18"}
    assert enabled_modules(tmp_path / "nothing") == set()


def test_store_advisories_reads_only_the_named_packages(tmp_path: Path) -> None:
    """The store's package index answers for many names in a few queries: a host's 2,000
    rpms do not read the whole store, nor cost 2,000 queries."""
    from alicorn.advisories.model import Advisory, PackageRef
    from alicorn.advisories.store import AdvisoryStore

    url = f"sqlite:///{tmp_path / 'alicorn.db'}"
    stored = [Advisory(id=f"TEST-{i}", type="security", severity="Low", title="", description="",
                       issued=None, updated=None, release=None, status=None,
                       packages=(PackageRef(f"pkg{i}", "0", "1.0", "2", "noarch"),))
              for i in range(60)]
    AdvisoryStore(url).import_advisories(stored, source="test")
    assert len(store_advisories(url)) == 60
    assert [a.id for a in store_advisories(url, ["pkg9", "pkg7"])] == \
        ["TEST-7", "TEST-9"]
    many = store_advisories(url, [f"pkg{i}" for i in range(0, 60, 10)] +
                            [f"other{i}" for i in range(2000)])
    assert [a.id for a in many] == [f"TEST-{i}" for i in sorted(map(str, range(0, 60, 10)))]


def test_a_module_whose_packages_no_advisory_covers_is_listed_not_checked() -> None:
    """--modules on a Fedora host whose store holds rpm and PyPI advisories, and a Debian
    image: its debs are named as not checked, not passed over as if it needed nothing."""
    from alicorn.advisories.model import Advisory, Affected, Range
    from alicorn.inventory.model import Distro, Inventory, Package

    pysec = Advisory(id="PYSEC-2018-28", type="security", severity=None, title="",
                     description="", issued=None, updated=None, release=None, status=None,
                     format="osv", affected=(Affected("PyPI", "requests", (Range(
                         "ECOSYSTEM", (("introduced", "0"), ("fixed", "2.20.0"))),)),))
    debian = Inventory(target="web", kind="podman-image", name="web", distro=Distro(
        id="debian", version_id="12"), packages=(
        Package(type="deb", name="libc6", version="2.36-9", source="glibc"),
        Package(type="pypi", name="requests", version="2.32.3")))
    (report,) = module_reports([debian], [pysec])
    assert report.hits == ()
    assert report.unchecked == ("1 deb package(s): no Debian 12 advisories imported",)
    assert report.summary_json()["unchecked"] == list(report.unchecked)
    assert module_lines([report]) == [
        "Modules needing security updates: 0 of 1",
        "  web (podman-image) -: NOT CHECKED: 1 deb package(s): no Debian 12 advisories "
        "imported"]
