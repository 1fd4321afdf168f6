"""RFC 9162 Merkle trees: reference vectors, a naive transcription of the RFC, corrupted proofs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import pytest

from alicorn.chain import merkle

# -- the RFC, transcribed naively (lists and slices, no caching): the reference ------------------


def mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1 over entries (not leaf hashes)."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1."""
    n = len(d)
    if n == 1:
        return []
    k = merkle.split(n)
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 §2.1.4.1."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = merkle.split(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]); the RFC defines it for 0 < m < n, and it is empty for m = n."""
    return [] if m in (0, len(d)) else subproof(m, d, True)


def over(data: Sequence[bytes]) -> Callable[[int, int], bytes]:
    """A subtree-hash callable answering from the entries themselves, as the RFC would."""
    return lambda start, end: mth(data[start:end])


# -- reference vectors ---------------------------------------------------------------------------
# The 8-leaf tree of Certificate Transparency's reference implementations. Leaves, node hashes and
# roots per size: transparency-dev/merkle, testonly/constants.go (LeafInputs, NodeHashes,
# RootHashes); proofs: transparency-dev/merkle, proof/verify_test.go (inclusionProofs, whose leaf
# numbers are 1-based, and consistencyProofs).

LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]

ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]

NODES = [[bytes.fromhex(h) for h in level] for level in (
    ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",),
)]

# (leaf index, tree size, proof); verify_test.go numbers leaves from 1, these from 0.
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]

# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
HASHES = [merkle.leaf_hash(x) for x in LEAVES]


def test_hashes_are_domain_separated() -> None:
    assert merkle.leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert merkle.node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert ROOTS[0] == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_reference_roots(size: int) -> None:
    assert merkle.root(HASHES[:size]) == ROOTS[size]
    assert mth(LEAVES[:size]) == ROOTS[size]


def test_reference_nodes() -> None:
    for level, hashes in enumerate(NODES):
        for index, want in enumerate(hashes):
            start = index << level
            assert merkle.root(HASHES[start:start + (1 << level)]) == want
            assert merkle.range_hash(start, start + (1 << level),
                                     lambda lv, i: NODES[lv][i]) == want


@pytest.mark.parametrize(("index", "size", "want"), INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, want: list[str]) -> None:
    got = merkle.inclusion_proof(index, size, over(LEAVES))
    assert [h.hex() for h in got] == want
    assert merkle.verify_inclusion(HASHES[index], index, size, got, ROOTS[size])
    for bad in corrupt_inclusion(index, size, got):
        assert not merkle.verify_inclusion(*bad), bad


@pytest.mark.parametrize(("old", "new", "want"), CONSISTENCY)
def test_reference_consistency_proofs(old: int, new: int, want: list[str]) -> None:
    got = merkle.consistency_proof(old, new, over(LEAVES))
    assert [h.hex() for h in got] == want
    assert merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], got)
    if got:
        for bad in corrupt_consistency(old, new, got):
            assert not merkle.verify_consistency(*bad), bad


def corrupt_inclusion(index: int, size: int, good: list[bytes]
                      ) -> list[tuple[bytes, int, int, list[bytes], bytes]]:
    """Probes that must all fail, after transparency-dev/merkle's corruptInclusionProof."""
    leaf, root = HASHES[index], ROOTS[size]
    probes = [
        (leaf, index - 1, size, good, root), (leaf, index + 1, size, good, root),
        (leaf, index ^ 2, size, good, root), (leaf, index, size * 2, good, root),
        (leaf, index, size // 2, good, root), (b"WrongLeaf", index, size, good, root),
        (leaf, index, size, good, merkle.EMPTY_ROOT), (leaf, index, size, good, SOME_HASH),
        (leaf, index, size, [*good, b""], root), (leaf, index, size, [*good, root], root),
        (leaf, index, size, [b"", *good], root), (leaf, index, size, [root, *good], root),
    ]
    for i in range(len(good)):
        flipped = list(good)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((leaf, index, size, flipped, root))
    if good:
        probes.append((leaf, index, size, good[:-1], root))
    if len(good) > 1:
        probes.append((leaf, index, size, [good[0], SOME_HASH, *good[1:]], root))
    return probes


def corrupt_consistency(old: int, new: int, good: list[bytes]
                        ) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    """Probes that must all fail, after transparency-dev/merkle's corruptConsistencyProof."""
    r1, r2 = ROOTS[old], ROOTS[new]
    probes = [
        (old - 1, new, r1, r2, good), (old + 1, new, r1, r2, good),
        (old ^ 2, new, r1, r2, good), (old, new * 2, r1, r2, good),
        (old, new // 2, r1, r2, good), (old, new, b"WrongRoot", r2, good),
        (old, new, r1, b"WrongRoot", good), (old, new, r2, r1, good),
        (old, new, r1, r2, []), (old, new, r1, r2, [*good, b""]),
        (old, new, r1, r2, [*good, r1]), (old, new, r1, r2, [*good, r2]),
        (old, new, r1, r2, [b"", *good]), (old, new, r1, r2, [r1, *good]),
        (old, new, r1, r2, [r2, *good]), (old, new, r1, r2, [good[0], *good]),
        (old, new, r1, r2, good[:-1]),
    ]
    for i in range(len(good)):
        flipped = list(good)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((old, new, r1, r2, flipped))
    return probes


def test_inclusion_edge_cases() -> None:
    leaf = merkle.leaf_hash(b"data")
    assert merkle.verify_inclusion(leaf, 0, 1, [], leaf)
    assert not merkle.verify_inclusion(leaf, 0, 1, [], b"")
    assert not merkle.verify_inclusion(b"", 0, 1, [], leaf)
    for index, size in ((0, 0), (1, 0), (2, 1), (-1, 4)):
        assert not merkle.verify_inclusion(SOME_HASH, index, size, [], merkle.EMPTY_ROOT)
        with pytest.raises(ValueError):
            merkle.inclusion_path(index, size)


def test_consistency_edge_cases() -> None:
    r1, r2 = SOME_HASH, ROOTS[5]
    assert merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    assert merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, r2, [])
    assert merkle.verify_consistency(3, 3, r1, r1, [])
    assert not merkle.verify_consistency(0, 5, r1, r2, [])      # an empty tree has HASH()
    assert not merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, r2, [r2])
    assert not merkle.verify_consistency(3, 3, r1, r2, [])      # same size, two roots
    assert not merkle.verify_consistency(3, 3, r1, r1, [r1])    # needs no proof
    assert not merkle.verify_consistency(5, 3, r2, r1, [])      # time travel
    assert not merkle.verify_consistency(2, 5, ROOTS[2], r2, [])
    assert merkle.consistency_path(0, 7) == [] and merkle.consistency_path(7, 7) == []
    with pytest.raises(ValueError):
        merkle.consistency_path(8, 7)


