"""no-setuid, no-world-writable, no-secrets, non-root and healthcheck on hand-made images:
modes from the tar headers, later layers' whiteouts, hostile entries, caps."""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path

import pytest
from gate_layouts import context, directory, entry, make_layout

from alicorn.gate import layers as gate_layers
from alicorn.gate.layers import read_image_files, restore_modes, secrets_in
from alicorn.gate.run import run_gate
from alicorn.inventory.unpack import unpack_layout

# Assembled at run time so that this file itself holds no key a scanner would flag.
_B64 = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" * 2
PEM_KEY = ("-----BEGIN " + "PRIVATE KEY-----\n" + "\n".join([_B64[:64]] * 3) +
           "\n-----END " + "PRIVATE KEY-----\n").encode()
OPENSSH_KEY = ("-----BEGIN OPENSSH " + "PRIVATE KEY-----\n" +
               "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n" * 3 +
               "-----END OPENSSH " + "PRIVATE KEY-----\n").encode()
AWS_ID = ("AKIA" + "Z7Q2M4XPLN8RT3VW").encode()


def _files(tmp_path: Path, *layers: list) -> gate_layers.ImageFiles:  # type: ignore[type-arg]
    return read_image_files(make_layout(tmp_path / "layout", list(layers)))


def test_setuid_and_world_writable_come_from_the_tar_headers(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "layout", [[
        directory("usr"), directory("usr/bin"),
        entry("usr/bin/su", b"\x7fELF su", mode=0o4755),
        entry("usr/bin/wall", b"\x7fELF wall", mode=0o2755),
        entry("usr/bin/ls", b"\x7fELF ls", mode=0o755),
        directory("tmp", 0o1777),                       # sticky: fine
        directory("srv", 0o777),                        # no sticky: world-writable
        entry("srv/open.txt", b"hi", mode=0o666),
        entry("srv/link", None, kind=tarfile.SYMTYPE, linkname="open.txt", mode=0o777),
        entry("dev-null", None, kind=tarfile.CHRTYPE, mode=0o666),
        directory("var"), directory("var/mail", 0o2775),  # a setgid directory is no setuid file
    ]], config={"User": "0"})
    result = run_gate(context(layout, tmp_path, gate=[
        "no-setuid", "no-world-writable",
        {"no-setuid": {"allow": ["/usr/bin/su", "/usr/bin/wall"]}},
        {"no-world-writable": {"allow": ["/srv*", "/dev-*"]}}, "non-root", "healthcheck"]))
    setuid, writable, setuid_allowed, writable_allowed, non_root, health = result.checks
    assert not setuid.passed
    assert setuid.problems == ("/usr/bin/su (setuid, mode 4755)",
                               "/usr/bin/wall (setgid, mode 2755)")
    assert not writable.passed
    assert writable.problems == ("/dev-null (device, mode 0666)",
                                 "/srv (directory, mode 0777)",
                                 "/srv/open.txt (file, mode 0666)")
    assert setuid_allowed.passed and "2 allowed" in setuid_allowed.detail
    assert writable_allowed.passed and "3 allowed" in writable_allowed.detail
    assert not non_root.passed and "root" in non_root.detail
    assert not health.passed
    assert not result.passed
    # Unpacking strips the bits; restoring them from the headers gives them back.
    root = tmp_path / "root"
    unpack_layout(layout, root)
    assert os.stat(root / "usr/bin/su").st_mode & 0o7777 == 0o755
    restore_modes(layout, root)
    assert os.stat(root / "usr/bin/su").st_mode & 0o7777 == 0o4755
    assert os.stat(root / "usr/bin/wall").st_mode & 0o7777 == 0o2755


