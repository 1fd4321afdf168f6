"""Deploy, update, roll back: the module's state machine (see :mod:`alicorn.rollout.model`'s
phases), journalled before each step so that an interrupted run is finished or undone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alicorn.config import Settings
from alicorn.monitor import Monitor
from alicorn.rollout.model import ContentSpec

UNCHANGED = "unchanged"   # Outcome.result when the module already runs the target digest
PLANNED = "planned"       # Outcome.result of a dry run


@dataclass(frozen=True)
class Outcome:
    """What one operation did.  ``result`` is one of model.RESULTS, UNCHANGED or PLANNED."""

    module: str
    kind: str                          # deploy | update | rollback | resume
    result: str
    digest: str | None                 # serving now
    from_digest: str | None = None
    to_digest: str | None = None
    op_id: str | None = None
    reason: str | None = None
    plan: tuple[str, ...] = ()         # a dry run's steps, in order
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"module": self.module, "kind": self.kind, "result": self.result,
                "digest": self.digest, "from": self.from_digest, "to": self.to_digest,
                "op": self.op_id, "reason": self.reason, "plan": list(self.plan),
                "seconds": round(self.seconds, 3), **self.extra}


class Controller:
    """Every rollout operation on this host's modules (one ALICORN_HOME)."""

    def __init__(self, settings: Settings, *, monitor: Monitor | None = None,
                 keys: Sequence[Path] = ()):
        """``keys``: trust only these public keys (PEM) instead of the host's keyring."""
        raise NotImplementedError

    def deploy(self, name: str, image: str, *, port: int, replicas: int = 2,
               address: str = "0.0.0.0", content: ContentSpec | None = None,
               deadline: float = 120.0, soak: float = 10.0, drain: float = 10.0,
               dry_run: bool = False) -> Outcome:
        """Run ``image`` (a reference, ``sha256:…`` of a build here, or a build id) as
        module ``name``: verify it, start the proxy on ``address:port`` and ``replicas``
        replicas, wait until they are ready.  BadInput when the module exists."""
        raise NotImplementedError

    def update(self, name: str, *, to: str | None = None, deadline: float | None = None,
               soak: float | None = None, dry_run: bool = False) -> Outcome:
        """Move ``name`` to ``to`` (a digest or reference; default: what the module's tag
        names in the registry now).  Rolls back by itself on failed readiness before the
        deadline or failed health in the soak window (result ROLLED_BACK, reason why)."""
        raise NotImplementedError

    def rollback(self, name: str, *, to: str | None = None, dry_run: bool = False) -> Outcome:
        """Move ``name`` back to the digest it ran before (or ``to``, one of its history)."""
        raise NotImplementedError

    def resume(self, name: str | None = None) -> list[Outcome]:
        """After a reboot or a killed run: start the proxy and the serving replicas that are
        not running, and finish (draining) or roll back (anything before it) the operation the
        journal has open.  Every module when ``name`` is None."""
        raise NotImplementedError

    def status(self, name: str) -> dict[str, Any]:
        """``alicorn status --json``: at least module, digest, replicas [{name, digest,
        healthy}], history [{digest, at, result}] (oldest first), operation, events."""
        raise NotImplementedError

    def modules(self) -> list[dict[str, Any]]:
        """One short status per module (name, digest, replicas, port, healthy count)."""
        raise NotImplementedError

    def latest(self, name: str) -> str | None:
        """The digest the module's repository's tag names in the registry now."""
        raise NotImplementedError

    def stop(self, name: str | None = None) -> None:
        """Stop the proxy and the containers (state kept; resume starts them again)."""
        raise NotImplementedError

    def remove(self, name: str) -> None:
        """Stop and forget the module (its history goes too)."""
        raise NotImplementedError
