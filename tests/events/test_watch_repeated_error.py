"""A feed whose import keeps failing is news once: the service logs its error once and does not
count the failing look as activity (which would keep an idle service from exiting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alicorn.config import Settings, load_settings
from alicorn.events.watch import Watcher

FEED = """<?xml version="1.0" encoding="UTF-8"?>
<updates><update from="qa@example.org" status="stable" type="security" version="2.0">
<id>QA-2024-0001</id><title>openssl-3.9.9-1.fc40</title>
<issued date="2024-05-01 00:00:00"/><updated date="2024-05-01 00:00:00"/>
<severity>Important</severity><summary>openssl security update</summary>
<pkglist><collection short="F40"><name>Fedora 40</name>
<package name="openssl" version="3.9.9" release="1.fc40" epoch="0" arch="x86_64">
<filename>openssl-3.9.9-1.fc40.x86_64.rpm</filename></package></collection></pkglist>
</update></updates>
"""
BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<updates><update type="security"><id>&lol2;</id></update></updates>
"""


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ALICORN_HOME", str(tmp_path / "home"))
    return load_settings(tmp_path / "home")


def test_a_failing_import_is_news_once(settings: Settings, tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_text(FEED, encoding="utf-8")
    watcher = Watcher(settings)
    watcher.add(str(feed))
    first = watcher.poll()
    assert [s.url for s in first.changed] == [feed.as_uri()]
    assert first.changed[0].imported and first.changed[0].error is None
    feed.write_text(BOMB, encoding="utf-8")
    second = watcher.poll()
    assert [s.url for s in second.changed] == [feed.as_uri()]
    assert second.changed[0].new_error and "unsafe XML refused" in (second.changed[0].error or "")
    third = watcher.poll()
    (source,) = third.sources
    assert source.error == second.changed[0].error and not source.new_error
    assert third.changed == ()    # said once, not at every look
    feed.write_text(FEED.replace("2024-05-01", "2024-06-01"), encoding="utf-8")
    fourth = watcher.poll()
    assert [s.url for s in fourth.changed] == [feed.as_uri()]
    assert fourth.changed[0].recovered and fourth.changed[0].imported
