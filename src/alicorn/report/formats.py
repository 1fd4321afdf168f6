"""The report formats by ``--format`` name: adding one is a module and a line here.

The modules are imported only when their format is asked for: the VEX writer pulls in
cyclonedx-python-lib and its schemas, which a text or JSON scan has no use for.
"""

from __future__ import annotations

import importlib

from alicorn.errors import BadInput
from alicorn.report.interface import Reporter

#: ``--format`` name -> (module, class) of the Reporter that writes it.
FORMATS: dict[str, tuple[str, str]] = {
    "text": ("alicorn.report.text", "TextReporter"),
    "json": ("alicorn.report.json_", "JsonReporter"),
    "sarif": ("alicorn.report.sarif", "SarifReporter"),
    "vex": ("alicorn.report.vex", "VexReporter"),
}


def reporter_class(name: str) -> type[Reporter]:
    """The Reporter class of ``--format NAME``; :class:`BadInput` for an unknown name."""
    if name not in FORMATS:
        raise BadInput(f"unknown report format {name!r}",
                       hint=f"choose one of {', '.join(FORMATS)}")
    module, cls = FORMATS[name]
    found: type[Reporter] = getattr(importlib.import_module(module), cls)
    return found


def reporter(name: str, *, summary: bool = False, verbose: bool = False) -> Reporter:
    """The reporter for ``--format NAME``; ``summary``/``verbose`` choose the text view (the
    machine formats always carry everything).  Raises :class:`BadInput` for an unknown name."""
    cls = reporter_class(name)
    if name == "text":
        from alicorn.report.text import TextReporter
        return TextReporter(summary=summary, verbose=verbose)
    return cls()
