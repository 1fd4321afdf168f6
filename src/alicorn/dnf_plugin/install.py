"""Install ``dnf list-security`` and ``dnf update-module`` so that the system's dnf loads them.

dnf loads every ``*.py`` in its plugin directory (``dnf.const.PLUGINPATH``; Debian's is
/usr/lib/python3/dist-packages/dnf-plugins) under the system Python.  Alicorn lives in its own
virtualenv, so what goes there is a small shim per command: it appends the directories
``alicorn`` and its dependencies are imported from (computed here, from ``alicorn.__file__``
and the running interpreter's site-packages) to the *end* of ``sys.path`` — the system's own
modules (dnf, rpm, hawkey) always win — and imports the command.  Beside them goes each
plugin's configuration, ``/etc/dnf/plugins/list-security.conf`` (``[main] enabled=1``,
``home`` and ``feed``) and ``/etc/dnf/plugins/update-module.conf`` (``[main] enabled=1``,
``home``).  One shim per command, so that ``--disableplugin=update-module`` leaves
list-security loaded and the other way round.

A shim is rewritten whenever it differs (it is code that follows the checkout); a
configuration is written only when absent, since after that it is the administrator's.
"""

from __future__ import annotations

import functools
import os
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import alicorn
from alicorn import proc
from alicorn.errors import Error, ToolMissing
from alicorn.fs import replace_file

SHIM_NAME = "list_security.py"  # dnf matches --disableplugin=list-security against it too
CONF_NAME = "list-security.conf"
UPDATE_SHIM_NAME = "update_module.py"
UPDATE_CONF_NAME = "update-module.conf"
MARKER = "# Written by alicorn setup-host"
DEFAULT_PYTHON = "/usr/bin/python3"


class PluginInstallError(Error):
    """The plugin's files cannot be written or removed."""


@dataclass(frozen=True)
class DnfLocation:
    """Where the system's dnf looks for plugins and their configuration."""

    python: str
    plugin_dir: Path
    conf_dir: Path


def _dnf_python() -> str:
    """The interpreter the system's ``dnf`` runs under (its ``#!`` line), else the system's."""
    exe = shutil.which("dnf") or "/usr/bin/dnf"
    try:
        with open(exe, "rb") as f:
            first = f.readline(256)
    except OSError:
        return DEFAULT_PYTHON
    if first.startswith(b"#!"):
        words = first[2:].decode("utf-8", "replace").split()
        if words and words[0].endswith("/env") and len(words) > 1:
            return shutil.which(words[1]) or DEFAULT_PYTHON
        if words and Path(words[0]).is_file():
            return words[0]
    return DEFAULT_PYTHON


@functools.cache
def system_dnf() -> DnfLocation | None:
    """The system dnf's plugin and configuration directories; None when it has no dnf."""
    python = _dnf_python()
    try:
        result = proc.run([python, "-c", "import dnf.const as c; print(c.PLUGINPATH); "
                                         "print(c.PLUGINCONFPATH)"],
                          check=False, timeout=60, what="dnf's python")
    except ToolMissing:
        return None
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2:
        return None
    return DnfLocation(python=python, plugin_dir=Path(lines[0]), conf_dir=Path(lines[1]))


def dnf_available() -> bool:
    """True when the system has a dnf to install the plugin into."""
    return system_dnf() is not None


def import_paths() -> list[Path]:
    """Where ``alicorn`` and its dependencies are imported from by this interpreter."""
    package_parent = Path(alicorn.__file__).resolve().parent.parent
    paths = [package_parent]
    for key in ("purelib", "platlib"):
        site = Path(sysconfig.get_path(key)).resolve()
        if site not in paths and site.is_dir():
            paths.append(site)
    return paths


_IMPORTS = {
    "list-security": ("list_security", ("ListSecurityCommand", "ListSecurityPlugin")),
    # register_command made the command's plugin class; importing the command brings it.
    "update-module": ("update_module", ("UpdateModuleCommand",)),
}


def shim_text(paths: list[Path], command: str = "list-security") -> str:
    """The plugin module dnf imports for ``command`` (list-security or update-module)."""
    module, names = _IMPORTS[command]
    listed = "".join(f"    {str(p)!r},\n" for p in paths)
    imported = "".join(f"    {n},\n" for n in names)
    return (
        f'{MARKER}: dnf {command}, from Alicorn. Do not edit;\n'
        "# `alicorn setup-host` rewrites it and `alicorn.dnf_plugin.install.uninstall()` "
        "removes it.\n"
        f'"""Load Alicorn\'s ``dnf {command}`` from where Alicorn is installed."""\n'
        "import sys\n\n"
        "# At the end of sys.path: the system's dnf, rpm and hawkey always come first.\n"
        f"for _path in [\n{listed}]:\n"
        "    if _path not in sys.path:\n"
        "        sys.path.append(_path)\n\n"
        f"from alicorn.dnf_plugin.{module} import (  # noqa: E402,F401\n"
        f"{imported}"
        ")\n"
    )


