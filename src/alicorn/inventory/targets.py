"""What a person names as a scan target, turned into a root filesystem and its inventory.

:func:`inventory_of` tries these in order; the first that applies wins:

1. ``host`` -- the running system: ``/`` read in place, never copied (kind ``host``).
2. An existing directory.  One holding an OCI image layout (``oci-layout`` and ``index.json``)
   is unpacked into a private temporary directory (``oci-layout``); any other directory is a
   root filesystem read in place (``rootfs``).
3. An existing file that is a tar: an OCI archive (``oci-archive``) or a docker archive
   (``docker-archive``, as ``podman save --format docker-archive`` writes), unpacked.  In 2 and
   3, ``PATH:REF`` picks one image of a layout or archive that holds several.
4. ``sha256:<hex>``, or a unique prefix of at least 6 hex digits, naming an image Alicorn built
   (its OCI layout is ``images/<hex>`` under ``ALICORN_HOME``): kind ``alicorn``.
5. ``podman:NAME``, or a NAME podman knows: a container (``podman-container``, read through
   ``podman mount`` so that what changed in it is seen), else an image (``podman-image``,
   through ``podman image mount``).  ``podman-container:NAME`` and ``podman-image:NAME`` say
   which.  Both are read in place and unmounted afterwards, also on error.

Anything else is an :class:`~alicorn.inventory.model.InventoryError` listing these forms.
Temporary directories are removed afterwards, also on error.

For ``dnf list-security --modules``: :func:`podman_modules` lists the host's podman images and
containers, and :func:`inventory_of_modules` scans each image once; a container shares its
image's inventory unless ``podman diff`` shows it changed something that holds packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alicorn.config import Settings, load_settings
from alicorn.errors import Error, ToolError, ToolMissing
from alicorn.image import LABEL_RECIPE_DIGEST
from alicorn.inventory.collect import collect
from alicorn.inventory.model import Inventory, InventoryError
from alicorn.inventory.unpack import UnpackedImage, archive_kind, is_oci_layout, unpacked
from alicorn.proc import run, which

__all__ = ["ModuleRef", "inventory_of", "inventory_of_modules", "is_host_root",
           "podman_modules"]

#: The label ``alicorn run`` puts on the containers it starts (alicorn.run.podman.start).
LABEL_MODULE = "org.alicorn.module"

_PODMAN_TIMEOUT = 300
_MIN_PREFIX = 6
_HEX = re.compile(r"[0-9a-f]+")

FORMS_HINT = (
    "a target is one of: host; a directory holding a root filesystem or an OCI layout "
    "(DIR[:REF]); an OCI or docker archive (FILE[:REF]); sha256:<digest> or a hex prefix of an "
    "image Alicorn built; podman:NAME, podman-container:NAME, podman-image:NAME or a name "
    "podman knows")

# Paths a running container changes without changing what is installed in it: podman's own
# files, logs, caches and scratch space.
_RUNTIME_PATHS = ("/run", "/var/run", "/tmp", "/var/tmp", "/var/log", "/var/cache", "/dev",
                  "/proc", "/sys", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf",
                  "/etc/mtab", "/.containerenv")


def inventory_of(target: str, *, settings: Settings | None = None) -> Inventory:
    """The inventory of ``target``, resolved as the module docstring lists.

    ``settings`` gives the image store for ``alicorn`` targets (default: ``$ALICORN_HOME``)
    and the directory images are unpacked in (``unpack/`` under its home; default: the
    system's temporary directory).
    Warnings of the unpacking (skipped hostile entries) are added to the inventory's.
    """
    text = target.strip()
    if not text:
        raise InventoryError("no target given", hint=FORMS_HINT)
    # Not settings.work_dir: the build worker removes whatever there is not a running build.
    workdir = settings.home / "unpack" if settings is not None else None
    if text == "host":
        return collect(Path("/"), target=target, kind="host", name=socket.gethostname())

    found = _local_path(text)
    if found is not None:
        path, ref = found
        if path.is_dir():
            if is_oci_layout(path):
                return _from_image(path, "oci-layout", ref, target=target, workdir=workdir)
            if ref is not None:
                raise InventoryError(f"{path} is a root filesystem, not an image: it has no "
                                     f"image named {ref!r}", where=str(path))
            if is_host_root(path):
                # ``alicorn scan /`` is the running host: its container storage and scratch
                # directories are not its packages (collect's HOST_EXCLUDE).
                return collect(Path("/"), target=target, kind="host",
                               name=socket.gethostname())
            return collect(path.absolute(), target=target, kind="rootfs")
        if not path.is_file():
            # A FIFO or a device would block or never end.
            raise InventoryError("not a directory or a regular file", where=str(path),
                                 hint=FORMS_HINT)
        kind = archive_kind(path)
        if kind is None:
            if _is_tar(path):
                raise InventoryError(
                    "a tar, but not an OCI archive or a docker archive (it has no index.json "
                    "or manifest.json)", where=str(path),
                    hint="a tar of a root filesystem (podman export, a rootfs tarball) is not "
                         "read as it is: unpack it into a directory and scan the directory")
            raise InventoryError("not a directory, an OCI archive or a docker archive",
                                 where=str(path), hint=FORMS_HINT)
        return _from_image(path, kind, ref, target=target, workdir=workdir)

    if text.startswith(("/", "./", "../", "~")):
        # No image name podman knows starts so: this is a path, and it does not exist.
        raise InventoryError("no such file or directory", where=text, hint=FORMS_HINT)

    layout = _alicorn_layout(text, settings)
    if layout is not None:
        return _from_image(layout, "oci-layout", None, target=target, workdir=workdir,
                           kind="alicorn")

    return _from_podman(text, target=target)


def is_host_root(path: Path) -> bool:
    """Whether the directory ``path`` is this host's ``/`` (however it is spelled: ``/``,
    ``/.``, ``//``, a symlink to it)."""
    try:
        return path.resolve() == Path("/").resolve() and os.path.samefile(path, "/")
    except OSError:
        return False


def _is_tar(path: Path) -> bool:
    """Whether ``path`` starts like a tar (plain or compressed): only the first bytes are
    read."""
    import tarfile

    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError, ValueError):
        return False


