"""SBOMs: both formats validate with their own libraries, carry every purl, are deterministic,
and parse back to the packages they were written from."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.validation.spdx_id_validators import is_valid_internal_spdx_id
from spdx_tools.spdx.validation.validation_message import ValidationContext, ValidationMessage

from alicorn import __version__
from alicorn.chain import sbom
from alicorn.chain.sbom import (
    SbomError,
    cyclonedx_json,
    packages_from_cyclonedx,
    packages_from_spdx,
    spdx_json,
)
from alicorn.compose.interface import Package

DIGEST = "sha256:" + "3f" * 32
OTHER_DIGEST = "sha256:" + "a1" * 32
CREATED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
IMAGE = "pony-debian"

PACKAGES = [
    Package(type="deb", name="libc6", version="2.36-9+deb12u7", arch="amd64", source="glibc",
            checksum="sha256:" + "11" * 32,
            purl="pkg:deb/debian/libc6@2.36-9%2Bdeb12u7?arch=amd64&distro=debian-12"),
    Package(type="deb", name="libstdc++6", version="12.2.0-14", arch="amd64", source="gcc-12",
            purl="pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-12"),
    Package(type="deb", name="python3.11", version="3.11.2-6+deb12u2", arch="amd64",
            source="python3.11",
            purl="pkg:deb/debian/python3.11@3.11.2-6%2Bdeb12u2?arch=amd64&distro=debian-12"),
    Package(type="deb", name="tzdata", version="2024a-0+deb12u1", arch="all", source="tzdata",
            checksum="sha256:" + "22" * 32,
            purl="pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12"),
    Package(type="deb", name="libgcrypt20", version="1.10.1-3", arch="amd64",
            source="libgcrypt20",
            purl="pkg:deb/debian/libgcrypt20@1.10.1-3?arch=amd64&distro=debian-12"),
    Package(type="deb", name="dpkg", version="1:1.21.22", arch="amd64", source="dpkg",
            purl="pkg:deb/debian/dpkg@1%3A1.21.22?arch=amd64&distro=debian-12"),
    Package(type="deb", name="libgnutls30", version="3.7.9-2+deb12u3~bpo11+1", arch="amd64",
            source="gnutls28",
            purl="pkg:deb/debian/libgnutls30@3.7.9-2%2Bdeb12u3~bpo11%2B1?arch=amd64"
                 "&distro=debian-12"),
    Package(type="deb", name="perl-base", version="5.36.0-7+deb12u1", arch="amd64",
            source="perl",
            purl="pkg:deb/debian/perl-base@5.36.0-7%2Bdeb12u1?arch=amd64&distro=debian-12"),
    Package(type="rpm", name="bash", version="5.2.15-5.fc39", arch="x86_64",
            source="bash-5.2.15-5.fc39.src.rpm",
            purl="pkg:rpm/fedora/bash@5.2.15-5.fc39?arch=x86_64&distro=fedora-39"),
    Package(type="rpm", name="openssl-libs", version="1:3.1.1-4.fc39", arch="x86_64",
            source="openssl-3.1.1-4.fc39.src.rpm",
            purl="pkg:rpm/fedora/openssl-libs@3.1.1-4.fc39?arch=x86_64&distro=fedora-39"
                 "&epoch=1"),
    Package(type="rpm", name="tzdata", version="2024a-1.fc39", arch="noarch",
            source="tzdata-2024a-1.fc39.src.rpm",
            purl="pkg:rpm/fedora/tzdata@2024a-1.fc39?arch=noarch&distro=fedora-39"),
    Package(type="rpm", name="local-tool", version="0.3-1", arch="x86_64",
            source="local-tool-0.3-1.src.rpm",
            purl="pkg:rpm/alicorn/local-tool@0.3-1?arch=x86_64&distro=alicorn-39"),
    Package(type="pypi", name="requests", version="2.31.0", checksum="sha256:" + "33" * 32,
            purl="pkg:pypi/requests@2.31.0"),
]

Row = tuple[str, str, str, str]


def rows(packages: list[Package]) -> list[Row]:
    return sorted((p.name, p.version, p.type, p.purl) for p in packages)


def spdx_doc(data: bytes) -> dict:  # type: ignore[type-arg]
    return json.loads(data)  # type: ignore[no-any-return]


def assert_spdx_valid(data: bytes) -> None:
    document = JsonLikeDictParser().parse(json.loads(data))  # type: ignore[no-untyped-call]
    assert validate_full_spdx_document(document, "SPDX-2.3") == []


def assert_cyclonedx_valid(data: bytes) -> None:
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode()) is None


# -- SPDX ---------------------------------------------------------------------------------------

def test_spdx_validates_and_carries_every_package() -> None:
    data = spdx_json(IMAGE, DIGEST, PACKAGES, created=CREATED)
    assert_spdx_valid(data)
    doc = spdx_doc(data)
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert doc["creationInfo"]["created"] == "2024-05-06T07:08:09Z"
    assert doc["creationInfo"]["creators"] == [f"Tool: alicorn-{__version__}"]
    by_purl = {ref["referenceLocator"]: p for p in doc["packages"] for ref in p["externalRefs"]
               if ref["referenceCategory"] == "PACKAGE_MANAGER"
               and ref["referenceType"] == "purl"}
    for pkg in PACKAGES:
        entry = by_purl[pkg.purl]
        assert entry["name"] == pkg.name
        assert entry["versionInfo"] == pkg.version
        assert entry["filesAnalyzed"] is False
        if pkg.checksum:
            assert entry["checksums"] == [{"algorithm": "SHA256",
                                           "checksumValue": pkg.checksum.split(":")[1]}]
        else:
            assert "checksums" not in entry
        if pkg.type in ("deb", "rpm"):
            assert entry["sourceInfo"] == f"built package from: {pkg.source}"
    assert by_purl[PACKAGES[0].purl]["supplier"] == "Organization: Debian"
    assert by_purl[PACKAGES[8].purl]["supplier"] == "Organization: Fedora Project"
    # An unknown rpm vendor and a wheel: nobody is claimed as the supplier.
    assert by_purl["pkg:rpm/alicorn/local-tool@0.3-1?arch=x86_64&distro=alicorn-39"][
        "supplier"] == "NOASSERTION"
    assert by_purl["pkg:pypi/requests@2.31.0"]["supplier"] == "NOASSERTION"


def test_spdx_image_is_the_described_root() -> None:
    doc = spdx_doc(spdx_json(IMAGE, DIGEST, PACKAGES, created=CREATED))
    image = next(p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-Image")
    assert image["name"] == IMAGE
    assert image["primaryPackagePurpose"] == "CONTAINER"
    assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": "3f" * 32}]
    assert image["externalRefs"] == [{
        "referenceCategory": "PACKAGE_MANAGER", "referenceType": "purl",
        "referenceLocator": f"pkg:oci/pony-debian@sha256%3A{'3f' * 32}"}]
    rels = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
            for r in doc["relationships"]}
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image") in rels
    contained = {r[2] for r in rels if r[:2] == ("SPDXRef-Image", "CONTAINS")}
    package_ids = {p["SPDXID"] for p in doc["packages"]} - {"SPDXRef-Image"}
    assert contained == package_ids
    assert len(package_ids) == len(PACKAGES)


def test_spdx_ids_are_valid_for_awkward_names() -> None:
    odd = [
        Package(type="deb", name="libstdc++6", version="1:2.3-4+deb12u1", source="gcc",
                purl="pkg:deb/debian/libstdc%2B%2B6@1%3A2.3-4%2Bdeb12u1?arch=amd64"),
        Package(type="deb", name="libstdc--6", version="1", source="x",
                purl="pkg:deb/debian/libstdc--6@1?arch=amd64"),
        Package(type="deb", name="python3.11", version="3.11.2-6", source="python3.11",
                purl="pkg:deb/debian/python3.11@3.11.2-6?arch=amd64"),
        Package(type="pypi", name="zope-interface", version="6.0",
                purl="pkg:pypi/zope-interface@6.0"),
        Package(type="rpm", name="perl(Foo::Bar)", version="1.0-1", source="perl-Foo-1.0-1",
                purl="pkg:rpm/fedora/perl%28Foo%3A%3ABar%29@1.0-1?arch=noarch"),
    ]
    data = spdx_json(IMAGE, DIGEST, odd, created=CREATED)
    assert_spdx_valid(data)
    ids = [p["SPDXID"] for p in spdx_doc(data)["packages"]]
    assert all(is_valid_internal_spdx_id(i) for i in ids)
    assert len(set(ids)) == len(ids) == len(odd) + 1
    assert packages_from_spdx(data) == rows(odd)


def test_spdx_is_deterministic_and_namespaced_by_digest() -> None:
    first = spdx_json(IMAGE, DIGEST, PACKAGES, created=CREATED)
    again = spdx_json(IMAGE, DIGEST, list(reversed(PACKAGES)) + PACKAGES[:2], created=CREATED)
    assert first == again
    other = spdx_json(IMAGE, OTHER_DIGEST, PACKAGES, created=CREATED)
    ns = spdx_doc(first)["documentNamespace"]
    assert ns.startswith("urn:uuid:")
    assert ns != spdx_doc(other)["documentNamespace"]
    # Same instant in another zone, and a naive UTC time: the same bytes.
    plus_two = CREATED.astimezone(timezone(timedelta(hours=2)))
    assert spdx_json(IMAGE, DIGEST, PACKAGES, created=plus_two) == first
    assert spdx_json(IMAGE, DIGEST, PACKAGES, created=CREATED.replace(tzinfo=None)) == first


def test_spdx_round_trip() -> None:
    data = spdx_json(IMAGE, DIGEST, PACKAGES, created=CREATED)
    assert packages_from_spdx(data) == rows(PACKAGES)


def test_spdx_empty_package_list() -> None:
    data = spdx_json(IMAGE, DIGEST, [], created=CREATED)
    assert_spdx_valid(data)
    assert [p["SPDXID"] for p in spdx_doc(data)["packages"]] == ["SPDXRef-Image"]
    assert packages_from_spdx(data) == []


def test_spdx_validation_failure_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(document, spdx_version=None):  # type: ignore[no-untyped-def]
        target = next(p for p in document.packages if p.name == "libstdc++6")
        return [ValidationMessage("something is wrong",
                                  ValidationContext(spdx_id=target.spdx_id))]

    monkeypatch.setattr(sbom, "validate_full_spdx_document", broken)
    with pytest.raises(SbomError, match=r"deb package libstdc\+\+6 12.2.0-14: something"):
        spdx_json(IMAGE, DIGEST, PACKAGES, created=CREATED)


# -- CycloneDX ----------------------------------------------------------------------------------

def test_cyclonedx_validates_and_carries_every_package() -> None:
    data = cyclonedx_json(IMAGE, DIGEST, PACKAGES, created=CREATED)
    assert_cyclonedx_valid(data)
    doc = json.loads(data)
    assert doc["specVersion"] == "1.6"
    assert doc["metadata"]["timestamp"] == "2024-05-06T07:08:09+00:00"
    assert doc["metadata"]["tools"]["components"] == [
        {"type": "application", "name": "alicorn", "version": __version__}]
    by_purl = {c["purl"]: c for c in doc["components"]}
    assert set(by_purl) == {p.purl for p in PACKAGES}
    for pkg in PACKAGES:
        c = by_purl[pkg.purl]
        assert (c["name"], c["version"], c["type"]) == (pkg.name, pkg.version, "library")
        if pkg.checksum:
            assert c["hashes"] == [{"alg": "SHA-256", "content": pkg.checksum.split(":")[1]}]
        else:
            assert "hashes" not in c
        props = {p["name"]: p["value"] for p in c.get("properties", [])}
        if pkg.type in ("deb", "rpm"):
            assert props == {"alicorn:source": pkg.source}
        else:
            assert props == {}
    assert by_purl[PACKAGES[0].purl]["supplier"] == {"name": "Debian"}
    assert "supplier" not in by_purl["pkg:pypi/requests@2.31.0"]


def test_cyclonedx_image_is_the_root() -> None:
    doc = json.loads(cyclonedx_json(IMAGE, DIGEST, PACKAGES, created=CREATED))
    root = doc["metadata"]["component"]
    purl = f"pkg:oci/pony-debian@sha256%3A{'3f' * 32}"
    assert root["type"] == "container"
    assert root["purl"] == purl
    assert root["hashes"] == [{"alg": "SHA-256", "content": "3f" * 32}]
    deps = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    assert sorted(deps[root["bom-ref"]]) == sorted(c["bom-ref"] for c in doc["components"])


def test_image_purl_with_registry_and_tag() -> None:
    name = "registry.example:5000/team/Pony:1.2"
    doc = json.loads(cyclonedx_json(name, DIGEST, [], created=CREATED))
    assert doc["metadata"]["component"]["name"] == name
    assert doc["metadata"]["component"]["purl"] == (
        f"pkg:oci/pony@sha256%3A{'3f' * 32}"
        "?repository_url=registry.example%3A5000/team/Pony&tag=1.2")
    assert_spdx_valid(spdx_json(name, DIGEST, [], created=CREATED))


def test_cyclonedx_is_deterministic_and_serial_by_digest() -> None:
    first = cyclonedx_json(IMAGE, DIGEST, PACKAGES, created=CREATED)
    assert cyclonedx_json(IMAGE, DIGEST, list(reversed(PACKAGES)), created=CREATED) == first
    other = cyclonedx_json(IMAGE, OTHER_DIGEST, PACKAGES, created=CREATED)
    serial = json.loads(first)["serialNumber"]
    assert serial.startswith("urn:uuid:")
    assert serial != json.loads(other)["serialNumber"]
    # The two formats name their documents differently (they are different documents).
    assert serial != spdx_doc(spdx_json(IMAGE, DIGEST, PACKAGES, created=CREATED))[
        "documentNamespace"]


def test_cyclonedx_round_trip() -> None:
    data = cyclonedx_json(IMAGE, DIGEST, PACKAGES, created=CREATED)
    assert packages_from_cyclonedx(data) == rows(PACKAGES)


def test_cyclonedx_empty_package_list() -> None:
    data = cyclonedx_json(IMAGE, DIGEST, [], created=CREATED)
    assert_cyclonedx_valid(data)
    assert packages_from_cyclonedx(data) == []


def test_cyclonedx_validation_failure_names_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Error:
        absolute_path = ("components", 0, "purl")
        message = "is not valid"

    class Failing:
        def __init__(self, version: SchemaVersion):
            pass

        def validate_str(self, data: str) -> object:
            return type("E", (), {"data": Error()})()

    monkeypatch.setattr(sbom, "JsonStrictValidator", Failing)
    with pytest.raises(SbomError, match=r"component bash 5.2.15-5.fc39 \(pkg:rpm/fedora/bash"):
        cyclonedx_json(IMAGE, DIGEST, PACKAGES, created=CREATED)


# -- bad input and bad documents ----------------------------------------------------------------

@pytest.mark.parametrize("produce", [spdx_json, cyclonedx_json])
def test_bad_packages_are_named(produce) -> None:  # type: ignore[no-untyped-def]
    no_purl = Package(type="deb", name="libfoo1", version="1.0-1")
    with pytest.raises(SbomError, match=re.escape("deb package libfoo1 1.0-1 has no purl")):
        produce(IMAGE, DIGEST, [no_purl], created=CREATED)
    bad_purl = Package(type="deb", name="libfoo1", version="1.0-1", purl="deb:libfoo1")
    with pytest.raises(SbomError, match=re.escape("libfoo1 1.0-1 has an invalid purl")):
        produce(IMAGE, DIGEST, [bad_purl], created=CREATED)
    bad_sum = Package(type="pypi", name="six", version="1.16.0", checksum="md5:abc",
                      purl="pkg:pypi/six@1.16.0")
    with pytest.raises(SbomError, match=re.escape("six 1.16.0 has checksum 'md5:abc'")):
        produce(IMAGE, DIGEST, [bad_sum], created=CREATED)
    clash = [Package(type="pypi", name="six", version="1.16.0", purl="pkg:pypi/six@1.16.0"),
             Package(type="pypi", name="six", version="1.16.0", purl="pkg:pypi/six@1.16.0",
                     checksum="sha256:" + "44" * 32)]
    with pytest.raises(SbomError, match=re.escape("share the purl pkg:pypi/six@1.16.0")):
        produce(IMAGE, DIGEST, clash, created=CREATED)
    with pytest.raises(SbomError, match="not a sha256 digest"):
        produce(IMAGE, "sha256:nothex", [], created=CREATED)
    with pytest.raises(SbomError, match="no name"):
        produce(" ", DIGEST, [], created=CREATED)


def test_parsers_reject_bad_documents() -> None:
    for parse in (packages_from_spdx, packages_from_cyclonedx):
        with pytest.raises(SbomError, match="not JSON"):
            parse(b"{not json")
    with pytest.raises(SbomError, match="not a CycloneDX BOM"):
        packages_from_cyclonedx(spdx_json(IMAGE, DIGEST, PACKAGES, created=CREATED))
    cdx = json.loads(cyclonedx_json(IMAGE, DIGEST, PACKAGES, created=CREATED))
    cdx["components"][0]["type"] = "spaceship"
    with pytest.raises(SbomError, match="CycloneDX document is invalid: component"):
        packages_from_cyclonedx(json.dumps(cdx).encode())
    spdx = spdx_doc(spdx_json(IMAGE, DIGEST, PACKAGES, created=CREATED))
    spdx["relationships"] = [r for r in spdx["relationships"]
                             if r["relationshipType"] != "DESCRIBES"]
    with pytest.raises(SbomError, match=r"SPDX document is invalid: .*DESCRIBES"):
        packages_from_spdx(json.dumps(spdx).encode())
    del spdx["documentNamespace"]
    with pytest.raises(SbomError, match="cannot be parsed"):
        packages_from_spdx(json.dumps(spdx).encode())


def test_large_list_is_fast_enough_and_valid() -> None:
    many = [Package(type="deb", name=f"lib{i}", version=f"1:{i}.0-1+deb12u1", arch="amd64",
                    source=f"src{i % 7}", checksum=f"sha256:{i:064x}",
                    purl=f"pkg:deb/debian/lib{i}@1%3A{i}.0-1%2Bdeb12u1?arch=amd64")
            for i in range(300)]
    assert packages_from_spdx(spdx_json(IMAGE, DIGEST, many, created=CREATED)) == rows(many)
    assert packages_from_cyclonedx(cyclonedx_json(IMAGE, DIGEST, many, created=CREATED)) \
        == rows(many)
