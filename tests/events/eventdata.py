"""Builds and advisories for the rebuild service's tests: build rows through BuildStore
(submit, claim, finish with packages), advisories through real updateinfo XML imported into
the AdvisoryStore."""

from __future__ import annotations

import os
import socket
import zlib
from pathlib import Path
from typing import Any

from alicorn.advisories.feeds import load
from alicorn.advisories.store import AdvisoryStore
from alicorn.compose import Package
from alicorn.store.builds import DONE, BuildStore, Submission

RECIPE = "recipe: 1\nname: {name}\n"


def rpm(name: str, version: str, release: str, arch: str = "x86_64") -> Package:
    return Package(type="rpm", name=name, version=f"{version}-{release}", arch=arch,
                   source=f"{name}-{version}-{release}.src.rpm",
                   purl=f"pkg:rpm/fedora/{name}@{version}-{release}?arch={arch}"
                        "&distro=fedora-40")


def busybox(release: str = "1.fc40") -> Package:
    return rpm("busybox", "1.35.0", release)


def worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def build(store: BuildStore, name: str, packages: list[Package], *, digest: str | None = None,
          base: tuple[str, str] | None = None, published: bool = True, state: str = DONE,
          checks: dict[str, Any] | None = None, source_kind: str = "file") -> str:
    """A finished build of recipe ``name``; ``base`` (name, digest) makes it layered."""
    if source_kind == "git":
        sub = Submission(argv=["alicorn", "build", "/src/repo.git"], source_kind="git",
                         source_url="/src/repo.git", source_ref="main",
                         recipe_path=f"{name}.yaml", options={"compression_level": 3})
    else:
        sub = Submission(argv=["alicorn", "build", f"/r/{name}.yaml"], source_kind="file",
                         recipe_path=f"/r/{name}.yaml",
                         recipe_content=RECIPE.format(name=name),
                         options={"compression_level": 3, "no_cache": True})
    row = store.submit(sub)
    claimed = store.claim_next(worker())
    assert claimed is not None and claimed.id == row.id
    values: dict[str, Any] = {"recipe_name": name}
    if source_kind == "git":
        values["source_commit"] = "c0ffee" * 6 + "abcd"
    if base is not None:
        values["base_digest"] = base[1]
        values["inputs"] = {"base": {"name": base[0], "digest": base[1], "build_id": "x"}}
    store.update(row.id, **values)
    finish(store, row.id, packages, digest=digest, published=published, state=state,
           checks=checks)
    return row.id


def finish(store: BuildStore, build_id: str, packages: list[Package], *,
           digest: str | None = None, published: bool = True, state: str = DONE,
           checks: dict[str, Any] | None = None, error: str | None = None) -> str:
    digest = digest or "sha256:" + build_id.ljust(64, "0")[:64]
    store.finish(build_id, state, packages=packages if state == DONE else (),
                 digest=digest if state == DONE else None,
                 image_ref=f"127.0.0.1:5000/x@{digest}" if state == DONE else None,
                 published=published and state == DONE, checks=checks, error=error)
    return digest


def run_queued(store: BuildStore, packages: list[Package] | dict[str, list[Package]], *,
               checks: dict[str, Any] | None = None) -> list[str]:
    """Act as the worker for every queued build: claim it and finish it done with
    ``packages`` (per recipe name when a dict)."""
    done = []
    while (row := store.claim_next(worker())) is not None:
        name = row.recipe_content.split("name: ", 1)[1].split()[0] if row.recipe_content \
            else row.recipe_path.removesuffix(".yaml")
        store.update(row.id, recipe_name=name)
        pk = packages[name] if isinstance(packages, dict) else packages
        finish(store, row.id, pk, checks=checks or {"tests": "passed", "gate": "passed",
                                                    "fixed": "passed"})
        done.append(row.id)
    return done


def updateinfo(path: Path, updates: list[tuple[str, str, str, str]], *,
               updated: str = "2024-04-01 00:00:00") -> Path:
    """An updateinfo.xml of security updates (id, package name, version, release)."""
    parts = []
    for ident, name, version, release in updates:
        cve = f"CVE-2024-{zlib.crc32(ident.encode()) % 99999:05d}"
        parts.append(f"""  <update from="updates@fedoraproject.org" status="stable" type="security"
          version="2.0">
    <id>{ident}</id>
    <title>{name}-{version}-{release}</title>
    <issued date="2024-03-31 00:00:00"/>
    <updated date="{updated}"/>
    <release>Fedora 40</release>
    <severity>Important</severity>
    <summary>{name} security update</summary>
    <description>fix</description>
    <references>
      <reference href="https://www.cve.org/CVERecord?id={cve}" id="{cve}" type="cve"
        title="{cve}"/>
    </references>
    <pkglist>
      <collection short="F40">
        <name>Fedora 40</name>
        <package name="{name}" version="{version}" release="{release}" epoch="0"
          arch="x86_64">
          <filename>{name}-{version}-{release}.x86_64.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>""")
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<updates>\n'
                    + "\n".join(parts) + "\n</updates>\n", encoding="utf-8")
    return path


def import_feed(url: str, path: Path) -> None:
    result = load(path)
    assert result.advisories, result.warnings
    AdvisoryStore(url).import_advisories(result.advisories, source=str(path))
