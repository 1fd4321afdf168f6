"""Merkle trees as RFC 9162 (Certificate Transparency v2) defines them: pure functions, no I/O.

A log of ``n`` entries is the Merkle Tree Hash (MTH, §2.1.1) over their leaf hashes, where the
split of a list of ``n > 1`` leaves is at ``k``, the largest power of two smaller than ``n``.  So
every subtree the algorithms ever name is a range ``[start, end)`` whose ``start`` is a multiple
of the largest power of two not above its size; its hash is that of the *complete* subtrees
(sizes ``2**level``) along the binary expansion of its size, folded from the right.  A store
therefore only has to keep the complete subtrees: node ``(level, index)`` covers the leaves
``[index * 2**level, (index + 1) * 2**level)``, and it never changes once it exists.

Proof generation takes a callable giving the hash of any such range, so that the store can
answer from those cached nodes; :func:`inclusion_path` and :func:`consistency_path` say up front
which ranges a proof needs (and :func:`subtrees` which complete nodes a range needs), so that a
store can fetch them all in one query.  Verification follows the RFC's algorithms with ``fn`` and
``sn`` (§2.1.3.2, §2.1.4.2) step by step, and returns a bool: the caller says what was wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
# MTH({}) = HASH(): the root of the empty tree.
EMPTY_ROOT = hashlib.sha256(b"").digest()

# The hash of the subtree over the leaves [start, end).
SubtreeHash = Callable[[int, int], bytes]
# The hash of the complete subtree (level, index).
NodeHash = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one entry (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an inner node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """``k``, the largest power of two smaller than ``n`` (``n >= 2``)."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves has no split")
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a list of *leaf hashes*, computed from all of them.

    Level by level, with an unpaired last node carried up unchanged: that is the same tree as
    the RFC's recursive split (the left part is always the largest complete power of two), and
    it needs no recursion over a million leaves.
    """
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


# -- subtrees and complete nodes ----------------------------------------------------------------

def subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The complete nodes ``(level, index)`` that make up the subtree ``[start, end)``, left first.

    ``start`` must be a multiple of the largest power of two not above ``end - start``, as it is
    for every range that MTH, PATH and PROOF name.
    """
    size = end - start
    if size < 1 or start < 0 or start % (1 << (size.bit_length() - 1)):
        raise ValueError(f"[{start}, {end}) is not a subtree of a Merkle tree")
    out = []
    pos = start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, pos >> level))
            pos += 1 << level
    return out


def range_hash(start: int, end: int, node: NodeHash) -> bytes:
    """MTH of the leaves ``[start, end)`` from the complete nodes :func:`subtrees` names."""
    parts = subtrees(start, end)
    h = node(*parts[-1])
    for level, index in reversed(parts[:-1]):
        h = node_hash(node(level, index), h)
    return h


def tree_root(size: int, node: NodeHash) -> bytes:
    """MTH of the first ``size`` leaves: at most ``log2(size) + 1`` complete nodes."""
    return EMPTY_ROOT if size == 0 else range_hash(0, size, node)


# -- inclusion (RFC 9162 §2.1.3) ----------------------------------------------------------------

def inclusion_path(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes are PATH(index, D[size]), in the proof's order (leaf side first)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    out = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split(hi - lo)
        if index < lo + k:      # PATH(m, D[0:k]) : MTH(D[k:n])
            out.append((lo + k, hi))
            hi = lo + k
        else:                   # PATH(m - k, D[k:n]) : MTH(D[0:k])
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of the first ``size`` leaves."""
    return [subtree(start, end) for start, end in inclusion_path(index, size)]


def root_from_inclusion_proof(leaf: bytes, index: int, size: int,
                              proof: Sequence[bytes]) -> bytes | None:
    """The root ``proof`` leads to from ``leaf`` (RFC 9162 §2.1.3.2); None when malformed."""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     root_hash: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``(size, root_hash)``."""
    return root_from_inclusion_proof(leaf, index, size, proof) == root_hash


# -- consistency (RFC 9162 §2.1.4) --------------------------------------------------------------

def consistency_path(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes are PROOF(old_size, D[new_size]), in the proof's order.

    Empty when the sizes are equal or the old tree is empty: those need no proof.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"a tree of size {old_size} cannot precede one of size {new_size}")
    if old_size in (0, new_size):
        return []
    out = []
    lo, hi, m, whole = 0, new_size, old_size, True
    while m != hi - lo:
        k = split(hi - lo)
        if m <= k:              # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            out.append((lo + k, hi))
            hi = lo + k
        else:                   # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            out.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    if not whole:               # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        out.append((lo, hi))
    out.reverse()
    return out


def consistency_proof(old_size: int, new_size: int, subtree: SubtreeHash) -> list[bytes]:
    """The proof that the tree of ``old_size`` leaves is a prefix of the one of ``new_size``."""
    return [subtree(start, end) for start, end in consistency_path(old_size, new_size)]


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows the tree ``(old_size, old_root)`` to be a prefix of the new one.

    RFC 9162 §2.1.4.2, plus the cases it leaves to the caller: equal sizes need equal roots and
    no proof; the empty tree (whose root is ``HASH()``) precedes every tree, with no proof.
    """
    if not 0 <= old_size <= new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:      # an exact power of two: the old root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


# -- appending ----------------------------------------------------------------------------------

def frontier_nodes(size: int) -> list[tuple[int, int]]:
    """The complete nodes along the right edge of a tree of ``size`` leaves, largest first."""
    return subtrees(0, size) if size else []


@dataclass
class Frontier:
    """The right edge of a tree: what appending needs, and all its root needs.

    ``hashes`` are those of :func:`frontier_nodes` ``(size)``: one complete subtree per set bit
    of ``size``.  Appending a leaf merges the equal-sized ones at the edge, and each merge is a
    new complete node that a store keeps, so the store never recomputes anything.
    """

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.hashes) != self.size.bit_count():
            raise ValueError(f"a tree of size {self.size} has {self.size.bit_count()} "
                             f"frontier nodes, not {len(self.hashes)}")

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns the complete nodes ``(level, index, hash)`` it finished."""
        old = self.size
        self.size = new = old + 1
        made = []
        h = leaf
        level = 0
        while old >> level & 1:     # a subtree of this level is waiting at the edge: merge
            h = node_hash(self.hashes.pop(), h)
            level += 1
            made.append((level, (new >> level) - 1, h))
        self.hashes.append(h)
        return made

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        made: list[tuple[int, int, bytes]] = []
        for leaf in leaves:
            made.extend(self.append(leaf))
        return made

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h