def test_subtrees_decompose_aligned_ranges() -> None:
    assert merkle.subtrees(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert merkle.subtrees(8, 13) == [(2, 2), (0, 12)]
    assert merkle.subtrees(5, 6) == [(0, 5)]
    for bad in ((3, 5), (2, 6), (4, 4), (-2, 0)):
        with pytest.raises(ValueError):
            merkle.subtrees(*bad)
    assert merkle.split(2) == 1 and merkle.split(5) == 4 and merkle.split(8) == 4
    with pytest.raises(ValueError):
        merkle.split(1)


def entries_of(n: int) -> list[bytes]:
    return [b"entry %d" % i for i in range(n)]


@pytest.mark.parametrize("n", range(1, 65))
def test_all_proofs_match_the_rfc_up_to_64(n: int) -> None:
    data = entries_of(n)
    leaves = [merkle.leaf_hash(x) for x in data]
    root = mth(data)
    assert merkle.root(leaves) == root
    assert merkle.tree_root(n, lambda lv, i: mth(data[i << lv:(i + 1) << lv])) == root
    for index in range(n):
        got = merkle.inclusion_proof(index, n, over(data))
        assert got == path(index, data)
        assert merkle.verify_inclusion(leaves[index], index, n, got, root)
        assert not merkle.verify_inclusion(leaves[index], (index + 1) % n or n, n, got, root)
    for old in range(n + 1):
        got = merkle.consistency_proof(old, n, over(data))
        assert got == proof(old, data)
        assert merkle.verify_consistency(old, n, mth(data[:old]), root, got)
        if got:
            assert not merkle.verify_consistency(old, n, mth(data[:old]), root, got[:-1])
            assert not merkle.verify_consistency(old, n, mth(data[1:old + 1]), root, got)


def test_frontier_makes_every_complete_node_once() -> None:
    data = entries_of(64)
    f = merkle.Frontier()
    seen = []
    for i, x in enumerate(data):
        made = f.append(merkle.leaf_hash(x))
        seen += made
        assert f.root() == mth(data[:i + 1])
        for level, index, h in made:
            assert h == mth(data[index << level:(index + 1) << level])
    assert len(seen) == 63 and len({(lv, i) for lv, i, _ in seen}) == 63
    with pytest.raises(ValueError):
        merkle.Frontier(3, [SOME_HASH])
    assert merkle.Frontier().root() == merkle.EMPTY_ROOT


# -- properties ----------------------------------------------------------------------------------

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:     # hypothesis is in the test extras; without it these two are skipped
    HAVE_HYPOTHESIS = False
else:
    HAVE_HYPOTHESIS = True

if HAVE_HYPOTHESIS:
    trees = st.lists(st.binary(max_size=40), min_size=1, max_size=300)

    @settings(max_examples=200, deadline=None)
    @given(trees, st.data())
    def test_property_inclusion(data: list[bytes], draw: st.DataObject) -> None:
        n = len(data)
        index = draw.draw(st.integers(0, n - 1))
        size = draw.draw(st.integers(index + 1, n))
        leaves = [merkle.leaf_hash(x) for x in data]
        got = merkle.inclusion_proof(index, size, lambda s, e: merkle.root(leaves[s:e]))
        root = merkle.root(leaves[:size])
        assert merkle.verify_inclusion(leaves[index], index, size, got, root)
        assert len(got) <= max(size - 1, 0).bit_length()
        other = draw.draw(st.integers(0, size - 1))
        if leaves[other] != leaves[index]:
            assert not merkle.verify_inclusion(leaves[other], index, size, got, root)

    @settings(max_examples=200, deadline=None)
    @given(trees, st.data())
    def test_property_consistency(data: list[bytes], draw: st.DataObject) -> None:
        n = len(data)
        new = draw.draw(st.integers(1, n))
        old = draw.draw(st.integers(0, new))
        leaves = [merkle.leaf_hash(x) for x in data]
        f = merkle.Frontier()
        f.extend(leaves[:new])
        assert f.root() == merkle.root(leaves[:new])
        got = merkle.consistency_proof(old, new, lambda s, e: merkle.root(leaves[s:e]))
        r1, r2 = merkle.root(leaves[:old]), merkle.root(leaves[:new])
        assert merkle.verify_consistency(old, new, r1, r2, got)
        if 0 < old < new:
            changed = [*leaves[:old - 1], merkle.leaf_hash(data[old - 1] + b"!")]
            assert not merkle.verify_consistency(old, new, merkle.root(changed), r2, got)
else:
    @pytest.mark.skip(reason="hypothesis is not installed (pip install -e '.[test]')")
    def test_property_inclusion() -> None: ...

    @pytest.mark.skip(reason="hypothesis is not installed (pip install -e '.[test]')")
    def test_property_consistency() -> None: ...
