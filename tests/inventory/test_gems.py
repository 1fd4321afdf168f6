"""GemSource on gemspecs as RubyGems writes them, in every gem home layout."""

from __future__ import annotations

import os
from pathlib import Path

from alicorn.inventory.gems import GemSource, parse_gemspec_name
from alicorn.inventory.rootfs import RootFS

_SPEC = """\
# -*- encoding: utf-8 -*-
# stub: {name} {version} {platform} lib

Gem::Specification.new do |s|
  s.name = "{name}".freeze
  s.version = "{version}"
{platform_line}
  s.required_rubygems_version = Gem::Requirement.new(">= 0".freeze) if s.respond_to? \
:required_rubygems_version=
  s.require_paths = ["lib".freeze]
  s.authors = ["Someone".freeze]
  s.summary = "A gem".freeze
  s.installed_by_version = "3.4.10" if s.respond_to? :installed_by_version
end
"""


def _gemspec(d: Path, name: str, version: str, platform: str | None = None,
             filename: str | None = None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    stem = filename or (f"{name}-{version}-{platform}" if platform else f"{name}-{version}")
    (d / f"{stem}.gemspec").write_text(_SPEC.format(
        name=name, version=version, platform=platform or "ruby",
        platform_line=f'  s.platform = "{platform}".freeze' if platform else ""))


def test_parse_gemspec_name() -> None:
    assert parse_gemspec_name("rack-2.2.3.gemspec") == ("rack", "2.2.3", None)
    assert parse_gemspec_name("nokogiri-1.13.0-x86_64-linux.gemspec") == \
        ("nokogiri", "1.13.0", "x86_64-linux")
    assert parse_gemspec_name("net-http-persistent-4.0.2.gemspec") == \
        ("net-http-persistent", "4.0.2", None)
    assert parse_gemspec_name("rails-7.0.0.rc1.gemspec") == ("rails", "7.0.0.rc1", None)
    assert parse_gemspec_name("json-2.6.1-java.gemspec") == ("json", "2.6.1", "java")
    assert parse_gemspec_name("noversion.gemspec") is None


def test_every_gem_home(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _gemspec(root / "usr/share/gems/specifications", "rack", "2.2.3")
    _gemspec(root / "usr/lib/ruby/gems/3.1.0/specifications/default", "json", "2.6.1")
    _gemspec(root / "var/lib/gems/3.1.0/specifications", "net-http-persistent", "4.0.2")
    _gemspec(root / "usr/local/lib/ruby/gems/3.2.0/specifications", "nokogiri", "1.13.0",
             "x86_64-linux")
    _gemspec(root / "usr/local/bundle/specifications", "rails", "7.0.0.rc1")
    _gemspec(root / "srv/app/vendor/bundle/ruby/3.2.0/specifications", "puma", "5.6.4")
    # A gemspec in a source tree is not an installed gem.
    _gemspec(root / "srv/app/src", "myapp", "0.1")
    result = GemSource().read(RootFS(root))
    assert result.warnings == ()
    got = {(p.name, p.version, p.arch) for p in result.packages}
    assert got == {("rack", "2.2.3", None), ("json", "2.6.1", None),
                   ("net-http-persistent", "4.0.2", None),
                   ("nokogiri", "1.13.0", "x86_64-linux"), ("rails", "7.0.0.rc1", None),
                   ("puma", "5.6.4", None)}
    noko = next(p for p in result.packages if p.name == "nokogiri")
    assert noko.purl == "pkg:gem/nokogiri@1.13.0?platform=x86_64-linux"
    assert noko.path == \
        "usr/local/lib/ruby/gems/3.2.0/specifications/nokogiri-1.13.0-x86_64-linux.gemspec"
    assert noko.type == "gem"


def test_file_name_and_lines_disagree_the_lines_win_with_a_warning(tmp_path: Path) -> None:
    d = tmp_path / "root/usr/share/gems/specifications"
    _gemspec(d, "rack", "2.2.4", filename="rack-2.2.3")
    result = GemSource().read(RootFS(tmp_path / "root"))
    assert [(p.name, p.version) for p in result.packages] == [("rack", "2.2.4")]
    assert len(result.warnings) == 1 and "rack-2.2.3" in result.warnings[0]


def test_no_lines_falls_back_to_the_file_name(tmp_path: Path) -> None:
    d = tmp_path / "root/usr/share/gems/specifications"
    d.mkdir(parents=True)
    (d / "thor-1.2.1.gemspec").write_text("Gem::Specification.new do |s|\n  # eval'd\nend\n")
    (d / "weird.gemspec").write_text("")
    result = GemSource().read(RootFS(tmp_path / "root"))
    assert [(p.name, p.version) for p in result.packages] == [("thor", "1.2.1")]
    assert any("thor-1.2.1.gemspec: no s.name/s.version" in w for w in result.warnings)
    assert any("weird.gemspec: neither" in w for w in result.warnings)


def test_a_gemspec_linking_out_of_the_root_is_not_read(tmp_path: Path) -> None:
    d = tmp_path / "root/usr/share/gems/specifications"
    d.mkdir(parents=True)
    _gemspec(tmp_path / "outside", "stolen", "9.9")
    os.symlink(str(tmp_path / "outside/stolen-9.9.gemspec"), d / "stolen-9.9.gemspec")
    # The walk lists regular files only: a symlinked gemspec is not a gem of this root.
    assert GemSource().read(RootFS(tmp_path / "root")).packages == ()
