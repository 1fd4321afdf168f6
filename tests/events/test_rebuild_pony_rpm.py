"""End to end with the real tools: the RPM pony built before the busybox update; the update
and its advisory land in its repository and are imported; ticks of the state machine and the
worker rebuild it, and the new image holds the fixed busybox."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from alicorn.config import load_settings
from alicorn.events.model import DONE, EVENT_FINAL
from alicorn.events.runner import tick
from alicorn.events.store import EventStore
from alicorn.store.builds import BuildStore, Submission
from alicorn.worker.local import serve
from conftest import EXAMPLES, Cli, require

pytestmark = pytest.mark.integration

ADVISORY = "FEDORA-2024-b7e1c3d2a9"


def test_an_imported_update_rebuilds_the_rpm_pony(cli: Cli, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    require("rpmbuild", "createrepo_c", "dnf", "busybox", "podman", "skopeo", "docker-registry")
    monkeypatch.delenv("ALICORN_DATABASE_URL", raising=False)
    monkeypatch.delenv("ALICORN_REGISTRY", raising=False)
    monkeypatch.setenv("ALICORN_HOME", str(cli.home))
    example = tmp_path / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", example, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(example / "build-repo"), str(example / "repo"), "--version", "1"],
                   check=True, capture_output=True)
    settings = load_settings(cli.home)
    builds = BuildStore(settings.database_url)
    recipe = example / "pony.yaml"
    first = builds.submit(Submission(
        argv=["alicorn", "build", str(recipe)], source_kind="file",
        recipe_path=str(recipe), recipe_content=recipe.read_text()))
    assert serve(settings, once=True) == 1
    old = builds.get(first.id)
    assert old.state == "done", f"the first build failed: {old.error}"
    assert old.published
    assert {p.name: p.version for p in old.packages}["busybox"].endswith("1.35.0-1.fc40")

    # The update lands in the repository; its updateinfo is imported.
    subprocess.run([str(example / "build-repo"), str(example / "repo"), "--version", "both"],
                   check=True, capture_output=True)
    start = time.monotonic()
    cli("advisories", "import", str(example / "repo"), check=True)
    events = EventStore(settings.database_url)
    event = None
    for _ in range(6):
        tick(settings)
        event = next(e for e in events.events() if e.advisory_id == ADVISORY)
        if event.state in EVENT_FINAL:
            break
        serve(settings, once=True)
    took = time.monotonic() - start
    assert event is not None
    data = events.event_json(event)
    assert event.state == DONE, json.dumps(data, indent=2)
    rebuild = data["builds"][0]
    assert (rebuild["image"], rebuild["old_digest"]) == ("pony-rpm", old.digest)
    assert rebuild["new_digest"] and rebuild["new_digest"] != old.digest
    new = builds.get(rebuild["build_id"])
    versions = {p.name: p.version for p in new.packages}
    assert versions["busybox"].endswith("1.35.0-2.fc40"), versions
    assert new.trigger is not None and new.trigger["advisories"] == [ADVISORY]
    assert new.trigger["previous_digest"] == old.digest
    assert new.published and new.digest == rebuild["new_digest"]
    assert rebuild["tests"] == (new.checks or {}).get("tests")
    print(f"advisory import to published fixed pony-rpm: {took:.1f}s; "
          f"tests {rebuild['tests']}, gate {rebuild['gate']}")
    # Nothing is left to do: another tick submits nothing.
    report = tick(settings)
    assert (report.submitted, report.planned) == (0, 0)
