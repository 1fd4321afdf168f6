"""Starting, probing and removing a module's replicas (podman containers).

A replica is its web container — published on ``127.0.0.1:<free port>``, where the proxy
reaches it — and, when the module's content comes from a content image, a content container
beside it whose volume the web container mounts (``--volumes-from``).  Every container carries
the module's labels (:data:`~alicorn.rollout.model.LABEL_MODULE` …), so that what podman has
can be reconciled with the database after a reboot or a killed run.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicorn.config import free_port
from alicorn.errors import BadInput, RunError
from alicorn.image import LABEL_CONTENT_PATH, LABEL_HEALTHCHECK
from alicorn.proc import run, which
from alicorn.rollout.model import (
    LABEL_DIGEST,
    LABEL_MODULE,
    LABEL_REPLICA,
    LABEL_ROLE,
    R_STARTING,
    ContentSpec,
    Readiness,
    Replica,
)
from alicorn.run.podman import exposed_port, labels, podman, pull, ulimit_args

__all__ = ["ImageFacts", "Probe", "container_states", "image_exists", "image_facts",
           "module_containers", "podman_replicas", "probe", "pull_image", "remove_containers",
           "remove_image", "remove_replica", "replica_name", "start_existing", "start_replica",
           "stop_replica"]

WEB, CONTENT = "web", "content"
#: Which ALICORN_HOME's module a container is (its modules directory): two homes on one host
#: may each have a module of the same name, and neither may take the other's containers.
LABEL_HOME = "org.alicorn.home"
_PORT_ATTEMPTS = 4


@dataclass(frozen=True)
class ImageFacts:
    """What starting a replica needs to know about its (pulled) image."""

    ref: str
    readiness: Readiness
    container_port: int
    content_path: str


@dataclass(frozen=True)
class Probe:
    """One readiness or health check of one replica."""

    ok: bool
    detail: str                      # "HTTP 200 for GET /", "connection refused for GET /", …
    status: int | None = None        # the HTTP status, when the web server answered


def pull_image(ref: str) -> None:
    """Pull ``ref`` (by digest); podman enforces the host's signature policy on the way."""
    try:
        pull(ref)
    except RunError as e:
        raise RunError(f"cannot pull {ref}: {e.message}", hint=e.hint) from e


def image_exists(ref: str) -> bool:
    """Whether podman's storage has ``ref`` (no registry asked: after a reboot it may be
    down, and a digest pulled once is the same image)."""
    return bool(podman("image", "inspect", "--format", "{{.Id}}", ref, check=False).strip())


def image_facts(ref: str) -> ImageFacts:
    """Readiness (the image's healthcheck label), the container port to publish (the
    readiness port, else the first exposed port, else 80) and the content path."""
    found = labels(ref)
    readiness = Readiness.from_label(found.get(LABEL_HEALTHCHECK))
    port = readiness.port or exposed_port(ref) or 80
    return ImageFacts(ref=ref, readiness=readiness, container_port=port,
                      content_path=found.get(LABEL_CONTENT_PATH, "/var/www/html"))


def replica_name(module: str, digest: str, taken: set[str]) -> str:
    """``alicorn-<module>-<digest12>-<n>`` with the smallest ``n`` not in ``taken``."""
    short = digest.split(":", 1)[-1][:12]
    n = 1
    while f"alicorn-{module}-{short}-{n}" in taken:
        n += 1
    return f"alicorn-{module}-{short}-{n}"


def _labels(module: str, replica: str, digest: str, role: str,
            home: str | None = None) -> list[str]:
    return ["--label", f"{LABEL_MODULE}={module}", "--label", f"{LABEL_REPLICA}={replica}",
            "--label", f"{LABEL_DIGEST}={digest}", "--label", f"{LABEL_ROLE}={role}",
            *(["--label", f"{LABEL_HOME}={home}"] if home else [])]


def start_replica(module: str, digest: str, facts: ImageFacts, *, name: str,
                  content: ContentSpec | None = None, content_image: str | None = None,
                  home: str | None = None) -> Replica:
    """Start one replica of the (pulled, verified) image ``facts.ref``: its content container
    first when ``content_image`` is given, then its web container on a free local port.
    ``home``: the :data:`LABEL_HOME` its containers carry."""
    content = content or ContentSpec()
    containers: list[str] = []
    mount: list[str] = []
    try:
        if content.directory is not None:
            directory = Path(content.directory)
            if not directory.is_dir():
                raise BadInput(f"content directory {directory} does not exist")
            mount = ["--volume", f"{directory.resolve()}:{facts.content_path}:ro"]
        elif content.volume is not None:
            mount = ["--volume", f"{content.volume}:{facts.content_path}:ro"]
        elif content_image is not None:
            holder = f"{name}-content"
            # A created (never started) container is enough: its anonymous volume at the
            # content path is filled from the content image when it is made.
            podman("create", "--name", holder, *_labels(module, name, digest, CONTENT, home),
                   "--volume", facts.content_path, "--entrypoint", "/bin/true",
                   content_image)
            containers.append(holder)
            mount = ["--volumes-from", f"{holder}:ro"]
        last: RunError | None = None
        for _ in range(_PORT_ATTEMPTS):
            host_port = free_port("127.0.0.1")
            try:
                podman("run", "--detach", "--name", name, *ulimit_args(),
                       "--publish", f"127.0.0.1:{host_port}:{facts.container_port}",
                       *_labels(module, name, digest, WEB, home), *mount, facts.ref)
            except RunError as e:
                # Another process took the port between our look and podman's bind.
                if "address already in use" not in e.message.lower():
                    raise
                last = e
                podman("rm", "--force", "--ignore", name, check=False)
                continue
            return Replica(name=name, digest=digest, host_port=host_port,
                           containers=(name, *containers), state=R_STARTING)
        raise RunError(f"cannot start replica {name}: no free local port after "
                       f"{_PORT_ATTEMPTS} tries") from last
    except BaseException:
        for c in (name, *containers):
            podman("rm", "--force", "--ignore", c, check=False)
        raise


