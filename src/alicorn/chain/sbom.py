"""SBOMs for an image: SPDX 2.3 JSON and CycloneDX 1.6 JSON, from the image's package list.

Both documents are built with the formats' own libraries (spdx-tools, cyclonedx-python-lib),
checked with those libraries' validators before they leave this module, and serialised with
sorted keys.  Equal inputs give equal bytes: the creation time is the caller's, the SPDX
namespace and the CycloneDX serial number are uuid5 of the image digest, packages are sorted,
and element ids are derived from each package's purl.

The image is the root: SPDX says the document DESCRIBES an image package (checksum = manifest
digest, purl ``pkg:oci/<name>@sha256%3A<hex>``) which CONTAINS every package; CycloneDX puts
the same image in ``metadata.component`` (type container) and lists every package in its
``dependsOn``.  A deb's or rpm's source package goes in SPDX ``sourceInfo`` ("built package
from: <source>", the wording Trivy reads) and in the CycloneDX property ``alicorn:source``.

:func:`packages_from_spdx` and :func:`packages_from_cyclonedx` read the packages back, for
``verify`` to compare an SBOM with the build record.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import BY_SCHEMA_VERSION
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator, JsonValidator
from packageurl import PackageURL
from spdx_tools.spdx.jsonschema.document_converter import DocumentConverter
from spdx_tools.spdx.model.actor import Actor, ActorType
from spdx_tools.spdx.model.checksum import Checksum, ChecksumAlgorithm
from spdx_tools.spdx.model.document import CreationInfo, Document
from spdx_tools.spdx.model.package import (
    ExternalPackageRef,
    ExternalPackageRefCategory,
    PackagePurpose,
)
from spdx_tools.spdx.model.package import Package as SpdxPackage
from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
from spdx_tools.spdx.parser.error import SPDXParsingError
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.validation.validation_message import ValidationMessage

from alicorn import __version__
from alicorn.compose.interface import Package
from alicorn.digest import Digest
from alicorn.errors import Error

SPDX_VERSION = "SPDX-2.3"
CYCLONEDX_VERSION = SchemaVersion.V1_6
SOURCE_PROPERTY = "alicorn:source"
SOURCE_INFO_PREFIX = "built package from: "
DEFAULT_TOOL = f"alicorn-{__version__}"

# Fixed namespace for the uuid5 of documents: the same image digest always names the same
# document, and no other generator's uuid5 collides with ours.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:alicorn:sbom")
_DOCUMENT_ID = "SPDXRef-DOCUMENT"
_IMAGE_ID = "SPDXRef-Image"
_SHA256_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_SPDX_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")

# purl namespace -> who supplies the distribution's packages.  The rpm composer falls back to
# the namespace "alicorn" when the vendor is unknown: that supplier is NOASSERTION, not us.
_SUPPLIERS = {
    "debian": "Debian",
    "ubuntu": "Canonical",
    "fedora": "Fedora Project",
    "redhat": "Red Hat",
    "centos": "CentOS Project",
    "rocky": "Rocky Enterprise Software Foundation",
    "almalinux": "AlmaLinux OS Foundation",
    "opensuse": "openSUSE Project",
    "suse": "SUSE",
    "amazon": "Amazon",
    "oracle": "Oracle",
    "mageia": "Mageia",
}
_UNKNOWN_SUPPLIERS = {"", "alicorn"}

PackageRow = tuple[str, str, str, str]
"""What the parsers give back for one package: (name, version, type, purl)."""


class SbomError(Error):
    """An SBOM cannot be written (a package the format rejects) or read back."""


# -- the shared view of the inputs --------------------------------------------------------------

class _VerbatimPurl(PackageURL):
    """A PackageURL that serialises as the exact text it was parsed from.

    packageurl-python re-encodes on output (``1%3A2.36`` becomes ``1:2.36``), which would make
    the CycloneDX purls differ, as strings, from the SPDX ones and from the build record.
    """

    text: str

    def to_string(self, encode: bool | None = True) -> str:
        return self.text


def _parse_purl(text: str, what: str) -> _VerbatimPurl:
    try:
        purl = _VerbatimPurl.from_string(text)
    except ValueError as e:
        raise SbomError(f"{what} has an invalid purl {text!r}: {e}",
                        hint="the composer that listed it must give a package URL") from e
    purl.text = text
    return purl


def _label(pkg: Package) -> str:
    return f"{pkg.type} package {pkg.name} {pkg.version}"


class _Entry:
    """One package as both documents show it."""

    def __init__(self, pkg: Package):
        self.pkg = pkg
        if not pkg.purl:
            raise SbomError(f"{_label(pkg)} has no purl",
                            hint="the composer that listed it must give a package URL")
        self.purl = _parse_purl(pkg.purl, _label(pkg))
        self.sha256: str | None = None
        if pkg.checksum is not None:
            m = _SHA256_RE.fullmatch(pkg.checksum)
            if not m:
                raise SbomError(f"{_label(pkg)} has checksum {pkg.checksum!r}, "
                                "not sha256:<64 lowercase hex digits>")
            self.sha256 = m.group(1)
        # The purl is unique in the list (checked by _entries), so its hash makes a unique id;
        # the name part is only for people reading the document.
        tag = hashlib.sha256(pkg.purl.encode()).hexdigest()[:16]
        self.spdx_id = f"SPDXRef-Package-{_spdx_safe(pkg.type)}-{_spdx_safe(pkg.name)}-{tag}"
        self.supplier: str | None = None
        if pkg.type in ("deb", "rpm"):
            ns = self.purl.namespace or ""
            if ns not in _UNKNOWN_SUPPLIERS:
                self.supplier = _SUPPLIERS.get(ns, ns)
        self.source = pkg.source if pkg.type in ("deb", "rpm") and pkg.source else None


def _spdx_safe(text: str) -> str:
    return _SPDX_ID_UNSAFE.sub("-", text).strip("-") or "x"


def _entries(packages: Iterable[Package]) -> list[_Entry]:
    unique = sorted(set(packages),
                    key=lambda p: (p.type, p.name, p.version, p.arch, p.purl,
                                   p.source or "", p.checksum or ""))
    entries = [_Entry(p) for p in unique]
    seen: dict[str, Package] = {}
    for e in entries:
        other = seen.setdefault(e.pkg.purl, e.pkg)
        if other is not e.pkg:
            raise SbomError(f"two different packages share the purl {e.pkg.purl}: {other} "
                            f"and {e.pkg}", hint="the package list is inconsistent; this is a "
                            "bug in the composer that produced it")
    return entries


class _Image:
    def __init__(self, name: str, digest: str):
        if not name.strip():
            raise SbomError("the image has no name")
        try:
            self.digest = Digest.parse(digest)
        except ValueError as e:
            raise SbomError(f"image {name}: {e}") from e
        self.name = name
        self.purl_text = _oci_purl(name, self.digest)
        self.purl = _parse_purl(self.purl_text, f"image {name}")


def _oci_purl(image_name: str, digest: Digest) -> str:
    """``pkg:oci/<name>@sha256%3A<hex>`` (purl-spec oci type: the name is the last path segment
    lowercased; where it came from and its tag are qualifiers)."""
    ref = image_name.split("@", 1)[0]
    repo, tag = ref, ""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
    name = repo.rsplit("/", 1)[-1].lower()
    qualifiers = {}
    if "/" in repo:
        qualifiers["repository_url"] = repo
    if tag:
        qualifiers["tag"] = tag
    text = f"pkg:oci/{quote(name, safe='')}@{quote(digest.value, safe='')}"
    if qualifiers:
        text += "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in sorted(qualifiers.items()))
    return text


def _moment(created: datetime) -> datetime:
    """UTC, whole seconds (SPDX has no fractions; CycloneDX then shows the same instant)."""
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created.astimezone(UTC).replace(microsecond=0)


def _document_uuid(kind: str, image: _Image) -> uuid.UUID:
    return uuid.uuid5(_UUID_NAMESPACE, f"{kind} {image.digest.value}")


def _dumps(document: Any) -> bytes:
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


# -- SPDX ---------------------------------------------------------------------------------------

def spdx_json(image_name: str, image_digest: str, packages: Sequence[Package], *,
              created: datetime, tool: str = DEFAULT_TOOL) -> bytes:
    """The image's SPDX 2.3 JSON document, validated by spdx-tools; raises :class:`SbomError`
    naming the package when a package cannot be expressed."""
    image = _Image(image_name, image_digest)
    entries = _entries(packages)
    try:
        document = _spdx_document(image, entries, _moment(created), tool)
    except TypeError as e:  # spdx-tools type-checks every constructor argument
        raise SbomError(f"cannot build the SPDX document for {image_name}: {e}") from e
    converter = DocumentConverter()  # type: ignore[no-untyped-call]
    data = _dumps(converter.convert(document))
    # Validate what a reader will parse, not only the model it was written from.  (Once: the
    # validator is quadratic in the number of packages.)
    _check_spdx(_parse_spdx(data), entries, image_name)
    return data


def _spdx_document(image: _Image, entries: list[_Entry], created: datetime,
                   tool: str) -> Document:
    info = CreationInfo(
        spdx_version=SPDX_VERSION,
        spdx_id=_DOCUMENT_ID,
        name=image.name,
        document_namespace=_document_uuid("spdx", image).urn,
        creators=[Actor(ActorType.TOOL, tool)],
        created=created,
    )
    root = SpdxPackage(
        spdx_id=_IMAGE_ID,
        name=image.name,
        download_location=SpdxNoAssertion(),
        version=image.digest.value,
        supplier=SpdxNoAssertion(),
        files_analyzed=False,
        checksums=[Checksum(ChecksumAlgorithm.SHA256, image.digest.hex)],
        external_references=[_purl_ref(image.purl_text)],
        primary_package_purpose=PackagePurpose.CONTAINER,
    )
    packages = [root]
    relationships = [Relationship(_DOCUMENT_ID, RelationshipType.DESCRIBES, _IMAGE_ID)]
    for e in entries:
        packages.append(SpdxPackage(
            spdx_id=e.spdx_id,
            name=e.pkg.name,
            download_location=SpdxNoAssertion(),
            version=e.pkg.version,
            supplier=Actor(ActorType.ORGANIZATION, e.supplier) if e.supplier
            else SpdxNoAssertion(),
            files_analyzed=False,
            checksums=[Checksum(ChecksumAlgorithm.SHA256, e.sha256)] if e.sha256 else [],
            source_info=SOURCE_INFO_PREFIX + e.source if e.source else None,
            external_references=[_purl_ref(e.pkg.purl)],
        ))
        relationships.append(Relationship(_IMAGE_ID, RelationshipType.CONTAINS, e.spdx_id))
    return Document(info, packages=packages, relationships=relationships)


def _purl_ref(purl: str) -> ExternalPackageRef:
    return ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl)


def _check_spdx(document: Document, entries: list[_Entry], image_name: str) -> None:
    messages = validate_full_spdx_document(document, SPDX_VERSION)
    if not messages:
        return
    by_id = {e.spdx_id: _label(e.pkg) for e in entries}
    by_id[_IMAGE_ID] = f"image {image_name}"

    def where(m: ValidationMessage) -> str:
        for ref in (m.context.spdx_id, m.context.parent_id):
            if ref in by_id:
                return by_id[ref]
        return "the document"

    first = messages[0]
    more = f" (and {len(messages) - 1} more problems)" if len(messages) > 1 else ""
    raise SbomError(f"the SPDX document for {image_name} is invalid: {where(first)}: "
                    f"{first.validation_message}{more}")


def _parse_spdx(data: bytes) -> Document:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise SbomError(f"the SPDX document is not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise SbomError("the SPDX document is not a JSON object")
    try:
        return JsonLikeDictParser().parse(raw)  # type: ignore[no-untyped-call]
    except SPDXParsingError as e:
        problems = "; ".join(e.get_messages())  # type: ignore[no-untyped-call]
        raise SbomError(f"the SPDX document cannot be parsed: {problems}") from e


def packages_from_spdx(data: bytes) -> list[PackageRow]:
    """The packages an SPDX JSON document says its described element contains, as sorted
    (name, version, type, purl) rows; raises :class:`SbomError` when the document is not
    valid SPDX."""
    document = _parse_spdx(data)
    messages = validate_full_spdx_document(document)
    if messages:
        raise SbomError(f"the SPDX document is invalid: {messages[0].validation_message}")
    described = set()
    for r in document.relationships:
        if r.relationship_type == RelationshipType.DESCRIBES \
                and r.spdx_element_id == _DOCUMENT_ID:
            described.add(str(r.related_spdx_element_id))
        elif r.relationship_type == RelationshipType.DESCRIBED_BY \
                and str(r.related_spdx_element_id) == _DOCUMENT_ID:
            described.add(r.spdx_element_id)
    if not described and len(document.packages) == 1:
        described.add(document.packages[0].spdx_id)  # SPDX 2.3: a lone package is described
    if not described:
        raise SbomError("the SPDX document describes nothing (no DESCRIBES relationship)")
    contained = set()
    for r in document.relationships:
        if r.relationship_type == RelationshipType.CONTAINS and r.spdx_element_id in described:
            contained.add(str(r.related_spdx_element_id))
        elif r.relationship_type == RelationshipType.CONTAINED_BY \
                and str(r.related_spdx_element_id) in described:
            contained.add(r.spdx_element_id)
    rows = []
    for p in document.packages:
        if p.spdx_id not in contained:
            continue
        purl = next((ref.locator for ref in p.external_references
                     if ref.reference_type == "purl"), "")
        rows.append((p.name, p.version or "", _purl_type(purl), purl))
    return sorted(rows)


def _purl_type(purl: str) -> str:
    try:
        return PackageURL.from_string(purl).type or ""
    except ValueError:
        return ""


# -- CycloneDX ----------------------------------------------------------------------------------

def cyclonedx_json(image_name: str, image_digest: str, packages: Sequence[Package], *,
                   created: datetime, tool: str = DEFAULT_TOOL) -> bytes:
    """The image's CycloneDX 1.6 JSON document, validated against the strict 1.6 schema;
    raises :class:`SbomError` naming the package when a package cannot be expressed."""
    image = _Image(image_name, image_digest)
    entries = _entries(packages)
    bom = _bom(image, entries, _moment(created), tool)
    try:
        text = BY_SCHEMA_VERSION[CYCLONEDX_VERSION](bom).output_as_string()
    except Exception as e:  # the library raises plain and its own exceptions alike
        raise SbomError(f"cannot write the CycloneDX document for {image_name}: {e}") from e
    document = json.loads(text)
    data = _dumps(document)
    error = JsonStrictValidator(CYCLONEDX_VERSION).validate_str(data.decode())
    if error is not None:
        raise SbomError(f"the CycloneDX document for {image_name} is invalid: "
                        f"{_cyclonedx_where(error.data, document)}{error.data.message}")
    return data


def _bom(image: _Image, entries: list[_Entry], created: datetime, tool: str) -> Bom:
    tool_name, sep, tool_version = tool.rpartition("-")
    if not sep or not tool_name or not tool_version[:1].isdigit():
        tool_name, tool_version = tool, ""
    root = Component(
        type=ComponentType.CONTAINER,
        name=image.name,
        version=image.digest.value,
        bom_ref=image.purl_text,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=image.digest.hex)],
        purl=image.purl,
    )
    components = [
        Component(
            type=ComponentType.LIBRARY,
            name=e.pkg.name,
            version=e.pkg.version,
            bom_ref=e.pkg.purl,
            supplier=OrganizationalEntity(name=e.supplier) if e.supplier else None,
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=e.sha256)] if e.sha256 else [],
            purl=e.purl,
            properties=[Property(name=SOURCE_PROPERTY, value=e.source)] if e.source else [],
        )
        for e in entries
    ]
    metadata = BomMetaData(
        timestamp=created,
        tools=ToolRepository(components=[Component(
            type=ComponentType.APPLICATION, name=tool_name, version=tool_version or None)]),
        component=root,
    )
    bom = Bom(serial_number=_document_uuid("cyclonedx", image), metadata=metadata,
              components=components)
    bom.register_dependency(root, components)
    return bom


def _cyclonedx_where(error: Any, document: Mapping[str, Any]) -> str:
    """'deb package NAME VERSION: ' when the schema error is inside a component."""
    path = list(getattr(error, "absolute_path", []))
    if len(path) >= 2 and path[0] == "components" and isinstance(path[1], int):
        try:
            c = document["components"][path[1]]
            return f"component {c.get('name')} {c.get('version')} ({c.get('purl')}): "
        except (IndexError, KeyError, TypeError):
            pass
    if path:
        return "/".join(str(p) for p in path) + ": "
    return ""


def packages_from_cyclonedx(data: bytes) -> list[PackageRow]:
    """The components of a CycloneDX JSON document (the image's contents; the image itself is
    ``metadata.component``), as sorted (name, version, type, purl) rows; raises
    :class:`SbomError` when the document does not validate against its spec version."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise SbomError(f"the CycloneDX document is not JSON: {e}") from e
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        raise SbomError("the document is not a CycloneDX BOM (no bomFormat: CycloneDX)")
    try:
        version = SchemaVersion.from_version(str(document.get("specVersion")))
    except ValueError as e:
        raise SbomError(f"unknown CycloneDX specVersion {document.get('specVersion')!r}") from e
    error = JsonValidator(version).validate_str(data.decode())
    if error is not None:
        raise SbomError("the CycloneDX document is invalid: "
                        f"{_cyclonedx_where(error.data, document)}{error.data.message}")
    rows = []
    for c in document.get("components", []):
        purl = str(c.get("purl", ""))
        rows.append((str(c["name"]), str(c.get("version", "")), _purl_type(purl), purl))
    return sorted(rows)
