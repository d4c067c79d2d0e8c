"""Compiled loops for MinHash and the one-edit neighbourhood (numba, cached on disk).

curation/minhash.py imports this module only when it computes something, so importing the
CLI never loads numba. Every kernel is a plain loop over flat arrays, single-threaded (the
result never depends on scheduling), and returns exactly what the numpy code it replaces
returns. Unsigned arithmetic wraps modulo 2**64 as in numpy; every operand is kept uint64
so that numba never promotes a mixed signed/unsigned expression to float.
"""

from __future__ import annotations

import sys

import numba
import numpy as np


def _load_numba_without_scipy() -> None:
    """Load numba's CPU target now, with scipy.linalg hidden from it.

    The first compiled call loads numba's array registries, whose BLAS probe imports
    scipy.linalg (~0.16 CPU-s, a third of loading numba) only so that np.dot and np.linalg
    compile; no kernel here uses them. With scipy.linalg hidden the probe records "no BLAS"
    and everything else loads as usual; scipy.linalg is importable again right after (sklearn
    and scipy.stats import it as always). Nothing is hidden when it is loaded already.
    """
    if "scipy.linalg" in sys.modules:
        return
    from numba.core.registry import cpu_target

    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # import fails: "no BLAS"
    try:
        cpu_target.target_context.refresh()
    finally:
        if sys.modules.get("scipy.linalg", 0) is None:
            del sys.modules["scipy.linalg"]


_load_numba_without_scipy()

_U32 = np.uint64(0xFFFFFFFF)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@numba.njit(inline="always")
def _mix64(x):  # pragma: no cover - compiled
    x = x ^ (x >> _S30)
    x = x * _M1
    x = x ^ (x >> _S27)
    x = x * _M2
    return x ^ (x >> _S31)


@numba.njit(cache=True, nogil=True)
def ngram_hashes(units, lens, ngram, poly, out):  # pragma: no cover - compiled
    """splitmix64 of the polynomial (base ``poly``) over each character n-gram's units, in
    text order; a text shorter than ``ngram`` is one n-gram padded with zeros (the same
    values as ``minhash.char_ngram_hashes``' numpy path)."""
    pos = 0
    w = 0
    for d in range(lens.shape[0]):
        n = lens[d]
        if n == 0:
            continue
        if n <= ngram:
            key = np.uint64(0)
            for k in range(ngram):
                c = units[pos + k] if k < n else np.uint64(0)
                key = key * poly + c
            out[w] = _mix64(key)
            w += 1
        else:
            for i in range(n - ngram + 1):
                key = np.uint64(0)
                for k in range(ngram):
                    key = key * poly + units[pos + i + k]
                out[w] = _mix64(key)
                w += 1
        pos += n
    return w


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_S29 = np.uint64(29)


@numba.njit(cache=True, nogil=True)
def char_min_hashes(cps, lens, ngram, poly, a, b, out):  # pragma: no cover - compiled
    """out[d, k] = min over text d's character n-grams g of (a[k] * h(g) + b[k]) mod 2**32,
    h(g) the top 32 bits of ``ngram_hashes``' hash of g, made on the fly from the code points
    (``cps``, uint32; unit = code point + 1) and never stored. Rows of empty texts are set
    to 2**32 - 1 (datasketch's empty value). The affine step is uint32 arithmetic (it wraps
    mod 2**32 by itself), twice as many lanes per vector instruction as uint64."""
    num_perm = a.shape[0]
    empty = np.uint32(0xFFFFFFFF)
    best = np.empty(num_perm, dtype=np.uint32)
    one = np.uint64(1)
    pos = 0
    for d in range(lens.shape[0]):
        n = lens[d]
        if n == 0:
            for k in range(num_perm):
                out[d, k] = empty
            continue
        best[:] = empty
        count = n - ngram + 1 if n > ngram else 1
        for i in range(count):
            key = np.uint64(0)
            for k in range(ngram):
                c = np.uint64(cps[pos + i + k]) + one if i + k < n else np.uint64(0)
                key = key * poly + c
            h = np.uint32(_mix64(key) >> np.uint64(32))
            for k in range(num_perm):
                v = np.uint32(a[k] * h + b[k])
                if v < best[k]:
                    best[k] = v
        for k in range(num_perm):
            out[d, k] = best[k]
        pos += n


@numba.njit(cache=True, nogil=True)
def band_keys(sig, bands, rows, out):  # pragma: no cover - compiled
    """out[d, band] = the FNV-style mix of doc d's ``rows`` slots of that band, seeded by
    the band (the same values as ``minhash.band_keys``' numpy loop)."""
    for d in range(sig.shape[0]):
        for band in range(bands):
            key = _FNV_OFFSET + np.uint64(band)
            for col in range(band * rows, (band + 1) * rows):
                key = (key ^ np.uint64(sig[d, col])) * _FNV_PRIME
                key ^= key >> _S29
            out[d, band] = key


