"""The audit trail: entries in order, long text cut to size, and append-only in the database
itself (a real SQLite store in a tmp ALICORN_HOME)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from alicorn.config import Settings, load_settings
from alicorn.store.db import engine_for
from alicorn.web.audit import AuditTrail
from alicorn.web.model import ANONYMOUS, Principal, Role


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ALICORN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ALICORN_DATABASE_URL", raising=False)
    return load_settings()


ADMIN = Principal("ops", Role.ADMIN, "0123abcd")


def test_entries_newest_first_with_paging_and_actor(settings: Settings) -> None:
    trail = AuditTrail(settings.database_url)
    trail.record(ADMIN, "token.create", target="ci", outcome="ok", status=201,
                 detail="role submitter", remote="127.0.0.1")
    trail.record(ANONYMOUS, "build.submit", target=None, outcome="refused", status=401)
    trail.record(ADMIN, "build.cancel", target="abc", outcome="failed", status=409,
                 detail="build abc has ended")
    entries = trail.entries()
    assert [e["action"] for e in entries] == ["build.cancel", "build.submit", "token.create"]
    first = entries[-1]
    assert {k: v for k, v in first.items() if k not in ("id", "at")} == {
        "actor": "ops", "role": "admin", "action": "token.create", "target": "ci",
        "outcome": "ok", "status": 201, "detail": "role submitter", "remote": "127.0.0.1"}
    assert first["at"].endswith("Z") and first["at"].startswith("20")
    assert entries[1]["role"] == "anonymous" and entries[1]["actor"] == "anonymous"
    assert [e["action"] for e in trail.entries(limit=1)] == ["build.cancel"]
    assert [e["action"] for e in trail.entries(before=entries[1]["id"])] == ["token.create"]
    assert [e["action"] for e in trail.entries(actor="ops")] == ["build.cancel",
                                                                "token.create"]
    assert trail.entries(limit=0) == trail.entries(limit=1)      # clamped, not an error


def test_too_long_text_is_cut_not_refused(settings: Settings) -> None:
    trail = AuditTrail(settings.database_url)
    trail.record(Principal("n" * 300, Role.SUBMITTER, "1"), "a" * 100, target="t" * 1000,
                 outcome="refused", status=403, detail="d" * 100_000, remote="r" * 100)
    entry = trail.entries()[0]
    assert len(entry["actor"]) == 128 and entry["actor"].endswith("…")
    assert len(entry["action"]) == 64
    assert len(entry["target"]) == 256
    assert len(entry["remote"]) == 64
    assert 100 < len(entry["detail"]) <= 4000


def test_unknown_outcome_is_a_bug(settings: Settings) -> None:
    with pytest.raises(ValueError, match="outcome"):
        AuditTrail(settings.database_url).record(ADMIN, "x", target=None, outcome="maybe",
                                                 status=200)


def test_the_trail_is_append_only_in_the_database(settings: Settings) -> None:
    trail = AuditTrail(settings.database_url)
    trail.record(ADMIN, "token.revoke", target="ci", outcome="ok", status=200)
    engine = engine_for(settings.database_url)
    assert engine.dialect.name == "sqlite"
    for sql in ("UPDATE api_audit SET outcome = 'refused'", "DELETE FROM api_audit"):
        with pytest.raises(SQLAlchemyError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    entries = trail.entries()
    assert len(entries) == 1 and entries[0]["outcome"] == "ok"
    # Appending still works after the refusals.
    trail.record(ADMIN, "token.create", target="ci2", outcome="ok", status=201)
    assert len(trail.entries()) == 2