def _local_path(text: str) -> tuple[Path, str | None] | None:
    """``text`` as an existing path, or ``PATH:REF`` whose PATH is a layout or a file."""
    path = Path(text).expanduser()
    if os.path.lexists(path):
        if not path.exists():
            raise InventoryError("the path is a dangling symlink", where=str(path))
        return path, None
    if text.startswith(("podman:", "podman-container:", "podman-image:", "sha256:")):
        return None
    # The REF may hold colons itself (example.org:5000/pony:1), the path rarely: the first
    # colon after which what comes before is a layout or a file splits them.
    for i, char in enumerate(text):
        if char != ":" or i == 0 or i == len(text) - 1:
            continue
        base = Path(text[:i]).expanduser()
        if (base.is_dir() and is_oci_layout(base)) or base.is_file():
            return base, text[i + 1:]
    return None


def _from_image(path: Path, fmt: str, ref: str | None, *, target: str, workdir: Path | None,
                kind: str | None = None) -> Inventory:
    with unpacked(path, fmt, ref=ref, workdir=workdir) as image:
        inventory = collect(image.root, target=target, kind=kind or fmt,
                            digest=str(image.digest) if image.digest else None,
                            name=image.ref)
        return _with_warnings(inventory, image)


def _with_warnings(inventory: Inventory, image: UnpackedImage) -> Inventory:
    if not image.warnings:
        return inventory
    return replace(inventory, warnings=(*image.warnings, *inventory.warnings))


# -- images Alicorn built --------------------------------------------------------------------------

