"""From advisories to the images to rebuild, parents first.

The images an advisory makes stale are the *current published* images (per recipe name, the
newest finished build that was pushed) holding a package it names at a vulnerable version —
found through the SBOM index of every build (:func:`alicorn.match.affected.affected_images`,
the same matcher a scan uses) — and every image layered on one of them, transitively.  A
layered build records the image it was built on: ``BuildRow.base_digest`` and
``inputs["base"]`` (``name``, ``digest``, ``build_id``); an image is a child of another when
its current build's base digest is the other's current digest, or its base name is the
other's recipe name.

Everything is read with a few set-based queries (the current build of every recipe with its
base, the candidate packages of the advisories' names), so planning over 10k images costs
milliseconds per query, not one query per image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from alicorn.advisories.model import Advisory
from alicorn.events.model import Plan, PlannedRebuild
from alicorn.match.affected import affected_images
from alicorn.match.model import Finding
from alicorn.store.db import session_factory
from alicorn.store.models import BuildRow, PackageRow

__all__ = ["CurrentImage", "current_images", "plan"]

_CHUNK = 500


@dataclass(frozen=True)
class CurrentImage:
    """The published build an image name stands for now, and what it is layered on."""

    name: str
    build_id: str
    digest: str
    base_digest: str | None
    base_name: str | None


def current_images(session: Session) -> dict[str, CurrentImage]:
    """Per recipe name, its newest done, published build (ties: the larger build id)."""
    published = and_(BuildRow.state == "done", BuildRow.published.is_(True),
                     BuildRow.digest.is_not(None), BuildRow.recipe_name.is_not(None))
    newest = (select(BuildRow.recipe_name.label("name"),
                     func.max(BuildRow.created_at).label("created"))
              .where(published).group_by(BuildRow.recipe_name).subquery())
    base_name = BuildRow.inputs["base"]["name"].as_string()
    query = (select(BuildRow.id, BuildRow.recipe_name, BuildRow.digest, BuildRow.base_digest,
                    base_name.label("base_name"))
             .join(newest, and_(BuildRow.recipe_name == newest.c.name,
                                BuildRow.created_at == newest.c.created))
             .where(published))
    out: dict[str, CurrentImage] = {}
    for row in session.execute(query):
        seen = out.get(row.recipe_name)
        if seen is not None and seen.build_id > row.id:
            continue
        out[row.recipe_name] = CurrentImage(
            name=row.recipe_name, build_id=row.id, digest=row.digest,
            base_digest=row.base_digest, base_name=row.base_name)
    return out


def plan(database_url: str, advisories: Sequence[Advisory], *,
         exclude_images: Iterable[str] = ()) -> Plan:
    """What ``advisories`` need rebuilt: one :class:`PlannedRebuild` per image (with every
    advisory id it must fix), parents before children, and per advisory id the images it
    affects or, for one that affects none, why it is skipped.

    ``exclude_images`` (recipe names) are left out, and so is whatever is layered only on them:
    the runner excludes images it cannot rebuild now.
    """
    excluded = set(exclude_images)
    live = [a for a in advisories if a.withdrawn is None]
    hits = affected_images(database_url, live, latest_only=False) if live else []
    with session_factory(database_url)() as session:
        current = current_images(session)

        # The directly affected images: their current published build is among the hits.
        findings: dict[str, list[Finding]] = defaultdict(list)
        for hit in hits:
            if hit.recipe_name is None:
                continue
            cur = current.get(hit.recipe_name)
            if cur is None or cur.build_id != hit.build_id:
                continue
            findings[hit.recipe_name].extend(hit.findings)
        roots = {name for name in findings if name not in excluded}

        # Layering: parent image name → the images built on it (by digest or by name).
        by_digest = {c.digest: c.name for c in current.values()}
        children: dict[str, set[str]] = defaultdict(set)
        parents: dict[str, set[str]] = defaultdict(set)
        for c in current.values():
            for parent in (by_digest.get(c.base_digest or ""), c.base_name):
                if parent and parent != c.name and parent in current:
                    children[parent].add(c.name)
                    parents[c.name].add(parent)

        # Everything reachable from the roots (not through an excluded image).
        chosen = set(roots)
        frontier = sorted(roots)
        while frontier:
            nxt = []
            for name in frontier:
                for child in sorted(children.get(name, ())):
                    if child not in chosen and child not in excluded:
                        chosen.add(child)
                        nxt.append(child)
            frontier = nxt

        order = _parents_first(chosen, parents)
        placed: set[str] = set()
        rebuilds = []
        for name in order:
            cur = current[name]
            in_plan = sorted(p for p in parents.get(name, ()) if p in placed)
            parent = in_plan[0] if in_plan else None
            own = findings.get(name, [])
            ids = tuple(dict.fromkeys(sorted(f.advisory.id for f in own)))
            reasons = [_finding_text(f) for f in _unique(own)]
            if parent is not None:
                reasons.append(f"layered on {parent}")
            rebuilds.append(PlannedRebuild(image=name, old_build_id=cur.build_id,
                                           old_digest=cur.digest, advisories=ids,
                                           parent=parent, reason="; ".join(reasons)))
            placed.add(name)

        # Which images each advisory needs rebuilt: those it affects and their descendants.
        descendants = _descendants(order, children, chosen)
        affects: dict[str, tuple[str, ...]] = {}
        position = {name: i for i, name in enumerate(order)}
        direct: dict[str, set[str]] = defaultdict(set)
        for name in roots:
            for f in findings[name]:
                direct[f.advisory.id].add(name)
        for advisory_id, names in direct.items():
            reach = set(names)
            for name in names:
                reach |= descendants.get(name, set())
            affects[advisory_id] = tuple(sorted(reach, key=position.__getitem__))

        skipped: dict[str, str] = {}
        unaffected = [a for a in advisories if a.id not in affects]
        if unaffected:
            holding = _names_held(session, {n for a in unaffected for n in _looked_for(a)},
                                  {c.build_id for c in current.values()})
            for a in unaffected:
                skipped.setdefault(a.id, _skip_reason(a, holding, findings, excluded))
    return Plan(rebuilds=tuple(rebuilds), affects=affects, skipped=skipped)


def _parents_first(chosen: set[str], parents: dict[str, set[str]]) -> list[str]:
    """``chosen`` in an order where every image comes after its parents in ``chosen``
    (Kahn's algorithm, by name among equals; a cycle, which layering cannot make, is broken
    by name rather than looping)."""
    waiting = {name: {p for p in parents.get(name, ()) if p in chosen} for name in chosen}
    order: list[str] = []
    while waiting:
        ready = sorted(name for name, ps in waiting.items() if not ps)
        if not ready:
            ready = [min(waiting)]
        for name in ready:
            del waiting[name]
            order.append(name)
        for ps in waiting.values():
            ps.difference_update(ready)
    return order


def _descendants(order: list[str], children: dict[str, set[str]], chosen: set[str]
                 ) -> dict[str, set[str]]:
    """Per image in ``order``, every chosen image layered on it, transitively."""
    out: dict[str, set[str]] = {}
    for name in reversed(order):
        below: set[str] = set()
        for child in children.get(name, ()):
            if child in chosen and child != name:
                below.add(child)
                below |= out.get(child, set())
        out[name] = below
    return out


def _unique(findings: Iterable[Finding]) -> list[Finding]:
    seen: dict[tuple[str, str, str | None], Finding] = {}
    for f in findings:
        seen.setdefault((f.advisory.id, f.package.name, f.fixed_version), f)
    return sorted(seen.values(), key=lambda f: (f.package.name, f.advisory.id))


def _finding_text(f: Finding) -> str:
    fixed = f.fixed_version or "no fixed version"
    return f"{f.package.name} {f.package.version} < {fixed} ({f.advisory.id})"


def _looked_for(advisory: Advisory) -> list[str]:
    """The package names an advisory is matched by, as a person reads them."""
    names = [p.name for p in advisory.packages if p.name]
    names += [a.name for a in advisory.affected if a.name]
    return sorted(set(names))


def _names_held(session: Session, names: set[str], build_ids: set[str]) -> set[str]:
    """Which of ``names`` some current image holds (as a package or source package name)."""
    if not names or not build_ids:
        return set()
    held: set[str] = set()
    ordered = sorted(names)
    for i in range(0, len(ordered), _CHUNK):
        chunk = ordered[i:i + _CHUNK]
        query = (select(PackageRow.build_id, PackageRow.name, PackageRow.source)
                 .where(or_(PackageRow.name.in_(chunk), PackageRow.source.in_(chunk))))
        for row in session.execute(query):
            if row.build_id not in build_ids:
                continue
            if row.name in names:
                held.add(row.name)
            if row.source in names:
                held.add(row.source)
    return held


def _skip_reason(advisory: Advisory, holding: set[str], findings: dict[str, list[Finding]],
                 excluded: set[str]) -> str:
    if advisory.withdrawn is not None:
        return "the advisory was withdrawn"
    names = _looked_for(advisory)
    if not names:
        return "the advisory names no package"
    only_excluded = sorted(n for n in excluded
                           if any(f.advisory.id == advisory.id for f in findings.get(n, ())))
    if only_excluded:
        return f"only {', '.join(only_excluded)} is affected, and it is left out of this plan"
    listed = ", ".join(names)
    held = sorted(set(names) & holding)
    if not held:
        return f"no published image contains {listed}"
    return (f"no published image holds a vulnerable version of {', '.join(held)} "
            "(they already have the fixed version)")
