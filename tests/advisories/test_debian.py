"""Debian advisories from changelogs, .deb files, a (local or real) archive, and the tracker JSON.

The offline tests build real .deb files with dpkg-deb and a local archive (file:// URLs) signed
with a throwaway gpg key, so that gpgv's check runs for real.  The network tests read real
bookworm-security packages (cached under ~/.cache/alicorn-test-debs).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alicorn.advisories.debian import (
    DebReader,
    TrackerJsonReader,
    advisories_from_changelog,
    advisories_from_debs,
    fetch_security_advisories,
    parse_tracker_json,
)
from alicorn.advisories.model import Advisory, FeedError
from alicorn.inventory.model import Inventory, Package
from conftest import require, require_network_archive

CHANGELOG = textwrap.dedent("""\
    foo (1:2.0-1+deb12u2) bookworm-security; urgency=high

      * Non-maintainer upload by the Security Team.
      * Fix CVE-2024-1111 and cve-2024-22222: buffer overflows (DSA-5999-1).
      * Fix a regression from DSA-5900-1 (Closes: #1050001, #1050002).

     -- Jane Doe <jane@example.org>  Tue, 05 Mar 2024 10:00:00 +0100

    foo (1:2.0-1+deb12u1) bookworm; urgency=medium

      * Correct the manual page.

     -- Jane Doe <jane@example.org>  Mon, 04 Mar 2024 10:00:00 +0000

    foo (1:2.0-1~deb12u1) bookworm-security; urgency=medium

      * CVE-2023-3333: integer overflow.
      * Also CVE-2023-3333 mentioned twice.

     -- Jane Doe <jane@example.org>  Sun, 03 Mar 2024 10:00:00 +0000

    foo (1:1.0-1) unstable; urgency=low

      * Initial release, fixes CVE-2022-4444 upstream.

     -- Jane Doe <jane@example.org>  Sat, 02 Mar 2024 10:00:00 +0000
    """)


def by_id(advisories: tuple[Advisory, ...]) -> dict[str, Advisory]:
    return {a.id: a for a in advisories}


# -- (a) changelogs -----------------------------------------------------------------------


def test_one_advisory_per_entry_that_names_cves() -> None:
    result = advisories_from_changelog(CHANGELOG, source_package="foo", source="foo.changelog")
    assert result.warnings == ()
    got = by_id(result.advisories)
    assert list(got) == ["DEBIAN-foo-1:2.0-1+deb12u2", "DEBIAN-foo-1:2.0-1~deb12u1",
                         "DEBIAN-foo-1:1.0-1"]  # the entry without a CVE gives none
    top = got["DEBIAN-foo-1:2.0-1+deb12u2"]
    assert top.cves == ("CVE-2024-1111", "CVE-2024-22222")  # lower case normalised
    assert top.aliases == ("DSA-5999-1", "DSA-5900-1")
    assert top.bugzilla_ids == ()  # Debian bugs are not bugzilla
    assert [(r.type, r.id) for r in top.references if r.type == "debbugs"] == \
        [("debbugs", "1050001"), ("debbugs", "1050002")]
    assert top.issued == datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
    assert (top.type, top.severity, top.format, top.release) == ("security", None, "debian", "12")
    assert top.description.startswith("foo (1:2.0-1+deb12u2) bookworm-security; urgency=high")
    assert top.source == "foo.changelog"
    [affected] = top.affected
    assert (affected.ecosystem, affected.name) == ("Debian:12", "foo")
    assert affected.ranges[0].events == (("introduced", "0"), ("fixed", "1:2.0-1+deb12u2"))
    assert got["DEBIAN-foo-1:2.0-1~deb12u1"].cves == ("CVE-2023-3333",)


def test_since_keeps_only_the_newer_entries_in_dpkg_order() -> None:
    # 1:2.0-1~deb12u1 < 1:2.0-1 < 1:2.0-1+deb12u1 (tilde sorts first; the epoch counts).
    result = advisories_from_changelog(CHANGELOG, source_package="foo", source="c",
                                       since="1:2.0-1", release="13")
    assert [a.id for a in result.advisories] == ["DEBIAN-foo-1:2.0-1+deb12u2"]
    assert result.advisories[0].affected[0].ecosystem == "Debian:13"
    none = advisories_from_changelog(CHANGELOG, source_package="foo", source="c",
                                     since="1:2.0-1+deb12u2")
    assert none.advisories == () and none.warnings == ()
    # Without the epoch, 2.0 is far below 1:1.0: everything is newer.
    for since, count in (("9.9", 3), ("0:9.9", 3), ("1:0.9", 3), ("1:1.0-1", 2), ("2:0", 0)):
        result = advisories_from_changelog(CHANGELOG, source_package="foo", source="c",
                                           since=since)
        assert len(result.advisories) == count, since


def test_a_backport_carries_the_fixes_of_the_entries_below_it() -> None:
    # The shape of libfile-find-rule-perl 0.34-4~deb12u1 in bookworm-security: a rebuild of
    # unstable's 0.34-4, whose entry (version above the backport's!) has the fix.
    text = textwrap.dedent("""\
        perlfoo (0.34-4~deb12u1) bookworm-security; urgency=high

          * Rebuild for bookworm-security.

         -- J <j@example.org>  Thu, 05 Jun 2025 14:32:51 +0200

        perlfoo (0.34-4) unstable; urgency=high

          * Fix for CVE-2011-10007 (Closes: #1107311)

         -- J <j@example.org>  Thu, 05 Jun 2025 14:26:45 +0200

        perlfoo (0.34-3) unstable; urgency=medium

          * Fix CVE-2011-0001.

         -- J <j@example.org>  Sat, 19 Nov 2022 16:06:52 +0000
        """)
    result = advisories_from_changelog(text, source_package="perlfoo", source="c")
    got = by_id(result.advisories)
    assert got["DEBIAN-perlfoo-0.34-4"].affected[0].fixed_versions == ("0.34-4~deb12u1",)
    assert got["DEBIAN-perlfoo-0.34-3"].affected[0].fixed_versions == ("0.34-3",)
    # A machine with the backport (or newer) has both fixes.
    for since in ("0.34-4~deb12u1", "0.34-4"):
        assert advisories_from_changelog(text, source_package="perlfoo", source="c",
                                         since=since).advisories == ()
    assert [a.id for a in advisories_from_changelog(
        text, source_package="perlfoo", source="c", since="0.34-3").advisories] == \
        ["DEBIAN-perlfoo-0.34-4"]


def test_bad_entries_are_warnings_and_bad_changelogs_errors() -> None:
    text = CHANGELOG.replace("(1:2.0-1~deb12u1)", "(!!bad)").replace(
        "Tue, 05 Mar 2024 10:00:00 +0100", "Tue, 99 Foo 2024 10:00:00 +0100")
    result = advisories_from_changelog(text, source_package="foo", source="x.gz")
    ids = [a.id for a in result.advisories]
    assert ids == ["DEBIAN-foo-1:2.0-1+deb12u2", "DEBIAN-foo-1:1.0-1"]
    assert result.advisories[0].issued is None
    assert any("'!!bad'" in w and w.startswith("x.gz: ") for w in result.warnings)
    assert any("unreadable date" in w for w in result.warnings)
    for bad in ("", "   \n", "this is not a changelog\n"):
        with pytest.raises(FeedError, match="not a Debian changelog") as e:
            advisories_from_changelog(bad, source_package="foo", source="bad.gz")
        assert e.value.where == "bad.gz"
    with pytest.raises(FeedError, match="larger than"):
        advisories_from_changelog("x" * (33 << 20), source_package="foo", source="big")


# -- (b) .deb files -----------------------------------------------------------------------


def build_deb(tmp: Path, package: str, version: str, *, source: str | None = None,
              changelog: str | None = None, doc_link: str | None = None,
              native: bool = False, compression: str = "xz") -> Path:
    """A real binary package, built by dpkg-deb."""
    require("dpkg-deb")
    root = tmp / f"build-{package}-{version.replace(':', '_')}"
    (root / "DEBIAN").mkdir(parents=True)
    control = (f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
               "Maintainer: Jane Doe <jane@example.org>\nDescription: test package\n")
    if source:
        control += f"Source: {source}\n"
    (root / "DEBIAN" / "control").write_text(control)
    doc = root / "usr" / "share" / "doc" / package
    doc.parent.mkdir(parents=True)
    if doc_link:
        doc.symlink_to(doc_link)
    else:
        doc.mkdir()
        (doc / "copyright").write_text("public domain\n")
        if changelog is not None:
            name = "changelog.gz" if native else "changelog.Debian.gz"
            (doc / name).write_bytes(gzip.compress(changelog.encode(), mtime=0))
    out = tmp / f"{package}_{version.replace(':', '%3a')}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build",
                    str(root), str(out)], check=True, capture_output=True)
    return out


def test_debs_give_their_sources_advisories_once(tmp_path: Path) -> None:
    a = build_deb(tmp_path, "libfoo1", "1:2.0-1+deb12u2", source="foo (1:2.0-1+deb12u2)",
                  changelog=CHANGELOG)
    b = build_deb(tmp_path, "foo-utils", "1:2.0-1+deb12u2", source="foo",
                  changelog=CHANGELOG, compression="gzip")
    link = build_deb(tmp_path, "foo-dev", "1:2.0-1+deb12u2", source="foo", doc_link="libfoo1")
    result = advisories_from_debs([a, b, link], since={"foo": "1:2.0-1~deb12u1"})
    assert [x.id for x in result.advisories] == ["DEBIAN-foo-1:2.0-1+deb12u2"]
    assert result.advisories[0].source == f"{a}:usr/share/doc/libfoo1/changelog.Debian.gz"
    [warning] = result.warnings
    assert warning.startswith(f"{link}: skipped") and "libfoo1" in warning


def test_native_package_changelog_and_mismatched_top_version(tmp_path: Path) -> None:
    text = CHANGELOG.replace("foo (", "bar (")
    native = build_deb(tmp_path, "bar", "1:2.0-1+deb12u2", changelog=text, native=True)
    # changelog.gz of a non-native package is the upstream one: not read.
    result = advisories_from_debs([native])
    assert result.advisories == ()
    assert "no usr/share/doc/bar/changelog.Debian.gz" in result.warnings[0]
    native = build_deb(tmp_path, "baz", "3.1", changelog=text.replace("bar (", "baz ("),
                       native=True)
    result = advisories_from_debs([native])
    assert len(result.advisories) == 3 and result.advisories[0].affected[0].name == "baz"
    assert any("newest entry is 1:2.0-1+deb12u2" in w for w in result.warnings)
    # Nativeness is the source's: linux-signed-amd64 6.1.192+3 builds linux-image 6.1.192-3.
    signed_log = text.replace("bar (1:2.0-1+deb12u2)", "signed (6.1.192+3)")
    signed = build_deb(tmp_path, "image", "6.1.192-3", source="signed (6.1.192+3)",
                       changelog=signed_log, native=True)
    result = advisories_from_debs([signed])
    assert result.warnings == ()
    assert result.advisories[0].id == "DEBIAN-signed-6.1.192+3"


def test_hostile_and_broken_debs_are_warnings(tmp_path: Path) -> None:
    good = build_deb(tmp_path, "libfoo1", "1:2.0-1+deb12u2", source="foo", changelog=CHANGELOG)
    data = good.read_bytes()
    cases = {
        "empty.deb": b"",
        "text.deb": b"hello, world\n",
        "truncated.deb": data[: len(data) // 2],
        # A negative member size makes python-debian's ar reader seek backwards forever.
        "negative.deb": b"!<arch>\n" + b"debian-binary".ljust(16) + b"0".ljust(12)
                        + b"0".ljust(6) * 2 + b"100644".ljust(8) + b"-60".ljust(10) + b"`\n",
        "corrupt-xz.deb": data[:200] + bytes(64) + data[264:],
    }
    paths = []
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        paths.append(tmp_path / name)
    result = advisories_from_debs([*paths, tmp_path / "missing.deb", good])
    assert [a.id for a in result.advisories][:1] == ["DEBIAN-foo-1:2.0-1+deb12u2"]
    assert len(result.warnings) == len(paths) + 1
    for path, warning in zip([*paths, tmp_path / "missing.deb"], result.warnings, strict=True):
        assert warning.startswith(f"{path}: skipped: "), warning


def test_a_changelog_bomb_is_refused(tmp_path: Path) -> None:
    bomb = "foo (1.0-1) unstable; urgency=low\n\n  * CVE-2024-0001\n" + " " * (40 << 20)
    deb = build_deb(tmp_path, "foo", "1.0-1", changelog=bomb)
    assert deb.stat().st_size < 1 << 20
    result = advisories_from_debs([deb])
    assert result.advisories == ()
    assert "more than" in result.warnings[0]


# -- (c) an archive -----------------------------------------------------------------------


class Archive:
    """A Debian archive on disk (dists/ + pool/), InRelease clear-signed by a throwaway key."""

    def __init__(self, root: Path, gnupg: Path | None):
        self.root, self.gnupg = root, gnupg

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def publish(self, suite: str, debs: list[Path], *, codename: str | None = None,
                by_hash: bool = False, valid_until: str | None = None) -> Path:
        pool = self.root / "pool" / "main"
        pool.mkdir(parents=True, exist_ok=True)
        stanzas = []
        for deb in debs:
            target = pool / deb.name
            target.write_bytes(deb.read_bytes())
            fields = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True,
                                    capture_output=True, text=True).stdout.strip()
            data = target.read_bytes()
            stanzas.append(f"{fields}\nFilename: pool/main/{deb.name}\nSize: {len(data)}\n"
                           f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
        packages = lzma.compress("\n".join(stanzas).encode())
        dists = self.root / "dists" / suite
        index_dir = dists / "main" / "binary-amd64"
        index_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(packages).hexdigest()
        (index_dir / "Packages.xz").write_bytes(packages)
        if by_hash:
            (index_dir / "by-hash" / "SHA256").mkdir(parents=True)
            (index_dir / "by-hash" / "SHA256" / digest).write_bytes(packages)
        release = (f"Origin: Test\nSuite: {codename or suite}\nCodename: {codename or suite}\n"
                   f"Acquire-By-Hash: {'yes' if by_hash else 'no'}\n"
                   + (f"Valid-Until: {valid_until}\n" if valid_until else "") +
                   f"SHA256:\n {digest} {len(packages)} main/binary-amd64/Packages.xz\n")
        inrelease = dists / "InRelease"
        if self.gnupg is None:
            inrelease.write_text(release)
        else:
            subprocess.run(["gpg", "--batch", "--yes", "--clearsign", "--output", str(inrelease)],
                           input=release.encode(), check=True, capture_output=True,
                           env={**os.environ, "GNUPGHOME": str(self.gnupg)})
        return inrelease


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require("gpg", "gpgv")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                    "Test Archive <archive@example.org>", "ed25519", "sign", "never"],
                   check=True, capture_output=True, env=env)
    keyring = home / "archive.gpg"
    keyring.write_bytes(subprocess.run(["gpg", "--export"], check=True, capture_output=True,
                                       env=env).stdout)
    return home, keyring


@pytest.fixture
def archive(tmp_path: Path, signing_key: tuple[Path, Path]) -> Archive:
    debs = tmp_path / "debs"
    debs.mkdir()
    a = Archive(tmp_path / "mirror", signing_key[0])
    base_log = CHANGELOG[CHANGELOG.index("foo (1:2.0-1~deb12u1)"):]
    a.publish("bookworm", [
        build_deb(debs, "libfoo1", "1:2.0-1~deb12u1", source="foo",
                  changelog=base_log),
        build_deb(debs, "bar", "1.0-1", changelog="bar (1.0-1) unstable; urgency=low\n\n"
                  "  * CVE-2020-0001\n\n -- J <j@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n"),
    ])
    bar_log = ("bar (1.0-1+deb12u1) bookworm-security; urgency=high\n\n  * CVE-2024-7777\n\n"
               " -- J <j@example.org>  Mon, 01 Apr 2024 00:00:00 +0000\n\n"
               "bar (1.0-1) unstable; urgency=low\n\n  * CVE-2020-0001\n\n"
               " -- J <j@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n")
    a.publish("bookworm-security", [
        # The smallest binary of foo points to foo-common's doc directory.
        build_deb(debs, "libfoo1", "1:2.0-1+deb12u2", source="foo", doc_link="foo-common"),
        build_deb(debs, "foo-common", "1:2.0-1+deb12u2", source="foo",
                  changelog=CHANGELOG),
        build_deb(debs, "bar", "1.0-1+deb12u1", changelog=bar_log),
    ], by_hash=True)
    return a


def test_fetch_takes_the_uploads_above_the_base_suite(archive: Archive, tmp_path: Path,
                                                      signing_key: tuple[Path, Path]) -> None:
    cache = tmp_path / "cache"
    result = fetch_security_advisories(mirror=archive.url, mirror_security=archive.url,
                                       cache_dir=cache, keyring=signing_key[1])
    assert result.warnings == ()
    got = by_id(result.advisories)
    # foo: bookworm has 1:2.0-1~deb12u1, so its CVE-2023-3333 and CVE-2022-4444 are not named.
    assert set(got) == {"DEBIAN-foo-1:2.0-1+deb12u2", "DEBIAN-bar-1.0-1+deb12u1"}
    assert got["DEBIAN-bar-1.0-1+deb12u1"].cves == ("CVE-2024-7777",)
    assert "foo-common" in got["DEBIAN-foo-1:2.0-1+deb12u2"].source
    cached = sorted(p.name for p in (cache / "debs").iterdir())
    assert cached == ["bar_1.0-1+deb12u1_all.deb", "foo-common_1%3a2.0-1+deb12u2_all.deb",
                      "libfoo1_1%3a2.0-1+deb12u2_all.deb"]
    # No base suite: every entry of every changelog.
    everything = fetch_security_advisories(mirror_security=archive.url, base_suite=None,
                                           cache_dir=cache, keyring=signing_key[1])
    assert len(everything.advisories) == 5


def test_fetch_selects_by_name_or_inventory(archive: Archive, tmp_path: Path,
                                            signing_key: tuple[Path, Path]) -> None:
    kw = {"mirror": archive.url, "mirror_security": archive.url, "cache_dir": tmp_path / "c",
          "keyring": signing_key[1]}
    # A binary name stands for its source; unknown names have no security upload.
    named = fetch_security_advisories(packages=["libfoo1", "nginx"], **kw)
    assert [a.id for a in named.advisories] == ["DEBIAN-foo-1:2.0-1+deb12u2"]
    inventory = Inventory(target="/r", kind="rootfs", packages=(
        Package(type="deb", name="bar", version="1.0-1", source="bar"),
        Package(type="pypi", name="foo", version="1.0"),
    ))
    picked = fetch_security_advisories(inventory=inventory, **kw)
    assert [a.id for a in picked.advisories] == ["DEBIAN-bar-1.0-1+deb12u1"]


def test_fetch_refuses_unsigned_tampered_or_wrong_suites(archive: Archive, tmp_path: Path,
                                                         signing_key: tuple[Path, Path]) -> None:
    kw = {"mirror": archive.url, "mirror_security": archive.url, "cache_dir": tmp_path / "c"}
    inrelease = archive.root / "dists" / "bookworm-security" / "InRelease"
    signed = inrelease.read_text()
    inrelease.write_text(signed.replace("Origin: Test", "Origin: Evil"))
    with pytest.raises(FeedError, match="signature") as e:
        fetch_security_advisories(keyring=signing_key[1], **kw)
    assert e.value.where is not None and e.value.where.endswith("bookworm-security/InRelease")
    inrelease.write_text(signed)
    # The real Debian keyring did not sign this archive.
    with pytest.raises(FeedError, match="signature"):
        fetch_security_advisories(**kw)
    with pytest.raises(FeedError, match="keyring"):
        fetch_security_advisories(keyring=tmp_path / "none.gpg", **kw)
    # An InRelease of another suite served in place of the security one.
    archive.publish("bookworm-security", [], codename="bookworm")
    with pytest.raises(FeedError, match="not 'bookworm-security'"):
        fetch_security_advisories(keyring=signing_key[1], **kw)
    # A stale (or replayed) Release file.
    archive.publish("bookworm-security", [], valid_until="Mon, 01 Jan 2024 00:00:00 UTC")
    with pytest.raises(FeedError, match="expired on 2024-01-01"):
        fetch_security_advisories(keyring=signing_key[1], **kw)
    with pytest.raises(FeedError, match="not reachable"):
        fetch_security_advisories(suite="trixie-security", keyring=signing_key[1], **kw)


def test_fetch_checks_the_sha256_of_what_it_downloads(archive: Archive, tmp_path: Path,
                                                      signing_key: tuple[Path, Path]) -> None:
    kw = {"mirror": archive.url, "mirror_security": archive.url, "cache_dir": tmp_path / "c",
          "keyring": signing_key[1]}
    pool = archive.root / "pool" / "main" / "bar_1.0-1+deb12u1_all.deb"
    pool.write_bytes(pool.read_bytes()[:-1] + b"X")
    result = fetch_security_advisories(**kw)
    assert [a.id for a in result.advisories] == ["DEBIAN-foo-1:2.0-1+deb12u2"]
    [warning] = result.warnings
    assert warning.startswith("source package bar: skipped") and "sha256 mismatch" in warning
    assert not (tmp_path / "c" / "debs" / pool.name).exists()
    index = archive.root / "dists" / "bookworm" / "main" / "binary-amd64" / "Packages.xz"
    index.write_bytes(lzma.compress(b"Package: x\n"))
    # The cached index (named by its sha256) is still good; a fresh cache must download.
    assert len(fetch_security_advisories(**kw).advisories) == 1
    with pytest.raises(FeedError, match="sha256 mismatch"):
        fetch_security_advisories(**{**kw, "cache_dir": tmp_path / "fresh"})


# -- (d) the security tracker's JSON ------------------------------------------------------


TRACKER = {
    "openssl": {
        "CVE-2024-0001": {"description": "fixed in a DSA", "scope": "remote", "debianbug": 1234,
                          "releases": {
                              "bookworm": {"status": "resolved", "urgency": "medium",
                                           "fixed_version": "3.0.13-1~deb12u1",
                                           "repositories": {"bookworm": "3.0.11-1~deb12u2"}},
                              "trixie": {"status": "resolved", "fixed_version": "3.1.5-1",
                                         "urgency": "medium"}}},
        "CVE-2024-0002": {"description": "never vulnerable",
                          "releases": {"bookworm": {"status": "resolved", "fixed_version": "0",
                                                    "urgency": "unimportant"}}},
        "CVE-2024-0003": {"description": "no fix yet",
                          "releases": {"bookworm": {"status": "open", "fixed_version": None,
                                                    "urgency": "low", "nodsa": "Minor issue",
                                                    "nodsa_reason": "postponed"}}},
        "CVE-2024-0004": {"releases": {"bookworm": {"status": "undetermined"}}},
        "CVE-2024-0005": {"releases": {"trixie": {"status": "open"}}},
    },
    "zlib": {
        "TEMP-0000000-ABCDEF": {"releases": {"bookworm": {"status": "open"}}},
        "CVE-2024-0006": "not an object",
        "CVE-2024-0007": {"releases": {"bookworm": {"status": "resolved"}}},
        "CVE-2024-0008": {"releases": {"bookworm": {"status": "weird"}}},
        "NOT-AN-ID": {"releases": {}},
    },
    "broken": [],
}


def test_tracker_json_statuses() -> None:
    result = parse_tracker_json(json.dumps(TRACKER).encode(), source="tracker.json")
    got = by_id(result.advisories)
    assert set(got) == {"DEBIAN-openssl-CVE-2024-0001", "DEBIAN-openssl-CVE-2024-0003",
                        "DEBIAN-zlib-TEMP-0000000-ABCDEF"}
    fixed = got["DEBIAN-openssl-CVE-2024-0001"]
    assert fixed.cves == ("CVE-2024-0001",) and fixed.status == "resolved"
    assert fixed.severity == "Medium"  # the tracker's urgency
    [affected] = fixed.affected  # only the releases asked for
    assert (affected.ecosystem, affected.name, affected.fixed_versions) == \
        ("Debian:12", "openssl", ("3.0.13-1~deb12u1",))
    assert ("debbugs", "1234") in [(r.type, r.id) for r in fixed.references]
    open_ = got["DEBIAN-openssl-CVE-2024-0003"]
    assert open_.severity == "Low"
    assert got["DEBIAN-zlib-TEMP-0000000-ABCDEF"].severity is None  # no urgency given
    assert open_.affected[0].ranges[0].events == (("introduced", "0"),)
    assert "postponed" in open_.description and "no fix yet" in open_.description
    assert got["DEBIAN-zlib-TEMP-0000000-ABCDEF"].cves == ()
    warnings = "\n".join(result.warnings)
    for needle in ("broken: skipped", "zlib/CVE-2024-0006: skipped", "without a fixed_version",
                   "unknown status 'weird'", "NOT-AN-ID: skipped",
                   "1 (package, issue) pairs are 'undetermined'"):
        assert needle in warnings, needle
    both = parse_tracker_json(json.dumps(TRACKER).encode(), source="t",
                              releases={"bookworm": "12", "trixie": "13"})
    fixed = by_id(both.advisories)["DEBIAN-openssl-CVE-2024-0001"]
    assert [a.ecosystem for a in fixed.affected] == ["Debian:12", "Debian:13"]
    assert "DEBIAN-openssl-CVE-2024-0005" in by_id(both.advisories)


def test_tracker_json_hostile_input() -> None:
    for data, message in ((b"[" * 200_000 + b"]" * 200_000, "nested too deeply|not JSON"),
                          (b"{not json", "not JSON"), (b"[1, 2]", "top level"),
                          (b"\xff\xfe\x00", "not JSON")):
        with pytest.raises(FeedError, match=message) as e:
            parse_tracker_json(data, source="t.json")
        assert e.value.where == "t.json"
    with pytest.raises(FeedError, match="larger than"):
        parse_tracker_json(b" " * ((512 << 20) + 1), source="big.json")


def test_feed_readers_sniff_and_read(tmp_path: Path) -> None:
    data = json.dumps(TRACKER).encode()
    tracker, deb_reader = TrackerJsonReader(), DebReader()
    dump = tmp_path / "json.gz"
    dump.write_bytes(gzip.compress(data))
    assert tracker.sniff(dump, data[:65536])
    assert not tracker.sniff(dump, b'{"id": "CVE-2024-1", "modified": "2024-01-01T00:00:00Z"}')
    assert not deb_reader.sniff(dump, data[:65536])
    assert len(tracker.read(dump).advisories) == 3
    deb = build_deb(tmp_path, "libfoo1", "1:2.0-1+deb12u2", source="foo", changelog=CHANGELOG)
    head = deb.read_bytes()[:65536]
    assert deb_reader.sniff(deb, head) and not tracker.sniff(deb, head)
    assert len(deb_reader.read(deb).advisories) == 3
    link = build_deb(tmp_path, "foo-dev", "1:2.0-1+deb12u2", source="foo", doc_link="libfoo1")
    with pytest.raises(FeedError, match="libfoo1") as e:
        deb_reader.read(link)
    assert e.value.where == str(link)


# -- real packages from Debian's archive --------------------------------------------------

CACHE = Path.home() / ".cache" / "alicorn-test-debs" / "archive"


@pytest.mark.network
def test_real_openssl_changelog_names_the_verified_cves() -> None:
    """Facts read by hand in openssl's changelog.Debian.gz from bookworm-security (libssl3
    3.0.22-1~deb12u2, fetched 2026-12-01); newer security uploads keep these entries."""
    require_network_archive()
    everything = fetch_security_advisories(packages=["openssl"], base_suite=None,
                                           cache_dir=CACHE)
    assert everything.warnings == ()
    got = by_id(everything.advisories)
    assert set(got["DEBIAN-openssl-3.0.22-1~deb12u2"].cves) == {
        "CVE-2026-84782", "CVE-2026-35189", "CVE-2026-54872", "CVE-2026-75805",
        "CVE-2026-75806", "CVE-2026-77696"}
    assert set(got["DEBIAN-openssl-3.0.22-1~deb12u1"].cves) == {
        "CVE-2026-42767", "CVE-2026-54874", "CVE-2026-63072", "CVE-2026-63074",
        "CVE-2026-63076", "CVE-2026-75803"}
    assert got["DEBIAN-openssl-3.0.17-1~deb12u3"].cves == ("CVE-2025-9230", "CVE-2025-9232")
    old = got["DEBIAN-openssl-3.0.15-1~deb12u1"]
    assert old.cves == ("CVE-2024-5535", "CVE-2024-9143")
    assert [r.id for r in old.references if r.type == "debbugs"] == ["1074487", "1085378"]
    assert got["DEBIAN-openssl-1.1.1d-1"].cves == ("CVE-2019-1549", "CVE-2019-1547",
                                                  "CVE-2019-1563")
    assert got["DEBIAN-openssl-3.0.22-1~deb12u2"].issued == \
        datetime(2026, 10, 21, 9, 54, 24, tzinfo=UTC)
    # "Import 3.0.20" names no CVE: no advisory.
    assert "DEBIAN-openssl-3.0.20-1~deb12u1" not in got

    # libfile-find-rule-perl 0.34-4~deb12u1 ("Rebuild for bookworm-security") ships the fix
    # of unstable's 0.34-4 entry, whose version sorts above it.
    perl = by_id(fetch_security_advisories(packages=["libfile-find-rule-perl"],
                                           base_suite=None, cache_dir=CACHE).advisories)
    rule = perl["DEBIAN-libfile-find-rule-perl-0.34-4"]
    assert rule.cves == ("CVE-2011-10007",)
    assert rule.affected[0].fixed_versions == ("0.34-4~deb12u1",)
    assert [r.id for r in rule.references if r.type == "debbugs"] == ["1107311"]

    # With the base suite: only what bookworm itself does not have yet, all above it.
    current = fetch_security_advisories(packages=["openssl"], cache_dir=CACHE)
    assert current.warnings == ()
    assert {a.id for a in current.advisories} < set(got)
    assert "DEBIAN-openssl-3.0.17-1~deb12u3" not in {a.id for a in current.advisories}


def test_feeds_load_reads_tracker_dumps_and_debs(tmp_path: Path) -> None:
    """`alicorn advisories import` takes these like any other feed file or directory."""
    from alicorn.advisories.feeds import load
    plain, packed = tmp_path / "feeds" / "json", tmp_path / "feeds" / "json.gz"
    plain.parent.mkdir()
    plain.write_text(json.dumps(TRACKER))
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for dump in (plain, packed):
        assert {a.id for a in load(dump).advisories} == {
            "DEBIAN-openssl-CVE-2024-0001", "DEBIAN-openssl-CVE-2024-0003",
            "DEBIAN-zlib-TEMP-0000000-ABCDEF"}
    deb = build_deb(tmp_path / "feeds", "libfoo1", "1:2.0-1+deb12u2", source="foo",
                    changelog=CHANGELOG)
    assert len(load(deb).advisories) == 3
    everything = load(tmp_path / "feeds")
    assert len(everything.advisories) == 3 + 3 + 3


def test_cli_imports_debian_advisories_and_finds_the_affected_builds(
        archive: Archive, tmp_path: Path, signing_key: tuple[Path, Path]) -> None:
    """`alicorn advisories import-debian` then `alicorn advisories affected`: the builds whose
    recorded packages the uploads fix, newest build of each recipe only."""
    from alicorn.compose import Package
    from alicorn.config import load_settings
    from alicorn.store.builds import DONE, BuildStore, Submission
    from conftest import Cli

    cli = Cli(tmp_path / "home")
    args = ["advisories", "import-debian", "--mirror", archive.url, "--security-mirror",
            archive.url, "--keyring", str(signing_key[1])]
    code, first = cli.json(*args)
    assert code == 0, first
    assert (first["added"], first["unchanged"], first["cves"]) == (2, 0, 3)
    code, again = cli.json(*args)
    assert (again["added"], again["unchanged"]) == (0, 2), "re-importing is idempotent"
    # The downloads stay out of the Debian composer's package cache (cache/debian), which
    # mmdebstrap copies into every image it composes.
    assert (tmp_path / "home" / "cache" / "advisories-debian" / "debs").is_dir()
    assert not (tmp_path / "home" / "cache" / "debian").exists()

    store = BuildStore(load_settings(tmp_path / "home").database_url)

    def build(recipe: str, version: str) -> str:
        row = store.submit(Submission(argv=["alicorn", "build"], source_kind="file",
                                      recipe_path=f"/r/{recipe}.yaml"))
        store.update(row.id, recipe_name=recipe)
        purl = f"pkg:deb/debian/bar@{version}?arch=all&distro=debian-12"
        store.finish(row.id, DONE, digest="sha256:" + row.id.ljust(64, "0")[:64],
                     packages=[Package(type="deb", name="bar", version=version, arch="all",
                                       source="bar", purl=purl)])
        return row.id

    old = build("web", "1.0-1")
    build("api", "1.0-1+deb12u1")
    proc = cli("advisories", "affected", "CVE-2024-7777", "--json")
    assert proc.returncode == 1, proc.stderr
    [hit] = json.loads(proc.stdout)
    assert (hit["build"], hit["recipe"]) == (old, "web")
    assert [(f["advisory"], f["package"]["name"], f["fixed_version"]) for f in hit["findings"]] \
        == [("DEBIAN-bar-1.0-1+deb12u1", "bar", "1.0-1+deb12u1")]
    build("web", "1.0-1+deb12u1")  # the rebuild: web's current image is fixed
    proc = cli("advisories", "affected", "DEBIAN-bar-1.0-1+deb12u1")
    assert proc.returncode == 0 and "no image built here is affected" in proc.stdout
    proc = cli("advisories", "affected", "DEBIAN-bar-1.0-1+deb12u1", "--all-builds", "--json")
    assert proc.returncode == 1 and [h["build"] for h in json.loads(proc.stdout)] == [old]
    proc = cli("advisories", "affected", "CVE-1999-0001")
    assert proc.returncode == 2 and "no advisory CVE-1999-0001" in proc.stderr
