"""Composing RPM-based roots with ``dnf --installroot``.

Debian's dnf and rpm compose a Fedora-style root: the rpm database lands where Fedora keeps it
(/usr/lib/sysimage/rpm, with the /var/lib/rpm symlink), nothing of dnf's own state stays behind,
and two composes of the same inputs give byte-identical trees.  How that is achieved is written
down in :meth:`RpmComposer.compose` and the helpers it calls.
"""

from __future__ import annotations

import gzip
import hashlib
import platform
import re
import shutil
import sqlite3
import tempfile
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from alicorn import proc
from alicorn.compose.fetch import fetch_bytes
from alicorn.compose.interface import Composer, Package, RepoState
from alicorn.errors import ComposeError, ToolError

# Where Fedora (since 36) keeps the rpm database.  Debian's rpm defaults to ~/.rpmdb, which
# inside an installroot would be /root/.rpmdb: every call below sets the path explicitly.
RPMDB_PATH = "usr/lib/sysimage/rpm"
# Fedora's rpm package ships /var/lib/rpm as this relative symlink, so tools (and scanners)
# that still look in the old place find the database.
VAR_LIB_RPM_TARGET = "../../usr/lib/sysimage/rpm"

REPOMD_TIMEOUT = 20.0
DNF_TIMEOUT = 2 * 3600.0

# Files that record when and how the root was composed rather than what is in it: dnf's logs,
# its history database (wall-clock times), its caches.  They would make every compose differ.
# Most never get here because compose() points dnf's cachedir, logdir and persistdir outside
# the root; this list is the safety net for what dnf still creates in the root on its own (an
# empty /etc/dnf/modules.d) and for what another dnf version might put there.  A path is kept
# when a package ships it (dnf itself owns /etc/dnf and /var/lib/dnf when it is installed);
# a %ghost entry does not count, since rpm never ships a ghost's content.
_COMPOSE_LEFTOVERS = (
    "var/log/dnf.log",
    "var/log/dnf.librepo.log",
    "var/log/dnf.rpm.log",
    "var/log/hawkey.log",
    "var/lib/dnf",
    "var/cache/dnf",
    "etc/dnf/modules.d",
    "etc/dnf/modules.defaults.d",
    "etc/dnf",
    # ldconfig's auxiliary cache (written by glibc's scriptlets) records inode numbers and
    # ctimes of the libraries it saw, so it differs on every compose; glibc lists it as a
    # %ghost and ldconfig rebuilds it when missing.
    "var/cache/ldconfig/aux-cache",
)

# The rpm arch of a recipe's architecture field.
_RPM_ARCH = {"amd64": "x86_64", "x86_64": "x86_64"}

# Purl namespaces of well-known RPM vendors (RPMTAG_VENDOR); anything without a vendor was
# built outside a distribution, for which the namespace is ours.
_VENDOR_NAMESPACE = (
    ("fedora", "fedora"),
    ("red hat", "redhat"),
    ("centos", "centos"),
    ("rocky", "rocky"),
    ("almalinux", "almalinux"),
    ("opensuse", "opensuse"),
    ("suse", "suse"),
    ("amazon", "amazon"),
    ("oracle", "oracle"),
    ("mageia", "mageia"),
)
_DEFAULT_NAMESPACE = "alicorn"

_UNREACHABLE_HINT = ("check the repository's url in the recipe; a local repository must hold "
                     "repodata/ (createrepo_c makes it)")

# rpm's macro context is process-global; reading two roots at once from two threads must not
# interleave addMacro/delMacro.
_RPM_LOCK = threading.Lock()

_NO_MATCH = re.compile(r"No match for argument:\s*(\S+)")
_REPO_FAILED = re.compile(r"Failed to download metadata for repo '([^']+)'(?::\s*(.*))?")
_REPO_ERRORS = re.compile(r"Errors during downloading metadata for repository '([^']+)'")
_CURL_ERROR = re.compile(r"(Curl error \(\d+\):.*|Status code: \d+.*|Cannot download .*)")
_INSTALLING = re.compile(
    r"^\s*(Installing|Upgrading|Reinstalling|Downgrading)\s*:\s*(\S+)\s+(\d+)/(\d+)\s*$")
