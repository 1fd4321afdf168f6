"""OVAL definitions as advisories: OpenSCAP's test files, and Red Hat- and Debian-style OVAL
written here (and checked against the OVAL schema by the real ``oscap``)."""

from __future__ import annotations

import gzip
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alicorn.advisories.model import Affected, FeedError, PackageRef, Range, Reference
from alicorn.advisories.oval import OvalReader, parse_oval
from conftest import SHARED_DATA, require

OVAL = SHARED_DATA / "oval"

REDHAT = """<?xml version="1.0" encoding="UTF-8"?>
<oval_definitions xmlns="http://oval.mitre.org/XMLSchema/oval-definitions-5"
    xmlns:oval="http://oval.mitre.org/XMLSchema/oval-common-5"
    xmlns:red-def="http://oval.mitre.org/XMLSchema/oval-definitions-5#linux">
  <generator>
    <oval:product_name>test</oval:product_name>
    <oval:schema_version>5.10</oval:schema_version>
    <oval:timestamp>2023-01-10T00:00:00</oval:timestamp>
  </generator>
  <definitions>
    <definition class="patch" id="oval:com.redhat.rhsa:def:20230123" version="637">
      <metadata>
        <title>RHSA-2023:0123: systemd security update (Important)</title>
        <affected family="unix"><platform>Red Hat Enterprise Linux 9</platform></affected>
        <reference ref_id="RHSA-2023:0123"
            ref_url="https://access.redhat.com/errata/RHSA-2023:0123" source="RHSA"/>
        <reference ref_id="CVE-2022-2526"
            ref_url="https://access.redhat.com/security/cve/CVE-2022-2526" source="CVE"/>
        <description>systemd is a system and service manager.</description>
        <advisory from="secalert@redhat.com">
          <severity>Important</severity>
          <rights>Copyright 2023 Red Hat, Inc.</rights>
          <issued date="2023-01-10"/>
          <updated date="2023-01-12"/>
          <cve cvss3="9.8/CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
              href="https://access.redhat.com/security/cve/CVE-2022-2526" impact="important"
              public="20220822">CVE-2022-2526</cve>
          <bugzilla href="https://bugzilla.redhat.com/2109926"
              id="2109926">CVE-2022-2526 systemd-resolved: use-after-free</bugzilla>
        </advisory>
      </metadata>
      <criteria operator="OR">
        <criterion comment="Red Hat Enterprise Linux must be installed"
            test_ref="oval:com.redhat.rhsa:tst:20230123005"/>
        <criteria operator="AND">
          <criteria operator="OR">
            <criteria operator="AND">
              <criterion comment="systemd is earlier than 0:250-12.el9_1.1"
                  test_ref="oval:com.redhat.rhsa:tst:20230123001"/>
              <criterion comment="systemd is signed with Red Hat redhatrelease2 key"
                  test_ref="oval:com.redhat.rhsa:tst:20230123002"/>
            </criteria>
            <criteria operator="AND">
              <criterion comment="systemd-libs is earlier than 0:250-12.el9_1.1"
                  test_ref="oval:com.redhat.rhsa:tst:20230123003"/>
            </criteria>
          </criteria>
        </criteria>
      </criteria>
    </definition>
    <definition class="inventory" id="oval:com.redhat.rhsa:def:1" version="1">
      <metadata><title>Red Hat Enterprise Linux 9 is installed</title><description/></metadata>
      <criteria>
        <criterion comment="rhel9" test_ref="oval:com.redhat.rhsa:tst:20230123005"/>
      </criteria>
    </definition>
  </definitions>
  <tests>
    <red-def:rpminfo_test check="at least one"
        comment="systemd is earlier than 0:250-12.el9_1.1"
        id="oval:com.redhat.rhsa:tst:20230123001" version="637">
      <red-def:object object_ref="oval:com.redhat.rhsa:obj:20230123001"/>
      <red-def:state state_ref="oval:com.redhat.rhsa:ste:20230123001"/>
    </red-def:rpminfo_test>
    <red-def:rpminfo_test check="at least one" comment="systemd is signed"
        id="oval:com.redhat.rhsa:tst:20230123002" version="637">
      <red-def:object object_ref="oval:com.redhat.rhsa:obj:20230123001"/>
      <red-def:state state_ref="oval:com.redhat.rhsa:ste:20230123002"/>
    </red-def:rpminfo_test>
    <red-def:rpminfo_test check="at least one" comment="systemd-libs is earlier"
        id="oval:com.redhat.rhsa:tst:20230123003" version="637">
      <red-def:object object_ref="oval:com.redhat.rhsa:obj:20230123003"/>
      <red-def:state state_ref="oval:com.redhat.rhsa:ste:20230123003"/>
    </red-def:rpminfo_test>
    <red-def:rpminfo_test check="at least one" comment="rhel9"
        id="oval:com.redhat.rhsa:tst:20230123005" version="637">
      <red-def:object object_ref="oval:com.redhat.rhsa:obj:20230123005"/>
      <red-def:state state_ref="oval:com.redhat.rhsa:ste:20230123005"/>
    </red-def:rpminfo_test>
  </tests>
  <objects>
    <red-def:rpminfo_object id="oval:com.redhat.rhsa:obj:20230123001" version="637">
      <red-def:name>systemd</red-def:name>
    </red-def:rpminfo_object>
    <red-def:rpminfo_object id="oval:com.redhat.rhsa:obj:20230123003" version="637">
      <red-def:name>systemd-libs</red-def:name>
    </red-def:rpminfo_object>
    <red-def:rpminfo_object id="oval:com.redhat.rhsa:obj:20230123005" version="637">
      <red-def:name>redhat-release</red-def:name>
    </red-def:rpminfo_object>
  </objects>
  <states>
    <red-def:rpminfo_state id="oval:com.redhat.rhsa:ste:20230123001" version="637">
      <red-def:arch datatype="string" operation="pattern match">aarch64|x86_64</red-def:arch>
      <red-def:evr datatype="evr_string" operation="less than">0:250-12.el9_1.1</red-def:evr>
    </red-def:rpminfo_state>
    <red-def:rpminfo_state id="oval:com.redhat.rhsa:ste:20230123002" version="637">
      <red-def:signature_keyid operation="equals">199e2f91fd431d51</red-def:signature_keyid>
    </red-def:rpminfo_state>
    <red-def:rpminfo_state id="oval:com.redhat.rhsa:ste:20230123003" version="637">
      <red-def:arch datatype="string" operation="equals">x86_64</red-def:arch>
      <red-def:evr datatype="evr_string" operation="less than">250-12.el9_1.1</red-def:evr>
    </red-def:rpminfo_state>
    <red-def:rpminfo_state id="oval:com.redhat.rhsa:ste:20230123005" version="637">
      <red-def:version operation="pattern match">^9[^\\d]</red-def:version>
    </red-def:rpminfo_state>
  </states>
</oval_definitions>
"""

