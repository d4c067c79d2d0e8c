"""dedup.engine "fast": arithmetic n-gram hashes, pigeonhole bands, one-edit neighbourhood."""

from __future__ import annotations

import numpy as np
import pytest
from rapidfuzz.distance import OSA

from curation.minhash import (
    EMPTY_HASH,
    band_keys,
    candidate_pairs,
    char_ngram_hashes,
    exact_bands,
    min_equal_slots,
    one_edit_pairs,
    shingles,
    signatures,
)
from schemas.params import DedupParams, ParamsError, params_from_dict

TEXTS = [
    "my card was declined",
    "my card was declinde",  # swap
    "my card was decline",  # deletion
    "my card was declined!",  # insertion
    "my cart was declined",  # substitution
    "how do i top up",
    "how do i top up my card",
    "ab",
    "ba",
    "a",
    "",
    "café au lait",
    "cafe au lait",
    "ж карта",
    "ж карты",
]


def test_one_edit_pairs_holds_every_pair_within_one_edit() -> None:
    expected = {
        (i, j)
        for i in range(len(TEXTS))
        for j in range(i + 1, len(TEXTS))
        if OSA.distance(TEXTS[i], TEXTS[j]) <= 1
    }
    got = {tuple(p) for p in one_edit_pairs(TEXTS).tolist()}
    assert {(0, 1), (0, 2), (0, 3), (0, 4), (7, 9), (11, 12), (13, 14)} <= expected
    assert expected <= got
    # pairs sharing no one-deletion variant are never candidates
    assert (0, 5) not in got and (5, 6) not in got


def test_one_edit_pairs_in_passes_are_the_pairs_of_one_pass() -> None:
    rng = np.random.default_rng(0)
    words = ["card", "top", "up", "fee", "cash", "atm", "pin", "my", "the", "é"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(3000)]
    texts += [t[:-1] for t in texts[:300]] + TEXTS
    whole = one_edit_pairs(texts)
    assert len(whole) > 1000
    total_keys = len(texts) + sum(map(len, texts))
    for keys_per_pass in (total_keys // 3, total_keys // 16):  # 4 and 16 passes
        assert np.array_equal(one_edit_pairs(texts, keys_per_pass=keys_per_pass), whole)


def test_the_deletion_key_kernel_says_when_its_output_is_full() -> None:
    from curation import kernels

    cps = np.array([ord(c) for c in "abcabc"], dtype=np.uint32)
    lens = np.array([3, 3], dtype=np.int64)
    args = (cps, lens, np.uint64(3), np.uint64(0xAAAAAAAAAAAAAAAB), np.arange(8, dtype=np.uint64), 1, 0)
    everything = np.empty(8, dtype=np.uint64)
    assert kernels.packed_deletion_keys(*args, np.uint64(0), np.uint64(0), everything) == 8
    assert kernels.packed_deletion_keys(*args, np.uint64(0), np.uint64(0), np.empty(7, dtype=np.uint64)) == -1
    halves = [np.empty(8, dtype=np.uint64) for _ in range(2)]
    counts = [kernels.packed_deletion_keys(*args, np.uint64(1), np.uint64(p), halves[p]) for p in (0, 1)]
    both = np.sort(np.concatenate([h[:c] for h, c in zip(halves, counts, strict=True)]))
    assert np.array_equal(both, np.sort(everything))  # the passes split the keys, lose none


def test_exact_bands_find_every_pair_reaching_the_threshold() -> None:
    num_perm, threshold = 128, 0.9
    bands, rows = exact_bands(threshold, num_perm)
    most_differing = num_perm - min_equal_slots(threshold, num_perm)
    assert (num_perm - most_differing) / num_perm >= threshold > (num_perm - most_differing - 1) / num_perm
    assert bands == most_differing + 1 and bands * rows <= num_perm
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=(200, num_perm), dtype=np.uint64).astype(np.uint32)
    copy = base.copy()
    for i in range(len(copy)):
        # the worst case: one differing slot in as many bands as possible, the rest random
        spread = (
            np.arange(most_differing) * rows if i % 2 else rng.choice(num_perm, most_differing, replace=False)
        )
        copy[i, spread] ^= np.uint32(1)
    pairs = candidate_pairs(band_keys(np.concatenate([base, copy]), bands=bands, rows=rows))
    found = {tuple(p) for p in pairs.tolist()}
    assert all((i, i + len(base)) in found for i in range(len(base)))


