"""``dnf update-module``: download and apply the update of a module Alicorn runs here.

``dnf update-module MODULE`` moves the module to the image its repository's tag names in the
registry now (or ``--to DIGEST|REF``): Alicorn's rollout controller verifies the image's
signature and provenance, pulls it by digest, starts new replicas, waits until they are ready,
shifts the traffic, watches them for the soak window and drains the old ones — rolling back by
itself when the new ones fail.  ``--all`` does it for every module; ``--dry-run`` prints the
plan and changes nothing.

The command runs inside the system's dnf (4.x), under the system Python: it imports only the
standard library, dnf and ``alicorn`` (the rest of Alicorn only when it runs).  It needs no
repository and no rpm database: a module's updates come from the registry, so it works on a
host with no repository configured at all.

Where the modules are: ``$ALICORN_HOME``, else ``home =`` in ``update-module.conf``, else the
``home =`` of ``list-security.conf`` (both in dnf's plugin configuration directory, so that the
two commands look at the same Alicorn unless told otherwise), else Alicorn's default home.

Exit status: 0 when every module named is updated or already up to date (or, with
``--dry-run``, planned); 1 when one was rolled back or could not be updated (the previous
version keeps serving; the reason is printed), and for a user error (an unknown module, an
image that does not verify).
"""

from __future__ import annotations

import argparse
import configparser
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import dnf
import dnf.cli
import dnf.exceptions
import dnf.plugin

# Tiny (the standard library only); the progress printer below is one.
from alicorn.monitor import Monitor

if TYPE_CHECKING:
    from alicorn.config import Settings
    from alicorn.rollout.controller import Controller, Outcome

logger = logging.getLogger("dnf.plugin")

PLUGIN_NAME = "update-module"
#: The plugin whose configuration names the home when update-module.conf does not.
LIST_SECURITY_NAME = "list-security"

# Outcome.result values (alicorn.rollout.model and .controller); repeated here so that dnf
# importing this module on every run does not import the rollout.
UPDATED, ROLLED_BACK, FAILED = "updated", "rolled_back", "failed"
UNCHANGED, PLANNED = "unchanged", "planned"


def short(digest: str | None) -> str:
    """``sha256:`` and the first 12 hex digits, as a person compares digests."""
    if not digest:
        return "-"
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def outcome_lines(outcome: Outcome) -> list[str]:
    """What one update did, for a person: the first line says updated / up to date / would
    update / rolled back (and why); a dry run's plan follows, one step a line."""
    o = outcome
    name, result = o.module, o.result
    if result == PLANNED:
        lines = [f"{name}: would update {short(o.from_digest)} -> {short(o.to_digest)}"]
        lines += [f"  {i}. {step}" for i, step in enumerate(o.plan, 1)]
        return lines
    if result == UNCHANGED:
        return [f"{name}: up to date at {short(o.digest or o.to_digest)}"]
    if result == UPDATED:
        return [f"{name}: updated {short(o.from_digest)} -> {short(o.to_digest)} "
                f"in {o.seconds:.1f} s"]
    if result == ROLLED_BACK:
        return [f"{name}: rolled back to {short(o.digest)}: the update to "
                f"{short(o.to_digest)} failed: {o.reason or 'no reason recorded'}"]
    if result == FAILED:
        target = f" to {short(o.to_digest)}" if o.to_digest else ""
        return [f"{name}: not updated{target}: {o.reason or 'no reason recorded'}; "
                f"{short(o.digest)} keeps serving"]
    return [f"{name}: {result} at {short(o.digest)}"]


def failed(outcome: Outcome) -> bool:
    """Whether the outcome makes the command exit 1: the update was rolled back or not done."""
    return outcome.result in (ROLLED_BACK, FAILED)


def failure_message(outcomes: Sequence[Outcome]) -> str:
    """The dnf error for the outcomes that :func:`failed`: each module and why."""
    bad = [o for o in outcomes if failed(o)]
    parts = [f"{o.module} {'rolled back' if o.result == ROLLED_BACK else 'not updated'} "
             f"({o.reason or 'no reason recorded'})" for o in bad]
    head = "the update" if len(outcomes) == 1 else f"{len(bad)} of {len(outcomes)} updates"
    return (f"{head} did not complete: " + "; ".join(parts) +
            ". The previous version keeps serving; `alicorn status MODULE` shows the events")


def read_home(conf_dirs: Sequence[str], environ: dict[str, str] | None = None) -> Path | None:
    """The Alicorn home the plugin uses: ``$ALICORN_HOME``, else ``home =`` in
    ``update-module.conf``, else in ``list-security.conf`` (first directory that has one
    wins, as dnf reads them), else None (Alicorn's default).  An unreadable file is a dnf
    error naming it."""
    env = os.environ if environ is None else environ
    if env.get("ALICORN_HOME"):
        return Path(env["ALICORN_HOME"]).expanduser()
    for plugin in (PLUGIN_NAME, LIST_SECURITY_NAME):
        parser = configparser.ConfigParser(interpolation=None)
        for directory in conf_dirs:
            path = Path(directory) / f"{plugin}.conf"
            try:
                parser.read(path, encoding="utf-8")
            except (configparser.Error, UnicodeDecodeError) as e:
                raise dnf.exceptions.Error(f"{path}: unreadable configuration: {e}") from e
        home = parser.get("main", "home", fallback="").strip()
        if home:
            return Path(home).expanduser()
    return None


