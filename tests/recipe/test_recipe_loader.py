"""The recipe loader against real files: the shipped examples load, and every malformed recipe
is reported with its file, line and dotted field, in the exception's attributes and its text."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from alicorn.errors import EXIT_BAD_INPUT, BadInput, RecipeError
from alicorn.recipe import (
    FileSpec,
    HttpCheck,
    Recipe,
    Repository,
    load_recipe,
    parse_recipe,
)
from alicorn.recipe.loader import MAX_RECIPE_BYTES, schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pony"

# Line numbers below are counted in this text; keep it in sync with the helpers.
BASE = """\
recipe: 1
name: web
distribution:
  type: debian
  release: bookworm
repositories:
  - name: main
    suite: bookworm
  - name: security
    suite: bookworm-security
packages:
  - nginx-light
"""

RPM_BASE = """\
recipe: 1
name: web-rpm
distribution:
  type: rpm
  release: "40"
  architecture: x86_64
repositories:
  - name: local
    url: repo
packages:
  - busybox
"""


def write(tmp_path: Path, text: str | bytes, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def load(tmp_path: Path, text: str | bytes, name: str = "r.yaml") -> Recipe:
    return load_recipe(write(tmp_path, text, name))


def fail(tmp_path: Path, text: str | bytes, name: str = "r.yaml") -> RecipeError:
    path = write(tmp_path, text, name)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return info.value


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the ``occurrence``-th ``needle``."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in the text")


def check(err: RecipeError, path: Path, line: int | None, field: str | None,
          *phrases: str) -> None:
    """The error points at ``path:line`` and ``field`` in its attributes and in its text."""
    assert err.file == str(path)
    assert err.line == line
    assert err.field == field
    text = str(err)
    where = f"{path}:{line}" if line else str(path)
    assert text.startswith(f"{where}: ")
    if field:
        assert text.startswith(f"{where}: {field}: ")
    else:
        assert text.count(": ") >= 1
    for phrase in phrases:
        assert phrase in text
    assert isinstance(err, BadInput)
    assert err.exit_code == EXIT_BAD_INPUT


# -- the shipped examples ----------------------------------------------------------------------

def test_debian_example_loads() -> None:
    path = EXAMPLES / "debian" / "pony.yaml"
    r = load_recipe(path)
    assert r.file == str(path)
    assert r.base_dir == path.parent
    assert r.name == "pony"
    assert r.tag == "latest"
    assert r.distribution == "debian"
    assert r.release == "bookworm"
    assert r.architecture == "amd64"
    assert r.oci_architecture == "amd64"
    assert r.variant == "essential"
    assert r.exclude_docs is True
    assert r.repositories == (
        Repository(name="bookworm", url=None, suite="bookworm"),
        Repository(name="bookworm-security", url=None, suite="bookworm-security"),
    )
    assert r.packages == ("nginx-light",)
    assert [f.source for f in r.files] == ["nginx-default.conf", "content/index.html"]
    assert r.files[0] == FileSpec(path="/etc/nginx/sites-available/default",
                                  source="nginx-default.conf")
    for f in r.files:
        assert f.source is not None
        assert r.resolve(f.source).is_file()
    assert r.entrypoint == ("/usr/sbin/nginx", "-g", "daemon off;")
    assert r.ports == (80,)
    assert r.stop_signal == "SIGQUIT"
    assert r.content_path == "/var/www/html"
    assert r.healthcheck is not None
    assert r.healthcheck.http == HttpCheck(path="/", port=80)
    assert (r.healthcheck.interval, r.healthcheck.timeout, r.healthcheck.retries) == \
        ("2s", "2s", 5)
    assert r.healthcheck.start_period == "0s"
    assert [t.name for t in r.tests] == ["serves its content", "nginx configuration is valid"]
    assert r.tests[0].http == HttpCheck(path="/", port=80, status=200, contains="Hello from pony")
    assert r.tests[1].command == ("/usr/sbin/nginx", "-t")
    assert r.tests[1].http is None
    assert dict(r.labels) == {
        "org.opencontainers.image.description": "pony: static web server from Debian packages"}
    assert str(r.digest) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_rpm_example_loads() -> None:
    path = EXAMPLES / "rpm" / "pony.yaml"
    if not path.exists():
        pytest.skip("no RPM example in this tree")
    r = load_recipe(path)
    assert r.name == "pony-rpm"
    assert r.tag == "latest"
    assert r.distribution == "rpm"
    assert r.release == "40"
    assert r.architecture == "x86_64"
    assert r.oci_architecture == "amd64"
    assert r.variant is None
    assert r.exclude_docs is False
    assert r.repositories == (Repository(name="pony", url="repo", gpgcheck=False),)
    assert r.packages == ("pony-filesystem", "busybox", "pony-content")
    assert r.user == "0:0"
    assert r.workdir == "/var/www/html"
    assert r.ports == (80,)
    # The test names no port: the recipe's ports make that acceptable.
    assert r.tests[0].http == HttpCheck(path="/", port=None, status=200,
                                        contains="Hello from pony")
    assert r.tests[0].name == "the page is served"
    assert str(r.digest) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_examples_validate_against_schema_and_every_field_is_known() -> None:
    allowed = set(schema()["properties"])
    for path in sorted(EXAMPLES.glob("*/pony.yaml")):
        data = yaml.safe_load(path.read_text())
        assert set(data) <= allowed, path


def test_a_full_recipe_maps_to_the_domain_values(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.conf").write_text("x = 1\n")
    text = BASE + """\
