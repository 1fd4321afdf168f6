"""The registry images are published to.

By default Alicorn runs Debian's docker-registry itself, on loopback only, with a configuration
of its own under ``$ALICORN_HOME/registry`` (Debian's packaged configuration asks for htpasswd
files).  ``ALICORN_REGISTRY=host:port`` points Alicorn at a registry it does not manage.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from alicorn import daemon
from alicorn.config import Settings
from alicorn.digest import Digest
from alicorn.errors import Error, RegistryError, ToolError
from alicorn.proc import BuildLog, run, which

CONFIG = """\
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: {addr}
  headers:
    X-Content-Type-Options: [nosniff]
"""

REGISTRIES_CONF_D = Path("/etc/containers/registries.conf.d")


class Registry:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.addr = settings.registry
        self.dir = settings.registry_dir

    @property
    def pidfile(self) -> Path:
        return self.dir / "registry.pid"

    def url(self, path: str = "/v2/") -> str:
        return f"http://{self.addr}{path}"

    def is_up(self) -> bool:
        try:
            with urllib.request.urlopen(self.url(), timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def ensure_running(self) -> None:
        """Start the local registry unless it already answers."""
        if self.is_up():
            return
        if not self.settings.registry_managed:
            raise RegistryError(f"the registry {self.addr} is not reachable",
                                hint="start it, or unset ALICORN_REGISTRY to use the local one")
        binary = which("docker-registry", package="docker-registry")
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.yml"
        config.write_text(CONFIG.format(data=self.dir / "data", addr=self.addr))
        trust_insecure(self.addr)
        daemon.stop(self.pidfile)
        daemon.spawn([binary, "serve", str(config)], pidfile=self.pidfile,
                     logfile=self.dir / "registry.log")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.is_up():
                self.require_signatures()
                return
            if daemon.read_pid(self.pidfile) is None:
                break
            time.sleep(0.1)
        tail = (self.dir / "registry.log").read_text(errors="replace").splitlines()[-5:]
        raise RegistryError(f"the local registry did not start on {self.addr}: "
                            + (" | ".join(tail) or "no output"),
                            hint=f"see {self.dir / 'registry.log'}")

    def require_signatures(self) -> str | None:
        """Make podman on this host refuse images from this registry that the build service
        did not sign (GPG simple signing, which Debian's podman verifies); returns why not when
        it cannot (not root, or podman here cannot verify)."""
        from alicorn.chain.gpgsign import (
            GpgKeyRing,
            default_lookaside_dir,
            host_gpg_policy,
        )
        ring = GpgKeyRing(self.settings.keys_dir)
        ring.current()
        try:
            host_gpg_policy(self.addr, pubring=ring.pubring,
                            lookaside_dir=default_lookaside_dir(self.settings.home, self.addr))
        except (Error, OSError) as e:
            reason = e.diagnostics() if isinstance(e, Error) else str(e)
            with open(self.dir / "registry.log", "a") as f:
                f.write(f"alicorn: podman will not require signatures here: {reason}\n")
            return reason
        return None

    def stop(self) -> bool:
        stopped = daemon.stop(self.pidfile)
        if self.settings.registry_managed:
            from alicorn.chain.gpgsign import remove_host_gpg_policy
            remove_host_gpg_policy(self.addr)
            untrust_insecure(self.addr)
        return stopped

    def manifest_digest(self, name: str, reference: str) -> Digest | None:
        """The digest the registry holds for ``name:reference``, None if it holds none."""
        req = urllib.request.Request(
            self.url(f"/v2/{name}/manifests/{reference}"), method="HEAD",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                value = resp.headers.get("Docker-Content-Digest")
                return Digest(value) if value else None
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise RegistryError(f"the registry {self.addr} answered HTTP {e.code} for "
                                f"{name}:{reference}") from e
        except (urllib.error.URLError, OSError) as e:
            raise RegistryError(f"the registry {self.addr} is not reachable: {e}") from e

    def push(self, layout: Path, name: str, tag: str, digest: Digest, *,
             log: BuildLog | None = None, move_tag: bool = True) -> str:
        """Copy the image in ``layout`` to ``name:tag``; returns ``addr/name@digest``.

        ``move_tag=False`` pushes the blobs and the manifest by digest only: ``name:tag``
        still names what it named before, until :meth:`move_tag` moves it (a publisher that
        attaches signatures and attestations first, so that the tag never names an image
        without them).
        """
        skopeo = which("skopeo")
        if not self.is_up():
            if self.settings.registry_managed:
                self.ensure_running()
            else:
                raise RegistryError(f"the registry {self.addr} is down; nothing was published",
                                    hint="start the registry and build again")
        dest = f"{self.addr}/{name}:{tag}" if move_tag else f"{self.addr}/{name}@{digest}"
        try:
            run([skopeo, "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                 f"oci:{layout}:{tag}", f"docker://{dest}"], log=log, what="skopeo copy",
                timeout=1800)
        except ToolError as e:
            raise RegistryError(f"pushing to {dest} failed: {e.message}",
                                hint="check that the registry is up and has free space") from e
        held = self.manifest_digest(name, tag if move_tag else str(digest))
        if held != digest:
            raise RegistryError(f"the registry holds {held} for {dest}, not {digest}")
        return f"{self.addr}/{name}@{digest}"

    def move_tag(self, layout: Path, name: str, tag: str, digest: Digest, *,
                 log: BuildLog | None = None) -> None:
        """Point ``name:tag`` at ``digest``, which :meth:`push` already pushed by digest: one
        manifest PUT, the last step of publishing."""
        from alicorn.registry.client import RegistryClient

        blob = layout / "blobs" / "sha256" / digest.hex
        try:
            manifest = blob.read_bytes()
            media_type = str(json.loads(manifest).get("mediaType") or "")
        except (OSError, ValueError, AttributeError) as e:
            raise RegistryError(f"the manifest {digest} in {layout} is unreadable: {e}") from e
        if Digest.of_bytes(manifest) != digest:
            raise RegistryError(f"the manifest in {blob} does not hash to {digest}")
        if log is not None:
            log.write(f"moving {self.addr}/{name}:{tag} to {digest}")
        RegistryClient(self.addr).push_manifest(name, tag, manifest, media_type)
        held = self.manifest_digest(name, tag)
        if held != digest:
            raise RegistryError(f"the registry holds {held} for {self.addr}/{name}:{tag}, "
                                f"not {digest}")

    def catalog(self) -> list[str]:
        try:
            with urllib.request.urlopen(self.url("/v2/_catalog"), timeout=10) as resp:
                repos: list[str] = json.load(resp).get("repositories", [])
                return repos
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise RegistryError(f"the registry {self.addr} is not reachable: {e}") from e


def _trust_file(addr: str) -> Path:
    safe = addr.replace(":", "-").replace("[", "").replace("]", "")
    return REGISTRIES_CONF_D / f"50-alicorn-{safe}.conf"


def untrust_insecure(addr: str) -> None:
    """Remove what :func:`trust_insecure` wrote once the registry is stopped."""
    with contextlib.suppress(OSError):
        _trust_file(addr).unlink(missing_ok=True)


def trust_insecure(addr: str) -> None:
    """Let podman pull from the loopback registry over plain HTTP (it is never exposed).

    Written only where the host's containers configuration is writable (root); elsewhere
    Alicorn's own calls pass --tls-verify=false.
    """
    if not addr.startswith(("127.", "localhost", "[::1]")):
        return
    path = _trust_file(addr)
    text = f'# Written by alicorn: its local registry, loopback only.\n' \
           f'[[registry]]\nlocation = "{addr}"\ninsecure = true\n'
    try:
        if not path.exists() or path.read_text() != text:
            REGISTRIES_CONF_D.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError:
        pass


def pull_to_store(settings: Settings, digest: Digest, image_ref: str, *,
                  tag: str = "latest") -> Path:
    """Copy the image ``image_ref`` (``host:port/name@sha256:…``) from its registry into this
    host's image store under ``digest`` and return its layout: in a cluster, the image a
    worker on another host built.  The copy keeps the registry's bytes (skopeo
    --preserve-digests), and a manifest that is not ``digest`` is refused; ``tag`` names it in
    the layout's index, as the builder's layout does (the recipe's tag)."""
    from alicorn.image.oci import read_manifest, store_layout

    layout = settings.image_dir(digest.hex)
    if layout.is_dir():
        return layout
    skopeo = which("skopeo")
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.images_dir / f".pull-{digest.hex[:16]}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if "@" not in image_ref or not image_ref.endswith(str(digest)):
        raise RegistryError(f"{image_ref} does not name the image by its digest {digest}")
    # The copy is pinned by digest and checked against it, the digest being what the build's
    # sealed record names; the host's signature policy (which wants the lookaside signature
    # of the builder's host) is not what decides whether these bytes are the build's.
    tmp.mkdir()
    policy = tmp.with_name(tmp.name + ".policy.json")
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    try:
        run([skopeo, "--policy", str(policy), "copy", "--quiet", "--preserve-digests",
             "--src-tls-verify=false", f"docker://{image_ref}", f"oci:{tmp}:{tag}"],
            what="skopeo copy", timeout=1800)
        index = json.loads((tmp / "index.json").read_text())
        held = Digest(index["manifests"][0]["digest"])
        if held != digest:
            raise RegistryError(f"{image_ref} holds the manifest {held}, not {digest}")
        read_manifest(tmp)
        return store_layout(tmp, settings.images_dir, digest)
    except ToolError as e:
        raise RegistryError(f"cannot copy {image_ref} from its registry: {e.message}",
                            hint="check that the registry is up and holds the image") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        policy.unlink(missing_ok=True)
