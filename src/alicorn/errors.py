"""One error hierarchy for everything Alicorn reports to a person.

Every user-facing error says what was wrong, where, and what to do about it.  The CLI catches
:class:`Error` in exactly one place and prints :meth:`Error.diagnostics`; anything else is a bug
and gets a traceback.
"""

from __future__ import annotations

# Exit codes (see STYLE.md): 0 clean, 1 findings / verification failed / build failed,
# 2 bad input, 130 interrupted.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# A service Alicorn needs (the broker, the shared database) cannot be reached: try again later
# (sysexits' EX_UNAVAILABLE).
EXIT_UNAVAILABLE = 69
EXIT_INTERRUPTED = 130


class Error(Exception):
    """Base of every error Alicorn reports to a person."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def diagnostics(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def __str__(self) -> str:
        return self.diagnostics()


class BadInput(Error):
    """The user gave something Alicorn cannot use (a malformed recipe, a missing file)."""

    exit_code = EXIT_BAD_INPUT


class RecipeError(BadInput):
    """A recipe is malformed; ``where`` is ``file:line`` and ``field`` the dotted field path."""

    def __init__(
        self, message: str, *, file: str, line: int | None = None,
        field: str | None = None, hint: str | None = None,
    ):
        where = f"{file}:{line}" if line else file
        if field:
            message = f"{field}: {message}"
        super().__init__(message, where=where, hint=hint)
        self.file = file
        self.line = line
        self.field = field


class ToolError(Error):
    """An external tool (podman, mmdebstrap, dnf, skopeo, git, ...) failed."""

    def __init__(self, message: str, *, argv: list[str] | None = None,
                 returncode: int | None = None, output: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.argv = argv or []
        self.returncode = returncode
        self.output = output


class ToolMissing(ToolError):
    """An external tool is not installed."""


class SourceError(Error):
    """The recipe's source (a git repository, a ref) cannot be fetched."""


class ComposeError(Error):
    """Composing the root filesystem failed (unknown package, unreachable repository, ...)."""


class ImageError(Error):
    """Writing or reading an image failed."""


class RegistryError(Error):
    """The registry is down, refused a push, or does not hold what was asked for."""


class StoreError(Error):
    """The state store (database, files under ALICORN_HOME) is unusable."""


class NotFound(BadInput):
    """Something the user named (a build, an image) does not exist."""


class RunError(Error):
    """Starting or checking a module with podman failed."""


class Conflict(BadInput):
    """What was asked cannot be done in the thing's present state (a finished build's sealed
    record cannot change; a build that ended cannot be cancelled)."""


class Unavailable(Error):
    """A service the work needs (the broker, the shared database) cannot be reached now;
    nothing was recorded, so the same request can simply be made again."""

    exit_code = EXIT_UNAVAILABLE