def _alicorn_layout(text: str, settings: Settings | None) -> Path | None:
    """The stored layout ``text`` names (``sha256:<hex>`` or a unique hex prefix), or None."""
    hex_part = text[len("sha256:"):] if text.startswith("sha256:") else text
    hex_part = hex_part.lower()
    if not (_HEX.fullmatch(hex_part) and _MIN_PREFIX <= len(hex_part) <= 64):
        return None
    settings = settings or load_settings()
    images = settings.images_dir
    if len(hex_part) == 64:
        layout = images / hex_part
        if is_oci_layout(layout):
            return layout
        return _from_cluster(settings, hex_part)
    if not images.is_dir():
        return None
    matches = sorted(p for p in images.iterdir()
                     if p.name.startswith(hex_part) and len(p.name) == 64
                     and _HEX.fullmatch(p.name) and is_oci_layout(p))
    if len(matches) > 1:
        shown = ", ".join(m.name[:12] for m in matches[:5])
        raise InventoryError(f"{text!r} is a prefix of {len(matches)} images Alicorn built "
                             f"({shown})", where=str(images), hint="give more of the digest")
    return matches[0] if matches else None


def _from_cluster(settings: Settings, hex_part: str) -> Path | None:
    """In a cluster (the Celery backend), an image another host's worker built: copied from
    the registry its build names into this host's store; None elsewhere, or when no
    published build made it."""
    from alicorn.cluster.config import load_queue_config
    if not load_queue_config(settings).celery:
        return None
    from alicorn.digest import Digest
    from alicorn.errors import NotFound
    from alicorn.registry.local import pull_to_store
    from alicorn.store.builds import BuildStore
    try:
        row = BuildStore(settings.database_url).resolve("sha256:" + hex_part)
    except NotFound:
        return None
    if not row.image_ref or row.digest != "sha256:" + hex_part:
        return None
    tag = "latest"
    if row.recipe_content:
        import yaml
        with contextlib.suppress(yaml.YAMLError, AttributeError):
            tag = str(yaml.safe_load(row.recipe_content).get("tag") or "latest")
    return pull_to_store(settings, Digest(row.digest), row.image_ref, tag=tag)


# -- podman ----------------------------------------------------------------------------------------

def _podman(*args: str, check: bool = True) -> Any:
    return run([which("podman"), *args], check=check, timeout=_PODMAN_TIMEOUT,
               what=f"podman {args[0]}")


def _exists(what: str, name: str) -> bool:
    proc = _podman(what, "exists", name, check=False)
    if proc.returncode in (0, 1):
        return bool(proc.returncode == 0)
    if "invalid reference format" in proc.stderr:
        return False  # not a name podman could know
    raise ToolError(f"podman {what} exists failed (exit status {proc.returncode}): "
                    f"{proc.stderr.strip()[-300:]}", argv=proc.args, returncode=proc.returncode)


def _inspect(what: str, name: str) -> dict[str, Any]:
    out = _podman(what, "inspect", "--format", "json", name).stdout
    try:
        data = json.loads(out)
    except ValueError as e:
        raise ToolError(f"podman {what} inspect printed no JSON: {e}") from e
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise InventoryError(f"podman knows no {what} {name!r}")
    found: dict[str, Any] = data[0]
    return found


def _from_podman(text: str, *, target: str) -> Inventory:
    explicit = None
    name = text
    for prefix, kind in (("podman:", None), ("podman-container:", "container"),
                         ("podman-image:", "image")):
        if text.startswith(prefix):
            explicit, name = kind or "any", text[len(prefix):]
            break
    if explicit is None:
        try:
            which("podman")
        except ToolMissing as e:
            raise InventoryError(f"no such target {text!r}", hint=FORMS_HINT) from e
    if not name:
        raise InventoryError(f"{text!r} names no container or image", hint=FORMS_HINT)
    if explicit in (None, "any", "container") and _exists("container", name):
        return _container_inventory(name, target=target)
    if explicit in (None, "any", "image") and _exists("image", name):
        return _image_inventory(name, target=target)
    if explicit is None:
        raise InventoryError(f"no such target {text!r}: not a path, not an image Alicorn "
                             "built, and podman knows no container or image by that name",
                             hint=FORMS_HINT)
    what = {"any": "container or image", "container": "container", "image": "image"}[explicit]
    raise InventoryError(f"podman knows no {what} {name!r}",
                         hint="podman ps -a and podman images list them")


