"""Tokens and roles: who a request is, and whether it may do what it asks.

A token is ``alicorn_<id>_<secret>``, shown once when made; the database keeps its SHA-256
only.  Requests carry it as ``Authorization: Bearer <token>``; the pages keep it in an HttpOnly,
SameSite=Strict cookie (``COOKIE``) set by the login form.  A request without a token is the
anonymous reader when ``ApiConfig.anonymous_read`` is on, and gets a 401 otherwise.

OWNER: helper "auth" (issue 7).  The signatures below are the contract other modules use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from alicorn.web.model import Principal, Role

if TYPE_CHECKING:
    from fastapi import Request

COOKIE = "alicorn_token"


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never its secret)."""

    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None

    def to_json(self) -> dict[str, object]:
        raise NotImplementedError


class TokenStore:
    def __init__(self, database_url: str):
        raise NotImplementedError

    def create(self, name: str, role: Role, *, created_by: str) -> tuple[TokenInfo, str]:
        """A new token: its info and its secret (the only time the secret exists)."""
        raise NotImplementedError

    def list(self) -> list[TokenInfo]:
        raise NotImplementedError

    def revoke(self, name: str) -> TokenInfo:
        raise NotImplementedError

    def authenticate(self, secret: str) -> Principal:
        """The principal of a presented token; Unauthorized (naming why: malformed, unknown,
        revoked) otherwise."""
        raise NotImplementedError


def principal(request: Request) -> Principal:
    """FastAPI dependency: who the request is (Bearer header, else the cookie, else
    anonymous — which is refused with 401 when anonymous reads are off)."""
    raise NotImplementedError


def reader(request: Request) -> Principal:
    """Dependency for reads: anonymous allowed when the setting says so."""
    raise NotImplementedError


def submitter(request: Request) -> Principal:
    """Dependency for submissions: a token with role submitter or admin (401 / 403)."""
    raise NotImplementedError


def admin(request: Request) -> Principal:
    """Dependency for token management and the audit trail: role admin (401 / 403)."""
    raise NotImplementedError
