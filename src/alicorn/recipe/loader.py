"""Reading recipes: YAML with line numbers, validated against the JSON schema.

Every error names the file, the line and the field, e.g.
``pony.yaml:12: repositories[1].url: 'ftp://x' is not valid``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from alicorn.errors import RecipeError
from alicorn.recipe.model import (
    DEFAULT_CONTENT_PATH,
    Artifact,
    BaseRef,
    FileSpec,
    Healthcheck,
    HttpCheck,
    Recipe,
    Repository,
    TestSpec,
)

MAX_RECIPE_BYTES = 1 << 20

Path_ = tuple[str | int, ...]


@cache
def schema() -> dict[str, Any]:
    text = resources.files("alicorn.recipe").joinpath("recipe-v1.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def load_recipe(path: Path, *, display_name: str | None = None) -> Recipe:
    """Read and validate the recipe at ``path``."""
    name = display_name or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(f"recipe is {size} bytes; at most {MAX_RECIPE_BYTES} are allowed",
                              file=name)
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise RecipeError("no such file", file=name) from e
    except IsADirectoryError as e:
        raise RecipeError("is a directory, not a recipe file", file=name) from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"not UTF-8 text (byte {e.start})", file=name) from e
    return parse_recipe(text, file=name, base_dir=path.parent)


def parse_recipe(text: str, *, file: str, base_dir: Path) -> Recipe:
    if len(text.encode()) > MAX_RECIPE_BYTES:
        raise RecipeError(f"recipe is larger than {MAX_RECIPE_BYTES} bytes", file=file)
    data, lines = _parse_yaml(text, file)
    _validate(data, lines, file)
    return _build(text, data, lines, file, base_dir)


# -- YAML with positions ---------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps and odd scalars as the strings the user wrote."""


# Keep dates ("2024-01-01") as the strings the user wrote: timestamps are not resolved.
# YAML 1.1 booleans (yes/no/on/off) and numbers still are; where the schema wants a string the
# error says to quote the value.
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse_yaml(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = e.problem or str(e)
        raise RecipeError(f"not valid YAML: {problem}", file=file, line=line) from e
    except yaml.YAMLError as e:
        raise RecipeError(f"not valid YAML: {e}", file=file) from e
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
        raise RecipeError("the recipe is empty", file=file, line=1)
    lines: dict[Path_, int] = {}
    loader = _Loader("")
    data = _construct(node, (), lines, loader, file, set())
    return data, lines


def _construct(node: yaml.Node, path: Path_, lines: dict[Path_, int], loader: _Loader,
               file: str, seen: set[int]) -> Any:
    # An alias makes the composer hand out the same node again.  Expanding aliases of aliases
    # grows exponentially (the "billion laughs"), and a recipe never needs them: refuse.
    if id(node) in seen:
        # The node's mark is the anchor's; the nearest enclosing field is where the alias is.
        raise RecipeError("YAML aliases (*name) are not supported in recipes", file=file,
                          line=_line_of(path, lines), field=_dotted(path))
    seen.add(id(node))
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise RecipeError("mapping keys must be plain strings", file=file,
                                  line=key_node.start_mark.line + 1, field=_dotted(path))
            key = key_node.value
            if key == "<<":
                raise RecipeError("YAML merge keys are not supported", file=file,
                                  line=key_node.start_mark.line + 1, field=_dotted(path))
            if key in out:
                raise RecipeError(f"key {key!r} appears twice", file=file,
                                  line=key_node.start_mark.line + 1, field=_dotted((*path, key)))
            out[key] = _construct(value_node, (*path, key), lines, loader, file, seen)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines, loader, file, seen)
                for i, item in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode):
        try:
            return loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as e:
            problem = getattr(e, "problem", None) or str(e)
            raise RecipeError(f"cannot read the value {node.value!r} ({node.tag}): {problem}",
                              file=file, line=node.start_mark.line + 1,
                              field=_dotted(path)) from e
    raise RecipeError("unsupported YAML node", file=file, line=node.start_mark.line + 1,
                      field=_dotted(path))


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _line_of(path: Path_, lines: dict[Path_, int]) -> int | None:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


# -- schema validation -----------------------------------------------------------------------

