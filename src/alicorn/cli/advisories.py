"""``alicorn advisories``: import feeds into the advisory store, list and show them, export
OVAL and OSV.

Every input of ``import`` is read whole and stored in one transaction: an input that fails
(a :class:`~alicorn.advisories.model.FeedError`) writes nothing and is named on stderr; the
other inputs are still imported, and the command exits 2.  Text from feeds is printed with
``click.echo``, never through rich markup, so a feed cannot style (or hide) what is printed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from alicorn.advisories.model import Advisory, FeedError
from alicorn.errors import EXIT_BAD_INPUT, BadInput, NotFound


def _store() -> Any:
    from alicorn.advisories.store import AdvisoryStore
    from alicorn.config import load_settings

    return AdvisoryStore(load_settings().database_url)


# C0/C1 control characters other than tab and newline: a feed's text must not move the
# cursor, clear the screen or retitle the terminal of whoever lists it.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _clean(text: str) -> str:
    return _CONTROL.sub("\ufffd", text)


def _warn(text: str) -> None:
    click.echo(f"warning: {_clean(text)}", err=True)


@click.group("advisories")
def advisories() -> None:
    """Security advisories: import feeds, list them, export OVAL and OSV."""


@advisories.command("import")
@click.argument("locations", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input.")
def import_(locations: tuple[str, ...], as_json: bool) -> None:
    """Import advisory feeds: files (updateinfo.xml plain or compressed, OSV JSON/YAML, GitHub
    advisories, rubysec YAML, OVAL, Bodhi JSON), directories of them, RPM repositories (their
    repodata), zips of OSV files, or http(s):// and file:// URLs.

    Re-importing is idempotent; a newer version of an advisory replaces the older one.
    """
    from alicorn.advisories.codec import CodecError
    from alicorn.advisories.feeds import load

    store = _store()
    failed = 0
    for location in locations:
        try:
            result = load(location)
        except FeedError as e:
            failed += 1
            click.echo(f"error: {_clean(e.diagnostics())}", err=True)
            if as_json:
                click.echo(json.dumps({"input": location, "error": e.message,
                                       "where": e.where}, sort_keys=True))
            continue
        for warning in result.warnings:
            _warn(warning)
        if not result.advisories and result.warnings:
            # Every record of it was skipped: that is an unreadable input, not an empty one.
            failed += 1
            click.echo(_clean(f"error: {location}: none of its records could be read "
                              f"({len(result.warnings)} skipped, warnings above)"), err=True)
            continue
        if not result.advisories:
            _warn(f"{location}: no advisories in it")
        try:
            stats = store.import_advisories(result.advisories, source=str(location))
        except CodecError as e:  # a reader produced a malformed advisory: that input fails
            failed += 1
            click.echo(f"error: {location}: {_clean(e.diagnostics())}", err=True)
            continue
        if as_json:
            click.echo(json.dumps({
                "input": location, "read": stats.read, "added": stats.added,
                "replaced": stats.replaced, "unchanged": stats.unchanged,
                "older_skipped": stats.older_skipped, "warnings": len(result.warnings)},
                sort_keys=True))
        else:
            click.echo(_clean(f"{location}: {stats.read} read: {stats.added} added, "
                       f"{stats.replaced} replaced, {stats.unchanged} unchanged, "
                       f"{stats.older_skipped} older skipped"
                       + (f" ({len(result.warnings)} warnings)" if result.warnings else "")))
    if failed:
        click.echo(f"error: {failed} of {len(locations)} inputs could not be imported "
                   "(nothing of them was written)", err=True)
        sys.exit(EXIT_BAD_INPUT)


def _selected(store: Any, *, kind: str | None) -> Iterable[Advisory]:
    for advisory in store.all():
        if kind is None or advisory.type == kind:
            yield advisory


def _report_skipped(skipped: tuple[str, ...], *, verbose: bool) -> None:
    if not skipped:
        return
    if verbose:
        for line in skipped:
            _warn(f"left out {line}")
        return
    reasons = Counter(line.split(": ", 1)[1] if ": " in line else line for line in skipped)
    summary = "; ".join(f"{n} {reason}" for reason, n in reasons.most_common(3))
    _warn(f"left out {len(skipped)} advisories ({summary}); --verbose lists them")


@advisories.command("export")
@click.option("--format", "fmt", type=click.Choice(["oval", "osv"]), required=True,
              help="OVAL 5.11 patch definitions (RPM advisories) or OSV 1.6 records.")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="OVAL: the file to write.  OSV: a directory, one <id>.json per advisory. "
                   "Default: stdout.")
@click.option("--type", "kind", help="Only advisories of this type (e.g. security).")
@click.option("--rpm-ecosystem",
              help="OSV: the ecosystem of RPM advisories whose release names none.")
@click.option("--verbose", "-v", is_flag=True, help="Name each advisory left out, and why.")
def export(fmt: str, output: Path | None, kind: str | None, rpm_ecosystem: str | None,
           verbose: bool) -> None:
    """Write the stored advisories as OVAL (for ``oscap oval eval`` / ``oscap-chroot``) or
    OSV."""
    store = _store()
    if store.count() == 0:
        _warn("the advisory store is empty: nothing to export (alicorn advisories import ...)")
    selected = _selected(store, kind=kind)
    if fmt == "oval":
        from alicorn.advisories import export_oval

        oval = export_oval.export(selected)
        _report_skipped(oval.skipped, verbose=verbose)
        if oval.definitions == 0:
            _warn("no advisory could be exported as OVAL: the document has no definitions")
        _write(oval.data, output)
        return
    from alicorn.advisories import export_osv

    osv = export_osv.export(selected, rpm_ecosystem=rpm_ecosystem)
    _report_skipped(osv.skipped, verbose=verbose)
    if not osv.records:
        _warn("no advisory could be exported as OSV")
    if output is None:
        _write(json.dumps(list(osv.records), indent=2, sort_keys=True, ensure_ascii=False)
               .encode("utf-8", "backslashreplace") + b"\n", None)
        return
    if output.exists() and not output.is_dir():
        raise BadInput(f"{output} is a file; OSV is written as one file per advisory",
                       hint="give a directory to --output, or leave it out for stdout")
    paths = export_osv.write_directory(osv, output)
    click.echo(f"wrote {len(paths)} OSV files to {output}", err=True)


def _write(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    # Written beside and renamed: a reader (oscap, a web server) never sees half a file.
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, output)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write the export: {e.strerror or e}", where=str(output)) from e


def _summary(a: Advisory) -> dict[str, Any]:
    names = dict.fromkeys([p.name for p in a.packages] +
                          [f"{x.ecosystem}/{x.name}" for x in a.affected])
    return {"id": a.id, "format": a.format, "type": a.type, "severity": a.severity,
            "issued": a.issued.isoformat() if a.issued else None,
            "updated": a.updated.isoformat() if a.updated else None,
            "title": a.title, "cves": list(a.cves), "packages": list(names),
            "source": a.source}


@advisories.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
@click.option("--cve", help="Only advisories naming this CVE.")
@click.option("--package", help="Only advisories for this package name.")
@click.option("--ecosystem", help="Only advisories for packages of this ecosystem (PyPI, "
                                  "Debian, Debian:12, ...).")
@click.option("--type", "kind", help="Only advisories of this type (e.g. security).")
def list_(as_json: bool, cve: str | None, package: str | None, ecosystem: str | None,
          kind: str | None) -> None:
    """List the stored advisories: id, type, severity, date, CVEs, packages."""
    store = _store()
    if cve is None and package is None and ecosystem is None:
        found: Iterable[Advisory] = _selected(store, kind=kind)
    else:
        found = store.search(cve=cve, package=package, ecosystem=ecosystem, type=kind)
    if as_json:
        click.echo(json.dumps([_summary(a) for a in found], indent=2, sort_keys=True))
        return
    count = 0
    for a in found:
        count += 1
        date = (a.updated or a.issued)
        names = _summary(a)["packages"]
        click.echo(_clean("\t".join([
            a.id, a.type, a.severity or "-", date.date().isoformat() if date else "-",
            ",".join(a.cves) or "-",
            ",".join(names[:5]) + (f",+{len(names) - 5}" if len(names) > 5 else "")])))
    if count == 0:
        _warn("no advisories match" if store.count() else
              "the advisory store is empty (alicorn advisories import ...)")


@advisories.command("show")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True, help="The whole advisory as JSON.")
@click.option("--format", "fmt", help="The feed format, when the id is in several feeds.")
def show(ident: str, as_json: bool, fmt: str | None) -> None:
    """Show one advisory: its text, references and packages."""
    from alicorn.advisories import codec

    advisory = _store().get(ident, format=fmt)
    if advisory is None:
        raise NotFound(f"no advisory {ident} in the store",
                       hint="alicorn advisories list shows what is there")
    if as_json:
        click.echo(json.dumps(codec.to_json(advisory), indent=2, sort_keys=True))
        return
    lines = [f"{advisory.id} ({advisory.format}, {advisory.type}"
             + (f", {advisory.severity})" if advisory.severity else ")"),
             advisory.title]
    for label, value in (("issued", advisory.issued), ("updated", advisory.updated),
                         ("withdrawn", advisory.withdrawn)):
        if value is not None:
            lines.append(f"{label}: {value.isoformat()}")
    if advisory.release:
        lines.append(f"release: {advisory.release}")
    if advisory.cves:
        lines.append("CVEs: " + ", ".join(advisory.cves))
    if advisory.aliases:
        lines.append("aliases: " + ", ".join(advisory.aliases))
    if advisory.description:
        lines += ["", advisory.description, ""]
    for ref in advisory.references:
        lines.append(f"  {ref.type} {ref.id or ''} {ref.href or ''}".rstrip())
    for p in advisory.packages:
        lines.append(f"  fixed in {p.nevra}" + (f" (modules {', '.join(p.modules)})"
                                                if p.modules else ""))
    for x in advisory.affected:
        fixes = ", ".join(x.fixed_versions) or "no fix"
        lines.append(f"  {x.ecosystem} {x.name}: fixed in {fixes}")
    lines.append(f"source: {advisory.source}")
    click.echo(_clean("\n".join(lines)))


@advisories.command("import-debian")
@click.option("--suite", default="bookworm-security", show_default=True,
              help="The security suite whose uploads are the advisories.")
@click.option("--base-suite", default="bookworm", show_default=True,
              help="The suite a machine installs from; only changelog entries newer than its "
                   "versions count.  'none' keeps every entry.")
@click.option("--release", default="12", show_default=True,
              help="Debian's major version: the advisories' ecosystem is Debian:RELEASE.")
@click.option("--package", "packages", multiple=True,
              help="Only this source (or binary) package; repeatable.")
@click.option("--for", "target",
              help="Only the source packages installed in this target (a scan TARGET).")
@click.option("--mirror", default="http://deb.debian.org/debian", show_default=True)
@click.option("--security-mirror", default="http://security.debian.org/debian-security",
              show_default=True)
@click.option("--keyring", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Keys the suites' InRelease must be signed with (default: Debian's "
                   "archive keyring).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def import_debian(suite: str, base_suite: str, release: str, packages: tuple[str, ...],
                  target: str | None, mirror: str, security_mirror: str,
                  keyring: Path | None, as_json: bool) -> None:
    """Make Debian advisories from the security suite's packages and import them.

    Debian's security uploads say in their changelogs which CVEs each version fixes.  This
    downloads the suite's signed index (checked with gpgv against Debian's archive keyring),
    one package of each wanted source, and reads its changelog: one advisory per upload that
    names CVEs, affecting the source package below that version.  Run it on a connected
    machine, then carry the store (or `alicorn advisories export --format osv`) to
    disconnected ones.  Downloads are cached under $ALICORN_HOME/cache/advisories-debian.
    """
    from alicorn.advisories.debian import DEBIAN_KEYRING, fetch_security_advisories
    from alicorn.config import load_settings

    settings = load_settings()
    inventory = None
    if target is not None:
        from alicorn.inventory.targets import inventory_of
        inventory = inventory_of(target, settings=settings)
    result = fetch_security_advisories(
        suite=suite, base_suite=None if base_suite.lower() == "none" else base_suite,
        mirror=mirror, mirror_security=security_mirror,
        packages=packages or None, inventory=inventory,
        # Not cache/debian: that is the Debian composer's package cache, which mmdebstrap
        # syncs into every image's /var/cache/apt/archives.
        cache_dir=settings.cache_dir / "advisories-debian", release=release,
        keyring=keyring or DEBIAN_KEYRING)
    for warning in result.warnings:
        _warn(warning)
    source = f"{security_mirror} {suite}"
    stats = _store().import_advisories(result.advisories, source=source)
    if as_json:
        click.echo(json.dumps({
            "input": source, "read": stats.read, "added": stats.added,
            "replaced": stats.replaced, "unchanged": stats.unchanged,
            "older_skipped": stats.older_skipped, "warnings": len(result.warnings),
            "cves": len({c for a in result.advisories for c in a.cves})}, sort_keys=True))
    else:
        click.echo(_clean(f"{source}: {stats.read} read: {stats.added} added, "
                          f"{stats.replaced} replaced, {stats.unchanged} unchanged, "
                          f"{stats.older_skipped} older skipped"))


@advisories.command("affected")
@click.argument("idents", nargs=-1, required=True)
@click.option("--all-builds", is_flag=True,
              help="Every finished build, not only the newest of each recipe.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
def affected(idents: tuple[str, ...], all_builds: bool, as_json: bool) -> None:
    """The images built here that the advisories IDENTS (advisory ids or CVE ids) affect.

    Looks through the package sets every build recorded, newest build of each recipe only
    unless --all-builds; the same rules as `alicorn scan`.  Exits 1 when an image is affected.
    """
    from alicorn.config import load_settings
    from alicorn.match.affected import affected_images

    store = _store()
    chosen: dict[tuple[str, str], Advisory] = {}
    for ident in idents:
        found = store.search(cve=ident) if ident.upper().startswith("CVE-") else []
        found = found or store.search(id=ident)
        if not found:
            raise NotFound(f"no advisory {ident} in the store",
                           hint="alicorn advisories list shows them; import feeds first")
        for advisory in found:
            chosen[(advisory.id, advisory.format)] = advisory
    hits = affected_images(load_settings().database_url, list(chosen.values()),
                           latest_only=not all_builds)
    if as_json:
        click.echo(json.dumps([{
            "build": h.build_id, "digest": h.digest, "image": h.image_ref,
            "recipe": h.recipe_name,
            "findings": [{"advisory": f.advisory.id, "cves": list(f.cves),
                          "package": {"name": f.package.name, "version": f.package.version,
                                      "type": f.package.type, "source": f.package.source},
                          "fixed_version": f.fixed_version} for f in h.findings],
        } for h in hits], sort_keys=True))
    else:
        if not hits:
            click.echo(f"no image built here is affected by {', '.join(idents)}")
        for h in hits:
            click.echo(_clean(f"{h.recipe_name or '-'}  {h.digest}  build {h.build_id}"))
            for f in h.findings:
                click.echo(_clean(f"    {f.advisory.id}  {f.package.name} {f.package.version}"
                                  f" -> {f.fixed_version or 'no fix yet'}"))
    if hits:
        sys.exit(1)
