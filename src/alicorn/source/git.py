"""Recipes from git: clone, resolve the ref to a commit, check it out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alicorn.errors import SourceError, ToolError
from alicorn.proc import BuildLog, run, which


@dataclass(frozen=True)
class Checkout:
    url: str
    ref: str
    commit: str
    commit_time: int       # committer time, seconds since the epoch
    path: Path             # the work tree


def fetch(url: str, ref: str, dest: Path, *, log: BuildLog | None = None) -> Checkout:
    """Fetch ``ref`` (a branch, tag or commit) of ``url`` into the new directory ``dest``."""
    git = which("git")
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "LC_ALL": "C"}
    dest.mkdir(parents=True)
    try:
        run([git, "init", "-q", str(dest)], log=log, env=env, what="git init")
        run([git, "-C", str(dest), "remote", "add", "origin", url], log=log, env=env,
            what="git remote")
    except ToolError as e:
        raise SourceError(f"cannot prepare a checkout of {url}: {e.message}") from e
    try:
        run([git, "-C", str(dest), "fetch", "-q", "--depth=1", "origin", ref], log=log, env=env,
            what="git fetch", timeout=600)
    except ToolError as e:
        out = e.output.lower()
        if "couldn't find remote ref" in out or "not our ref" in out or \
                "unadvertised object" in out or "invalid refspec" in out:
            raise SourceError(f"ref {ref!r} does not exist in {url}",
                              hint="check the --ref (branch, tag or full commit id)") from e
        if "does not appear to be a git repository" in out or "not found" in out or \
                "could not read from remote" in out or "unable to access" in out:
            raise SourceError(f"{url} is not a reachable git repository",
                              hint="check the URL and that the repository exists") from e
        raise SourceError(f"cannot fetch {ref!r} from {url}: {e.message}") from e
    try:
        run([git, "-C", str(dest), "checkout", "-q", "--detach", "FETCH_HEAD"], log=log,
            env=env, what="git checkout")
        shown = run([git, "-C", str(dest), "show", "-s", "--format=%H %ct", "HEAD"], log=log,
                    env=env, what="git show").stdout.split()
    except ToolError as e:
        raise SourceError(f"cannot check out {ref!r} of {url}: {e.message}") from e
    return Checkout(url=url, ref=ref, commit=shown[0], commit_time=int(shown[1]), path=dest)