def conf_text(home: str | None) -> str:
    """The plugin's configuration: enabled, and where the advisory store is."""
    home_line = f"home = {home}\n" if home else \
        "# home = /root/.local/share/alicorn\n"
    return (
        f"{MARKER}: Alicorn's `dnf list-security`.\n"
        "[main]\n"
        "enabled = 1\n"
        "# The Alicorn state directory whose advisory store (alicorn advisories import) is\n"
        "# read when no repository is enabled; $ALICORN_HOME wins when it is set.\n"
        f"{home_line}"
        "# Advisory feeds read on every run, besides the repositories: updateinfo.xml files\n"
        "# or repository directories, separated by spaces.\n"
        "# feed = /srv/advisories/updateinfo.xml.gz\n"
    )


def update_conf_text(home: str | None) -> str:
    """``dnf update-module``'s configuration: enabled, and where the modules' home is."""
    home_line = f"home = {home}\n" if home else \
        "# home = /root/.local/share/alicorn\n"
    return (
        f"{MARKER}: Alicorn's `dnf update-module`.\n"
        "[main]\n"
        "enabled = 1\n"
        "# The Alicorn state directory whose modules (alicorn deploy) are updated;\n"
        "# $ALICORN_HOME wins when it is set, and without either, list-security.conf's\n"
        "# home = is used.\n"
        f"{home_line}"
    )


def _files(prefix: Path | None) -> list[tuple[Path, str, Path, str]]:
    """``(shim, its text, conf, its text when absent)`` for each command."""
    shim, conf = _targets(prefix)
    paths = import_paths()
    home = os.environ.get("ALICORN_HOME")
    return [(shim, shim_text(paths), conf, conf_text(home)),
            (shim.with_name(UPDATE_SHIM_NAME), shim_text(paths, "update-module"),
             conf.with_name(UPDATE_CONF_NAME), update_conf_text(home))]


def _targets(prefix: Path | None) -> tuple[Path, Path]:
    where = system_dnf()
    if where is None:
        raise ToolMissing("the system has no dnf (its Python cannot import dnf.const)",
                          argv=[_dnf_python()],
                          hint="install the Debian package dnf (scripts/bootstrap does)")
    plugin_dir, conf_dir = where.plugin_dir, where.conf_dir
    if prefix is not None:
        plugin_dir = prefix / plugin_dir.relative_to(plugin_dir.anchor)
        conf_dir = prefix / conf_dir.relative_to(conf_dir.anchor)
    return plugin_dir / SHIM_NAME, conf_dir / CONF_NAME


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, text, mode=0o644)
    except OSError as e:
        raise PluginInstallError(f"cannot write {path}: {e.strerror or e}", where=str(path),
                                 hint="run alicorn setup-host as root") from e


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise PluginInstallError(f"cannot read {path}: {e}", where=str(path)) from e


def install(*, prefix: Path | None = None) -> list[Path]:
    """Install the plugins (list-security, update-module) into the system's dnf; returns the
    files written (none when all is already in place).

    ``prefix`` puts the files below another root (``prefix/usr/lib/.../dnf-plugins``,
    ``prefix/etc/dnf/plugins``), for a dnf given ``--setopt=pluginpath=`` and
    ``--setopt=pluginconfpath=``, or an image being prepared.  Raises :class:`ToolMissing`
    when the system has no dnf and :class:`PluginInstallError` when a file cannot be written.
    """
    changed = []
    for shim, text, conf, conf_default in _files(prefix):
        if _read(shim) != text:
            _write(shim, text)
            changed.append(shim)
        if _read(conf) is None:
            _write(conf, conf_default)
            changed.append(conf)
    return changed


def uninstall(*, prefix: Path | None = None) -> list[Path]:
    """Remove what :func:`install` wrote (files without its marker are left alone); returns
    the files removed."""
    removed = []
    for shim, _, conf, _ in _files(prefix):
        for path in (shim, conf):
            text = _read(path)
            if text is None or MARKER not in text:
                continue
            try:
                path.unlink()
            except OSError as e:
                raise PluginInstallError(f"cannot remove {path}: {e.strerror or e}",
                                         where=str(path), hint="run as root") from e
            removed.append(path)
        # The compiled shim dnf's import left behind.
        for cached in sorted((shim.parent / "__pycache__").glob(f"{shim.stem}.*.pyc")):
            cached.unlink(missing_ok=True)
            removed.append(cached)
    return removed
