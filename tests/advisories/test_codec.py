"""Advisory <-> JSON: exact round trips, on generated values and on every shared feed file."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alicorn.advisories import codec
from alicorn.advisories.model import Advisory, Affected, PackageRef, Range, Reference
from alicorn.advisories.updateinfo import parse_updateinfo
from conftest import SHARED_DATA


def _strategy(hint: Any) -> st.SearchStrategy[Any]:
    """A strategy for every field of the model, from its type hints: a field added to the
    model later is generated (and so round-tripped) without a change here."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return st.none() | _strategy(inner)
    if hint is str:
        return st.text(max_size=12)
    if hint is datetime:
        return st.datetimes(timezones=st.sampled_from([UTC, None]))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_strategy(args[0]), max_size=3).map(tuple)
        return st.tuples(*(_strategy(a) for a in args))
    assert dataclasses.is_dataclass(hint), hint
    hints = typing.get_type_hints(hint)
    return st.builds(hint, **{f.name: _strategy(hints[f.name])  # type: ignore[arg-type]
                              for f in dataclasses.fields(hint)})


@settings(max_examples=300, deadline=None)
@given(_strategy(Advisory))
def test_generated_advisories_round_trip_exactly(advisory: Advisory) -> None:
    text = codec.dumps(advisory)
    assert text.isascii()  # lone surrogates and all: the database always takes it
    back = codec.loads(text)
    assert back == advisory
    assert [type(getattr(back, f.name)) for f in dataclasses.fields(Advisory)] == \
        [type(getattr(advisory, f.name)) for f in dataclasses.fields(Advisory)]
    assert (back.issued.tzinfo if back.issued else None) == \
        (advisory.issued.tzinfo if advisory.issued else None)
    # Canonical: the same value always gives the same text.
    assert codec.dumps(back) == text


def _shared_advisories() -> list[Advisory]:
    found: list[Advisory] = []
    for path in sorted((SHARED_DATA / "updateinfo").glob("*.xml")):
        found += parse_updateinfo(path.read_bytes(), source=str(path))
    from alicorn.advisories.osv import parse_osv
    for path in sorted((SHARED_DATA / "ghsa").rglob("*.json")):
        found += parse_osv(path.read_bytes(), source=str(path)).advisories
    for path in sorted((SHARED_DATA / "osv" / "pypi").rglob("*.yaml"))[:400]:
        found += parse_osv(path.read_bytes(), source=str(path)).advisories
    from alicorn.advisories.rubysec import parse_rubysec
    for path in sorted((SHARED_DATA / "rubysec" / "gems").rglob("*.yml"))[:300]:
        found += parse_rubysec(path.read_bytes(), source=str(path)).advisories
    return found


def test_every_shared_advisory_round_trips() -> None:
    if not (SHARED_DATA / "updateinfo").is_dir():
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(f"the shared advisory data is missing at {SHARED_DATA}")
        pytest.skip(f"the shared advisory data is not at {SHARED_DATA}")
    advisories = _shared_advisories()
    formats = {a.format for a in advisories}
    assert {"updateinfo", "osv", "rubysec"} <= formats
    assert len(advisories) > 500
    for a in advisories:
        assert codec.from_json(json.loads(codec.dumps(a))) == a, a.id


def _sample() -> Advisory:
    return Advisory(
        id="FEDORA-2024-1", type="security", severity="Important", title="t", description="d",
        issued=datetime(2024, 3, 31, tzinfo=UTC), updated=datetime(2024, 4, 1, 12, tzinfo=UTC),
        release="Fedora 40", status="stable",
        references=(Reference("cve", "CVE-2022-48174", "https://cve.org", None),),
        packages=(PackageRef("busybox", "0", "1.35.0", "2.fc40", "x86_64",
                             modules=("m:1",)),),
        source="/x/updateinfo.xml",
        affected=(Affected("PyPI", "jinja2", (Range("ECOSYSTEM", (("introduced", "0"),
                                                                  ("fixed", "3.1.3"))),),
                           versions=("3.1.2",)),),
    )


def test_every_field_is_in_the_json() -> None:
    data = codec.to_json(_sample())
    assert set(data) == {f.name for f in dataclasses.fields(Advisory)}
    assert data["issued"] == "2024-03-31T00:00:00+00:00"
    assert data["affected"][0]["ranges"][0]["events"] == [["introduced", "0"], ["fixed", "3.1.3"]]
    assert data["packages"][0]["modules"] == ["m:1"]


def test_the_digest_is_content_not_provenance() -> None:
    a = _sample()
    moved = dataclasses.replace(a, source="/elsewhere/updateinfo.xml")
    changed = dataclasses.replace(a, severity="Critical")
    assert codec.content_digest(a) == codec.content_digest(moved)
    assert codec.content_digest(a) != codec.content_digest(changed)
    assert codec.content_digest(a).startswith("sha256:") and len(codec.content_digest(a)) == 71
    assert codec.dumps(a) != codec.dumps(moved)  # the body keeps the source


def test_a_body_missing_a_defaulted_field_still_reads() -> None:
    """Bodies written before a field was added lack it: its default applies."""
    data = codec.to_json(_sample())
    del data["withdrawn"], data["aliases"]
    back = codec.from_json(data)
    assert back.withdrawn is None and back.aliases == ()


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(title=3), "advisory.title: expected a string, got int"),
    (lambda d: d.update(issued="yesterday"), "advisory.issued: not an ISO 8601 date"),
    (lambda d: d["packages"][0].update(name=None), "advisory.packages[0].name: expected a str"),
    (lambda d: d.update(colour="red"), "unknown fields ['colour']"),
    (lambda d: d.pop("id"), "missing 1 required"),
    (lambda d: d["affected"][0]["ranges"][0]["events"][0].append("x"), "expected 2 items"),
    (lambda d: d.update(references={}), "advisory.references: expected a list"),
])
def test_a_malformed_body_is_an_error_that_says_where(change: Any, message: str) -> None:
    data = codec.to_json(_sample())
    change(data)
    with pytest.raises(codec.CodecError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(")):
        codec.from_json(data)


def test_not_json_and_not_an_advisory_are_errors() -> None:
    with pytest.raises(codec.CodecError, match="not JSON"):
        codec.loads(b"{")
    with pytest.raises(codec.CodecError, match="expected an object"):
        codec.from_json([])
    with pytest.raises(codec.CodecError, match="expected Advisory, got str"):
        codec.to_json("FEDORA-1")  # type: ignore[arg-type]
    package = PackageRef("b", 0, "1", "1", "x")  # type: ignore[arg-type]
    bad = dataclasses.replace(_sample(), packages=(package,))
    with pytest.raises(codec.CodecError, match=r"advisory\.packages\[0\]\.epoch: expected text"):
        codec.to_json(bad)



def test_lone_surrogates_and_nul_round_trip() -> None:
    a = dataclasses.replace(_sample(), title="\udfff\ud800 \ud83e", description="\x00\U0001f984")
    text = codec.dumps(a)
    assert text.isascii() and codec.loads(text) == a
    # The one inexact case: a high and a low surrogate side by side (which no JSON, YAML or
    # XML parser produces) come back as the character the pair encodes.
    pair = dataclasses.replace(_sample(), title="\ud83e\udd84")
    assert codec.loads(codec.dumps(pair)).title == "\U0001f984"
