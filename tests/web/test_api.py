"""The HTTP API on real data: the pony builds of the session (their own home, only read here)
for trace, verification, logs, downloads, the transparency log and search; and a temporary
home — a copy of that home's database, with advisory feeds imported by the CLI, tokens of
every role, a module's records — for submissions, cancellations, tokens, the audit trail,
advisories, affected images, events and modules.

The temporary home holds the worker lock while the tests run, so a submission the API accepts
stays queued (no worker starts, nothing is fetched) until the test cancels it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alicorn.chain.keys import PublicKey
from alicorn.chain.translog import (
    SignedTreeHead,
    verify_consistency,
    verify_head,
    verify_inclusion,
)
from alicorn.config import Settings, load_settings
from alicorn.store.builds import BuildStore, Submission
from alicorn.web.app import create_app
from alicorn.web.model import ApiConfig, Role
from alicorn.worker.local import acquire_lock
from conftest import EXAMPLES, SHARED_DATA, Cli, PonyImages, git_repo

API = "/api/v1"
HEAD_FIELDS = ("log", "tree_size", "root_hash", "timestamp", "key_id", "signature")


def _head(data: dict[str, Any]) -> SignedTreeHead:
    return SignedTreeHead.from_json({k: data[k] for k in HEAD_FIELDS})


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _sse(text: str) -> list[dict[str, Any]]:
    """The events of a text/event-stream body: [{event, id, data}] (comments left out)."""
    events = []
    for block in text.split("\n\n"):
        ev: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            ev[key] = value[1:] if value.startswith(" ") else value
        if "event" in ev:
            ev["data"] = json.loads(ev["data"])
            events.append(ev)
    return events


# -- the pony builds, read only ------------------------------------------------------------------
@dataclass
class Pony:
    images: PonyImages
    settings: Settings
    client: TestClient

    def dir(self, build: dict[str, Any]) -> Path:
        return self.settings.build_dir(build["build_id"])


@pytest.fixture(scope="module")
def pony(pony_images: PonyImages) -> Iterator[Pony]:
    settings = load_settings(pony_images.cli.home)
    from alicorn.registry.local import Registry

    Registry(settings).ensure_running()  # the tag lookups ask it (other tests may stop it)
    with TestClient(create_app(settings, ApiConfig())) as client:
        yield Pony(pony_images, settings, client)


def test_trace_by_digest_reaches_the_build_its_inputs_and_a_verified_chain(pony: Pony) -> None:
    v1 = pony.images.v1
    r = pony.client.get(f"{API}/trace/{v1['digest']}")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["id"] == v1["build_id"] and data["digest"] == v1["digest"]
    assert data["state"] == "done" and data["image"] == v1["image"]
    assert data["argv"][:2] == ["alicorn", "build"]
    assert "name: pony-rpm" in data["recipe"]["content"]
    assert data["recipe"]["digest"].startswith("sha256:")
    busybox = [p for p in data["packages"] if p["name"] == "busybox"]
    assert busybox and busybox[0]["version"].startswith("1.35.0-1")
    assert data["verification"]["verified"] is True
    assert data["transparency_log"]["record_index"] is not None
    assert {x["name"] for x in data["logs"]} == {"build.log", "checks.log", "publish.log"}
    assert data["checks"]["tests"] == "passed" and data["checks"]["gate"] == "passed"
    # the same build by its digest's hex, and the 404 of a digest nobody built
    assert pony.client.get(f"{API}/trace/{v1['digest'][7:]}").json()["id"] == v1["build_id"]
    r = pony.client.get(f"{API}/trace/sha256:{'0' * 64}")
    assert r.status_code == 404 and "0" * 64 in r.json()["error"]["message"]
    assert pony.client.get(f"{API}/trace/sha256:abc").status_code == 422


def test_build_detail_by_id_and_prefix_and_the_list_pages(pony: Pony) -> None:
    v2 = pony.images.v2
    full = pony.client.get(f"{API}/builds/{v2['build_id']}").json()
    assert full["id"] == v2["build_id"] and full["outputs"]["digest"] == v2["digest"]
    assert full["provenance"] == {"digest": full["provenance"]["digest"], "present": True}
    assert full["sboms"] and set(full["sboms"]) == {"sbom.cdx.json", "sbom.spdx.json"}
    assert full["created_at"].endswith("Z") and full["finished_at"].endswith("Z")
    listed = pony.client.get(f"{API}/builds", params={"limit": 500}).json()
    ids = [b["id"] for b in listed]
    builds = [pony.images.broken, pony.images.soured, pony.images.v1, v2]
    assert set(ids) >= {b["build_id"] for b in builds}
    order = [ids.index(b["build_id"]) for b in builds]
    assert order == sorted(order, reverse=True)            # newest first
    first = pony.client.get(f"{API}/builds", params={"limit": 1}).json()
    after = pony.client.get(f"{API}/builds", params={"limit": 1, "before": first[0]["id"]})
    assert after.json()[0]["id"] == ids[1]
    done = pony.client.get(f"{API}/builds", params={"state": "done", "limit": 500}).json()
    assert done and all(b["state"] == "done" for b in done)
    assert pony.client.get(f"{API}/builds", params={"state": "lost"}).status_code == 422
    assert pony.client.get(f"{API}/builds", params={"limit": 501}).status_code == 422
    r = pony.client.get(f"{API}/builds/{'f' * 32}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_verification_is_offline_and_every_link_holds(pony: Pony) -> None:
    r = pony.client.get(f"{API}/builds/{pony.images.v1['build_id']}/verification")
    data = r.json()
    assert data["verified"] is True and data["broken"] is None and data["pending"] is False
    links = [c["link"] for c in data["checks"]]
    assert {"record", "transparency log", "database", "provenance", "image"} <= set(links)
    assert "registry" not in links and all(c["ok"] for c in data["checks"])


def test_logs_as_text_from_an_offset(pony: Pony) -> None:
    build = pony.images.v1
    path = pony.dir(build) / "build.log"
    whole = path.read_bytes()
    listed = pony.client.get(f"{API}/builds/{build['build_id']}/logs").json()
    by_name = {x["name"]: x for x in listed}
    assert by_name["build.log"]["size"] == len(whole)
    assert by_name["build.log"]["digest"] == _sha256(whole)
    assert by_name["build.log"]["complete"] is True
    r = pony.client.get(f"{API}/builds/{build['build_id']}/logs/build.log")
    assert r.status_code == 200 and r.content == whole
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-log-offset"] == str(len(whole)) and r.headers["x-log-complete"] == "true"
    r = pony.client.get(f"{API}/builds/{build['build_id']}/logs/build.log",
                        params={"offset": len(whole) - 20})
    assert r.content == whole[-20:]
    r = pony.client.get(f"{API}/builds/{build['build_id']}/logs/build.log",
                        params={"offset": len(whole) + 1})
    assert r.status_code == 400 and "past the end" in r.json()["error"]["message"]
    assert pony.client.get(f"{API}/builds/{build['build_id']}/logs/record.json"
                           ).status_code == 422
    assert pony.client.get(f"{API}/builds/{build['build_id']}/logs/..%2F..%2Fconfig.json"
                           ).status_code in (404, 422)


def test_log_stream_sends_the_log_then_the_end_and_resumes(pony: Pony) -> None:
    build = pony.images.v1
    whole = (pony.dir(build) / "checks.log").read_bytes()
    url = f"{API}/builds/{build['build_id']}/logs/checks.log/stream"
    with pony.client.stream("GET", url) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _sse(r.read().decode())
    appended = [e for e in events if e["event"] == "append"]
    assert "".join(e["data"]["text"] for e in appended).encode() == whole
    assert [int(e["id"]) for e in appended] == [e["data"]["offset"] for e in appended]
    assert appended[-1]["data"]["offset"] == len(whole)
    assert events[-1] == {"event": "end", "data": {"state": "done"}}
    with pony.client.stream("GET", url, headers={"Last-Event-ID": str(len(whole) - 7)}) as r:
        resumed = _sse(r.read().decode())
    assert [e["data"]["text"] for e in resumed if e["event"] == "append"] == \
        [whole[-7:].decode()]
    with pony.client.stream("GET", url, params={"offset": len(whole)}) as r:
        assert [e["event"] for e in _sse(r.read().decode())] == ["end"]
    assert pony.client.get(url, headers={"Last-Event-ID": "x1"}).status_code == 400


def test_downloads_are_the_sealed_files(pony: Pony) -> None:
    build = pony.images.v2
    d = pony.dir(build)
    for route, name in (("record", "record.json"), ("provenance", "provenance.dsse.json"),
                        ("sbom/cyclonedx", "sbom.cdx.json"), ("sbom/spdx", "sbom.spdx.json")):
        r = pony.client.get(f"{API}/builds/{build['build_id']}/{route}")
        assert r.status_code == 200, route
        assert r.content == (d / name).read_bytes(), route
        assert r.headers["content-type"] == "application/json"
    assert pony.client.get(f"{API}/builds/{build['build_id']}/sbom/xml").status_code == 422


def test_tree_heads_and_an_inclusion_proof_verify_offline(pony: Pony) -> None:
    keys = {k["key_id"]: PublicKey.from_json(k)
            for k in pony.client.get(f"{API}/keys").json()}
    latest = pony.client.get(f"{API}/log/head").json()
    head = SignedTreeHead.from_json(latest)     # as a witness keeps it, nothing to strip
    verify_head(head, keys[head.key_id])
    detail = pony.client.get(f"{API}/builds/{pony.images.v1['build_id']}").json()
    index = detail["transparency_log"]["record_index"]
    entry = pony.client.get(f"{API}/log/entries/{index}").json()
    data = base64.b64decode(entry["data"])
    assert data == (pony.dir(pony.images.v1) / "record.json").read_bytes()
    entry_head = SignedTreeHead.from_json(entry["head"])
    verify_inclusion(data, index, [bytes.fromhex(p) for p in entry["inclusion_proof"]],
                     entry_head, public_key=keys[entry_head.key_id])
    heads = pony.client.get(f"{API}/log/heads", params={"limit": 500}).json()
    assert heads["heads"][0]["tree_size"] == latest["tree_size"]
    assert heads["heads"][0]["signature_ok"] is True
    oldest = _head(heads["heads"][-1])
    proof = pony.client.get(f"{API}/log/consistency",
                            params={"old": oldest.tree_size, "new": head.tree_size}).json()
    verify_consistency(oldest, head, [bytes.fromhex(p) for p in proof["proof"]],
                       public_key=keys[head.key_id])
    assert pony.client.get(f"{API}/log/entries/{latest['tree_size'] + 5}").status_code == 404
    assert pony.client.get(f"{API}/log/entries/-1").status_code == 422
    assert pony.client.get(f"{API}/log/consistency",
                           params={"old": head.tree_size + 1}).status_code == 400


def test_search_by_digest_reference_and_id_prefix(pony: Pony) -> None:
    v1, v2 = pony.images.v1, pony.images.v2
    for q, want in ((v1["digest"], v1), (v1["digest"][7:], v1), (v1["image"], v1),
                    (f"{pony.images.repository}:latest", v2),
                    (v2["build_id"], v2), (v2["build_id"][:15], v2)):
        r = pony.client.get(f"{API}/search", params={"q": q})
        assert r.status_code == 200, (q, r.text)
        assert r.json() == {"build_id": want["build_id"], "digest": want["digest"],
                            "url": f"/builds/{want['build_id']}"}
    r = pony.client.get(f"{API}/search", params={"q": "<b>" + "x" * 900})
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "x" * 50 in message and len(message) < 300
    assert pony.client.get(f"{API}/search", params={"q": "x" * 5000}).status_code == 422
    r = pony.client.get(f"{API}/search", params={"q": f"{pony.images.repository}:nope"})
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]


# -- a home to write in: a copy of the pony home's database --------------------------------------
@dataclass
class Site:
    settings: Settings
    client: TestClient
    store: BuildStore
    tokens: dict[str, str]          # name → secret
    sources: Path                   # api.local_sources
    repo: Path                      # a git repository of examples/pony/rpm in it
    pony: PonyImages

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def audit(self) -> list[dict[str, Any]]:
        r = self.client.get(f"{API}/audit", params={"limit": 500}, headers=self.auth("root"))
        assert r.status_code == 200, r.text
        entries: list[dict[str, Any]] = r.json()
        return entries


@pytest.fixture(scope="module")
def site(pony_images: PonyImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("api-site")
    home = base / "home"
    home.mkdir()
    # A consistent copy of the pony home's database (sqlite's backup reads, never writes).
    src = sqlite3.connect(f"file:{pony_images.cli.home / 'alicorn.db'}?mode=ro", uri=True)
    dst = sqlite3.connect(home / "alicorn.db")
    src.backup(dst)
    src.close()
    dst.close()
    cli = Cli(home)
    for feed in (SHARED_DATA / "ghsa" / "advisories" / "github-reviewed",
                 pony_images.example / "repo"):
        cli("advisories", "import", str(feed), check=True, timeout=120)
    with pytest.MonkeyPatch.context() as mp:
        for key in ApiConfig.names():
            mp.delenv(f"ALICORN_API_{key.upper()}", raising=False)
        settings = load_settings(home)
        lock = acquire_lock(settings)
        assert lock is not None
        sources = base / "sources"
        git_repo(EXAMPLES / "pony" / "rpm", sources / "pony")
        config = ApiConfig(local_sources=[str(sources)], submissions_per_minute=3)
        app = create_app(settings, config)
        tokens = {}
        for name, role in (("root", Role.ADMIN), ("alice", Role.SUBMITTER),
                           ("bob", Role.SUBMITTER), ("rita", Role.READER)):
            _, tokens[name] = app.state.ctx.tokens.create(name, role, created_by="test")
        with TestClient(app) as client:
            yield Site(settings, client, BuildStore(settings.database_url), tokens, sources,
                       sources / "pony", pony_images)
        lock.close()


def _body(site: Site, **source: Any) -> dict[str, Any]:
    return {"source": {"git": str(site.repo), "ref": "main", "recipe": "pony.yaml", **source},
            "options": {"no_cache": True}}


def test_submission_refused_without_a_token_and_with_a_reader_token(site: Site) -> None:
    before = len(site.store.recent(10_000))
    r = site.client.post(f"{API}/builds", json=_body(site))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = site.client.post(f"{API}/builds", json=_body(site), headers=site.auth("rita"))
    assert r.status_code == 403 and "submitter" in r.json()["error"]["message"]
    r = site.client.post(f"{API}/builds", json=_body(site),
                         headers={"Authorization": "Bearer alicorn_00000000_nope"})
    assert r.status_code == 401
    assert len(site.store.recent(10_000)) == before
    refused = [e for e in site.audit() if e["action"] == "build.submit"
               and e["outcome"] == "refused"]
    assert {e["status"] for e in refused} >= {401, 403}


def test_a_submitter_submits_then_cancels_its_own_build(site: Site) -> None:
    r = site.client.post(f"{API}/builds", json=_body(site), headers=site.auth("alice"))
    assert r.status_code == 202, r.text
    answer = r.json()
    build_id = answer["build_id"]
    assert answer["state"] == "queued" and answer["url"] == f"{API}/builds/{build_id}"
    row = site.store.get(build_id)
    assert row.argv[:3] == ["alicorn-api", "POST", "/api/v1/builds"]
    assert json.loads(row.argv[3])["source"] == _body(site)["source"]
    assert row.submitter == "alice" and row.submitted_token is not None
    assert row.source_kind == "git" and row.source_url == str(site.repo.resolve())
    assert row.source_ref == "main" and row.recipe_path == "pony.yaml"
    assert row.options["no_cache"] is True
    detail = site.client.get(f"{API}/builds/{build_id}").json()
    assert detail["state"] == "queued" and detail["submitter"] == "alice"
    # bob may not cancel alice's build; a reader may not cancel at all
    r = site.client.post(f"{API}/builds/{build_id}/cancel", headers=site.auth("bob"))
    assert r.status_code == 403 and "alice" in r.json()["error"]["message"]
    assert site.client.post(f"{API}/builds/{build_id}/cancel",
                            headers=site.auth("rita")).status_code == 403
    r = site.client.post(f"{API}/builds/{build_id}/cancel", headers=site.auth("alice"))
    assert r.status_code == 202, r.text
    assert r.json() == {"build_id": build_id, "state": "failed", "cancel_requested": True}
    assert "cancelled by alice" in (site.store.get(build_id).error or "")
    r = site.client.post(f"{API}/builds/{build_id}/cancel", headers=site.auth("root"))
    assert r.status_code == 409
    trail = [(e["action"], e["outcome"], e["status"]) for e in site.audit()
             if e["target"] == build_id]
    assert ("build.submit", "ok", 202) in trail
    assert ("build.cancel", "refused", 403) in trail
    assert ("build.cancel", "ok", 202) in trail
    assert ("build.cancel", "refused", 409) in trail


def test_a_running_build_shows_its_step_and_its_log_streams_until_it_ends(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from alicorn.web import api

    monkeypatch.setattr(api, "STREAM_SECONDS", 60.0)  # a broken stream fails, not hangs
    row = site.store.submit(Submission(argv=["alicorn", "build", "live.yaml"],
                                       source_kind="file", recipe_path="/live.yaml",
                                       recipe_content="recipe: 1\n"))
    claimed = site.store.claim_next("test:live")
    assert claimed is not None and claimed.id == row.id
    d = site.settings.build_dir(row.id)
    d.mkdir(parents=True)
    events = [{"event": "step", "name": "compose", "total": None},
              {"event": "progress", "done": 3, "total": 7, "detail": "busybox"}]
    (d / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    summary = site.client.get(f"{API}/builds/{row.id}").json()
    assert summary["state"] == "running" and summary["step"] == "compose"
    assert summary["progress"] == {"done": 3, "total": 7, "detail": "busybox"}
    log = d / "build.log"
    log.write_bytes(b"first line\n" + "caf\u00e9".encode()[:-1])   # half of the \u00e9
    url = f"{API}/builds/{row.id}/logs/build.log/stream"
    text, states = "", []
    with site.client.stream("GET", url) as r:
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                data = json.loads(line[6:])
                if "text" in data:
                    text += data["text"]
                    if text == "first line\ncaf":
                        with open(log, "ab") as f:      # the rest, while it streams
                            f.write("caf\u00e9".encode()[-1:] + b"\nlast line\n")
                    elif text.endswith("last line\n"):
                        site.store.finish(row.id, "failed", error="ended by the test")
                else:
                    states.append(data["state"])
                    break
    assert text == "first line\ncaf\u00e9\nlast line\n"
    assert states == ["failed"]
    r = site.client.get(f"{API}/builds/{row.id}/logs/build.log")
    assert r.headers["x-log-complete"] == "true" and r.text == text


def test_nobody_changes_a_finished_build(site: Site) -> None:
    done = site.pony.v1["build_id"]
    for method in ("PUT", "PATCH", "DELETE"):
        r = site.client.request(method, f"{API}/builds/{done}", headers=site.auth("root"),
                                json={"state": "failed"})
        assert r.status_code == 405, method
        assert "sealed" in r.json()["error"]["message"]
    assert site.client.post(f"{API}/builds/{done}/cancel",
                            headers=site.auth("root")).status_code == 409
    assert site.store.get(done).state == "done"
    changes = [e for e in site.audit() if e["action"] == "build.change" and e["target"] == done]
    assert len(changes) == 3 and {e["status"] for e in changes} == {405}


def test_submission_sources_are_checked(site: Site) -> None:
    alice = site.auth("alice")

    def post(body: dict[str, Any]) -> Any:
        return site.client.post(f"{API}/builds", json=body, headers=alice)

    r = post(_body(site, git="/etc"))
    assert r.status_code == 403 and "api.local_sources" in r.json()["error"]["message"]
    assert post(_body(site, git="relative/path")).status_code == 400
    assert post(_body(site, git="ext::sh -c touch% /tmp/pwned")).status_code == 400
    assert post(_body(site, git="ftp://example.invalid/x")).status_code == 400
    r = post(_body(site, recipe="../../etc/passwd"))
    assert r.status_code == 400 and r.json()["error"]["where"] == "source.recipe"
    assert post(_body(site, ref="--upload-pack=touch")).status_code == 400
    assert post({**_body(site), "extra": 1}).status_code == 422
    assert post({"source": {"git": str(site.repo)}}).status_code == 422
    r = post(_body(site, git=f"file://{site.repo}"))
    assert r.status_code == 202, r.text
    build_id = r.json()["build_id"]
    assert site.store.get(build_id).source_url == str(site.repo.resolve())
    assert site.client.post(f"{API}/builds/{build_id}/cancel",
                            headers=alice).status_code == 202


def test_submissions_are_rate_limited(site: Site) -> None:
    bob = site.auth("bob")
    statuses, ids = [], []
    for _ in range(5):
        r = site.client.post(f"{API}/builds", headers=bob, json=_body(
            site, git="https://git.example.invalid/pony.git"))
        statuses.append(r.status_code)
        if r.status_code == 202:
            ids.append(r.json()["build_id"])
        else:
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert statuses[:3] == [202, 202, 202] and statuses[3:] == [429, 429]
    for build_id in ids:
        assert site.client.post(f"{API}/builds/{build_id}/cancel",
                                headers=bob).status_code == 202
    assert sum(1 for e in site.audit() if e["action"] == "build.submit"
               and e["status"] == 429) >= 2


def test_tokens_made_listed_and_revoked_by_an_admin(site: Site) -> None:
    root = site.auth("root")
    r = site.client.post(f"{API}/tokens", json={"name": "ci-bot", "role": "reader"},
                         headers=root)
    assert r.status_code == 201, r.text
    secret = r.json()["token"]
    assert secret.startswith("alicorn_") and r.json()["role"] == "reader"
    who = site.client.get(f"{API}/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert who.json() == {"name": "ci-bot", "role": "reader", "anonymous": False}
    listed = site.client.get(f"{API}/tokens", headers=root)
    assert "ci-bot" in {t["name"] for t in listed.json()} and secret not in listed.text
    assert site.client.post(f"{API}/tokens", json={"name": "ci-bot", "role": "reader"},
                            headers=root).status_code == 409
    assert site.client.post(f"{API}/tokens", json={"name": "x", "role": "admin"},
                            headers=site.auth("alice")).status_code == 403
    assert site.client.post(f"{API}/tokens", json={"name": "Bad Name", "role": "reader"},
                            headers=root).status_code == 422
    assert site.client.get(f"{API}/audit", headers=site.auth("rita")).status_code == 403
    assert site.client.delete(f"{API}/tokens/ci-bot", headers=root).status_code == 200
    assert site.client.get(f"{API}/whoami", headers={"Authorization": f"Bearer {secret}"}
                           ).status_code == 401
    actions = {(e["action"], e["target"], e["outcome"]) for e in site.audit()}
    assert {("token.create", "ci-bot", "ok"), ("token.revoke", "ci-bot", "ok"),
            ("token.create", "ci-bot", "refused")} <= actions


def test_advisories_listed_searched_and_shown(site: Site) -> None:
    page = site.client.get(f"{API}/advisories", params={"limit": 5}).json()
    assert page["total"] == 16 and len(page["items"]) == 5
    rest = site.client.get(f"{API}/advisories", params={"limit": 500, "offset": 5}).json()
    ids = [a["id"] for a in page["items"] + rest["items"]]
    assert len(set(ids)) == 16 and "GHSA-jfh8-c2jp-5v3q" in ids
    log4j = site.client.get(f"{API}/advisories", params={"q": "CVE-2021-44228"}).json()
    assert [a["id"] for a in log4j["items"]] == ["GHSA-jfh8-c2jp-5v3q"]
    lodash = site.client.get(f"{API}/advisories", params={"q": "lodash"}).json()
    assert [a["id"] for a in lodash["items"]] == ["GHSA-35jh-r3h4-6jhm"]
    critical = site.client.get(f"{API}/advisories", params={"severity": "critical"}).json()
    assert critical["total"] == 7 and all(a["severity"] == "Critical"
                                          for a in critical["items"])
    one = site.client.get(f"{API}/advisories/GHSA-jfh8-c2jp-5v3q").json()
    assert one["cves"] == ["CVE-2021-44228"] and one["description"]
    assert any(x["name"] == "org.apache.logging.log4j:log4j-core"
               for x in one["affected_packages"])
    r = site.client.get(f"{API}/advisories/GHSA-nope")
    assert r.status_code == 404 and "GHSA-nope" in r.json()["error"]["message"]


def test_affected_images_are_the_pony_builds_before_the_fix(site: Site) -> None:
    advisory = "FEDORA-2024-b7e1c3d2a9"
    old = {site.pony.v1["build_id"], site.pony.broken["build_id"],
           site.pony.soured["build_id"]}
    # the current pony (v2) has the fixed busybox: no current image needs the update
    assert site.client.get(f"{API}/affected").json() == []
    every = site.client.get(f"{API}/affected", params={"all_builds": True}).json()
    assert {a["build_id"] for a in every} == old
    v1 = next(a for a in every if a["build_id"] == site.pony.v1["build_id"])
    assert v1["digest"] == site.pony.v1["digest"] and v1["advisories"] == [advisory]
    assert [(p["name"], p["installed"].split(":")[-1]) for p in v1["packages"]] == \
        [("busybox", "1.35.0-1.fc40")]
    assert v1["packages"][0]["fixed"].endswith("1.35.0-2.fc40")
    one = site.client.get(f"{API}/advisories/{advisory}").json()
    assert one["affected"] == [] and one["cves"] == ["CVE-2022-48174"]
    assert [p["name"] for p in one["fixed_packages"]] == ["busybox"]
    every = site.client.get(f"{API}/advisories/{advisory}",
                            params={"all_builds": True}).json()["affected"]
    assert {a["build_id"] for a in every} == old
    listed = site.client.get(f"{API}/advisories", params={"q": advisory}).json()["items"]
    assert [(a["id"], a["affected"]) for a in listed] == [(advisory, 0)]


def test_events_of_the_imported_advisories(site: Site) -> None:
    from alicorn.events.store import EventStore

    store = EventStore(site.settings.database_url)
    store.discover()
    listed = site.client.get(f"{API}/events", params={"limit": 500}).json()
    ours = {e["advisory"] for e in listed}
    assert {"GHSA-jfh8-c2jp-5v3q", "FEDORA-2024-b7e1c3d2a9"} <= ours
    one = next(e for e in listed if e["advisory"] == "GHSA-jfh8-c2jp-5v3q")
    detail = site.client.get(f"{API}/events/{one['id']}").json()
    assert detail["id"] == one["id"] and detail["cves"] == ["CVE-2021-44228"]
    assert detail["rebuilds"] == []
    new = site.client.get(f"{API}/events", params={"state": "new", "limit": 500}).json()
    assert new and all(e["state"] == "new" for e in new)
    assert site.client.get(f"{API}/events", params={"state": "bogus"}).status_code == 422
    assert site.client.get(f"{API}/events/{'a' * 24}").status_code == 404


def test_modules_and_their_rollout_history(site: Site) -> None:
    from alicorn.rollout.model import HistoryEntry, ModuleSpec
    from alicorn.rollout.store import ModuleStore

    store = ModuleStore(site.settings.database_url, site.settings.modules_dir)
    v1, v2 = site.pony.v1, site.pony.v2
    name = "api-test-pony"
    store.create(ModuleSpec(name=name, repository=site.pony.repository, port=18080))
    store.set_serving(name, digest=v2["digest"], image=v2["image"],
                      previous_digest=v1["digest"])
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.add_history(name, HistoryEntry(digest=v1["digest"], at=t, result="deployed"))
    store.add_history(name, HistoryEntry(digest=v2["digest"], at=t.replace(hour=4),
                                         result="updated", from_digest=v1["digest"]))
    listed = [m for m in site.client.get(f"{API}/modules").json() if m["module"] == name]
    assert [(m["digest"], m["port"], m["replicas"]) for m in listed] == \
        [(v2["digest"], 18080, 0)]
    one = site.client.get(f"{API}/modules/{name}").json()
    assert one["digest"] == v2["digest"] and one["previous_digest"] == v1["digest"]
    assert [(h["digest"], h["result"], h["at"]) for h in one["history"]] == [
        (v1["digest"], "deployed", "2026-01-02T03:04:05Z"),
        (v2["digest"], "updated", "2026-01-02T04:04:05Z")]
    assert one["builds"] == {v1["digest"]: v1["build_id"], v2["digest"]: v2["build_id"]}
    assert site.client.get(f"{API}/modules/nope").status_code == 404
    assert site.client.get(f"{API}/modules/Bad!").status_code == 422


def test_anonymous_reads_can_be_turned_off(site: Site) -> None:
    app = create_app(site.settings, ApiConfig(anonymous_read=False))
    with TestClient(app) as client:
        r = client.get(f"{API}/builds")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert client.get(f"{API}/builds", headers=site.auth("rita")).status_code == 200
        assert client.get(f"{API}/healthz").json() == {"ok": True}


def test_the_openapi_document_describes_the_routes(site: Site) -> None:
    doc = site.client.get(f"{API}/openapi.json").json()
    paths = doc["paths"]
    for path in ("/builds", "/builds/{build_id}", "/builds/{build_id}/cancel",
                 "/builds/{build_id}/logs/{name}/stream", "/trace/{digest}", "/search",
                 "/advisories/{advisory_id}", "/affected", "/events/{event_id}",
                 "/modules/{name}", "/log/entries/{index}", "/log/consistency", "/keys",
                 "/tokens", "/tokens/{name}", "/audit", "/whoami"):
        assert f"{API}{path}" in paths, path
    submit = paths[f"{API}/builds"]["post"]
    assert {"202", "401", "403", "429"} <= set(submit["responses"])
    assert set(paths[f"{API}/builds/{{build_id}}"]) >= {"get", "put", "patch", "delete"}
    schemas = doc["components"]["schemas"]
    assert schemas["SubmitIn"]["additionalProperties"] is False
    assert "verification" in schemas["Trace"]["properties"]
