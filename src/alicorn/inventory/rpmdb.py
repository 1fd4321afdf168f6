"""The rpm database of a root filesystem, read with rpm's own Python bindings.

Where it is: ``usr/lib/sysimage/rpm`` (Fedora 36 and later, RHEL 10), else ``var/lib/rpm``
(older releases; on newer ones a symlink to the first).  What it is, by its files:
``rpmdb.sqlite`` (sqlite, Fedora 33+ / RHEL 9), ``Packages`` (BerkeleyDB: RHEL 8, CentOS 7,
read by rpm's own ``bdb_ro`` reader without libdb), ``Packages.db`` (ndb: SUSE).  Which of these
the local rpm reads depends on its build; Debian's rpm 4.18 reads ``sqlite`` and ``bdb_ro``,
not ``ndb``.  For ndb, when rpm cannot open it, :func:`ndb_blobs` takes the header blobs out of
``Packages.db`` (a simple slotted file, see there; checksums verified) and rpm parses each
header (``rpm.hdr``): rpm stays the one that understands headers.

The database files are copied through :class:`RootFS` (never following a link out of the root,
each size-capped) into a private directory, and rpm opens the copy: rpm never sees the root,
and opening a database (even to read) writes lock and journal files next to it.

Completeness: for sqlite the rows of the ``Packages`` table are counted with Python's sqlite3
and compared with the headers rpm returned; a header rpm could not parse is an error, not a
silently shorter list.  The ``gpg-pubkey`` pseudo-packages (imported signing keys, which rpm
stores as headers) are skipped: they are not installed software.
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from packageurl import PackageURL

from alicorn.inventory.interface import PackageSource, SourceResult
from alicorn.inventory.model import Package
from alicorn.inventory.rootfs import RootFS, RootFSError

#: Where rpm databases live, newest layout first.
DB_DIRS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
#: A Fedora Workstation's rpmdb.sqlite is ~100 MiB; a BerkeleyDB Packages of RHEL 8 similar.
MAX_DB_FILE = 2 * 1024 * 1024 * 1024
MAX_DB_TOTAL = 4 * 1024 * 1024 * 1024

# rpm keeps macros, the log callback and open databases in process-wide state.
_RPM_LOCK = threading.Lock()


class NdbError(Exception):
    """Packages.db is not an ndb package database (or not one this reader understands)."""


# ndb's Packages.db, as lib/backend/ndb/rpmpkg.c of rpm writes it (all little endian): a
# 32-byte file header ("RpmP", version 0, generation, slot pages, next package index), then
# slot pages of 16-byte slots ("Slot", package index, block offset, block count; offset 0 is
# a free slot), then blobs in 16-byte blocks: "BlbS", package index, timestamp, length, the
# header itself, zero padding, adler32 (of all before it), length, "BlbE".
_NDB_PAGE = 4096
_NDB_FILE_HEADER = 32
_NDB_BLK = 16
_NDB_HEAD = struct.Struct("<4sIIII")
_NDB_SLOT = struct.Struct("<4sIII")
_NDB_BLOB_HEAD = struct.Struct("<4sIII")
_NDB_BLOB_TAIL = struct.Struct("<II4s")
#: rpm refuses headers past 256 MiB (HEADER_DATA_MAX); so does this reader.
MAX_HEADER = 256 * 1024 * 1024


def ndb_blobs(f: BinaryIO) -> tuple[list[tuple[int, bytes]], list[str]]:
    """The (package index, header blob) pairs of an ndb ``Packages.db``, and what was wrong
    with the ones left out (a bad slot, a blob whose checksum or length does not match).

    Raises :class:`NdbError` when the file is not an ndb database at all.
    """
    size = f.seek(0, 2)
    f.seek(0)
    head = f.read(_NDB_HEAD.size)
    if len(head) < _NDB_HEAD.size:
        raise NdbError("shorter than an ndb file header")
    magic, version, _generation, slotnpages, _next = _NDB_HEAD.unpack(head)
    if magic != b"RpmP":
        raise NdbError("not an ndb package database (no RpmP magic)")
    if version != 0:
        raise NdbError(f"ndb version {version}; this reader knows version 0")
    if not slotnpages or slotnpages * _NDB_PAGE > size:
        raise NdbError(f"{slotnpages} slot pages do not fit in {size} bytes")
    f.seek(0)
    slots = f.read(slotnpages * _NDB_PAGE)
    first_blk = slotnpages * _NDB_PAGE // _NDB_BLK
    entries = []
    problems = []
    # The file header takes the first two slots' room; slots follow it, page after page.
    for off in range(_NDB_FILE_HEADER, len(slots), _NDB_SLOT.size):
        smagic, pkgidx, blkoff, blkcnt = _NDB_SLOT.unpack_from(slots, off)
        if smagic != b"Slot":
            raise NdbError(f"slot at byte {off} has no Slot magic: not a consistent database")
        if not blkoff:
            continue
        if not pkgidx or not blkcnt or blkoff < first_blk or (blkoff + blkcnt) * _NDB_BLK > size:
            problems.append(f"Packages.db: slot at byte {off} (package {pkgidx}) points "
                            "outside the blob area")
            continue
        entries.append((blkoff, blkcnt, pkgidx))
    out = []
    for blkoff, blkcnt, pkgidx in sorted(entries):
        length = blkcnt * _NDB_BLK
        if length > MAX_HEADER + _NDB_BLOB_HEAD.size + _NDB_BLOB_TAIL.size + _NDB_BLK:
            problems.append(f"Packages.db: header {pkgidx} is {length} bytes, over the cap")
            continue
        f.seek(blkoff * _NDB_BLK)
        raw = f.read(length)
        bmagic, bidx, _tstamp, bloblen = _NDB_BLOB_HEAD.unpack_from(raw, 0)
        adler, tlen, tmagic = _NDB_BLOB_TAIL.unpack_from(raw, length - _NDB_BLOB_TAIL.size)
        expected_cnt = (_NDB_BLOB_HEAD.size + bloblen + _NDB_BLOB_TAIL.size + _NDB_BLK - 1) \
            // _NDB_BLK
        if bmagic != b"BlbS" or tmagic != b"BlbE" or bidx != pkgidx or tlen != bloblen \
                or blkcnt != expected_cnt:
            problems.append(f"Packages.db: header {pkgidx}: blob framing is broken")
            continue
        if zlib.adler32(raw[:length - _NDB_BLOB_TAIL.size]) != adler:
            problems.append(f"Packages.db: header {pkgidx}: adler32 checksum mismatch")
            continue
        out.append((pkgidx, raw[_NDB_BLOB_HEAD.size:_NDB_BLOB_HEAD.size + bloblen]))
    return out, problems


@dataclass(frozen=True)
class _Db:
    dir: str            # root-relative, canonical
    backend: str        # sqlite | bdb_ro | ndb
    files: tuple[str, ...]


def _detect(root: RootFS) -> tuple[list[_Db], list[str]]:
    """The distinct rpm databases of ``root`` (a symlinked var/lib/rpm counts once)."""
    found: list[_Db] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for d in DB_DIRS:
        try:
            if not root.is_dir(d):
                if root.lexists(d) and not root.exists(d):
                    warnings.append(f"/{d}: a symlink that dangles, loops or leads out of the "
                                    "root: no rpm database read there")
                continue
            canonical = root.relpath(d)
            names = root.iterdir(d)
        except (OSError, RootFSError) as e:
            warnings.append(f"/{d}: cannot be listed: {e}")
            continue
        if canonical in seen:
            continue
        seen.add(canonical)
        if "rpmdb.sqlite" in names:
            backend = "sqlite"
            files = [n for n in names if n in ("rpmdb.sqlite", "rpmdb.sqlite-wal")]
        elif "Packages.db" in names:
            backend = "ndb"
            files = ["Packages.db"]     # Index.db holds only indexes
        elif "Packages" in names:
            backend = "bdb_ro"
            # The index files (Name, Basenames, ...) are not needed to list every package:
            # rpm only warns that they are missing (see _meaningful).
            files = ["Packages"]
        else:
            continue
        found.append(_Db(canonical, backend, tuple(sorted(files))))
    return found, warnings


@contextlib.contextmanager
def _rpm_db(dbpath: Path, backend: str, log: Any) -> Iterator[Any]:
    """An rpm transaction set over the database at ``dbpath``, with rpm's global state (the
    ``_dbpath``/``_db_backend`` macros and the log file) restored afterwards."""
    import rpm

    with _RPM_LOCK:
        rpm.addMacro("_dbpath", str(dbpath))
        rpm.addMacro("_db_backend", backend)
        rpm.setLogFile(log)
        ts = rpm.TransactionSet("/")
        # Headers in the database were verified when installed; the copy has no keyring.
        ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
        try:
            yield ts
        finally:
            ts.closeDB()
            # The binding cannot take None back (4.18); fd 2 is rpm's default.
            rpm.setLogFile(2)
            rpm.delMacro("_db_backend")
            rpm.delMacro("_dbpath")


def source_name(sourcerpm: str | None) -> str | None:
    """The source package's name from its file name: ``openssl-3.1.1-4.fc39.src.rpm`` →
    ``openssl`` (names may hold dashes; version and release never do)."""
    if not sourcerpm:
        return None
    stem = sourcerpm
    for suffix in (".src.rpm", ".nosrc.rpm"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    parts = stem.rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[0] else None


def rpm_package(*, name: str, epoch: int | None, version: str, release: str,
                arch: str | None, sourcerpm: str | None, path: str | None,
                distro_id: str | None) -> Package:
    """A :class:`Package` for one rpm header's fields (``version`` is ``[E:]V-R``)."""
    vr = f"{version}-{release}"
    qualifiers: dict[str, str] = {}
    if arch:
        qualifiers["arch"] = arch
    if epoch:
        qualifiers["epoch"] = str(epoch)
    purl = PackageURL(type="rpm", namespace=distro_id, name=name, version=vr,
                      qualifiers=qualifiers or None).to_string()
    return Package(
        type="rpm", name=name, version=f"{epoch}:{vr}" if epoch else vr, arch=arch,
        epoch=epoch, release=release, source=source_name(sourcerpm), path=path, purl=purl)


