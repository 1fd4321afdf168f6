"""``alicorn api``: tokens, the audit trail, the settings and the OpenAPI document, through
click's CliRunner on the group, against a real ALICORN_HOME (tmp)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from alicorn.cli.api import api
from alicorn.config import load_settings
from alicorn.web.auth import TokenStore
from alicorn.web.model import Role, load_api_config


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ALICORN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USER", "tester")
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.delenv("ALICORN_DATABASE_URL", raising=False)
    for key in ("anonymous_read", "submissions_per_minute", "listen", "max_body_bytes",
                "local_sources", "public_url"):
        monkeypatch.delenv(f"ALICORN_API_{key.upper()}", raising=False)
    return tmp_path / "home"


def run(*args: str) -> Result:
    return CliRunner().invoke(api, list(args), catch_exceptions=False)


def test_token_create_prints_the_secret_once(home: Path) -> None:
    r = run("token", "create", "ci-bot", "--role", "submitter")
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip()
    assert secret.startswith("alicorn_") and "\n" not in secret
    assert "shown this once only" in r.stderr and secret not in r.stderr
    who = TokenStore(load_settings().database_url).authenticate(secret)
    assert (who.name, who.role) == ("ci-bot", Role.SUBMITTER)

    r = run("token", "create", "ops", "--role", "ADMIN", "--json")
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    assert made["name"] == "ops" and made["role"] == "admin" and made["active"] is True
    assert made["token"].startswith(f"alicorn_{made['id']}_")

    for args in (("token", "list"), ("token", "list", "--json")):
        r = run(*args)
        assert r.exit_code == 0
        assert "ci-bot" in r.stdout and "ops" in r.stdout
        assert secret not in r.output and made["token"] not in r.output
        assert secret.split("_", 2)[2] not in r.output
    listed = json.loads(run("token", "list", "--json").stdout)
    assert [(t["name"], t["role"], t["active"]) for t in listed] == [
        ("ci-bot", "submitter", True), ("ops", "admin", True)]
    assert all(t["created_by"] == listed[0]["created_by"] for t in listed)
    assert listed[0]["created_by"].startswith("cli:tester@")


def test_token_errors_exit_2_with_a_clear_message(home: Path) -> None:
    assert run("token", "create", "ci", "--role", "reader").exit_code == 0
    r = run("token", "create", "ci", "--role", "reader")
    assert r.exit_code == 2 and "a token named 'ci' exists already" in r.stderr
    r = run("token", "create", "Bad Name", "--role", "reader")
    assert r.exit_code == 2 and "[a-z0-9][a-z0-9._-]{0,63}" in r.stderr
    r = run("token", "create", "x", "--role", "root")
    assert r.exit_code == 2 and "'root' is not one of" in r.stderr
    r = run("token", "create", "x")
    assert r.exit_code == 2 and "--role" in r.stderr
    r = run("token", "revoke", "nope")
    assert r.exit_code == 2 and "no token named 'nope'" in r.stderr
    assert "Traceback" not in r.output


def test_token_revoke_and_the_audit_trail(home: Path) -> None:
    secret = run("token", "create", "ci", "--role", "reader").stdout.strip()
    r = run("token", "revoke", "ci")
    assert r.exit_code == 0 and r.stdout.strip() == "token ci revoked"
    r = run("token", "revoke", "ci")
    assert r.exit_code == 2 and "revoked already" in r.stderr
    store = TokenStore(load_settings().database_url)
    with pytest.raises(Exception, match="token ci was revoked at"):
        store.authenticate(secret)
    listed = json.loads(run("token", "list", "--json").stdout)
    assert listed[0]["active"] is False and listed[0]["revoked_at"]
    assert "revoked 20" in run("token", "list").stdout

    r = run("audit", "--json")
    assert r.exit_code == 0
    entries = json.loads(r.stdout)
    assert [(e["action"], e["target"], e["outcome"], e["status"]) for e in entries] == [
        ("token.revoke", "ci", "failed", 409),
        ("token.revoke", "ci", "ok", 200),
        ("token.create", "ci", "ok", 201),
    ]
    assert all(e["actor"].startswith("cli:tester@") and e["role"] == "admin"
               for e in entries)
    assert secret not in r.stdout
    r = run("audit", "--limit", "1")
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "token.revoke" in lines[0] and "failed" in lines[0]
    assert run("audit", "--limit", "0").exit_code == 2


def test_config_show_get_set(home: Path) -> None:
    r = run("config")
    assert r.exit_code == 0
    assert "anonymous_read = true" in r.stdout.splitlines()
    assert 'listen = "127.0.0.1:8440"' in r.stdout.splitlines()
    shown = json.loads(run("config", "--json").stdout)
    assert shown["submissions_per_minute"] == 10 and shown["local_sources"] == []
    assert run("config", "submissions_per_minute").stdout.strip() == \
        "submissions_per_minute = 10"

    r = run("config", "anonymous_read", "off")
    assert r.exit_code == 0 and r.stdout.strip() == "anonymous_read = false"
    r = run("config", "local_sources", "/srv/git,/tmp/x")
    assert r.exit_code == 0 and '"/srv/git"' in r.stdout
    settings = load_settings()
    config = load_api_config(settings)
    assert config.anonymous_read is False and config.local_sources == ["/srv/git", "/tmp/x"]
    stored = json.loads((home / "config.json").read_text())
    assert "registry_port" in stored and stored["api"]["anonymous_read"] is False

    entries = json.loads(run("audit", "--json").stdout)
    assert [(e["action"], e["target"]) for e in entries] == [
        ("config.set", "local_sources"), ("config.set", "anonymous_read")]
    assert entries[1]["detail"] == "true -> false"


def test_config_errors_exit_2(home: Path) -> None:
    r = run("config", "nope")
    assert r.exit_code == 2 and "unknown setting 'nope'" in r.stderr
    assert "anonymous_read" in r.stderr        # the hint lists the settings
    r = run("config", "nope", "1")
    assert r.exit_code == 2 and "unknown setting 'nope'" in r.stderr
    r = run("config", "--", "submissions_per_minute", "-1")
    assert r.exit_code == 2
    assert "api: submissions_per_minute cannot be -1 (it is now 10)" in r.stderr
    r = run("config", "anonymous_read", "perhaps")
    assert r.exit_code == 2 and "anonymous_read cannot be 'perhaps'" in r.stderr
    r = run("config", "listen", "nowhere")
    assert r.exit_code == 2 and "is not HOST:PORT" in r.stderr
    # Nothing was saved.
    assert load_api_config(load_settings()).listen == "127.0.0.1:8440"
    failed = json.loads(run("audit", "--json").stdout)
    assert {(e["target"], e["outcome"], e["status"]) for e in failed} == {
        ("submissions_per_minute", "failed", 400), ("anonymous_read", "failed", 400),
        ("listen", "failed", 400)}


def test_config_set_does_not_save_environment_overrides(home: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("ALICORN_API_ANONYMOUS_READ", "0")
    assert run("config", "anonymous_read").stdout.strip() == "anonymous_read = false"
    r = run("config", "submissions_per_minute", "3")
    assert r.exit_code == 0
    stored = json.loads((home / "config.json").read_text())["api"]
    assert stored["anonymous_read"] is True and stored["submissions_per_minute"] == 3
    r = run("config", "anonymous_read", "1")
    assert "ALICORN_API_ANONYMOUS_READ overrides it" in r.stderr


def test_openapi(home: Path) -> None:
    r = run("openapi")
    assert r.exit_code == 0
    document = json.loads(r.stdout)
    assert document["openapi"].startswith("3.") and document["info"]["title"] == "Alicorn"
    assert any(p.endswith("/tokens") for p in document["paths"])