DEBIAN = """<?xml version="1.0" encoding="UTF-8"?>
<oval_definitions xmlns="http://oval.mitre.org/XMLSchema/oval-definitions-5"
    xmlns:oval="http://oval.mitre.org/XMLSchema/oval-common-5"
    xmlns:linux-def="http://oval.mitre.org/XMLSchema/oval-definitions-5#linux">
  <generator>
    <oval:product_name>Debian</oval:product_name>
    <oval:schema_version>5.11.2</oval:schema_version>
    <oval:timestamp>2023-09-22T00:00:00</oval:timestamp>
  </generator>
  <definitions>
    <definition class="vulnerability" id="oval:org.debian:def:1000" version="1">
      <metadata>
        <title>CVE-2023-4863</title>
        <affected family="unix">
          <platform>Debian GNU/Linux 12</platform>
          <product>libwebp</product>
        </affected>
        <reference ref_id="CVE-2023-4863"
            ref_url="https://security-tracker.debian.org/tracker/CVE-2023-4863" source="CVE"/>
        <description>Heap buffer overflow in libwebp.</description>
        <debian><date>2023-09-12</date><moreinfo>DSA-5496-1</moreinfo></debian>
      </metadata>
      <criteria comment="Release section" operator="AND">
        <criterion comment="libwebp DPKG is earlier than 1.2.4-0.2+deb12u1"
            test_ref="oval:org.debian:tst:1"/>
      </criteria>
    </definition>
  </definitions>
  <tests>
    <linux-def:dpkginfo_test check="all" check_existence="at_least_one_exists"
        comment="libwebp is earlier" id="oval:org.debian:tst:1" version="1">
      <linux-def:object object_ref="oval:org.debian:obj:1"/>
      <linux-def:state state_ref="oval:org.debian:ste:1"/>
    </linux-def:dpkginfo_test>
  </tests>
  <objects>
    <linux-def:dpkginfo_object id="oval:org.debian:obj:1" version="1">
      <linux-def:name>libwebp</linux-def:name>
    </linux-def:dpkginfo_object>
  </objects>
  <states>
    <linux-def:dpkginfo_state id="oval:org.debian:ste:1" version="1">
      <linux-def:evr datatype="debian_evr_string"
          operation="less than">0:1.2.4-0.2+deb12u1</linux-def:evr>
    </linux-def:dpkginfo_state>
  </states>
</oval_definitions>
"""


