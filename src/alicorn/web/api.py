"""The JSON API under ``/api/v1`` (its OpenAPI document: ``/api/v1/openapi.json``).

OWNER: helper "api" (issue 7).  See notes/ISSUE7-CONTRACT.md for the routes.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