def test_later_layers_remove_what_they_whiteout(tmp_path: Path) -> None:
    base = [directory("usr"), directory("usr/bin"),
            entry("usr/bin/su", b"su", mode=0o4755),
            entry("usr/bin/passwd", b"pw", mode=0o4755),
            directory("opt"), directory("opt/app"),
            entry("opt/app/id_rsa", OPENSSH_KEY, mode=0o600),
            entry("opt/app/tool", b"t", mode=0o4711),
            directory("data", 0o777), entry("data/x", b"x", mode=0o666),
            directory("keep"), entry("keep/server.key", PEM_KEY)]
    top = [directory("usr/bin"),
           entry("usr/bin/.wh.su", b""),               # su removed
           entry("usr/bin/passwd", b"pw2", mode=0o755),  # passwd replaced, no longer setuid
           directory("opt/app"), entry("opt/app/.wh..wh..opq", b""),  # opaque: all of app gone
           entry("opt/app/new", b"n", mode=0o644),
           entry("data", b"now a file", mode=0o644)]   # a file replaces the directory
    files = _files(tmp_path, base, top)
    assert files.setuid == {}
    assert files.world_writable == {}
    assert files.secrets == {"/keep/server.key": {"private key"}}
    # Without the top layer everything counts.
    lower = read_image_files(make_layout(tmp_path / "lower", [base]))
    assert set(lower.setuid) == {"/usr/bin/su", "/usr/bin/passwd", "/opt/app/tool"}
    assert set(lower.world_writable) == {"/data", "/data/x"}
    assert lower.secrets["/opt/app/id_rsa"] == {"SSH private key file",
                                                "private key (OPENSSH PRIVATE KEY)"}


def test_a_whiteout_hides_lower_layers_only(tmp_path: Path) -> None:
    # The same layer writes a file and a whiteout of it (in either order): the file stays.
    files = _files(tmp_path, [directory("a")],
                   [directory("a"), entry("a/s", b"s", mode=0o4755), entry("a/.wh.s", b"")])
    assert set(files.setuid) == {"/a/s"}


def test_hard_links_share_their_targets_mode(tmp_path: Path) -> None:
    files = _files(tmp_path, [directory("bin"), entry("bin/sudo", b"s", mode=0o4755),
                              entry("bin/sudoedit", None, kind=tarfile.LNKTYPE,
                                    linkname="bin/sudo", mode=0o4755)])
    assert set(files.setuid) == {"/bin/sudo", "/bin/sudoedit"}


@pytest.mark.parametrize(("name", "data", "kinds"), [
    ("key.pem", PEM_KEY, {"private key"}),
    ("k", b"x\r\n" + PEM_KEY.replace(b"\n", b"\r\n"), {"private key"}),
    ("rsa.key", PEM_KEY.replace(b"BEGIN PRIVATE", b"BEGIN RSA PRIVATE")
     .replace(b"END PRIVATE", b"END RSA PRIVATE"), {"private key (RSA PRIVATE KEY)"}),
    ("host_key", OPENSSH_KEY, {"private key (OPENSSH PRIVATE KEY)"}),
    ("id_ed25519", b"anything", {"SSH private key file"}),
    ("id_ed25519.pub", b"ssh-ed25519 AAAA... me@host", set()),
    ("config", b"[default]\naws_access_key_id = " + AWS_ID + b"\n", {"AWS access key id"}),
    ("config", b"aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n", set()),  # AWS's documented key
    ("creds", b"aws_secret_access_key=" + b"wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY0"[:40] +
     b"\n", {"AWS secret access key"}),
    (".netrc", b"machine example.com login me password hunter2\n", {"netrc password"}),
    (".netrc", b"machine example.com login me\n", set()),
    (".pgpass", b"# comment\ndb.example:5432:*:app:s3cret\n", {"PostgreSQL password file"}),
    (".pgpass", b"db.example:5432:*:app:\n", set()),
    (".git-credentials", b"https://me:tok@github.com\n", {"git credentials"}),
    ("token.txt", ("ghp_" + "a1B2" * 9).encode(), {"GitHub token"}),
    # A program that names the marker is not a key; nor is a certificate.
    ("ssl.py", b'PEM_HEADER = "-----BEGIN PRIVATE KEY-----"\nx = 1\n', set()),
    ("ca.pem", PEM_KEY.replace(b"PRIVATE KEY", b"CERTIFICATE"), set()),
    # A binary file is not searched (no NUL in text).
    ("lib.so", b"\x7fELF\0\0\0" + PEM_KEY, set()),
])
def test_secrets(name: str, data: bytes, kinds: set[str]) -> None:
    assert secrets_in(name, data) == kinds


def test_no_secrets_check_reports_paths_and_allows(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "layout", [[
        directory("root"), directory("root/.ssh"),
        entry("root/.ssh/id_rsa", OPENSSH_KEY, mode=0o600),
        directory("etc"), entry("etc/ssl.key", PEM_KEY),
        entry("etc/app.conf", b"key=" + AWS_ID + b"\n")]])
    result = run_gate(context(layout, tmp_path, gate=[
        "no-secrets", {"no-secrets": {"allow": ["/root/.ssh/*", "/etc/*.key",
                                                 "/etc/app.conf"]}}]))
    found, allowed = result.checks
    assert not found.passed and found.detail == "3 files with secrets"
    assert found.problems == ("/etc/app.conf: AWS access key id",
                              "/etc/ssl.key: private key",
                              "/root/.ssh/id_rsa: SSH private key file, private key "
                              "(OPENSSH PRIVATE KEY)")
    assert allowed.passed and "3 allowed" in allowed.detail
    assert result.summary.startswith("failed: no-secrets (3 files with secrets)")


def test_reading_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A key past the per-file cap is not read (only the start of a big file is); the total
    # cap makes no-secrets fail rather than pass on what it did not read.
    monkeypatch.setattr(gate_layers, "MAX_FILE_READ", 64 << 10)
    big = b"a" * (200 << 10) + PEM_KEY
    files = _files(tmp_path, [entry("big.txt", big), entry("small.key", PEM_KEY)])
    assert set(files.secrets) == {"/small.key"}
    assert files.truncated == 1
    assert files.bytes_read <= (64 << 10) + len(PEM_KEY)
    monkeypatch.setattr(gate_layers, "MAX_TOTAL_READ", 100 << 10)
    layout = make_layout(tmp_path / "capped", [[entry(f"f{i}.txt", b"b" * (60 << 10))
                                               for i in range(3)]])
    result = run_gate(context(layout, tmp_path, gate=["no-secrets"]))
    (check,) = result.checks
    assert not check.passed
    assert "could not read every file" in check.detail and "/f2.txt" in check.detail


def test_hostile_names_and_many_entries(tmp_path: Path) -> None:
    hostile = [
        entry("../../etc/evil", b"x", mode=0o4755),          # skipped, as unpack skips it
        entry("/abs/suid", b"x", mode=0o4755),                # absolute: placed in the root
        entry("./odd\nname\x7f", b"x", mode=0o666),           # newline in the name
        entry("dir/.wh.", b""), entry("dir/.wh..", b""),      # whiteouts of nothing
        entry("wh/.wh..wh.plnk", b""),                        # aufs bookkeeping
        entry("x" * 300, b"x", mode=0o4755),                  # a pax long name
    ] + [entry(f"many/{i}", b"", mode=0o644) for i in range(20000)]
    started = time.monotonic()
    files = _files(tmp_path, hostile)
    assert time.monotonic() - started < 30
    assert files.skipped == 1
    assert set(files.setuid) == {"/abs/suid", "/" + "x" * 300}
    assert set(files.world_writable) == {"/odd\nname\x7f"}
    assert files.entries == 20007


