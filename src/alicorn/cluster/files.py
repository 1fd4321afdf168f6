"""A build's files in the shared database, for readers on other hosts than its worker.

In the embedded default a build's files (``builds/ID/``: build.log, progress.jsonl, SBOMs,
provenance, record, ...) are read where the worker wrote them.  With the Celery backend the
worker is elsewhere, so it copies them into ``build_files`` (migration 0009) while the build
runs (:func:`live_sync`, on every heartbeat) and seals them when it ends (:func:`seal_files`);
readers call :func:`materialize` to get them under their own ``builds/ID/``.

All three are no-ops when the queue backend is local.

What goes over the wire is kept small: a heartbeat sends only what grew since the last one
(on PostgreSQL a growing log is appended to, not rewritten), and a reader fetches only the
tail it lacks of a growing file, in chunks of :data:`CHUNK`.  A sealed row is written once,
with its SHA-256, and a reader installs it only when its bytes hash to that.

A directory a reader wrote from the database holds :data:`MARKER` (what it holds, so the
next call fetches only what changed); a build directory without it is the worker's own and
is never touched.  The published image's GPG simple-signing signatures (written to the
worker's lookaside store) are sealed with the build's files as ``lookaside/signature-N``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import LargeBinary, case, delete, func, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from alicorn.cluster.config import load_queue_config
from alicorn.config import Settings
from alicorn.errors import StoreError
from alicorn.store.builds import BuildStore
from alicorn.store.db import session_factory
from alicorn.store.models import BuildFileRow

# What a reader wrote from the database into a build directory (hidden: never synced back).
MARKER = ".alicorn-shared.json"
_LOCK = ".alicorn-shared.lock"
# Bytes fetched or sent per statement.
CHUNK = 8 << 20
# A file above this is not put into the database (a row is one value; PostgreSQL's bytea
# ends at 1 GiB, and no build file should come near this).
MAX_FILE = 256 << 20
# Where a build's GPG signatures go among its files.
LOOKASIDE = "lookaside"
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,127}")

# The worker's view of what it sent: (database url, build id) -> name -> (inode, size, mtime).
_sent: dict[tuple[str, str], dict[str, tuple[int, int, int]]] = {}
_sent_lock = threading.Lock()


def shared(settings: Settings) -> bool:
    """Whether this host's builds are read on others (the Celery backend)."""
    return load_queue_config(settings).celery


def safe_name(name: str) -> bool:
    """Whether ``name`` is a relative path inside a build directory: parts of letters, digits
    and ``_.+=@-``, none starting with a dot (no ``..``, no hidden files), at most 128
    characters in all."""
    if not name or len(name) > 128:
        return False
    return all(_PART.fullmatch(part) for part in name.split("/"))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _local_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """(name, path) of the regular files under ``directory`` that may be shared."""
    if not directory.is_dir():
        return
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            path = Path(root, n)
            name = path.relative_to(directory).as_posix()
            if safe_name(name) and path.is_file() and not path.is_symlink():
                yield name, path


def _postgres(sessions: sessionmaker[Session]) -> bool:
    bind = sessions.kw.get("bind")
    return bind is not None and bind.dialect.name == "postgresql"


# -- the worker's side ------------------------------------------------------------------------

def live_sync(settings: Settings, store: BuildStore, build_id: str) -> None:
    """Copy what grew of the running build's files into the database (unsealed rows)."""
    if not shared(settings):
        return
    sessions = session_factory(settings.database_url)
    append = _postgres(sessions)
    key = (settings.database_url, build_id)
    with _sent_lock:
        sent = _sent.setdefault(key, {})
    for name, path in _local_files(settings.build_dir(build_id)):
        try:
            st = path.stat()
        except OSError:
            continue
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        before = sent.get(name)
        if before == stamp or st.st_size > MAX_FILE:
            continue
        with sessions.begin() as s:
            row = s.get(BuildFileRow, (build_id, name))
            if row is not None and row.sealed:
                continue
            if append and row is not None and before is not None and before[0] == st.st_ino \
                    and before[1] == row.size and st.st_size > row.size:
                # The same file grew (logs and progress.jsonl are appended to): send the tail.
                with open(path, "rb") as f:
                    f.seek(row.size)
                    tail = f.read(st.st_size - row.size)
                s.execute(update(BuildFileRow)
                          .where(BuildFileRow.build_id == build_id, BuildFileRow.name == name,
                                 BuildFileRow.sealed.is_(False))
                          .values(data=BuildFileRow.data.op("||", return_type=LargeBinary)(
                                      literal(tail, LargeBinary)),
                                  size=row.size + len(tail), updated_at=_now()))
                size = row.size + len(tail)
            else:
                data = path.read_bytes()[:st.st_size]
                size = len(data)
                if row is None:
                    s.add(BuildFileRow(build_id=build_id, name=name, data=data, size=size,
                                       sha256=None, sealed=False, updated_at=_now()))
                else:
                    row.data, row.size, row.updated_at = data, size, _now()
        sent[name] = (st.st_ino, size, st.st_mtime_ns)


