"""The report formats by ``--format`` name: adding one is a module and a line here."""

from __future__ import annotations

from alicorn.errors import BadInput
from alicorn.report.interface import Reporter
from alicorn.report.json_ import JsonReporter
from alicorn.report.sarif import SarifReporter
from alicorn.report.text import TextReporter
from alicorn.report.vex import VexReporter

#: ``--format`` name -> the Reporter class that writes it.
REPORTERS: dict[str, type[Reporter]] = {
    TextReporter.name: TextReporter,
    JsonReporter.name: JsonReporter,
    SarifReporter.name: SarifReporter,
    VexReporter.name: VexReporter,
}


def reporter(name: str, *, summary: bool = False, verbose: bool = False) -> Reporter:
    """The reporter for ``--format NAME``; ``summary``/``verbose`` choose the text view (the
    machine formats always carry everything).  Raises :class:`BadInput` for an unknown name."""
    if name not in REPORTERS:
        raise BadInput(f"unknown report format {name!r}",
                       hint=f"choose one of {', '.join(REPORTERS)}")
    if name == TextReporter.name:
        return TextReporter(summary=summary, verbose=verbose)
    return REPORTERS[name]()
