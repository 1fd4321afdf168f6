"""The audit trail: every write asked of the API, allowed or refused, one append-only row.

The table ``api_audit`` refuses UPDATE and DELETE by trigger (migration 0008), so an entry,
once written, stays as written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from alicorn.errors import StoreError
from alicorn.store.api_models import AuditRow
from alicorn.store.db import session_factory
from alicorn.web.model import Principal

OUTCOMES = ("ok", "refused", "failed")
MAX_DETAIL = 4000          # characters of detail kept (the column is TEXT; entries stay small)
MAX_LIMIT = 1000


def _clip(value: str | None, size: int) -> str | None:
    if value is None:
        return None
    value = str(value)
    return value if len(value) <= size else value[:size - 1] + "…"


class AuditTrail:
    """Appends to and reads the audit trail (table ``api_audit``)."""

    def __init__(self, database_url: str):
        self._sessions = session_factory(database_url)

    def record(self, who: Principal, action: str, *, target: str | None, outcome: str,
               status: int, detail: str | None = None, remote: str | None = None) -> None:
        """Append one entry (outcome: ok | refused | failed).  Text longer than its column is
        cut, never refused; a database that cannot be written is a StoreError."""
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome {outcome!r} is not one of {OUTCOMES}")
        row = AuditRow(
            at=datetime.now(UTC).replace(tzinfo=None),
            actor=_clip(who.name, 128) or "?",
            role=_clip(who.role.value if who.role is not None else "anonymous", 16) or "?",
            action=_clip(action, 64) or "?", target=_clip(target, 256),
            outcome=outcome, status=int(status), detail=_clip(detail, MAX_DETAIL),
            remote=_clip(remote, 64))
        try:
            with self._sessions.begin() as s:
                s.add(row)
        except SQLAlchemyError as e:
            raise StoreError(f"cannot write the audit trail: {e}") from e

    def entries(self, *, limit: int = 100, before: int | None = None,
                actor: str | None = None) -> list[dict[str, Any]]:
        """Newest first: {id, at, actor, role, action, target, outcome, status, detail,
        remote}; at most ``limit`` (1 to 1000) entries with ids below ``before``."""
        limit = max(1, min(int(limit), MAX_LIMIT))
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if before is not None:
            query = query.where(AuditRow.id < int(before))
        if actor is not None:
            query = query.where(AuditRow.actor == actor)
        with self._sessions() as s:
            rows = s.scalars(query).all()
        return [{"id": r.id, "at": r.at.isoformat() + "Z", "actor": r.actor, "role": r.role,
                 "action": r.action, "target": r.target, "outcome": r.outcome,
                 "status": r.status, "detail": r.detail, "remote": r.remote} for r in rows]
