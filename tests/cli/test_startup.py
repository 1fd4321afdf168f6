"""The command line starts without the database layer: scan and advisories stay quick."""

from __future__ import annotations

import subprocess
import sys

from alicorn.cli import main
from alicorn.store import builds


def test_done_is_the_store_state() -> None:
    assert main.DONE == builds.DONE


def test_importing_the_cli_loads_no_sqlalchemy_and_no_report_libraries() -> None:
    code = ("import sys, alicorn.cli.main; "
            "print(sorted(m for m in ('sqlalchemy', 'alembic', 'cyclonedx', 'rpm') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
