"""Layered images end to end: the RPM pony from a local repository, pony-site on it, run in
podman; a child that adds packages with dnf into its base's root; a grandchild; rebuilding the
base moves the child."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLES, Cli, free_port, require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """This module's own ALICORN_HOME: it publishes pony-rpm builds from other repository
    states, which must not become the previous image of other modules' pony builds."""
    c = Cli(tmp_path_factory.mktemp("layered-home"))
    yield c
    c.down()


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("rpmbuild", "createrepo_c", "dnf", "busybox", "podman", "skopeo", "docker-registry")
    d = tmp_path_factory.mktemp("layered") / "pony"
    shutil.copytree(EXAMPLES / "pony" / "rpm", d, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(d / "build-repo"), str(d / "repo"), "--version", "1"], check=True,
                   capture_output=True)
    return d


def show(cli: Cli, ident: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(cli("show", ident, "--json", check=True).stdout)
    return shown


def build(cli: Cli, recipe: Path, *args: str) -> dict[str, Any]:
    rc, result = cli.json("build", str(recipe), *args)
    assert rc == 0 and result["state"] == "done", result
    return result


def layer_names(cli: Cli, result: dict[str, Any], index: int) -> list[str]:
    layout = cli.home / "images" / result["digest"].split(":")[1]
    layer = show(cli, result["build_id"])["outputs"]["layers"][index]["digest"].split(":")[1]
    with tarfile.open(layout / "blobs" / "sha256" / layer) as tar:
        return tar.getnames()


@pytest.fixture(scope="module")
def base(shared_cli: Cli, example: Path) -> dict[str, Any]:
    return build(shared_cli, example / "pony.yaml")


@pytest.fixture(scope="module")
def site(shared_cli: Cli, example: Path, base: dict[str, Any]) -> dict[str, Any]:
    return build(shared_cli, example / "site.yaml")


def test_site_is_layered_on_the_published_pony(shared_cli: Cli, base: dict[str, Any],
                                               site: dict[str, Any]) -> None:
    shown = show(shared_cli, site["build_id"])
    base_shown = show(shared_cli, base["build_id"])
    assert shown["base_digest"] == base["digest"]
    assert shown["inputs"]["base"] == {"name": "pony-rpm", "digest": base["digest"],
                                       "build_id": base["build_id"]}
    # The base's layer, same digest, then the site's own.
    layers = shown["outputs"]["layers"]
    assert len(layers) == 2
    assert layers[0] == base_shown["outputs"]["layers"][0]
    own = layer_names(shared_cli, site, 1)
    assert "var/www/html/site.html" in own
    assert "usr/bin/busybox" not in own and "var/www/html/index.html" not in own
    # The whole image's packages: the base's, read from the child's rpm database.
    versions = {p["name"]: p["version"] for p in shown["package_list"]}
    assert versions == {p["name"]: p["version"] for p in base_shown["package_list"]}
    assert {"pony-filesystem", "busybox", "pony-content"} <= set(versions)
    assert versions["busybox"] == "1.35.0-1.fc40"
    assert [p["checksum"] for p in shown["package_list"]] == \
        [p["checksum"] for p in base_shown["package_list"]]


def test_site_config_inherits_and_overrides(shared_cli: Cli, base: dict[str, Any],
                                            site: dict[str, Any]) -> None:
    layout = shared_cli.home / "images" / site["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / site["digest"].split(":")[1])
                          .read_bytes())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"]
                         .split(":")[1]).read_bytes())
    c = config["config"]
    assert c["Entrypoint"][:2] == ["/usr/bin/busybox", "httpd"]     # the base's
    assert c["ExposedPorts"] == {"80/tcp": {}}
    assert c["Labels"]["org.opencontainers.image.title"] == "pony-site"
    assert c["Labels"]["org.opencontainers.image.description"].startswith("A page of its own")
    assert "org.alicorn.healthcheck" in c["Labels"]                 # inherited
    assert "site.html" in c["Labels"]["org.alicorn.tests"]          # the child's
    assert len(config["rootfs"]["diff_ids"]) == 2
    assert base["digest"] in config["history"][-1]["created_by"]
    assert len(config["history"]) == 2


def test_site_is_served_tested_and_verified(shared_cli: Cli, site: dict[str, Any]) -> None:
    port = free_port()
    name = f"pony-site-{port}"
    try:
        shared_cli("run", site["image"], "--name", name, "--port", str(port), "--address",
                   "127.0.0.1", check=True, timeout=300)
        for path, text in (("/site.html", "The pony site"), ("/", "Hello from pony")):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                assert resp.status == 200
                assert text in resp.read().decode()
    finally:
        shared_cli("stop", name)
    rc, tested = shared_cli.json("test", site["digest"], timeout=300)
    assert rc == 0 and tested["passed"] is True, tested
    verified = shared_cli("verify", site["digest"])
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_site_provenance_names_the_base(shared_cli: Cli, base: dict[str, Any],
                                        site: dict[str, Any]) -> None:
    envelope = json.loads((shared_cli.home / "builds" / site["build_id"] /
                           "provenance.dsse.json").read_bytes())
    stmt = json.loads(base64.b64decode(envelope["payload"]))
    deps = stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
    dep = next(d for d in deps if d["name"] == "base-image")
    registry = site["image"].split("/")[0]
    assert dep == {"name": "base-image", "uri": f"{registry}/pony-rpm@{base['digest']}",
                   "digest": {"sha256": base["digest"].split(":")[1]}}