def _mounted_collect(kind: str, ident: str, *, target: str, digest: str | None,
                     name: str | None) -> Inventory:
    """Collect from the mount podman gives for container or image ``ident``; unmount after."""
    mount_args = ("mount",) if kind == "podman-container" else ("image", "mount")
    unmount_args = ("unmount",) if kind == "podman-container" else ("image", "unmount")
    try:
        out = _podman(*mount_args, ident).stdout.strip()
    except ToolError as e:
        raise InventoryError(f"podman cannot mount {ident}: {e.message}",
                             hint="podman mounts need root (or podman unshare)") from e
    lines = out.splitlines()
    mountpoint = Path(lines[-1].strip()) if lines else None
    try:
        if mountpoint is None or not mountpoint.is_dir():
            raise InventoryError(f"podman mount of {ident} gave no directory ({out!r})")
        inventory = collect(mountpoint, target=target, kind=kind, digest=digest, name=name)
    finally:
        proc = _podman(*unmount_args, ident, check=False)
    if proc.returncode != 0:
        inventory = replace(inventory, warnings=(
            *inventory.warnings,
            f"podman could not unmount {ident}: {proc.stderr.strip()[-200:]}"))
    return inventory


def _container_inventory(name: str, *, target: str) -> Inventory:
    info = _inspect("container", name)
    cid = str(info.get("Id", name))
    image_id = info.get("Image")
    return _mounted_collect("podman-container", cid, target=target,
                            digest=f"sha256:{image_id}" if image_id else None,
                            name=str(info.get("Name") or name))


def _image_inventory(name: str, *, target: str) -> Inventory:
    info = _inspect("image", name)
    iid = str(info.get("Id", name))
    tags = info.get("RepoTags") or []
    shown = name if name in tags or not tags else str(tags[0])
    return _mounted_collect("podman-image", iid, target=target, digest=f"sha256:{iid}",
                            name=shown)


# -- modules: every podman image and container on the host -----------------------------------------

@dataclass(frozen=True)
class ModuleRef:
    """One podman image or container on this host, as ``dnf list-security --modules`` lists it.

    ``target`` is what :func:`inventory_of` takes to scan it.  ``image_id`` is the image's id
    (for a container: its image's); ``digest`` the image's manifest digest when podman knows
    it.  ``deployed_by_alicorn`` marks containers ``alicorn run`` started (their
    ``org.alicorn.module`` label, whose value is ``module``); ``built_by_alicorn`` images (and
    containers of images) that carry Alicorn's recipe label.
    """

    kind: str                      # podman-image | podman-container
    target: str
    id: str                        # the image's or the container's full id
    names: tuple[str, ...]         # image: its names (repo:tag); container: its name
    image_id: str
    image: str | None = None       # the image's first name (for a container: as it was run)
    digest: str | None = None
    container: str | None = None   # the container's name
    running: bool = False
    deployed_by_alicorn: bool = False
    built_by_alicorn: bool = False
    module: str | None = None

    @property
    def label(self) -> str:
        """How a person recognises it: the container's or the image's name, else a short id."""
        return self.container or self.image or self.id[:12]


