"""The ``alicorn`` command line.

Errors of type :class:`alicorn.errors.Error` are caught here, in one place, and printed without a
traceback; the exit code says what kind of failure it was (see alicorn.errors).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from alicorn import __version__
from alicorn.config import Settings, load_settings
from alicorn.errors import EXIT_FAILED, EXIT_INTERRUPTED, BadInput, Error

if TYPE_CHECKING:
    from alicorn.store.builds import BuildStore

# The build state a finished, successful build ends in (alicorn.store.builds.DONE); the store
# module (and SQLAlchemy behind it) is imported only by the commands that use it, so that
# `alicorn scan` and `alicorn advisories` start quickly.
DONE = "done"

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Error as e:
            err.print(f"[bold red]error:[/] {e.diagnostics()}", highlight=False, markup=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(EXIT_INTERRUPTED)


def _settings() -> Settings:
    return load_settings()


def _store(settings: Settings) -> BuildStore:
    from alicorn.store.builds import BuildStore
    return BuildStore(settings.database_url)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alicorn")
def cli() -> None:
    """Build container images from distribution packages, with a chain of identity.

    State lives under $ALICORN_HOME (default ~/.local/share/alicorn).
    """


def _looks_like_git(source: str) -> bool:
    return "://" in source or source.startswith("git@") or source.endswith(".git") or \
        (Path(source).is_dir() and (Path(source) / ".git").exists())


@cli.command()
@click.argument("source")
@click.option("--ref", help="Branch, tag or commit of the git repository.")
@click.option("--recipe", "recipe_path", help="Path of the recipe inside the git repository.")
@click.option("--json", "as_json", is_flag=True,
              help="Progress as JSON lines; the last line is the result object.")
@click.option("--no-cache", is_flag=True, help="Compose again even when the inputs are unchanged.")
@click.option("--no-push", is_flag=True, help="Keep the image in the local store only.")
@click.option("--skip-checks", is_flag=True,
              help="Do not run the recipe's tests and the security gate before publishing "
                   "(recorded as skipped; for development).")
@click.option("--no-wait", is_flag=True, help="Queue the build and print its id.")
@click.option("--source-date-epoch", type=int,
              help="Clamp every time in the image to this (default: the commit's time, or 0).")
@click.option("--compression-level", type=click.IntRange(1, 9), default=1, show_default=True)
@click.option("--timeout", type=float, help="Stop waiting after this many seconds.")
def build(source: str, ref: str | None, recipe_path: str | None, as_json: bool, no_cache: bool,
          no_push: bool, skip_checks: bool, no_wait: bool, source_date_epoch: int | None,
          compression_level: int, timeout: float | None) -> None:
    """Build an image from RECIPE_FILE, or from GIT_URL --ref REF --recipe PATH_IN_REPO.

    The build runs in the local worker; this command shows its progress and waits for it.
    """
    from alicorn.cli.follow import follow, result_json

    settings = _settings()
    options: dict[str, Any] = {"no_cache": no_cache, "no_push": no_push,
                               "compression_level": compression_level}
    if skip_checks:
        options["skip_checks"] = True
    if source_date_epoch is not None:
        options["source_date_epoch"] = source_date_epoch
    argv = ["alicorn", *sys.argv[1:]]
    if ref is not None or recipe_path is not None or _looks_like_git(source):
        if ref is None or recipe_path is None:
            raise BadInput("a build from git needs both --ref and --recipe",
                           hint="alicorn build GIT_URL --ref main --recipe path/to/pony.yaml")
        url = source
        if "://" not in url and not url.startswith("git@"):
            url = str(Path(url).resolve())
        from alicorn.store.builds import Submission
        sub = Submission(argv=argv, source_kind="git", source_url=url, source_ref=ref,
                         recipe_path=recipe_path, options=options)
    else:
        path = Path(source)
        if not path.is_file():
            raise BadInput(f"{source}: no such recipe file",
                           hint="give a recipe file, or GIT_URL --ref REF --recipe PATH")
        try:
            content = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadInput(f"{source}: not UTF-8 text (byte {e.start})") from e
        from alicorn.store.builds import Submission
        sub = Submission(argv=argv, source_kind="file", recipe_path=str(path.resolve()),
                         recipe_content=content, options=options)
    store = _store(settings)
    from alicorn.cluster.dispatch import dispatcher_for
    row = dispatcher_for(settings, store).submit(sub)
    if no_wait:
        print(json.dumps({"build_id": row.id, "state": row.state}) if as_json else row.id)
        return
    if not as_json:
        err.print(f"build {row.id} queued")
    try:
        final = follow(settings, store, row.id, json_lines=as_json, timeout=timeout)
    except KeyboardInterrupt:
        err.print(f"stopped following; build {row.id} goes on in the worker "
                  f"(alicorn logs -f {row.id})")
        sys.exit(EXIT_INTERRUPTED)
    result = result_json(final, settings)
    if as_json:
        print(json.dumps(result, sort_keys=True), flush=True)
    elif final.state == DONE:
        out.print(f"[green]done[/] {final.id}\n  digest {final.digest}\n  image  "
                  f"{final.image_ref or '(not pushed)'}"
                  + (f"\n  reused the image of build {final.cached_from} (inputs unchanged)"
                     if final.cached_from else "")
                  + (f"\n  checks tests {final.checks.get('tests')}, gate "
                     f"{final.checks.get('gate')}" if final.checks else ""), highlight=False)
    else:
        err.print(f"[red]{final.state}[/] {final.id}: {final.error}\n  log: "
                  f"{result['log']}", highlight=False)
    if final.state != DONE:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True,
              help="Progress as JSON lines; the last line is the result object.")
@click.option("--timeout", type=float, help="Stop waiting after this many seconds.")
def wait(ident: str, as_json: bool, timeout: float | None) -> None:
    """Follow a queued or running build (e.g. one queued with --no-wait) until it ends."""
    from alicorn.cli.follow import follow, result_json

    settings = _settings()
    store = _store(settings)
    row = store.resolve(ident)
    final = follow(settings, store, row.id, json_lines=as_json, timeout=timeout)
    result = result_json(final, settings)
    if as_json:
        print(json.dumps(result, sort_keys=True), flush=True)
    else:
        out.print(f"{final.state} {final.id} {final.digest or final.error or ''}",
                  highlight=False)
    if final.state != DONE:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("ident", metavar="BUILD")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--timeout", type=float, default=30, show_default=True,
              help="Wait this many seconds for a running build to stop.")
def cancel(ident: str, as_json: bool, timeout: float) -> None:
    """Cancel a queued or running BUILD (id, id prefix or image digest).

    A queued build ends at once; a running one is stopped by its worker (within a second or
    two; once it publishes, it finishes).  A build that has ended cannot be cancelled
    (exit 2): its record is sealed.
    """
    import os
    import pwd
    import time

    from alicorn.cli.follow import result_json
    from alicorn.store.builds import FINAL, QUEUED, RUNNING
    from alicorn.worker.local import reap, worker_running

    settings = _settings()
    store = _store(settings)
    before = store.resolve(ident)
    user = os.environ.get("SUDO_USER") or os.environ.get("USER") or \
        pwd.getpwuid(os.getuid()).pw_name
    row = store.request_cancel(before.id, f"{user}@{os.uname().nodename}")
    if row.state not in FINAL:
        if before.cancel_requested_at is not None:
            said = (f"cancel already requested by {row.cancel_requested_by}; the worker "
                    f"stops it")
        else:
            said = "cancel requested; the worker stops it"
        if not as_json:
            err.print(f"build {row.id}: {said}", highlight=False)
        deadline = time.monotonic() + timeout
        while row.state == RUNNING and time.monotonic() < deadline:
            time.sleep(0.2)
            row = store.get(row.id)
            if row.state == RUNNING and not worker_running(settings):
                reap(settings, store)  # its worker died: that ends it too
    elif before.state == QUEUED:
        said = "cancelled (it had not started)"
    else:  # it was claimed and ended between the look-up and the request
        said = "cancel requested; the worker stopped it"
    stopped = row.state in FINAL and (row.error or "").startswith("cancelled by")
    if as_json:
        print(json.dumps({**result_json(row, settings), "cancelled": stopped,
                          "cancel_requested_by": row.cancel_requested_by,
                          "message": said}, sort_keys=True))
    elif before.state == QUEUED and stopped:
        out.print(f"build {row.id}: {said}", highlight=False)
    elif row.state in FINAL:
        out.print(f"build {row.id}: {row.state}: {row.error or row.digest or ''}".rstrip(),
                  highlight=False)
    else:
        err.print(f"build {row.id} is still running after {timeout:g} s; the worker stops "
                  f"it at its next step (alicorn wait {row.id})", highlight=False)
    if not stopped:
        # Still running, or it finished after all (the cancel came while it published).
        sys.exit(EXIT_FAILED)


def _build_for(settings: Settings, ident: str) -> Any:
    """The build behind a digest, a build id, or an image reference (asked of the registry)."""
    if "/" in ident and not ident.startswith("sha256:"):
        from alicorn.chain.sigstore import split_reference
        from alicorn.registry.client import RegistryClient

        if "@" in ident:
            ident = ident.rsplit("@", 1)[1]
        else:
            repository, tag, _ = split_reference(ident)
            addr, _, name = repository.partition("/")
            got = RegistryClient(addr).get_manifest(name, tag or "latest")
            if got is None:
                raise BadInput(f"{ident} is not in its registry")
            ident = str(got[2])
    row = _store(settings).resolve(ident)
    if row.state != DONE and ident.startswith("sha256:"):
        raise BadInput(f"{ident} was not produced by a finished build")
    return row


@cli.command()
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--log", "show_log", is_flag=True, help="Print the build log too.")
@click.option("--offline", is_flag=True, help="Do not ask the registry.")
@click.option("--bundle", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write an evidence bundle: what `alicorn verify --bundle` needs to "
                   "check the chain on another machine, offline.")
def trace(ident: str, as_json: bool, show_log: bool, offline: bool,
          bundle: Path | None) -> None:
    """Walk back from an image DIGEST (or build id, or image reference) to its inputs and log."""
    from alicorn.chain.record import BUILD_LOG, PROVENANCE, BuildFiles
    from alicorn.chain.verify import Verifier
    from alicorn.cluster.files import materialize

    settings = _settings()
    row = _build_for(settings, ident)
    verifier = Verifier(settings, registry=not offline, fetch_image=False if offline else None)
    files = BuildFiles(materialize(settings, row.id))
    report = verifier.verify(row)
    if bundle is not None:
        from alicorn.chain.bundle import make_bundle
        data_ = make_bundle(row, files, verifier.log, verifier.keys.public_keys())
        bundle.write_text(json.dumps(data_, sort_keys=True))
        err.print(f"evidence bundle written to {bundle}", highlight=False)
    record = files.record() if files.path("record.json").exists() else {}
    envelope = json.loads(files.read(PROVENANCE)) if files.path(PROVENANCE).exists() else None
    data = {
        "digest": row.digest, "build_id": row.id, "state": row.state, "image": row.image_ref,
        "argv": row.argv,
        "recipe": {"path": row.recipe_path, "digest": row.recipe_digest,
                   "content": row.recipe_content},
        "source": ({"url": row.source_url, "ref": row.source_ref, "commit": row.source_commit}
                   if row.source_kind == "git" else None),
        "inputs": row.inputs,
        "packages": [{"name": p.name, "version": p.version, "type": p.type, "arch": p.arch,
                      "purl": p.purl, "checksum": p.checksum} for p in row.packages],
        "log": {"digest": row.log_digest, "path": str(files.path(BUILD_LOG))},
        "sboms": record.get("sboms"),
        "provenance": envelope,
        "transparency_log": {"record_index": row.record_index,
                             "inputs_index": row.inputs_index,
                             "record_digest": row.record_digest},
        "verified": report.verified,
        "checks": [vars(c) for c in report.checks],
        "trigger": row.trigger,
        "build_checks": row.checks,
    }
    if as_json:
        print(json.dumps(data, sort_keys=True))
    else:
        out.print(f"image      {row.digest}  ({row.image_ref or 'not published'})",
                  highlight=False)
        out.print(f"build      {row.id} ({row.state}), by {row.submitter}", highlight=False)
        out.print(f"argv       {' '.join(row.argv)}", highlight=False)
        if data["source"]:
            out.print(f"source     {row.source_url} {row.source_ref} → commit "
                      f"{row.source_commit}", highlight=False)
        out.print(f"recipe     {row.recipe_path} ({row.recipe_digest or 'not read'})",
                  highlight=False)
        if row.trigger:
            out.print(f"trigger    advisories "
                      f"{', '.join(row.trigger.get('advisories') or []) or '-'}; replaces "
                      f"{row.trigger.get('previous_digest') or '-'}", highlight=False)
        base = (row.inputs or {}).get("base")
        if isinstance(base, dict):
            out.print(f"base       {base.get('name')} {base.get('digest')}", highlight=False)
        for repo in (row.inputs or {}).get("repositories", []):
            out.print(f"repository {repo['name']} {repo['url']} ({repo['metadata']})",
                      highlight=False)
        out.print(f"packages   {len(row.packages)}: " + ", ".join(
            f"{p.name}={p.version}" for p in row.packages[:8])
            + (" …" if len(row.packages) > 8 else ""), highlight=False)
        out.print(f"log        {files.path(BUILD_LOG)} ({row.log_digest})", highlight=False)
        out.print(f"log entry  {row.record_index} (inputs: {row.inputs_index})",
                  highlight=False)
        _print_checks(report)
    if show_log:
        sys.stdout.write(files.read(BUILD_LOG).decode("utf-8", "replace"))
    if not report.verified:
        sys.exit(EXIT_FAILED)


def _print_checks(report: Any) -> None:
    for c in report.checks:
        mark = "[green]ok[/]    " if c.ok else "[red]BROKEN[/]"
        out.print(f"{mark} {c.link}: {c.detail}", highlight=False)
    if report.verified:
        out.print("[green]verified[/]: every link holds")
    else:
        b = report.broken
        out.print(f"[red]not verified[/]: the broken link is {b.link if b else 'unknown'}")


@cli.command()
@click.argument("ident", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--offline", is_flag=True, help="Do not ask the registry.")
@click.option("--bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Check an evidence bundle (from `trace --bundle`) instead, with no store.")
@click.option("--key", "key_files", multiple=True, type=click.Path(path_type=Path,
              dir_okay=False, exists=True), help="Trust only this public key (PEM); repeatable.")
@click.option("--witness", "witness", type=click.Path(path_type=Path, dir_okay=False),
              help="Tree heads a witness kept (JSON list or one head): each must be a prefix.")
@click.option("--rebuild", is_flag=True, help="Also rebuild from the recorded inputs and "
                                              "compare the image bit for bit.")
def verify(ident: str | None, as_json: bool, offline: bool, bundle: Path | None,
           key_files: tuple[Path, ...], witness: Path | None, rebuild: bool) -> None:
    """Check every link from an image DIGEST or IMAGE_REF back to its inputs; exit 0 only if
    all hold."""
    from alicorn.chain.translog import SignedTreeHead
    from alicorn.chain.verify import Verifier

    if bundle is not None:
        _verify_bundle(bundle, key_files, ident, as_json)
        return
    if ident is None:
        raise BadInput("name an image digest or reference, or give --bundle FILE")
    settings = _settings()
    row = _build_for(settings, ident)
    witnessed = []
    if witness is not None:
        try:
            raw = json.loads(witness.read_text())
        except (OSError, ValueError) as e:
            raise BadInput(f"{witness}: cannot read tree heads: {e}") from e
        witnessed = [SignedTreeHead.from_json(h) for h in (raw if isinstance(raw, list)
                                                             else [raw])]
    # --offline: nothing from the registry, the image included (in a cluster only the
    # builder's store and the registry hold it).
    report = Verifier(settings, registry=not offline, witnessed=witnessed,
                      fetch_image=False if offline else None).verify(row)
    if rebuild:
        report.add("rebuild", *_rebuild(settings, row))
    if as_json:
        print(json.dumps({"digest": row.digest, "build_id": row.id,
                          "verified": report.verified,
                          "broken": report.broken.link if report.broken else None,
                          "checks": [vars(c) for c in report.checks]}, sort_keys=True))
    else:
        _print_checks(report)
    if not report.verified:
        sys.exit(EXIT_FAILED)


def _verify_bundle(path: Path, key_files: tuple[Path, ...], ident: str | None,
                   as_json: bool) -> None:
    from alicorn.chain.bundle import verify_bundle
    from alicorn.chain.keys import PinnedKeys

    pinned = PinnedKeys.from_pem_files(list(key_files)) if key_files else None
    report, notes = verify_bundle(path.read_bytes(), pinned)
    if ident is not None and ident.strip() != report.digest:
        report.add("digest", False, f"the bundle is about {report.digest}, not {ident}")
    if as_json:
        print(json.dumps({"digest": report.digest, "build_id": report.build_id,
                          "verified": report.verified, "notes": notes,
                          "broken": report.broken.link if report.broken else None,
                          "checks": [vars(c) for c in report.checks]}, sort_keys=True))
    else:
        _print_checks(report)
        for note in notes:
            err.print(f"note: {note}", highlight=False)
    if not report.verified:
        sys.exit(EXIT_FAILED)


def _rebuild(settings: Settings, row: Any) -> tuple[bool, str]:
    """Build again from the recorded inputs (the commit, not the ref) and compare digests."""
    import subprocess

    epoch = (row.inputs or {}).get("source_date_epoch")
    level = (row.inputs or {}).get("compression_level", 1)
    args = [sys.executable, "-m", "alicorn", "build"]
    if row.source_kind == "git":
        args += [row.source_url, "--ref", row.source_commit, "--recipe", row.recipe_path]
    else:
        args += [row.recipe_path]
    # Only the bits are compared: the rebuild's tests and gate would say nothing about them.
    args += ["--no-cache", "--no-push", "--skip-checks", "--json", "--compression-level",
             str(level)]
    if epoch is not None:
        args += ["--source-date-epoch", str(epoch)]
    proc = subprocess.run(args, capture_output=True, text=True)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return False, f"the rebuild did not finish: {proc.stderr.strip()[-300:]}"
    if result.get("state") != "done":
        return False, f"the rebuild {result.get('build_id')} failed: {result.get('error')}"
    if result["digest"] != row.digest:
        return False, (f"the rebuild {result['build_id']} gave {result['digest']}, not "
                       f"{row.digest}: the image is not reproducible from its inputs")
    return True, f"rebuild {result['build_id']} gave the same digest, bit for bit"


@cli.group("log")
def log_group() -> None:
    """The transparency log: signed tree heads, proofs, integrity."""


@log_group.command("head")
@click.option("--all", "all_heads", is_flag=True, help="Every head signed so far.")
def log_head(all_heads: bool) -> None:
    """Print the latest signed tree head as JSON (what a witness keeps)."""
    from alicorn.chain.keys import keyring_for
    from alicorn.chain.translog import TransparencyLog

    settings = _settings()
    log = TransparencyLog(settings.database_url, keyring_for(settings))
    if all_heads:
        print(json.dumps([h.to_json() for h in log.heads()], indent=2))
        return
    head = log.latest_head()
    if head is None:
        raise BadInput("the log has no signed head yet (no build has run)")
    print(json.dumps(head.to_json(), indent=2))


@log_group.command("check")
def log_check() -> None:
    """Recompute every entry, subtree and root, and check every signed head."""
    from alicorn.chain.keys import keyring_for
    from alicorn.chain.translog import TransparencyLog

    settings = _settings()
    result = TransparencyLog(settings.database_url, keyring_for(settings)).check_integrity()
    out.print(f"the log holds: {result.tree_size} entries, root {result.root_hash}, "
              f"{result.heads_checked} signed heads consistent", highlight=False)


@cli.group()
def keys() -> None:
    """The build service's signing keys."""


