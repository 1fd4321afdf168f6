"""The read side the API and the pages share: builds (with progress), a build's inputs and
outputs, its verification, logs, advisories and the images they affect, rebuild events,
modules and the transparency log — as JSON-able dicts (datetimes as ISO 8601 text with "Z").

Every function takes the application's :class:`~alicorn.web.app.WebContext`; unknown things
raise NotFound, malformed ones BadInput.  What a request names is never used as a path: logs
and SBOMs are looked up by their fixed names, builds by id in the database.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from alicorn.errors import BadInput, NotFound
from alicorn.web.model import LOG_NAMES

if TYPE_CHECKING:
    from alicorn.advisories.model import Advisory
    from alicorn.chain.translog import SignedTreeHead, TransparencyLog
    from alicorn.match.affected import AffectedImage
    from alicorn.store.models import BuildRow
    from alicorn.web.app import WebContext

FINAL = ("done", "failed")
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
_DIGEST = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
# A search names at most this much of what it was given (a pasted log must not come back).
_ECHO = 100
# How long the verification of an ended build is reused (it reads every file of the build).
VERIFY_TTL = 30.0
_verified: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
_verified_lock = threading.Lock()


def stamp(value: datetime | None) -> str | None:
    """A naive-UTC (or aware) datetime as ISO 8601 text ending in "Z"."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def echo(text: str) -> str:
    """What a person typed, shortened for a message."""
    text = text.strip()
    return text if len(text) <= _ECHO else text[:_ECHO] + "…"


# -- builds ---------------------------------------------------------------------------------

