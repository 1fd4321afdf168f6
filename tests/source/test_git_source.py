"""Recipes from git: refs resolve to commits; bad refs and URLs are named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from alicorn.errors import SourceError
from alicorn.source.git import fetch
from conftest import git_repo, require


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    require("git")
    src = tmp_path / "src"
    src.mkdir()
    (src / "pony.yaml").write_text("recipe: 1\n")
    path = tmp_path / "repo"
    return path, git_repo(src, path)


def test_branch_tag_and_commit_resolve(repo: tuple[Path, str], tmp_path: Path) -> None:
    path, commit = repo
    subprocess.run(["git", "-C", str(path), "tag", "v1"], check=True)
    for i, ref in enumerate(("main", "v1", commit)):
        co = fetch(f"file://{path}", ref, tmp_path / f"co{i}")
        assert co.commit == commit
        assert (co.path / "pony.yaml").read_text() == "recipe: 1\n"
        assert co.commit_time == 1767225600  # 2026-01-01T00:00:00Z


def test_unknown_ref_is_named(repo: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = repo
    with pytest.raises(SourceError, match="ref 'nope' does not exist in"):
        fetch(f"file://{path}", "nope", tmp_path / "co")


def test_unreachable_repository_is_named(tmp_path: Path) -> None:
    require("git")
    with pytest.raises(SourceError, match="is not a reachable git repository"):
        fetch(f"file://{tmp_path}/missing", "main", tmp_path / "co")
