"""MinHash signatures computed in vectorised batches (datasketch's, or a faster hash), LSH
candidates, and exact candidate sources for the edit rule.

datasketch (>= 2.0, scheme "affine32") hashes each shingle with ``sha1_hash32``, pre-mixes it
with the 32-bit MurmurHash3 finalizer, applies ``a*h + b mod 2**32`` per permutation and
keeps the minimum. We do the same over all shingles of a batch at once with numpy, drawing the
permutation parameters as datasketch does (a test checks they equal datasketch's).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Sequence
from functools import cache

import icu  # type: ignore[import-untyped]  # ICU's TR39 skeletons (the confusables data)
import numpy as np
import polars as pl
from rapidfuzz import process
from rapidfuzz.distance import OSA

# texts -> their MinHash signatures (len x num_perm, uint32); callers may pass one that shards
# the work over a cluster, as long as it returns exactly what ``signatures`` returns
Signer = Callable[[Sequence[str]], np.ndarray]

EMPTY_HASH = np.uint32(0xFFFFFFFF)  # datasketch's initial value; what an empty set keeps
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))


# Invisible characters: format characters (zero-width space, soft hyphen, bidi marks, BOM,
# word joiner, tags) and the other default-ignorables (variation selectors, Hangul fillers).
# NFKC keeps them, so "c\u200ba\u200br\u200bd" would otherwise not equal "card".
_INVISIBLE = r"[\p{Cf}\p{Default_Ignorable_Code_Point}]"
# Characters a look-alike may replace: letters, marks and digits (punctuation and symbols are
# dropped by normalisation anyway). ASCII is never rewritten: TR39 would also turn "0" into
# "o", "1" into "l" and "m" into "rn", conflating ordinary text ("10" and "lo").
_CONFUSABLE_DOMAIN = r"[[\p{L}\p{M}\p{N}]&[^\u0000-\u007F]]"
# A skeleton is used only when it looks like basic Latin text: ASCII letters and digits plus
# combining marks ("а" -> "a", "ї" -> "ï"). Other skeletons (Cyrillic "и" -> Latin small
# capital reversed N, Arabic digits -> punctuation) would rewrite a script into nothing that
# an attacker could be imitating, so those characters stay as they are.
_LATIN_LOOKING = r"[[0-9a-zA-Z][\p{M}]]"
_FIXPOINT_ROUNDS = 4  # skeleton of a skeleton: settles in one or two rounds in ICU 77


@cache
def confusable_skeletons() -> dict[str, str]:
    """Character -> what it is compared as: its case fold and TR39 confusable skeleton.

    Built once per process (~0.2 s) from ICU's SpoofChecker (Unicode's confusables.txt) and
    Python's full case folding, for every non-ASCII letter, mark and digit whose image
    differs from itself: "ß" -> "ss", Cyrillic "а" and Greek "α" -> "a", "ı" -> "i". Values
    are NFC, case-folded and fixed points (mapping a value again changes nothing).
    """
    domain = list(icu.UnicodeSet(_CONFUSABLE_DOMAIN))
    # one ICU call for all characters: the skeleton maps character by character (after NFD),
    # and a newline (ASCII, its own skeleton) keeps them apart
    skeletons = icu.SpoofChecker().getSkeleton(0, "\n".join(domain)).split("\n")
    if len(skeletons) != len(domain):
        raise RuntimeError("ICU skeletons do not line up with their characters")
    latin_looking = icu.UnicodeSet(_LATIN_LOOKING)
    skeleton = {
        c: s
        for c, s in zip(domain, skeletons, strict=True)
        if s != unicodedata.normalize("NFD", c) and latin_looking.containsAll(s)
    }
    # other characters are their own image (or are NFKC-mapped before the table applies)
    candidates = {*skeleton, *(c for c in domain if c.casefold() != c)}
    return _fixpoint_table(sorted(candidates), skeleton.get)


def confusable_skeletons_of(texts: Sequence[str]) -> dict[str, str]:
    """:func:`confusable_skeletons` restricted to the characters of ``texts``: the same
    entries, built from those characters alone (and the ones their images reach), not from
    all ~150k of the domain. For a few thousand non-ASCII texts, ~1 ms instead of ~0.07 s."""
    cps, _ = _code_points(texts)
    chars = map(chr, np.flatnonzero(np.bincount(cps)).tolist()) if cps.size else iter(())
    domain = icu.UnicodeSet(_CONFUSABLE_DOMAIN)
    latin_looking = icu.UnicodeSet(_LATIN_LOOKING)
    checker = icu.SpoofChecker()
    memo: dict[str, str | None] = {}

    def skeleton_of(c: str) -> str | None:  # the full table's ``skeleton.get(c)``
        if c not in memo:
            s = checker.getSkeleton(0, c) if domain.contains(c) else None
            ok = s is not None and s != unicodedata.normalize("NFD", c) and latin_looking.containsAll(s)
            memo[c] = s if ok else None
        return memo[c]

    candidates = [
        c
        for c in chars  # ascending, as the full table's sorted candidates
        if domain.contains(c) and (skeleton_of(c) is not None or c.casefold() != c)
    ]
    return _fixpoint_table(candidates, skeleton_of)


def _fixpoint_table(candidates: Sequence[str], skeleton_of: Callable[[str], str | None]) -> dict[str, str]:
    """Each candidate's case fold mapped through the skeletons until it settles; only the
    characters whose image differs from themselves."""

    def image(text: str) -> str:
        mapped = "".join(ch if (s := skeleton_of(ch)) is None else s for ch in text)
        return unicodedata.normalize("NFC", mapped).casefold()

    table = {}
    for c in candidates:
        value = c.casefold()
        for _ in range(_FIXPOINT_ROUNDS):
            value, before = image(value), value
            if value == before:
                break
        if value != c:
            table[c] = value
    return table


def canonical_text(text: pl.Expr) -> pl.Expr:
    """What two texts must share to look the same: invisibles dropped, NFKC, case-folded,
    confusables replaced by their skeleton (Unicode TR39). Punctuation and spacing kept."""
    return folded_text(text).str.replace_many(confusable_skeletons())


def folded_text(text: pl.Expr) -> pl.Expr:
    """:func:`canonical_text` before the skeleton table: what the table's keys apply to."""
    return (
        text.str.replace_all(_INVISIBLE, "")
        .str.normalize("NFKC")
        .str.to_lowercase()  # Python's lower(); the table adds the rest of casefold()
    )


