"""Advisory → affected images over recorded builds: the same answer a scan of each image gives."""

from __future__ import annotations

from pathlib import Path

from alicorn.advisories.model import Advisory, Affected, PackageRef, Range
from alicorn.compose import Package
from alicorn.match.affected import affected_images, package_from_row
from alicorn.store.builds import DONE, FAILED, BuildStore, Submission
from alicorn.store.models import PackageRow


def _advisory(id: str, *, packages: tuple[PackageRef, ...] = (),
              affected: tuple[Affected, ...] = ()) -> Advisory:
    return Advisory(id=id, type="security", severity="Important", title=id, description="",
                    issued=None, updated=None, release=None, status="stable",
                    packages=packages, affected=affected)


def _fixed(ecosystem: str, name: str, version: str) -> Affected:
    return Affected(ecosystem=ecosystem, name=name,
                    ranges=(Range("ECOSYSTEM", (("introduced", "0"), ("fixed", version))),))


def _build(store: BuildStore, recipe: str, packages: list[Package], *,
           state: str = DONE, digest: str = "") -> str:
    row = store.submit(Submission(argv=["alicorn", "build", recipe], source_kind="file",
                                  recipe_path=f"/r/{recipe}.yaml"))
    store.update(row.id, recipe_name=recipe)
    store.finish(row.id, state, packages=packages,
                 digest=digest or ("sha256:" + row.id.ljust(64, "0")[:64]),
                 image_ref=f"127.0.0.1:5000/{recipe}@sha256:x")
    return row.id


OPENSSL_OLD = Package(type="deb", name="libssl3", version="3.0.11-1~deb12u2", arch="amd64",
                      source="openssl", purl="pkg:deb/debian/libssl3@3.0.11-1~deb12u2"
                      "?arch=amd64&distro=debian-12")
OPENSSL_NEW = Package(type="deb", name="libssl3", version="3.0.15-1~deb12u1", arch="amd64",
                      source="openssl", purl="pkg:deb/debian/libssl3@3.0.15-1~deb12u1"
                      "?arch=amd64&distro=debian-12")
BUSYBOX_OLD = Package(type="rpm", name="busybox", version="1:1.36.0-1.fc39", arch="x86_64",
                      source="busybox-1.36.0-1.fc39.src.rpm",
                      purl="pkg:rpm/fedora/busybox@1.36.0-1.fc39?arch=x86_64&epoch=1")
REQUESTS_OLD = Package(type="pypi", name="requests", version="2.19.0",
                       purl="pkg:pypi/requests@2.19.0")


def test_finds_exactly_the_images_carrying_an_outdated_package(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = BuildStore(url)
    old = _build(store, "web-old", [OPENSSL_OLD, REQUESTS_OLD])
    _build(store, "web-new", [OPENSSL_NEW])
    _build(store, "broken", [OPENSSL_OLD], state=FAILED)
    rpm_img = _build(store, "pony-rpm", [BUSYBOX_OLD])

    dsa = _advisory("DSA-5532-1", affected=(_fixed("Debian:12", "openssl", "3.0.11-1~deb12u3"),))
    hits = affected_images(url, [dsa])
    assert [h.build_id for h in hits] == [old]
    assert [(f.package.name, f.fixed_version) for f in hits[0].findings] == \
        [("libssl3", "3.0.11-1~deb12u3")]

    # An rpm advisory: same name and arch, newer EVR (epoch 1 recorded as "1:").
    fedora = _advisory("FEDORA-2024-1", packages=(
        PackageRef("busybox", "1", "1.36.1", "1.fc39", "x86_64"),))
    assert [h.build_id for h in affected_images(url, [fedora])] == [rpm_img]
    # Epoch 0 in the advisory is older than the installed epoch 1: not applicable.
    older = _advisory("FEDORA-2024-2", packages=(
        PackageRef("busybox", "0", "9.9", "1.fc39", "x86_64"),))
    assert affected_images(url, [older]) == []

    pysec = _advisory("PYSEC-2018-28", affected=(_fixed("PyPI", "Requests", "2.20.0"),))
    assert [h.build_id for h in affected_images(url, [pysec])] == [old]
    # Upstream ranges never apply to the distro package of the same name.
    upstream_openssl = _advisory("GHSA-x", affected=(_fixed("PyPI", "openssl", "9"),))
    assert affected_images(url, [upstream_openssl]) == []


def test_latest_only_keeps_the_current_image_of_each_recipe(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = BuildStore(url)
    first = _build(store, "web", [OPENSSL_OLD])
    second = _build(store, "web", [OPENSSL_NEW])
    dsa = _advisory("DSA-1", affected=(_fixed("Debian:12", "openssl", "3.0.11-1~deb12u3"),))
    assert affected_images(url, [dsa]) == [], f"{second} is current and fixed"
    assert [h.build_id for h in affected_images(url, [dsa], latest_only=False)] == [first]


def test_recorded_rows_become_inventory_packages() -> None:
    row = PackageRow(type="rpm", name="busybox", version="0:1.36.0-1.fc39", arch="x86_64",
                     source="busybox-1.36.0-1.fc39.src.rpm", purl="p")
    p = package_from_row(row)
    assert (p.version, p.epoch, p.release, p.source, p.evr) == \
        ("1.36.0-1.fc39", 0, "1.fc39", "busybox", "0:1.36.0-1.fc39")
    row = PackageRow(type="rpm", name="perl-Foo", version="4:1.0-2", arch="noarch",
                     source="perl-Foo-Bar-1.0-2.src.rpm", purl="p")
    p = package_from_row(row)
    assert (p.version, p.epoch, p.source, p.evr) == ("4:1.0-2", 4, "perl-Foo-Bar", "4:1.0-2")
