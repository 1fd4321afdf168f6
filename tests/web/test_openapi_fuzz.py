"""The OpenAPI document validates, and a schema-based fuzzer (schemathesis) finds no 500s.

The app is the real one (create_app) over a real store in a temporary ALICORN_HOME with a few
finished builds, their logs, and tokens.  Every operation of the document is fuzzed twice, as
the admin (so the write routes get past their role checks) and anonymously, with a bounded
number of examples each (FUZZ_EXAMPLES, default 25: the whole module takes under a minute
on 2 cores).  Checked: no 5xx ever, and the answers conform to the document (status codes it
declares, their content types, and the response schemas).

Nothing the fuzzer submits can start a build that runs: api.local_sources is empty (a local
path is refused), and the module holds the home's worker lock, so that no worker is started
for a remote URL that gets queued; whatever was queued is cancelled at the end (and counted).

One operation is not fuzzed, on purpose: GET /builds/{build_id}/logs/{name}/stream, the
server-sent events of a running build's log, which by design answers for as long as the build
runs (an hour at most).  A fuzzed build id that matches a queued build would hang the run.  Its
bad input (names, offsets, unknown builds) is tested in test_api_bad_input.py, and here its
answer for a finished build is checked once, against the document.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from alicorn.compose import Package
from alicorn.config import Settings, load_settings
from alicorn.digest import Digest
from alicorn.store.builds import DONE, QUEUED, BuildStore, Submission
from alicorn.web.app import create_app
from alicorn.web.auth import TokenStore
from alicorn.web.model import API_PREFIX, ApiConfig, Role
from alicorn.worker.local import acquire_lock

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
STREAM = f"{API_PREFIX}/builds/{{build_id}}/logs/{{name}}/stream"  # not fuzzed: see above
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@dataclass
class Fuzzed:
    app: FastAPI
    settings: Settings
    store: BuildStore
    builds: list[str]
    admin: dict[str, str]


def _done(store: BuildStore, settings: Settings, name: str) -> str:
    row = store.submit(Submission(argv=["alicorn", "build", f"{name}.yaml"], source_kind="file",
                                  recipe_path=f"/recipes/{name}.yaml",
                                  recipe_content=f"recipe: 1\nname: {name}\n"))
    assert store.claim_next("fuzz:1") is not None
    log = f"log of {name}\n".encode()
    d = settings.build_dir(row.id)
    d.mkdir(parents=True, exist_ok=True)
    (d / "build.log").write_bytes(log)
    digest = str(Digest.of_bytes(f"image {name}".encode()))
    store.finish(row.id, DONE, packages=[Package(type="rpm", name="busybox",
                                                 version="1.35.0-1.fc40", arch="x86_64",
                                                 purl="pkg:rpm/fedora/busybox@1.35.0-1.fc40")],
                 digest=digest, image_ref=f"127.0.0.1:5000/{name}@{digest}",
                 recipe_name=name, log_digest=str(Digest.of_bytes(log)))
    return row.id


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALICORN_HOME", str(home))
        for key in ApiConfig.names():
            mp.delenv(f"ALICORN_API_{key.upper()}", raising=False)
        s = load_settings(home)
        s.run_dir.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(s)
        assert lock is not None, "nothing else may work in this fresh home"
        store = BuildStore(s.database_url)
        builds = [_done(store, s, name) for name in ("one", "two", "three")]
        _, secret = TokenStore(s.database_url).create("fuzz-admin", Role.ADMIN,
                                                      created_by="test")
        config = ApiConfig(anonymous_read=True, local_sources=[], max_body_bytes=64 << 10,
                           submissions_per_minute=100_000)
        app = create_app(s, config)
        try:
            yield Fuzzed(app, s, store, builds, {"Authorization": f"Bearer {secret}"})
        finally:
            # What the fuzzer got queued (remote URLs are accepted) never ran: cancel it.
            queued = [r for r in store.recent(100_000) if r.state == QUEUED]
            for row in queued:
                store.request_cancel(row.id, "test_openapi_fuzz")
            lock.close()
            print(f"\nfuzz: {len(queued)} submissions were queued (and cancelled)")


def test_the_openapi_document_validates(fuzzed: Fuzzed) -> None:
    from openapi_spec_validator import validate

    doc = fuzzed.app.openapi()
    validate(doc)
    paths = doc["paths"]
    # The routes of the contract are all in it, each with its declared 4xx answers.
    for path in ("/whoami", "/builds", "/builds/{build_id}", "/builds/{build_id}/cancel",
                 "/trace/{digest}", "/search", "/advisories", "/affected", "/events",
                 "/modules", "/log/head", "/log/entries/{index}", "/tokens", "/audit",
                 "/builds/{build_id}/logs/{name}/stream"):
        assert f"{API_PREFIX}{path}" in paths, path
    for path, ops in paths.items():
        for method, op in ops.items():
            codes = {str(c) for c in op.get("responses", {})}
            if path != f"{API_PREFIX}/healthz" and not path.endswith("/healthz"):
                assert any(c.startswith("4") for c in codes), (method, path, codes)


def test_the_stream_of_a_finished_build_ends_and_conforms(fuzzed: Fuzzed) -> None:
    with TestClient(fuzzed.app, raise_server_exceptions=False) as client:
        resp = client.get(f"{API_PREFIX}/builds/{fuzzed.builds[0]}/logs/build.log/stream")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert "event: append" in resp.text and "event: end" in resp.text
    assert '"state": "done"' in resp.text


FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                         database=None, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))


def fuzz(fuzzed: Fuzzed, headers: dict[str, str]) -> tuple[int, int, list[str]]:
    """Every operation but the stream, with valid (positive) and invalid (negative) input:
    (operations, calls, failures).  Each operation runs on, whatever another one found, so
    that one report lists every operation that fails.

    (schemathesis' own pytest integration, ``from_fixture`` + ``parametrize``, does not run
    under pytest 9 — it reads ``request.node._nodeid`` — hence this loop over the
    operations, with hypothesis' ``given`` on each one's strategy.)"""
    schema = schemathesis.openapi.from_asgi(f"{API_PREFIX}/openapi.json", fuzzed.app)
    operations = calls = 0
    failures: list[str] = []
    for result in schema.exclude(path=STREAM).get_all_operations():
        if not isinstance(result, Ok):         # an operation the document describes badly
            failures.append(f"invalid operation in the document: {result.err()}")
            continue
        op = result.ok()
        operations += 1
        for mode in GenerationMode:
            @FUZZ_SETTINGS
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                run()
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # schemathesis' FailureGroup too: all reported below
                failures.append(f"{mode.value} {op.label}: {str(e)[:1500]}")
    return operations, calls, failures


@pytest.mark.parametrize("who", ["admin", "anonymous"])
def test_the_fuzzer_finds_no_500_and_answers_conform(fuzzed: Fuzzed, who: str) -> None:
    operations, calls, failures = fuzz(fuzzed, fuzzed.admin if who == "admin" else {})
    print(f"\nfuzz as {who}: {operations} operations, {calls} calls, "
          f"{len(failures)} failing")
    assert operations >= 30, "the document has the contract's routes"
    assert calls >= operations * 2
    assert not failures, "\n\n".join(failures)


def test_nothing_the_fuzzer_sent_ran(fuzzed: Fuzzed) -> None:
    # No worker could take a build (the lock is held): every build is one of ours, or queued.
    for row in fuzzed.store.recent(100_000):
        assert row.id in fuzzed.builds or row.state in (QUEUED, "failed"), (row.id, row.state)