def seal_files(settings: Settings, store: BuildStore, build_id: str) -> None:
    """Copy the ended build's files into the database, sealed with their SHA-256 (in one
    transaction: a reader sees all of them sealed or none), with the GPG signatures of its
    image; also publishes this builder's public keys (:mod:`alicorn.chain.keys`)."""
    if not shared(settings):
        return
    with _sent_lock:
        _sent.pop((settings.database_url, build_id), None)
    files = dict(_local_files(settings.build_dir(build_id)))
    files.update(_signatures(settings, store, build_id))
    sessions = session_factory(settings.database_url)
    with sessions.begin() as s:
        rows = {r.name: r for r in s.scalars(
            select(BuildFileRow).where(BuildFileRow.build_id == build_id))}
        for name, path in sorted(files.items()):
            try:
                if path.stat().st_size > MAX_FILE:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            row = rows.pop(name, None)
            if row is None:
                s.add(BuildFileRow(build_id=build_id, name=name, data=data, size=len(data),
                                   sha256=digest, sealed=True, updated_at=_now()))
            elif not row.sealed:
                row.data, row.size, row.sha256, row.sealed, row.updated_at = (
                    data, len(data), digest, True, _now())
        # What was sent while running and is gone now (a temporary file) goes too.
        gone = [name for name, row in rows.items() if not row.sealed]
        if gone:
            s.execute(delete(BuildFileRow).where(BuildFileRow.build_id == build_id,
                                                 BuildFileRow.name.in_(gone)))
    from alicorn.chain.gpgsign import publish_gpg_keys
    from alicorn.chain.keys import publish_keys

    with contextlib.suppress(Exception):  # the files are sealed; keys are published again later
        publish_keys(settings)
        publish_gpg_keys(settings)


def _signatures(settings: Settings, store: BuildStore, build_id: str) -> dict[str, Path]:
    """``lookaside/signature-N`` -> path: the GPG signatures of the build's published image
    in this host's lookaside store."""
    from alicorn.chain.gpgsign import default_lookaside_dir, signature_dir, stored_signatures
    from alicorn.digest import Digest

    row = store.get(build_id)
    if not row.image_ref or not row.digest:
        return {}
    addr, _, rest = row.image_ref.partition("/")
    name = rest.split("@", 1)[0].rsplit(":", 1)[0]
    directory = signature_dir(default_lookaside_dir(settings.home, addr), name,
                              Digest(row.digest))
    return {f"{LOOKASIDE}/{p.name}": p for p in stored_signatures(directory)}


# -- the readers' side ------------------------------------------------------------------------

def materialize(settings: Settings, build_id: str) -> Path:
    """``settings.build_dir(build_id)``, with the build's files from the database written
    there (verified against their SHA-256) when this host does not hold them; returns it.

    A directory the build's worker wrote (no :data:`MARKER` in it) is left as it is; one
    written here before is brought up to date (a running build's files grow).  Files are
    read-only, as the worker's are.  A row whose name would leave the directory is ignored.
    """
    directory = settings.build_dir(build_id)
    if not shared(settings):
        return directory
    marker = directory / MARKER
    if _workers_own(directory):
        return directory
    sessions = session_factory(settings.database_url)
    with sessions() as s:
        rows = [r for r in s.execute(
            select(BuildFileRow.name, BuildFileRow.size, BuildFileRow.sha256,
                   BuildFileRow.sealed, BuildFileRow.updated_at)
            .where(BuildFileRow.build_id == build_id)) if safe_name(r.name)]
    if not rows:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        if _workers_own(directory):
            return directory  # the worker's own after all (it started here meanwhile)
        held = _held(marker)
        if not marker.exists():
            _write_held(marker, held)
        for r in rows:
            have = held.get(r.name)
            stamp = {"size": r.size, "sha256": r.sha256, "sealed": bool(r.sealed),
                     "updated": r.updated_at.isoformat()}
            path = directory / r.name
            if have == stamp and path.is_file():
                continue
            with sessions() as s:
                if r.sealed:
                    _install_sealed(s, build_id, r.name, r.size, r.sha256, path)
                elif have is not None and not have["sealed"] and path.is_file() \
                        and r.size > path.stat().st_size:
                    _append(s, build_id, r.name, path, r.size)
                else:
                    _install(path, _chunks(s, build_id, r.name, 0, r.size))
            held[r.name] = stamp
            _write_held(marker, held)
    return directory