def test_char_ngram_hashes_follow_the_shingles_and_not_the_batch() -> None:
    hashes, counts = char_ngram_hashes(TEXTS, ngram=5)
    assert counts.tolist() == [len(shingles(t, kind="char", ngram=5)) for t in TEXTS]
    alone, _ = char_ngram_hashes(TEXTS[3:4], ngram=5)
    start = int(counts[:3].sum())
    assert hashes[start : start + counts[3]].tobytes() == alone.tobytes()
    # equal n-grams hash equally, different ones (here) differently
    first = {s: h for s, h in zip(shingles(TEXTS[0], kind="char", ngram=5), hashes[: counts[0]], strict=True)}
    assert len(set(first.values())) == len(first)


def test_fast_signatures_are_deterministic_and_order_free() -> None:
    sig = signatures(TEXTS, kind="char", ngram=5, num_perm=64, seed=3, engine="fast")
    again = signatures(TEXTS[::-1], kind="char", ngram=5, num_perm=64, seed=3, engine="fast")[::-1]
    assert sig.dtype == np.uint32 and sig.tobytes() == again.tobytes()
    assert (sig[TEXTS.index("")] == EMPTY_HASH).all()
    # a near copy agrees in most slots, an unrelated text in few
    same = (sig[0] == sig[3]).mean()
    other = (sig[0] == sig[5]).mean()
    assert same > 0.6 > 0.2 > other
    with pytest.raises(ValueError, match="engine"):
        signatures(TEXTS, kind="char", ngram=5, num_perm=64, seed=3, engine="rensa")


def test_engine_is_checked_at_load() -> None:
    assert DedupParams().engine == "fast"
    with pytest.raises(ParamsError, match="engine"):
        params_from_dict({"dedup": {"engine": "minhash"}})


def test_redis_banding_must_find_what_the_fast_engine_finds() -> None:
    from flows.signing import check_redis_banding

    check_redis_banding(DedupParams())  # lsh_threshold 0.4: 32 bands >= 13
    check_redis_banding(DedupParams(engine="datasketch", lsh_threshold=0.8))
    with pytest.raises(ParamsError, match="lsh_threshold"):
        check_redis_banding(DedupParams(lsh_threshold=0.8))


def test_fast_signatures_are_the_min_hashes_of_the_ngram_hashes() -> None:
    from curation.minhash import _min_hashes, permutations

    # the compiled one-pass kernel against the two-step reference: hashes, then numpy's min
    texts = TEXTS + ["x" * 300, "ab\u200bcd", "\U0001f600 emoji text"]
    a, b = permutations(32, 5)
    hashes, counts = char_ngram_hashes(texts, ngram=5)
    expected = np.full((len(texts), 32), EMPTY_HASH, dtype=np.uint32)
    _min_hashes((hashes >> np.uint64(32)).astype(np.uint32), counts, a, b, expected, batch_docs=4)
    got = signatures(texts, kind="char", ngram=5, num_perm=32, seed=5, engine="fast")
    assert got.tobytes() == expected.tobytes()


def test_bucket_candidates_hold_every_bucket_pair() -> None:
    from curation.minhash import bucket_candidates

    rng = np.random.default_rng(1)
    keys = rng.integers(0, 6, size=(300, 4)).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    exact = {tuple(p) for p in candidate_pairs(keys).tolist()}
    got = bucket_candidates(keys)
    assert exact <= {tuple(p) for p in got.tolist()}
    assert (got[:, 0] < got[:, 1]).all() and len(np.unique(got, axis=0)) == len(got)
    assert bucket_candidates(keys[:1]).shape == (0, 2)


def test_word_bag_hashes_agree_with_word_bag_ids() -> None:
    from curation.minhash import word_bag_hashes, word_bag_ids

    # str.split()'s whitespace includes U+001C-U+001F and U+3000, which regex \s does not all hold
    texts = ["a b", "b  a", "", "  ", "a\x1cb", "b\u3000a", "ab", "a b b", "b a b", "a\u200bb", "x y z"]
    (ids,) = word_bag_ids(texts)
    hashes = word_bag_hashes(texts)
    for i in range(len(texts)):
        for j in range(len(texts)):
            assert (ids[i] == ids[j]) == (hashes[i] == hashes[j]), (texts[i], texts[j])


@pytest.mark.parametrize(("num_perm", "seed"), [(128, 1), (64, 3), (2, 0)])
def test_permutations_are_datasketchs(num_perm: int, seed: int) -> None:
    from datasketch import MinHash

    from curation.minhash import permutations

    a, b = permutations(num_perm, seed)
    ref_a, ref_b = MinHash(num_perm=num_perm, seed=seed).permutations
    assert a.dtype == b.dtype == np.uint32
    assert a.tolist() == ref_a.tolist() and b.tolist() == ref_b.tolist()