def probe(replica: Replica, readiness: Readiness, *, timeout: float | None = None) -> Probe:
    """One check: ``GET path`` must answer 2xx or 3xx within the timeout (redirects are not
    followed), or the readiness command must exit 0 in the web container."""
    limit = readiness.timeout if timeout is None else timeout
    if readiness.command:
        proc = run([which("podman"), "exec", replica.name, *readiness.command], check=False,
                   timeout=limit + 5, what="podman exec")
        ok = proc.returncode == 0
        return Probe(ok, f"command {' '.join(readiness.command)} exited {proc.returncode}")
    what = f"GET {readiness.path}"
    conn = http.client.HTTPConnection("127.0.0.1", replica.host_port, timeout=limit)
    try:
        conn.request("GET", readiness.path, headers={"User-Agent": "alicorn-probe"})
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except ConnectionRefusedError:
        return Probe(False, f"connection refused for {what}")
    except TimeoutError:
        return Probe(False, f"no answer within {limit:g} s for {what}")
    except (OSError, http.client.HTTPException) as e:
        reason = str(e) or type(e).__name__
        return Probe(False, f"{reason} for {what}")
    finally:
        conn.close()
    return Probe(200 <= status < 400, f"HTTP {status} for {what}", status)


def container_states(names: Sequence[str]) -> dict[str, str | None]:
    """podman's state of each container (``running``, ``exited``, ``created`` …; None when
    podman has no such container)."""
    states: dict[str, str | None] = dict.fromkeys(names)
    if not names:
        return states
    out = podman("container", "inspect", "--format", "{{.Name}} {{.State.Status}}",
                 *names, check=False)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in states:
            states[parts[0]] = parts[1]
    return states


def start_existing(replica: Replica) -> None:
    """Start a stopped replica's web container again (after a reboot); its content container
    is never started (a created one holds the volume)."""
    podman("start", replica.name)


def stop_replica(replica: Replica, *, timeout: int = 5) -> None:
    """Stop the replica's web container (kept, for :func:`start_existing`)."""
    podman("stop", "--ignore", "--time", str(timeout), replica.name, check=False)


def remove_containers(names: Sequence[str]) -> None:
    """Remove containers ``names`` (any state; missing ones are no error)."""
    if names:
        # --volumes: a content container's anonymous volume is its replica's alone.
        podman("rm", "--force", "--ignore", "--volumes", "--time", "2", *names, check=False)


def remove_replica(replica: Replica) -> None:
    """Remove every container of the replica (web first: it uses the content's volume)."""
    remove_containers(replica.containers or (replica.name,))


def module_containers(module: str, home: str | None = None) -> list[dict[str, Any]]:
    """podman's containers (any state) that carry ``module``'s label and a replica label;
    with ``home``, only that home's (and those that name no home: made before the label)."""
    out = podman("ps", "--all", "--format", "json", "--filter", f"label={LABEL_MODULE}={module}")
    found: list[dict[str, Any]] = json.loads(out or "[]") or []
    return [c for c in found if LABEL_REPLICA in (c.get("Labels") or {})
            and (home is None or (c.get("Labels") or {}).get(LABEL_HOME, home) == home)]


def podman_replicas(module: str, home: str | None = None) -> list[Replica]:
    """The replicas podman has for ``module`` (of ``home`` only, when given: see
    :func:`module_containers`), from their labels (state: podman's)."""
    by_name: dict[str, dict[str, Any]] = {}
    for c in module_containers(module, home):
        lab = c.get("Labels") or {}
        name = str(lab[LABEL_REPLICA])
        entry = by_name.setdefault(name, {"digest": lab.get(LABEL_DIGEST, ""), "web": None,
                                          "others": [], "port": 0, "state": "missing"})
        cname = str((c.get("Names") or [""])[0])
        if lab.get(LABEL_ROLE) == WEB:
            entry["web"] = cname
            entry["state"] = str(c.get("State", ""))
            for p in c.get("Ports") or []:
                entry["port"] = int(p.get("host_port") or 0)
        else:
            entry["others"].append(cname)
    return [Replica(name=name, digest=e["digest"], host_port=e["port"],
                    containers=tuple([e["web"]] if e["web"] else []) + tuple(e["others"]),
                    state=e["state"])
            for name, e in sorted(by_name.items())]


def remove_image(ref: str) -> list[str]:
    """Remove ``ref`` from podman's storage unless a container still uses its image (so that
    ``dnf list-security --modules`` stops listing an image nothing runs).  Only this name
    goes: an image that other names (tags, other registries) hold stays under those.
    Returns the containers that still use the image (empty: ``ref`` is gone)."""
    image_id = podman("image", "inspect", "--format", "{{.Id}}", ref, check=False).strip()
    if not image_id:
        return []
    users = podman("ps", "--all", "--format", "{{.Names}}", "--filter", f"ancestor={image_id}",
                   check=False).split()
    if users:
        return users
    podman("rmi", ref, check=False)
    return []
