"""Evaluating a gate: every check of the tree against the candidate image.

:func:`run_gate` is what the build pipeline calls after the image is built and before it is
published.  A check that cannot decide (an unreadable layer, oscap failing) fails with the
reason; only a malformed ``gate:`` raises (a :class:`~alicorn.errors.RecipeError`, which
:func:`~alicorn.gate.spec.parse_gate` would have raised when the recipe was read).

Every check runs (an all-of goes on after a failure, so the record names every problem), except
that an any-of stops at its first passing item; the items it did not run show as skipped in
the tree.  The result is also written to ``ctx.out_dir/gate.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from alicorn.errors import Error
from alicorn.fs import replace_file
from alicorn.gate import checks, openscap
from alicorn.gate.model import CheckResult, GateContext, GateResult
from alicorn.gate.spec import AllOf, AnyOf, Check, Gate, default_gate, parse_gate

__all__ = ["GATE_JSON", "evaluate", "run_gate"]

#: The file in ``out_dir`` that holds :meth:`GateResult.to_json`.
GATE_JSON = "gate.json"

_Runner = Callable[[GateContext, Check, checks.Session], CheckResult]

_RUNNERS: dict[str, _Runner] = {
    "no-new-findings": checks.no_new_findings,
    "no-setuid": checks.no_setuid,
    "no-world-writable": checks.no_world_writable,
    "no-secrets": checks.no_secrets,
    "non-root": checks.non_root,
    "healthcheck": checks.healthcheck,
    "openscap": openscap.check,
}


def run_gate(ctx: GateContext) -> GateResult:
    """Evaluate the recipe's gate (``ctx.recipe.gate``; a recipe without one gets
    :func:`~alicorn.gate.spec.default_gate`) against the candidate in ``ctx``.

    Report files (OpenSCAP's ARF and HTML, ``gate.json``) go into ``ctx.out_dir``; each
    :class:`CheckResult`'s ``files`` names its own, relative to ``out_dir``.
    """
    raw = ctx.recipe.gate
    gate = default_gate() if raw is None else parse_gate(
        raw, file=ctx.recipe.file, base_dir=ctx.recipe.base_dir)
    return evaluate(gate, ctx)


def evaluate(gate: Gate, ctx: GateContext) -> GateResult:
    """Evaluate an already parsed ``gate`` (see :func:`run_gate`)."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    session = checks.Session()
    results: list[CheckResult] = []
    ctx.log.write("gate: evaluating " + describe(gate))
    passed, tree = _node(gate, ctx, session, results)
    summary = _summary(passed, tree, results)
    ctx.log.write(f"gate: {summary}")
    result = GateResult(passed=passed, summary=summary, checks=tuple(results), tree=tree)
    data = json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"
    replace_file(ctx.out_dir / GATE_JSON, data, mode=0o644)
    return result


def describe(gate: Gate) -> str:
    """The gate in one line: ``all-of(no-new-findings, any-of(openscap, healthcheck))``."""
    if isinstance(gate, Check):
        return gate.name
    kind = "all-of" if isinstance(gate, AllOf) else "any-of"
    return f"{kind}({', '.join(describe(g) for g in gate.items)})"


def _node(gate: Gate, ctx: GateContext, session: checks.Session,
          results: list[CheckResult]) -> tuple[bool, dict[str, Any]]:
    if isinstance(gate, Check):
        result = _run_check(gate, ctx, session)
        results.append(result)
        return result.passed, {"check": gate.name, "passed": result.passed,
                               "detail": result.detail}
    kind = "all-of" if isinstance(gate, AllOf) else "any-of"
    children: list[dict[str, Any]] = []
    outcomes: list[bool] = []
    for item in gate.items:
        if isinstance(gate, AnyOf) and any(outcomes):
            children.append(_skipped(item))
            continue
        ok, child = _node(item, ctx, session, results)
        outcomes.append(ok)
        children.append(child)
    passed = all(outcomes) if isinstance(gate, AllOf) else any(outcomes)
    return passed, {kind: children, "passed": passed}


def _skipped(gate: Gate) -> dict[str, Any]:
    if isinstance(gate, Check):
        return {"check": gate.name, "passed": None, "skipped": True,
                "detail": "not run: an earlier item of the any-of passed"}
    kind = "all-of" if isinstance(gate, AllOf) else "any-of"
    return {kind: [_skipped(g) for g in gate.items], "passed": None, "skipped": True}


def _run_check(check: Check, ctx: GateContext, session: checks.Session) -> CheckResult:
    start = time.monotonic()
    ctx.log.write(f"gate: {check.name} ({check.where})")
    try:
        result = _RUNNERS[check.name](ctx, check, session)
    except Error as e:
        # A check that could not look fails: a gate never passes on a guess.
        result = CheckResult(name=check.name, passed=False,
                             detail=f"could not run: {e.diagnostics()}")
    seconds = round(time.monotonic() - start, 3)
    ctx.log.write(f"gate: {check.name}: {'passed' if result.passed else 'FAILED'}: "
                  f"{result.detail} ({seconds:.1f} s)")
    for problem in result.problems:
        ctx.log.write(f"gate: {check.name}:   {problem}")
    return CheckResult(name=result.name, passed=result.passed, detail=result.detail,
                       problems=result.problems, files=result.files, seconds=seconds,
                       data=result.data)


def _summary(passed: bool, tree: dict[str, Any], results: list[CheckResult]) -> str:
    if passed:
        return f"passed: {', '.join(r.name for r in results)}"
    return "failed: " + _why(tree)


def _why(node: dict[str, Any]) -> str:
    """What failed in ``node``, in a few words per failing check."""
    if "check" in node:
        return f"{node['check']} ({node['detail']})"
    if "all-of" in node:
        return "; ".join(_why(c) for c in node["all-of"] if c.get("passed") is False)
    return "none of any-of: " + " | ".join(_why(c) for c in node["any-of"]
                                           if c.get("passed") is False)
