"""Debian root filesystems with mmdebstrap.

Package downloads are cached across builds (mmdebstrap's documented sync-in/sync-out hooks), so
that a rebuild after a security update fetches only what changed; the cache never reaches the
image because mmdebstrap's own clean-up empties /var/cache/apt/archives afterwards.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import quote

from debian.deb822 import Deb822

from alicorn.compose.fetch import absolute_url, fetch_bytes
from alicorn.compose.interface import Composer, Package, RepoState
from alicorn.errors import ComposeError, ToolError
from alicorn.proc import run, which
from alicorn.recipe import Repository

APT_SOURCES = Path("/etc/apt")
DEBIAN_VERSIONS = {"bookworm": "12", "trixie": "13", "bullseye": "11", "forky": "14"}


def host_mirror(suite: str, apt_dir: Path = APT_SOURCES) -> str:
    """The host's configured mirror URI for ``suite`` (from sources.list and .sources files)."""
    entries: list[tuple[list[str], list[str]]] = []
    for f in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for para in Deb822.iter_paragraphs(f.read_text()):
            if "deb" in para.get("Types", "").split() and para.get("Enabled", "yes") != "no":
                entries.append((para.get("URIs", "").split(), para.get("Suites", "").split()))
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            # "deb [options] uri suite components"; the options are of no use here.
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append(([words[1]], [words[2]]))
    for uris, suites in entries:
        if suite in suites and uris:
            return uris[0].rstrip("/")
    raise ComposeError(
        f"no mirror for suite {suite!r} in the host's apt sources",
        hint="give the repository a url in the recipe (e.g. the Debian or Debian security "
             "archive's base URL)")


class DebianComposer(Composer):
    kind = "debian"

    def _url(self, repo: Repository) -> str:
        assert repo.suite is not None
        if repo.url is None:
            return host_mirror(repo.suite)
        return absolute_url(repo.url, self.recipe.base_dir).rstrip("/")

    def repo_states(self) -> list[RepoState]:
        states = []
        for repo in self.recipe.repositories:
            url = self._url(repo)
            data = fetch_bytes(f"{url}/dists/{repo.suite}/InRelease",
                               what=f"repository {repo.name!r} (suite {repo.suite})")
            states.append(RepoState(name=repo.name, url=url,
                                    metadata_digest="sha256:" + hashlib.sha256(data).hexdigest()))
        return states

    def _sources(self) -> list[str]:
        out = []
        for repo in self.recipe.repositories:
            opts = "" if repo.gpgcheck else "[trusted=yes] "
            out.append(f"deb {opts}{self._url(repo)} {repo.suite} {' '.join(repo.components)}")
        return out

    def _argv(self, rootfs: Path, *, cache: Path | None) -> list[str]:
        r = self.recipe
        assert r.repositories[0].suite is not None
        argv = [which("mmdebstrap"), "--mode=root", "--format=directory",
                f"--variant={r.variant or 'essential'}", f"--architectures={r.architecture}",
                "--include=" + ",".join(r.packages)]
        if r.exclude_docs:
            for path in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*"):
                argv.append(f"--dpkgopt=path-exclude={path}")
            argv.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        if cache is not None:
            argv += [
                "--skip=download/empty", "--skip=essential/unlink",
                f"--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/ {cache}",
                f"--setup-hook=sync-in {cache} /var/cache/apt/archives/",
                f"--customize-hook=sync-out /var/cache/apt/archives {cache}",
            ]
        return [*argv, r.repositories[0].suite, str(rootfs), *self._sources()]

    def floor_argv(self, rootfs: Path) -> list[str]:
        return self._argv(rootfs, cache=self.ctx.cache_dir)

    def compose(self, rootfs: Path) -> None:
        if rootfs.is_dir() and any(rootfs.iterdir()):
            # A layered recipe's root holds its base; the loader refuses Debian packages on a
            # base (mmdebstrap composes only into an empty directory).
            raise ComposeError("a layered Debian recipe cannot add packages yet",
                               where=self.recipe.file)
        argv = self._argv(rootfs, cache=self.ctx.cache_dir)
        self.ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        steps = {"I: running apt-get update...": 1, "I: downloading packages with apt...": 2,
                 "I: extracting archives...": 3, "I: installing essential packages...": 4,
                 "I: installing remaining packages inside the chroot...": 5,
                 "I: cleaning package lists and apt cache...": 6}

        def on_line(line: str) -> None:
            if line in steps:
                self.ctx.monitor.progress(steps[line], 7, line[3:].rstrip("."))

        env = {"SOURCE_DATE_EPOCH": str(self.ctx.source_date_epoch), "LC_ALL": "C.UTF-8"}
        try:
            run(argv, log=self.ctx.log, env=env, on_line=on_line, what="mmdebstrap")
        except ToolError as e:
            raise self._explain(e) from e

    def _explain(self, e: ToolError) -> ComposeError:
        out = e.output
        if "no space left on device" in out.lower():
            return ComposeError("the disk is full: mmdebstrap could not write the root "
                                f"filesystem ({self.ctx.workdir})",
                                hint="free space under ALICORN_HOME and build again")
        m = re.search(r"E: Unable to locate package (\S+)", out) or \
            re.search(r"E: Package '([^']+)' has no installation candidate", out)
        repos = ", ".join(r.name for r in self.recipe.repositories)
        if m:
            return ComposeError(f"package {m.group(1)!r} is not in any of the recipe's "
                                f"repositories ({repos})",
                                hint="check the package name and the recipe's repositories")
        m = re.search(r"(?:Failed to fetch|Could not resolve|Unable to connect to) (\S+)", out)
        if m:
            return ComposeError(f"a repository is not reachable: {m.group(0)}",
                                hint="check the recipe's repository URLs and the network")
        return ComposeError(e.message, hint=e.hint)

    def packages(self, rootfs: Path) -> list[Package]:
        status = rootfs / "var/lib/dpkg/status"
        if not status.is_file():
            raise ComposeError(f"{status} is missing: the root filesystem has no dpkg database")
        version_id = DEBIAN_VERSIONS.get(self.recipe.release, self.recipe.release)
        out = []
        for para in Deb822.iter_paragraphs(status.read_text(encoding="utf-8", errors="replace")):
            if "installed" not in para.get("Status", "").split():
                continue
            name, version, arch = para["Package"], para["Version"], para.get("Architecture", "")
            source = para.get("Source", name).split(" ")[0]
            deb = self.ctx.cache_dir / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
            checksum = None
            if deb.is_file():
                checksum = "sha256:" + hashlib.sha256(deb.read_bytes()).hexdigest()
            purl = (f"pkg:deb/debian/{quote(name)}@{quote(version, safe='')}"
                    f"?arch={arch}&distro=debian-{version_id}")
            out.append(Package(type="deb", name=name, version=version, arch=arch, source=source,
                               checksum=checksum, purl=purl))
        return sorted(out)
