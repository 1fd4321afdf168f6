"""The files of an image as a container sees them, read from the layers' tar streams.

Unpacking (:mod:`alicorn.inventory.unpack`) strips setuid bits and skips device nodes, so the
file checks read the tar headers themselves, in one streaming pass over every layer: each
blob is checked against the manifest's digest and the config's ``diff_id`` as
:func:`~alicorn.inventory.unpack.apply_layer` checks it, and what a later layer removes (a
whiteout ``.wh.NAME``, an opaque directory ``.wh..wh..opq``, an entry that replaces a
directory) no longer counts.  Only what a check could report is kept (setuid files,
world-writable entries, files with secrets), in a tree, so removing a directory is cheap.

Paths are the names the tar gives (leading ``/`` and ``.`` dropped; entries with ``..`` are
counted and skipped, as unpacking skips them).  A symlinked parent directory is not
followed: a file is reported under the name it was written with, which can report a file a
container would not see but never hides one.

Secrets are searched in regular files that are not binary (no NUL byte in their first 8 KiB),
at most :data:`MAX_FILE_READ` bytes of each and :data:`MAX_TOTAL_READ` in all; a larger
image leaves :attr:`ImageFiles.incomplete` set, and no-secrets fails rather than guess.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from alicorn.digest import Digest
from alicorn.errors import BadInput
from alicorn.fs import resolve_in_root
from alicorn.inventory.model import InventoryError
from alicorn.inventory.unpack import (
    _MAX_TRAILER,
    _OPAQUE,
    _WHITEOUT,
    Limits,
    _choose,
    _decompressor,
    _HashingReader,
    _image_parts,
    _LayoutBlobs,
    _manifests_of,
    _parse_json,
    _split,
    _tarinfo_class,
    host_platform,
    is_oci_layout,
)

__all__ = ["MAX_FILE_READ", "MAX_TOTAL_READ", "ImageFiles", "read_image_files",
           "restore_modes", "secrets_in"]

MAX_FILE_READ = 1 << 20          # bytes of one file searched for secrets
MAX_TOTAL_READ = 512 << 20       # bytes of all files searched
_SNIFF = 8192                    # a NUL in this many first bytes: a binary file
_MAX_PASSWD = 1 << 20
_CHUNK = 1 << 20

_SSH_KEY_NAMES = frozenset({"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk",
                            "id_ed25519_sk", "identity"})

# A PEM private key block: the BEGIN line, optional RFC 1421 headers (encrypted keys), then
# at least two lines of base64 - a string constant in a program that names the marker is not
# a key.  Quantifiers are bounded so hostile input cannot make the search backtrack.
_PEM_KEY = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?)-----\r?\n"
    rb"(?:[A-Za-z-]{1,40}: [^\r\n]{0,200}\r?\n){0,4}(?:\r?\n)?"
    rb"(?:[A-Za-z0-9+/=]{16,100}\r?\n){2}")
_AWS_PREFIXES = (b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"ANPA", b"AIPA")
_GITHUB_PREFIXES = (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_")
_AWS_KEY_ID = re.compile(rb"(?<![A-Z0-9])((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[A-Z0-9]{16})"
                         rb"(?![A-Z0-9])")
_AWS_SECRET = re.compile(rb"(?i)aws_secret_access_key[\"']?\s{0,5}[=:]\s{0,5}[\"']?"
                         rb"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")
_GITHUB_TOKEN = re.compile(rb"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9])")
_NETRC_PASSWORD = re.compile(rb"(?:^|\s)password\s+\S")
_GIT_CREDENTIAL = re.compile(rb"(?m)^[a-z][a-z0-9+.-]{0,20}://[^:/@\s]{1,200}:[^@\s]{1,200}@")


def secrets_in(name: str, head: bytes) -> set[str]:
    """The kinds of secret in a file called ``name`` (its base name) whose first bytes are
    ``head``: ``private key``, ``AWS access key id``, ... (empty: none)."""
    found: set[str] = set()
    binary = b"\0" in head[:_SNIFF]
    if name in _SSH_KEY_NAMES and head.strip():
        found.add("SSH private key file")
    if binary:
        return found
    # Each pattern only where its literal part occurs: bytes.find is far faster than re.
    if b"PRIVATE KEY" in head:
        for m in _PEM_KEY.finditer(head):
            kind = m.group(1).decode("ascii")
            found.add("private key" if kind == "PRIVATE KEY" else f"private key ({kind})")
    if any(p in head for p in _AWS_PREFIXES):
        for m in _AWS_KEY_ID.finditer(head):
            if b"EXAMPLE" not in m.group(1):   # AWS's documentation key, AKIAIOSFODNN7EXAMPLE
                found.add("AWS access key id")
    if (b"ecret_access_key" in head or b"ECRET_ACCESS_KEY" in head) and \
            _AWS_SECRET.search(head):
        found.add("AWS secret access key")
    if any(p in head for p in _GITHUB_PREFIXES) and _GITHUB_TOKEN.search(head):
        found.add("GitHub token")
    if name in (".netrc", "_netrc") and _NETRC_PASSWORD.search(head):
        found.add("netrc password")
    if name == ".pgpass" and _pgpass_has_password(head):
        found.add("PostgreSQL password file")
    if name == ".git-credentials" and _GIT_CREDENTIAL.search(head):
        found.add("git credentials")
    return found


def _pgpass_has_password(data: bytes) -> bool:
    for line in data.splitlines():
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        # host:port:database:user:password, with \: escaping a colon.
        fields = re.split(rb"(?<!\\):", line)
        if len(fields) >= 5 and fields[4]:
            return True
    return False


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    record: _Record | None = None


@dataclass(frozen=True)
class _Record:
    layer: int
    mode: int
    kind: str                       # file, directory, device, ...
    secrets: frozenset[str] = frozenset()
    owner: tuple[int, int] = (0, 0)


@dataclass
class ImageFiles:
    """What the file checks look at, after every layer and whiteout.

    ``setuid`` maps paths to their modes; ``world_writable`` paths to (mode, kind);
    ``secrets`` paths to the kinds found; ``passwd`` the names and uids of /etc/passwd;
    ``os_release`` the text of /etc/os-release (else /usr/lib/os-release), if any.
    ``incomplete`` says why not every file could be searched for secrets (None: all were).
    """

    setuid: dict[str, int]
    world_writable: dict[str, tuple[int, str]]
    secrets: dict[str, set[str]]
    passwd: dict[str, int]
    os_release: str | None
    entries: int
    scanned: int
    bytes_read: int
    truncated: int                  # files larger than MAX_FILE_READ: only their start read
    skipped: int                    # entries skipped (a '..' in the name)
    incomplete: str | None = None

    def stats(self) -> dict[str, Any]:
        return {"entries": self.entries, "files_read": self.scanned,
                "bytes_read": self.bytes_read, "files_read_in_part": self.truncated,
                "entries_skipped": self.skipped}


class _Tree:
    """The reportable entries, by path component."""

    def __init__(self) -> None:
        self.root = _Node()

    def _walk(self, parts: list[str], create: bool) -> _Node | None:
        node = self.root
        for p in parts:
            child = node.children.get(p)
            if child is None:
                if not create:
                    return None
                child = node.children[p] = _Node()
            node = child
        return node

    def get(self, parts: list[str]) -> _Record | None:
        node = self._walk(parts, False)
        return node.record if node else None

    def put(self, parts: list[str], record: _Record | None) -> None:
        if record is None:
            node = self._walk(parts, False)
            if node is not None:
                node.record = None
            return
        node = self._walk(parts, True)
        assert node is not None
        node.record = record

    def remove(self, parts: list[str], below_layer: int, *, itself: bool = True) -> None:
        """Remove what layers below ``below_layer`` put at ``parts`` (and under it)."""
        parent = self._walk(parts[:-1], False) if parts else None
        node = self._walk(parts, False)
        if node is None:
            return
        if itself and node.record is not None and node.record.layer < below_layer:
            node.record = None
        self._prune(node, below_layer)
        if parent is not None and itself and node.record is None and not node.children:
            del parent.children[parts[-1]]

    def _prune(self, node: _Node, below_layer: int) -> None:
        stack = [node]
        while stack:
            current = stack.pop()
            for name, child in list(current.children.items()):
                if child.record is not None and child.record.layer < below_layer:
                    child.record = None
                stack.append(child)
                if child.record is None and not child.children:
                    del current.children[name]

    def items(self) -> list[tuple[str, _Record]]:
        out: list[tuple[str, _Record]] = []
        stack: list[tuple[str, _Node]] = [("", self.root)]
        while stack:
            path, node = stack.pop()
            if node.record is not None:
                out.append((path or "/", node.record))
            for name, child in node.children.items():
                stack.append((f"{path}/{name}", child))
        return out


class _Reader:
    """``everything``: keep every entry's mode and owner (for :func:`restore_modes`), not
    only the reportable ones, and search nothing."""

    def __init__(self, limits: Limits, *, everything: bool = False):
        self.limits = limits
        self.everything = everything
        self.tree = _Tree()
        self.entries = 0
        self.scanned = 0
        self.bytes_read = 0
        self.truncated = 0
        self.skipped = 0
        self.incomplete: str | None = None
        self.small: dict[str, bytes] = {}   # /etc/passwd, /etc/os-release, /usr/lib/os-release
        self.total = 0

    def layer(self, stream: IO[bytes], index: int, label: str, digest: Digest | None,
              diff_id: Digest | None) -> None:
        raw = _HashingReader(stream)
        decompressed, kind = _decompressor(raw)
        plain = _HashingReader(decompressed) if decompressed is not raw else raw
        try:
            try:
                tar = tarfile.open(  # noqa: SIM115 (a with block below)
                    fileobj=cast(IO[bytes], plain), mode="r|",
                    tarinfo=_tarinfo_class(self.limits))
            except tarfile.ReadError as e:
                if "empty file" not in str(e):
                    raise InventoryError(f"{label} is not a tar archive ({kind}): {e}") from e
                tar = None
            if tar is not None:
                with tar:
                    self._entries(tar, index, label)
            tail, zero = plain.drain(_MAX_TRAILER)
            if tail > _MAX_TRAILER or not zero:
                raise InventoryError(f"{label} has data after the end of its tar",
                                     hint="the layer is damaged")
            if plain is not raw:
                raw.drain(_MAX_TRAILER)
        except (OSError, EOFError) as e:
            raise InventoryError(f"{label} cannot be decompressed ({kind}): {e}") from e
        if digest is not None and raw.digest() != digest:
            raise InventoryError(f"{label}: the blob's sha256 is {raw.digest()}, not {digest} "
                                 "as the manifest says",
                                 hint="the image is damaged or was tampered with")
        if diff_id is not None and plain.digest() != diff_id:
            raise InventoryError(f"{label}: the uncompressed layer's sha256 is "
                                 f"{plain.digest()}, not the config's diff_id {diff_id}",
                                 hint="the image is damaged or was tampered with")

    def _entries(self, tar: tarfile.TarFile, index: int, label: str) -> None:
        while True:
            try:
                m = tar.next()
            except tarfile.TarError as e:
                raise InventoryError(f"{label} is not a readable tar: {e}",
                                     hint="the image is damaged") from e
            if m is None:
                return
            tar.members.clear()  # type: ignore[attr-defined]  # typeshed omits it
            self.entries += 1
            self.total += m.size
            # The same caps as unpacking: a disk's worth of zeros is refused, not read.
            if self.entries > self.limits.max_entries:
                raise InventoryError(f"{label}: more than {self.limits.max_entries} entries "
                                     "in the image")
            if m.size > self.limits.max_file:
                raise InventoryError(f"{label}: entry {m.name!r} is {m.size} bytes, more "
                                     f"than the {self.limits.max_file} allowed for one file")
            if self.total > self.limits.max_total:
                raise InventoryError(f"{label}: the image's files exceed "
                                     f"{self.limits.max_total} bytes in all")
            self._entry(tar, m, index)

    def _entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo, index: int) -> None:
        parts = _split(m.name)
        if parts is None:
            self.skipped += 1
            return
        if not parts:
            return
        name = parts[-1]
        if name == _OPAQUE:
            self.tree.remove(parts[:-1], index, itself=False)
            prefix = "/".join(parts[:-1])
            for key in [k for k in self.small if k.startswith(prefix + "/") or not prefix]:
                del self.small[key]
            return
        if name.startswith(_WHITEOUT):
            hidden = name[len(_WHITEOUT):]
            if hidden and hidden not in (".", "..") and not hidden.startswith(_WHITEOUT):
                self.tree.remove([*parts[:-1], hidden], index)
                self.small.pop("/".join([*parts[:-1], hidden]), None)
            return
        # This entry replaces whatever was at its path; a non-directory also replaces what
        # lower layers had below it.
        self.small.pop("/".join(parts), None)
        self.tree.put(parts, None)
        if not m.isdir():
            self.tree.remove(parts, index, itself=False)
        record = self._record(tar, m, parts, index)
        if record is not None:
            self.tree.put(parts, record)

    def _record(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str],
                index: int) -> _Record | None:
        mode = m.mode
        if m.islnk():
            target = _split(m.linkname)
            linked = self.tree.get(target) if target else None
            return _Record(index, linked.mode, linked.kind, linked.secrets,
                           linked.owner) if linked else None
        if self.everything:
            kind = "file" if m.isreg() else "directory" if m.isdir() else "other"
            return _Record(index, mode, kind, owner=(m.uid, m.gid))
        if m.isreg():
            secrets = self._search(tar, m, parts)
            interesting = mode & (stat.S_ISUID | stat.S_ISGID) or mode & 0o002 or secrets
            return _Record(index, mode, "file", frozenset(secrets)) if interesting else None
        if m.isdir():
            if mode & 0o002 and not mode & stat.S_ISVTX:
                return _Record(index, mode, "directory")
            return None
        if (m.ischr() or m.isblk() or m.isfifo()) and mode & 0o002:
            kind = "fifo" if m.isfifo() else "device"
            return _Record(index, mode, kind)
        return None

    def _search(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str]) -> set[str]:
        small = parts in (["etc", "passwd"], ["etc", "os-release"],
                              ["usr", "lib", "os-release"])
        if m.size == 0:
            return set()
        if self.bytes_read >= MAX_TOTAL_READ and not small:
            if self.incomplete is None:
                self.incomplete = (f"more than {MAX_TOTAL_READ} bytes of files to search; "
                                   f"stopped at /{'/'.join(parts)}")
            return {"SSH private key file"} if parts[-1] in _SSH_KEY_NAMES else set()
        f = tar.extractfile(m)
        if f is None:
            return set()
        try:
            head = f.read(min(m.size, _SNIFF))
            if b"\0" not in head:
                want = (_MAX_PASSWD if small else MAX_FILE_READ) - len(head)
                if want > 0:
                    head += f.read(min(m.size - len(head), want))
        finally:
            f.close()
        self.scanned += 1
        self.bytes_read += len(head)
        if len(head) < m.size and b"\0" not in head[:_SNIFF]:
            self.truncated += 1
        if small:
            self.small["/".join(parts)] = head
        return secrets_in(parts[-1], head)

    def result(self) -> ImageFiles:
        setuid: dict[str, int] = {}
        writable: dict[str, tuple[int, str]] = {}
        secrets: dict[str, set[str]] = {}
        for path, r in self.tree.items():
            if r.kind == "file" and r.mode & (stat.S_ISUID | stat.S_ISGID):
                setuid[path] = r.mode & 0o7777
            if r.mode & 0o002 and not (r.kind == "directory" and r.mode & stat.S_ISVTX):
                writable[path] = (r.mode & 0o7777, r.kind)
            if r.secrets:
                secrets[path] = set(r.secrets)
        return ImageFiles(setuid=setuid, world_writable=writable, secrets=secrets,
                          passwd=_passwd(self.small.get("etc/passwd", b"")),
                          os_release=self._os_release(), entries=self.entries,
                          scanned=self.scanned, bytes_read=self.bytes_read,
                          truncated=self.truncated, skipped=self.skipped,
                          incomplete=self.incomplete)


    def _os_release(self) -> str | None:
        data = self.small.get("etc/os-release") or self.small.get("usr/lib/os-release")
        return data.decode("utf-8", "replace") if data is not None else None


def _passwd(data: bytes) -> dict[str, int]:
    users: dict[str, int] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            users.setdefault(fields[0], int(fields[2]))
    return users


def read_image_files(layout: Path, *, platform: str | None = None,
                     limits: Limits | None = None) -> ImageFiles:
    """Read every layer of the image in the OCI layout ``layout`` (the host's platform, or
    the only image) and return what the file checks look at.  Raises
    :class:`~alicorn.inventory.model.InventoryError` for a damaged or hostile image (a
    digest that does not match, a corrupt tar, more entries than ``limits`` allow)."""
    return _read(layout, _Reader(limits or Limits.from_env()), platform).result()


def restore_modes(layout: Path, root: Path, *, platform: str | None = None,
                  limits: Limits | None = None) -> int:
    """Give the files of ``root`` (``layout`` unpacked by
    :func:`~alicorn.inventory.unpack.unpack_layout`, which makes every file readable by its
    owner and strips setuid bits) the modes and owners the layers give them, so that a
    scanner sees the image's permissions.  Symlinks and anything whose type differs from the
    layer's entry are left alone.  Returns how many entries were restored."""
    reader = _read(layout, _Reader(limits or Limits.from_env(), everything=True), platform)
    restored = 0
    # Deepest first: a directory's own mode (0550, say) is set after its children's.
    for path, record in sorted(reader.tree.items(), key=lambda item: -item[0].count("/")):
        if record.kind not in ("file", "directory") or path == "/":
            continue
        parent, _, name = path.rpartition("/")
        try:
            host = resolve_in_root(root, parent or "/") / name
            st = os.lstat(host)
        except (OSError, BadInput):
            continue
        if (record.kind == "file") != stat.S_ISREG(st.st_mode) or \
                (record.kind == "directory") != stat.S_ISDIR(st.st_mode):
            continue
        try:
            os.lchown(host, *record.owner)     # before chmod: chown clears setuid bits
            os.chmod(host, record.mode & 0o7777)
        except OSError:
            continue
        restored += 1
    return restored


def _read(layout: Path, reader: _Reader, platform: str | None) -> _Reader:
    limits = reader.limits
    where = str(layout)
    if not is_oci_layout(layout):
        raise InventoryError("not an OCI image layout (no oci-layout and index.json)",
                             where=where)
    try:
        with open(layout / "index.json", "rb") as f:
            data = f.read(limits.max_document + 1)
    except OSError as e:
        raise InventoryError(f"cannot read index.json: {e.strerror}", where=where) from e
    if len(data) > limits.max_document:
        raise InventoryError("index.json is too large", where=where)
    blobs = _LayoutBlobs(layout)
    index = _parse_json(data, "index.json", where)
    chosen = _choose(_manifests_of(blobs, index, limits, where), None,
                     platform or host_platform(), where)
    layers, _config_digest, _config = _image_parts(blobs, chosen, limits)
    for i, layer in enumerate(layers):
        assert layer.digest is not None  # every OCI layer descriptor has one
        label = f"layer {i + 1}/{len(layers)} {layer.digest}"
        try:
            with blobs.open(layer.digest, layer.size, label) as stream:
                reader.layer(stream, i, label, layer.digest, layer.diff_id)
        except InventoryError as e:
            if e.where is None:
                e.where = where
            raise
    return reader