@keys.command("list")
def keys_list() -> None:
    from alicorn.chain.keys import keyring_for
    for k in keyring_for(_settings()).public_keys():
        out.print(f"{k.key_id} created {k.created}"
                  + (f" retired {k.retired}" if k.retired else " (signing)"), highlight=False)


@keys.command("export")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
def keys_export(directory: Path) -> None:
    """Write the public keys (every one, retired too) and the signed tree heads to DIRECTORY,
    for verifiers and witnesses."""
    import shutil

    from alicorn.chain.keys import keyring_for
    from alicorn.chain.translog import TransparencyLog

    settings = _settings()
    ring = keyring_for(settings)
    directory.mkdir(parents=True, exist_ok=True)
    for key in ring.public_keys():
        (directory / f"{key.key_id}.pem").write_text(key.pem)
    (directory / "keys.json").write_text(json.dumps(
        {"keys": [k.to_json() for k in ring.public_keys()]}, indent=2, sort_keys=True) + "\n")
    for name in ("gpg-pubring.gpg", "gpg-pubring.asc"):
        if (ring.public_dir / name).exists():
            shutil.copy(ring.public_dir / name, directory / name)
    heads = TransparencyLog(settings.database_url, ring).heads()
    (directory / "tree-heads.json").write_text(
        json.dumps([h.to_json() for h in heads], indent=2) + "\n")
    out.print(f"{len(ring.public_keys())} key(s) and {len(heads)} tree head(s) in {directory}",
              highlight=False)


