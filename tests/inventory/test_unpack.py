"""Unpacking image layers: the three formats, whiteouts, and hostile tars.

The images are built here by hand (tarfile, gzip, zstd, sha256, JSON), so each test says exactly
what the hostile layer holds; skopeo makes the archives a real tool writes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from alicorn.digest import Digest, canonical_json
from alicorn.inventory.model import InventoryError
from alicorn.inventory.unpack import (
    Limits,
    apply_layer,
    archive_kind,
    host_platform,
    unpack_docker_archive,
    unpack_layout,
    unpack_oci_archive,
    unpacked,
)
from conftest import require

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "none": "application/vnd.oci.image.layer.v1.tar"}


# -- building images by hand -----------------------------------------------------------------------

def f(name: str, data: bytes = b"", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def d(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, b""


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, b""


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, b""


def dev(name: str, kind: bytes = tarfile.CHRTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, b""


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def compress(raw: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(raw, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    if how == "xz":
        return lzma.compress(raw)
    if how == "bzip2":
        return bz2.compress(raw)
    return raw


@dataclass
class Built:
    layout: Path
    manifest: Digest
    config: Digest
    layers: list[Digest] = field(default_factory=list)

    def blob(self, digest: Digest) -> Path:
        return self.layout / "blobs" / "sha256" / digest.hex


def write_blob(layout: Path, data: bytes) -> Digest:
    digest = Digest.of_bytes(data)
    path = layout / "blobs" / "sha256" / digest.hex
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def image_manifest(layout: Path, layers: list[list[tuple[tarfile.TarInfo, bytes]]], *,
                   how: str = "gzip", arch: str = "amd64",
                   diff_ids: list[str] | None = None) -> tuple[bytes, Digest, list[Digest]]:
    """Write the layers and config of one image into ``layout``; returns its manifest."""
    descs, ids, digests = [], [], []
    for entries in layers:
        raw = tar_of(entries)
        blob = compress(raw, how)
        digest = write_blob(layout, blob)
        digests.append(digest)
        ids.append(str(Digest.of_bytes(raw)))
        descs.append({"mediaType": LAYER_MEDIA[how], "digest": str(digest), "size": len(blob)})
    config = canonical_json({"architecture": arch, "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids or ids}})
    config_digest = write_blob(layout, config)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": str(config_digest),
                                          "size": len(config)},
                               "layers": descs})
    return manifest, config_digest, digests


def write_index(layout: Path, manifests: list[dict[str, object]]) -> None:
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_bytes(canonical_json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))


def desc(data: bytes, *, media: str = OCI_MANIFEST, ref: str | None = None,
         platform: str | None = None) -> dict[str, object]:
    out: dict[str, object] = {"mediaType": media, "digest": str(Digest.of_bytes(data)),
                              "size": len(data)}
    if ref:
        out["annotations"] = {"org.opencontainers.image.ref.name": ref}
    if platform:
        os_, arch = platform.split("/")
        out["platform"] = {"os": os_, "architecture": arch}
    return out


def layout_of(path: Path, layers: list[list[tuple[tarfile.TarInfo, bytes]]], *,
              how: str = "gzip", ref: str = "1") -> Built:
    """A one-image OCI layout at ``path``."""
    manifest, config, digests = image_manifest(path, layers, how=how)
    write_blob(path, manifest)
    write_index(path, [desc(manifest, ref=ref)])
    return Built(path, Digest.of_bytes(manifest), config, digests)


def tar_dir(src: Path, dest: Path) -> Path:
    """A tar of the directory ``src`` (its contents at the top), as an OCI archive is."""
    with tarfile.open(dest, "w") as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return dest


# -- the formats -----------------------------------------------------------------------------------

def test_layers_apply_in_order_with_whiteouts(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [
        [d("etc"), f("etc/os-release", b"ID=debian\n"), f("etc/gone", b"x"),
         d("opt"), f("opt/old", b"old"), d("opt/sub"), f("opt/sub/deep", b"deep"),
         f("usr/bin/tool", b"#!", mode=0o4755), sym("bin", "usr/bin")],
        [f("etc/.wh.gone"), f("opt/.wh..wh..opq"), f("opt/new", b"new"),
         f("etc/os-release", b"ID=fedora\n"), hard("etc/again", "etc/os-release")],
    ])
    image = unpack_layout(img.layout, tmp_path / "root")
    root = image.root
    assert image.digest == img.manifest and image.config_digest == img.config
    assert image.ref == "1" and image.platform == "linux/amd64"
    assert [layer.digest for layer in image.layers] == img.layers
    assert (root / "etc/os-release").read_bytes() == b"ID=fedora\n"
    assert not (root / "etc/gone").exists()
    assert sorted(p.name for p in (root / "opt").iterdir()) == ["new"]
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.stat(root / "etc/again").st_ino == os.stat(root / "etc/os-release").st_ino
    mode = os.stat(root / "usr/bin/tool").st_mode
    assert stat.S_IMODE(mode) == 0o755 and not mode & stat.S_ISUID
    assert image.warnings == ()


def test_opaque_keeps_what_the_same_layer_wrote_before_the_marker(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [
        [f("var/lib/a", b"lower"), f("var/lib/b", b"lower")],
        [f("var/lib/a", b"upper"), f("var/lib/.wh..wh..opq")],
    ])
    root = unpack_layout(img.layout, tmp_path / "root").root
    assert sorted(p.name for p in (root / "var/lib").iterdir()) == ["a"]
    assert (root / "var/lib/a").read_bytes() == b"upper"


@pytest.mark.parametrize("how", ["zstd", "none"])
def test_zstd_and_uncompressed_layers(tmp_path: Path, how: str) -> None:
    img = layout_of(tmp_path / "layout", [[f("a.txt", b"one")], [f("b.txt", b"two" * 100000)]],
                    how=how)
    root = unpack_layout(img.layout, tmp_path / "root").root
    assert (root / "a.txt").read_bytes() == b"one"
    assert (root / "b.txt").stat().st_size == 300000


def test_index_of_indexes_picks_this_hosts_platform(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    amd, _, _ = image_manifest(layout, [[f("which", b"amd64")]], arch="amd64")
    arm, _, _ = image_manifest(layout, [[f("which", b"arm64")]], arch="arm64")
    write_blob(layout, amd)
    write_blob(layout, arm)
    other = "linux/arm64" if host_platform() == "linux/amd64" else "linux/amd64"
    here, there = (amd, arm) if host_platform() == "linux/amd64" else (arm, amd)
    inner = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        desc(there, platform=other), desc(here, platform=host_platform())]})
    write_blob(layout, inner)
    write_index(layout, [desc(inner, media=OCI_INDEX, ref="multi")])
    image = unpack_layout(layout, tmp_path / "root")
    assert image.digest == Digest.of_bytes(here) and image.ref == "multi"
    assert (image.root / "which").read_bytes() == host_platform().split("/")[1].encode()
    # Asked for the other platform by name, it gets that one.
    other_image = unpack_layout(layout, tmp_path / "root2", platform=other)
    assert other_image.digest == Digest.of_bytes(there)


def test_several_images_need_a_ref(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    one, _, _ = image_manifest(layout, [[f("n", b"1")]])
    two, _, _ = image_manifest(layout, [[f("n", b"2")]])
    write_blob(layout, one)
    write_blob(layout, two)
    write_index(layout, [desc(one, ref="one"), desc(two, ref="example.org/x:two")])
    with pytest.raises(InventoryError) as e:
        unpack_layout(layout, tmp_path / "root")
    assert "2 images" in e.value.message and "one" in (e.value.hint or "")
    assert "example.org/x:two" in (e.value.hint or "")
    image = unpack_layout(layout, tmp_path / "root", ref="two")
    assert (image.root / "n").read_bytes() == b"2"
    with pytest.raises(InventoryError, match="no image named 'three'"):
        unpack_layout(layout, tmp_path / "other", ref="three")


def test_oci_archive_is_read_in_place(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [[f("etc/os-release", b"ID=x\n")]])
    archive = tar_dir(img.layout, tmp_path / "image.tar")
    assert archive_kind(archive) == "oci-archive"
    image = unpack_oci_archive(archive, tmp_path / "root")
    assert image.digest == img.manifest
    assert (image.root / "etc/os-release").read_bytes() == b"ID=x\n"


def test_archives_written_by_skopeo(tmp_path: Path) -> None:
    require("skopeo")
    img = layout_of(tmp_path / "layout", [[d("etc"), f("etc/os-release", b"ID=sk\n")],
                                          [f("usr/lib/x", b"x")]])
    oci = tmp_path / "oci.tar"
    docker = tmp_path / "docker.tar"
    for dest in (f"oci-archive:{oci}:example.org/sk:1", f"docker-archive:{docker}:sk:1"):
        subprocess.run(["skopeo", "copy", "--quiet", f"oci:{img.layout}:1", dest], check=True,
                       capture_output=True, timeout=120)
    assert archive_kind(oci) == "oci-archive"
    assert archive_kind(docker) == "docker-archive"
    from_oci = unpack_oci_archive(oci, tmp_path / "r1")
    assert from_oci.ref == "example.org/sk:1"
    from_docker = unpack_docker_archive(docker, tmp_path / "r2")
    assert from_docker.ref == "docker.io/library/sk:1" or from_docker.ref == "sk:1"
    # docker archives name the image by its config: the same config as the layout's.
    assert from_docker.digest == img.config
    for image in (from_oci, from_docker):
        assert (image.root / "etc/os-release").read_bytes() == b"ID=sk\n"
        assert (image.root / "usr/lib/x").read_bytes() == b"x"


def docker_archive(path: Path, layers: list[bytes], *, diff_ids: list[str] | None = None,
                   tags: list[str] | None = None, linked: bool = False) -> Path:
    """A docker archive by hand; ``linked``: each layer.tar is a symlink to ``<hex>.tar``,
    as docker and podman write layers shared between images."""
    config = canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers",
        "diff_ids": diff_ids or [str(Digest.of_bytes(raw)) for raw in layers]}})
    cname = Digest.of_bytes(config).hex + ".json"
    names = [f"{Digest.of_bytes(raw).hex}/layer.tar" for raw in layers]
    manifest = json.dumps([{"Config": cname, "RepoTags": tags or ["x:1"],
                            "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        files = [(cname, config), ("manifest.json", manifest)]
        for name, raw in zip(names, layers, strict=True):
            if linked:
                real = f"{Digest.of_bytes(raw).hex}.tar"
                files.append((real, raw))
                link = tarfile.TarInfo(name)
                link.type, link.linkname = tarfile.SYMTYPE, f"../{real}"
                tar.addfile(link)
            else:
                files.append((name, raw))
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_docker_archive_layers_are_checked_against_diff_ids(tmp_path: Path) -> None:
    good = tar_of([f("a", b"a")])
    archive = docker_archive(tmp_path / "good.tar", [good, tar_of([f("b", b"b")])])
    image = unpack_docker_archive(archive, tmp_path / "root")
    assert sorted(p.name for p in image.root.iterdir()) == ["a", "b"]
    linked = docker_archive(tmp_path / "linked.tar", [good], linked=True, tags=["x:1", "x:2"])
    assert archive_kind(linked) == "docker-archive"
    image = unpack_docker_archive(linked, tmp_path / "root-linked", ref="x:2")
    assert image.ref == "x:2" and (image.root / "a").read_bytes() == b"a"
    bad = docker_archive(tmp_path / "bad.tar", [good], diff_ids=["sha256:" + "0" * 64])
    with pytest.raises(InventoryError) as e:
        unpack_docker_archive(bad, tmp_path / "root2")
    assert "diff_id sha256:" + "0" * 64 in e.value.message and "layer 1/1" in e.value.message


def test_archive_kind_of_other_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    plain.write_bytes(tar_of([f("hello", b"x")]))
    text = tmp_path / "text"
    text.write_text("not a tar")
    assert archive_kind(plain) is None
    assert archive_kind(text) is None
    assert archive_kind(tmp_path / "missing") is None


# -- integrity -------------------------------------------------------------------------------------

def test_layer_whose_sha256_differs_is_named(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [[f("a", b"a")]], how="none")
    blob = img.blob(img.layers[0])
    data = bytearray(blob.read_bytes())
    data[513] ^= 1  # inside the file's data: same size, different sha256
    blob.write_bytes(bytes(data))
    with pytest.raises(InventoryError) as e:
        unpack_layout(img.layout, tmp_path / "root")
    assert f"not {img.layers[0]} as the manifest says" in e.value.message
    assert e.value.where == str(img.layout)


def test_blob_of_the_wrong_size_or_missing(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [[f("a", b"a")]])
    blob = img.blob(img.layers[0])
    blob.write_bytes(blob.read_bytes() + b"\0")
    with pytest.raises(InventoryError, match="bytes but the manifest says"):
        unpack_layout(img.layout, tmp_path / "root")
    blob.unlink()
    with pytest.raises(InventoryError, match=f"{img.layers[0]} is missing from the layout") as e:
        unpack_layout(img.layout, tmp_path / "root")
    # The layer's label names its digest already: the message names it once, not twice.
    assert e.value.message == f"layer 1/1 {img.layers[0]} is missing from the layout"


def test_manifest_that_does_not_match_its_digest(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [[f("a", b"a")]])
    path = img.blob(img.manifest)
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":3'))
    with pytest.raises(InventoryError, match=f"manifest {img.manifest} does not match"):
        unpack_layout(img.layout, tmp_path / "root")


def test_blob_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [[f("a", b"a")]])
    blob = img.blob(img.layers[0])
    (tmp_path / "elsewhere").write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InventoryError, match="cannot open layer"):
        unpack_layout(img.layout, tmp_path / "root")


def test_diff_id_mismatch(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    manifest, _, _ = image_manifest(layout, [[f("a", b"a")]], diff_ids=["sha256:" + "1" * 64])
    write_blob(layout, manifest)
    write_index(layout, [desc(manifest)])
    with pytest.raises(InventoryError, match="not the config's diff_id"):
        unpack_layout(layout, tmp_path / "root")


def test_not_a_layout(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(InventoryError, match="not an OCI image layout"):
        unpack_layout(tmp_path / "dir", tmp_path / "root")
    (tmp_path / "dir" / "oci-layout").write_text("{}")
    (tmp_path / "dir" / "index.json").write_text("{not json")
    with pytest.raises(InventoryError, match=r"index\.json is not valid JSON"):
        unpack_layout(tmp_path / "dir", tmp_path / "root")


# -- hostile layers --------------------------------------------------------------------------------

def apply(root: Path, entries: list[tuple[tarfile.TarInfo, bytes]], *,
          limits: Limits | None = None, how: str = "gzip") -> tuple[str, ...]:
    root.mkdir(exist_ok=True)
    blob = compress(tar_of(entries), how)
    return apply_layer(io.BytesIO(blob), root, name="layer 1/1 test", limits=limits)


def test_traversal_and_absolute_paths_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "a" / "root"
    root.parent.mkdir()
    warnings = apply(root, [f("../escaped", b"x"), f("ok/../../escaped2", b"x"),
                            f("/etc/abs", b"abs")])
    assert not (tmp_path / "a" / "escaped").exists()
    assert not (tmp_path / "escaped2").exists() and not (tmp_path / "a" / "escaped2").exists()
    assert (root / "etc/abs").read_bytes() == b"abs"
    text = "\n".join(warnings)
    assert "skipped '../escaped': it has a '..' component" in text
    assert "'ok/../../escaped2'" in text
    assert "1 entries had absolute paths" in text


def test_writing_through_a_symlinked_parent_stays_in_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    apply(root, [sym("up", "../../.."), sym("abs", str(outside)), sym("etc", "/")])
    apply(root, [f("up/pwned", b"1"), f("abs/pwned", b"2"), f("etc/passwd-ish", b"3")])
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "pwned").exists()
    # As in a chroot: "up" resolves to the root, "abs" to <root>/<outside>.
    assert (root / "pwned").read_bytes() == b"1"
    assert (root / str(outside).lstrip("/") / "pwned").read_bytes() == b"2"
    assert (root / "passwd-ish").read_bytes() == b"3"


def test_an_existing_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host file")
    root = tmp_path / "root"
    apply(root, [sym("target", str(victim)), sym("rel", "../victim")])
    apply(root, [f("target", b"image file"), f("rel", b"also")])
    assert victim.read_text() == "host file"
    assert (root / "target").read_bytes() == b"image file"
    assert not (root / "target").is_symlink()
    assert (root / "rel").read_bytes() == b"also"


def test_hard_links_never_reach_outside(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host")
    root = tmp_path / "root"
    before = victim.stat().st_nlink
    warnings = apply(root, [sym("out", str(tmp_path)), hard("h1", str(victim)),
                            hard("h2", "../victim"), hard("h3", "out/victim"),
                            f("inside", b"i"), hard("h4", "inside")])
    assert victim.stat().st_nlink == before
    for name in ("h1", "h2", "h3"):
        assert not (root / name).exists()
    assert os.stat(root / "h4").st_ino == os.stat(root / "inside").st_ino
    text = "\n".join(warnings)
    assert "'h1'" in text and "'h2'" in text and "'h3'" in text


def test_devices_and_fifos_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    warnings = apply(root, [d("dev"), dev("dev/null"), dev("dev/sda", tarfile.BLKTYPE),
                            dev("dev/fifo", tarfile.FIFOTYPE), f("dev/regular", b"r")])
    assert sorted(p.name for p in (root / "dev").iterdir()) == ["regular"]
    assert any("skipped 3 device nodes and FIFOs" in w for w in warnings)


def test_symlink_loop_in_a_parent_is_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "root"
    warnings = apply(root, [sym("a", "b"), sym("b", "a"), f("a/file", b"x"), f("fine", b"y")])
    assert any("'a/file'" in w and "symlink loop" in w for w in warnings)
    assert (root / "fine").read_bytes() == b"y"
    assert os.readlink(root / "a") == "b"


def test_setuid_setgid_and_sticky_are_stripped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(root, [f("su", b"", mode=0o6755), d("tmp", mode=0o1777), f("none", b"", mode=0)])
    assert stat.S_IMODE(os.stat(root / "su").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o777
    assert stat.S_IMODE(os.stat(root / "none").st_mode) == 0o600


def test_file_larger_than_the_cap_names_layer_and_entry(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as e:
        apply(tmp_path / "root", [f("small", b"x"), f("usr/big", b"y" * 100)],
              limits=Limits(max_file=50))
    assert "layer 1/1 test: entry 'usr/big' is 100 bytes, more than the 50" in e.value.message
    assert "ALICORN_UNPACK_MAX_FILE" in (e.value.hint or "")


def test_total_and_entry_caps(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"exceed 150 bytes in all .at entry 'c'"):
        apply(tmp_path / "r1", [f(n, b"z" * 60) for n in "abc"], limits=Limits(max_total=150))
    with pytest.raises(InventoryError, match=r"more than 5 entries .* 'f5'"):
        apply(tmp_path / "r2", [f(f"f{i}") for i in range(10)], limits=Limits(max_entries=5))


def test_caps_span_all_layers_of_an_image(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [[f("a", b"a" * 80)], [f("b", b"b" * 80)]])
    with pytest.raises(InventoryError) as e:
        unpack_layout(img.layout, tmp_path / "root", limits=Limits(max_total=100))
    assert f"layer 2/2 {img.layers[1]}" in e.value.message and "'b'" in e.value.message


def test_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    info = tarfile.TarInfo("x" * 5000)
    with pytest.raises(InventoryError, match="extended header"):
        apply(tmp_path / "root", [(info, b"")], limits=Limits(max_header=1024))


def test_gzip_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    # 1 GiB of zeros in one entry compresses to about 1 MB; the cap stops it at the header.
    info = tarfile.TarInfo("zeros")
    info.size = 1 << 30
    header = info.tobuf(tarfile.PAX_FORMAT)
    comp = zstandard.ZstdCompressor()
    chunks = [comp.compress(header)]
    root = tmp_path / "root"
    root.mkdir()
    blob = b"".join(chunks) + zstandard.ZstdCompressor().compress(b"\0" * (1 << 20))
    with pytest.raises(InventoryError, match="'zeros' is 1073741824 bytes"):
        apply_layer(io.BytesIO(blob), root, name="bomb", limits=Limits(max_file=1 << 20))
    assert list(root.iterdir()) == []


def test_corrupt_header_after_the_first_is_an_error(tmp_path: Path) -> None:
    raw = bytearray(tar_of([f("a", b"a"), f("b", b"b")]))
    raw[1024 + 100] ^= 0xFF  # the second entry's header: its checksum no longer matches
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(InventoryError, match=r"not a readable tar.*corrupt tar header"):
        apply_layer(io.BytesIO(bytes(raw)), root, name="layer x")


def test_truncated_and_garbage_layers(tmp_path: Path) -> None:
    blob = gzip.compress(tar_of([f("a", b"a" * 10000)]))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(InventoryError, match=r"cannot be decompressed|ends inside"):
        apply_layer(io.BytesIO(blob[: len(blob) // 2]), root, name="layer t")
    with pytest.raises(InventoryError, match="is not a tar archive"):
        apply_layer(io.BytesIO(b"this is not a tar at all" * 40), tmp_path, name="layer g")
    with pytest.raises(InventoryError, match="data after the end of its tar"):
        apply_layer(io.BytesIO(tar_of([f("a")]) + b"trailing" * 2000), root, name="layer j")


def test_empty_layer_is_fine(tmp_path: Path) -> None:
    assert apply_layer(io.BytesIO(b""), tmp_path, name="empty") == ()
    assert apply_layer(io.BytesIO(gzip.compress(tar_of([]))), tmp_path, name="empty") == ()


def test_unpacked_removes_its_directory_also_on_error(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [[f("etc/x", b"x"), f("ro/file", b"f")],
                                          [d("ro", mode=0o500)]])
    work = tmp_path / "work"
    with unpacked(img.layout, "oci-layout", workdir=work) as image:
        assert (image.root / "etc/x").read_bytes() == b"x"
        seen = image.root
    assert not seen.exists() and list(work.iterdir()) == []
    with pytest.raises(RuntimeError), unpacked(img.layout, "oci-layout", workdir=work):
        raise RuntimeError("boom")
    assert list(work.iterdir()) == []
    bad = img.blob(img.layers[1])
    bad.write_bytes(b"\0" * bad.stat().st_size)
    with pytest.raises(InventoryError), unpacked(img.layout, "oci-layout", workdir=work):
        pass
    assert list(work.iterdir()) == []


def test_unpacked_removes_what_dead_processes_left(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [[f("x", b"x")]])
    work = tmp_path / "work"
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    (work / f"alicorn-unpack-{dead}-abc" / "rootfs").mkdir(parents=True)
    (work / f"alicorn-unpack-{os.getpid()}-live").mkdir()
    (work / "unrelated").mkdir()
    with unpacked(img.layout, "oci-layout", workdir=work):
        pass
    assert sorted(p.name for p in work.iterdir()) == [f"alicorn-unpack-{os.getpid()}-live",
                                                      "unrelated"]


@pytest.mark.parametrize("how", ["xz", "bzip2"])
def test_legacy_compressions_are_recognised_by_their_magic(tmp_path: Path, how: str) -> None:
    apply(tmp_path / "root", [f("etc/x", b"legacy")], how=how)
    assert (tmp_path / "root/etc/x").read_bytes() == b"legacy"


def test_archive_blob_that_links_out_of_the_archive(tmp_path: Path) -> None:
    img = layout_of(tmp_path / "layout", [[f("a", b"a")]])
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(img.layout.rglob("*")):
            name = str(p.relative_to(img.layout))
            if p.name == img.layers[0].hex:
                link = tarfile.TarInfo(name)
                link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
                tar.addfile(link)
            else:
                tar.add(p, arcname=name, recursive=False)
    with pytest.raises(InventoryError, match="links out of the archive"):
        unpack_oci_archive(archive, tmp_path / "root")


def test_indexes_nested_too_deep(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    manifest, _, _ = image_manifest(layout, [[f("a", b"a")]])
    write_blob(layout, manifest)
    inner = desc(manifest)
    for _ in range(6):
        index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                "manifests": [inner]})
        write_blob(layout, index)
        inner = desc(index, media=OCI_INDEX)
    write_index(layout, [inner])
    with pytest.raises(InventoryError, match="nest more than 4 deep"):
        unpack_layout(layout, tmp_path / "root")


def test_whiteouts_of_dot_and_dotdot_remove_nothing(tmp_path: Path) -> None:
    root = tmp_path / "img" / "root"
    (tmp_path / "img" / "sibling").mkdir(parents=True)
    apply(root, [f("a/keep", b"k"), f("top", b"t")])
    warnings = apply(root, [f(".wh..."), f(".wh.."), f("a/.wh..."), f("a/.wh..")])
    assert (tmp_path / "img" / "sibling").is_dir()
    assert (root / "a/keep").read_bytes() == b"k" and (root / "top").exists()
    assert sum("whiteout of no name" in w for w in warnings) == 4