tag: "1.0"
files:
  - path: /etc/app.conf
    source: conf/app.conf
    mode: "0640"
    owner: "1000:1001"
  - path: /srv/data
    directory: true
    mode: "755"
  - path: /etc/motd
    content: "hello\\n"
artifacts:
  - type: wheel
    url: dist/app-1.0-py3-none-any.whl
    sha256: %s
env: {ZED: z, ALPHA: a}
labels: {b: "2", a: "1"}
ports: [8080, 80]
volumes: [/data]
user: www-data
workdir: /srv
cmd: ["--flag"]
healthcheck:
  command: ["/bin/true"]
tests:
  - http: {port: 8080}
  - command: [/bin/false]
    exit_code: 1
    output_contains: nope
""" % ("ab" * 32)
    r = load(tmp_path, text)
    assert r.tag == "1.0"
    assert r.files == (
        FileSpec(path="/etc/app.conf", source="conf/app.conf", mode=0o640, owner=(1000, 1001)),
        FileSpec(path="/srv/data", directory=True, mode=0o755),
        FileSpec(path="/etc/motd", content="hello\n"),
    )
    assert r.artifacts[0].sha256 == "ab" * 32
    assert r.artifacts[0].target is None
    assert r.env == (("ALPHA", "a"), ("ZED", "z"))
    assert r.labels == (("a", "1"), ("b", "2"))
    assert r.ports == (8080, 80)
    assert r.volumes == ("/data",)
    assert r.cmd == ("--flag",)
    assert r.healthcheck is not None
    assert r.healthcheck.command == ("/bin/true",)
    assert r.healthcheck.http is None
    assert r.tests[0].name == "test 1"
    assert r.tests[0].http == HttpCheck(port=8080)
    assert r.tests[1].name == "test 2"
    assert (r.tests[1].exit_code, r.tests[1].output_contains) == (1, "nope")
    assert r.repositories[0].components == ("main",)
    assert r.repositories[0].gpgcheck is True


# -- malformed recipes: file, line and field ---------------------------------------------------

def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = BASE.replace("  release: bookworm\n", "  release: bookworm: oops\n")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "oops"), None, "not valid YAML")


def test_unclosed_flow_sequence_is_a_yaml_error_with_a_line(tmp_path: Path) -> None:
    text = BASE + "ports: [80, 443\n"
    err = fail(tmp_path, text)
    assert err.line is not None
    assert err.line >= line_of(text, "ports")
    check(err, tmp_path / "r.yaml", err.line, None, "not valid YAML")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_recipe(tmp_path: Path, text: str) -> None:
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", 1, None, "the recipe is empty")


def test_explicit_empty_document_is_refused(tmp_path: Path) -> None:
    # "---" alone is a document holding null: as empty as an empty file.
    err = fail(tmp_path, "---\n")
    check(err, tmp_path / "r.yaml", 1, None, "the recipe is empty")


def test_top_level_list(tmp_path: Path) -> None:
    err = fail(tmp_path, "- recipe: 1\n- name: web\n")
    check(err, tmp_path / "r.yaml", 1, "(top level)", "must be of type object, not list")


def test_duplicate_key_points_at_the_second_one(tmp_path: Path) -> None:
    text = BASE + "name: other\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "name: other"), "name",
          "'name' appears twice")


def test_duplicate_nested_key(tmp_path: Path) -> None:
    text = BASE.replace("  release: bookworm\n", "  release: bookworm\n  type: rpm\n")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "type: rpm"), "distribution.type",
          "appears twice")


def test_unknown_top_level_field_lists_the_allowed_ones(tmp_path: Path) -> None:
    text = BASE.replace("name: web\n", "name: web\ncolour: blue\n")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", 3, "colour", "unknown field")
    allowed = sorted(schema()["properties"])
    assert f"(allowed here: {', '.join(allowed)})" in str(err)


def test_unknown_field_in_second_repository(tmp_path: Path) -> None:
    text = BASE.replace("    suite: bookworm-security\n",
                        "    suite: bookworm-security\n    mirror: http://x\n")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "mirror:"), "repositories[1].mirror",
          "unknown field",
          "(allowed here: components, gpgcheck, gpgkey, name, suite, url)")


def test_wrong_type(tmp_path: Path) -> None:
    text = BASE + 'ports: "80"\n'
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "ports:"), "ports",
          "must be of type array, not str")


def test_wrong_type_inside_a_list(tmp_path: Path) -> None:
    text = BASE + "ports:\n  - 80\n  - http\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "- http"), "ports[1]",
          "must be of type integer, not str")


def test_bad_enum(tmp_path: Path) -> None:
    text = BASE.replace("type: debian", "type: alpine")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "alpine"), "distribution.type",
          "'alpine' is not one of 'debian', 'rpm'")


def test_missing_required_field(tmp_path: Path) -> None:
    text = BASE.replace("packages:\n  - nginx-light\n", "")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", 1, "(top level)", "'packages' is a required property")


def test_missing_required_nested_field(tmp_path: Path) -> None:
    text = BASE.replace("  release: bookworm\n", "")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "distribution:"), "distribution",
          "'release' is a required property")


def test_recipe_version_must_be_one(tmp_path: Path) -> None:
    text = BASE.replace("recipe: 1", "recipe: 2")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", 1, "recipe", "must be 1, not 2")


def test_debian_repository_without_suite(tmp_path: Path) -> None:
    text = BASE.replace("    suite: bookworm-security\n", "    url: http://deb.example/debian\n")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "- name: security"), "repositories[1]",
          "a Debian repository needs a suite")


def test_rpm_recipe_loads(tmp_path: Path) -> None:
    r = load(tmp_path, RPM_BASE)
    assert (r.distribution, r.release, r.variant) == ("rpm", "40", None)
    assert r.repositories[0].url == "repo"


def test_rpm_repository_without_url(tmp_path: Path) -> None:
    text = RPM_BASE.replace("    url: repo\n", "    gpgcheck: false\n")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "- name: local"), "repositories[0]",
          "an RPM repository needs a url")


def test_rpm_repository_with_suite(tmp_path: Path) -> None:
    text = RPM_BASE.replace("    url: repo\n", "    url: repo\n    suite: x\n")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "suite: x"), "repositories[0].suite",
          "suite is for Debian repositories only")


def test_rpm_recipe_with_variant(tmp_path: Path) -> None:
    text = RPM_BASE.replace("  architecture: x86_64\n", "  architecture: x86_64\n"
                            "  variant: minbase\n")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "variant:"), "distribution.variant",
          "variant is for Debian only")


def test_unsupported_url_scheme(tmp_path: Path) -> None:
    text = RPM_BASE.replace("url: repo", "url: ftp://mirror/fedora")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "ftp://"), "repositories[0].url",
          "unsupported URL scheme")


def test_file_with_both_content_and_source(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("x\n")
    text = BASE + "files:\n  - path: /etc/a.conf\n    content: x\n    source: a.conf\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "- path:"), "files[0]",
          "needs exactly one of: content, directory, source")


def test_file_with_neither_content_nor_source(tmp_path: Path) -> None:
    text = BASE + "files:\n  - path: /etc/a.conf\n    mode: '0644'\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "- path:"), "files[0]",
          "needs exactly one of: content, directory, source")


def test_file_source_missing(tmp_path: Path) -> None:
    text = BASE + "files:\n  - path: /etc/a\n    content: x\n  - path: /etc/b\n" \
        "    source: missing.conf\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "source: missing"), "files[1].source",
          "'missing.conf' does not exist next to the recipe")


def test_file_source_leaving_the_recipe_dir(tmp_path: Path) -> None:
    recipe_dir = tmp_path / "recipe"
    recipe_dir.mkdir()
    (tmp_path / "x").write_text("secret\n")   # exists, so only the escape can be the reason
    text = BASE + "files:\n  - path: /etc/x\n    source: ../x\n"
    path = write(recipe_dir, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    check(info.value, path, line_of(text, "source:"), "files[0].source",
          "'../x' leaves the recipe's directory")


def test_file_source_symlink_leaving_the_recipe_dir(tmp_path: Path) -> None:
    recipe_dir = tmp_path / "recipe"
    recipe_dir.mkdir()
    (tmp_path / "outside").write_text("secret\n")
    os.symlink(tmp_path / "outside", recipe_dir / "inside")
    text = BASE + "files:\n  - path: /etc/x\n    source: inside\n"
    path = write(recipe_dir, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    check(info.value, path, line_of(text, "source:"), "files[0].source", "leaves")


def test_file_path_with_dotdot(tmp_path: Path) -> None:
    text = BASE + "files:\n  - path: /etc/../root/.ssh/keys\n    content: x\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "- path:"), "files[0].path",
          "must not contain '..'")


def test_file_path_must_be_absolute(tmp_path: Path) -> None:
    text = BASE + "files:\n  - path: etc/x\n    content: x\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "- path:"), "files[0].path",
          "does not have the expected form")


def test_duplicate_repository_names(tmp_path: Path) -> None:
    text = BASE.replace("- name: security", "- name: main")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "- name: main", 2), "repositories[1].name",
          "repository name 'main' is used twice")


def test_http_test_without_port_and_no_ports(tmp_path: Path) -> None:
    text = BASE + "tests:\n  - command: [/bin/true]\n  - name: page\n    http:\n      path: /\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "http:"), "tests[1].http",
          "an HTTP test needs a port")


def test_http_test_without_port_is_fine_with_ports(tmp_path: Path) -> None:
    text = BASE + "ports: [80]\ntests:\n  - http:\n      path: /\n"
    r = load(tmp_path, text)
    assert r.tests[0].http == HttpCheck(path="/")


def test_malformed_artifact_sha256(tmp_path: Path) -> None:
    text = BASE + "artifacts:\n  - type: wheel\n    url: a.whl\n    sha256: " + "AB" * 32 + "\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "sha256:"), "artifacts[0].sha256",
          "does not have the expected form", "^[0-9a-f]{64}$")


def test_name_with_upper_case(tmp_path: Path) -> None:
    text = BASE.replace("name: web", "name: Web")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", 2, "name", "'Web' does not have the expected form")


def test_the_first_problem_by_line_is_reported_and_the_rest_counted(tmp_path: Path) -> None:
    text = BASE.replace("name: web", "name: Web") + 'ports: "80"\nstop_signal: quit\n'
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", 2, "name", "(2 more problems after this one)")
    text = BASE.replace("name: web", "name: Web") + 'ports: "80"\n'
    check(fail(tmp_path, text), tmp_path / "r.yaml", 2, "name",
          "(1 more problem after this one)")


def test_merge_keys_are_refused(tmp_path: Path) -> None:
    text = BASE + "labels:\n  <<: {a: b}\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "<<"), "labels",
          "merge keys are not supported")


def test_non_scalar_key(tmp_path: Path) -> None:
    text = BASE + "labels:\n  ? [a, b]\n  : c\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "? [a"), "labels",
          "mapping keys must be plain strings")


# -- size and encoding -------------------------------------------------------------------------

def test_recipe_over_one_mib(tmp_path: Path) -> None:
    text = BASE + "#" * (MAX_RECIPE_BYTES - len(BASE)) + "\n"
    assert len(text.encode()) == MAX_RECIPE_BYTES + 1
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", None, None,
          f"recipe is {MAX_RECIPE_BYTES + 1} bytes; at most {MAX_RECIPE_BYTES} are allowed")


def test_recipe_of_exactly_one_mib_is_read(tmp_path: Path) -> None:
    text = BASE + "#" * (MAX_RECIPE_BYTES - len(BASE) - 1) + "\n"
    assert len(text.encode()) == MAX_RECIPE_BYTES
    assert load(tmp_path, text).name == "web"


def test_non_utf8_bytes(tmp_path: Path) -> None:
    raw = BASE.encode() + b"# caf\xe9\n"
    err = fail(tmp_path, raw)
    check(err, tmp_path / "r.yaml", None, None, f"not UTF-8 text (byte {len(BASE) + 5})")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "nope.yaml")
    check(info.value, tmp_path / "nope.yaml", None, None, "no such file")
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path)
    check(info.value, tmp_path, None, None, "is a directory")


def test_display_name_is_used_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("name: web", "name: Web"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path, display_name="pony.yaml@abc123")
    assert info.value.file == "pony.yaml@abc123"
    assert str(info.value).startswith("pony.yaml@abc123:2: name: ")
    assert load_recipe(write(tmp_path, BASE), display_name="shown").file == "shown"


# -- identity ----------------------------------------------------------------------------------

def test_digest_is_sha256_of_the_exact_bytes(tmp_path: Path) -> None:
    raw = ("# first\n" + BASE).encode()
    r = load(tmp_path, raw)
    assert str(r.digest) == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert r.text == raw.decode()

    changed = load(tmp_path, raw.replace(b"# first", b"# frist"), name="r2.yaml")
    assert changed.digest != r.digest
    # Same meaning, different bytes: a different identity, but equal domain values otherwise.
    assert changed.packages == r.packages
    assert changed.data == r.data


def test_digest_keeps_crlf_and_bom(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbf" + BASE.replace("\n", "\r\n").encode()
    r = load(tmp_path, raw)
    assert r.name == "web"
    assert str(r.digest) == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_parse_recipe_equals_load_recipe(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    parsed = parse_recipe(BASE, file=str(path), base_dir=tmp_path)
    assert parsed == load_recipe(path)
    assert parsed.digest == load_recipe(path).digest


# -- scalars stay as the user wrote them where the schema wants strings ------------------------

def test_unquoted_integer_release_is_an_error(tmp_path: Path) -> None:
    text = BASE.replace("release: bookworm", "release: 40")
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "release:"), "distribution.release",
          "must be a string", "int 40", "put it in quotes")


def test_quoted_release_is_a_string(tmp_path: Path) -> None:
    r = load(tmp_path, BASE.replace("release: bookworm", 'release: "40"'))
    assert r.release == "40"


def test_dates_stay_strings(tmp_path: Path) -> None:
    text = BASE.replace("release: bookworm", "release: 2024-01-01") + \
        "tag: 2024-06-30\ndescription: 2023-01-02\nlabels:\n  built: 2024-01-01T10:00:00Z\n"
    r = load(tmp_path, text)
    assert r.release == "2024-01-01"
    assert r.tag == "2024-06-30"
    assert r.data["description"] == "2023-01-02"
    assert dict(r.labels) == {"built": "2024-01-01T10:00:00Z"}


def test_unquoted_float_where_a_string_is_wanted_is_an_error(tmp_path: Path) -> None:
    text = BASE + "tag: 1.0\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "tag:"), "tag",
          "must be a string", "float 1.0", "put it in quotes")


def test_quoted_version_strings_stay_as_written(tmp_path: Path) -> None:
    r = load(tmp_path, BASE + 'tag: "1.10"\nenv:\n  VERSION: "1.0"\n  ZERO: "010"\n')
    assert r.tag == "1.10"
    assert r.env == (("VERSION", "1.0"), ("ZERO", "010"))


def test_yaml11_yes_is_a_bool(tmp_path: Path) -> None:
    # The loader keeps YAML 1.1 booleans, so an unquoted yes is not the string "yes".
    text = BASE + "labels:\n  enabled: yes\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "enabled:"), "labels.enabled",
          "must be a string", "bool True", "put it in quotes")


def test_unknown_yaml_tag_is_a_recipe_error(tmp_path: Path) -> None:
    text = BASE + "tag: !custom v1\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "!custom"), "tag")


def test_bad_explicit_yaml_tag_is_a_recipe_error(tmp_path: Path) -> None:
    text = BASE + "tag: !!int abc\n"
    err = fail(tmp_path, text)
    check(err, tmp_path / "r.yaml", line_of(text, "!!int"), "tag")


# -- Recipe.resolve ----------------------------------------------------------------------------

def test_resolve_stays_inside_base_dir(tmp_path: Path) -> None:
    recipe_dir = tmp_path / "recipe"
    (recipe_dir / "content").mkdir(parents=True)
    (recipe_dir / "content" / "index.html").write_text("hi\n")
    os.symlink(tmp_path, recipe_dir / "up")
    r = load(recipe_dir, BASE)
    assert r.resolve("content/index.html") == (recipe_dir / "content" / "index.html").resolve()
    assert r.resolve(".") == recipe_dir.resolve()
    assert r.resolve("content/../content") == (recipe_dir / "content").resolve()
    assert r.resolve("not-yet-there") == recipe_dir.resolve() / "not-yet-there"
    for bad in ("..", "../x", "content/../../x", "/etc/passwd", "up/x", "up"):
        with pytest.raises(RecipeError) as info:
            r.resolve(bad)
        assert info.value.file == r.file
        assert f"path {bad!r} leaves the recipe's directory" in str(info.value)
        assert str(info.value).startswith(f"{r.file}: ")


def test_yaml_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    import time
    levels = ['l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        levels.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]")
    text = "\n".join(levels) + "\n"
    started = time.monotonic()
    err = fail(tmp_path, text)
    assert time.monotonic() - started < 2, "alias expansion must not be attempted"
    assert "aliases" in str(err) and err.line == 2 and err.field == "l1[0]"
