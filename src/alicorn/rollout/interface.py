"""The rollout's extension point — the reverse proxy in front of a module — and its errors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from alicorn.errors import BadInput, Error
from alicorn.rollout.model import Backend


class RolloutError(Error):
    """Base of the rollout's errors: a deploy, update or rollback could not be done as asked.
    The module's previous version keeps serving whenever one of these is raised."""


class UntrustedImage(RolloutError):
    """The image's signature or provenance does not verify under the host's policy (unsigned,
    signed with a key the host does not trust, a signature for another image, no provenance,
    or a provenance about another digest)."""


class NoSuchImage(BadInput):
    """The registry holds no such digest or tag."""


class ProxyError(RolloutError):
    """The proxy cannot be started, changed or reloaded (its port is taken, its configuration
    is refused, its runtime socket does not answer)."""


class HealthError(RolloutError):
    """New replicas did not become ready before the progress deadline, or failed their health
    checks during the soak window."""


class ModuleBusy(RolloutError):
    """Another operation holds the module's lock."""


@dataclass(frozen=True)
class ServerState:
    """One server as the proxy sees it now."""

    name: str
    host: str
    port: int
    backup: bool
    status: str              # UP | DOWN | MAINT | DRAIN | NOLB (the proxy's own word)
    sessions: int            # connections open to it now
    check: str | None = None  # the last health check's result, as the proxy words it


class Proxy(ABC):
    """A reverse proxy that listens on the module's port and spreads requests over its
    replicas.  Every change applies without closing a client connection or failing a request,
    and is persisted, so that a restarted proxy (after a reboot) comes back as it was."""

    @abstractmethod
    def start(self) -> None:
        """Start the proxy unless it runs (idempotent).  :class:`ProxyError` naming the port
        when it is taken by something else."""

    @abstractmethod
    def is_running(self) -> bool: ...

    @abstractmethod
    def set_backends(self, active: Sequence[Backend], backup: Sequence[Backend] = ()) -> None:
        """Make ``active`` the servers that get requests and ``backup`` the ones that get them
        only when no active server is up (the previous digest during a soak).  Servers in
        neither are removed once they have no connection left (or at once if they have none).
        A failing request on an active server is retried on another server, backups included
        when every active one is down."""

    @abstractmethod
    def drain(self, names: Sequence[str]) -> None:
        """Send no new requests to ``names``; the ones they have finish."""

    @abstractmethod
    def servers(self) -> list[ServerState]:
        """Every server the proxy has now."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the proxy (idempotent)."""