def _json_list(out: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(out or "[]")
    except ValueError as e:
        raise ToolError(f"podman {what} printed no JSON: {e}") from e
    if not isinstance(data, list):
        raise ToolError(f"podman {what} printed {type(data).__name__}, not a list")
    return [d for d in data if isinstance(d, dict)]


def podman_modules() -> list[ModuleRef]:
    """This host's podman images, then its containers (running and stopped; pod infra
    containers left out).  Empty when podman is not installed."""
    try:
        which("podman")
    except ToolMissing:
        return []
    images = _json_list(_podman("images", "--format", "json").stdout, "images")
    containers = _json_list(_podman("ps", "--all", "--format", "json").stdout, "ps")
    refs: list[ModuleRef] = []
    by_id: dict[str, ModuleRef] = {}
    for img in images:
        iid = str(img.get("Id", ""))
        if not iid or iid in by_id:
            continue
        names = tuple(str(n) for n in (img.get("Names") or img.get("RepoTags") or []))
        labels = img.get("Labels") or {}
        ref = ModuleRef(kind="podman-image",
                        target=f"podman-image:{names[0] if names else iid}",
                        id=iid, names=names, image_id=iid, image=names[0] if names else None,
                        digest=str(img["Digest"]) if img.get("Digest") else None,
                        built_by_alicorn=isinstance(labels, dict)
                        and LABEL_RECIPE_DIGEST in labels)
        by_id[iid] = ref
        refs.append(ref)
    for c in containers:
        if c.get("IsInfra"):
            continue
        cid = str(c.get("Id", ""))
        names = tuple(str(n) for n in (c.get("Names") or []))
        labels = c.get("Labels") or {}
        labels = labels if isinstance(labels, dict) else {}
        image_id = str(c.get("ImageID", ""))
        image_ref = by_id.get(image_id)
        refs.append(ModuleRef(
            kind="podman-container", target=f"podman-container:{names[0] if names else cid}",
            id=cid, names=names, image_id=image_id, image=str(c.get("Image") or "") or None,
            digest=image_ref.digest if image_ref else None,
            container=names[0] if names else None,
            running=str(c.get("State", "")).lower() == "running",
            deployed_by_alicorn=LABEL_MODULE in labels,
            built_by_alicorn=bool(image_ref and image_ref.built_by_alicorn),
            module=str(labels[LABEL_MODULE]) if LABEL_MODULE in labels else None))
    return refs


def _changed_packages(container_id: str) -> bool:
    """Whether the container changed anything but runtime files (see ``_RUNTIME_PATHS``):
    only then does it need an inventory of its own.  True when podman cannot say."""
    proc = _podman("diff", "--format", "json", container_id, check=False)
    if proc.returncode != 0:
        return True
    try:
        data = json.loads(proc.stdout or "{}")
    except ValueError:
        return True
    if not isinstance(data, dict):
        return True
    paths = sorted({str(p) for key in ("changed", "added", "deleted")
                    for p in (data.get(key) or [])})
    for i, path in enumerate(paths):
        if any(path == r or path.startswith(r + "/") for r in _RUNTIME_PATHS):
            continue
        # A directory is listed when something in it changed; what changed is listed too.
        if i + 1 < len(paths) and paths[i + 1].startswith(path.rstrip("/") + "/"):
            continue
        return True
    return False


def _failed(ref: ModuleRef, error: Error) -> Inventory:
    return Inventory(target=ref.target, kind=ref.kind, packages=(), name=ref.label,
                     digest=f"sha256:{ref.image_id}" if ref.image_id else None,
                     errors=(f"{ref.label}: {error.diagnostics()}",))


def inventory_of_modules(modules: Sequence[ModuleRef] | None = None) -> list[Inventory]:
    """The inventory of every module (default: :func:`podman_modules`), in that order.

    Each image is read once.  A container gets its image's inventory (under its own target,
    kind and name) unless it changed more than runtime files, in which case it is read
    through its own mount.  A module that cannot be read is an inventory with an entry in
    ``errors`` and no packages, never left out.
    """
    refs = list(podman_modules() if modules is None else modules)
    images: dict[str, Inventory] = {}
    out: list[Inventory] = []

    def image_inventory(image_id: str, ref: ModuleRef) -> Inventory:
        if image_id not in images:
            try:
                images[image_id] = _mounted_collect(
                    "podman-image", image_id, target=ref.target if ref.kind == "podman-image"
                    else f"podman-image:{image_id}", digest=f"sha256:{image_id}",
                    name=ref.image)
            except Error as e:
                images[image_id] = _failed(ref, e)
        return images[image_id]

    for ref in refs:
        try:
            if ref.kind == "podman-image":
                inv = image_inventory(ref.image_id, ref)
                out.append(replace(inv, target=ref.target, name=ref.label))
            elif ref.kind == "podman-container":
                if ref.image_id and not _changed_packages(ref.id):
                    base = image_inventory(ref.image_id, ref)
                    out.append(replace(base, target=ref.target, kind=ref.kind, name=ref.label))
                else:
                    out.append(_mounted_collect("podman-container", ref.id, target=ref.target,
                                                digest=f"sha256:{ref.image_id}"
                                                if ref.image_id else None, name=ref.label))
            else:
                out.append(inventory_of(ref.target))
        except Error as e:
            out.append(_failed(ref, e))
    return out
