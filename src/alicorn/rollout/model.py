"""The values of a rollout: what a module is, what runs, what happened.

Datetimes are timezone-aware UTC here and naive UTC in the database (as elsewhere).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from alicorn.errors import BadInput

# -- results and phases --------------------------------------------------------------------------

#: What an operation left in the module's history (``alicorn status``'s ``history[].result``).
DEPLOYED = "deployed"        # the first digest a module ran
UPDATED = "updated"          # moved to a new digest, soak passed
ROLLED_BACK = "rolled_back"  # the new digest failed (readiness, soak, deadline) or `rollback`
FAILED = "failed"            # could not even start (untrusted image, no such digest, …); the
                             # old digest kept serving and nothing changed
RESULTS = (DEPLOYED, UPDATED, ROLLED_BACK, FAILED)

#: The phases of one operation, in order; the journal records each before acting on it, so
#: that :meth:`alicorn.rollout.controller.Controller.resume` knows what was half done.
VERIFYING = "verifying"      # signature + provenance of the target image
PULLING = "pulling"          # podman pull by digest
STARTING = "starting"        # new replicas' containers started
READY = "ready"              # every new replica passed its readiness check
SHIFTED = "shifted"          # the proxy sends traffic to the new replicas, old ones on standby
SOAKING = "soaking"          # watching the new replicas for the soak window
DRAINING = "draining"        # old replicas drained, then stopped and removed
DONE = "done"
ROLLING_BACK = "rolling_back"
PHASES = (VERIFYING, PULLING, STARTING, READY, SHIFTED, SOAKING, DRAINING, DONE, ROLLING_BACK)

#: Operation kinds.
DEPLOY, UPDATE, ROLLBACK = "deploy", "update", "rollback"

#: Replica states.
R_STARTING = "starting"      # containers started, not yet ready
R_SERVING = "serving"        # in the proxy's active set
R_STANDBY = "standby"        # in the proxy as a backup (the previous digest during a soak)
R_DRAINING = "draining"      # no new requests; finishing the ones it has
R_FAILED = "failed"          # failed its readiness or health checks; about to be removed

#: Container labels every replica carries (``podman ps --filter label=…`` finds them).
LABEL_MODULE = "org.alicorn.module"          # also what `alicorn run` sets; list-security reads it
LABEL_REPLICA = "org.alicorn.replica"
LABEL_DIGEST = "org.alicorn.digest"
LABEL_ROLE = "org.alicorn.role"              # web | content

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_module_name(name: str) -> str:
    if not NAME.match(name):
        raise BadInput(f"module name {name!r} is not valid",
                       hint="lower-case letters, digits, '.', '_' and '-', at most 63, "
                            "starting with a letter or digit")
    return name


# -- readiness -----------------------------------------------------------------------------------

def _seconds(value: Any, what: str) -> float:
    """``2s``, ``500ms``, ``1m`` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", str(value))
    if not m:
        raise BadInput(f"{what}: {value!r} is not a duration", hint="e.g. 2s, 500ms, 1m")
    n = float(m.group(1))
    return n / 1000 if m.group(2) == "ms" else n * 60 if m.group(2) == "m" else n


@dataclass(frozen=True)
class Readiness:
    """How to tell that a replica is ready and stays healthy: the recipe's ``healthcheck``,
    which the image carries in its ``org.alicorn.healthcheck`` label.

    HTTP: ``GET path`` on the container's ``port`` must answer a status in ``200..399`` within
    ``timeout``.  ``retries`` consecutive failures make a replica unhealthy.  ``command``
    instead runs in the container (``podman healthcheck``-style, exit 0 = healthy).
    """

    path: str = "/"
    port: int | None = None            # the container's port; None: the image's exposed port
    interval: float = 1.0
    timeout: float = 2.0
    retries: int = 3
    command: tuple[str, ...] | None = None

    @classmethod
    def from_label(cls, raw: str | None) -> Readiness:
        """From the image's healthcheck label (JSON, as the recipe wrote it); the default
        (``GET /``) when the image has none."""
        if not raw:
            return cls()
        try:
            hc = json.loads(raw)
        except ValueError as e:
            raise BadInput(f"the image's healthcheck label is not JSON: {e}") from e
        if not isinstance(hc, dict):
            raise BadInput("the image's healthcheck label is not an object")
        http = hc.get("http") or {}
        command = hc.get("command")
        return cls(
            path=str(http.get("path", "/")),
            port=int(http["port"]) if http.get("port") is not None else None,
            interval=_seconds(hc.get("interval", 1), "healthcheck.interval"),
            timeout=_seconds(hc.get("timeout", 2), "healthcheck.timeout"),
            retries=int(hc.get("retries", 3)),
            command=tuple(str(c) for c in command) if isinstance(command, list) else None)