@keys.command("rotate")
def keys_rotate() -> None:
    """Retire the signing key (it keeps verifying what it signed) and make a new one."""
    from alicorn.chain.gpgsign import gpg_keyring_for
    from alicorn.chain.keys import keyring_for
    settings = _settings()
    # In a cluster the new public keys go to the database for the other hosts' verifiers.
    key = keyring_for(settings).rotate()
    gpg = gpg_keyring_for(settings).rotate()
    out.print(f"new signing key {key.key_id}\nnew GPG key {gpg.fingerprint}", highlight=False)
    if settings.registry_managed:
        from alicorn.registry.local import Registry
        registry = Registry(settings)
        if registry.is_up():
            registry.require_signatures()  # the trusted keyring now holds the new key too


@cli.command("builds")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=50, show_default=True)
def list_builds(as_json: bool, limit: int) -> None:
    """List recent builds."""
    settings = _settings()
    rows = _store(settings).recent(limit)
    if as_json:
        print(json.dumps([{"build_id": r.id, "state": r.state, "recipe": r.recipe_name,
                           "digest": r.digest, "image": r.image_ref,
                           "created": r.created_at.isoformat() + "Z"} for r in rows]))
        return
    table = Table("build", "state", "recipe", "digest", "created (UTC)")
    for r in rows:
        table.add_row(r.id, r.state, r.recipe_name or r.recipe_path,
                      (r.digest or "")[:19], r.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    out.print(table)


def _gate_problems(build_dir: Path, most: int = 5) -> list[tuple[str, str]]:
    """What each failed check of the build's gate found (its first few problems)."""
    from alicorn.chain.record import GATE

    try:
        doc = json.loads((build_dir / GATE).read_text(encoding="utf-8"))
        checks = [c for c in doc.get("checks") or [] if c.get("passed") is False]
        found = []
        for check in checks:
            problems = [str(p) for p in check.get("problems") or []]
            found += [(str(check["name"]), p) for p in problems[:most]]
            if len(problems) > most:
                found.append((str(check["name"]), f"… and {len(problems) - most} more "
                                                  f"(in {build_dir / GATE})"))
        return found
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return []


@cli.command()
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True)
def show(ident: str, as_json: bool) -> None:
    """Show a build by id, id prefix or image digest."""
    from alicorn.cli.follow import result_json
    from alicorn.cluster.files import materialize

    settings = _settings()
    row = _store(settings).resolve(ident)
    materialize(settings, row.id)  # a build of another host: its files from the shared store
    data = result_json(row, settings)
    data.update(argv=row.argv, submitter=row.submitter, inputs=row.inputs, outputs=row.outputs,
                created=row.created_at.isoformat() + "Z",
                finished=row.finished_at.isoformat() + "Z" if row.finished_at else None,
                package_list=[{"name": p.name, "version": p.version, "type": p.type,
                               "arch": p.arch, "purl": p.purl, "checksum": p.checksum}
                              for p in row.packages])
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    for key in ("build_id", "state", "digest", "image", "error", "argv", "submitter", "created",
                "finished", "cached_from", "log", "log_digest", "worker", "queue", "retry_of",
                "retried_as"):
        if data.get(key) is not None:
            out.print(f"{key:12} {data[key]}", highlight=False)
    if (row.attempt or 1) > 1 or row.retried_as:
        out.print(f"{'attempt':12} {row.attempt or 1}", highlight=False)
    out.print(f"{'recipe':12} {row.recipe_path} ({row.recipe_digest or 'not read'})",
              highlight=False)
    if data["source"]:
        out.print(f"{'source':12} {row.source_url} {row.source_ref} → {row.source_commit}",
                  highlight=False)
    out.print(f"{'packages':12} {len(row.packages)}")
    if row.trigger:
        trig = row.trigger
        out.print(f"{'trigger':12} advisories {', '.join(trig.get('advisories') or []) or '-'}"
                  f"; replaces {trig.get('previous_digest') or '-'}", highlight=False)
    if row.checks:
        c = row.checks
        out.print(f"{'checks':12} fixed {c.get('fixed') or '-'}, tests {c.get('tests') or '-'}, "
                  f"gate {c.get('gate') or '-'}", highlight=False)
        for t in c.get("tests_detail") or []:
            out.print(f"{'':12} test {'pass' if t['passed'] else 'FAIL'} {t['name']}: "
                      f"{t['detail']}", highlight=False)
        if c.get("gate_summary"):
            out.print(f"{'':12} gate: {c['gate_summary']}", highlight=False)
        for name, problem in _gate_problems(settings.build_dir(row.id)):
            out.print(f"{'':12}   {name}: {problem}", highlight=False)
        if c.get("fixed_detail"):
            out.print(f"{'':12} fixed: {c['fixed_detail']}", highlight=False)


