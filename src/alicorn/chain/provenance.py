"""SLSA v1 provenance: an in-toto Statement v1 about the image, signed in a DSSE envelope.

The statement names the image (subject), everything the build consumed (resolvedDependencies:
the commit, the recipe, a layered image's base image, each repository's metadata, every package
with its purl and checksum), how it was asked for (externalParameters: the exact argv, source
and recipe) and what it left besides the image (byproducts: the build log and the SBOMs).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:alicorn:build-type:oci-image:v1"


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha(digest: str) -> dict[str, str]:
    algo, _, hexa = digest.partition(":")
    return {algo: hexa}


def statement(*, image_name: str, image_digest: str, build_id: str, builder_id: str,
              builder_version: str, argv: list[str], source: dict[str, Any],
              recipe: dict[str, Any], inputs: dict[str, Any], packages: list[dict[str, Any]],
              byproducts: dict[str, str], started: datetime | None,
              finished: datetime | None, inputs_entry: int | None,
              trigger: dict[str, Any] | None = None) -> dict[str, Any]:
    """The in-toto statement for one image (plain data, ready for canonical JSON).

    ``trigger`` says why the rebuild service asked for the build (advisories, events, the
    image it replaces); it is how the build was asked for, not what it consumed, so it is an
    external parameter and stays out of the input key."""
    deps: list[dict[str, Any]] = []
    if source.get("commit"):
        deps.append({"name": "source", "uri": f"git+{source['url']}@{source.get('ref')}",
                     "digest": {"gitCommit": source["commit"]}})
    deps.append({"name": "recipe", "uri": recipe["path"], "digest": _sha(recipe["digest"])})
    base = inputs.get("base")
    if base:
        # A layered image: the image it was built on, where this one is published.
        registry = image_name.split("/", 1)[0]
        deps.append({"name": "base-image", "uri": f"{registry}/{base['name']}@{base['digest']}",
                     "digest": _sha(base["digest"])})
    for repo in inputs.get("repositories", []):
        deps.append({"name": f"repository:{repo['name']}", "uri": repo["url"],
                     "digest": _sha(repo["metadata"])})
    for path, digest in sorted(inputs.get("files", {}).items()):
        deps.append({"name": f"file:{path}", "digest": _sha(digest)})
    for pkg in packages:
        dep: dict[str, Any] = {"name": pkg["name"], "uri": pkg["purl"]}
        if pkg.get("checksum"):
            dep["digest"] = _sha(pkg["checksum"])
        deps.append(dep)
    metadata: dict[str, Any] = {"invocationId": build_id}
    if started is not None:
        metadata["startedOn"] = rfc3339(started)
    if finished is not None:
        metadata["finishedOn"] = rfc3339(finished)
    internal: dict[str, Any] = {
        "sourceDateEpoch": inputs.get("source_date_epoch"),
        "compressionLevel": inputs.get("compression_level"),
        "inputKey": inputs.get("key"),
    }
    if inputs_entry is not None:
        internal["inputsLogEntry"] = inputs_entry
    external: dict[str, Any] = {"argv": argv, "source": source,
                                "recipe": {"path": recipe["path"], "digest": recipe["digest"]}}
    if trigger is not None:
        external["trigger"] = trigger
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": image_name, "digest": _sha(image_digest)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": builder_id, "version": {"alicorn": builder_version}},
                "metadata": metadata,
                "byproducts": [{"name": name, "digest": _sha(digest)}
                               for name, digest in sorted(byproducts.items())],
            },
        },
    }


def subject_digest(stmt: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the statement's single subject."""
    subjects = stmt.get("subject") or []
    if len(subjects) != 1 or "sha256" not in subjects[0].get("digest", {}):
        raise ValueError("the statement must name exactly one subject with a sha256 digest")
    return "sha256:" + str(subjects[0]["digest"]["sha256"])


def byproduct_digests(stmt: dict[str, Any]) -> dict[str, str]:
    out = {}
    for item in stmt["predicate"]["runDetails"].get("byproducts", []):
        algo, value = next(iter(item["digest"].items()))
        out[item["name"]] = f"{algo}:{value}"
    return out
