"""An image with old non-distro packages, written by hand as the real installers write them.

pip's ``*.dist-info`` (METADATA, WHEEL, INSTALLER, RECORD with the files' sha256), RubyGems'
``specifications/*.gemspec`` (the stub RubyGems writes), Maven-built jars (pom.properties and
MANIFEST.MF; a Spring Boot fat jar with its libraries stored under ``BOOT-INF/lib/``), npm's
``node_modules/<name>/package.json``, and a Debian dpkg database whose ``python3-requests``
owns a dist-info directory.  The same tree is packaged as an OCI image layout (three gzip
layers, the last one upgrading a wheel and deleting a jar that the second one added) and as
an OCI archive of that layout, the way ``podman save --format oci-archive`` lays it out.

Which versions are vulnerable is decided by tests/test_scan_acceptance.py from the shared data;
this module only writes the files.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

SITE = "usr/local/lib/python3.11/site-packages"       # pip in the python images
VENV_SITE = "opt/venv/lib/python3.11/site-packages"   # a virtualenv of the application
DEB_SITE = "usr/lib/python3/dist-packages"             # Debian's python3-* packages
BUNDLE = "usr/local/bundle/specifications"            # the ruby images' gem home
SYSTEM_GEMS = "usr/share/gems/specifications"         # Fedora's gem home
FAT_JAR = "opt/app/app.jar"
FIXED_FAT_JAR = "opt/app2/app2.jar"
SHADED_JAR = "opt/tools/tool-all.jar"
LOG4J = "usr/share/java/log4j-core-2.14.1.jar"
WHITED_OUT = "opt/old/log4j-core-2.14.0.jar"           # added by layer 2, deleted by layer 3

OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""

DPKG_STATUS = """\
Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 340
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files

Package: python3-requests
Status: install ok installed
Priority: optional
Section: python
Installed-Size: 223
Maintainer: Debian Python Team <team+python@tracker.debian.org>
Architecture: all
Source: requests
Version: 2.28.1+dfsg-1
Depends: python3-certifi, python3-charset-normalizer, python3-idna, python3-urllib3, python3:any
Description: elegant and simple HTTP library for Python3, built for human beings

"""


# -- Python ----------------------------------------------------------------------------------------

def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest},{len(data)}"


def wheel(site: Path, name: str, version: str, modules: list[str], *,
          installer: str = "pip") -> list[str]:
    """Install ``name`` ``version`` into ``site`` as pip does; returns the files written,
    relative to ``site`` (what RECORD lists, and what a dpkg ``.list`` would)."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for module in modules:
        files[f"{module}/__init__.py"] = f'"""{name} {version}"""\n__version__ = "{version}"\n' \
            .encode()
    files[f"{dist}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        f"Summary: {name}, as it was at {version}\nLicense: see upstream\n"
        "Requires-Python: >=3.7\n\nA long description that is not parsed.\n").encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: bdist_wheel (0.41.2)\n" \
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist}/INSTALLER"] = f"{installer}\n".encode()
    files[f"{dist}/top_level.txt"] = "".join(f"{m}\n" for m in modules).encode()
    lines = [f"{p},{_record_hash(data)}" for p, data in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join([*lines, f"{dist}/RECORD,,"]) + "\n").encode()
    for p, data in files.items():
        (site / p).parent.mkdir(parents=True, exist_ok=True)
        (site / p).write_bytes(data)
    return sorted(files)


# -- Ruby ------------------------------------------------------------------------------------------

