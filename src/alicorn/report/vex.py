"""The CycloneDX 1.6 VEX report: which scanned packages each advisory affects.

Built with cyclonedx-python-lib and checked against the strict 1.6 JSON schema before it
leaves this module (as :mod:`alicorn.chain.sbom` does for SBOMs).

* ``components`` are the scanned packages, ``bom-ref`` = purl.  A purl names one package
  build, so a package found twice (two site-packages, two targets) is one component; the
  places it was found are ``alicorn:path`` properties.
* The target is a component of its own (a container for images and containers, an operating
  system for the host and root filesystems) that depends on its packages: for one target it is
  ``metadata.component``; for several, each is a top-level component.  A target whose scan is
  incomplete carries ``alicorn:complete=false`` and one ``alicorn:error`` per unread database.
* ``vulnerabilities``: one per advisory, ``id`` the advisory id (an advisory may name several
  CVEs; each CVE and other alias is a ``references`` entry with its own source), ``ratings``
  its severity, ``affects`` the bom-refs with the installed version marked ``affected``,
  ``recommendation`` "upgrade NAME to VERSION".

``analysis.state`` is ``exploitable``: the installed version lies in the advisory's affected
set, which is what CycloneDX's VEX guidance maps CSAF/OpenVEX "affected" to.  Alicorn does no
reachability analysis, and the ``detail`` says so; ``in_triage`` would wrongly say nobody has
decided yet, and the decision (upgrade) is already known: ``response`` is ``update`` when a
fixed version exists.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jsonschema
from cyclonedx.model import Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.impact_analysis import (
    ImpactAnalysisAffectedStatus,
    ImpactAnalysisResponse,
    ImpactAnalysisState,
)
from cyclonedx.model.tool import ToolRepository
from cyclonedx.model.vulnerability import (
    BomTarget,
    BomTargetVersionRange,
    Vulnerability,
    VulnerabilityAdvisory,
    VulnerabilityAnalysis,
    VulnerabilityRating,
    VulnerabilityReference,
    VulnerabilityScoreSource,
    VulnerabilitySeverity,
    VulnerabilitySource,
)
from cyclonedx.output.json import BY_SCHEMA_VERSION
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from jsonschema.exceptions import ValidationError
from packageurl import PackageURL

from alicorn import __version__
from alicorn.advisories.model import Advisory
from alicorn.errors import Error
from alicorn.inventory.model import Package
from alicorn.match.model import Finding, Scan
from alicorn.report.interface import Reporter
from alicorn.report.json_ import advisory_url, alias_url, level, ordered, purl_of

CYCLONEDX_VERSION = SchemaVersion.V1_6
PATH_PROPERTY = "alicorn:path"
SOURCE_PROPERTY = "alicorn:source"
ANALYSIS_DETAIL = ("The installed version is in the advisory's affected versions (matched by "
                   "version; no reachability analysis was done).")

_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:alicorn:vex")
_IMAGE_KINDS = {"oci-layout", "oci-archive", "podman-image", "podman-container", "alicorn"}
_SEVERITY = {"Critical": VulnerabilitySeverity.CRITICAL, "Important": VulnerabilitySeverity.HIGH,
             "Moderate": VulnerabilitySeverity.MEDIUM, "Low": VulnerabilitySeverity.LOW,
             "Unknown": VulnerabilitySeverity.UNKNOWN}
_FEEDS = {"updateinfo": "updateinfo", "bodhi": "Bodhi", "osv": "OSV", "rubysec": "RubySec",
          "oval": "OVAL", "debian": "Debian"}


class VexError(Error):
    """The VEX document cannot be written (a value the format rejects)."""


def _source_name(ident: str, fmt: str) -> str:
    upper = ident.upper()
    if upper.startswith("CVE-"):
        return "NVD"
    if upper.startswith("GHSA-"):
        return "GitHub"
    return _FEEDS.get(fmt, fmt or "unknown")


def _source(ident: str, fmt: str, url: str | None) -> VulnerabilitySource:
    return VulnerabilitySource(name=_source_name(ident, fmt), url=XsUri(url) if url else None)


def _target_ref(target: str) -> str:
    return f"urn:alicorn:target:{quote(target, safe='')}"


def _purl(text: str) -> PackageURL | None:
    try:
        return PackageURL.from_string(text)
    except ValueError:
        return None


class _Components:
    """The scanned packages, one component per purl."""

    def __init__(self) -> None:
        self.first: dict[str, Package] = {}
        self.paths: dict[str, set[str]] = {}

    def add(self, purl: str, pkg: Package) -> None:
        self.first.setdefault(purl, pkg)
        if pkg.path:
            self.paths.setdefault(purl, set()).add(pkg.path)

    def build(self) -> dict[str, Component]:
        out = {}
        for purl in sorted(self.first):
            pkg = self.first[purl]
            props = [Property(name=PATH_PROPERTY, value=p) for p in sorted(self.paths.get(purl,
                                                                                         ()))]
            if pkg.type in ("rpm", "deb") and pkg.source:
                props.append(Property(name=SOURCE_PROPERTY, value=pkg.source))
            out[purl] = Component(type=ComponentType.LIBRARY, name=pkg.name,
                                  version=pkg.version, bom_ref=purl, purl=_purl(purl),
                                  properties=props)
        return out


def _target_component(scan: Scan) -> Component:
    inv = scan.inventory
    props = [Property(name="alicorn:kind", value=inv.kind),
             Property(name="alicorn:complete", value="true" if scan.complete else "false")]
    props += [Property(name="alicorn:error", value=e) for e in inv.errors]
    props += [Property(name="alicorn:unchecked",
                       value=f"{u.packages} {u.type} package(s): {u.reason}")
              for u in scan.unchecked]
    if inv.distro is not None:
        props.append(Property(name="alicorn:distro",
                              value=" ".join(x for x in (inv.distro.id, inv.distro.version_id)
                                             if x)))
    kind = ComponentType.CONTAINER if inv.kind in _IMAGE_KINDS \
        else ComponentType.OPERATING_SYSTEM
    return Component(type=kind, name=inv.name or inv.target, version=inv.digest,
                     bom_ref=_target_ref(inv.target), properties=props)


def _vulnerability(advisory: Advisory, findings: list[tuple[str, Finding]]) -> Vulnerability:
    url = advisory_url(advisory)
    source = _source(advisory.id, advisory.format, url)
    others = [a for a in dict.fromkeys((*advisory.cves, *advisory.aliases))
              if a != advisory.id]
    affects: dict[str, set[str]] = {}
    upgrades: dict[str, None] = {}
    for ref, f in findings:
        affects.setdefault(ref, set()).add(f.package.version)
        if f.fixed_version:
            upgrades.setdefault(f"upgrade {f.package.name} to {f.fixed_version}", None)
    return Vulnerability(
        bom_ref=f"urn:alicorn:advisory:{quote(advisory.id, safe='')}",
        id=advisory.id,
        source=source,
        references=[VulnerabilityReference(id=a, source=_source(a, advisory.format,
                                                                alias_url(a)))
                    for a in others],
        ratings=[VulnerabilityRating(source=source, severity=_SEVERITY[level(
            advisory.severity)], method=VulnerabilityScoreSource.OTHER,
            justification=f"the feed's severity: {advisory.severity}"
            if advisory.severity else None)],
        description=advisory.title or None,
        detail=advisory.description or None,
        recommendation="; ".join(upgrades) or None,
        advisories=[VulnerabilityAdvisory(url=XsUri(url), title=advisory.title or None)]
        if url else None,
        published=advisory.issued,
        updated=advisory.updated,
        analysis=VulnerabilityAnalysis(
            state=ImpactAnalysisState.EXPLOITABLE,
            responses=[ImpactAnalysisResponse.UPDATE] if upgrades else None,
            detail=ANALYSIS_DETAIL),
        affects=[BomTarget(ref=ref, versions=[
            BomTargetVersionRange(version=v, status=ImpactAnalysisAffectedStatus.AFFECTED)
            for v in sorted(versions)]) for ref, versions in sorted(affects.items())],
    )


def _check_graph(bom: Bom, known: frozenset[str]) -> bool:
    """What ``Bom.validate`` checks that applies here, in linear time.

    cyclonedx-python-lib's ``Bom.validate`` (deprecated, yet called by every output) registers
    each component's dependency node by a linear search: quadratic, tens of seconds for a host's
    thousands of packages.  :meth:`VexReporter.render` gives every component its node itself,
    so what is left to check is that the graph names only components of this document.
    """
    refs = {d.ref.value for d in bom.dependencies}
    refs.update(r.value for d in bom.dependencies for r in d.dependencies_as_bom_refs())
    unknown = refs - known
    if unknown:
        raise VexError(f"the dependency graph names unknown components: {sorted(unknown)}")
    return True


class VexReporter(Reporter):
    """A CycloneDX 1.6 BOM with vulnerabilities (a VEX document); ``created`` fixes its
    timestamp (default: now), the serial number is derived from the content."""

    name = "vex"

    def __init__(self, *, created: datetime | None = None):
        self.created = created

    def render(self, scans: Sequence[Scan]) -> str:
        components = _Components()
        by_advisory: dict[str, tuple[Advisory, list[tuple[str, Finding]]]] = {}
        members: list[tuple[Component, list[str]]] = []
        for scan in scans:
            inside = []
            for pkg in scan.inventory.packages:
                purl = purl_of(pkg, scan.inventory)
                components.add(purl, pkg)
                inside.append(purl)
            for f in ordered(scan.findings):
                purl = purl_of(f.package, scan.inventory)
                components.add(purl, f.package)  # a finding's package is always a component
                inside.append(purl)
                by_advisory.setdefault(f.advisory.id, (f.advisory, []))[1].append((purl, f))
            members.append((_target_component(scan), sorted(set(inside))))
        built = components.build()
        single = len(members) == 1
        created = self.created or datetime.now(UTC)
        metadata = BomMetaData(
            timestamp=created.astimezone(UTC).replace(microsecond=0),
            tools=ToolRepository(components=[Component(
                type=ComponentType.APPLICATION, name="alicorn", version=__version__)]),
            component=members[0][0] if single else None,
        )
        vulnerabilities = [_vulnerability(adv, fs)
                           for _, (adv, fs) in sorted(by_advisory.items())]
        top = list(built.values()) + ([] if single else [m for m, _ in members])
        serial = uuid.uuid5(_UUID_NAMESPACE, json.dumps(
            [[m.bom_ref.value, p] for m, p in members]
            + [[v.id, [t.ref for t in v.affects]] for v in vulnerabilities]))
        bom = Bom(serial_number=serial, metadata=metadata, components=top,
                  vulnerabilities=vulnerabilities)
        # Bom.register_dependency looks each ref up in a list (quadratic: minutes for a host's
        # thousands of packages); the graph is built here instead: each target depends on its
        # packages, and each package is a node without dependencies of its own.
        bom.dependencies.update(
            [Dependency(ref=m.bom_ref, dependencies=[Dependency(ref=built[p].bom_ref)
                                                     for p in inside]) for m, inside in members]
            + [Dependency(ref=c.bom_ref) for c in built.values()])
        # The library's serialiser knows only the Bom class itself, so the check is put on
        # this instance rather than in a subclass.
        known = frozenset([*built, *(str(m.bom_ref.value) for m, _ in members)])
        setattr(bom, "validate", functools.partial(_check_graph, bom, known))  # noqa: B010
        return _serialise(bom)


def _serialise(bom: Bom) -> str:
    try:
        text = BY_SCHEMA_VERSION[CYCLONEDX_VERSION](bom).output_as_string()
    except Exception as e:  # the library raises plain and its own exceptions alike
        raise VexError(f"cannot write the CycloneDX VEX document: {e}") from e
    document = json.loads(text)
    data = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
    error = _first_error(document, data)
    if error is not None:
        path = "/".join(str(p) for p in getattr(error, "absolute_path", []))
        message = getattr(error, "message", str(error))
        raise VexError(f"the CycloneDX VEX document is invalid: {path}: {message}")
    return data


def _unique_items(validator: Any, unique: Any, instance: Any,
                  schema: Any) -> Iterator[ValidationError]:
    """jsonschema's ``uniqueItems`` compares every pair of objects (quadratic: minutes for a
    host's components); canonical JSON in a set gives the same answer for JSON documents."""
    if unique and validator.is_type(instance, "array"):
        seen = {json.dumps(item, sort_keys=True) for item in instance}
        if len(seen) != len(instance):
            yield ValidationError(f"{instance!r} has non-unique elements")


@functools.cache
def _validator() -> Any:
    """The strict 1.6 schema validator of cyclonedx-python-lib with a linear ``uniqueItems``;
    None when the library's validator is not built the way this expects (then its own, slow,
    validator is used)."""
    inner = getattr(JsonStrictValidator(CYCLONEDX_VERSION), "_validator", None)
    registry = getattr(inner, "_registry", None)
    if inner is None or registry is None:
        return None
    fast = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        type(inner), {"uniqueItems": _unique_items})
    return fast(inner.schema, registry=registry, format_checker=inner.format_checker)


def _first_error(document: Any, data: str) -> Any:
    validator = _validator()
    if validator is None:
        error = JsonStrictValidator(CYCLONEDX_VERSION).validate_str(data)
        return error.data if error is not None else None
    return next(iter(validator.iter_errors(document)), None)
