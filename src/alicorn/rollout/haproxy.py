"""HAProxy in front of a module (the :class:`~alicorn.rollout.interface.Proxy` here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alicorn.rollout.interface import Proxy, ServerState
from alicorn.rollout.model import Backend, Readiness


class HAProxy(Proxy):
    """One HAProxy (master-worker) per module, its files in ``directory``: listens on
    ``address:port``, checks every server with the module's readiness (``GET path``)."""

    def __init__(self, directory: Path, *, module: str, address: str, port: int,
                 readiness: Readiness):
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def is_running(self) -> bool:
        raise NotImplementedError

    def set_backends(self, active: Sequence[Backend], backup: Sequence[Backend] = ()) -> None:
        raise NotImplementedError

    def drain(self, names: Sequence[str]) -> None:
        raise NotImplementedError

    def servers(self) -> list[ServerState]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError
