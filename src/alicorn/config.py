"""Where Alicorn keeps its state, and how the embedded default is wired.

Everything lives under ``$ALICORN_HOME`` (default ``~/.local/share/alicorn``): the SQLite
database, build logs, images, caches and the local registry.  ``config.json`` there records
choices made on first start (the registry's port) so image references stay valid.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from alicorn.errors import StoreError


def default_home() -> Path:
    env = os.environ.get("ALICORN_HOME")
    if env:
        return Path(env).expanduser().absolute()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "alicorn"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    registry: str            # host:port of the registry images are pushed to
    registry_managed: bool   # True: Alicorn starts and stops the local registry itself

    # -- paths ---------------------------------------------------------------------------
    @property
    def builds_dir(self) -> Path:
        return self.home / "builds"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def modules_dir(self) -> Path:
        """One directory per deployed module: its proxy's configuration, sockets and log."""
        return self.home / "modules"

    def build_dir(self, build_id: str) -> Path:
        return self.builds_dir / build_id

    def image_dir(self, digest_hex: str) -> Path:
        return self.images_dir / digest_hex


def load_settings(home: Path | None = None) -> Settings:
    """Settings for ``home`` (default: ``$ALICORN_HOME``), creating it on first use."""
    home = home or default_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o755)
        path = home / "config.json"
        stored: dict[str, object] = {}
        if path.exists():
            stored = json.loads(path.read_text())
        changed = False
        if "registry_port" not in stored:
            stored["registry_port"] = free_port()
            changed = True
        if changed:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
            tmp.replace(path)
    except json.JSONDecodeError as e:
        raise StoreError(f"config.json is not valid JSON: {e}", where=str(home / "config.json"),
                         hint="fix or remove the file") from e
    except OSError as e:
        raise StoreError(f"cannot use {home} as ALICORN_HOME: {e.strerror}", where=str(home),
                         hint="set ALICORN_HOME to a writable directory") from e

    external = os.environ.get("ALICORN_REGISTRY")
    registry = external or f"127.0.0.1:{stored['registry_port']}"
    db = os.environ.get("ALICORN_DATABASE_URL") or f"sqlite:///{home / 'alicorn.db'}"
    return Settings(home=home, database_url=db, registry=registry,
                    registry_managed=external is None)