def test_site_is_reproducible(shared_cli: Cli, example: Path, site: dict[str, Any]) -> None:
    again = build(shared_cli, example / "site.yaml", "--no-cache", "--no-push")
    assert again["cached_from"] is None
    assert again["digest"] == site["digest"]
    cached = build(shared_cli, example / "site.yaml", "--no-push")
    assert cached["cached_from"] is not None and cached["digest"] == site["digest"]


def test_child_adds_packages_with_dnf_into_the_base_root(shared_cli: Cli,
                                                         example: Path) -> None:
    """A base without the page, a child that installs pony-content into the base's root."""
    text = (example / "pony.yaml").read_text()
    bare = text.replace("name: pony-rpm", "name: pony-bare").replace("  - pony-content\n", "")
    bare = bare.split("tests:")[0]
    (example / "bare.yaml").write_text(bare)
    (example / "bare-site.yaml").write_text(
        "recipe: 1\nname: pony-bare-site\n"
        "distribution: {type: rpm, release: \"40\", architecture: x86_64}\n"
        "base: pony-bare\n"
        "repositories:\n  - {name: pony, url: repo, gpgcheck: false}\n"
        "packages: [pony-content]\n"
        "tests:\n  - name: the page is served\n"
        "    http: {path: /, status: 200, contains: Hello from pony}\n")
    bare_built = build(shared_cli, example / "bare.yaml")
    child = build(shared_cli, example / "bare-site.yaml")
    shown = show(shared_cli, child["build_id"])
    assert shown["base_digest"] == bare_built["digest"]
    bare_names = {p["name"] for p in show(shared_cli, bare_built["build_id"])["package_list"]}
    assert "pony-content" not in bare_names and "busybox" in bare_names
    assert {p["name"] for p in shown["package_list"]} == bare_names | {"pony-content"}
    own = layer_names(shared_cli, child, 1)
    assert "var/www/html/index.html" in own
    assert "usr/lib/sysimage/rpm/rpmdb.sqlite" in own
    assert "usr/bin/busybox" not in own
    for leftover in ("usr/lib/sysimage/rpm/rpmdb.sqlite-wal",
                     "usr/lib/sysimage/rpm/rpmdb.sqlite-shm", "var/lib/dnf", "var/log/dnf.log",
                     "var/cache/ldconfig/aux-cache"):
        assert leftover not in own and not any(n.startswith(leftover + "/") for n in own)
    # dnf into a non-empty root is as reproducible as into an empty one.
    again = build(shared_cli, example / "bare-site.yaml", "--no-cache", "--no-push")
    assert again["digest"] == child["digest"]
    rc, tested = shared_cli.json("test", child["image"], timeout=300)
    assert rc == 0 and tested["passed"] is True, tested


def test_grandchild_builds_on_a_layered_base(shared_cli: Cli, example: Path,
                                             site: dict[str, Any]) -> None:
    (example / "grandchild.yaml").write_text(
        "recipe: 1\nname: pony-site-more\n"
        "distribution: {type: rpm, release: \"40\", architecture: x86_64}\n"
        "base: pony-site\n"
        "files:\n  - {path: /var/www/html/more.html, content: more pony}\n"
        "  - {path: /var/www/html/site.html, content: replaced}\n")
    built = build(shared_cli, example / "grandchild.yaml", "--no-push")
    shown = show(shared_cli, built["build_id"])
    site_layers = show(shared_cli, site["build_id"])["outputs"]["layers"]
    assert shown["outputs"]["layers"][:2] == site_layers
    assert len(shown["outputs"]["layers"]) == 3
    assert shown["base_digest"] == site["digest"]
    own = layer_names(shared_cli, built, 2)
    assert {"var/www/html/more.html", "var/www/html/site.html"} <= set(own)
    assert "busybox" in {p["name"] for p in shown["package_list"]}