def gemspec(spec_dir: Path, name: str, version: str, *, platform: str | None = None) -> Path:
    """The specification stub RubyGems writes when it installs a gem."""
    stem = f"{name}-{version}" + (f"-{platform}" if platform else "")
    text = (f"# -*- encoding: utf-8 -*-\n# stub: {name} {version} {platform or 'ruby'} lib\n\n"
            "Gem::Specification.new do |s|\n"
            f"  s.name = \"{name}\".freeze\n"
            f"  s.version = \"{version}\"\n"
            + (f"  s.platform = \"{platform}\".freeze\n" if platform else "")
            + "\n  s.required_rubygems_version = Gem::Requirement.new(\">= 0\".freeze) "
            "if s.respond_to? :required_rubygems_version=\n"
            "  s.require_paths = [\"lib\".freeze]\n"
            f"  s.summary = \"{name}\".freeze\n"
            "  s.installed_by_version = \"3.4.10\".freeze if s.respond_to? "
            ":installed_by_version\nend\n")
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / f"{stem}.gemspec"
    path.write_text(text)
    return path


# -- Java ------------------------------------------------------------------------------------------

def jar_bytes(group: str, artifact: str, version: str, *,
              nested: dict[str, bytes] | None = None) -> bytes:
    """A jar as Maven builds it (MANIFEST.MF, pom.properties, pom.xml, a class); ``nested``
    jars are stored uncompressed under their names, as Spring Boot's repackager does."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("META-INF/MANIFEST.MF",
                    "Manifest-Version: 1.0\r\nCreated-By: Maven JAR Plugin 3.2.0\r\n"
                    f"Implementation-Title: {artifact}\r\n"
                    f"Implementation-Version: {version}\r\n"
                    f"Implementation-Vendor-Id: {group}\r\n"
                    + ("Main-Class: org.springframework.boot.loader.JarLauncher\r\n"
                       "Start-Class: com.example.demo.DemoApplication\r\n"
                       "Spring-Boot-Lib: BOOT-INF/lib/\r\n" if nested else "")
                    + "\r\n")
        base = f"META-INF/maven/{group}/{artifact}"
        zf.writestr(f"{base}/pom.properties",
                    f"#Created by Apache Maven 3.8.4\nartifactId={artifact}\n"
                    f"groupId={group}\nversion={version}\n")
        zf.writestr(f"{base}/pom.xml",
                    f"<project><modelVersion>4.0.0</modelVersion><groupId>{group}</groupId>"
                    f"<artifactId>{artifact}</artifactId><version>{version}</version>"
                    "</project>\n")
        cls = "BOOT-INF/classes/" if nested else ""
        zf.writestr(f"{cls}{group.replace('.', '/')}/{artifact.replace('-', '')}/Main.class",
                    b"\xca\xfe\xba\xbe\x00\x00\x00\x34")
        for name, data in (nested or {}).items():
            zf.writestr(zipfile.ZipInfo(name, (2021, 12, 1, 0, 0, 0)), data,
                        compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def fat_jar(path: Path, libs: list[tuple[str, str, str]]) -> None:
    """A Spring Boot executable jar at ``path`` holding ``libs`` (group, artifact, version)."""
    nested = {f"BOOT-INF/lib/{a}-{v}.jar": jar_bytes(g, a, v) for g, a, v in libs}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jar_bytes("com.example", path.stem, "0.0.1-SNAPSHOT", nested=nested))


def shaded_jar(path: Path, coordinates: list[tuple[str, str, str]]) -> None:
    """An uber jar as maven-shade-plugin makes it: the classes and the ``pom.properties`` of
    every library folded into one archive (the first coordinates are the jar's own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nCreated-By: Maven Shade "
                    "Plugin\r\nMain-Class: com.example.tool.Main\r\n\r\n")
        for group, artifact, version in coordinates:
            zf.writestr(f"META-INF/maven/{group}/{artifact}/pom.properties",
                        f"#Generated by Maven\r\ngroupId={group}\r\nartifactId={artifact}\r\n"
                        f"version={version}\r\n")
            zf.writestr(f"{group.replace('.', '/')}/{artifact.replace('-', '')}/A.class",
                        b"\xca\xfe\xba\xbe")


def plain_jar(path: Path, group: str, artifact: str, version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jar_bytes(group, artifact, version))


# -- npm -------------------------------------------------------------------------------------------

