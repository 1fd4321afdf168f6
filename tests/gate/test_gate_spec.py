"""The gate's spec: parsing, errors naming the recipe and field, composition, the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gate_layouts import RECIPE, context, directory, entry, make_layout

from alicorn.errors import RecipeError
from alicorn.gate import run as gate_run
from alicorn.gate.model import CheckResult, GateContext
from alicorn.gate.run import GATE_JSON, describe, evaluate, run_gate
from alicorn.gate.spec import AllOf, AnyOf, Check, default_gate, parse_gate
from alicorn.recipe.loader import parse_recipe


def test_a_list_is_all_of_and_forms_nest(tmp_path: Path) -> None:
    (tmp_path / "t.xml").write_text("<x/>")
    gate = parse_gate(["no-secrets", {"any-of": ["non-root", {"all-of": [
        "healthcheck", {"no-new-findings": {"severity": "Critical"}}]}]},
        {"openscap": {"profile": "ospp", "tailoring": "t.xml", "allow_failed": ["r1"]}}],
        file=str(tmp_path / "r.yaml"))
    assert isinstance(gate, AllOf) and len(gate.items) == 3
    any_of = gate.items[1]
    assert isinstance(any_of, AnyOf)
    inner = any_of.items[1]
    assert isinstance(inner, AllOf)
    nnf = inner.items[1]
    assert isinstance(nnf, Check) and nnf.severity == "critical" and nnf.min_rank == 4
    osc = gate.items[2]
    assert isinstance(osc, Check) and osc.openscap is not None
    assert osc.openscap.tailoring == (tmp_path / "t.xml").resolve()
    assert osc.openscap.profile == "ospp" and osc.openscap.allow_failed == ("r1",)
    assert describe(gate) == ("all-of(no-secrets, any-of(non-root, all-of(healthcheck, "
                              "no-new-findings)), openscap)")
    assert parse_gate("openscap", file="r.yaml") == Check(
        "openscap", where="gate", openscap=parse_gate("openscap", file="r.yaml").openscap)


def test_default_gate_is_cheap() -> None:
    assert describe(default_gate()) == "all-of(no-new-findings, no-world-writable, no-secrets)"


@pytest.mark.parametrize(("raw", "field", "text"), [
    (["no-secret"], "gate[0]", "unknown check 'no-secret'"),
    ([{"no-new-findings": {"severity": "severe"}}], "gate[0].no-new-findings.severity",
     "unknown severity"),
    ([{"openscap": {"tailoring": "missing.xml"}}], "gate[0].openscap.tailoring",
     "'missing.xml' does not exist"),
    ([{"openscap": {"tailoring": "../outside.xml"}}], "gate[0].openscap.tailoring",
     "leaves the recipe's directory"),
    ([{"openscap": {"profiel": "standard"}}], "gate[0].openscap", "unknown option 'profiel'"),
    ([{"openscap": {"required": "no"}}], "gate[0].openscap.required", "true or false"),
    ({"any-of": []}, "gate.any-of", "is empty"),
    ([], "gate", "is empty"),
    ({"all-of": ["no-secrets"], "any-of": ["non-root"]}, "gate", "exactly one key"),
    ([{"no-setuid": {"allow": "/usr/bin/su"}}], "gate[0].no-setuid.allow", "list of"),
    ([{"non-root": {"x": 1}}], "gate[0].non-root", "takes no options"),
    ([3], "gate[0]", "not int"),
])
def test_bad_gates_name_the_recipe_and_field(tmp_path: Path, raw: object, field: str,
                                             text: str) -> None:
    recipe_dir = tmp_path / "recipe"
    recipe_dir.mkdir()
    (tmp_path / "outside.xml").write_text("<x/>")
    with pytest.raises(RecipeError) as e:
        parse_gate(raw, file=str(recipe_dir / "pony.yaml"))
    assert e.value.field == field
    assert text in e.value.message
    assert str(recipe_dir / "pony.yaml") in e.value.diagnostics()


def test_nesting_is_bounded() -> None:
    raw: object = "no-secrets"
    for _ in range(40):
        raw = {"any-of": [raw]}
    with pytest.raises(RecipeError, match="nest more than"):
        parse_gate(raw, file="r.yaml")


def test_a_recipe_with_a_bad_gate_fails_to_run(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "l", [[directory("etc")]])
    text = RECIPE + "gate: [healthcheck, nope]\n"
    with pytest.raises(RecipeError, match="gate"):
        # The loader's schema already refuses it...
        parse_recipe(text, file="r.yaml", base_dir=tmp_path)
    ctx = context(layout, tmp_path)
    # ... and so does run_gate, for a gate that reached it another way.
    object.__setattr__(ctx.recipe, "gate", ["healthcheck", "nope"])
    with pytest.raises(RecipeError, match=r"gate\[1\]: unknown check"):
        run_gate(ctx)


def _fake(results: dict[str, bool], ran: list[str]):  # type: ignore[no-untyped-def]
    def runner(ctx: GateContext, check: Check, session: object) -> CheckResult:
        ran.append(check.where)
        ok = results[check.where]
        return CheckResult(name=check.name, passed=ok, detail="fine" if ok else "broken")
    return runner


def test_composition_tree_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = make_layout(tmp_path / "l", [[directory("etc")]])
    ctx = context(layout, tmp_path)
    # gate[0] passes; any-of: the first item fails, the second passes, the third is skipped;
    # gate[2] (all-of) has one failure.
    outcome = {"gate[0]": True, "gate[1].any-of[0]": False, "gate[1].any-of[1]": True,
               "gate[1].any-of[2]": True, "gate[2].all-of[0]": True,
               "gate[2].all-of[1]": False}
    ran: list[str] = []
    fake = _fake(outcome, ran)
    monkeypatch.setattr(gate_run, "_RUNNERS", {k: fake for k in gate_run._RUNNERS})
    gate = parse_gate(["no-secrets", {"any-of": ["non-root", "healthcheck", "no-setuid"]},
                       {"all-of": ["no-world-writable", "no-new-findings"]}], file="r.yaml")
    result = evaluate(gate, ctx)
    assert not result.passed
    assert ran == ["gate[0]", "gate[1].any-of[0]", "gate[1].any-of[1]", "gate[2].all-of[0]",
                   "gate[2].all-of[1]"]
    assert [c.name for c in result.checks] == ["no-secrets", "non-root", "healthcheck",
                                                "no-world-writable", "no-new-findings"]
    tree = result.tree
    assert tree["passed"] is False
    any_of = tree["all-of"][1]
    assert any_of["passed"] is True
    assert [c["passed"] for c in any_of["any-of"]] == [False, True, None]
    assert any_of["any-of"][2]["skipped"] is True
    assert tree["all-of"][2] == {"all-of": [
        {"check": "no-world-writable", "passed": True, "detail": "fine"},
        {"check": "no-new-findings", "passed": False, "detail": "broken"}], "passed": False}
    # The summary names what failed, not what passed or was outweighed by an any-of.
    assert result.summary == "failed: no-new-findings (broken)"
    saved = json.loads((ctx.out_dir / GATE_JSON).read_text())
    assert saved["passed"] is False and saved["summary"] == result.summary
    assert saved["tree"] == tree

    outcome["gate[1].any-of[1]"] = False
    outcome["gate[1].any-of[2]"] = False
    outcome["gate[2].all-of[1]"] = True
    again = evaluate(gate, ctx)
    assert again.summary == ("failed: none of any-of: non-root (broken) | healthcheck "
                             "(broken) | no-setuid (broken)")


def test_a_check_that_cannot_run_fails(tmp_path: Path) -> None:
    # A layer whose blob does not match its digest: the file checks cannot look, so fail.
    layout = make_layout(tmp_path / "l", [[directory("etc"), entry("etc/x", b"data")]])
    blob = next(p for p in (layout / "blobs" / "sha256").iterdir()
                if p.stat().st_size < 200 and p.read_bytes()[:2] == b"\x1f\x8b")
    data = bytearray(blob.read_bytes())
    data[-9] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = run_gate(context(layout, tmp_path, gate=["no-setuid", "healthcheck"]))
    assert not result.passed
    first = result.checks[0]
    assert first.name == "no-setuid" and not first.passed
    assert first.detail.startswith("could not run:")
    assert "healthcheck" in result.summary and "no-setuid (could not run" in result.summary
