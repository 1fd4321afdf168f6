"""The one module that runs external commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from alicorn.errors import ToolError, ToolMissing
from alicorn.proc import BuildLog, run, which


def test_output_goes_to_the_log_with_the_argv(tmp_path: Path) -> None:
    with BuildLog(tmp_path / "log") as log:
        result = run(["sh", "-c", "echo out; echo err >&2"], log=log, what="demo")
    assert result.stdout == "out\n" and result.stderr == "err\n"
    text = (tmp_path / "log").read_text()
    assert "$ sh -c 'echo out; echo err >&2'" in text
    assert "[demo:out] out" in text and "[demo:err] err" in text and "exit status 0" in text


def test_failure_names_the_step_and_the_telling_line(tmp_path: Path) -> None:
    with pytest.raises(ToolError) as e:
        run(["sh", "-c", "echo fine; echo 'E: Unable to locate package x' >&2; exit 3"],
            what="mmdebstrap")
    assert e.value.returncode == 3
    assert "mmdebstrap failed (exit status 3): E: Unable to locate package x" in str(e.value)
    assert e.value.argv[0] == "sh"


def test_disk_full_gets_a_hint() -> None:
    with pytest.raises(ToolError) as e:
        run(["sh", "-c", "echo 'write (28: No space left on device)' >&2; exit 1"])
    assert e.value.hint is not None and "disk is full" in e.value.hint


def test_missing_tool() -> None:
    with pytest.raises(ToolMissing, match="no-such-tool-xyz is not installed"):
        run(["no-such-tool-xyz"])
    with pytest.raises(ToolMissing, match="install the Debian package pkg-x"):
        which("no-such-tool-xyz", package="pkg-x")


def test_timeout_kills_the_command() -> None:
    with pytest.raises(ToolError, match="did not finish within 1 s"):
        run(["sleep", "30"], timeout=1)


def test_on_line_sees_each_line_and_input_is_passed() -> None:
    seen: list[str] = []
    run(["cat"], input=b"a\nb\n", on_line=seen.append)
    assert sorted(seen) == ["a", "b"]
