"""The web service's shared vocabulary: roles, the principal of a request, the API settings,
the errors it answers with, and the names a build's files are served under.

Every module of :mod:`alicorn.web` uses these; nothing here imports FastAPI.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from alicorn.config import Settings
from alicorn.errors import BadInput, Error, StoreError

API_PREFIX = "/api/v1"
DEFAULT_LISTEN = "127.0.0.1:8440"

# The logs of a build, by the names the API and the pages serve them under (the file names in
# the build's directory).  Anything else asked for is a 404: no path ever reaches the disk.
LOG_NAMES = ("build.log", "checks.log", "publish.log")
# SBOM formats served, and their files (alicorn.chain.record names).
SBOM_FORMATS = {"cyclonedx": "sbom.cdx.json", "spdx": "sbom.spdx.json"}


class Role(StrEnum):
    """What a token may do; each role may do what the ones before it may."""

    READER = "reader"          # read everything the API and pages show
    SUBMITTER = "submitter"    # + submit builds, cancel its own
    ADMIN = "admin"            # + cancel any build, manage tokens, read the audit trail

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise BadInput(f"unknown role {text!r}",
                           hint="a role is reader, submitter or admin") from None


_RANK = {Role.READER: 1, Role.SUBMITTER: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class Principal:
    """Who is asking: a token's name and role, or the anonymous reader (role None)."""

    name: str
    role: Role | None
    token_id: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.token_id is None

    def can(self, role: Role) -> bool:
        return self.role is not None and self.role.rank >= role.rank


ANONYMOUS = Principal(name="anonymous", role=None)


# -- errors the API answers with (alicorn.web.app maps every Error to a status) --------------
class Unauthorized(Error):
    """No token, or one that is unknown, malformed or revoked (401)."""


class Forbidden(Error):
    """The token is valid but its role may not do this (403)."""


class RateLimited(Error):
    """Too many submissions from one token (429); ``retry_after`` in seconds."""

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class PayloadTooLarge(BadInput):
    """A request body over ``ApiConfig.max_body_bytes`` (413)."""


# -- settings -----------------------------------------------------------------------------
@dataclass
class ApiConfig:
    """The web service's settings: the ``api`` object of ``$ALICORN_HOME/config.json``
    (``alicorn api config KEY VALUE`` changes one; environment variables ALICORN_API_<KEY>
    override them for one process)."""

    listen: str = DEFAULT_LISTEN                # HOST:PORT the service answers on
    anonymous_read: bool = True                 # reads need no token
    submissions_per_minute: int = 10            # per token; a burst of that many, then refill
    max_body_bytes: int = 1 << 20               # larger request bodies get a 413
    # Directories whose git repositories may be submitted by local path or file:// URL
    # (remote https/http/git/ssh URLs are always accepted).
    local_sources: list[str] = field(default_factory=list)
    public_url: str | None = None               # how others reach it, for links; None: asked

    def address(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise BadInput(f"api.listen {self.listen!r} is not HOST:PORT",
                           hint="e.g. 127.0.0.1:8440")
        return host.strip("[]") or "127.0.0.1", int(port)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_json(cls, data: Any, *, where: str = "config.json api") -> ApiConfig:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise StoreError(f"{where} must be an object", where=where)
        config = cls()
        for key, value in data.items():
            config.set(key, value, where=where)
        return config

    def set(self, key: str, value: Any, *, where: str = "api") -> None:
        """Set one key from JSON or from text (as given on a command line)."""
        if key not in self.names():
            raise BadInput(f"{where}: unknown setting {key!r}",
                           hint="settings: " + ", ".join(self.names()))
        current = getattr(self, key)
        try:
            if key == "anonymous_read":
                value = _boolean(value)
            elif key in ("submissions_per_minute", "max_body_bytes"):
                value = int(value)
                if value < (0 if key == "submissions_per_minute" else 1024):
                    raise ValueError(value)
            elif key == "local_sources":
                if isinstance(value, str):
                    value = [v for v in value.split(",") if v]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(value)
                value = [str(Path(v).expanduser().absolute()) for v in value]
            elif key == "public_url":
                value = None if value in (None, "", "none") else str(value).rstrip("/")
            elif key == "listen":
                value = str(value)
        except (TypeError, ValueError):
            raise BadInput(f"{where}: {key} cannot be {value!r} (it is now {current!r})") from None
        setattr(self, key, value)
        if key == "listen":
            self.address()


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def load_api_config(settings: Settings) -> ApiConfig:
    """The ``api`` settings of this ALICORN_HOME, with ALICORN_API_* overrides applied."""
    path = settings.home / "config.json"
    try:
        stored = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError as e:
        raise StoreError(f"config.json is not valid JSON: {e}", where=str(path)) from e
    config = ApiConfig.from_json(stored.get("api"), where=f"{path}: api")
    for key in ApiConfig.names():
        env = os.environ.get(f"ALICORN_API_{key.upper()}")
        if env is not None:
            config.set(key, env, where=f"ALICORN_API_{key.upper()}")
    return config


def save_api_config(settings: Settings, config: ApiConfig) -> None:
    """Write ``config`` as the ``api`` object of config.json (atomically; other keys kept)."""
    path = settings.home / "config.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored["api"] = config.to_json()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
