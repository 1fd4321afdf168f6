"""The read side the API and the pages share: builds (with progress), a build's inputs and
outputs, its verification, logs, advisories and the images they affect, rebuild events,
modules and the transparency log — as JSON-able dicts (datetimes as ISO 8601 text with "Z").

Every function takes the application's :class:`~alicorn.web.app.WebContext`; unknown things
raise NotFound, malformed ones BadInput.

OWNER: helper "api" (issue 7).  The signatures are the contract the pages use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alicorn.store.models import BuildRow
    from alicorn.web.app import WebContext


def build_summary(ctx: WebContext, row: BuildRow) -> dict[str, Any]:
    """{id, state, created_at, started_at, finished_at, recipe_name, recipe_path, digest,
    image, submitter, source {url, ref, commit} | None, step, progress {done, total} | None,
    error, cancel_requested {at, by} | None, trigger}."""
    raise NotImplementedError


def list_builds(ctx: WebContext, *, state: str | None = None, limit: int = 50,
                before: str | None = None) -> list[dict[str, Any]]:
    """Newest first; ``before``: a build id (the page after)."""
    raise NotImplementedError


def build_detail(ctx: WebContext, build_id: str) -> dict[str, Any]:
    """build_summary + argv, recipe {path, digest, content}, commit_url (a web link for the
    commit when the source is on a known forge, else None), inputs, packages [{name, version,
    type, arch, purl, checksum}], outputs {digest, image, ...}, sboms, provenance {digest,
    present}, transparency_log {record_index, inputs_index, record_digest}, checks
    (build_checks), logs [{name, size, digest, complete}]."""
    raise NotImplementedError


def verification(ctx: WebContext, build_id: str) -> dict[str, Any]:
    """{verified, broken (link name) | None, checks [{link, ok, detail}]}: the offline chain
    verification (alicorn.chain.verify, registry=False) of a finished build; for a build that
    has not ended {verified: False, broken: None, checks: [], pending: True}."""
    raise NotImplementedError


def resolve(ctx: WebContext, q: str) -> dict[str, Any]:
    """What a search box was given — an image digest (sha256:… or 64 hex), an image reference
    (HOST/NAME[:TAG|@DIGEST], asked of the registry for a tag), a build id or id prefix — as
    {build_id, digest}; NotFound naming what was searched otherwise."""
    raise NotImplementedError


def log_file(ctx: WebContext, build_id: str, name: str) -> Path:
    """The file of a build's log ``name`` (one of model.LOG_NAMES); NotFound for any other
    name (no path from the request reaches the disk) or a log not written (yet)."""
    raise NotImplementedError


def read_log(ctx: WebContext, build_id: str, name: str, *, offset: int = 0,
             limit: int = 1 << 20) -> tuple[bytes, int, bool]:
    """Up to ``limit`` bytes of the log from ``offset``: (data, next offset, complete) —
    complete when the build has ended and nothing is left after next offset."""
    raise NotImplementedError


def advisories(ctx: WebContext, *, q: str | None = None, severity: str | None = None,
               limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """{total, items [{id, title, severity, cves, ecosystems, published, packages,
    affected (number of this store's images it affects)}]}."""
    raise NotImplementedError


def advisory(ctx: WebContext, advisory_id: str) -> dict[str, Any]:
    """One advisory: id, title, severity, cves, bugzillas, references, packages (with fixed
    versions), description, and affected [{digest, build_id, recipe_name, image, packages
    [{name, installed, fixed}]}]."""
    raise NotImplementedError


def events(ctx: WebContext, *, state: str | None = None, limit: int = 50
           ) -> list[dict[str, Any]]:
    """Rebuild events, newest first, as `alicorn events --json` shows them."""
    raise NotImplementedError


def event(ctx: WebContext, event_id: str) -> dict[str, Any]:
    """One event with its rebuilds: [{image, state, build_id, digest, previous_digest,
    tests, gate, error}] (tests/gate: the rebuild's checks results)."""
    raise NotImplementedError


def modules(ctx: WebContext) -> list[dict[str, Any]]:
    """[{module, digest, image, port, replicas, state, updated_at}]."""
    raise NotImplementedError


def module(ctx: WebContext, name: str) -> dict[str, Any]:
    """As `alicorn status MODULE --json`: replicas, history [{digest, at, result, from,
    reason}], operation, events."""
    raise NotImplementedError


def log_heads(ctx: WebContext, *, limit: int = 50) -> dict[str, Any]:
    """{size, latest (signed tree head JSON) | None, heads [...] newest first}."""
    raise NotImplementedError


def log_entry(ctx: WebContext, index: int, *, tree_size: int | None = None) -> dict[str, Any]:
    """{index, kind, subject, data (base64), leaf_hash, head, inclusion_proof [hex]} against
    the newest signed head covering it (or ``tree_size``)."""
    raise NotImplementedError


def log_consistency(ctx: WebContext, old_size: int, new_size: int | None = None
                    ) -> dict[str, Any]:
    """{old_size, new_size, proof [hex]}."""
    raise NotImplementedError