def normalize_text(text: pl.Expr) -> pl.Expr:
    """Normalise for duplicate detection: :func:`canonical_text`, punctuation and symbols
    stripped, whitespace collapsed.

    A copy disguised with zero-width spaces, soft hyphens, Cyrillic or Greek look-alikes or
    case tricks normalises to the same string as the original; a text in another script
    keeps its own letters where they do not imitate Latin ones.
    """
    return strip_punctuation(canonical_text(text))


# A run of punctuation, symbols and whitespace becomes one space (the same string as replacing
# punctuation runs by a space and then collapsing whitespace runs): ``[P S \s]+`` -> " ". The
# pattern matches only the runs that change, i.e. not a lone space, which is most runs in
# text: the same strings (a test compares the plain pattern), a third of the CPU.
_STRIP_RUN = r"[\p{P}\p{S}\s]*[[\p{P}\p{S}\s]--[ ]][\p{P}\p{S}\s]*| {2,}"


def strip_punctuation(canonical: pl.Expr) -> pl.Expr:
    """:func:`normalize_text` of a text already in :func:`canonical_text` form."""
    return canonical.str.replace_all(_STRIP_RUN, " ").str.strip_chars()


def shingles(text: str, *, kind: str, ngram: int) -> list[bytes]:
    """Character or word n-grams of a normalised text, as UTF-8 bytes (datasketch's input).

    A text shorter than one n-gram is a single shingle; an empty text has none.
    """
    if kind == "word":
        units = text.split()
        if not units:
            return []
        if len(units) <= ngram:
            return [" ".join(units).encode("utf-8")]
        return [" ".join(units[i : i + ngram]).encode("utf-8") for i in range(len(units) - ngram + 1)]
    if not text:
        return []
    if len(text) <= ngram:
        return [text.encode("utf-8")]
    return [text[i : i + ngram].encode("utf-8") for i in range(len(text) - ngram + 1)]


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters (a, b) for this num_perm and seed.

    datasketch's "affine32" scheme (``MinHash._init_permutations``), drawn here from the same
    generator instead of importing datasketch (0.6 s of start-up for 256 numbers): a test
    checks that they equal ``MinHash(num_perm, seed).permutations``.
    """
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)  # odd: bijective
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _fmix32(hv: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX32
    hv = hv ^ (hv >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    return hv ^ (hv >> s3)


ENGINES = ("datasketch", "fast")  # how shingles are hashed (see ``signatures``)
_SHINGLE_BATCH = 1 << 16  # documents shingled and deduplicated together (bounds the key arrays)
_CACHE_LIMIT = 4_000_000  # shingle hashes kept across batches (bounds memory on diverse corpora)


def _sha1_32(items: Sequence[bytes]) -> np.ndarray:
    """``datasketch.hashfunc.sha1_hash32`` over many items: first 4 digest bytes, little-endian."""
    joined = b"".join(hashlib.sha1(item).digest()[:4] for item in items)
    return np.frombuffer(joined, dtype="<u4").astype(np.uint32)


def _hash_unique(strings: list[str], cache: dict[str, int]) -> np.ndarray:
    """sha1_hash32 of each (distinct) shingle, computing only those not seen before."""
    found = [cache.get(s) for s in strings]
    missing = [s for s, h in zip(strings, found, strict=True) if h is None]
    if missing:
        fresh = _sha1_32([s.encode("utf-8") for s in missing]).tolist()
        if len(cache) + len(missing) > _CACHE_LIMIT:
            cache.clear()
        cache.update(zip(missing, fresh, strict=True))
        it = iter(fresh)
        found = [next(it) if h is None else h for h in found]
    return np.asarray(found, dtype=np.uint32)


def _char_shingle_hashes(
    texts: Sequence[str], ngram: int, cache: dict[str, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-occurrence shingle hashes and shingles per document, for character n-grams, in bulk.

    Every n-gram becomes one integer: its code points, renumbered densely within the batch
    (the "alphabet"), packed side by side. Distinct integers are distinct shingles, so
    ``np.unique`` finds the distinct shingles of the whole batch without a Python loop; only
    those are decoded and hashed. Returns None when the packing does not fit 64 bits (huge
    alphabets or long n-grams): the caller then takes the per-document path.
    """
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    try:
        cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    except UnicodeEncodeError:  # lone surrogates: let the per-document path raise like datasketch
        return None
    counts = np.where(lens > ngram, lens - ngram + 1, (lens > 0).astype(np.int64))
    if cps.size == 0:
        return np.zeros(0, dtype=np.uint32), counts
    alphabet = np.flatnonzero(np.bincount(cps))  # sorted distinct code points
    if alphabet[0] == 0:  # a real NUL would be confused with padding when decoding below
        return None
    pad = len(alphabet)  # a code that no character has: fills n-grams of texts shorter than n
    bits = pad.bit_length()
    if bits * ngram > 64:
        return None
    rank = np.zeros(int(alphabet[-1]) + 1, dtype=np.uint64)
    rank[alphabet] = np.arange(pad, dtype=np.uint64)
    # lay texts out with ngram-1 pad codes after each, so no window runs into the next text
    span = lens + (ngram - 1)
    total = int(span.sum())
    laid = np.full(total + ngram - 1, pad, dtype=np.uint64)
    text_starts = np.cumsum(lens) - lens
    laid_starts = np.cumsum(span) - span
    laid[np.arange(cps.size) + np.repeat(laid_starts - text_starts, lens)] = rank[cps]
    key = laid[:total].copy()
    for k in range(1, ngram):
        key |= laid[k : total + k] << np.uint64(bits * k)
    # the n-gram starting at offset o of a text is a shingle when o < counts (its shingle count)
    offset = np.arange(total) - np.repeat(laid_starts, span)
    key = key[offset < np.repeat(counts, span)]
    distinct, inverse = np.unique(key, return_inverse=True)
    # decode the distinct keys back to strings; a pad code decodes to NUL, which numpy's
    # fixed-width unicode strips from the end (texts with a real NUL took the slow path)
    mask = np.uint64((1 << bits) - 1)
    chars = np.append(alphabet, 0).astype(np.uint32)
    codes = np.stack([(distinct >> np.uint64(bits * k)) & mask for k in range(ngram)], axis=1)
    strings = chars[codes.astype(np.intp)].view(f"<U{ngram}").ravel().tolist()
    return _fmix32(_hash_unique(strings, cache))[inverse], counts


