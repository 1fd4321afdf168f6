"""``alicorn api``: the HTTP API's tokens, audit trail and settings, and its OpenAPI document.

Every change made here (token create/revoke, a setting) is written to the audit trail as the
admin ``cli:USER@HOST``, like the same change made through the API.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from alicorn.errors import Error

if TYPE_CHECKING:
    from alicorn.config import Settings
    from alicorn.web.model import Principal

__all__ = ["api"]

ROLES = ("reader", "submitter", "admin")


class _Group(click.Group):
    """Prints Alicorn errors without a traceback, with their exit code (as the top-level
    `alicorn` group does), so the group also works on its own."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Error as e:
            click.echo(f"error: {e.diagnostics()}", err=True)
            sys.exit(e.exit_code)


def _settings() -> Settings:
    from alicorn.config import load_settings

    return load_settings()


def _actor() -> Principal:
    from alicorn.web.model import Principal, Role

    user = os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())
    return Principal(name=f"cli:{user}@{os.uname().nodename}", role=Role.ADMIN)


def _audited(settings: Settings, action: str, target: str | None, ok_status: int,
             work: Callable[[], Any], detail: str | Callable[[], str] | None = None) -> Any:
    """Run ``work()`` and record it in the audit trail: ok, or failed with the status the API
    would answer the error with."""
    from alicorn.web.audit import AuditTrail

    trail = AuditTrail(settings.database_url)
    try:
        result = work()
    except Error as e:
        from alicorn.web.app import status_of

        trail.record(_actor(), action, target=target, outcome="failed", status=status_of(e),
                     detail=e.message)
        raise
    trail.record(_actor(), action, target=target, outcome="ok", status=ok_status,
                 detail=detail() if callable(detail) else detail)
    return result


@click.group("api", cls=_Group)
def api() -> None:
    """The HTTP API (served by `alicorn serve`): its tokens, the audit trail of its writes,
    its settings and its OpenAPI document."""


@api.group("token")
def token() -> None:
    """Bearer tokens: reader (reads), submitter (+ submit builds, cancel its own), admin
    (+ cancel any build, manage tokens, read the audit trail)."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES, case_sensitive=False), required=True,
              help="What the token may do.")
@click.option("--json", "as_json", is_flag=True,
              help="The token's info and secret as one JSON object.")
def token_create(name: str, role: str, as_json: bool) -> None:
    """Make a token NAME and print its secret: it is shown this once only (the service keeps
    its SHA-256)."""
    from alicorn.web.auth import TokenStore
    from alicorn.web.model import Role

    settings = _settings()
    store = TokenStore(settings.database_url)
    actor = _actor()
    info, secret = _audited(settings, "token.create", name, 201,
                            lambda: store.create(name, Role.parse(role), created_by=actor.name),
                            detail=f"role {role.lower()}")
    if as_json:
        click.echo(json.dumps({**info.to_json(), "token": secret}, sort_keys=True))
        return
    click.echo(f"token {info.name} (role {info.role.value}, id {info.id}) created; its "
               "secret follows, shown this once only:", err=True)
    click.echo(secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
def token_list(as_json: bool) -> None:
    """Every token, active or revoked (never a secret)."""
    from alicorn.web.auth import TokenStore

    tokens = TokenStore(_settings().database_url).list()
    if as_json:
        click.echo(json.dumps([t.to_json() for t in tokens], indent=2, sort_keys=True))
        return
    if not tokens:
        click.echo("no tokens (`alicorn api token create NAME --role R` makes one)", err=True)
    for t in tokens:
        def stamp(value: Any) -> str:
            return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"
        state = f"revoked {stamp(t.revoked_at)}" if t.revoked_at else "active"
        click.echo("\t".join([t.name, t.role.value, t.id, state,
                              f"created {stamp(t.created_at)} by {t.created_by}",
                              f"last used {stamp(t.last_used_at)}"]))


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke the token NAME: it authenticates nothing from now on (a running service stops
    believing it within 5 seconds)."""
    from alicorn.web.auth import TokenStore

    settings = _settings()
    store = TokenStore(settings.database_url)
    info = _audited(settings, "token.revoke", name, 200, lambda: store.revoke(name))
    click.echo(f"token {info.name} revoked")


@api.command("audit")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many entries, newest first.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
def audit(limit: int, as_json: bool) -> None:
    """The audit trail: every write asked of the API (and of `alicorn api`), allowed or
    refused, newest first."""
    from alicorn.web.audit import AuditTrail

    entries = AuditTrail(_settings().database_url).entries(limit=limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2, sort_keys=True))
        return
    if not entries:
        click.echo("the audit trail is empty", err=True)
    for e in entries:
        click.echo("\t".join(str(v) if v is not None else "-" for v in (
            e["id"], e["at"], e["actor"], e["role"], e["action"], e["target"], e["outcome"],
            e["status"], e["detail"])))


@api.command("config")
@click.argument("key", required=False)
@click.argument("value", required=False)
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def config(key: str | None, value: str | None, as_json: bool) -> None:
    """Show the API's settings, show one (KEY), or set one (KEY VALUE; saved in
    $ALICORN_HOME/config.json, used from the service's next start)."""
    from alicorn.errors import BadInput
    from alicorn.web.model import ApiConfig, load_api_config, save_api_config

    settings = _settings()
    if key is not None and key not in ApiConfig.names():
        raise BadInput(f"unknown setting {key!r}", hint="settings: "
                       + ", ".join(ApiConfig.names()))
    if value is None:
        current = load_api_config(settings).to_json()
        shown = current if key is None else {key: current[key]}
        if as_json:
            click.echo(json.dumps(shown if key is None else current[key], indent=2,
                                  sort_keys=True))
        else:
            for name, v in shown.items():
                click.echo(f"{name} = {json.dumps(v)}")
        return
    assert key is not None
    # The stored settings, without this process's ALICORN_API_* overrides (which must not
    # end up in config.json).
    path = settings.home / "config.json"
    try:
        stored = json.loads(path.read_text()).get("api") if path.exists() else None
    except json.JSONDecodeError as e:
        raise BadInput(f"config.json is not valid JSON: {e}", where=str(path)) from e
    conf = ApiConfig.from_json(stored, where=f"{path}: api")
    old = getattr(conf, key)

    def change() -> None:
        conf.set(key, value, where="api")
        save_api_config(settings, conf)

    _audited(settings, "config.set", key, 200, change,
             detail=lambda: f"{json.dumps(old)} -> {json.dumps(getattr(conf, key))}")
    new = getattr(conf, key)
    click.echo(json.dumps(new) if as_json else f"{key} = {json.dumps(new)}")
    if f"ALICORN_API_{key.upper()}" in os.environ:
        click.echo(f"note: ALICORN_API_{key.upper()} overrides it in this environment",
                   err=True)
    from alicorn.web.server import ApiServer

    if ApiServer.detached_url(settings) is not None:
        click.echo("note: the API serving this home reads its settings when it starts: "
                   "restart it (`alicorn down`, then `alicorn serve`) for this to apply",
                   err=True)


@api.command("openapi")
def openapi() -> None:
    """Print the API's OpenAPI document (JSON)."""
    from alicorn.web.app import create_app

    click.echo(json.dumps(create_app(_settings()).openapi(), indent=2))