def sealed(settings: Settings, build_id: str) -> bool:
    """Whether the build's files are in the shared store and sealed (always True for the
    local backend: its files are where its worker wrote them)."""
    if not shared(settings):
        return True
    with session_factory(settings.database_url)() as s:
        got = s.execute(select(func.count(),
                               func.sum(case((BuildFileRow.sealed, 1), else_=0)))
                        .where(BuildFileRow.build_id == build_id)).one()
    count, done = int(got[0] or 0), int(got[1] or 0)
    return count > 0 and count == done


def _workers_own(directory: Path) -> bool:
    """Whether ``directory`` is a build directory its worker wrote (not one written here from
    the database: that holds :data:`MARKER`, or nothing but the lock before the first)."""
    if not directory.is_dir() or (directory / MARKER).exists():
        return False
    return any(p.name != _LOCK for p in directory.iterdir())


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One reader of this host at a time writes the directory."""
    with open(directory / _LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _held(marker: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_held(marker: Path, held: dict[str, dict[str, Any]]) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(held, sort_keys=True))
    os.replace(tmp, marker)


def _chunks(s: Session, build_id: str, name: str, start: int, end: int) -> Iterator[bytes]:
    """The row's bytes from ``start`` to ``end``, :data:`CHUNK` at a time."""
    pos = start
    while pos < end:
        n = min(CHUNK, end - pos)
        data = s.execute(select(func.substr(BuildFileRow.data, pos + 1, n))
                         .where(BuildFileRow.build_id == build_id,
                                BuildFileRow.name == name)).scalar()
        if not data:
            return
        chunk = bytes(data)
        yield chunk
        pos += len(chunk)


def _install(path: Path, chunks: Iterable[bytes], *, check: Callable[[str], None] | None = None
             ) -> None:
    """``chunks`` as the read-only file ``path``, replaced at once; with ``check``, only once
    it has been given the file's sha256 (``sha256:…``) and not raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
        if check is not None:
            check("sha256:" + h.hexdigest())
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _install_sealed(s: Session, build_id: str, name: str, size: int, sha256: str | None,
                    path: Path) -> None:
    """The sealed row streamed into ``path``, installed only when it hashes to its seal."""
    def check(got: str) -> None:
        if got != sha256:
            raise StoreError(f"the shared store's copy of {name} of build {build_id} hashes "
                             f"to {got}, not to its seal {sha256}",
                             where=f"build_files ({build_id}, {name})",
                             hint="the database was altered around its triggers: do not "
                                  "trust this build's files")

    _install(path, _chunks(s, build_id, name, 0, size), check=check)


def _append(s: Session, build_id: str, name: str, path: Path, size: int) -> None:
    """The tail ``path`` lacks of a growing (unsealed) row, appended to it."""
    have = path.stat().st_size
    os.chmod(path, 0o644)
    try:
        with open(path, "ab") as f:
            for chunk in _chunks(s, build_id, name, have, size):
                f.write(chunk)
    finally:
        os.chmod(path, 0o444)


# Seconds after its end by which an ended build's files are sealed, or never will be (its
# worker died before sealing them: what it sent while running is all there is).
SETTLE = 30.0


def settled(settings: Settings, row: Any) -> bool:
    """Whether the ended build ``row`` (a BuildRow) has all the files it will have: always
    with the local backend; in a cluster once they are sealed, or :data:`SETTLE` seconds
    after its end."""
    if row.state not in ("done", "failed") or not shared(settings):
        return row.state in ("done", "failed")
    if sealed(settings, row.id):
        return True
    return row.finished_at is None or (_now() - row.finished_at).total_seconds() > SETTLE
