"""The server-rendered pages (Jinja2 templates in ``templates/``, one stylesheet and one
small script in ``static/``).

OWNER: helper "pages" (issue 7).  See notes/ISSUE7-CONTRACT.md for the pages and element ids.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)


def render_error(request: Request, status: int, message: str, *, hint: str | None = None,
                 headers: dict[str, str] | None = None) -> HTMLResponse:
    """An error as an HTML page (the status, what was wrong, the hint), escaped."""
    raise NotImplementedError


def mount_static(app: FastAPI) -> None:
    """Serve ``static/`` under ``/static``."""
