"""The extension point for report formats: one module per format, each a :class:`Reporter`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from alicorn.match.model import Scan


class Reporter(ABC):
    #: the ``--format`` name: ``text``, ``json``, ``sarif``, ``vex``
    name: str

    @abstractmethod
    def render(self, scans: Sequence[Scan]) -> str:
        """The report of ``scans`` (one per target) as text to print."""
