"""What the gate's checks see and what they answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alicorn.compose.interface import Package
from alicorn.proc import BuildLog
from alicorn.recipe import Recipe


@dataclass(frozen=True)
class GateContext:
    """The candidate image, and what it is compared with.

    ``layout`` is the candidate's OCI image layout (every layer, a layered image's base
    layers too); ``config`` its OCI image config document; ``packages`` its resolved package
    set.  ``previous_*`` describe the published image it replaces (None for a first build).
    ``database_url`` holds the imported advisories.  Checks write their reports (ARF, HTML)
    into ``out_dir`` and name them in their result's ``files``.
    """

    layout: Path
    digest: str
    config: dict[str, Any]
    recipe: Recipe
    packages: tuple[Package, ...]
    database_url: str
    out_dir: Path
    log: BuildLog
    previous_digest: str | None = None
    previous_packages: tuple[Package, ...] | None = None


@dataclass(frozen=True)
class CheckResult:
    """One check's answer.  ``passed`` is False when it found a problem *or* could not
    decide (a vacuous OpenSCAP run, an unreadable layer): a gate never passes on a guess.
    ``detail`` says why in one line; ``problems`` lists what was found (paths, findings,
    rule ids), capped; ``files`` maps report names to paths inside ``out_dir``."""

    name: str
    passed: bool
    detail: str
    problems: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateResult:
    """The whole gate: its composition evaluated.  ``checks`` lists every leaf result in
    the order run; ``passed`` follows the all-of / any-of tree; ``summary`` is one line."""

    passed: bool
    summary: str
    checks: tuple[CheckResult, ...]
    tree: dict[str, Any]          # the gate as evaluated: {"all-of": [...]} with results

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "summary": self.summary, "tree": self.tree,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail,
                        "problems": list(c.problems), "files": dict(c.files),
                        "seconds": c.seconds, **({"data": c.data} if c.data else {})}
                       for c in self.checks],
        }
