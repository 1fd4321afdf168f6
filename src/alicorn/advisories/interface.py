"""The extension point for advisory feeds: one module per format, each a :class:`FeedReader`.

Adding a feed format is a new module with a reader class and one line in
:mod:`alicorn.advisories.feeds` (the registry that detects a file's format and dispatches).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from alicorn.advisories.model import Advisory, FeedError

__all__ = ["FeedError", "FeedReader", "FeedResult"]


@dataclass(frozen=True)
class FeedResult:
    """What one input gave: its advisories, and a warning per record that was skipped.

    A skipped record never passes silently: each warning names the input (file, and line or
    record id where known) and why it was skipped (``"x.yaml: GHSA-1: unknown ecosystem 'Foo'"``).
    """

    advisories: tuple[Advisory, ...]
    warnings: tuple[str, ...] = field(default=())


class FeedReader(ABC):
    """Reads one feed format.  Input is untrusted: size-capped, no entity expansion, etc."""

    #: the format's short name: ``updateinfo``, ``osv``, ``rubysec``, ``oval``, ``bodhi``, ...
    name: str

    @abstractmethod
    def sniff(self, path: Path, head: bytes) -> bool:
        """True when the file at ``path`` (its first 64 KiB are ``head``, decompressed if the
        file was compressed) is in this format."""

    @abstractmethod
    def read(self, path: Path) -> FeedResult:
        """Every advisory in the file.  Raises :class:`FeedError` (naming ``path``) when the
        file as a whole is unusable; a bad record inside a good file is a warning instead."""
