"""The audit trail: every write asked of the API, allowed or refused, one append-only row.

OWNER: helper "auth" (issue 7).
"""

from __future__ import annotations

from typing import Any

from alicorn.web.model import Principal


class AuditTrail:
    def __init__(self, database_url: str):
        raise NotImplementedError

    def record(self, who: Principal, action: str, *, target: str | None, outcome: str,
               status: int, detail: str | None = None, remote: str | None = None) -> None:
        """Append one entry (outcome: ok | refused | failed)."""
        raise NotImplementedError

    def entries(self, *, limit: int = 100, before: int | None = None,
                actor: str | None = None) -> list[dict[str, Any]]:
        """Newest first: {id, at, actor, role, action, target, outcome, status, detail,
        remote}."""
        raise NotImplementedError
