"""A recipe's file with a setuid or setgid mode keeps it (chown(2) clears those bits)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alicorn.build.files import add_files
from alicorn.recipe import parse_recipe

BASE = """\
recipe: 1
name: t
distribution: {type: debian, release: bookworm}
repositories: [{name: b, suite: bookworm}]
packages: [python3]
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="setting an owner needs root")
def test_setuid_and_setgid_modes_survive_the_owner(tmp_path: Path) -> None:
    rootfs = tmp_path / "root"
    rootfs.mkdir()
    r = parse_recipe(BASE + "files:\n"
                     "  - {path: /usr/local/bin/helper, content: x, mode: '4755'}\n"
                     "  - {path: /usr/local/bin/group, content: x, mode: '2755', owner: '0:5'}\n"
                     "  - {path: /srv/shared, directory: true, mode: '2775', owner: '0:5'}\n",
                     file=str(tmp_path / "r.yaml"), base_dir=tmp_path)
    add_files(r, rootfs)
    assert os.stat(rootfs / "usr/local/bin/helper").st_mode & 0o7777 == 0o4755
    group = os.stat(rootfs / "usr/local/bin/group")
    assert (group.st_mode & 0o7777, group.st_gid) == (0o2755, 5)
    assert os.stat(rootfs / "srv/shared").st_mode & 0o7777 == 0o2775
