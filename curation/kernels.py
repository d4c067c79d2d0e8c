"""Compiled loops for MinHash and the one-edit neighbourhood (numba, cached on disk).

curation/minhash.py imports this module only when it computes something, so importing the
CLI never loads numba. Every kernel is a plain loop over flat arrays, single-threaded (the
result never depends on scheduling), and returns exactly what the numpy code it replaces
returns. Unsigned arithmetic wraps modulo 2**64 as in numpy; every operand is kept uint64
so that numba never promotes a mixed signed/unsigned expression to float.
"""

from __future__ import annotations

import numba
import numpy as np

_U32 = np.uint64(0xFFFFFFFF)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@numba.njit(cache=True, nogil=True)
def min_hashes(hv, offsets, a, b, out):  # pragma: no cover - compiled
    """out[d, k] = min over doc d's hashes h of (a[k]*h + b[k]) mod 2**32 (docs without
    hashes keep what ``out`` holds); the same values as ``minhash._min_hashes``."""
    num_perm = a.shape[0]
    a64 = a.astype(np.uint64)
    b64 = b.astype(np.uint64)
    best = np.empty(num_perm, dtype=np.uint64)
    for d in range(offsets.shape[0] - 1):
        lo, hi = offsets[d], offsets[d + 1]
        if hi == lo:
            continue
        best[:] = _U32
        for t in range(lo, hi):
            h = np.uint64(hv[t])
            for k in range(num_perm):
                v = (a64[k] * h + b64[k]) & _U32
                if v < best[k]:
                    best[k] = v
        for k in range(num_perm):
            out[d, k] = np.uint32(best[k])


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


@numba.njit(cache=True, nogil=True)
def deletion_keys(units, lens, poly, poly_inv, salt, keys, docs, first_doc):  # pragma: no cover
    """Key of every text and of every text with one character deleted (a polynomial hash
    plus a salt per length, as ``minhash._deletion_keys``); writes keys and their text."""
    max_len = 0
    for d in range(lens.shape[0]):
        max_len = max(max_len, lens[d])
    prefix = np.zeros(max_len + 1, dtype=np.uint64)
    power = np.uint64(1)
    w = 0
    pos = 0
    for d in range(lens.shape[0]):
        n = lens[d]
        power = np.uint64(1)
        for t in range(n):
            prefix[t + 1] = prefix[t] + units[pos + t] * power
            power = power * poly
        keys[w] = prefix[n] + salt[n]
        docs[w] = first_doc + d
        w += 1
        for i in range(n):
            keys[w] = prefix[i] + (prefix[n] - prefix[i + 1]) * poly_inv + salt[n - 1]
            docs[w] = first_doc + d
            w += 1
        pos += n
    return w


@numba.njit(cache=True, nogil=True)
def in_bitmap(keys, bitmap, mask, out):  # pragma: no cover - compiled
    """out[i] = bit (keys[i] & mask) of ``bitmap`` is set (a screen before exact lookups)."""
    for i in range(keys.shape[0]):
        low = keys[i] & mask
        out[i] = (bitmap[low >> np.uint64(3)] >> (low & np.uint64(7))) & np.uint8(1)
