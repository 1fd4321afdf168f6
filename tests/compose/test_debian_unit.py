"""Debian composer pieces that need no network: mirrors from apt sources, error wording."""

from __future__ import annotations

from pathlib import Path

import pytest

from alicorn.compose import BuildContext
from alicorn.compose.debian import DebianComposer, host_mirror
from alicorn.errors import ComposeError, ToolError
from alicorn.monitor import Monitor
from alicorn.proc import BuildLog
from alicorn.recipe import parse_recipe


def test_host_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb-src\nURIs: http://src.example/debian\n"
        "Suites: trixie\nComponents: main\n")
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [signed-by=/k.gpg] http://sec.example/debian-security "
        "bookworm-security main\n")
    assert host_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    assert host_mirror("bookworm-security", tmp_path) == "http://sec.example/debian-security"
    with pytest.raises(ComposeError, match="no mirror for suite 'trixie'"):
        host_mirror("trixie", tmp_path)


def _composer(tmp_path: Path) -> DebianComposer:
    r = parse_recipe("recipe: 1\nname: t\ndistribution: {type: debian, release: bookworm}\n"
                     "repositories: [{name: main, suite: bookworm, url: http://m.example/d}]\n"
                     "packages: [nginx]\n", file="t.yaml", base_dir=tmp_path)
    ctx = BuildContext(log=BuildLog(tmp_path / "log"), monitor=Monitor(), workdir=tmp_path,
                       cache_dir=tmp_path / "cache", source_date_epoch=0)
    return DebianComposer(r, ctx)


@pytest.mark.parametrize(("output", "expected"), [
    ("E: Unable to locate package nginx-lite", "package 'nginx-lite' is not in any"),
    ("E: Package 'foo' has no installation candidate", "package 'foo' is not in any"),
    ("E: Failed to fetch http://m.example/d/dists/bookworm/InRelease  Could not connect",
     "a repository is not reachable: Failed to fetch http://m.example/d"),
    ("Write error - write (28: No space left on device)", "the disk is full"),
])
def test_mmdebstrap_failures_are_explained(tmp_path: Path, output: str, expected: str) -> None:
    error = _composer(tmp_path)._explain(ToolError("mmdebstrap failed", output=output))
    assert expected in error.message


def test_argv_lists_every_suite_and_the_cache(tmp_path: Path) -> None:
    argv = _composer(tmp_path).floor_argv(tmp_path / "root")
    assert "--include=nginx" in argv and "--variant=essential" in argv
    assert argv[-1] == "deb http://m.example/d bookworm main"
    assert any(a.startswith("--customize-hook=sync-out /var/cache/apt/archives") for a in argv)
