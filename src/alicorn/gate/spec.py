"""The recipe's ``gate:`` as a tree of checks.

A gate is one check, a list (all of them must pass), ``{all-of: [...]}`` or
``{any-of: [...]}``, nested as deep as one likes.  A check is its name
(``no-secrets``) or a one-key mapping with its options (``{no-setuid: {allow: [...]}}``).
:func:`parse_gate` checks all of it the way the schema does (``$defs.gate`` in
``recipe-v1.schema.json``) and more: the files it names exist next to the recipe, so a bad
gate fails when the recipe is read, not after the image is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicorn.errors import RecipeError

__all__ = ["CHECKS", "SEVERITIES", "AllOf", "AnyOf", "Check", "Gate", "OpenscapOptions",
           "default_gate", "parse_gate", "severity_rank"]

#: Every check a gate may name.
CHECKS = ("no-new-findings", "no-setuid", "no-world-writable", "no-secrets", "non-root",
          "healthcheck", "openscap")

#: Severity words of every feed, ranked: Fedora/Red Hat (Low, Moderate, Important, Critical),
#: CVSS and GHSA (low, medium, high, critical), Debian (low, medium, high).
SEVERITIES = {"low": 1, "moderate": 2, "medium": 2, "important": 3, "high": 3, "critical": 4}
DEFAULT_SEVERITY = "important"
DEFAULT_PROFILE = "standard"

_ALLOW_CHECKS = ("no-setuid", "no-world-writable", "no-secrets")
_OPENSCAP_KEYS = ("datastream", "profile", "tailoring", "allow_failed", "required", "html")
_MAX_DEPTH = 16


def severity_rank(word: str | None) -> int | None:
    """The rank of a feed's severity word (1 low … 4 critical); None when it rates nothing
    or says something no feed of ours says."""
    if word is None:
        return None
    return SEVERITIES.get(word.strip().lower())


@dataclass(frozen=True)
class OpenscapOptions:
    """``openscap:``.  ``datastream`` None: the SCAP Security Guide's for the image's
    distribution; ``tailoring`` an existing file next to the recipe."""

    profile: str = DEFAULT_PROFILE
    datastream: Path | None = None
    tailoring: Path | None = None
    allow_failed: tuple[str, ...] = ()
    required: bool = True
    html: bool = True               # also the HTML report (slower than the evaluation)


@dataclass(frozen=True)
class Check:
    """One check of the gate.  ``where`` is its place in the recipe (``gate[1].any-of[0]``)."""

    name: str
    where: str = "gate"
    severity: str = DEFAULT_SEVERITY            # no-new-findings
    allow: tuple[str, ...] = ()                 # no-setuid, no-world-writable, no-secrets
    openscap: OpenscapOptions | None = None     # openscap

    @property
    def min_rank(self) -> int:
        return SEVERITIES[self.severity]


@dataclass(frozen=True)
class AllOf:
    """Passes when every one of ``items`` passes."""

    items: tuple[Gate, ...]
    where: str = "gate"


@dataclass(frozen=True)
class AnyOf:
    """Passes when at least one of ``items`` passes."""

    items: tuple[Gate, ...]
    where: str = "gate"


Gate = AllOf | AnyOf | Check


def default_gate() -> Gate:
    """The gate of a recipe that names none: cheap, and free of false failures on a plain
    distribution image (no new high findings, no world-writable files, no private keys)."""
    return AllOf(items=(Check("no-new-findings", where="gate[0]"),
                        Check("no-world-writable", where="gate[1]"),
                        Check("no-secrets", where="gate[2]")))


def parse_gate(raw: Any, *, file: str, base_dir: Path | None = None) -> Gate:
    """The gate ``raw`` (a recipe's ``gate:`` value, as YAML gave it) as a tree of checks.

    ``file`` names the recipe in errors; files the gate names (a tailoring file, a data
    stream) are relative to ``base_dir`` (default: the recipe file's directory) and must stay
    inside it.  Raises :class:`~alicorn.errors.RecipeError` naming the recipe and the field
    (``gate[1].openscap.tailoring``) for anything the gate cannot run with.
    """
    base = base_dir if base_dir is not None else Path(file).parent
    return _Parser(file, base).gate(raw, "gate", 0)


class _Parser:
    def __init__(self, file: str, base_dir: Path):
        self.file = file
        self.base_dir = base_dir

    def error(self, message: str, where: str, hint: str | None = None) -> RecipeError:
        return RecipeError(message, file=self.file, field=where, hint=hint)

    def gate(self, raw: Any, where: str, depth: int) -> Gate:
        if depth > _MAX_DEPTH:
            raise self.error(f"gates nest more than {_MAX_DEPTH} deep", where)
        if isinstance(raw, list):
            return AllOf(self.items(raw, where, depth), where=where)
        if isinstance(raw, str):
            return self.check(raw, None, where)
        if isinstance(raw, dict):
            if len(raw) != 1:
                keys = ", ".join(sorted(map(str, raw))) or "nothing"
                raise self.error(f"a gate mapping has exactly one key (all-of, any-of or a "
                                 f"check's name), not {keys}", where)
            [(key, value)] = raw.items()
            if key in ("all-of", "any-of"):
                inner = f"{where}.{key}"
                if not isinstance(value, list):
                    raise self.error("must be a list of gates", inner)
                items = self.items(value, inner, depth)
                return AllOf(items, where=where) if key == "all-of" else AnyOf(items, where=where)
            return self.check(key, value, where)
        raise self.error(f"must be a check's name, a list, or a mapping, not "
                         f"{type(raw).__name__}", where)

    def items(self, raw: list[Any], where: str, depth: int) -> tuple[Gate, ...]:
        if not raw:
            raise self.error("is empty: name at least one check", where)
        return tuple(self.gate(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(raw))

    def check(self, name: Any, options: Any, where: str) -> Check:
        if not isinstance(name, str) or name not in CHECKS:
            raise self.error(f"unknown check {name!r}", where,
                             hint=f"the checks are: {', '.join(CHECKS)}")
        field = f"{where}.{name}"
        if options is None:
            if name == "openscap":
                return Check(name, where=where, openscap=OpenscapOptions())
            return Check(name, where=where)
        if not isinstance(options, dict):
            raise self.error("options must be a mapping", field)
        if name == "no-new-findings":
            self.keys(options, ("severity",), field)
            severity = options.get("severity", DEFAULT_SEVERITY)
            if not isinstance(severity, str) or severity.lower() not in SEVERITIES:
                raise self.error(f"unknown severity {severity!r}", f"{field}.severity",
                                 hint=f"one of {', '.join(SEVERITIES)}")
            return Check(name, where=where, severity=severity.lower())
        if name in _ALLOW_CHECKS:
            self.keys(options, ("allow",), field)
            return Check(name, where=where,
                         allow=self.strings(options.get("allow", []), f"{field}.allow"))
        if name == "openscap":
            return Check(name, where=where, openscap=self.openscap(options, field))
        if options:
            raise self.error("takes no options", field)
        return Check(name, where=where)

    def keys(self, options: dict[Any, Any], allowed: tuple[str, ...], field: str) -> None:
        for key in options:
            if key not in allowed:
                raise self.error(f"unknown option {key!r}", field,
                                 hint=f"it takes: {', '.join(allowed)}")

    def strings(self, raw: Any, field: str) -> tuple[str, ...]:
        if not isinstance(raw, list) or not all(isinstance(s, str) and s for s in raw):
            raise self.error("must be a list of non-empty strings", field)
        return tuple(raw)

    def openscap(self, options: dict[Any, Any], field: str) -> OpenscapOptions:
        self.keys(options, _OPENSCAP_KEYS, field)
        profile = options.get("profile", DEFAULT_PROFILE)
        if not isinstance(profile, str) or not profile.strip():
            raise self.error("must be a profile id or its short name (standard)",
                             f"{field}.profile")
        required, html = options.get("required", True), options.get("html", True)
        for key, value in (("required", required), ("html", html)):
            if not isinstance(value, bool):
                raise self.error("must be true or false", f"{field}.{key}")
        return OpenscapOptions(
            profile=profile.strip(),
            datastream=self.file_option(options, "datastream", field, absolute_ok=True),
            tailoring=self.file_option(options, "tailoring", field, absolute_ok=False),
            allow_failed=self.strings(options.get("allow_failed", []), f"{field}.allow_failed"),
            required=required, html=html)

    def file_option(self, options: dict[Any, Any], key: str, field: str, *,
                    absolute_ok: bool) -> Path | None:
        raw = options.get(key)
        where = f"{field}.{key}"
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            raise self.error("must be a file name", where)
        if absolute_ok and raw.startswith("/"):
            path = Path(raw)
        else:
            base = self.base_dir.resolve()
            path = (base / raw).resolve()
            if path != base and base not in path.parents:
                raise self.error(f"{raw!r} leaves the recipe's directory", where)
        if not path.is_file():
            raise self.error(f"{raw!r} does not exist" if not path.exists()
                             else f"{raw!r} is not a file", where,
                             hint=f"looked for {path}")
        return path