def _validate(data: Any, lines: dict[Path_, int], file: str) -> None:
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (_line_of(tuple(e.absolute_path),
                                                                          lines) or 0))
    if not errors:
        return
    first = _specific(errors[0])
    path: Path_ = tuple(first.absolute_path)
    message = _message(first)
    if first.validator == "additionalProperties" and isinstance(first.instance, dict) \
            and isinstance(first.schema, dict):
        allowed = set(first.schema.get("properties", {}))
        extra = sorted(k for k in first.instance if k not in allowed)
        if extra:
            path = (*path, extra[0])
            message = f"unknown field (allowed here: {', '.join(sorted(allowed))})"
    elif first.validator == "required":
        pass
    more = f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} after this one)" \
        if len(errors) > 1 else ""
    raise RecipeError(message + more, file=file, line=_line_of(path, lines),
                      field=_dotted(path))


def _specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The problem inside a ``oneOf`` that the value evidently meant (a gate's unknown check,
    an option of the wrong type, a misspelt key), else the ``oneOf`` error itself."""
    if error.validator != "oneOf" or not error.context:
        return error
    deep: jsonschema.ValidationError = jsonschema.exceptions.best_match([error])
    if len(deep.absolute_path) > len(error.absolute_path):
        return deep
    depth = len(error.absolute_path)
    wrong_type = {c.schema_path[0] for c in error.context
                  if c.validator == "type" and len(c.absolute_path) == depth}
    fitting = [c for c in error.context if c.schema_path[0] not in wrong_type]
    if fitting and len({c.schema_path[0] for c in fitting}) == 1:
        best: jsonschema.ValidationError | None = jsonschema.exceptions.best_match(fitting)
        return best or error
    return error


def _message(error: jsonschema.ValidationError) -> str:
    v = error.validator
    if v == "oneOf" and isinstance(error.schema, dict):
        alts: list[dict[str, Any]] = error.schema.get("oneOf", [])
        keys = sorted({k for alt in alts for k in alt.get("required", [])}
                      | {str(c) for alt in alts for c in alt.get("enum", [])})
        return f"needs exactly one of: {', '.join(keys)}"
    if v == "const" and isinstance(error.schema, dict):
        return f"must be {error.schema['const']!r}, not {error.instance!r}"
    if v == "enum" and isinstance(error.schema, dict):
        choices = ", ".join(repr(c) for c in error.schema["enum"])
        return f"{error.instance!r} is not one of {choices}"
    if v == "pattern":
        return f"{error.instance!r} does not have the expected form ({error.validator_value})"
    if v == "type" and error.validator_value == "string" and \
            isinstance(error.instance, (int, float, bool)):
        return (f"must be a string, but YAML read the unquoted value as "
                f"{type(error.instance).__name__} {error.instance!r}: put it in quotes")
    if v == "type":
        return f"must be of type {error.validator_value}, not {type(error.instance).__name__}"
    return error.message


# -- building the domain value ---------------------------------------------------------------

def _http(d: dict[str, Any] | None) -> HttpCheck | None:
    if d is None:
        return None
    return HttpCheck(path=d.get("path", "/"), port=d.get("port"), status=d.get("status", 200),
                     contains=d.get("contains"), header=tuple(sorted(d.get("header", {}).items())))


def _build(text: str, data: dict[str, Any], lines: dict[Path_, int], file: str,
           base_dir: Path) -> Recipe:
    dist = data["distribution"]
    kind = dist["type"]

    def err(message: str, path: Path_) -> RecipeError:
        return RecipeError(message, file=file, line=_line_of(path, lines), field=_dotted(path))

    raw_base = data.get("base")
    base = None
    if raw_base is not None:
        base = BaseRef(image=raw_base) if isinstance(raw_base, str) else \
            BaseRef(image=raw_base.get("image"), digest=raw_base.get("digest"))
    if base is None:
        for needed in ("repositories", "packages"):
            if not data.get(needed):
                raise err(f"{needed} must list at least one entry (only a layered recipe, "
                          f"one with base:, may leave it out)", (needed,))
    elif data.get("packages") and not data.get("repositories"):
        raise err("packages need repositories to come from", ("packages",))
    elif data.get("packages") and kind == "debian":
        # mmdebstrap composes only empty roots; apt inside a base's root would need its own
        # reproducibility work (lists, caches, logs, debconf, times) before it is sound.
        raise err("a layered Debian recipe cannot add packages yet (only files, artifacts "
                  "and settings on top of its base)", ("packages",))

    repos = []
    seen: set[str] = set()
    for i, r in enumerate(data.get("repositories", [])):
        if r["name"] in seen:
            raise err(f"repository name {r['name']!r} is used twice", ("repositories", i, "name"))
        seen.add(r["name"])
        if kind == "debian" and "suite" not in r:
            raise err("a Debian repository needs a suite (e.g. bookworm-security)",
                      ("repositories", i))
        if kind == "rpm" and "url" not in r:
            raise err("an RPM repository needs a url", ("repositories", i))
        if kind == "rpm" and "suite" in r:
            raise err("suite is for Debian repositories only", ("repositories", i, "suite"))
        url = r.get("url")
        if url is not None and not url.startswith(("http://", "https://", "file://", "/")) \
                and "://" in url:
            raise err(f"unsupported URL scheme in {url!r} (http, https, file or a path)",
                      ("repositories", i, "url"))
        repos.append(Repository(
            name=r["name"], url=url, suite=r.get("suite"),
            components=tuple(r.get("components", ["main"])),
            gpgcheck=r.get("gpgcheck", True), gpgkey=r.get("gpgkey"),
        ))
    if kind == "rpm" and "variant" in dist:
        raise err("variant is for Debian only", ("distribution", "variant"))

    files = []
    for i, f in enumerate(data.get("files", [])):
        owner = tuple(int(x) for x in f.get("owner", "0:0").split(":"))
        if "source" in f:
            src = (base_dir / f["source"]).resolve()
            if base_dir.resolve() not in src.parents:
                raise err(f"source {f['source']!r} leaves the recipe's directory",
                          ("files", i, "source"))
            if not src.is_file():
                raise err(f"source {f['source']!r} does not exist next to the recipe",
                          ("files", i, "source"))
        if ".." in f["path"].split("/"):
            raise err("path must not contain '..'", ("files", i, "path"))
        files.append(FileSpec(
            path=f["path"], content=f.get("content"), source=f.get("source"),
            directory=bool(f.get("directory", False)),
            mode=int(f["mode"], 8) if "mode" in f else None,
            owner=(owner[0], owner[1]),
        ))

    artifacts = tuple(Artifact(type=a["type"], url=a["url"], sha256=a["sha256"],
                               target=a.get("target")) for a in data.get("artifacts", []))

    hc = data.get("healthcheck")
    healthcheck = None
    if hc is not None:
        healthcheck = Healthcheck(
            http=_http(hc.get("http")), command=tuple(hc.get("command", ())),
            interval=hc.get("interval", "5s"), timeout=hc.get("timeout", "3s"),
            retries=hc.get("retries", 3), start_period=hc.get("start_period", "0s"),
        )
    tests = tuple(
        TestSpec(name=t.get("name", f"test {i + 1}"), http=_http(t.get("http")),
                 command=tuple(t.get("command", ())), exit_code=t.get("exit_code", 0),
                 output_contains=t.get("output_contains"))
        for i, t in enumerate(data.get("tests", []))
    )
    ports = tuple(data.get("ports", ()))
    for i, t in enumerate(tests):
        # A layered recipe's image exposes its base's ports unless it names its own.
        if t.http is not None and t.http.port is None and not ports and base is None:
            raise err("an HTTP test needs a port, or the recipe needs ports", ("tests", i, "http"))

    if data.get("gate") is not None:
        # Checked now, not when the gate runs after the image is built: a gate naming a
        # tailoring file that is not there fails when the recipe is read.
        from alicorn.gate.spec import parse_gate
        parse_gate(data["gate"], file=file, base_dir=base_dir)

    return Recipe(
        file=file, text=text, data=data, base_dir=base_dir,
        name=data["name"], tag=data.get("tag", "latest"),
        distribution=kind, release=str(dist["release"]),
        architecture=dist.get("architecture", "amd64"),
        variant=dist.get("variant", "essential" if kind == "debian" else None),
        exclude_docs=dist.get("exclude_docs", False),
        repositories=tuple(repos), packages=tuple(data.get("packages", ())),
        artifacts=artifacts, files=tuple(files),
        user=data.get("user"), workdir=data.get("workdir"),
        entrypoint=tuple(data.get("entrypoint", ())), cmd=tuple(data.get("cmd", ())),
        env=tuple(sorted(data.get("env", {}).items())), ports=ports,
        volumes=tuple(data.get("volumes", ())), stop_signal=data.get("stop_signal"),
        labels=tuple(sorted(data.get("labels", {}).items())),
        healthcheck=healthcheck, tests=tests,
        content_path=data.get("content_path", DEFAULT_CONTENT_PATH),
        base=base, gate=data.get("gate"),
    )