@cli.command()
@click.argument("ident")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing while it runs.")
def logs(ident: str, follow_: bool) -> None:
    """Print a build's log."""
    import time

    from alicorn.cluster.files import materialize, settled

    settings = _settings()
    store = _store(settings)
    row = store.resolve(ident)
    path = settings.build_dir(row.id) / "build.log"
    pos = 0
    while True:
        # A build of another host: what its worker sent so far (in a cluster).
        materialize(settings, row.id)
        if path.exists():
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos += len(chunk)
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
        # In a cluster an ended build's log is whole once its worker sealed it.
        if not follow_ or settled(settings, store.get(row.id)):
            if follow_ and (materialize(settings, row.id) and path.exists()
                            and path.stat().st_size > pos):
                continue
            break
        time.sleep(0.3)


@cli.command("run")
@click.argument("image")
@click.option("--name", default="pony", show_default=True, help="Container name.")
@click.option("--port", default=80, show_default=True, help="Host port to publish.")
@click.option("--address", default="", help="Host address to publish on (default: all).")
@click.option("--container-port", type=int, help="Port inside (default: the image's first).")
@click.option("--content", type=click.Path(path_type=Path),
              help="Serve this host directory (mounted read-only at the content path).")
@click.option("--content-volume", help="Serve this podman volume.")
@click.option("--content-image", help="Serve the files of this image.")
@click.option("--content-from", help="Serve the volumes of this running container.")
@click.option("--replace", is_flag=True, help="Replace a container of the same name.")
@click.option("--wait/--no-wait", default=True, help="Wait until it answers over HTTP.")
def run_cmd(image: str, name: str, port: int, address: str, container_port: int | None,
            content: Path | None, content_volume: str | None, content_image: str | None,
            content_from: str | None, replace: bool, wait: bool) -> None:
    """Run IMAGE (a reference, a build id or an image digest) with podman."""
    from alicorn.run.podman import Content, health_path, start, wait_http

    given = [x for x in (content, content_volume, content_image, content_from) if x is not None]
    if len(given) > 1:
        raise BadInput("give at most one of --content, --content-volume, --content-image, "
                       "--content-from")
    settings = _settings()
    ref = _image_ref(settings, image)
    cid = start(ref, name=name, port=port, address=address, container_port=container_port,
                content=Content(directory=content, volume=content_volume, image=content_image,
                                container=content_from), replace=replace)
    host = address if address not in ("", "0.0.0.0") else "127.0.0.1"
    url = f"http://{host}:{port}/"
    if wait:
        wait_http(f"http://{host}:{port}{health_path(ref)}", timeout=60)
    out.print(f"{name} ({cid[:12]}) answers on {url}", highlight=False)