class _Progress(Monitor):
    """Prints the controller's progress a line per step and message, prefixed by the module
    being updated."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.module = ""

    def step(self, name: str, total: int | None = None) -> None:
        self._line(name)

    def progress(self, done: int, total: int | None = None, detail: str | None = None) -> None:
        # Steps and messages say enough; a line per probe would drown them.
        pass

    def message(self, text: str) -> None:
        # The controller's events name their module already.
        print(text if text.startswith(f"{self.module}:") else self._prefixed(text),
              file=self.stream, flush=True)

    def finish(self, state: str, **result: Any) -> None:
        pass

    def _line(self, text: str) -> None:
        print(self._prefixed(text), file=self.stream, flush=True)

    def _prefixed(self, text: str) -> str:
        return f"{self.module}: {text}" if self.module else text


@dnf.plugin.register_command
class UpdateModuleCommand(dnf.cli.Command):  # type: ignore[misc]
    """``dnf update-module``."""

    aliases = ("update-module",)
    summary = ("download and apply the update of a module Alicorn runs (no downtime; rolls "
               "back by itself)")

    @staticmethod
    def set_argparser(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("module", nargs="?", metavar="MODULE",
                            help="the module to update (alicorn modules lists them)")
        parser.add_argument("--all", action="store_true", dest="all_modules",
                            help="update every module deployed here")
        parser.add_argument("--to", metavar="DIGEST|REF",
                            help="the image to move to (default: what the module's tag names "
                                 "in the registry now)")
        parser.add_argument("--dry-run", action="store_true",
                            help="print the plan and change nothing")
        parser.add_argument("--deadline", type=float, metavar="S",
                            help="seconds the new replicas get to become ready (default: the "
                                 "module's)")
        parser.add_argument("--soak", type=float, metavar="S",
                            help="seconds the new replicas must stay healthy after the switch "
                                 "(default: the module's)")
        parser.add_argument("--json", action="store_true",
                            help="print the outcome as JSON (a list with --all)")

    def pre_configure(self) -> None:
        # As list-security: dnf's own messages go to stderr, stdout holds the outcome.
        if not self.opts.quiet:
            self.cli.redirect_logger(stdout=logging.WARNING, stderr=logging.INFO)

    def configure(self) -> None:
        o = self.opts
        if o.all_modules == bool(o.module):
            raise dnf.cli.CliError("update-module: name one MODULE, or give --all (not both)")
        if o.all_modules and o.to:
            raise dnf.cli.CliError("update-module: --to names one module's image; it cannot "
                                   "go with --all")
        for what, value in (("--deadline", o.deadline), ("--soak", o.soak)):
            if value is not None and value < 0:
                raise dnf.cli.CliError(f"update-module: {what} must be 0 or more seconds")
        # The update comes from the registry: no repository, no sack, no rpm database.
        demands = self.cli.demands
        demands.sack_activation = False
        demands.available_repos = False
        demands.load_system_repo = False

    def run(self) -> None:
        from alicorn.errors import Error

        try:
            self._run()
        except Error as e:
            raise dnf.exceptions.Error(e.diagnostics()) from e

    # -- the work -----------------------------------------------------------------------------

    def _settings(self) -> Settings:
        from alicorn.config import default_home, load_settings

        home = read_home(list(self.base.conf.pluginconfpath)) or default_home()
        # load_settings would create a missing home: a typo must not look like "no modules".
        if not home.is_dir():
            raise dnf.exceptions.Error(
                f"{home} does not exist: no Alicorn state there, so no module to update. Set "
                "ALICORN_HOME, or home = in /etc/dnf/plugins/update-module.conf, to the home "
                "the modules were deployed from")
        return load_settings(home)

    def _run(self) -> None:
        from alicorn.errors import Error
        from alicorn.rollout.controller import Controller, Outcome
        from alicorn.rollout.model import check_module_name

        o = self.opts
        if o.module:
            check_module_name(o.module)
        settings = self._settings()
        # Progress to stdout; with --json stdout holds the JSON alone, so it goes to stderr.
        progress = None if o.quiet else _Progress(sys.stderr if o.json else sys.stdout)
        controller = Controller(settings, monitor=progress)
        serving = {str(m.get("name")): m.get("digest") for m in controller.modules()}
        deployed = sorted(serving)
        if o.all_modules:
            names = deployed
            if not names:
                logger.info("update-module: no module is deployed in %s", settings.home)
        elif o.module not in deployed:
            listed = ", ".join(deployed) if deployed else "none"
            raise dnf.exceptions.Error(
                f"no module named {o.module!r} is deployed in {settings.home} (deployed: "
                f"{listed}). Deploy it with: alicorn deploy {o.module} --image REF")
        else:
            names = [o.module]
        outcomes = []
        for name in names:
            try:
                outcomes.append(self._update(controller, progress, name))
            except Error as e:
                if not o.all_modules:
                    raise
                # One module's bad image must not keep the others from their updates.
                outcome = Outcome(module=name, kind="update", result=FAILED,
                                  digest=serving.get(name), reason=e.diagnostics())
                self._print(outcome)
                outcomes.append(outcome)
        if o.json:
            data: Any = [x.as_json() for x in outcomes] if o.all_modules else \
                outcomes[0].as_json()
            print(json.dumps(data, indent=2))
        if any(failed(x) for x in outcomes):
            raise dnf.exceptions.Error(failure_message(outcomes))

    def _update(self, controller: Controller, progress: _Progress | None,
                name: str) -> Outcome:
        if progress is not None:
            progress.module = name
        o = self.opts
        outcome = controller.update(name, to=o.to, deadline=o.deadline, soak=o.soak,
                                    dry_run=o.dry_run)
        self._print(outcome)
        return outcome

    def _print(self, outcome: Outcome) -> None:
        if not self.opts.json:
            for line in outcome_lines(outcome):
                print(line, flush=True)
