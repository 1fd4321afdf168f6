"""Running a module with podman, and checking that it answers."""

from __future__ import annotations

import json
import resource
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicorn.errors import BadInput, RunError, ToolError
from alicorn.image import LABEL_CONTENT_PATH, LABEL_HEALTHCHECK
from alicorn.proc import run, which

CONTAINERS_CONF_D = Path("/etc/containers/containers.conf.d")


def ulimit_args() -> list[str]:
    """Explicit ulimits within this process's hard limits.

    podman's defaults (nofile 1048576) fail where the host cannot raise limits
    (no CAP_SYS_RESOURCE): "setrlimit ... Operation not permitted".
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 65536 if nofile == resource.RLIM_INFINITY else min(nofile, 65536)
    # Seen here: nproc=65536 is refused even below a hard limit of 96365; 16384 is plenty for
    # a module and passes.
    nproc = 16384 if nproc == resource.RLIM_INFINITY else min(nproc, 16384)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def podman(*args: str, check: bool = True, timeout: float | None = 600) -> str:
    try:
        return run([which("podman"), *args], check=check, timeout=timeout,
                   what=f"podman {args[0]}").stdout
    except ToolError as e:
        raise RunError(e.message, hint=e.hint) from e


@dataclass(frozen=True)
class Content:
    """Where the web server's content comes from."""

    directory: Path | None = None
    volume: str | None = None
    image: str | None = None
    container: str | None = None

    def args(self, path: str) -> list[str]:
        if self.directory is not None:
            if not self.directory.is_dir():
                raise BadInput(f"content directory {self.directory} does not exist")
            if self.directory.stat().st_mode & 0o005 != 0o005:
                raise BadInput(
                    f"content directory {self.directory} is not readable by other users",
                    hint="web servers serve as an unprivileged user: chmod o+rx the directory")
            return ["--volume", f"{self.directory.resolve()}:{path}:ro"]
        if self.volume is not None:
            return ["--volume", f"{self.volume}:{path}:ro"]
        if self.image is not None:
            return ["--mount", f"type=image,source={self.image},destination={path}"]
        if self.container is not None:
            return ["--volumes-from", f"{self.container}:ro"]
        return []


def pull(ref: str) -> str:
    """Pull ``ref`` and return the local image id."""
    podman("pull", "--quiet", "--tls-verify=false", ref, timeout=1800)
    return podman("image", "inspect", "--format", "{{.Id}}", ref).strip()


def labels(ref: str) -> dict[str, str]:
    out = podman("image", "inspect", "--format", "{{json .Labels}}", ref)
    found: dict[str, str] = json.loads(out) or {}
    return found


def health_path(ref: str) -> str:
    """The path the recipe's HTTP health check asks for ("/" when it has none)."""
    raw = labels(ref).get(LABEL_HEALTHCHECK)
    hc: dict[str, Any] = json.loads(raw) if raw else {}
    path: str = hc.get("http", {}).get("path", "/")
    return path


def exposed_port(ref: str) -> int | None:
    """The first TCP port the image exposes."""
    out = podman("image", "inspect", "--format", "{{json .Config.ExposedPorts}}", ref)
    ports = sorted(int(p.split("/")[0]) for p in (json.loads(out) or {}) if p.endswith("/tcp"))
    return ports[0] if ports else None


def start(ref: str, *, name: str, port: int, address: str = "", container_port: int | None = None,
          content: Content = Content(), replace: bool = False) -> str:
    """Start ``ref`` as container ``name`` publishing ``container_port`` on ``address:port``."""
    pull(ref)
    image_labels = labels(ref)
    if content.image is not None:
        pull(content.image)
    path = image_labels.get(LABEL_CONTENT_PATH, "/var/www/html")
    container_port = container_port or exposed_port(ref) or 80
    args = ["run", "--detach", "--name", name, *ulimit_args(),
            "--publish", f"{address + ':' if address else ''}{port}:{container_port}",
            "--label", "org.alicorn.module=" + name]
    if replace:
        args.append("--replace")
    health = image_labels.get(LABEL_HEALTHCHECK)
    if health:
        hc: dict[str, Any] = json.loads(health)
        if "command" in hc:
            args += ["--health-cmd", json.dumps(hc["command"]),
                     "--health-interval", hc.get("interval", "5s"),
                     "--health-retries", str(hc.get("retries", 3)),
                     "--health-timeout", hc.get("timeout", "3s")]
    args += content.args(path)
    args.append(ref)
    try:
        # With --replace podman first prints the name of the container it removed.
        return podman(*args).strip().splitlines()[-1]
    except RunError as e:
        if "address already in use" in (e.message or "").lower():
            raise RunError(f"port {port} is already in use on this host",
                           hint="choose another with --port") from e
        raise


def wait_http(url: str, *, timeout: float = 30, contains: str | None = None,
              status: int = 200) -> str:
    """Wait until ``url`` answers ``status`` (and holds ``contains``); returns the body."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                body: str = resp.read().decode("utf-8", "replace")
                code = resp.status
        except urllib.error.HTTPError as e:
            body, code = e.read().decode("utf-8", "replace"), e.code
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
            time.sleep(0.2)
            continue
        if code == status and (contains is None or contains in body):
            return body
        last = f"HTTP {code}" + ("" if contains is None or contains in body
                                 else f", body lacks {contains!r}")
        time.sleep(0.2)
    raise RunError(f"{url} did not answer as expected within {timeout:.0f} s: {last}")


def remove(name: str) -> None:
    podman("rm", "--force", "--ignore", name, check=False)


def setup_host() -> list[str]:
    """Write the host's podman defaults that this kind of machine needs; returns what changed."""
    changed = []
    nofile = ulimit_args()[1].split("=")[1]
    nproc = ulimit_args()[3].split("=")[1]
    text = (
        "# Written by alicorn setup-host: this host cannot raise ulimits past its hard limits\n"
        "# and has no systemd, so containers get explicit ulimits, runc and cgroupfs.\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}", "nproc={nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    path = CONTAINERS_CONF_D / "50-alicorn.conf"
    try:
        if not path.exists() or path.read_text() != text:
            CONTAINERS_CONF_D.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(str(path))
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror}",
                       hint="run alicorn setup-host as root") from e
    return changed