@cli.command("test")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True)
def test_cmd(image: str, as_json: bool) -> None:
    """Run the recipe's tests against IMAGE (build id, digest or reference) in podman."""
    from alicorn.acceptance.runner import run_tests

    settings = _settings()
    ref = _image_ref(settings, image)
    results = run_tests(ref)
    failed = [r for r in results if not r.passed]
    if as_json:
        print(json.dumps({"image": ref, "passed": not failed,
                          "tests": [vars(r) for r in results]}, sort_keys=True))
    else:
        for r in results:
            mark = "[green]pass[/]" if r.passed else "[red]FAIL[/]"
            out.print(f"{mark} {r.name}: {r.detail}", highlight=False)
        out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        sys.exit(EXIT_FAILED)


def _image_ref(settings: Settings, image: str) -> str:
    """A pullable reference for a build id, an image digest, or a reference as given."""
    from alicorn.digest import is_digest

    ref = image
    if "/" not in image or is_digest(image):
        row = _store(settings).resolve(image)
        if not row.image_ref:
            raise BadInput(f"build {row.id} has no published image ({row.state})")
        ref = row.image_ref
    if ref.startswith(settings.registry + "/") and settings.registry_managed:
        from alicorn.registry.local import Registry
        Registry(settings).ensure_running()
    return ref


