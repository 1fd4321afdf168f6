"""``alicorn events``: the list (text, JSON per the command-line contract), show, plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eventdata import build, busybox, updateinfo

from alicorn.config import load_settings
from alicorn.events.runner import tick
from alicorn.store.builds import BuildStore
from conftest import Cli


@pytest.fixture
def home(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ALICORN_DATABASE_URL", raising=False)
    settings = load_settings(cli.home)
    build(BuildStore(settings.database_url), "pony", [busybox()])
    feed = updateinfo(tmp_path / "updateinfo.xml", [
        ("FEDORA-2024-bb", "busybox", "1.35.0", "2.fc40"),
        ("FEDORA-2024-zz", "zlib", "1.3", "2.fc40")])
    cli("advisories", "import", str(feed), check=True)
    return cli.home


def test_plan_then_list_and_show(cli: Cli, home: Path) -> None:
    proc = cli("events", "plan", "--json", check=True)
    planned = json.loads(proc.stdout)
    assert [r["image"] for r in planned["rebuilds"]] == ["pony"]
    assert planned["rebuilds"][0]["advisories"] == ["FEDORA-2024-bb"]
    assert planned["skipped"] == {"FEDORA-2024-zz": "no published image contains zlib"}
    text = cli("events", "plan", check=True).stdout
    assert "1. rebuild pony" in text and "skip FEDORA-2024-zz: no published image" in text
    assert json.loads(cli("events", "--json", check=True).stdout) == [], "plan wrote nothing"

    tick(load_settings(home))
    listed = json.loads(cli("events", "--json", check=True).stdout)
    by_advisory = {e["advisory"]: e for e in listed}
    assert set(by_advisory) == {"FEDORA-2024-bb", "FEDORA-2024-zz"}
    event = by_advisory["FEDORA-2024-bb"]
    assert {"id", "advisory", "state", "reason", "builds"} <= set(event)
    assert event["state"] == "building"
    assert [{k: b[k] for k in ("image", "state", "tests", "gate", "new_digest")}
            for b in event["builds"]] == [{"image": "pony", "state": "queued", "tests": None,
                                           "gate": None, "new_digest": None}]
    assert event["builds"][0]["old_digest"].startswith("sha256:")
    assert by_advisory["FEDORA-2024-zz"]["state"] == "skipped"

    skipped = json.loads(cli("events", "--json", "--state", "skipped", check=True).stdout)
    assert [e["advisory"] for e in skipped] == ["FEDORA-2024-zz"]
    assert len(json.loads(cli("events", "--json", "--limit", "1", check=True).stdout)) == 1
    table = cli("events", check=True).stdout.splitlines()
    assert table[0].split() == ["ID", "ADVISORY", "STATE", "IMAGES", "REASON"]
    assert any("FEDORA-2024-bb" in line and "building" in line and "pony" in line
               for line in table[1:])

    shown = json.loads(cli("events", "show", event["id"][:20], "--json", check=True).stdout)
    assert shown["id"] == event["id"] and shown["builds"][0]["build_id"]
    text = cli("events", "show", event["id"], check=True).stdout
    assert "rebuild   pony: queued" in text and shown["builds"][0]["build_id"] in text


def test_bad_input_exits_2(cli: Cli, home: Path) -> None:
    proc = cli("events", "show", "0123nope")
    assert proc.returncode == 2 and "no event '0123nope'" in proc.stderr
    proc = cli("events", "--state", "sleeping")
    assert proc.returncode == 2 and "sleeping" in proc.stderr
    proc = cli("events", "--limit", "0")
    assert proc.returncode == 2


def test_retry_takes_only_failed_events(cli: Cli, home: Path) -> None:
    tick(load_settings(home))
    listed = {e["advisory"]: e for e in json.loads(cli("events", "--json", check=True).stdout)}
    skipped = listed["FEDORA-2024-zz"]
    proc = cli("events", "retry", skipped["id"])
    assert proc.returncode == 2
    assert f"only failed events are retried: {skipped['id']} is skipped" in proc.stderr
    proc = cli("events", "retry", "ffffffffffffffff")
    assert proc.returncode == 2 and "ffffffffffffffff" in proc.stderr