def npm(node_modules: Path, name: str, version: str) -> None:
    """``node_modules/<name>`` as npm installs it (package.json, and a nested package.json
    that is not a package: lodash's and others' ``fp``-style subfolders)."""
    d = node_modules / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "package.json").write_text(json.dumps({
        "name": name, "version": version, "description": f"{name} {version}",
        "main": "index.js", "license": "MIT", "_resolved":
        f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz"}, indent=2))
    (d / "index.js").write_text("module.exports = {};\n")
    (d / "lib").mkdir(exist_ok=True)
    (d / "lib" / "package.json").write_text('{"type": "commonjs"}\n')


# -- the image -------------------------------------------------------------------------------------

def write_base(root: Path) -> None:
    """Layer 1: a Debian 12 base, merged /usr, with python3-requests from dpkg."""
    for d in ("usr/bin", "usr/lib", "usr/sbin", "etc", "var/lib/dpkg/info", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "lib", "sbin"):
        (root / link).symlink_to(f"usr/{link}")
    (root / "etc/os-release").write_text(OS_RELEASE)
    (root / "var/lib/dpkg/status").write_text(DPKG_STATUS)
    (root / "var/lib/dpkg/info/base-files.list").write_text("/.\n/etc\n/etc/os-release\n")
    files = wheel(root / DEB_SITE, "requests", "2.28.1", ["requests"], installer="debian")
    # dpkg lists every directory and file it unpacked, absolute, parents first.
    owned = {"/usr", "/usr/lib", "/usr/lib/python3", f"/{DEB_SITE}"}
    for f in files:
        parts = f.split("/")
        for i in range(1, len(parts) + 1):
            owned.add(f"/{DEB_SITE}/{'/'.join(parts[:i])}")
    owned.discard(f"/{DEB_SITE}/requests-2.28.1.dist-info/RECORD")  # Debian drops RECORD
    (root / DEB_SITE / "requests-2.28.1.dist-info/RECORD").unlink()
    (root / "var/lib/dpkg/info/python3-requests.list").write_text(
        "/.\n" + "".join(f"{p}\n" for p in sorted(owned)))


def write_apps(root: Path) -> None:
    """Layer 2: the applications, with old (vulnerable) and new (fixed) packages."""
    site, venv = root / SITE, root / VENV_SITE
    for name, version, modules in (("requests", "2.19.0", ["requests"]),
                                   ("urllib3", "1.24.1", ["urllib3"]),
                                   ("Jinja2", "2.10", ["jinja2"]),
                                   ("PyYAML", "5.3", ["yaml", "_yaml"])):
        wheel(site, name, version, modules)
    for name, version, modules in (("requests", "2.32.3", ["requests"]),
                                   ("urllib3", "2.2.3", ["urllib3"]),
                                   ("Jinja2", "3.1.4", ["jinja2"]),
                                   ("PyYAML", "6.0.2", ["yaml", "_yaml"])):
        wheel(venv, name, version, modules)

    gemspec(root / BUNDLE, "nokogiri", "1.13.3", platform="x86_64-linux")
    gemspec(root / BUNDLE, "activerecord", "6.1.6")
    gemspec(root / BUNDLE, "rack", "2.2.22")
    gemspec(root / SYSTEM_GEMS, "nokogiri", "1.19.4")
    gemspec(root / SYSTEM_GEMS, "activerecord", "7.1.5.2")
    gemspec(root / SYSTEM_GEMS, "rack", "3.2.6")

    plain_jar(root / LOG4J, "org.apache.logging.log4j", "log4j-core", "2.14.1")
    plain_jar(root / "opt/tools/lib/log4j-core-2.17.1.jar", "org.apache.logging.log4j",
              "log4j-core", "2.17.1")
    fat_jar(root / FAT_JAR, [("com.fasterxml.jackson.core", "jackson-databind", "2.13.2"),
                             ("org.apache.commons", "commons-text", "1.9"),
                             ("org.springframework", "spring-beans", "5.3.17")])
    shaded_jar(root / SHADED_JAR, [("com.example", "tool", "1.0"),
                                   ("org.springframework", "spring-webmvc", "5.3.17"),
                                   ("org.springframework", "spring-core", "5.3.17")])
    fat_jar(root / FIXED_FAT_JAR, [("com.fasterxml.jackson.core", "jackson-databind", "2.13.2.1"),
                                   ("org.apache.commons", "commons-text", "1.10.0"),
                                   ("org.springframework", "spring-beans", "5.3.18")])

    app = root / "srv/web/node_modules"
    npm(app, "lodash", "4.17.15")
    npm(app, "minimist", "1.2.5")
    npm(app, "express", "4.19.1")
    npm(app / "mkdirp/node_modules", "minimist", "1.2.8")   # a fixed copy, nested
    npm(app, "mkdirp", "1.0.4")
    fixed = root / "srv/api/node_modules"
    npm(fixed, "lodash", "4.17.21")
    npm(fixed, "minimist", "1.2.6")
    npm(fixed, "express", "4.19.2")
    npm(fixed, "axios", "0.28.0")
    (root / "srv/web/package.json").write_text('{"name": "web", "version": "0.0.0"}\n')


def write_upgrade(root: Path) -> None:
    """Layer 3 (with whiteouts of what it replaces): ``pip install -U idna`` over 2.7."""
    wheel(root / SITE, "idna", "3.10", ["idna"])


def write_root(root: Path) -> None:
    """The image's merged root filesystem (what a container of it sees)."""
    root.mkdir(parents=True)
    write_base(root)
    write_apps(root)
    write_upgrade(root)


# -- OCI -------------------------------------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _tar_tree(src: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """An uncompressed layer tar of the tree at ``src`` (and ``extra`` files)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(src.rglob("*")):
            info = tar.gettarinfo(str(p), arcname=str(p.relative_to(src)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 1_700_000_000
            if info.isreg():
                with p.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


@dataclass(frozen=True)
class Image:
    root: Path          # the merged root filesystem
    layout: Path        # an OCI image layout of it
    archive: Path       # an OCI archive (a tar of the layout)
    manifest: str       # the manifest's digest


def build_image(work: Path, *, ref: str = "latest") -> Image:
    """The image in three forms under ``work``: a root directory, an OCI layout, an archive.

    Layer 1 is the Debian base; layer 2 the applications, plus idna 2.7 and :data:`WHITED_OUT`
    (an older log4j-core); layer 3 upgrades idna to 3.10 and whites out idna 2.7's dist-info
    and the old jar: the image holds neither.
    """
    root = work / "root"
    write_root(root)
    base, apps = work / "layer1", work / "layer2"
    base.mkdir()
    write_base(base)
    apps.mkdir()
    write_apps(apps)
    wheel(apps / SITE, "idna", "2.7", ["idna"])
    old = jar_bytes("org.apache.logging.log4j", "log4j-core", "2.14.0")
    whiteout_dir, whiteout_name = WHITED_OUT.rsplit("/", 1)
    upgrade = work / "layer3"
    upgrade.mkdir()
    write_upgrade(upgrade)
    layers = [_tar_tree(base), _tar_tree(apps, {WHITED_OUT: old}),
              _tar_tree(upgrade, {f"{whiteout_dir}/.wh.{whiteout_name}": b"",
                                  f"{SITE}/.wh.idna-2.7.dist-info": b""})]
    layout = work / "layout"
    descs, diff_ids = [], []
    for raw in layers:
        blob = gzip.compress(raw, mtime=0)
        descs.append({"mediaType": OCI_LAYER, "digest": _blob(layout, blob), "size": len(blob)})
        diff_ids.append(f"sha256:{hashlib.sha256(raw).hexdigest()}")
    config = _canonical({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                                    "Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": f"layer {i + 1}"} for i in range(3)]})
    manifest = _canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": _blob(layout, config),
                                      "size": len(config)},
                           "layers": descs})
    digest = _blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_bytes(_canonical({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"org.opencontainers.image.ref.name": ref}}]}))
    archive = work / "image.oci.tar"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(layout.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    return Image(root=root, layout=layout, archive=archive, manifest=digest)