def test_cluster_labels_number_components_as_scipy_does() -> None:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from curation.dedup import cluster_labels

    rng = np.random.default_rng(2)
    for n, k in ((1, 0), (10, 0), (50, 30), (400, 380), (300, 1000)):
        pairs = np.sort(rng.integers(0, n, size=(k, 2)), axis=1)
        graph = coo_matrix((np.ones(k, dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        assert cluster_labels(n, pairs).tolist() == connected_components(graph, directed=False)[1].tolist()


def test_cross_sources_hold_every_cross_pair() -> None:
    from curation.minhash import cross_bucket_candidates, cross_pairs, one_edit_cross_pairs

    left, right = TEXTS[:8], TEXTS[8:] + ["my card was declined", "mycard was declined", "how do i top u"]
    expected = {
        (i, j) for i in range(len(left)) for j in range(len(right)) if OSA.distance(left[i], right[j]) <= 1
    }
    got = {tuple(p) for p in one_edit_cross_pairs(left, right).tolist()}
    assert {(0, 7), (0, 8), (5, 9)} <= expected <= got
    assert all(i < len(left) and j < len(right) for i, j in got)
    rng = np.random.default_rng(3)
    lk = rng.integers(0, 5, size=(40, 3)).astype(np.uint64)
    rk = rng.integers(0, 5, size=(30, 3)).astype(np.uint64)
    exact = {tuple(p) for p in cross_pairs(lk, rk).tolist()}
    assert exact and exact <= {tuple(p) for p in cross_bucket_candidates(lk, rk).tolist()}
    assert cross_bucket_candidates(lk, rk[:0]).shape == (0, 2)


def test_decontam_finds_every_leak_the_near_rule_accepts() -> None:
    import polars as pl

    from curation.decontam import remove_test_leaks
    from curation.minhash import PairVerifier
    from schemas.params import DecontamParams

    # short texts: one typo moves their Jaccard far below what LSH at 0.4 reliably finds
    test = ["lost card", "top up failed", "pin blocked", "card declined at shop", "how do i top up"]
    train = ["lost crad", "top up faild", "pin blocke", "declined card at shop", "how do i top up?"]
    train += ["new pin", "lots card", "top-up failed", "card declined at the shop", "exchange rate"]
    cfg, minhash = DecontamParams(one_word=False), DedupParams()
    keys_tr = [t.replace("?", "").replace("-", " ") for t in train]
    sig_tr = signatures(keys_tr, kind="char", ngram=5, num_perm=128, seed=1, engine="fast")
    sig_te = signatures(test, kind="char", ngram=5, num_perm=128, seed=1, engine="fast")
    verify = PairVerifier(keys_tr, test, sig_tr, sig_te, threshold=0.9, max_char_edits=1, word_order=True)
    every = np.array([(i, j) for i in range(len(train)) for j in range(len(test))])
    ok, _ = verify(every)
    expected = {f"r{i}" for i in every[ok][:, 0]}
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(len(train))], "line": range(1, len(train) + 1)})
    frame = frame.with_columns(text=pl.Series(train), label=pl.lit("x"), split=pl.lit("train"))
    tests = pl.DataFrame({"id": [f"t{j}" for j in range(len(test))], "text": test, "label": "x"})
    out = remove_test_leaks(frame, tests, cfg=cfg, minhash=minhash)
    assert {"r0", "r1", "r2", "r3", "r4", "r6", "r7"} <= expected
    assert set(out.removed["id"]) == expected


def test_dedup_loads_neither_scipy_sparse_nor_datasketch() -> None:
    """`curagate dedup`'s clusters come from a union-find, not scipy.sparse, datasketch's
    permutations are drawn here, and numba's BLAS probe is kept from scipy.linalg: none of
    them is loaded."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, curation.dedup, flows.signing;"
        "from curation.minhash import signatures, one_edit_pairs;"
        "from curation.dedup import cluster_labels;"
        "signatures(['a card', 'a cart'], kind='char', ngram=5, num_perm=16, seed=1, engine='fast');"
        "cluster_labels(2, one_edit_pairs(['a card', 'a cart']));"
        "print([m for m in ('scipy.sparse', 'scipy.linalg', 'datasketch') if m in sys.modules]);"
        "import scipy.linalg"  # hidden from numba only: later steps (sklearn) still import it
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