def progress_of(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The last step and the last progress within it of a build's progress.jsonl."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            tail = min(size, 1 << 16)
            f.seek(size - tail)
            data = f.read()
            if tail < size and b'"event": "step"' not in data:
                f.seek(0)
                data = f.read()
                tail = size
    except OSError:
        return None, None
    lines = data.split(b"\n")
    if tail < size:
        lines = lines[1:]  # the first line of the tail may be cut
    step: str | None = None
    progress: dict[str, Any] | None = None
    for line in reversed(lines):
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        if ev.get("event") == "progress" and progress is None and step is None:
            progress = {"done": ev.get("done"), "total": ev.get("total"),
                        "detail": ev.get("detail")}
        elif ev.get("event") == "step":
            step = str(ev.get("name"))
            break
    return step, progress


def build_summary(ctx: WebContext, row: BuildRow) -> dict[str, Any]:
    """{id, state, created_at, started_at, finished_at, recipe_name, recipe_path, digest,
    image, submitter, source {url, ref, commit} | None, step, progress {done, total} | None,
    error, cancel_requested {at, by} | None, trigger}.

    ``step`` and ``progress`` are those of a running build (None otherwise)."""
    step, progress = (progress_of(_dir(ctx, row.id, quiet=True) / "progress.jsonl")
                      if row.state == "running" else (None, None))
    return {
        "id": row.id, "state": row.state, "created_at": stamp(row.created_at),
        "started_at": stamp(row.started_at), "finished_at": stamp(row.finished_at),
        "recipe_name": row.recipe_name, "recipe_path": row.recipe_path, "digest": row.digest,
        "image": row.image_ref, "submitter": row.submitter,
        "source": ({"url": row.source_url, "ref": row.source_ref, "commit": row.source_commit}
                   if row.source_kind == "git" else None),
        "step": step, "progress": progress, "error": row.error,
        "cancel_requested": ({"at": stamp(row.cancel_requested_at),
                              "by": row.cancel_requested_by}
                             if row.cancel_requested_at is not None else None),
        "trigger": row.trigger,
    }


def list_builds(ctx: WebContext, *, state: str | None = None, limit: int = 50,
                before: str | None = None) -> list[dict[str, Any]]:
    """Newest first; ``before``: a build id (the page after)."""
    from sqlalchemy import select

    from alicorn.store.db import session_factory
    from alicorn.store.models import BuildRow

    if state is not None and state not in ("queued", "running", *FINAL):
        raise BadInput(f"no build state {echo(state)!r}",
                       hint="one of queued, running, done, failed")
    if not 1 <= limit <= 500:
        raise BadInput(f"limit must be 1 to 500, not {limit}")
    query = select(BuildRow).order_by(BuildRow.created_at.desc(), BuildRow.id.desc())
    if state is not None:
        query = query.where(BuildRow.state == state)
    with session_factory(ctx.settings.database_url)() as s:
        if before is not None:
            if not _HEX.fullmatch(before):
                raise BadInput(f"before must be a build id, not {echo(before)!r}")
            pivot = s.get(BuildRow, before)
            if pivot is None:
                raise NotFound(f"no build {before}", where="before")
            query = query.where(
                (BuildRow.created_at < pivot.created_at)
                | ((BuildRow.created_at == pivot.created_at) & (BuildRow.id < pivot.id)))
        rows = list(s.scalars(query.limit(limit)))
    return [build_summary(ctx, r) for r in rows]


def build_detail_row(ctx: WebContext, build_id: str) -> BuildRow:
    """The build row an id or id prefix names (NotFound otherwise)."""
    return _get(ctx, build_id)


def _dir(ctx: WebContext, build_id: str, *, quiet: bool = False) -> Path:
    """The build's directory on this host, with its files from the shared store when its
    worker is another host (:func:`alicorn.cluster.files.materialize`); ``quiet``: a
    shared store that cannot be read leaves what this host has (a list of builds goes on)."""
    from alicorn.cluster.files import materialize
    from alicorn.errors import Error

    try:
        return materialize(ctx.settings, build_id)
    except Error:
        if quiet:
            return ctx.settings.build_dir(build_id)
        raise


def _get(ctx: WebContext, build_id: str) -> BuildRow:
    """A build by id or id prefix (hex only: what reaches the query is never a pattern)."""
    ident = build_id.strip().lower()
    if not _HEX.fullmatch(ident) or len(ident) > 32:
        raise NotFound(f"no build {echo(build_id)!r}: a build id is up to 32 hex digits",
                       hint="GET /api/v1/builds lists them")
    return ctx.builds.resolve(ident)


_FORGES = {"github.com": "/commit/", "gitlab.com": "/-/commit/", "codeberg.org": "/commit/",
           "bitbucket.org": "/commits/", "salsa.debian.org": "/-/commit/",
           "src.fedoraproject.org": "/c/", "git.sr.ht": "/commit/"}


def commit_url(url: str | None, commit: str | None) -> str | None:
    """A web link to ``commit`` of the repository at ``url`` on a known forge, else None."""
    if not url or not commit or not re.fullmatch(r"[0-9a-f]{7,64}", commit):
        return None
    m = re.fullmatch(r"(?:ssh://)?git@([^:/]+)[:/](.+)", url)
    if m:
        host, path = m.group(1), m.group(2)
    else:
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        if parts.scheme not in ("https", "http", "git", "ssh"):
            return None
        host, path = (parts.hostname or ""), parts.path
    host = host.lower()
    path = path.strip("/")
    path = path[:-4] if path.endswith(".git") else path
    if host not in _FORGES or not re.fullmatch(r"[A-Za-z0-9_.~/-]+", path) or ".." in path:
        return None
    return f"https://{host}/{path}{_FORGES[host]}{commit}"


def _record(ctx: WebContext, row: BuildRow) -> dict[str, Any]:
    from alicorn.chain.record import RECORD

    path = _dir(ctx, row.id) / RECORD
    try:
        data: dict[str, Any] = json.loads(path.read_bytes())
        return data
    except (OSError, ValueError):
        return {}


def _logs(ctx: WebContext, row: BuildRow, record: dict[str, Any]) -> list[dict[str, Any]]:
    sealed = record.get("logs") or {}
    out = []
    directory = _dir(ctx, row.id)
    for name in LOG_NAMES:
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError:
            continue
        out.append({"name": name, "size": size, "digest": sealed.get(name),
                    "complete": row.state in FINAL})
    return out


def logs(ctx: WebContext, build_id: str) -> list[dict[str, Any]]:
    """The logs a build has written so far: [{name, size, digest (sealed) | None,
    complete}]."""
    row = _get(ctx, build_id)
    return _logs(ctx, row, _record(ctx, row) if row.state in FINAL else {})


def build_detail(ctx: WebContext, build_id: str, *, row: BuildRow | None = None
                 ) -> dict[str, Any]:
    """build_summary + argv, recipe {path, digest, content}, commit_url (a web link for the
    commit when the source is on a known forge, else None), inputs, packages [{name, version,
    type, arch, purl, checksum}], outputs {digest, image, ...}, sboms, provenance {digest,
    present}, transparency_log {record_index, inputs_index, record_digest}, checks
    (build_checks), logs [{name, size, digest, complete}].  ``row``: the build's row when the
    caller has it already (one lookup per request)."""
    from alicorn.chain.record import PROVENANCE

    row = row if row is not None else _get(ctx, build_id)
    record = _record(ctx, row)
    data = build_summary(ctx, row)
    data.update(
        argv=list(row.argv), options=row.options,
        recipe={"path": row.recipe_path, "name": row.recipe_name, "digest": row.recipe_digest,
                "content": row.recipe_content},
        commit_url=commit_url(row.source_url, row.source_commit),
        inputs=row.inputs,
        packages=[{"name": p.name, "version": p.version, "type": p.type, "arch": p.arch,
                   "purl": p.purl, "checksum": p.checksum} for p in row.packages],
        outputs={**(row.outputs or {}), "digest": row.digest, "image": row.image_ref,
                 "published": row.published, "cached_from": row.cached_from,
                 "base_digest": row.base_digest},
        sboms=record.get("sboms"),
        provenance={"digest": row.provenance_digest,
                    "present": (_dir(ctx, row.id) / PROVENANCE).is_file()},
        transparency_log={"record_index": row.record_index, "inputs_index": row.inputs_index,
                          "record_digest": row.record_digest},
        checks=row.checks, logs=_logs(ctx, row, record), worker=row.worker,
    )
    return data


def verification(ctx: WebContext, build_id: str, *, row: BuildRow | None = None
                 ) -> dict[str, Any]:
    """{verified, broken (link name) | None, checks [{link, ok, detail}]}: the offline chain
    verification (alicorn.chain.verify, registry=False) of a finished build; for a build that
    has not ended {verified: False, broken: None, checks: [], pending: True}.

    An ended build's answer is kept for VERIFY_TTL seconds (it reads every file of the
    build, and its image)."""
    from alicorn.chain.verify import Verifier

    row = row if row is not None else _get(ctx, build_id)
    if row.state not in FINAL:
        return {"build_id": row.id, "verified": False, "broken": None, "checks": [],
                "pending": True}
    key = (ctx.settings.database_url, row.id)
    now = time.monotonic()
    with _verified_lock:
        kept = _verified.get(key)
        if kept is not None and now - kept[0] < VERIFY_TTL:
            return kept[1]
    report = Verifier(ctx.settings, registry=False).verify(row)
    result = {"build_id": row.id, "digest": row.digest, "verified": report.verified,
              "broken": report.broken.link if report.broken else None,
              "checks": [{"link": c.link, "ok": c.ok, "detail": c.detail}
                         for c in report.checks],
              "pending": False}
    with _verified_lock:
        for k in [k for k, (t, _) in _verified.items() if now - t >= VERIFY_TTL]:
            del _verified[k]
        _verified[key] = (now, result)
    return result


def resolve(ctx: WebContext, q: str) -> dict[str, Any]:
    """What a search box was given — an image digest (sha256:… or 64 hex), an image reference
    (HOST/NAME[:TAG|@DIGEST], asked of the registry for a tag), a build id or id prefix — as
    {build_id, digest, url}; NotFound naming what was searched otherwise.

    Only this service's own registry is asked about a tag (a search never makes the service
    fetch from a host a visitor named); a reference elsewhere is found only by the digest it
    names, or as a build's recorded image reference."""
    text = q.strip()
    if not text:
        raise BadInput("the search is empty", hint="give an image digest, an image reference "
                                                   "or a build id")
    if len(text) > 512:
        raise NotFound(f"nothing matches {echo(text)!r}: no digest, reference or build id is "
                       f"{len(text)} characters long")
    low = text.lower()
    digest = _DIGEST.fullmatch(low)
    if digest is None and "/" in text:
        return _resolve_reference(ctx, text)
    try:
        if digest is not None:
            row = ctx.builds.resolve("sha256:" + digest.group(1))
        elif _HEX.fullmatch(low) and len(low) <= 32:
            row = ctx.builds.resolve(low)
        else:
            raise NotFound("")
    except NotFound:
        raise NotFound(f"no build or image matches {echo(text)!r}",
                       hint="search by image digest (sha256:…), image reference "
                            "(HOST/NAME:TAG) or build id") from None
    return {"build_id": row.id, "digest": row.digest, "url": f"/builds/{row.id}"}


def _resolve_reference(ctx: WebContext, text: str) -> dict[str, Any]:
    from sqlalchemy import select

    from alicorn.chain.sigstore import split_reference
    from alicorn.errors import Error
    from alicorn.store.db import session_factory
    from alicorn.store.models import BuildRow

    repository, tag, digest = split_reference(text)
    if digest is not None:
        if not _DIGEST.fullmatch(digest):
            raise NotFound(f"{echo(text)!r} names no valid digest after '@'")
        return resolve(ctx, digest)
    addr, _, name = repository.partition("/")
    if not name or not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", name) or \
            (tag is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag)):
        raise NotFound(f"{echo(text)!r} is not an image reference (HOST/NAME[:TAG])")
    if addr == ctx.settings.registry:
        from alicorn.registry.client import RegistryClient

        try:
            got = RegistryClient(addr).get_manifest(name, tag or "latest")
        except (Error, ValueError, OSError) as e:
            why = e.message if isinstance(e, Error) else str(e)
            raise NotFound(f"{echo(text)!r}: the registry {addr} cannot be asked: "
                           f"{echo(why)}") from e
        if got is None:
            raise NotFound(f"{echo(text)!r} is not in its registry")
        return resolve(ctx, str(got[2]))
    # Elsewhere: a build that recorded this reference (as repository, any digest), newest.
    with session_factory(ctx.settings.database_url)() as s:
        row = s.scalars(select(BuildRow.id).where(
            BuildRow.image_ref.startswith(repository + "@", autoescape=True),
            BuildRow.state == "done").order_by(BuildRow.created_at.desc())).first()
    if row is None or tag not in (None, "latest"):
        raise NotFound(f"no build published {echo(text)!r}",
                       hint=f"only tags in this service's registry ({ctx.settings.registry}) "
                            "are looked up; search by digest otherwise")
    return resolve(ctx, row)


def log_file(ctx: WebContext, build_id: str, name: str) -> Path:
    """The file of a build's log ``name`` (one of model.LOG_NAMES); NotFound for any other
    name (no path from the request reaches the disk) or a log not written (yet)."""
    if name not in LOG_NAMES:
        raise NotFound(f"a build has no log {echo(name)!r}",
                       hint="its logs are " + ", ".join(LOG_NAMES))
    row = _get(ctx, build_id)
    path = _dir(ctx, row.id) / LOG_NAMES[LOG_NAMES.index(name)]
    if not path.is_file():
        raise NotFound(f"build {row.id} has no {name} (yet)")
    return path


def _utf8_cut(data: bytes) -> int:
    """The length of the longest prefix of ``data`` that does not end inside a UTF-8
    character (so that a chunk of a growing log decodes without a replacement)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


def read_log(ctx: WebContext, build_id: str, name: str, *, offset: int = 0,
             limit: int = 1 << 20) -> tuple[bytes, int, bool]:
    """Up to ``limit`` bytes of the log from ``offset``: (data, next offset, complete) —
    complete when the build has ended and nothing is left after next offset.  A running
    build's log not written yet reads as empty; chunks of a running build's log end on a
    whole UTF-8 character."""
    if name not in LOG_NAMES:
        raise NotFound(f"a build has no log {echo(name)!r}",
                       hint="its logs are " + ", ".join(LOG_NAMES))
    if offset < 0:
        raise BadInput(f"offset must not be negative (got {offset})", where="offset")
    row = _get(ctx, build_id)
    # The state is read before the file: a build that had ended then has its whole log.
    from alicorn.cluster.files import settled

    # In a cluster an ended build's log is complete once its worker sealed it.
    ended = settled(ctx.settings, ctx.builds.get(row.id))
    path = _dir(ctx, row.id) / name
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if offset > size:
                raise BadInput(f"offset {offset} is past the end of {name} ({size} bytes)",
                               where="offset")
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        if ended:
            raise NotFound(f"build {row.id} has no {name}") from None
        return b"", offset, False
    if not ended:
        data = data[:_utf8_cut(data)]
    end = offset + len(data)
    return data, end, ended and end >= size


# -- advisories -----------------------------------------------------------------------------

def _advisory_summary(a: Advisory) -> dict[str, Any]:
    names = dict.fromkeys([p.name for p in a.packages] +
                          [f"{x.ecosystem}/{x.name}" for x in a.affected])
    return {"id": a.id, "format": a.format, "type": a.type, "title": a.title,
            "severity": a.severity, "cves": list(a.cves),
            "ecosystems": sorted({x.ecosystem for x in a.affected}
                                 | ({"rpm"} if a.packages else set())),
            "published": stamp(a.issued), "updated": stamp(a.updated),
            "packages": list(names)}


def advisories(ctx: WebContext, *, q: str | None = None, severity: str | None = None,
               limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """{total, items [{id, title, severity, cves, ecosystems, published, packages,
    affected (number of this store's images it affects)}]}, newest first.

    ``q``: a CVE id, an advisory id (or part of one), or a package name."""
    from sqlalchemy import exists, func, or_, select

    from alicorn.advisories import codec
    from alicorn.store.advisory_models import AdvisoryCveRow, AdvisoryPackageRow, AdvisoryRow
    from alicorn.store.db import session_factory

    if not 1 <= limit <= 500 or offset < 0:
        raise BadInput(f"limit must be 1 to 500 and offset ≥ 0 (got {limit}, {offset})")
    adv = AdvisoryRow
    query = select(adv.body)
    count = select(func.count()).select_from(adv)
    conditions: list[Any] = []
    if severity:
        conditions.append(func.lower(adv.severity) == severity.strip().lower())
    if q and q.strip():
        term = q.strip()[:256]
        conditions.append(or_(
            adv.id.contains(term, autoescape=True),
            exists().where(AdvisoryCveRow.advisory_id == adv.id,
                           AdvisoryCveRow.advisory_format == adv.format,
                           AdvisoryCveRow.cve == term.upper()),
            exists().where(AdvisoryPackageRow.advisory_id == adv.id,
                           AdvisoryPackageRow.advisory_format == adv.format,
                           AdvisoryPackageRow.name == term)))
    for c in conditions:
        query, count = query.where(c), count.where(c)
    when = func.coalesce(adv.updated, adv.issued)
    query = query.order_by(when.desc(), adv.id, adv.format).limit(limit).offset(offset)
    with session_factory(ctx.settings.database_url)() as s:
        total = int(s.execute(count).scalar_one())
        found = [codec.loads(body) for body in s.scalars(query)]
    counts: dict[str, set[str]] = {}
    for hit in _affected(ctx, found):
        for f in hit.findings:
            counts.setdefault(f.advisory.id, set()).add(hit.build_id)
    items = [{**_advisory_summary(a), "affected": len(counts.get(a.id, ()))} for a in found]
    return {"total": total, "offset": offset, "limit": limit, "items": items}


def _affected(ctx: WebContext, found: Sequence[Advisory], *,
              all_builds: bool = False) -> list[AffectedImage]:
    from alicorn.match.affected import affected_images

    return affected_images(ctx.settings.database_url, list(found), latest_only=not all_builds)


def _finding_packages(hit: AffectedImage, advisory_id: str | None = None
                      ) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for f in hit.findings:
        if advisory_id is not None and f.advisory.id != advisory_id:
            continue
        key = (f.package.name, f.package.version)
        entry = seen.setdefault(key, {"name": f.package.name, "type": f.package.type,
                                      "installed": f.package.version,
                                      "fixed": f.fixed_version, "advisories": []})
        if f.advisory.id not in entry["advisories"]:
            entry["advisories"].append(f.advisory.id)
    return list(seen.values())


def advisory(ctx: WebContext, advisory_id: str, *, all_builds: bool = False
             ) -> dict[str, Any]:
    """One advisory: id, title, severity, cves, bugzillas, references, packages (with fixed
    versions), description, and affected [{digest, build_id, recipe_name, image, packages
    [{name, installed, fixed}]}] — the current image of each recipe (every finished build's
    with ``all_builds``)."""
    from alicorn.advisories.store import AdvisoryStore

    ident = advisory_id.strip()
    found = AdvisoryStore(ctx.settings.database_url).get(ident) if ident else None
    if found is None:
        raise NotFound(f"no advisory {echo(advisory_id)!r} in this store",
                       hint="GET /api/v1/advisories lists them")
    a = found
    return {
        **_advisory_summary(a), "status": a.status, "release": a.release,
        "description": a.description, "aliases": list(a.aliases),
        "bugzillas": list(a.bugzilla_ids), "withdrawn": stamp(a.withdrawn), "source": a.source,
        "references": [{"type": r.type, "id": r.id, "href": r.href, "title": r.title}
                       for r in a.references],
        "fixed_packages": [{"name": p.name, "version": p.evr, "arch": p.arch,
                            "nevra": p.nevra, "modules": list(p.modules)}
                           for p in a.packages],
        "affected_packages": [{"ecosystem": x.ecosystem, "name": x.name,
                               "fixed": list(x.fixed_versions)} for x in a.affected],
        "affected": [{"digest": h.digest, "build_id": h.build_id,
                      "recipe_name": h.recipe_name, "image": h.image_ref,
                      "packages": _finding_packages(h, a.id)}
                     for h in _affected(ctx, [a], all_builds=all_builds)],
    }


def affected(ctx: WebContext, *, all_builds: bool = False) -> list[dict[str, Any]]:
    """The images of this store that need updates: the current image of each recipe (every
    finished build with ``all_builds``) that a stored advisory applies to, as [{digest,
    build_id, recipe_name, image, advisories [ids], packages [{name, installed, fixed,
    advisories}]}]."""
    from sqlalchemy import select

    from alicorn.advisories.store import AdvisoryStore
    from alicorn.match.affected import package_from_row
    from alicorn.store.db import session_factory
    from alicorn.store.models import BuildRow, PackageRow

    with session_factory(ctx.settings.database_url)() as s:
        builds = s.execute(select(BuildRow.id, BuildRow.recipe_name, BuildRow.recipe_path)
                           .where(BuildRow.state == "done", BuildRow.digest.is_not(None))
                           .order_by(BuildRow.created_at.desc(), BuildRow.id.desc())).all()
        chosen: dict[str, str] = {}
        for b in builds:
            chosen.setdefault(b.id if all_builds else (b.recipe_name or b.recipe_path), b.id)
        ids = sorted(chosen.values())
        packages = []
        for i in range(0, len(ids), 500):
            packages += [package_from_row(p) for p in s.scalars(
                select(PackageRow).where(PackageRow.build_id.in_(ids[i:i + 500])))]
    found = AdvisoryStore(ctx.settings.database_url).for_packages(packages)
    out = []
    for hit in _affected(ctx, found, all_builds=all_builds):
        out.append({"digest": hit.digest, "build_id": hit.build_id,
                    "recipe_name": hit.recipe_name, "image": hit.image_ref,
                    "advisories": sorted({f.advisory.id for f in hit.findings}),
                    "packages": _finding_packages(hit)})
    return out


# -- events ---------------------------------------------------------------------------------

def events(ctx: WebContext, *, state: str | None = None, limit: int = 50
           ) -> list[dict[str, Any]]:
    """Rebuild events, newest first, as `alicorn events --json` shows them."""
    from alicorn.events.store import EventStore

    store = EventStore(ctx.settings.database_url)
    return store.events_json(store.events(state=state, limit=limit))


def event(ctx: WebContext, event_id: str) -> dict[str, Any]:
    """One event (as `alicorn events show --json`) with its rebuilds: [{image, state,
    build_id, digest, previous_digest, tests, gate, reason, error, checks}] (reason: why it
    was planned or what it came to; error: the reason of a failed rebuild, else None;
    checks: the rebuild's build's checks results: tests_detail, gate_summary, ...)."""
    from alicorn.events.model import FAILED as FAILED_REBUILD
    from alicorn.events.store import EventStore

    ident = event_id.strip()
    if not re.fullmatch(r"[0-9a-f]{1,32}", ident):
        raise NotFound(f"no event {echo(event_id)!r}: an event id is hex digits",
                       hint="GET /api/v1/events lists them")
    store = EventStore(ctx.settings.database_url)
    data = store.event_json(store.get(ident))
    build_ids = {b["build_id"] for b in data["builds"] if b["build_id"]}
    rows = store.builds(build_ids) if build_ids else {}
    data["rebuilds"] = [{
        "image": b["image"], "state": b["state"], "build_id": b["build_id"],
        "digest": b["new_digest"], "previous_digest": b["old_digest"],
        "previous_build_id": b["old_build_id"], "tests": b["tests"], "gate": b["gate"],
        # Why it was planned (or what it came to) is its reason; only a failed rebuild's
        # reason is an error.
        "reason": b["reason"], "error": b["reason"] if b["state"] == FAILED_REBUILD else None,
        "advisories": b["advisories"], "parent": b["parent"], "attempt": b["attempt"],
        "checks": rows[b["build_id"]].checks if b["build_id"] in rows else None,
    } for b in data["builds"]]
    return data


# -- modules --------------------------------------------------------------------------------

def _module_store(ctx: WebContext) -> Any:
    from alicorn.rollout.store import ModuleStore

    return ModuleStore(ctx.settings.database_url, ctx.settings.modules_dir)


def _module_state(store: Any, name: str, digest: str | None) -> str:
    op = store.last_op(name)
    if op is not None and op.finished_at is None:
        return f"{op.kind} {op.phase}"
    if op is not None and op.result:
        return str(op.result)
    return "serving" if digest else "empty"


def modules(ctx: WebContext) -> list[dict[str, Any]]:
    """[{module, digest, image, port, replicas, state, updated_at}]: as recorded (the
    replicas' health as last checked; the pages never probe containers)."""
    store = _module_store(ctx)
    out = []
    for m in store.all():
        replicas = store.replicas(m.name)
        out.append({"module": m.name, "digest": m.digest, "image": m.image,
                    "repository": m.spec.repository, "tag": m.spec.tag, "port": m.spec.port,
                    "replicas": len(replicas),
                    "healthy": sum(1 for r in replicas if r.healthy),
                    "state": _module_state(store, m.name, m.digest),
                    "updated_at": stamp(m.updated_at)})
    return out


def module(ctx: WebContext, name: str) -> dict[str, Any]:
    """As `alicorn status MODULE --json`, from the records (no container is probed):
    replicas, history [{digest, at, result, from, reason}] (oldest first), operation, events,
    and the build of each digest (``builds``: digest → build id)."""
    from alicorn.rollout.model import check_module_name

    store = _module_store(ctx)
    m = store.require(check_module_name(name))
    op = store.last_op(m.name)
    history = [{**h.as_json(), "at": stamp(h.at)} for h in store.history(m.name)]
    digests = {d for d in [m.digest, *(h["digest"] for h in history)] if d}
    builds = {}
    for d in sorted(digests):
        try:
            builds[d] = ctx.builds.resolve(d).id
        except NotFound:
            continue
    return {
        "module": m.name, "digest": m.digest, "image": m.image,
        "previous_digest": m.previous_digest, "repository": m.spec.repository,
        "tag": m.spec.tag, "port": m.spec.port, "address": m.spec.address,
        "spec": m.spec.to_json(), "content_image": m.content_image,
        "replicas": [r.as_json() for r in store.replicas(m.name)],
        "state": _module_state(store, m.name, m.digest),
        "history": history,
        "operation": ({"id": op.id, "kind": op.kind, "from": op.from_digest,
                       "to": op.to_digest, "phase": op.phase,
                       "started_at": stamp(op.started_at),
                       "finished_at": stamp(op.finished_at), "result": op.result,
                       "reason": op.reason} if op is not None else None),
        "events": ([{**e.as_json(), "at": stamp(e.at)} for e in store.events(m.name, op.id)]
                   if op is not None else []),
        "builds": builds,
        "updated_at": stamp(m.updated_at),
    }


# -- the transparency log -------------------------------------------------------------------

def _log(ctx: WebContext) -> TransparencyLog:
    from alicorn.chain.keys import keyring_for
    from alicorn.chain.translog import TransparencyLog

    return TransparencyLog(ctx.settings.database_url, keyring_for(ctx.settings))


def _head_json(log: TransparencyLog, head: SignedTreeHead) -> dict[str, Any]:
    from alicorn.chain.translog import verify_head
    from alicorn.errors import Error

    try:
        assert log.keys is not None
        verify_head(head, log.keys.find(head.key_id))
        ok = True
    except Error:
        ok = False
    return {**head.to_json(), "signature_ok": ok,
            "time": stamp(datetime.fromtimestamp(head.timestamp / 1000, UTC))}


def log_heads(ctx: WebContext, *, limit: int = 50) -> dict[str, Any]:
    """{size, latest (signed tree head JSON) | None, heads [...] newest first}; each head
    also says whether its signature holds (signature_ok) and when it was signed (time)."""
    log = _log(ctx)
    heads = log.heads()
    newest = list(reversed(heads[-limit:])) if limit > 0 else []
    latest = log.latest_head()
    return {"size": log.size(), "count": len(heads),
            "latest": _head_json(log, latest) if latest is not None else None,
            "heads": [_head_json(log, h) for h in newest]}


def log_entry(ctx: WebContext, index: int, *, tree_size: int | None = None) -> dict[str, Any]:
    """{index, kind, subject, data (base64), leaf_hash, head, inclusion_proof [hex]} against
    the newest signed head covering it (or ``tree_size``: the head signed at that size, if
    any, and the proof for that size)."""
    from sqlalchemy import select

    from alicorn.chain import merkle
    from alicorn.chain.translog import entries, heads

    if index < 0:
        raise BadInput(f"an entry index is ≥ 0, not {index}", where="index")
    log = _log(ctx)
    data = log.entry(index)
    with log.engine.connect() as conn:
        meta = conn.execute(select(entries.c.kind, entries.c.subject, entries.c.created)
                            .where(entries.c.idx == index)).one()
        head = None
        if tree_size is not None:
            if tree_size <= index:
                raise BadInput(f"the tree of size {tree_size} does not hold entry {index}",
                               where="tree_size")
            row = conn.execute(select(heads).where(heads.c.tree_size == tree_size)
                               .order_by(heads.c.timestamp.desc()).limit(1)).first()
            if row is not None:
                from alicorn.chain.translog import _head_of

                head = _head_of(row._mapping)
    if tree_size is None:
        head = log.latest_head()
        if head is None or head.tree_size <= index:
            raise NotFound(f"no signed tree head covers entry {index} yet")
        tree_size = head.tree_size
    proof = log.inclusion_proof(index, tree_size)
    return {"index": index, "kind": meta.kind, "subject": meta.subject,
            "created": stamp(datetime.fromtimestamp(meta.created / 1000, UTC)),
            "data": base64.b64encode(data).decode(),
            "leaf_hash": merkle.leaf_hash(data).hex(), "tree_size": tree_size,
            "root_hash": log.root(tree_size).hex(),
            # The head as a witness keeps it (SignedTreeHead.from_json reads it as it is).
            "head": head.to_json() if head is not None else None,
            "inclusion_proof": [p.hex() for p in proof]}


def log_consistency(ctx: WebContext, old_size: int, new_size: int | None = None
                    ) -> dict[str, Any]:
    """{old_size, new_size, proof [hex]} (new_size: the latest signed head's by default)."""
    log = _log(ctx)
    if new_size is None:
        latest = log.latest_head()
        new_size = latest.tree_size if latest is not None else log.size()
    if old_size < 0 or old_size > new_size:
        raise BadInput(f"old ({old_size}) must be from 0 to new ({new_size})", where="old")
    proof = log.consistency_proof(old_size, new_size)
    return {"old_size": old_size, "new_size": new_size,
            "old_root": log.root(old_size).hex(), "new_root": log.root(new_size).hex(),
            "proof": [p.hex() for p in proof]}


def keys(ctx: WebContext) -> list[dict[str, Any]]:
    """The public keys (PEM) that verify provenance and tree heads, retired ones too."""
    from alicorn.chain.keys import keyring_for

    return [k.to_json() for k in keyring_for(ctx.settings).public_keys()]


def build_file(ctx: WebContext, build_id: str, name: str) -> bytes:
    """One of a build's sealed JSON files (record, provenance, an SBOM) by its fixed name."""
    from alicorn.chain.record import CYCLONEDX, PROVENANCE, RECORD, SPDX

    allowed = (RECORD, PROVENANCE, CYCLONEDX, SPDX)
    if name not in allowed:
        raise NotFound(f"a build has no file {echo(name)!r}")
    row = _get(ctx, build_id)
    path = _dir(ctx, row.id) / allowed[allowed.index(name)]
    try:
        return path.read_bytes()
    except OSError:
        what = {RECORD: "sealed record", PROVENANCE: "provenance"}.get(name, name)
        raise NotFound(f"build {row.id} ({row.state}) has no {what}"
                       + ("" if row.state in FINAL else " yet")) from None