def test_too_many_entries_is_an_error_the_check_reports(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICORN_UNPACK_MAX_ENTRIES", "100")
    layout = make_layout(tmp_path / "layout", [[entry(f"f{i}", b"") for i in range(150)]])
    result = run_gate(context(layout, tmp_path, gate=["no-world-writable"]))
    (check,) = result.checks
    assert not check.passed and "more than 100 entries" in check.detail


def test_a_huge_sparse_file_is_not_read_whole(tmp_path: Path) -> None:
    # 1 GiB of zeros compresses to about a megabyte; the checks read only its start.
    import gzip
    import hashlib
    import io

    from gate_layouts import _finish

    info = tarfile.TarInfo("zeros.bin")
    info.size = 1 << 30
    layout_dir = tmp_path / "layout"
    from alicorn.image.oci import new_layout
    blobs = new_layout(layout_dir)
    raw_sha, blob_sha = hashlib.sha256(), hashlib.sha256()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=1) as gz:
        def w(data: bytes) -> None:
            raw_sha.update(data)
            gz.write(data)
        w(info.tobuf(tarfile.PAX_FORMAT))
        chunk = b"\0" * (1 << 20)
        for _ in range(1 << 10):
            w(chunk)
        w(b"\0" * 1024)
    blob = out.getvalue()
    blob_sha.update(blob)
    (blobs / blob_sha.hexdigest()).write_bytes(blob)
    _finish(layout_dir, [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                          "digest": "sha256:" + blob_sha.hexdigest(), "size": len(blob)}],
            ["sha256:" + raw_sha.hexdigest()], None)
    files = read_image_files(layout_dir)
    assert files.scanned == 1 and files.bytes_read <= 8192   # binary: sniffed, not searched
    assert files.secrets == {}


def test_non_root_and_healthcheck_read_the_config(tmp_path: Path) -> None:
    passwd = b"root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\nweb:x:33:33::/:/bin/false\n"
    cases = {
        "web": (True, "runs as web (uid 33)"), "33:33": (True, "runs as uid 33"),
        "toor": (False, "uid 0"), "root:root": (False, "root"), "": (False, "sets no User"),
        "ghost": (False, "not in the image's /etc/passwd"),
    }
    for i, (user, (ok, text)) in enumerate(cases.items()):
        layout = make_layout(tmp_path / f"l{i}", [[directory("etc"),
                                                   entry("etc/passwd", passwd)]],
                             config={"User": user} if user else {})
        (check,) = run_gate(context(layout, tmp_path / f"c{i}", gate=["non-root"])).checks
        assert check.passed is ok and text in check.detail, (user, check.detail)
    with_hc = make_layout(tmp_path / "hc", [[directory("etc")]],
                          config={"Healthcheck": {"Test": ["CMD", "true"]}})
    assert run_gate(context(with_hc, tmp_path / "hc1", gate=["healthcheck"])).passed
    disabled = make_layout(tmp_path / "nohc", [[directory("etc")]],
                           config={"Healthcheck": {"Test": ["NONE"]}})
    assert not run_gate(context(disabled, tmp_path / "hc2", gate=["healthcheck"])).passed
    labelled = make_layout(tmp_path / "lab", [[directory("etc")]],
                           config={"Labels": {"org.alicorn.healthcheck": '{"http": {}}'}})
    assert run_gate(context(labelled, tmp_path / "hc3", gate=["healthcheck"])).passed


def test_unpack_caps_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICORN_UNPACK_MAX_TOTAL", "1000")
    layout = make_layout(tmp_path / "layout", [[entry("a", b"a" * 600), entry("b", b"b" * 600)]])
    (check,) = run_gate(context(layout, tmp_path, gate=["no-secrets"])).checks
    assert not check.passed and "exceed 1000 bytes in all" in check.detail


def test_passwd_follows_the_layers(tmp_path: Path) -> None:
    # A later layer replaces /etc/passwd: the user's uid is read from the newest one; an
    # opaque /etc removes it altogether.
    first = [directory("etc"), entry("etc/passwd", b"app:x:0:0::/:/bin/sh\n")]
    second = [directory("etc"), entry("etc/passwd", b"app:x:1000:1000::/:/bin/sh\n")]
    third = [directory("etc"), entry("etc/.wh..wh..opq", b""), entry("etc/hosts", b"")]
    for name, layers, ok in (("one", [first], False), ("two", [first, second], True),
                             ("three", [first, second, third], False)):
        layout = make_layout(tmp_path / name, layers, config={"User": "app"})
        (check,) = run_gate(context(layout, tmp_path / f"c-{name}", gate=["non-root"])).checks
        assert check.passed is ok, (name, check.detail)