@cli.command()
@click.argument("name")
def stop(name: str) -> None:
    """Stop and remove the module container NAME."""
    from alicorn.run.podman import remove
    remove(name)


@cli.group()
def registry() -> None:
    """The local registry (embedded default)."""


@registry.command("start")
def registry_start() -> None:
    from alicorn.registry.local import Registry
    reg = Registry(_settings())
    reg.ensure_running()
    out.print(f"registry answers on http://{reg.addr}/v2/", highlight=False)


@registry.command("stop")
def registry_stop() -> None:
    from alicorn.registry.local import Registry
    out.print("stopped" if Registry(_settings()).stop() else "not running")


@registry.command("status")
def registry_status() -> None:
    from alicorn.registry.local import Registry
    reg = Registry(_settings())
    up = reg.is_up()
    out.print(f"{reg.addr}: {'up' if up else 'down'}"
              + (f", repositories: {', '.join(reg.catalog()) or '(none)'}" if up else ""),
              highlight=False)
    if not up:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option("--once", is_flag=True, help="Run at most one queued build, then exit "
              "(the embedded default only).")
@click.option("--idle-exit", type=float, help="Exit after this many idle seconds "
              "(the embedded default only).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Builds this worker runs at once (the Celery backend).")
@click.option("--capability", "capabilities", multiple=True,
              type=click.Choice(["deb", "rpm"]), help="What this builder builds: its "
              "queues (repeatable; default both).")