# -- modules -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ContentSpec:
    """Where each replica's web server gets its content, if not from its own image: a host
    directory, a podman volume, or a content image run as a container of its own beside each
    web container (the web container mounts its volumes)."""

    directory: str | None = None
    volume: str | None = None
    image: str | None = None           # a reference; pinned by digest once verified

    def empty(self) -> bool:
        return self.directory is None and self.volume is None and self.image is None


@dataclass(frozen=True)
class ModuleSpec:
    """What ``alicorn deploy`` was asked for; kept so that updates and restarts repeat it."""

    name: str
    repository: str                    # addr/name the module's images come from
    port: int                          # where the proxy listens
    address: str = "0.0.0.0"
    replicas: int = 2
    tag: str = "latest"                # the tag the agent follows
    content: ContentSpec = field(default_factory=ContentSpec)
    deadline: float = 120.0            # seconds an update may take to get every replica ready
    soak: float = 10.0                 # seconds new replicas must stay healthy after the switch
    drain: float = 10.0                # seconds old replicas get to finish their requests

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleSpec:
        data = dict(data)
        data["content"] = ContentSpec(**(data.get("content") or {}))
        return cls(**data)


@dataclass(frozen=True)
class Replica:
    name: str                          # the web container's name
    digest: str                        # the image's manifest digest
    host_port: int                     # 127.0.0.1:host_port reaches the web server
    containers: tuple[str, ...]        # every container of the replica (web first)
    state: str                         # R_*
    healthy: bool | None = None        # the last check; None before the first

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "port": self.host_port,
                "containers": list(self.containers), "state": self.state,
                "healthy": self.healthy}


@dataclass(frozen=True)
class HistoryEntry:
    digest: str
    at: datetime
    result: str                        # one of RESULTS
    from_digest: str | None = None
    reason: str | None = None
    op_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "at": self.at.isoformat(), "result": self.result,
                "from": self.from_digest, "reason": self.reason, "op": self.op_id}


@dataclass(frozen=True)
class ModuleEvent:
    at: datetime
    kind: str                          # a phase, or "health", "error", "rollback", …
    message: str
    op_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "message": self.message,
                "op": self.op_id}


@dataclass(frozen=True)
class Operation:
    """One deploy, update or rollback, as the journal keeps it."""

    id: str
    module: str
    kind: str                          # DEPLOY | UPDATE | ROLLBACK
    from_digest: str | None
    to_digest: str
    phase: str
    started_at: datetime
    deadline_at: datetime
    finished_at: datetime | None = None
    result: str | None = None          # one of RESULTS when finished
    reason: str | None = None
    dry_run: bool = False

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True)
class TrustedImage:
    """An image that verified under the host's policy, pinned by digest."""

    ref: str                           # addr/name@sha256:… (what podman pulls)
    digest: str
    repository: str                    # addr/name
    key_id: str                        # the key that signed it
    build_id: str | None = None        # from its provenance
    recipe: str | None = None          # the recipe's name, from its provenance
    source: str | None = None          # git url@commit, from its provenance


@dataclass(frozen=True)
class Backend:
    """One server in the proxy: a replica's web container."""

    name: str
    host: str
    port: int
