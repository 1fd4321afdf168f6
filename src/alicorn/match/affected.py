"""From an advisory to the images it affects: the reverse of a scan, over every Alicorn build.

A scan asks "what in this image needs an update?"; a rebuild service asks the other way round
when an advisory lands: "which of our images carry a package it names?".  Every finished build
recorded its resolved package set (``build_packages``), indexed by name; so the lookup is one
indexed query for the names the advisories mention (rpm binary names, Debian *source* names,
upstream names), then the same matcher a scan uses on just those candidate packages, so both
directions give the same answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from packaging.utils import canonicalize_name
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from alicorn.advisories.model import Advisory
from alicorn.inventory.model import Distro, Inventory, Package
from alicorn.inventory.rpmdb import source_name
from alicorn.match.index import AdvisoryIndex, affected_key
from alicorn.match.matcher import match
from alicorn.match.model import Finding
from alicorn.store.db import session_factory
from alicorn.store.models import BuildRow, PackageRow

__all__ = ["AffectedImage", "affected_images", "package_from_row"]

# Family of an indexed Affected entry → the build_packages type it names.
_FAMILY_TYPE = {"pypi": "pypi", "gem": "gem", "maven": "maven", "npm": "npm", "deb": "deb"}
# SQLite caps bound parameters per statement; stay well below it.
_CHUNK = 500


@dataclass(frozen=True)
class AffectedImage:
    """An image an advisory applies to: the build that made it and the findings inside."""

    build_id: str
    digest: str
    image_ref: str | None
    recipe_name: str | None
    findings: tuple[Finding, ...]


def affected_images(database_url: str, advisories: Sequence[Advisory], *,
                    latest_only: bool = True) -> list[AffectedImage]:
    """Every finished build whose image one of ``advisories`` applies to.

    ``latest_only`` keeps, per recipe name, only its newest finished build (the image that is
    current, the one a rebuild replaces); otherwise every build with an image.  Ordered by
    recipe name, then build time, newest first.
    """
    if not advisories:
        return []
    index = AdvisoryIndex(advisories)
    rpm_names, deb_sources, upstream = _names(advisories)
    clauses = []
    for chunk in _chunks(sorted(rpm_names)):
        clauses.append(and_(PackageRow.type == "rpm", PackageRow.name.in_(chunk)))
    for chunk in _chunks(sorted(deb_sources)):
        clauses.append(and_(PackageRow.type == "deb",
                            or_(PackageRow.source.in_(chunk), PackageRow.name.in_(chunk))))
    for kind, names in sorted(upstream.items()):
        for chunk in _chunks(sorted(names)):
            clauses.append(and_(PackageRow.type == kind, PackageRow.name.in_(chunk)))
    if not clauses:
        return []
    columns = (PackageRow.build_id, PackageRow.type, PackageRow.name, PackageRow.version,
               PackageRow.arch, PackageRow.source, PackageRow.purl)
    builds: dict[str, Any] = {}
    rows_by_build: dict[str, list[Any]] = defaultdict(list)
    with session_factory(database_url)() as session:
        for clause in clauses:
            query = (select(*columns, BuildRow.recipe_name, BuildRow.recipe_path,
                            BuildRow.created_at, BuildRow.digest, BuildRow.image_ref)
                     .join(BuildRow, BuildRow.id == PackageRow.build_id)
                     .where(BuildRow.state == "done", BuildRow.digest.is_not(None), clause))
            for row in session.execute(query):
                builds[row.build_id] = row
                rows_by_build[row.build_id].append(row)
        if latest_only:
            current = _current_builds(session, builds.values())
            rows_by_build = defaultdict(list, {b: r for b, r in rows_by_build.items()
                                               if b in current})
    out = []
    for build_id, rows in rows_by_build.items():
        build = builds[build_id]
        packages = tuple(package_from_row(r) for r in rows)
        inventory = Inventory(target=build.digest or build_id, kind="alicorn",
                              packages=packages, distro=_distro(rows), digest=build.digest,
                              name=build.image_ref)
        findings = match(inventory, index)
        if findings:
            out.append(AffectedImage(build_id=build_id, digest=build.digest or "",
                                     image_ref=build.image_ref,
                                     recipe_name=build.recipe_name, findings=findings))
    out.sort(key=lambda a: (a.recipe_name or "", -builds[a.build_id].created_at.timestamp()))
    return out


def _current_builds(session: Session, candidates: Iterable[Any]) -> set[str]:
    """Of the builds of the candidates' recipes, the newest finished one of each recipe."""
    names = {c.recipe_name for c in candidates if c.recipe_name}
    paths = {c.recipe_path for c in candidates if not c.recipe_name}
    current: dict[str, tuple[Any, str]] = {}
    for column, keys in ((BuildRow.recipe_name, names), (BuildRow.recipe_path, paths)):
        for chunk in _chunks(sorted(keys)):
            query = (select(BuildRow.id, column.label("key"), BuildRow.created_at)
                     .where(BuildRow.state == "done", BuildRow.digest.is_not(None),
                            column.in_(chunk)))
            if column is BuildRow.recipe_path:
                query = query.where(BuildRow.recipe_name.is_(None))
            for row in session.execute(query):
                best = current.get(row.key)
                if best is None or (row.created_at, row.id) > best:
                    current[row.key] = (row.created_at, row.id)
    return {build_id for _, build_id in current.values()}


def _names(advisories: Iterable[Advisory]) -> tuple[set[str], set[str], dict[str, set[str]]]:
    rpm: set[str] = set()
    deb: set[str] = set()
    upstream: dict[str, set[str]] = defaultdict(set)
    for advisory in advisories:
        rpm.update(p.name for p in advisory.packages if p.name)
        for affected in advisory.affected:
            key = affected_key(affected)
            if key is None:
                continue
            family, name = key
            if family == "deb":
                deb.add(name)
            else:
                upstream[_FAMILY_TYPE[family]].add(name)
                if family == "pypi":
                    # build_packages keeps names as the dist-info spelled them.
                    upstream["pypi"].update({affected.name, name.replace("-", "_")})
    return rpm, deb, upstream


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _distro(rows: Sequence[Any]) -> Distro | None:
    """The distribution named by the packages' purls (``distro=debian-12``, ``fedora-39``)."""
    for row in rows:
        distro = parse_qs(urlsplit(row.purl).query).get("distro")
        if distro:
            ident, _, version = distro[0].rpartition("-")
            if ident:
                return Distro(id=ident, version_id=version or None)
            return Distro(id=version, version_id=None)
    return None


def package_from_row(row: Any) -> Package:
    """A build's recorded package (a :class:`PackageRow` or a row with its columns) as the
    inventory value a scan would have found."""
    if row.type == "rpm":
        epoch_text, _, rest = row.version.rpartition(":")
        release = rest.rpartition("-")[2]
        epoch = int(epoch_text) if epoch_text.isdigit() else None
        version = f"{epoch}:{rest}" if epoch else rest
        source = source_name(row.source)
        return Package(type="rpm", name=row.name, version=version, arch=row.arch or None,
                       epoch=epoch, release=release or None, source=source, purl=row.purl)
    if row.type == "deb":
        epoch_text, sep, _ = row.version.partition(":")
        epoch = int(epoch_text) if sep and epoch_text.isdigit() else None
        return Package(type="deb", name=row.name, version=row.version, arch=row.arch or None,
                       epoch=epoch, source=row.source or row.name, purl=row.purl)
    name = str(canonicalize_name(row.name)) if row.type == "pypi" else row.name
    return Package(type=row.type, name=name, version=row.version, purl=row.purl)