def test_missing_or_wrong_base_is_a_clear_error(shared_cli: Cli, example: Path,
                                                base: dict[str, Any]) -> None:
    (example / "orphan.yaml").write_text(
        "recipe: 1\nname: pony-orphan\n"
        "distribution: {type: rpm, release: \"40\", architecture: x86_64}\n"
        "base: no-such-pony\n")
    rc, result = shared_cli.json("build", str(example / "orphan.yaml"), "--no-push")
    assert rc == 1 and result["state"] == "failed"
    assert "base: there is no published build of recipe 'no-such-pony'" in result["error"]
    assert "orphan.yaml:4" in result["error"]
    (example / "debian-on-rpm.yaml").write_text(
        "recipe: 1\nname: pony-deb-on-rpm\n"
        "distribution: {type: debian, release: bookworm}\n"
        "base: pony-rpm\n")
    rc, result = shared_cli.json("build", str(example / "debian-on-rpm.yaml"), "--no-push")
    assert rc == 1
    assert "is a rpm image; this recipe's distribution is debian" in result["error"]
    (example / "pinned.yaml").write_text(
        "recipe: 1\nname: pony-pinned\n"
        "distribution: {type: rpm, release: \"40\", architecture: x86_64}\n"
        f"base: {{digest: 'sha256:{'0' * 64}'}}\n")
    rc, result = shared_cli.json("build", str(example / "pinned.yaml"), "--no-push")
    assert rc == 1
    assert f"no build in this store made the image sha256:{'0' * 64}" in result["error"]


def test_rebuilt_base_moves_the_child(shared_cli: Cli, example: Path, tmp_path: Path,
                                      base: dict[str, Any], site: dict[str, Any]) -> None:
    updated = tmp_path / "pony"
    shutil.copytree(example, updated, ignore=shutil.ignore_patterns("repo"))
    subprocess.run([str(updated / "build-repo"), str(updated / "repo")], check=True,
                   capture_output=True)
    new_base = build(shared_cli, updated / "pony.yaml")
    assert new_base["digest"] != base["digest"]
    # (A rebuild service watching this home may have rebuilt the site on the new base
    # already; then this build reuses its image, which is as good.)
    child = build(shared_cli, updated / "site.yaml")
    assert child["digest"] != site["digest"]
    shown = show(shared_cli, child["build_id"])
    assert shown["base_digest"] == new_base["digest"]
    assert {p["name"]: p["version"] for p in shown["package_list"]}["busybox"] == \
        "1.35.0-2.fc40"


def test_debian_child_adds_files_without_a_package_manager(cli: Cli, tmp_path: Path) -> None:
    """A Debian base (a root with a dpkg status, put in the store as a published build) and a
    files-only child: no repository, no mmdebstrap, the base's packages in the child."""
    import io

    from alicorn.config import load_settings
    from alicorn.image.layer import write_layer
    from alicorn.image.oci import new_layout, store_layout, write_image
    from alicorn.recipe import parse_recipe
    from alicorn.store.builds import DONE, BuildStore, Submission

    base_text = ("recipe: 1\nname: deb-base\ndistribution: {type: debian, release: bookworm}\n"
                 "repositories: [{name: m, suite: bookworm, url: 'http://x.invalid/debian'}]\n"
                 "packages: [busybox]\n")
    tree = tmp_path / "tree"
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(
        "Package: busybox\nStatus: install ok installed\nArchitecture: amd64\n"
        "Version: 1:1.35.0-4+b3\nSource: busybox (1:1.35.0-4)\n\n")
    (tree / "srv").mkdir()
    settings = load_settings(cli.home)
    store = BuildStore(settings.database_url)
    layout = tmp_path / "layout"
    blobs = new_layout(layout)
    buf = io.BytesIO()
    layer = write_layer(tree, buf, source_date_epoch=0)
    (blobs / layer.digest.hex).write_bytes(buf.getvalue())
    info = write_image(layout, parse_recipe(base_text, file="b.yaml", base_dir=tmp_path),
                       [layer], 0)
    store_layout(layout, settings.images_dir, info.digest)
    row = store.submit(Submission(argv=["t"], source_kind="file", recipe_path="/b.yaml",
                                  recipe_content=base_text))
    store.finish(row.id, DONE, digest=str(info.digest), published=True, recipe_name="deb-base",
                 recipe_content=base_text)

    child = tmp_path / "child.yaml"
    child.write_text("recipe: 1\nname: deb-site\ndistribution: {type: debian, release: bookworm}\n"
                     "base: deb-base\nfiles: [{path: /srv/page.html, content: hi}]\n")
    result = build(cli, child, "--no-push")
    shown = show(cli, result["build_id"])
    assert shown["base_digest"] == str(info.digest)
    assert [(p["name"], p["type"], p["version"]) for p in shown["package_list"]] == \
        [("busybox", "deb", "1:1.35.0-4+b3")]
    assert shown["outputs"]["layers"][0]["digest"] == str(layer.digest)
    assert layer_names(cli, result, 1) == ["srv", "srv/page.html"]
    log = Path(result["log"]).read_text()
    assert "no packages to add: no package manager runs" in log and "mmdebstrap" not in log
