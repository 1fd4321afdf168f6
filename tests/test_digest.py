"""Content addressing: canonical JSON bytes and sha256 digests."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from alicorn.digest import Digest, canonical_json, is_digest

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ABC = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
HEX = "0123456789abcdef" * 4


# -- canonical JSON ----------------------------------------------------------------------------

def test_keys_are_sorted_at_every_depth() -> None:
    value = {"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": None}}
    assert canonical_json(value) == b'{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}'


def test_insertion_order_does_not_matter() -> None:
    one = {"name": "pony", "tag": "latest", "layers": [1, 2]}
    two = {"layers": [1, 2], "tag": "latest", "name": "pony"}
    assert canonical_json(one) == canonical_json(two)
    assert Digest.of_json(one) == Digest.of_json(two)


def test_lists_keep_their_order() -> None:
    assert canonical_json([3, 1, 2]) != canonical_json([1, 2, 3])
    assert canonical_json([3, 1, 2]) == b"[3,1,2]"


def test_no_whitespace_and_plain_scalars() -> None:
    assert canonical_json({"a": [1, 2.5, True, False, None, "x y"]}) == \
        b'{"a":[1,2.5,true,false,null,"x y"]}'


def test_unicode_is_utf8_not_escaped() -> None:
    out = canonical_json({"k": "caf\u00e9 \u2603 \U0001f984"})
    assert out == '{"k":"caf\u00e9 \u2603 \U0001f984"}'.encode()
    assert b"\\u" not in out
    assert "\u00e9".encode() in out
    assert json.loads(out) == {"k": "caf\u00e9 \u2603 \U0001f984"}


def test_unicode_keys_sort_by_code_point() -> None:
    assert canonical_json({"\u00e9": 1, "z": 2, "Z": 3, "a": 4}) == \
        '{"Z":3,"a":4,"z":2,"\u00e9":1}'.encode()


def test_control_characters_and_quotes_are_escaped() -> None:
    assert canonical_json('a"b\\c\n') == b'"a\\"b\\\\c\\n"'


def test_of_json_is_sha256_of_canonical_bytes() -> None:
    value = {"recipe": 1, "name": "pony"}
    assert Digest.of_json(value).hex == hashlib.sha256(canonical_json(value)).hexdigest()


# -- Digest values -----------------------------------------------------------------------------

def test_known_vectors() -> None:
    assert str(Digest.of_bytes(b"")) == EMPTY
    assert str(Digest.of_bytes(b"abc")) == ABC
    assert Digest.of_bytes(b"abc").hex == ABC.split(":")[1]


@pytest.mark.parametrize("bad", [
    "", "sha256:", HEX, "sha256:" + HEX[:-1], "sha256:" + HEX + "0", "sha256:" + HEX.upper(),
    "SHA256:" + HEX, "sha512:" + HEX, "sha256-" + HEX, " sha256:" + HEX, "sha256:" + HEX + " ",
    "sha256:" + HEX[:-1] + "g", "sha256: " + HEX[1:],
])
def test_constructor_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="not a sha256 digest"):
        Digest(bad)
    assert not is_digest(bad) or bad.strip() != bad


def test_constructor_rejects_trailing_newline() -> None:
    with pytest.raises(ValueError):
        Digest("sha256:" + HEX + "\n")


def test_parse() -> None:
    assert Digest.parse(HEX) == Digest("sha256:" + HEX)
    assert Digest.parse("sha256:" + HEX) == Digest("sha256:" + HEX)
    assert Digest.parse(f"  {HEX}\n") == Digest("sha256:" + HEX)
    assert Digest.parse(f"\tsha256:{HEX} ") == Digest("sha256:" + HEX)
    for bad in ("", "abc", HEX.upper(), "sha512:" + HEX, "sha256:" + HEX[:10], "md5:" + HEX):
        with pytest.raises(ValueError, match="not a sha256 digest"):
            Digest.parse(bad)


def test_is_digest() -> None:
    assert is_digest("sha256:" + HEX)
    assert is_digest(f" sha256:{HEX}\n")
    assert not is_digest(HEX)
    assert not is_digest("sha256:" + HEX.upper())


def test_value_semantics() -> None:
    a = Digest("sha256:" + "a" * 64)
    b = Digest("sha256:" + "b" * 64)
    assert a == Digest("sha256:" + "a" * 64)
    assert hash(a) == hash(Digest("sha256:" + "a" * 64))
    assert sorted([b, a]) == [a, b]
    assert str(a) == "sha256:" + "a" * 64
    assert a.hex == "a" * 64
    assert len({a, b, Digest(a.value)}) == 2
    with pytest.raises(AttributeError):
        a.value = b.value  # type: ignore[misc]


# -- files, streams and bytes agree ------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 4095, (1 << 20) - 1, 1 << 20, (1 << 20) + 1,
                                  3 * (1 << 20) + 7])
def test_file_stream_and_bytes_agree(tmp_path: Path, size: int) -> None:
    data = bytes((i * 7 + i // 251) & 0xFF for i in range(size))
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert str(Digest.of_bytes(data)) == expected
    assert str(Digest.of_file(path)) == expected
    assert str(Digest.of_stream(io.BytesIO(data))) == expected


def test_of_file_on_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Digest.of_file(tmp_path / "nope")
