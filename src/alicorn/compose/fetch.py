"""Reading repository metadata over http(s) or from local files, with bounded size and time."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from alicorn.errors import ComposeError

MAX_METADATA_BYTES = 64 << 20


def fetch_bytes(url: str, *, what: str, timeout: float = 20.0,
                limit: int = MAX_METADATA_BYTES) -> bytes:
    """The bytes at ``url`` (http, https, file or a local path); ComposeError naming ``what``."""
    parsed = urlparse(url)
    try:
        if parsed.scheme in ("", "file"):
            path = Path(parsed.path if parsed.scheme else url)
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        elif parsed.scheme in ("http", "https"):
            req = urllib.request.Request(url, headers={"User-Agent": "alicorn"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = resp.read(limit + 1)
        else:
            raise ComposeError(f"{what}: unsupported URL scheme in {url}")
    except urllib.error.HTTPError as e:
        raise ComposeError(f"{what} is not reachable: {url} answered HTTP {e.code} {e.reason}",
                           hint="check the repository URL and suite in the recipe") from e
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise ComposeError(f"{what} is not reachable: {url}: {reason}",
                           hint="check the repository URL in the recipe and the network") from e
    if len(data) > limit:
        raise ComposeError(f"{what}: {url} is larger than {limit} bytes; refusing it")
    return data


def absolute_url(url: str, base: Path) -> str:
    """``url`` as an absolute URL; plain paths are relative to ``base`` (the recipe's dir)."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https", "file"):
        return url
    path = Path(url)
    if not path.is_absolute():
        path = (base / path).resolve()
    return path.as_uri()