def _need_shared() -> None:
    if not OVAL.is_dir():
        reason = f"the shared OVAL data is absent ({OVAL})"
        if os.environ.get("ALICORN_TEST_REQUIRE_ALL"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.mark.parametrize("text", [REDHAT, DEBIAN], ids=["redhat", "debian"])
def test_the_handwritten_oval_is_valid_oval(text: str, tmp_path: Path) -> None:
    require("oscap")
    path = tmp_path / "defs.xml"
    path.write_text(text)
    proc = subprocess.run(["oscap", "oval", "validate", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_openscap_rpm_evr_test_file() -> None:
    _need_shared()
    path = OVAL / "test_evr_string_comparison.oval.xml"
    result = OvalReader().read(path)
    assert result.warnings == ()
    (a,) = result.advisories
    assert a.id == "RHSA-2010:0449"  # ref_id RHSA-2010:0449-01, as dnf names the erratum
    assert a.aliases == ("oval:com.redhat.rhsa:def:20100449",)
    assert a.format == "oval" and a.type == "security"
    assert a.title == "RHSA-2010:0449: rhn-client-tools security update (Moderate)"
    assert a.severity == "Moderate"  # from the title: this old OVAL has no <advisory>
    assert a.description.startswith("Red Hat Network Client Tools provide programs")
    assert a.cves == ("CVE-2010-1439",)
    assert a.references == (
        Reference("self", "RHSA-2010:0449-01",
                  "https://rhn.redhat.com/errata/RHSA-2010-0449.html"),
        Reference("cve", "CVE-2010-1439",
                  "https://www.redhat.com/security/data/cve/CVE-2010-1439.html"),
    )
    assert a.packages == (PackageRef("pokus", "0", "0.4.20", "33.el5_5.2", ""),)
    assert a.affected == ()


def test_openscap_dpkg_test_file() -> None:
    _need_shared()
    result = OvalReader().read(OVAL / "test_evr_string_missing_epoch.oval.xml")
    (a,) = result.advisories
    assert a.id == "oval:com.redhat.rhsa:def:20100449"  # no advisory reference
    assert a.title == "httpd update"
    assert a.packages == ()
    assert a.affected == (Affected("Debian", "httpd", ranges=(Range(
        "ECOSYSTEM", (("introduced", "0"), ("fixed", "17.0.7+build1-0ubuntu0.12.04.1"))),)),)


def test_system_characteristics_are_not_definitions() -> None:
    _need_shared()
    path = OVAL / "test_evr_string_comparison.syschar.xml"
    with pytest.raises(FeedError, match="not an OVAL definitions document"):
        parse_oval(path.read_bytes(), source=str(path))


def test_redhat_style_definition() -> None:
    result = parse_oval(REDHAT.encode(), source="rhel9.oval.xml")
    (a,) = result.advisories
    assert result.warnings == ("rhel9.oval.xml: 1 definition(s) of class 'inventory' skipped "
                               "(only patch and vulnerability definitions are advisories)",)
    assert a.id == "RHSA-2023:0123"
    assert a.severity == "Important"
    assert a.issued == datetime(2023, 1, 10, tzinfo=UTC)
    assert a.updated == datetime(2023, 1, 12, tzinfo=UTC)
    assert a.cves == ("CVE-2022-2526",)
    assert a.bugzilla_ids == ("2109926",)
    # the release and signing-key tests are conditions, not packages
    assert a.packages == (
        PackageRef("systemd", "0", "250", "12.el9_1.1", "aarch64"),
        PackageRef("systemd", "0", "250", "12.el9_1.1", "x86_64"),
        PackageRef("systemd-libs", "0", "250", "12.el9_1.1", "x86_64"),
    )


def test_debian_style_definition_compressed() -> None:
    result = parse_oval(gzip.compress(DEBIAN.encode()), source="oval-definitions-bookworm.xml.gz")
    assert result.warnings == ()
    (a,) = result.advisories
    assert a.id == "oval:org.debian:def:1000"
    assert a.cves == ("CVE-2023-4863",)
    assert a.issued == datetime(2023, 9, 12, tzinfo=UTC)
    assert a.affected == (Affected("Debian:12", "libwebp", ranges=(Range(
        "ECOSYSTEM", (("introduced", "0"), ("fixed", "1.2.4-0.2+deb12u1"))),)),)


def test_definition_without_package_tests_is_kept_with_a_warning() -> None:
    text = REDHAT.replace('test_ref="oval:com.redhat.rhsa:tst:20230123001"',
                          'test_ref="oval:com.redhat.rhsa:tst:missing"').replace(
        'test_ref="oval:com.redhat.rhsa:tst:20230123003"', 'test_ref="nope"')
    result = parse_oval(text.encode(), source="x.xml")
    (a,) = result.advisories
    assert a.packages == ()
    assert "x.xml: oval:com.redhat.rhsa:def:20230123: no rpminfo or dpkginfo test" \
        in result.warnings[0]


def test_entity_bomb_is_refused() -> None:
    bomb = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
            b' <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
            b' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n]>\n'
            b'<oval_definitions><definitions>&lol3;</definitions></oval_definitions>')
    with pytest.raises(FeedError, match="unsafe XML refused") as e:
        parse_oval(bomb, source="bomb.xml")
    assert e.value.where == "bomb.xml:3"  # the first entity declaration


def test_external_entity_is_refused() -> None:
    xxe = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           b"<oval_definitions>&e;</oval_definitions>")
    with pytest.raises(FeedError, match="unsafe XML refused"):
        parse_oval(xxe, source="xxe.xml")


def test_truncated_and_wrong_documents() -> None:
    with pytest.raises(FeedError, match="malformed XML") as e:
        parse_oval(REDHAT.encode()[:2000], source="cut.xml")
    assert e.value.where is not None and e.value.where.startswith("cut.xml:")
    with pytest.raises(FeedError, match="root element is <updates>"):
        parse_oval(b"<updates/>", source="u.xml")
    with pytest.raises(FeedError, match="truncated or corrupt"):
        parse_oval(gzip.compress(DEBIAN.encode())[:300], source="cut.xml.gz")