@click.option("--arch", help="The architecture whose queues it joins (default: this host's).")
@click.option("--listen", metavar="HOST:PORT", help="Serve /healthz and Prometheus /metrics "
              "there (the Celery backend).")
def worker(once: bool, idle_exit: float | None, concurrency: int,
           capabilities: tuple[str, ...], arch: str | None, listen: str | None) -> None:
    """Run queued builds: the embedded default's local worker (it starts one by itself), or,
    with the Celery backend (ALICORN_QUEUE=celery), a builder joining its queues."""
    from alicorn.cluster.config import load_queue_config
    settings = _settings()
    config = load_queue_config(settings)
    if config.celery:
        if once or idle_exit is not None:
            raise BadInput("--once and --idle-exit are for the embedded worker",
                           hint="a Celery worker runs until it is stopped (SIGTERM)")
        from alicorn.cluster.worker import run_celery_worker
        # The database first: a builder that cannot reach it says so, and exits 69 for its
        # supervisor to start it again later (a broker that is down, Celery waits for).
        _store(settings)
        run_celery_worker(settings, config, concurrency=concurrency,
                          capabilities=capabilities or ("deb", "rpm"), arch=arch,
                          listen=listen)
        return
    if concurrency != 1 or capabilities or arch or listen:
        raise BadInput("--concurrency, --capability, --arch and --listen are for the Celery "
                       "backend",
                       hint="set ALICORN_QUEUE=celery and ALICORN_BROKER_URL (see "
                            "docs/scale-out.md)")
    from alicorn.worker.local import serve
    serve(settings, once=once, idle_exit=idle_exit)


