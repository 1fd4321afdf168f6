"""One advisory document: reading it safely, and the reader base of one-document formats.

Feeds come from places we do not control.  Every document is read through :func:`read_input`
(a size cap before and after decompression, by magic bytes: gzip, bzip2, xz, zstd) and parsed
through :func:`load_document` (JSON with a depth limit, YAML built from libyaml's event stream
with aliases refused and depth capped), so each format's module only turns the parsed values
into advisories.
"""

from __future__ import annotations

import io
import json
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

import yaml

from alicorn.advisories.interface import FeedReader, FeedResult
from alicorn.advisories.model import FeedError
from alicorn.advisories.updateinfo import _decompress

__all__ = ["DEFAULT_MAX_SIZE", "MAX_YAML_DEPTH", "DocumentReader", "decompress",
           "load_document", "read_input"]

# One advisory document (an OSV file, an updateinfo.xml, an OVAL file) larger than this,
# decompressed, is an attack or a mistake: the largest real ones (Fedora's updateinfo, Red Hat's
# OVAL of a whole release) are tens of MiB.
DEFAULT_MAX_SIZE = 64 * 1024 * 1024

_BASE_LOADER: Any = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
MAX_YAML_DEPTH = 64  # OSV nests 5 levels deep, rubysec 3
_NOTHING = object()


# -- safe loading, shared by the JSON and YAML feeds ------------------------------------------


def read_input(path: Path, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The bytes of the feed file at ``path``, decompressed (gzip, bzip2, xz, zstd).

    The size is checked *before* the file is read, so a 100 GB file costs a ``stat``; the
    decompressed size is capped too.  Raises :class:`FeedError` naming ``path``.
    """
    where = str(path)
    try:
        with path.open("rb") as f:
            size = _file_size(f)
            if size > max_size:
                raise FeedError(f"the file is {size} bytes, more than the {max_size}-byte cap; "
                                "refusing it", where=where,
                                hint="an advisory feed file is never this large; check what it "
                                     "is (a genuine database is split into files, one per "
                                     "advisory, or zipped)")
            data = f.read(max_size + 1)
    except OSError as e:
        raise FeedError(f"cannot read the file: {e.strerror or e}", where=where) from e
    if len(data) > max_size:  # it grew while we read it
        raise FeedError(f"the file is larger than the {max_size}-byte cap", where=where)
    return decompress(data, source=where, max_size=max_size)


def decompress(data: bytes, *, source: str, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """``data`` decompressed if it is gzip/bzip2/xz/zstd (by magic bytes), capped at
    ``max_size``; plain data is returned as it is.  Raises :class:`FeedError`."""
    try:
        return _decompress(data, source=source, max_size=max_size)
    except FeedError as e:
        # updateinfo's wording names its own format; here the file may be any feed.
        raise FeedError(e.message.replace("the updateinfo is", "the feed is"),
                        where=e.where, hint=e.hint) from e


def _file_size(f: io.BufferedReader) -> int:
    return os.fstat(f.fileno()).st_size


def load_document(data: bytes, *, source: str, yaml_ok: bool = True) -> Any:
    """A JSON or YAML document as plain ``dict``/``list``/``str`` values.

    Text that starts with ``{`` or ``[`` is JSON (OSV's flow-style YAML does not exist in the
    wild, and a truncated JSON file deserves a JSON error).  Anything else is YAML when
    ``yaml_ok``: every scalar a string (dates and versions stay as written), no aliases, at
    most :data:`MAX_YAML_DEPTH` levels.  Raises :class:`FeedError`.
    """
    text = data.lstrip()
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:].lstrip()
    if text[:1] in (b"{", b"["):
        try:
            return json.loads(text)
        except RecursionError as e:
            raise FeedError("the JSON is nested too deeply; refusing it", where=source,
                            hint="no advisory feed nests this deep: the file is malicious "
                                 "or broken") from e
        except UnicodeDecodeError as e:
            raise FeedError(f"the JSON is not valid UTF-8 ({e.reason})", where=source) from e
        except json.JSONDecodeError as e:
            raise FeedError(f"malformed JSON: {e.msg}", where=f"{source}:{e.lineno}:{e.colno}",
                            hint="the file is truncated or not JSON") from e
    if not yaml_ok:
        raise FeedError("not a JSON document", where=source)
    return _load_yaml(data, source=source)


def _load_yaml(data: bytes, *, source: str) -> Any:
    """The YAML document built from libyaml's event stream.

    Not ``yaml.load``: its composer recurses once per nesting level (in C, with the C
    loader) and a line of ``[[[[...`` overflows the stack and kills the process; PyYAML's
    safe loader would also expand aliases.  libyaml's parser itself is iterative, so building
    the values here, with a depth cap and no aliases, is safe on any input.  Every scalar
    is a string and tags are ignored: nothing is typed, nothing constructed.
    """
    root: Any = _NOTHING
    stack: list[list[Any] | dict[str, Any]] = []
    keys: list[str | None] = []  # per open mapping, the key waiting for its value
    documents = 0

    def add(value: Any, mark: Any) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        if isinstance(top, list):
            top.append(value)
        elif keys[-1] is None:
            if not isinstance(value, str):
                raise FeedError("a YAML mapping key that is not a plain string",
                                where=_yaml_where(source, mark))
            keys[-1] = value
        else:
            top[keys[-1]] = value
            keys[-1] = None

    try:
        for event in yaml.parse(data, Loader=_BASE_LOADER):
            if isinstance(event, yaml.ScalarEvent):
                add(event.value, event.start_mark)
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                if len(stack) >= MAX_YAML_DEPTH:
                    raise FeedError(f"the YAML nests deeper than {MAX_YAML_DEPTH} levels; "
                                    "refusing it", where=_yaml_where(source, event.start_mark),
                                    hint="no advisory feed nests this deep: the file is "
                                         "malicious or broken")
                container: list[Any] | dict[str, Any] = (
                    [] if isinstance(event, yaml.SequenceStartEvent) else {})
                add(container, event.start_mark)  # attach first: the parent keeps order
                stack.append(container)
                keys.append(None)
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                stack.pop()
                keys.pop()
            elif isinstance(event, yaml.AliasEvent):
                raise FeedError(
                    "YAML aliases (*name) are refused: a few anchors can expand to "
                    "billions of nodes", where=_yaml_where(source, event.start_mark),
                    hint="advisory feeds never need anchors or aliases; the file is "
                         "malicious or broken")
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise FeedError("more than one YAML document in the file",
                                    where=_yaml_where(source, event.start_mark),
                                    hint="an advisory file holds one document")
    except yaml.MarkedYAMLError as e:
        raise FeedError(f"malformed YAML: {e.problem or e}",
                        where=_yaml_where(source, e.problem_mark),
                        hint="the file is truncated or not YAML") from e
    except yaml.YAMLError as e:
        raise FeedError(f"malformed YAML: {e}", where=source) from e
    return None if root is _NOTHING else root


def _yaml_where(source: str, mark: Any) -> str:
    if mark is None:
        return source
    return f"{source}:{mark.line + 1}:{mark.column + 1}"


class DocumentReader(FeedReader):
    """A format whose file is one document: read whole (capped, decompressed), then parsed."""

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE):
        self.max_size = max_size

    def read(self, path: Path) -> FeedResult:
        return self.parse(read_input(path, max_size=self.max_size), source=str(path))

    @abstractmethod
    def parse(self, data: bytes, *, source: str) -> FeedResult:
        """The advisories of ``data`` (the document, already decompressed); ``source``
        names it in warnings and errors."""