_DOWNLOADING = re.compile(r"^\((\d+)/(\d+)\):\s*(\S+)")


@dataclass(frozen=True)
class _Repo:
    """A recipe repository with its URL made absolute (what dnf is given and what is digested)."""

    name: str
    baseurl: str
    gpgcheck: bool
    gpgkey: str | None


class RpmComposer(Composer):
    kind: ClassVar[str] = "rpm"

    # -- repositories -----------------------------------------------------------------------

    def _repos(self) -> list[_Repo]:
        return [
            _Repo(name=r.name, baseurl=self._absolute_url(r.url or ""), gpgcheck=r.gpgcheck,
                  gpgkey=self._absolute_url(r.gpgkey) if r.gpgkey else None)
            for r in self.recipe.repositories
        ]

    def _absolute_url(self, url: str) -> str:
        """An http(s) or file URL for ``url``, with dnf's $releasever and $basearch filled in.

        The variables are substituted here rather than by dnf so that the URL that is digested
        in repo_states() is exactly the one dnf is given.
        """
        url = (url.replace("$releasever", self.recipe.release)
               .replace("${releasever}", self.recipe.release)
               .replace("$basearch", self._arch).replace("${basearch}", self._arch)
               .replace("$arch", self._arch).replace("${arch}", self._arch))
        if url.startswith(("http://", "https://", "file://")):
            return url.rstrip("/")
        if url.startswith("/"):
            return Path(url).as_uri()
        return self.recipe.resolve(url).as_uri()

    @property
    def _arch(self) -> str:
        return _RPM_ARCH.get(self.recipe.architecture, self.recipe.architecture)

    def repo_states(self) -> list[RepoState]:
        states = []
        for repo in self._repos():
            try:
                data = fetch_bytes(f"{repo.baseurl}/repodata/repomd.xml",
                                   what=f"repository '{repo.name}' ({repo.baseurl})",
                                   timeout=REPOMD_TIMEOUT)
            except ComposeError as e:
                raise ComposeError(e.message, where=self.recipe.file, hint=_UNREACHABLE_HINT) \
                    from e
            states.append(RepoState(name=repo.name, url=repo.baseurl,
                                    metadata_digest="sha256:" + hashlib.sha256(data).hexdigest()))
        return states

    # -- composing ----------------------------------------------------------------------------

    def _private_dirs(self) -> dict[str, Path]:
        """Directories of this build that dnf and rpm use instead of the host's (and the root's).

        ``home`` holds the .rpmmacros that moves the rpm database to Fedora's place: rpm reads
        ~/.rpmmacros, so pointing HOME at it changes the database path for this one call
        without touching /etc/rpm on the host.
        """
        base = self.ctx.workdir / "dnf"
        dirs = {name: base / name
                for name in ("home", "reposdir", "varsdir", "log", "persist")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        (dirs["home"] / ".rpmmacros").write_text(f"%_dbpath /{RPMDB_PATH}\n", encoding="utf-8")
        # An empty dnf.conf: nothing from the host's /etc/dnf/dnf.conf applies to the image.
        config = base / "dnf.conf"
        config.write_text("[main]\n", encoding="utf-8")
        dirs["config"] = config
        self.ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        return dirs

    def _env(self, dirs: dict[str, Path]) -> dict[str, str]:
        return {
            "HOME": str(dirs["home"]),
            # rpm (4.18 here) takes INSTALLTIME and INSTALLTID from SOURCE_DATE_EPOCH when it is
            # set, counting up by one per package in transaction order; without it the rpm
            # database holds the wall clock and differs on every compose.
            "SOURCE_DATE_EPOCH": str(self.ctx.source_date_epoch),
            # dnf's messages are parsed below for progress and errors.
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
            "TZ": "UTC",
        }

    def _dnf_argv(self, rootfs: Path, dirs: dict[str, Path]) -> list[str]:
        root = rootfs.resolve()
        argv = [
            "dnf", f"--installroot={root}", "-y", f"--releasever={self.recipe.release}",
            f"--config={dirs['config']}", "--noplugins",
            # The package cache is shared between builds, and dnf would trust cached metadata
            # for up to two days: a repository that changed since (the very change a rebuild
            # is for) would be composed from its old package list.  --refresh makes dnf check
            # every repomd.xml; unchanged metadata is still reused from the cache.
            "--refresh",
            # Only the recipe's repositories: an empty reposdir (a command-line reposdir is
            # taken from the host, never from the root) and the repositories given here.
            f"--setopt=reposdir={dirs['reposdir']}",
            f"--setopt=varsdir={dirs['varsdir']}",
            "--setopt=install_weak_deps=False",
            "--setopt=skip_if_unavailable=False",
            "--setopt=keepcache=True",
            # dnf 4 puts cachedir and logdir under the installroot whatever the command line
            # says.  A path that climbs out of the root ("/../../..") comes back to the host
            # path once dnf has prefixed it, so the package cache is shared between builds and
            # dnf's logs land in this build's workdir, not in the image.
            f"--setopt=cachedir={_escape_installroot(root, self.ctx.cache_dir)}",
            f"--setopt=logdir={_escape_installroot(root, dirs['log'])}",
            # dnf 4.14 does not prefix a command-line persistdir (and sqlite rejects the
            # climbing form), so the history database goes straight to the workdir.
            f"--setopt=persistdir={dirs['persist']}",
        ]
        if self.recipe.exclude_docs:
            argv.append("--setopt=tsflags=nodocs")
        if platform.machine() != self._arch:
            argv.append(f"--forcearch={self._arch}")
        for repo in self._repos():
            argv += [
                f"--repofrompath={repo.name},{repo.baseurl}",
                f"--setopt={repo.name}.gpgcheck={1 if repo.gpgcheck else 0}",
            ]
            if repo.gpgkey:
                argv.append(f"--setopt={repo.name}.gpgkey={repo.gpgkey}")
        argv += [f"--repo={repo.name}" for repo in self._repos()]
        argv += ["install", *self.recipe.packages]
        return argv

    def floor_argv(self, rootfs: Path) -> list[str]:
        dirs = self._private_dirs()
        env = self._env(dirs)
        return ["env", *(f"{k}={v}" for k, v in sorted(env.items())),
                *self._dnf_argv(rootfs, dirs)]

    def compose(self, rootfs: Path) -> None:
        rootfs.mkdir(parents=True, exist_ok=True)
        dirs = self._private_dirs()
        repos = self._repos()
        lines: list[str] = []
        progress = _Progress(self.ctx.monitor.progress)

        def on_line(line: str) -> None:
            lines.append(line)
            progress.line(line)

        try:
            proc.run(self._dnf_argv(rootfs, dirs), log=self.ctx.log, env=self._env(dirs),
                     on_line=on_line, timeout=DNF_TIMEOUT, what="dnf")
        except ToolError as e:
            raise self._explain(e, lines, repos) from e
        progress.done()

        installed = self._verify_rpmdb(rootfs)
        _settle_rpmdb(rootfs / RPMDB_PATH)
        self._remove_compose_leftovers(rootfs)
        _link_var_lib_rpm(rootfs)
        self.ctx.log.write(f"composed {len(installed)} packages into {rootfs}")

    def _explain(self, error: ToolError, lines: list[str], repos: list[_Repo]) -> ComposeError:
        """A ComposeError that names what dnf could not do, from dnf's own messages."""
        output = "\n".join(lines) or error.output
        names = ", ".join(r.name for r in repos)
        where = self.recipe.file
        if "no space left on device" in output.lower():
            return ComposeError(f"the disk is full: dnf could not write the root filesystem "
                                f"({self.ctx.workdir})", where=where,
                                hint="free space under ALICORN_HOME and build again")
        missing = list(dict.fromkeys(_NO_MATCH.findall(output)))
        if missing:
            quoted = ", ".join(f"'{m}'" for m in missing)
            subject = f"package {quoted} is" if len(missing) == 1 else f"packages {quoted} are"
            return ComposeError(
                f"{subject} not in any of the recipe's repositories ({names})", where=where,
                hint="check the spelling in packages:, or add the repository that has it")
        failed = _REPO_FAILED.search(output) or _REPO_ERRORS.search(output)
        if failed:
            name = failed.group(1)
            url = next((r.baseurl for r in repos if r.name == name), "?")
            reason = _repo_reason(output)
            return ComposeError(f"repository '{name}' ({url}) is not reachable: {reason}",
                                where=where, hint=_UNREACHABLE_HINT)
        problems = [ln.strip()[2:] for ln in output.splitlines() if ln.strip().startswith("- ")]
        if "Problem" in output and problems:
            return ComposeError(
                "the recipe's packages cannot be installed together: " + "; ".join(problems),
                where=where)
        gpg = [ln.strip() for ln in output.splitlines()
               if "GPG" in ln or "Public key for" in ln or "signature" in ln.lower()]
        if gpg:
            return ComposeError(f"package signature check failed: {gpg[-1]}", where=where,
                                hint="check the repository's gpgkey in the recipe")
        return ComposeError(f"dnf could not compose the root: {error.message}", where=where,
                            hint=error.hint)

    def _verify_rpmdb(self, rootfs: Path) -> list[str]:
        """The installed packages as rpm itself reads them from Fedora's database path."""
        if (rootfs / "root/.rpmdb").exists():
            raise ComposeError(
                f"the rpm database was written to {rootfs}/root/.rpmdb instead of "
                f"/{RPMDB_PATH}: rpm did not read the macro that moves it",
                where=self.recipe.file)
        result = proc.run(["rpm", "--root", str(rootfs), "--dbpath", f"/{RPMDB_PATH}", "-qa",
                           "--qf", "%{NAME}\\n"], log=self.ctx.log, what="rpm -qa")
        names = [n for n in result.stdout.split() if n]
        if not names:
            raise ComposeError(f"dnf finished but the rpm database in {rootfs}/{RPMDB_PATH} "
                               "lists no packages", where=self.recipe.file)
        return names

    def _remove_compose_leftovers(self, rootfs: Path) -> None:
        shipped = _shipped_paths(rootfs, self.ctx.workdir,
                                 [f"/{p}" for p in _COMPOSE_LEFTOVERS])
        for rel in _COMPOSE_LEFTOVERS:
            path = rootfs / rel
            if f"/{rel}" in shipped or not (path.exists() or path.is_symlink()):
                continue
            if path.is_dir() and not path.is_symlink():
                # A package ships something below it: leave the directory alone.
                if any(f.startswith(f"/{rel}/") for f in shipped):
                    continue
                shutil.rmtree(path)
            else:
                path.unlink()
            self.ctx.log.write(f"removed /{rel} from the root: compose state, not content")

    # -- reading the result -------------------------------------------------------------------

    def packages(self, rootfs: Path) -> list[Package]:
        with _rpmdb(rootfs, self.ctx.workdir) as (rpm, ts):
            headers = [_header_fields(rpm, h) for h in ts.dbMatch()]
        os_id = _os_release_id(rootfs)
        wanted = {(h["name"], str(h["epoch"] or 0), h["version"], h["release"], h["arch"])
                  for h in headers}
        sums = _repo_checksums(self.ctx.cache_dir, wanted)
        out = []
        for h in headers:
            if h["name"] == "gpg-pubkey":
                continue
            evr = f"{h['version']}-{h['release']}"
            epoch = h["epoch"]
            version = f"{epoch}:{evr}" if epoch is not None else evr
            namespace = _namespace(h["vendor"])
            distro = f"{os_id or namespace}-{self.recipe.release}"
            qualifiers = {"arch": h["arch"], "distro": distro}
            if epoch is not None:
                qualifiers["epoch"] = str(epoch)
            out.append(Package(
                type="rpm", name=h["name"], version=version, arch=h["arch"],
                source=h["sourcerpm"],
                checksum=sums.get((h["name"], str(h["epoch"] or 0), h["version"],
                                   h["release"], h["arch"])),
                purl=_purl(namespace, h["name"], evr, qualifiers),
            ))
        return sorted(out)


# -- helpers ------------------------------------------------------------------------------------

def _escape_installroot(root: Path, target: Path) -> str:
    """A path that dnf turns into ``target`` after prefixing it with the installroot.

    Enough ".." to climb from ``root`` to / (more are harmless: /.. is /), then the absolute
    target.  ``root`` is resolved so its depth is its real depth.
    """
    return "/" + "../" * len(root.parts) + str(target.resolve()).lstrip("/")


def _repo_reason(output: str) -> str:
    """The most specific reason dnf gave for not reaching a repository."""
    for line in output.splitlines():
        m = _CURL_ERROR.search(line)
        if m and "repomd.xml" in line:
            return m.group(1).strip()
    failed = _REPO_FAILED.search(output)
    if failed and failed.group(2):
        return failed.group(2).strip()
    return "dnf could not download its metadata"


class _Progress:
    """Turns dnf's transaction lines into monitor progress (thread safe: two readers call it)."""

    def __init__(self, report: Callable[[int, int | None, str | None], None]):
        self._report = report
        self._lock = threading.Lock()
        self._total: int | None = None

    def line(self, line: str) -> None:
        m = _INSTALLING.match(line)
        if m:
            done, total = int(m.group(3)), int(m.group(4))
            with self._lock:
                self._total = total
            self._report(done, total, f"{m.group(1).lower()} {m.group(2)}")
            return
        m = _DOWNLOADING.match(line)
        if m:
            self._report(0, None, f"downloading {m.group(3)} ({m.group(1)}/{m.group(2)})")

    def done(self) -> None:
        with self._lock:
            total = self._total
        if total:
            self._report(total, total, None)


def _settle_rpmdb(dbdir: Path) -> None:
    """Leave the rpm database as one self-contained, deterministic file.

    rpm keeps its sqlite database in WAL mode.  After dnf the directory also holds
    rpmdb.sqlite-wal (not always empty) and rpmdb.sqlite-shm, a shared-memory index whose
    bytes are not a function of the database's content.  Checkpointing moves every committed
    page into rpmdb.sqlite; the two side files are then redundant (sqlite recreates them on the
    next open) and are removed.  The main file's content is a function of the transaction
    (same packages, same order, same SOURCE_DATE_EPOCH-based install times).
    """
    db = dbdir / "rpmdb.sqlite"
    if not db.exists():
        return
    wal = dbdir / "rpmdb.sqlite-wal"
    if wal.exists() and wal.stat().st_size > 0:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
    for side in ("rpmdb.sqlite-wal", "rpmdb.sqlite-shm"):
        (dbdir / side).unlink(missing_ok=True)


def _link_var_lib_rpm(rootfs: Path) -> None:
    var_lib_rpm = rootfs / "var/lib/rpm"
    if var_lib_rpm.exists() or var_lib_rpm.is_symlink():
        return  # a package made it (Fedora's rpm ships this very symlink)
    var_lib_rpm.parent.mkdir(parents=True, exist_ok=True)
    var_lib_rpm.symlink_to(VAR_LIB_RPM_TARGET)


@contextmanager
def _rpmdb(rootfs: Path, scratch: Path) -> Iterator[tuple[Any, Any]]:
    """The rpm module and a TransactionSet on a copy of ``rootfs``'s rpm database.

    Opening the database, even read-only, makes sqlite create -shm and -wal files next to it;
    reading a copy leaves the composed root exactly as compose() settled it.  The database path
    is set with addMacro for the duration only (rpm's macros are process-global) and restored.
    """
    import rpm  # the host's rpm bindings (python3-rpm); imported late: only RPM builds need it

    src = rootfs / RPMDB_PATH
    if not (src / "rpmdb.sqlite").exists():
        raise ComposeError(f"no rpm database in {rootfs} (looked in /{RPMDB_PATH})")
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rpmdb-", dir=scratch) as tmp:
        copy = Path(tmp) / RPMDB_PATH
        copy.mkdir(parents=True)
        for f in src.iterdir():
            if f.name.startswith("rpmdb.sqlite"):
                shutil.copy2(f, copy / f.name)
        with _RPM_LOCK:
            rpm.addMacro("_dbpath", f"/{RPMDB_PATH}")
            try:
                ts = rpm.TransactionSet(tmp)
                try:
                    yield rpm, ts
                finally:
                    ts.closeDB()
            except rpm.error as e:
                raise ComposeError(f"cannot read the rpm database in {rootfs}: {e}") from e
            finally:
                rpm.delMacro("_dbpath")


def _header_fields(rpm: Any, h: Any) -> dict[str, Any]:
    def text(tag: int) -> str | None:
        v = h[tag]
        if v is None:
            return None
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    return {
        "name": text(rpm.RPMTAG_NAME),
        "epoch": h[rpm.RPMTAG_EPOCH],
        "version": text(rpm.RPMTAG_VERSION),
        "release": text(rpm.RPMTAG_RELEASE),
        "arch": text(rpm.RPMTAG_ARCH) or "noarch",
        "sourcerpm": text(rpm.RPMTAG_SOURCERPM),
        "vendor": text(rpm.RPMTAG_VENDOR),
    }


def _shipped_paths(rootfs: Path, scratch: Path, paths: list[str]) -> set[str]:
    """Which of ``paths`` (and files below them) a package in ``rootfs`` ships, ghosts aside."""
    shipped: set[str] = set()
    with _rpmdb(rootfs, scratch) as (rpm, ts):
        for h in ts.dbMatch():
            names = h[rpm.RPMTAG_FILENAMES] or []
            flags = h[rpm.RPMTAG_FILEFLAGS] or [0] * len(names)
            for f, flag in zip(names, flags, strict=False):
                if flag & rpm.RPMFILE_GHOST:
                    continue
                name = f.decode("utf-8", "replace") if isinstance(f, bytes) else f
                if any(name == p or name.startswith(p + "/") for p in paths):
                    shipped.add(name)
    return shipped


def _os_release_id(rootfs: Path) -> str | None:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = rootfs / rel
        if path.is_file() and not path.is_symlink():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("ID="):
                    return line[3:].strip().strip("\"'") or None
    return None


def _namespace(vendor: str | None) -> str:
    if vendor:
        low = vendor.lower()
        for key, namespace in _VENDOR_NAMESPACE:
            if key in low:
                return namespace
    return _DEFAULT_NAMESPACE


def _purl(namespace: str, name: str, version: str, qualifiers: dict[str, str]) -> str:
    """A package URL for an rpm (purl-spec: the version is version-release, the epoch a
    qualifier; qualifiers sorted by key, values percent-encoded)."""
    def enc(s: str, safe: str = "") -> str:
        return urllib.parse.quote(s, safe=safe)

    quals = "&".join(f"{k}={enc(v, safe='')}" for k, v in sorted(qualifiers.items()) if v)
    purl = f"pkg:rpm/{enc(namespace)}/{enc(name)}@{enc(version, safe='')}"
    return f"{purl}?{quals}" if quals else purl


_NS_REPO = "{http://linux.duke.edu/metadata/repo}"
_NS_COMMON = "{http://linux.duke.edu/metadata/common}"
NEVRA = tuple[str, str, str, str, str]


def _repo_checksums(cache_dir: Path, wanted: set[NEVRA]) -> dict[NEVRA, str]:
    """``sha256:<hex>`` of each wanted package file, as the repositories' primary metadata that
    dnf used (in its cache, current per repomd.xml) states it; the repomd.xml digests are the
    build's recorded inputs, so these checksums are tied to them."""
    found: dict[NEVRA, str] = {}
    for repomd in sorted(cache_dir.glob("*/repodata/repomd.xml")):
        try:
            root = ET.parse(repomd).getroot()
        except (OSError, ET.ParseError):
            continue
        for data in root.iter(f"{_NS_REPO}data"):
            location = data.find(f"{_NS_REPO}location")
            if data.get("type") != "primary" or location is None:
                continue
            primary = repomd.parent.parent / str(location.get("href"))
            try:
                _read_primary(primary, wanted, found)
            except (OSError, ET.ParseError, EOFError, gzip.BadGzipFile):
                continue
    return found


def _read_primary(path: Path, wanted: set[NEVRA], found: dict[NEVRA, str]) -> None:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for _event, elem in ET.iterparse(f):
            if elem.tag != f"{_NS_COMMON}package":
                continue
            version = elem.find(f"{_NS_COMMON}version")
            checksum = elem.find(f"{_NS_COMMON}checksum")
            if version is not None and checksum is not None and \
                    checksum.get("type") == "sha256" and checksum.text:
                key = (elem.findtext(f"{_NS_COMMON}name", ""), version.get("epoch", "0"),
                       version.get("ver", ""), version.get("rel", ""),
                       elem.findtext(f"{_NS_COMMON}arch", ""))
                if key in wanted:
                    found[key] = "sha256:" + checksum.text.strip()
            elem.clear()