@cli.command()
def down() -> None:
    """Stop the modules' proxies and containers (state kept: `alicorn resume` starts them
    again), the local worker (the service), the API served apart and the local registry."""
    from alicorn.chain.gpgsign import GpgKeyRing
    from alicorn.registry.local import Registry
    from alicorn.worker.local import stop_worker
    settings = _settings()
    # Every deployed module has a directory there (its proxy's files); without one, no module
    # ever ran in this home and the controller (and its database) need not be opened.
    deployed = settings.modules_dir.is_dir() and any(settings.modules_dir.iterdir())
    problem = None
    if deployed:
        from alicorn.rollout.controller import Controller
        try:
            Controller(settings).stop()
        except Error as e:  # the worker and the registry are stopped all the same
            problem = e
    w = stop_worker(settings)
    from alicorn import daemon
    api = daemon.stop(settings.run_dir / "api.pid")   # `alicorn serve --api-only --detach`
    r = Registry(settings).stop()
    GpgKeyRing(settings.keys_dir).stop_agent()  # signing started it; it would outlive us
    modules = ("" if not deployed else ", modules: could not stop them all" if problem else
               ", modules stopped (state kept; `alicorn resume` starts them)")
    out.print(f"worker {'stopped' if w else 'not running'}, "
              + ("API stopped, " if api else "")
              + f"registry {'stopped' if r else 'not running'}{modules}")
    if problem is not None:
        err.print(f"[bold red]error:[/] {problem.diagnostics()}", highlight=False)
        sys.exit(problem.exit_code)


@cli.command("setup-host")
@click.option("--quiet", is_flag=True)
def setup_host(quiet: bool) -> None:
    """Write the podman defaults this host needs (ulimits, runc, cgroupfs), and install the
    `dnf list-security` plugin into the system's dnf."""
    from alicorn.dnf_plugin.install import dnf_available
    from alicorn.dnf_plugin.install import install as install_dnf_plugin
    from alicorn.run.podman import setup_host as do
    changed = do()
    if dnf_available():
        changed += [str(p) for p in install_dnf_plugin()]
    elif not quiet:
        err.print("dnf is not installed: `dnf list-security` was not set up")
    if not quiet or changed:
        for path in changed:
            err.print(f"wrote {path}")


@cli.group()
def recipe() -> None:
    """Recipes: check them, print their schema."""


@recipe.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def recipe_validate(files: tuple[Path, ...]) -> None:
    """Check recipe FILES against the schema; errors name file, line and field."""
    from alicorn.recipe import load_recipe
    for f in files:
        r = load_recipe(f)
        out.print(f"{f}: ok ({r.name}, {r.distribution} {r.release}, {r.digest})",
                  highlight=False)


@recipe.command("schema")
def recipe_schema() -> None:
    """Print the recipe's JSON schema."""
    from alicorn.recipe.loader import schema
    print(json.dumps(schema(), indent=2))


@cli.command()
@click.option("--port", type=int, help="Host port for the pony (default 80 if free, else any).")
@click.option("--example", type=click.Path(path_type=Path, file_okay=False),
              help="Directory holding pony.yaml (default: examples/pony/debian).")
def demo(port: int | None, example: Path | None) -> None:
    """The main job: build pony from a git repository, publish it, run it, fetch its page."""
    from alicorn.demo import run_demo
    run_demo(_settings(), port=port, example=example, console=out)


def _register() -> None:
    # Command groups that live in their own modules (one per area of the command line).
    from alicorn.cli.advisories import advisories
    from alicorn.cli.events import events
    from alicorn.cli.scan import scan
    cli.add_command(advisories)
    from alicorn.cli.api import api  # alicorn.web: tokens, audit trail, settings
    cli.add_command(api)
    cli.add_command(events)
    cli.add_command(scan)
    from alicorn.cli.serve import serve, watch  # the rebuild service (alicorn.events)
    cli.add_command(serve)
    cli.add_command(watch)
    from alicorn.cli.cluster import cluster as cluster_group  # alicorn.cluster.compose
    cli.add_command(cluster_group)
    from alicorn.cli.rollout import COMMANDS as rollout_commands  # alicorn.rollout
    for command in rollout_commands:
        cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="alicorn")