@numba.njit(cache=True, nogil=True)
def run_pair_codes(packed, bits, n, cross_at, out):  # pragma: no cover - compiled
    """Pairs within runs of a sorted array of ``(key prefix << bits) | doc`` values.

    For every run of equal key prefixes, every pair of different docs in it as the code
    ``lo * n + hi`` (docs in a run are ascending, so lo < hi); with ``cross_at`` > 0 only
    the pairs with lo < cross_at <= hi (one doc on each side). Writes into ``out`` when it
    is large enough (call once with an empty ``out`` to count); returns the number of codes.
    """
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    shift = np.uint64(bits)
    m = packed.shape[0]
    write = out.shape[0] > 0
    w = 0
    i = 0
    while i < m:
        group = packed[i] >> shift
        j = i + 1
        while j < m and (packed[j] >> shift) == group:
            j += 1
        for p in range(i, j - 1):
            lo = np.int64(packed[p] & mask)
            if cross_at > 0 and lo >= cross_at:
                break  # the rest of the run is on the right side too
            for q in range(p + 1, j):
                hi = np.int64(packed[q] & mask)
                if hi != lo and (cross_at <= 0 or hi >= cross_at):
                    if write:
                        out[w] = lo * n + hi
                    w += 1
        i = j
    return w


@numba.njit(cache=True, nogil=True)
def packed_deletion_keys(
    cps, lens, poly, poly_inv, salt, bits, first_doc, part_mask, part, out
):  # pragma: no cover
    """Key of every text and of every text with one character deleted (a polynomial hash
    over the units, unit = code point + 1, plus a salt per length), written as
    ``(key >> bits << bits) | doc``: the key's top bits and its text in one sortable value.
    ``cps`` are the code points (uint32): the units are made here, not as a uint64 copy.
    Only the keys of one pass are written, those whose ``(key >> bits) & part_mask`` is
    ``part`` (``part_mask`` 0: all). Returns how many, or -1 when ``out`` is too small."""
    shift = np.uint64(bits)
    one = np.uint64(1)
    max_len = 0
    for d in range(lens.shape[0]):
        max_len = max(max_len, lens[d])
    prefix = np.zeros(max_len + 1, dtype=np.uint64)
    w = 0
    pos = 0
    for d in range(lens.shape[0]):
        n = lens[d]
        doc = np.uint64(first_doc + d)
        power = np.uint64(1)
        for t in range(n):
            prefix[t + 1] = prefix[t] + (np.uint64(cps[pos + t]) + one) * power
            power = power * poly
        top = (prefix[n] + salt[n]) >> shift
        if top & part_mask == part:
            if w == out.shape[0]:
                return -1  # no room left (numba does not check bounds): the caller retries
            out[w] = (top << shift) | doc
            w += 1
        for i in range(n):
            top = (prefix[i] + (prefix[n] - prefix[i + 1]) * poly_inv + salt[n - 1]) >> shift
            if top & part_mask == part:
                if w == out.shape[0]:
                    return -1
                out[w] = (top << shift) | doc
                w += 1
        pos += n
    return w


_MIX_WORD = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True)
def word_bag_hashes(cps, lens, is_space, poly, out):  # pragma: no cover - compiled
    """out[d] = the sum (mod 2**64) of a 64-bit hash of each word of text d, words being
    ``str.split()``'s (maximal runs of code points c with not ``is_space[c]``; code points
    past the table are never spaces). Equal word bags give equal sums in any order; unequal
    bags collide with probability ~2**-64, so callers confirm equal sums exactly."""
    n_space = is_space.shape[0]
    pos = 0
    for d in range(lens.shape[0]):
        n = lens[d]
        total = np.uint64(0)
        key = np.uint64(0)
        in_word = False
        for t in range(pos, pos + n):
            c = cps[t]
            if c < n_space and is_space[c]:
                if in_word:
                    total += _mix64(key + _MIX_WORD)
                    in_word = False
                    key = np.uint64(0)
            else:
                key = key * poly + np.uint64(c) + np.uint64(1)
                in_word = True
        if in_word:
            total += _mix64(key + _MIX_WORD)
        out[d] = total
        pos += n


@numba.njit(cache=True, nogil=True)
def equal_slots_reaching(sig_a, sig_b, pairs, need, step, out):  # pragma: no cover - compiled
    """out[p] = the number of equal slots of pair p (rows pairs[p, 0] of ``sig_a`` and
    pairs[p, 1] of ``sig_b``), or -1 as soon as the pair can no longer reach ``need`` equal
    slots (checked every ``step`` slots): the exact decision, with early rejection."""
    num_perm = sig_a.shape[1]
    for p in range(pairs.shape[0]):
        i, j = pairs[p, 0], pairs[p, 1]
        equal = 0
        lo = 0
        while lo < num_perm:
            hi = min(lo + step, num_perm)
            for k in range(lo, hi):
                if sig_a[i, k] == sig_b[j, k]:
                    equal += 1
            if equal + (num_perm - hi) < need:
                equal = -1
                break
            lo = hi
        out[p] = equal


