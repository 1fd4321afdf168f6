"""A recipe's bad gate: the error names the check or option at fault and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from alicorn.errors import RecipeError
from alicorn.recipe import parse_recipe

BASE = """\
recipe: 1
name: web-rpm
distribution:
  type: rpm
  release: "40"
  architecture: x86_64
repositories:
  - name: local
    url: repo
packages:
  - busybox
"""


def _error(tmp_path: Path, extra: str) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(BASE + extra, file=str(tmp_path / "r.yaml"), base_dir=tmp_path)
    return str(info.value)


@pytest.mark.parametrize(("gate", "line", "expected"), [
    ("gate:\n  - no-new-findings\n  - no-such-check\n", 14,
     "gate[1]: 'no-such-check' is not one of"),
    ("gate:\n  - any-of: []\n", 13, "gate[0].any-of: [] should be non-empty"),
    ("gate: []\n", 12, "gate: [] should be non-empty"),
    ("gate:\n  - no-setuid:\n      allow: 5\n", 14,
     "gate[0].no-setuid.allow: must be of type array"),
    ("gate:\n  - openscap:\n      profil: standard\n", 14,
     "gate[0].openscap.profil: unknown field"),
    ("gate:\n  any-of:\n    - all-of: [no-setuid, {any-of: [bogus]}]\n", 14,
     "gate.any-of[0].all-of[1].any-of[0]: 'bogus' is not one of"),
])
def test_a_bad_gate_names_what_is_wrong(tmp_path: Path, gate: str, line: int,
                                        expected: str) -> None:
    message = _error(tmp_path, gate)
    assert f"r.yaml:{line}:" in message
    assert expected in message


def test_a_misspelt_base_key_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, "base: {imag: pony-rpm}\n")
    assert "base.imag: unknown field (allowed here: digest, image)" in message


def test_a_mapping_that_is_no_check_lists_every_check(tmp_path: Path) -> None:
    message = _error(tmp_path, "gate:\n  - {}\n")
    assert "needs exactly one of:" in message
    assert "non-root" in message and "healthcheck" in message