def _generic_shingle_hashes(
    texts: Sequence[str], kind: str, ngram: int, cache: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-occurrence shingle hashes and shingles per document, one document at a time."""
    per_doc = [shingles(t, kind=kind, ngram=ngram) for t in texts]
    counts = np.fromiter(map(len, per_doc), dtype=np.int64, count=len(per_doc))
    flat = [s.decode("utf-8") for doc in per_doc for s in doc]
    if not flat:
        return np.zeros(0, dtype=np.uint32), counts
    distinct = list(dict.fromkeys(flat))
    index = {s: i for i, s in enumerate(distinct)}
    inverse = np.fromiter((index[s] for s in flat), dtype=np.intp, count=len(flat))
    return _fmix32(_hash_unique(distinct, cache))[inverse], counts


def signatures(
    texts: Sequence[str],
    *,
    kind: str,
    ngram: int,
    num_perm: int,
    seed: int,
    batch_docs: int = 256,
    engine: str = "datasketch",
) -> np.ndarray:
    """MinHash signatures (``len(texts) x num_perm``, uint32).

    Args:
        texts: normalised texts.
        batch_docs: documents per vectorised min step; bounds the (num_perm x shingles)
            matrix (256 short texts keep it in cache).
        engine: "datasketch" hashes each shingle with sha1 as datasketch does (signatures
            equal to datasketch's); "fast" hashes character n-grams arithmetically over their
            code points (:func:`char_ngram_hashes`), with no per-shingle Python work. Both
            then apply datasketch's permutations; word shingles use sha1 in both.
    """
    if batch_docs < 1:
        raise ValueError("batch_docs must be >= 1")
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} must be one of {', '.join(ENGINES)}")
    a, b = permutations(num_perm, seed)
    compiled = kind == "char" and engine == "fast"
    # the compiled path writes every row (empty texts too): no fill pass over ~0.5 GB a 1M texts
    shape = (len(texts), num_perm)
    out = np.empty(shape, dtype=np.uint32) if compiled else np.full(shape, EMPTY_HASH, dtype=np.uint32)
    cache: dict[str, int] = {}
    for start in range(0, len(texts), _SHINGLE_BATCH):
        chunk = texts[start : start + _SHINGLE_BATCH]
        if compiled:
            from curation import kernels

            # the n-gram hashes of char_ngram_hashes, made and min-hashed in one compiled pass
            # (no array of hashes: at 1M texts that was 0.4 GB written and read back)
            cps, lens = _code_points(chunk)
            kernels.char_min_hashes(cps, lens, ngram, _POLY, a, b, out[start : start + len(chunk)])
            continue
        found = _char_shingle_hashes(chunk, ngram, cache) if kind == "char" else None
        hv, counts = found if found is not None else _generic_shingle_hashes(chunk, kind, ngram, cache)
        _min_hashes(hv, counts, a, b, out[start : start + len(chunk)], batch_docs)
    return out


def _min_hashes(
    hv: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray, batch_docs: int
) -> None:
    """out[d] = min over doc d's shingles of (a*h + b mod 2**32), permutation-major for speed."""
    ends = np.cumsum(counts)
    starts = ends - counts
    for lo in range(0, len(counts), batch_docs):
        hi = min(lo + batch_docs, len(counts))
        rows = np.flatnonzero(counts[lo:hi]) + lo  # empty texts keep EMPTY_HASH
        if rows.size == 0:
            continue
        first, last = starts[rows[0]], ends[rows[-1]]
        permuted = np.multiply.outer(a, hv[first:last])  # uint32 arithmetic wraps: mod 2**32
        permuted += b[:, None]
        # reduceat along the contiguous axis: one min per (permutation, document)
        out[rows] = np.minimum.reduceat(permuted, starts[rows] - first, axis=1).T


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) exactly as datasketch's MinHashLSH picks them."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def band_keys(sig: np.ndarray, *, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (document, band): documents sharing a key are LSH candidates.

    datasketch buckets on the band's exact bytes; a 64-bit mix of the same values gives the
    same buckets (a key collision, ~2**-64, only adds a candidate that verification rejects).
    """
    from curation import kernels  # numba: loaded only when candidates are searched

    if bands * rows > sig.shape[1]:
        raise ValueError(f"{bands} bands of {rows} rows need {bands * rows} slots, not {sig.shape[1]}")
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    kernels.band_keys(np.ascontiguousarray(sig), bands, rows, keys)
    return keys


def _flat_buckets(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bucket key, document) for every (document, band), band-major.

    ``band_keys`` seeds each band differently, so one flat key space holds all bands (a key
    shared across bands by chance, ~2**-64, only adds a candidate that verification rejects).
    """
    n, bands = keys.shape
    return np.ascontiguousarray(keys.T).ravel(), np.tile(np.arange(n, dtype=np.int64), bands)


def _unique_pairs(codes: np.ndarray, n_right: int) -> np.ndarray:
    """Pair codes ``i * n_right + j`` -> unique (i, j) rows in lexicographic order."""
    codes = np.unique(codes)
    return np.stack([codes // n_right, codes % n_right], axis=1).reshape(-1, 2)


def candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """All (i, j), i < j, sharing a bucket in any band; shape (n_pairs, 2), sorted, unique."""
    flat, docs = _flat_buckets(keys)
    return _bucket_pairs(flat, docs, keys.shape[0])


def _doc_bits(n: int) -> int:
    """Bits that hold any document number below ``n``."""
    return max(1, (n - 1).bit_length())


def _run_pairs(packed: np.ndarray, n: int, cross_at: int = 0) -> np.ndarray:
    """Unique (i, j), i < j, of the documents within runs of equal key prefixes of a sorted
    array of ``(key prefix << _doc_bits(n)) | document`` values; with ``cross_at`` > 0 only
    pairs with i < cross_at <= j, returned as (i, j - cross_at)."""
    from curation import kernels

    bits = _doc_bits(n)
    count = kernels.run_pair_codes(packed, bits, n, cross_at, np.empty(0, dtype=np.int64))
    codes = np.empty(count, dtype=np.int64)
    kernels.run_pair_codes(packed, bits, n, cross_at, codes)
    pairs = _unique_pairs(codes, n)
    if cross_at > 0:
        pairs[:, 1] -= cross_at
    return pairs


def bucket_candidates(keys: np.ndarray) -> np.ndarray:
    """:func:`candidate_pairs` plus, rarely, pairs whose keys agree only in their top bits.

    Each (key, document) is packed into one 64-bit value, the key's top ``64 - _doc_bits(n)``
    bits above the document number, so one plain sort (several times faster than the argsort
    of :func:`candidate_pairs`) groups the buckets. Keys that differ but share those top bits
    add a candidate (at 1M documents and 13 bands, ~10^2 among ~10^13 key pairs); for a caller
    that verifies every candidate and finds every pair it accepts anyway (the fast engine's
    exact sources), the verified pairs are the same.
    """
    n = keys.shape[0]
    if n < 2 or keys.shape[1] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return _run_pairs(_packed_buckets(keys), n)


def _packed_buckets(keys: np.ndarray) -> np.ndarray:
    """Every (document, band) key as ``(key's top bits << _doc_bits(n)) | document``, sorted."""
    n = keys.shape[0]
    bits = np.uint64(_doc_bits(n))
    packed = (((keys.T >> bits) << bits) | np.arange(n, dtype=np.uint64)).ravel()
    packed.sort()
    return packed


def cross_bucket_candidates(left_keys: np.ndarray, right_keys: np.ndarray) -> np.ndarray:
    """:func:`cross_pairs` plus, rarely, pairs whose keys agree only in their top bits (see
    :func:`bucket_candidates`): (i, j) with left doc i and right doc j; sorted, unique."""
    n_left = left_keys.shape[0]
    if n_left == 0 or right_keys.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    both = np.concatenate([left_keys, right_keys])
    return _run_pairs(_packed_buckets(both), both.shape[0], cross_at=n_left)


def same_key_pairs(ids: np.ndarray) -> np.ndarray:
    """(i, j), i < j, of documents with the same integer id (e.g. :func:`word_bag_ids`).

    A swap of two words in a short text changes most of its character n-grams, so LSH alone
    can miss it; grouping on the word bag finds every such pair exactly.
    """
    return candidate_pairs(np.asarray(ids).astype(np.uint64)[:, None])


def cross_pairs(left_keys: np.ndarray, right_keys: np.ndarray) -> np.ndarray:
    """(i, j) with left doc i and right doc j sharing a bucket in any band; sorted, unique."""
    n_right = right_keys.shape[0]
    left, left_docs = _flat_buckets(left_keys)
    right, right_docs = _flat_buckets(right_keys)
    order = np.argsort(right)
    right, right_docs = right[order], right_docs[order]
    # for every left bucket, the run of right buckets with the same key
    lo = np.searchsorted(right, left, side="left")
    hi = np.searchsorted(right, left, side="right")
    counts = hi - lo
    hit = np.flatnonzero(counts)
    if hit.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    counts = counts[hit]
    # positions lo, lo+1, ..., hi-1 of each hit, flattened without a Python loop
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    matched = right_docs[np.repeat(lo[hit], counts) + within]
    return _unique_pairs(np.repeat(left_docs[hit], counts) * n_right + matched, n_right)


# Early rejection: a pair whose slots so far already disagree too often cannot reach the
# Jaccard threshold and is dropped (compiled, checked every _SLOTS_PER_STEP slots); the decision
# is exact, not an approximation.
_SLOTS_PER_STEP = 16
_PAIRS_PER_CHUNK = 65_536  # pairs compared together (bounds the gathered rows' memory)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Fraction of equal signature slots for each pair (datasketch's ``MinHash.jaccard``)."""
    if len(pairs) == 0:
        return np.zeros(0)
    return _equal_slots(sig_a, sig_b, pairs) / sig_a.shape[1]


def _equal_slots(sig_a: np.ndarray, sig_b: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Number of equal signature slots of each pair, in chunks (bounded memory)."""
    out = np.empty(len(pairs), dtype=np.int64)
    for s in range(0, len(pairs), _PAIRS_PER_CHUNK):
        p = pairs[s : s + _PAIRS_PER_CHUNK]
        out[s : s + _PAIRS_PER_CHUNK] = np.count_nonzero(sig_a[p[:, 0]] == sig_b[p[:, 1]], axis=1)
    return out


def word_bag_ids(*text_lists: Sequence[str]) -> list[np.ndarray]:
    """One id per text, equal exactly when two texts hold the same words in any order.

    Ids are shared across the given lists, so a left and a right side compare directly.
    """
    index: dict[str, int] = {}
    # words never hold whitespace, so the sorted words joined by a space identify the bag
    return [
        np.fromiter(
            (index.setdefault(" ".join(sorted(t.split())), len(index)) for t in texts),
            dtype=np.int64,
            count=len(texts),
        )
        for texts in text_lists
    ]


@cache
def _space_table() -> np.ndarray:
    """is_space[c] for every code point up to the last one ``str.isspace`` holds (U+3000)."""
    return np.array([chr(c).isspace() for c in range(0x3001)], dtype=np.bool_)


def word_bag_hashes(texts: Sequence[str]) -> np.ndarray:
    """One uint64 per text, equal whenever two texts hold the same words (``str.split()``)
    in any order; unequal bags collide with probability ~2**-64, so a caller that needs
    certainty confirms equal hashes on the words (:class:`PairVerifier` does)."""
    from curation import kernels

    out = np.empty(len(texts), dtype=np.uint64)
    for lo in range(0, len(texts), _TEXTS_PER_CHUNK):
        cps, lens = _code_points(texts[lo : lo + _TEXTS_PER_CHUNK])
        kernels.word_bag_hashes(cps, lens, _space_table(), _POLY, out[lo : lo + len(lens)])
    return out


class PairVerifier:
    """Decides which candidate pairs are near duplicates (see :meth:`__call__`).

    Per-text work (lengths, word bags, signature prefixes) is done once here, not once per
    batch of candidates. ``left`` and ``right`` may be the same list (dedup) or a train and a
    test side (decontam); pairs are (left index, right index).

    A candidate is a near duplicate when its estimated Jaccard (datasketch's
    ``MinHash.jaccard``: the fraction of equal slots) reaches ``threshold``, or the two
    normalised texts are at most ``max_char_edits`` character edits apart (optimal string
    alignment: a typo, a dropped or swapped letter), or, with ``word_order``, they hold the
    same words in another order. On short texts one typo moves Jaccard a lot while a natural
    paraphrase may barely move it; the edit rules catch copies that Jaccard alone would miss
    or mistake. Empty texts are never near duplicates.
    """

    def __init__(
        self,
        left_texts: Sequence[str],
        right_texts: Sequence[str],
        left_sig: np.ndarray,
        right_sig: np.ndarray,
        *,
        threshold: float,
        max_char_edits: int,
        word_order: bool,
    ) -> None:
        same = right_texts is left_texts
        self.left_texts, self.right_texts = left_texts, right_texts
        self.left_sig, self.right_sig = left_sig, right_sig
        self.threshold, self.max_char_edits = threshold, max_char_edits
        self.left_len = np.fromiter(map(len, left_texts), dtype=np.int64, count=len(left_texts))
        self.right_len = (
            self.left_len
            if same
            else np.fromiter(map(len, right_texts), dtype=np.int64, count=len(right_texts))
        )
        self.left_bag: np.ndarray | None = None
        self.right_bag: np.ndarray | None = None
        if word_order:
            # a hash per bag (compiled; sorting every text's words in Python took 2 s a
            # million texts); pairs whose hashes agree are confirmed on the words themselves
            self.left_bag = word_bag_hashes(left_texts)
            self.right_bag = self.left_bag if same else word_bag_hashes(right_texts)
        self.need = min_equal_slots(threshold, left_sig.shape[1])  # equal slots reaching threshold

    def __call__(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(near-duplicate mask over ``pairs``, estimated Jaccard of each accepted pair)."""
        if len(pairs) == 0:
            return np.zeros(0, dtype=bool), np.zeros(0)
        from curation import kernels

        pairs = np.ascontiguousarray(pairs, dtype=np.int64)
        li, ri = pairs[:, 0], pairs[:, 1]
        equal = np.empty(len(pairs), dtype=np.int64)  # -1: rejected early
        kernels.equal_slots_reaching(
            np.ascontiguousarray(self.left_sig),
            np.ascontiguousarray(self.right_sig),
            pairs,
            self.need,
            _SLOTS_PER_STEP,
            equal,
        )
        ok = equal >= self.need
        if self.max_char_edits > 0:
            # OSA distance is at least the length difference: only near-equal lengths can
            # pass, and pairs already accepted need no distance
            near_len = np.abs(self.left_len[li] - self.right_len[ri]) <= self.max_char_edits
            todo = np.flatnonzero(~ok & near_len)
            if todo.size:
                edits = process.cpdist(
                    [self.left_texts[i] for i in li[todo]],
                    [self.right_texts[j] for j in ri[todo]],
                    scorer=OSA.distance,
                    score_cutoff=self.max_char_edits + 1,
                )
                ok[todo] |= edits <= self.max_char_edits
        if self.left_bag is not None and self.right_bag is not None:
            todo = np.flatnonzero(~ok & (self.left_bag[li] == self.right_bag[ri]))
            if todo.size:
                ok[todo] = [
                    sorted(self.left_texts[i].split()) == sorted(self.right_texts[j].split())
                    for i, j in zip(li[todo].tolist(), ri[todo].tolist(), strict=True)
                ]
        ok &= (self.left_len[li] > 0) & (self.right_len[ri] > 0)
        equal = equal[ok]
        early = np.flatnonzero(equal < 0)  # accepted by an edit rule after an early rejection
        if early.size:
            equal[early] = _equal_slots(self.left_sig, self.right_sig, pairs[ok][early])
        # the same division as estimated_jaccard
        return ok, equal / self.left_sig.shape[1]


# --- the "fast" engine: arithmetic shingle hashes, exact candidate sources -----------------

_POLY = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: odd, so invertible mod 2**64
_POLY_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_MIX = (
    np.uint64(30),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(27),
    np.uint64(0x94D049BB133111EB),
    np.uint64(31),
)
_TEXTS_PER_CHUNK = 1 << 16  # texts whose code points are laid out together (bounds memory)
_SALT = np.uint64(0x9E3779B97F4A7C15)  # offsets the per-length salts of the one-edit keys


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads a 64-bit value over all bits (a bijection)."""
    s1, m1, s2, m2, s3 = _MIX
    x = x ^ (x >> s1)
    x = x * m1
    x = x ^ (x >> s2)
    x = x * m2
    return x ^ (x >> s3)


def _code_units(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(code point + 1 of every character, as uint64; length of each text)."""
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    cps = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return cps.astype(np.uint64) + np.uint64(1), lens


def _code_points(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(code point of every character, uint32; length of each text)."""
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    cps = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return cps, lens


def char_ngram_hashes(texts: Sequence[str], *, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of every character n-gram occurrence, and the n-grams per text.

    The same shingles as :func:`shingles` (a text shorter than ``ngram`` is one shingle, an
    empty text has none), hashed as a polynomial over their code points mixed by splitmix64,
    in compiled code: no Python object per shingle, and the same value for the same n-gram
    whatever the batch. Returns (hashes in text order, counts per text).
    """
    from curation import kernels  # numba: loaded only when signatures are computed

    units, lens = _code_units(texts)
    counts = np.where(lens > ngram, lens - ngram + 1, (lens > 0).astype(np.int64))
    out = np.empty(int(counts.sum()), dtype=np.uint64)
    kernels.ngram_hashes(units, lens, ngram, _POLY, out)
    return out, counts


def min_equal_slots(threshold: float, num_perm: int) -> int:
    """Fewest equal slots of ``num_perm`` with ``equal / num_perm >= threshold`` (the same
    division as :func:`estimated_jaccard`)."""
    equal = max(0, min(num_perm, int(np.ceil(threshold * num_perm))))
    while equal > 0 and (equal - 1) / num_perm >= threshold:
        equal -= 1
    while equal < num_perm and equal / num_perm < threshold:
        equal += 1
    return equal


def exact_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) such that every pair whose estimated Jaccard reaches
    ``threshold`` shares at least one band.

    Such a pair differs in at most m = num_perm - :func:`min_equal_slots` slots; with m + 1
    disjoint bands one band has no differing slot (pigeonhole), so banding finds every such
    pair, and the long bands let few others through. Rows = num_perm // bands.
    """
    bands = num_perm - min_equal_slots(threshold, num_perm) + 1
    return bands, max(1, num_perm // bands)


def _bucket_pairs(flat: np.ndarray, docs: np.ndarray, n: int) -> np.ndarray:
    """All (i, j), i < j, of documents sharing a key in ``flat`` (``docs[k]`` holds key
    ``flat[k]``); sorted, unique."""
    order = np.argsort(flat, kind="stable")
    flat, docs = flat[order], docs[order]
    run_start = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    run_end = np.append(run_start[1:], flat.size)
    # end (exclusive) of the run of equal keys that each sorted position belongs to
    end = np.repeat(run_end, run_end - run_start)
    # pair each position with its 1st, 2nd, ... follower in the run; the active set shrinks,
    # so the work is the number of pairs, not (largest run) x (positions)
    codes = []
    idx = np.flatnonzero(np.arange(1, flat.size + 1) < end)
    step = 1
    while idx.size:
        a, b = docs[idx], docs[idx + step]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        codes.append((lo * n + hi)[lo != hi])
        step += 1
        idx = idx[idx + step < end[idx]]
    if not codes:
        return np.zeros((0, 2), dtype=np.int64)
    return _unique_pairs(np.concatenate(codes), n)


def one_edit_pairs(texts: Sequence[str], *, keys_per_pass: int | None = None) -> np.ndarray:
    """Every (i, j), i < j, of texts at most one edit apart (substitution, insertion,
    deletion or swap of adjacent characters: optimal string alignment distance <= 1).

    Exact, not sampled: two such texts always share a one-deletion variant (delete the
    substituted or one of the swapped characters from both, or the inserted one from the
    longer), so grouping texts on their variants (the deletion neighbourhood of SymSpell)
    finds every pair; a hash collision only adds a candidate that verification rejects.
    Returns candidates: check them with :class:`PairVerifier`.

    ``keys_per_pass`` bounds memory: with more keys (one per character, 8 bytes each) they are
    split by their top bits into a power of two of passes, each sorted alone; equal keys
    always fall in the same pass, so the pairs are the same.
    """
    return _one_edit_runs(texts, cross_at=0, keys_per_pass=keys_per_pass)


def one_edit_cross_pairs(left: Sequence[str], right: Sequence[str]) -> np.ndarray:
    """Every (i, j) of a left text i and a right text j at most one edit apart (as
    :func:`one_edit_pairs`, between the two lists only); candidates, sorted, unique."""
    if not left or not right:
        return np.zeros((0, 2), dtype=np.int64)
    return _one_edit_runs([*left, *right], cross_at=len(left))


def _one_edit_runs(texts: Sequence[str], *, cross_at: int, keys_per_pass: int | None = None) -> np.ndarray:
    from curation import kernels  # numba: loaded only when pairs are searched

    n = len(texts)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    bits = _doc_bits(n)
    salt = _mix64(np.arange(max(map(len, texts)) + 2, dtype=np.uint64) + _SALT)

    def packed_keys(first: int, last: int, part_mask: int = 0, part: int = 0, size: int | None = None):
        # every key of texts[first:last] (its own and one per deleted character) in the pass
        # `part`, each packed with its text as in bucket_candidates: then one in-place sort,
        # runs of equal keys. None when they do not fit in `size`
        out = np.empty(size or last - first + sum(map(len, texts[first:last])), dtype=np.uint64)
        written = 0
        for lo in range(first, last, _TEXTS_PER_CHUNK):
            cps, lens = _code_points(texts[lo : min(last, lo + _TEXTS_PER_CHUNK)])
            count = kernels.packed_deletion_keys(
                cps,
                lens,
                _POLY,
                _POLY_INV,
                salt,
                bits,
                lo,
                np.uint64(part_mask),
                np.uint64(part),
                out[written:],
            )
            if count < 0:
                return None
            written += count
        return out[:written]

    total_keys = n + sum(map(len, texts))
    passes = 1 if not keys_per_pass else 1 << max(0, -(-total_keys // keys_per_pass) - 1).bit_length()
    if cross_at == 0 and passes > 1:
        # a key's pass is its low prefix bits (above the text number), a hash: the passes are
        # about equal, and equal keys meet in one pass. Room for a pass: its share and 1/8
        # more; a pass that does not fit (very skewed keys) is made again with room for all
        room = min(total_keys, total_keys // passes + total_keys // (8 * passes) + 1)
        codes = []
        for part in range(passes):
            packed = packed_keys(0, n, passes - 1, part, size=room)
            if packed is None:
                packed = packed_keys(0, n, passes - 1, part, size=total_keys)
            packed.sort()
            pairs = _run_pairs(packed, n)
            codes.append(pairs[:, 0] * n + pairs[:, 1])
            del packed
        return _unique_pairs(np.concatenate(codes), n)
    if cross_at == 0:
        packed = packed_keys(0, n, size=total_keys)
    else:
        # only cross pairs count, so a left key matters only if some right text has it: the
        # left keys are filtered against the right ones as they are made, never all held
        # (train vs test: ~55 keys per train row, 4 GB at 10M rows, down to a few thousand)
        right = packed_keys(cross_at, n)
        size = 1 << max(4, (2 * len(right)).bit_length())
        table, used = np.zeros(size, dtype=np.uint64), np.zeros(size, dtype=np.bool_)
        kernels.prefix_set(right, np.uint64(bits), table, used)
        kept = [right]
        for lo in range(0, cross_at, _TEXTS_PER_CHUNK):
            block = packed_keys(lo, min(cross_at, lo + _TEXTS_PER_CHUNK))
            count = kernels.keep_prefixes_in(block, np.uint64(bits), table, used, block)
            kept.append(block[:count].copy())
        packed = np.concatenate(kept)
    packed.sort()
    return _run_pairs(packed, n, cross_at)
