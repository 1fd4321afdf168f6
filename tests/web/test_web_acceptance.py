"""Issue 7's acceptance, tried as a new user would, end to end: a real ``alicorn serve
--api-only`` process, a real build of the RPM pony from a git repository, real tokens made
with the CLI, and plain HTTP calls (what curl would send).

A submitter submits a build through the API and follows its log to the end; the image's
digest leads back to the build, whose downloads (record, provenance, SBOMs, log) are what
``alicorn trace --json`` says they are, and whose record the transparency log's inclusion proof
covers; then the submitter, another submitter, a revoked token, anonymous and the admin each
try to change the finished build and are refused (405, 409, 403, 401), the build staying as
it was; every one of those writes is a row of ``alicorn api audit``.  Eleven quick submissions
get a 429 with Retry-After.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alicorn.chain.keys import PublicKey
from alicorn.chain.translog import LogError, SignedTreeHead, verify_inclusion
from conftest import EXAMPLES, Cli, git_repo, require

pytestmark = pytest.mark.integration

BUILD_WAIT = 240.0      # seconds the RPM pony may take, queued to sealed, on a busy host
HEAD_FIELDS = ("log", "tree_size", "root_hash", "timestamp", "key_id", "signature")


# -- helpers ----------------------------------------------------------------------------------
def make_token(cli: Cli, name: str, role: str) -> str:
    """`alicorn api token create NAME --role ROLE --json`: the secret, shown once."""
    made = json.loads(cli("api", "token", "create", name, "--role", role, "--json",
                          check=True).stdout)
    assert made["name"] == name and made["role"] == role, made
    secret: str = made["token"]
    assert secret.startswith(f"alicorn_{made['id']}_"), made
    return secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The JSON error body of ``resp``, which must have ``status``."""
    assert resp.status_code == status, (resp.request.method, resp.request.url,
                                        resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    error: dict[str, Any] = resp.json()["error"]
    assert error["status"] == status and error["message"], error
    return error


def follow_log(client: httpx.Client, build_id: str) -> tuple[str, str]:
    """Follow build.log's server-sent events to their 'end': (the text, the final state)."""
    text: list[str] = []
    offset = 0
    event = ""
    deadline = time.monotonic() + BUILD_WAIT
    while time.monotonic() < deadline:
        headers = {"Last-Event-ID": str(offset)} if offset else {}
        try:
            with client.stream("GET", f"/api/v1/builds/{build_id}/logs/build.log/stream",
                               headers=headers, timeout=httpx.Timeout(10, read=60)) as resp:
                if resp.status_code == 404:       # queued: no log yet
                    time.sleep(0.5)
                    continue
                assert resp.status_code == 200, resp.read()[:500]
                assert resp.headers["content-type"].startswith("text/event-stream")
                for line in resp.iter_lines():
                    if line.startswith("event: "):
                        event = line[len("event: "):]
                    elif line.startswith("data: "):
                        data = json.loads(line[len("data: "):])
                        if event == "append":
                            text.append(data["text"])
                            offset = data["offset"]
                        elif event == "end":
                            return "".join(text), str(data["state"])
        except httpx.ReadTimeout:
            continue                              # reconnect where it stopped
    raise AssertionError(f"build {build_id}'s log did not end within {BUILD_WAIT:g} s; "
                         f"so far:\n{''.join(text)[-2000:]}")


def audit_rows(cli: Cli) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        cli("api", "audit", "--limit", "1000", "--json", check=True).stdout)
    return rows


def find_row(rows: list[dict[str, Any]], **want: Any) -> dict[str, Any]:
    for row in rows:
        if all(row.get(k) == v for k, v in want.items()):
            return row
    raise AssertionError(f"no audit row with {want}; the rows:\n" + "\n".join(
        f"{r['actor']} {r['action']} {r['target']} {r['outcome']} {r['status']}"
        for r in rows))


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def pony_repo(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """(the directory local submissions may come from, a git repository in it holding the RPM
    pony with its locally built package repository, its commit)."""
    require("git", "rpmbuild", "createrepo_c", "dnf", "podman", "skopeo", "docker-registry")
    sources = tmp_path / "sources"
    work = tmp_path / "pony-src"
    shutil.copytree(EXAMPLES / "pony" / "rpm", work, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(work / "build-repo"), str(work / "repo"), "--version", "1"],
                   check=True, capture_output=True)
    repo = sources / "pony"
    commit = git_repo(work, repo)
    yield sources, repo, commit