def _s(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RpmdbSource(PackageSource):
    """The packages of the root's rpm database (see the module docstring).

    ``gpg-pubkey`` headers (imported signing keys) are skipped; every other header is a
    package, with its files as ``owned_paths``.  A database rpm cannot open, or one of whose
    headers rpm skipped, is an error naming the database and rpm's message.
    """

    name = "rpmdb"

    def read(self, root: RootFS) -> SourceResult:
        dbs, warnings = _detect(root)
        if not dbs:
            return SourceResult(warnings=tuple(warnings))
        if len(dbs) > 1:
            warnings.append("more than one rpm database: " + ", ".join(f"/{d.dir}" for d in dbs)
                            + f"; reading /{dbs[0].dir} (the one rpm of this layout uses)")
        db = dbs[0]
        distro = root.os_release()
        with tempfile.TemporaryDirectory(prefix="alicorn-rpmdb-") as tmp:
            try:
                self._copy(root, db, Path(tmp))
            except (OSError, RootFSError) as e:
                return SourceResult(warnings=tuple(warnings),
                                    errors=(f"/{db.dir}: rpm database not copied: {e}",))
            return self._read_copy(db, Path(tmp), distro.id if distro else None, warnings)

    def _copy(self, root: RootFS, db: _Db, dest: Path) -> None:
        total = 0
        for name in db.files:
            path = f"{db.dir}/{name}"
            if not root.is_file(path):
                raise RootFSError("is not a regular file inside the root (a link out of it?)",
                                  where=f"/{path}")
            copied = 0
            with root.open(path, max_size=MAX_DB_FILE) as src, open(dest / name, "wb") as out:
                # Bounded: a file that grows while copied is cut off at the cap.
                while chunk := src.read(1 << 20):
                    copied += len(chunk)
                    if copied > MAX_DB_FILE:
                        raise RootFSError(f"grew past {MAX_DB_FILE} bytes while copied",
                                          where=f"/{path}")
                    out.write(chunk)
            total += copied
            if total > MAX_DB_TOTAL:
                raise RootFSError(f"database files exceed {MAX_DB_TOTAL} bytes",
                                  where=f"/{db.dir}")

    def _read_copy(self, db: _Db, copy: Path, distro_id: str | None,
                   warnings: list[str]) -> SourceResult:
        import rpm

        packages: list[Package] = []
        owned: set[str] = set()
        headers = 0
        errors: list[str] = []
        where = f"/{db.dir}"

        def add(h: Any) -> None:
            nonlocal headers
            headers += 1
            name = _s(h[rpm.RPMTAG_NAME]) or ""
            if name == "gpg-pubkey":
                return
            epoch = h[rpm.RPMTAG_EPOCH]
            packages.append(rpm_package(
                name=name, epoch=int(epoch) if epoch is not None else None,
                version=_s(h[rpm.RPMTAG_VERSION]) or "",
                release=_s(h[rpm.RPMTAG_RELEASE]) or "",
                arch=_s(h[rpm.RPMTAG_ARCH]),
                sourcerpm=_s(h[rpm.RPMTAG_SOURCERPM]),
                path=db.dir, distro_id=distro_id))
            for f in h[rpm.RPMTAG_FILENAMES] or ():
                owned.add((_s(f) or "").lstrip("/"))

        with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
            try:
                with _rpm_db(copy, db.backend, log) as ts:
                    for h in ts.dbMatch():
                        add(h)
            except rpm.error as e:
                errors.append(f"{where}: rpm cannot read this {db.backend} database: {e}"
                              + _log_tail(log).replace(str(copy), where))
            log.seek(0)
            messages = _meaningful(log.read().replace(str(copy), where), db.backend)
        if db.backend == "ndb" and headers == 0 and any("dummy" in m for m in messages):
            # This rpm is built without ndb (it fell back to its dummy backend): take the
            # header blobs out of Packages.db ourselves and let rpm parse each one.
            messages, errors = [], []
            try:
                with open(copy / "Packages.db", "rb") as f:
                    blobs, problems = ndb_blobs(f)
            except (OSError, NdbError) as e:
                blobs, problems = [], [f"Packages.db: {e}"]
            errors += [f"{where}: ndb {p}" for p in problems]
            for pkgidx, blob in blobs:
                try:
                    add(rpm.hdr(blob))
                except rpm.error as e:
                    errors.append(f"{where}: ndb Packages.db: header {pkgidx}: rpm: {e}")
        if not errors:
            errors += self._check_complete(db, copy, headers, messages)
        if not errors and headers == 0:
            # A valid database without packages (rpm on a Debian host makes one): rpm itself
            # reads it so, but it is unusual enough in an image to say.
            warnings.append(f"{where}: the {db.backend} rpm database lists no packages"
                            + (": " + "; ".join(messages) if messages else ""))
        elif not errors and messages:
            warnings += [f"{where}: rpm: {m}" for m in messages]
        # What was read is kept even when a header was not: the error marks the inventory as
        # incomplete, and the packages rpm did read are still installed.
        return SourceResult(packages=tuple(packages), warnings=tuple(warnings),
                            errors=tuple(errors), owned_paths=frozenset(owned))

    def _check_complete(self, db: _Db, copy: Path, headers: int,
                        messages: list[str]) -> list[str]:
        """rpm skips a header it cannot parse (it only logs): count the rows ourselves."""
        where = f"/{db.dir}"
        if db.backend != "sqlite":
            bad = [m for m in messages if m.startswith("error")]
            return [f"{where}: rpm reported: " + "; ".join(bad)] if bad else []
        try:
            con = sqlite3.connect(f"{(copy / 'rpmdb.sqlite').as_uri()}?mode=ro", uri=True)
            try:
                rows = con.execute("SELECT count(*) FROM Packages").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error as e:
            return [f"{where}: rpmdb.sqlite: {e}"]
        if rows != headers:
            return [f"{where}: rpm read {headers} of the {rows} headers in rpmdb.sqlite"
                    + (": " + "; ".join(messages) if messages else "")]
        return []


def _meaningful(text: str, backend: str) -> list[str]:
    """rpm's log lines worth reporting (not the missing-index noise of a bare Packages)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if backend == "bdb_ro" and line.startswith("warning: could not open"):
            continue
        out.append(line)
    return out


def _log_tail(log: Any) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    return (" (" + "; ".join(lines[-3:]) + ")") if lines else ""