@numba.njit(cache=True, nogil=True)
def component_labels(n, edges, out):  # pragma: no cover - compiled
    """Connected components of the undirected graph on nodes 0..n-1 with ``edges`` (k x 2):
    out[v] = the component's number, components numbered by their smallest node in node
    order (0, 1, ...), as ``scipy.sparse.csgraph.connected_components`` numbers them. Returns
    the number of components. Union-find with path halving; the root is the smallest node."""
    parent = np.arange(n)
    for e in range(edges.shape[0]):
        a, b = edges[e, 0], edges[e, 1]
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        if a < b:
            parent[b] = a
        elif b < a:
            parent[a] = b
    count = 0
    for v in range(n):
        root = v
        while parent[root] != root:
            root = parent[root]
        parent[v] = root  # every node below v already points at its root: roots are minimal
        if root == v:
            out[v] = count
            count += 1
        else:
            out[v] = out[root]
    return count


@numba.njit(cache=True, nogil=True)
def word_edit_hashes(cps, lens, poly, poly_inv, wild, salt, sub, dele, full):  # pragma: no cover
    """Hashes of ``decontam.word_edit_keys``' strings, words split on single spaces (U+0020)
    as polars' ``str.split(" ")`` does: for text d with n words, ``full[d]``, and at
    ``sub[start(d) + p]`` / ``dele[start(d) + p]`` the text with word p a wildcard / deleted
    (start(d) = the words of the texts before d). A word's hash is splitmix64 of the
    polynomial over its code points; the word "\\x00" (what the wildcard is written as) hashes
    to ``wild`` as the wildcard does, so equal strings always give equal hashes. Sequences
    are polynomials in ``poly`` over the word hashes plus ``salt[word count]``."""
    max_words = 1
    for d in range(lens.shape[0]):
        max_words = max(max_words, lens[d] + 1)
    words = np.empty(max_words, dtype=np.uint64)
    powers = np.empty(max_words + 1, dtype=np.uint64)
    powers[0] = np.uint64(1)
    for k in range(1, max_words + 1):
        powers[k] = powers[k - 1] * poly
    prefix = np.empty(max_words + 1, dtype=np.uint64)
    pos = 0
    w = 0
    for d in range(lens.shape[0]):
        n_chars = lens[d]
        n = 0
        key = np.uint64(0)
        only_nul = True
        n_in = 0
        for t in range(pos, pos + n_chars + 1):
            if t == pos + n_chars or cps[t] == 32:
                words[n] = wild if (only_nul and n_in == 1) else _mix64(key + _MIX_WORD)
                n += 1
                key = np.uint64(0)
                only_nul = True
                n_in = 0
            else:
                key = key * poly + np.uint64(cps[t]) + np.uint64(1)
                only_nul = only_nul and cps[t] == 0
                n_in += 1
        prefix[0] = np.uint64(0)
        for k in range(n):
            prefix[k + 1] = prefix[k] + words[k] * powers[k]
        total = prefix[n]
        full[d] = total + salt[n]
        for p in range(n):
            sub[w + p] = total + (wild - words[p]) * powers[p] + salt[n]
            # the words after p move down one place: their part times poly's inverse (poly is
            # odd, so invertible mod 2**64)
            dele[w + p] = prefix[p] + (total - prefix[p + 1]) * poly_inv + salt[n - 1]
        w += n
        pos += n_chars
    return w


@numba.njit(cache=True, nogil=True)
def prefix_set(values, shift, table, used):  # pragma: no cover - compiled
    """Put ``value >> shift`` of every value into the open-addressing set (``table``, ``used``:
    a power-of-two size, at least twice the values, so probes stay short)."""
    mask = np.uint64(table.shape[0] - 1)
    for k in range(values.shape[0]):
        key = values[k] >> shift
        slot = _mix64(key) & mask
        while used[slot] and table[slot] != key:
            slot = (slot + np.uint64(1)) & mask
        table[slot] = key
        used[slot] = True


@numba.njit(cache=True, nogil=True)
def keep_prefixes_in(values, shift, table, used, out):  # pragma: no cover - compiled
    """Write to ``out``, in order, the values whose ``value >> shift`` is in the set built
    by :func:`prefix_set`; returns how many."""
    mask = np.uint64(table.shape[0] - 1)
    w = 0
    for k in range(values.shape[0]):
        key = values[k] >> shift
        slot = _mix64(key) & mask
        while used[slot]:
            if table[slot] == key:
                out[w] = values[k]
                w += 1
                break
            slot = (slot + np.uint64(1)) & mask
    return w