# -- the acceptance ---------------------------------------------------------------------------
def test_a_submitter_builds_traces_and_cannot_change_its_build(
        cli: Cli, api_server: Any, pony_repo: tuple[Path, Path, str]) -> None:
    sources, repo, commit = pony_repo
    # What the README says to do: tokens, the local directory submissions come from, serve.
    alice = make_token(cli, "alice", "submitter")
    bob = make_token(cli, "bob", "submitter")
    admin = make_token(cli, "root", "admin")
    gone = make_token(cli, "gone", "submitter")
    cli("api", "token", "revoke", "gone", check=True)
    cli("api", "config", "local_sources", str(sources), check=True)
    url = api_server(cli.home)
    client = httpx.Client(base_url=url, timeout=30)

    # 1. Submit with the submitter's token.
    body = {"source": {"git": str(repo), "ref": "main", "recipe": "pony.yaml"}}
    resp = client.post("/api/v1/builds", json=body, headers=bearer(alice))
    assert resp.status_code == 202, resp.text
    submitted = resp.json()
    build_id = submitted["build_id"]
    assert submitted["state"] in ("queued", "running")
    assert resp.headers["location"] == submitted["url"] == f"/api/v1/builds/{build_id}"

    # 2. Follow it: the log streams to its end, and the build is done.
    log_text, final = follow_log(client, build_id)
    assert final == "done", log_text[-3000:]
    assert f"build {build_id} on" in log_text and "the build log ends here" in log_text
    build = client.get(f"/api/v1/builds/{build_id}").json()
    assert build["state"] == "done", build
    assert build["submitter"] == "alice"
    assert build["source"] == {"url": str(repo), "ref": "main", "commit": commit}
    assert build["argv"][:3] == ["alicorn-api", "POST", "/api/v1/builds"]
    digest = build["digest"]
    assert digest.startswith("sha256:") and f"image {digest}" in log_text

    # 3. Trace it by digest: the API and `alicorn trace --json` tell the same story.
    traced = client.get(f"/api/v1/trace/{digest}").json()
    assert traced["id"] == build_id and traced["verification"]["verified"] is True, traced
    assert all(check["ok"] for check in traced["verification"]["checks"])
    rc, cli_trace = cli.json("trace", digest)
    assert rc == 0 and cli_trace["build_id"] == build_id and cli_trace["verified"] is True
    for key in ("digest", "image", "state", "source", "argv", "inputs", "sboms",
                "transparency_log", "packages"):
        assert traced[key] == cli_trace[key], key
    search = client.get("/api/v1/search", params={"q": f"  {digest} "}).json()
    assert search["build_id"] == build_id and search["url"] == f"/builds/{build_id}"

    # The downloads are the bytes the trace names.
    record = client.get(f"/api/v1/builds/{build_id}/record")
    assert record.status_code == 200
    record_digest = "sha256:" + hashlib.sha256(record.content).hexdigest()
    assert record_digest == cli_trace["transparency_log"]["record_digest"]
    provenance = client.get(f"/api/v1/builds/{build_id}/provenance").json()
    assert provenance == cli_trace["provenance"]
    for fmt, name in (("cyclonedx", "sbom.cdx.json"), ("spdx", "sbom.spdx.json")):
        sbom = client.get(f"/api/v1/builds/{build_id}/sbom/{fmt}")
        assert sbom.status_code == 200, sbom.text
        assert "sha256:" + hashlib.sha256(sbom.content).hexdigest() == cli_trace["sboms"][name]
    log = client.get(f"/api/v1/builds/{build_id}/logs/build.log")
    assert log.headers["x-log-complete"].lower() == "true"
    assert "sha256:" + hashlib.sha256(log.content).hexdigest() == cli_trace["log"]["digest"]

    # The transparency log: the record is its entry, under a signed head, by the proof given.
    index = cli_trace["transparency_log"]["record_index"]
    entry = client.get(f"/api/v1/log/entries/{index}").json()
    entry_bytes = base64.b64decode(entry["data"])
    assert entry_bytes == record.content and entry["subject"] == digest
    head = SignedTreeHead.from_json({k: entry["head"][k] for k in HEAD_FIELDS})
    keys = {k["key_id"]: k for k in client.get("/api/v1/keys").json()}
    public_key = PublicKey.from_json(keys[head.key_id])
    proof = [bytes.fromhex(h) for h in entry["inclusion_proof"]]
    verify_inclusion(entry_bytes, index, proof, head, public_key=public_key)
    with pytest.raises(LogError):
        verify_inclusion(entry_bytes + b" ", index, proof, head, public_key=public_key)

    # 4. Nobody changes the finished build.
    path = f"/api/v1/builds/{build_id}"
    change = {"state": "failed", "digest": "sha256:" + "0" * 64}
    for method in ("PUT", "PATCH", "DELETE"):
        for who in (alice, admin):
            error = error_of(client.request(method, path, json=change, headers=bearer(who)),
                             405)
            assert "sealed" in error["message"]
    for sub in ("record", "provenance", "sbom/spdx", "logs/build.log"):
        for method in ("PUT", "POST", "DELETE"):
            error_of(client.request(method, f"{path}/{sub}", content=b"{}",
                                    headers=bearer(alice)), 405)
    for who in (alice, admin):
        error = error_of(client.post(f"{path}/cancel", headers=bearer(who)), 409)
        assert "has ended" in error["message"] and "sealed" in error["message"]
    error = error_of(client.post(f"{path}/cancel", headers=bearer(bob)), 403)
    assert "alice" in error["message"]
    error_of(client.post(f"{path}/cancel", headers=bearer(gone)), 401)
    error_of(client.post(f"{path}/cancel"), 401)              # anonymous, reads are open
    error_of(client.post("/api/v1/tokens", json={"name": "evil", "role": "admin"},
                         headers=bearer(alice)), 403)
    # The login cookie from another site's page is refused too.
    login = client.post("/login", data={"token": alice}, headers={"Origin": url},
                        follow_redirects=False)
    assert login.status_code == 303 and "alicorn_token" in login.cookies
    cookies = {"alicorn_token": login.cookies["alicorn_token"]}
    error_of(httpx.post(f"{url}{path}/cancel", cookies=cookies, timeout=30,
                        headers={"Origin": "http://evil.example"}), 403)

    # ... and it is as it was.
    after = client.get(path).json()
    for key in ("state", "digest", "image", "finished_at", "transparency_log", "error"):
        assert after[key] == build[key], key
    assert client.get(f"{path}/record").content == record.content
    assert client.get("/api/v1/tokens", headers=bearer(admin)).json() and all(
        t["name"] != "evil" for t in client.get("/api/v1/tokens", headers=bearer(admin)).json())

    # 5. Every write is in the audit trail, allowed or refused.
    rows = audit_rows(cli)
    submit = find_row(rows, actor="alice", action="build.submit", target=build_id)
    assert submit["outcome"] == "ok" and submit["status"] == 202
    for method in ("PUT", "PATCH", "DELETE"):
        for actor in ("alice", "root"):
            row = find_row(rows, actor=actor, action="build.change", target=build_id,
                           detail=f"{method} refused: sealed")
            assert row["outcome"] == "refused" and row["status"] == 405
    for actor, status in (("alice", 409), ("root", 409), ("bob", 403)):
        find_row(rows, actor=actor, action="build.cancel", target=build_id,
                 outcome="refused", status=status)
    find_row(rows, action="build.cancel", target=build_id, outcome="refused", status=401)
    find_row(rows, actor="alice", action="token.create", outcome="refused", status=403)
    find_row(rows, actor="alice", action="login", outcome="ok")
    cookie_cancel = find_row(rows, actor="alice", action="build.cancel", target=build_id,
                             status=403)
    assert "Origin" in cookie_cancel["detail"]
    for name in ("alice", "bob", "root", "gone"):
        find_row(rows, action="token.create", target=name, outcome="ok")
    find_row(rows, action="token.revoke", target="gone", outcome="ok")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))

    # 6. Rate limit: ten quick submissions are taken, the eleventh gets a 429.
    quick = {"source": {"git": str(repo), "ref": "no-such-ref", "recipe": "pony.yaml"}}
    answers = [client.post("/api/v1/builds", json=quick, headers=bearer(bob))
               for _ in range(11)]
    assert [a.status_code for a in answers[:10]] == [202] * 10, answers[-1].text
    error = error_of(answers[10], 429)
    assert "submissions_per_minute" in error["message"]
    assert int(answers[10].headers["retry-after"]) >= 1
    find_row(audit_rows(cli), actor="bob", action="build.submit", outcome="refused",
             status=429)
    # The queued ones end, failed with a reason, and leave alice's build alone.
    deadline = time.monotonic() + 60
    queued = {a.json()["build_id"] for a in answers[:10]}
    while time.monotonic() < deadline:
        states = {b["id"]: b for b in client.get("/api/v1/builds", params={"limit": 50}).json()}
        if all(states[b]["state"] == "failed" for b in queued):
            break
        time.sleep(0.5)
    assert all(states[b]["state"] == "failed" for b in queued), states
    failed = client.get(f"/api/v1/builds/{sorted(queued)[0]}").json()
    assert "no-such-ref" in failed["error"]
    assert client.get(path).json()["state"] == "done"
