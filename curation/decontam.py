"""Decontaminate: remove train rows that are exact, near or paraphrased copies of a test row.

A train row is a leak of a test row when (in this order of precedence, the first rule found is
the one reported):
1. ``exact``: equal after normalisation;
2. ``near``: within the MinHash/edit rules (estimated Jaccard, character edits, word order);
3. ``one_word``: one word substituted, inserted or deleted (normalised words; both texts at
   least ``one_word_min_words`` long): wildcard keys joined between train and test;
4. ``semantic``: cosine of the sentence embeddings >= ``semantic_threshold`` (embeddings
   passed in; skipped without them).
Rules 3 and 4 count, with ``same_label``, only train rows carrying their test row's label:
"Freeze my card" / "Activate my card" are one word apart and a different intent, not a leak.

The test set is only read: it is never deduplicated, edited or filtered to suit train.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from curation.dedup import StepResult, dedup_key, dedup_keys, local_signer
from curation.minhash import (
    PairVerifier,
    Signer,
    band_keys,
    cross_bucket_candidates,
    cross_pairs,
    exact_bands,
    lsh_bands,
    one_edit_cross_pairs,
)
from schemas.params import DecontamParams, DedupParams
from schemas.records import FLAGS_SCHEMA, REMOVED_SCHEMA

log = logging.getLogger(__name__)


def exact_leak_rule(cfg: DecontamParams, minhash: DedupParams) -> bool:
    """Whether decontam's candidates are exact (every pair the near rule accepts), as dedup's
    are with the fast engine (:func:`curation.dedup.exact_edit_rule`), rather than LSH's."""
    return minhash.engine == "fast" and cfg.max_char_edits <= 1


def leak_candidates(
    keys_tr: list[str],
    keys_te: list[str],
    sig_tr: np.ndarray,
    sig_te: np.ndarray,
    verify: PairVerifier,
    *,
    cfg: DecontamParams,
    minhash: DedupParams,
) -> np.ndarray:
    """(train, test) candidate pairs for the near rule; sorted, unique.

    With the fast engine (:func:`exact_leak_rule`), dedup's exact sources between the two
    sides: pigeonhole bands at ``cfg.threshold`` (every pair reaching it), the one-deletion
    neighbourhood (every pair one edit apart) and equal word bags, so no leak the rules
    accept is left to chance. Otherwise datasketch's banding at ``cfg.lsh_threshold``.
    """
    if not exact_leak_rule(cfg, minhash):
        bands, rows = lsh_bands(cfg.lsh_threshold, minhash.num_perm)
        return cross_pairs(
            band_keys(sig_tr, bands=bands, rows=rows), band_keys(sig_te, bands=bands, rows=rows)
        )
    bands, rows = exact_bands(cfg.threshold, minhash.num_perm)
    sources = [
        cross_bucket_candidates(
            band_keys(sig_tr, bands=bands, rows=rows), band_keys(sig_te, bands=bands, rows=rows)
        )
    ]
    if cfg.max_char_edits == 1:
        sources.append(one_edit_cross_pairs(keys_tr, keys_te))
    if verify.left_bag is not None and verify.right_bag is not None:
        sources.append(cross_bucket_candidates(verify.left_bag[:, None], verify.right_bag[:, None]))
    codes = np.unique(np.concatenate([p[:, 0] * len(keys_te) + p[:, 1] for p in sources]))
    return np.stack([codes // len(keys_te), codes % len(keys_te)], axis=1).reshape(-1, 2)


def remove_test_leaks(
    train: pl.DataFrame,
    test: pl.DataFrame,
    *,
    cfg: DecontamParams,
    minhash: DedupParams,
    signer: Signer | None = None,
    train_embeddings: np.ndarray | None = None,
    test_embeddings: np.ndarray | None = None,
) -> StepResult:
    """Drop train rows that copy a test row (the rules of the module docstring).

    Args:
        train: candidate train rows (id, line, text, ...).
        test: the validated test rows; untouched.
        cfg: the ``decontam`` section (its own Jaccard threshold).
        minhash: the ``dedup`` section, for shingling and MinHash settings.
        signer: computes MinHash signatures (default in process; the pipeline may shard it).
        train_embeddings, test_embeddings: unit vectors, one per row of ``train`` / ``test``,
            for the semantic rule (both or neither).

    Returns:
        kept train rows; removed rows with reason ``test_leak`` and ``duplicate_of`` the test id
        (the most similar test row, ties to the smallest id), the rule in ``detail``; no flags.
    """
    if (train_embeddings is None) != (test_embeddings is None):
        raise ValueError("remove_test_leaks: pass both train_embeddings and test_embeddings, or neither")
    tr = train.with_columns(_key=dedup_keys(train["text"])).with_row_index("_i")
    te = (
        test.with_columns(_key=dedup_keys(test["text"]))
        .with_row_index("_orig")
        .sort("id")
        .with_row_index("_j")
    )
    exact = (
        tr.select("_i", "_key")
        .join(te.select("_key", pl.col("id").alias("_test_id")), on="_key", how="inner")
        .group_by("_i")
        .agg(pl.col("_test_id").min())
        .with_columns(_sim=pl.lit(1.0))
    )
    near = pl.DataFrame(schema={"_i": pl.UInt32, "_test_id": pl.String, "_sim": pl.Float64})
    if tr.height and te.height:
        sign = signer or local_signer(minhash)
        sig_tr = sign(tr["_key"].to_list())
        sig_te = sign(te["_key"].to_list())
        keys_tr, keys_te = tr["_key"].to_list(), te["_key"].to_list()
        verify = PairVerifier(
            keys_tr,
            keys_te,
            sig_tr,
            sig_te,
            threshold=cfg.threshold,
            max_char_edits=cfg.max_char_edits,
            word_order=cfg.word_order,
        )
        pairs = leak_candidates(keys_tr, keys_te, sig_tr, sig_te, verify, cfg=cfg, minhash=minhash)
        keep, sims = verify(pairs)
        if keep.any():
            near = (
                pl.DataFrame(
                    {
                        "_i": pairs[keep, 0].astype(np.uint32),
                        "_j": pairs[keep, 1].astype(np.uint32),
                        "_sim": sims,
                    }
                )
                .join(te.select("_j", pl.col("id").alias("_test_id")), on="_j")
                .sort("_i", pl.col("_sim"), "_test_id", descending=[False, True, False])
                .group_by("_i", maintain_order=True)
                .first()
                .select("_i", "_test_id", "_sim")
            )
        log.info("decontam: %d candidate train/test pairs, %d verified", len(pairs), int(keep.sum()))
    found = [
        exact.select("_i", "_test_id", "_sim").cast(near.schema).with_columns(_rule=pl.lit(0)),
        near.with_columns(_rule=pl.lit(1)),
    ]
    if cfg.one_word and tr.height and te.height:
        found.append(
            one_word_leaks(tr, te, min_words=cfg.one_word_min_words, same_label=cfg.same_label)
            .cast(near.schema)
            .with_columns(_rule=pl.lit(2))
        )
    if cfg.semantic_threshold is not None and train_embeddings is not None and test_embeddings is not None:
        found.append(
            semantic_leaks(
                tr,
                te,
                train_embeddings=train_embeddings,
                test_embeddings=test_embeddings,
                threshold=cfg.semantic_threshold,
                same_label=cfg.same_label,
            )
            .cast(near.schema)
            .with_columns(_rule=pl.lit(3))
        )
    leaks = (
        pl.concat(found)
        .sort("_i", "_rule", "_test_id", maintain_order=True)
        .unique("_i", keep="first", maintain_order=True)
    )
    hit = tr.join(leaks, on="_i", how="inner")
    detail = (
        pl.when(pl.col("_rule") == 2)
        .then(pl.format("one word from test row {}", "_test_id"))
        .when(pl.col("_rule") == 3)
        .then(pl.format("paraphrase of test row {} (cosine {})", "_test_id", pl.col("_sim").round(4)))
        .otherwise(
            pl.format("copy of test row {} (estimated Jaccard {})", "_test_id", pl.col("_sim").round(3))
        )
    )
    removed = hit.select(
        "id",
        "split",
        "line",
        pl.lit("decontam").alias("stage"),
        pl.lit("test_leak").alias("reason"),
        pl.col("_test_id").alias("duplicate_of"),
        detail.alias("detail"),
        "text",
        "label",
    )
    kept = tr.join(leaks, on="_i", how="anti").drop("_i", "_key")
    return StepResult(
        kept=kept.sort("line"),
        removed=removed.cast(REMOVED_SCHEMA).sort("line"),
        flags=pl.DataFrame(schema=FLAGS_SCHEMA),
    )


def word_edit_keys(frame: pl.DataFrame, index: str) -> pl.DataFrame:
    """Per (row, word position): the text with that word as a wildcard (``sub``) and deleted
    (``dele``); plus the whole text (``full``) and the word count ``n``, from ``_key``."""
    words = frame.select(index, _w=pl.col("_key").str.split(" ")).with_columns(_n=pl.col("_w").list.len())
    pos = words.with_columns(_p=pl.int_ranges(pl.col("_n"))).explode("_p")
    before = pl.col("_w").list.slice(0, pl.col("_p"))
    after = pl.col("_w").list.slice(pl.col("_p") + 1)
    return pos.select(
        index,
        "_n",
        sub=pl.concat_list(before, pl.lit(["\x00"]), after).list.join(" "),
        dele=pl.concat_list(before, after).list.join(" "),
        full=pl.col("_w").list.join(" "),
    ).filter(pl.col("_n") > 0)


def one_word_pairs(frame: pl.DataFrame, *, min_words: int, same_label: bool) -> np.ndarray:
    """Pairs (i < j) of rows of ``frame`` (by position) one word apart in their normalised text.

    Args:
        frame: rows with ``text`` (and ``label`` for ``same_label``).
        min_words: both texts at least this many words long.
        same_label: only pairs with equal labels.

    Returns:
        (p, 2) int64 pairs, sorted.
    """
    k = frame.select("text", *(["label"] if "label" in frame.columns else [])).with_columns(
        _key=dedup_key(pl.col("text"))
    )
    k = k.with_row_index("_i").filter(pl.col("_key").str.count_matches(" ") + 1 >= min_words)
    keys = word_edit_keys(k, "_i")
    whole = keys.unique("_i").select(pl.col("_i").alias("_j"), pl.col("full").alias("dele"))
    pairs = pl.concat(
        [
            keys.select("_i", "sub").join(keys.select(pl.col("_i").alias("_j"), "sub"), on="sub"),
            keys.select("_i", "dele").join(whole, on="dele"),
        ],
        how="diagonal",
    ).select(lo=pl.min_horizontal("_i", "_j"), hi=pl.max_horizontal("_i", "_j"))
    pairs = pairs.filter(pl.col("lo") != pl.col("hi")).unique().sort("lo", "hi")
    if same_label and "label" in k.columns:
        labels = k.select("_i", "label")
        pairs = (
            pairs.join(labels.rename({"_i": "lo", "label": "_a"}), on="lo")
            .join(labels.rename({"_i": "hi", "label": "_b"}), on="hi")
            .filter(pl.col("_a").eq_missing(pl.col("_b")))
            .sort("lo", "hi")
        )
    return pairs.select("lo", "hi").to_numpy().astype(np.int64).reshape(-1, 2)


_WORD_POLY = np.uint64(0x100000001B3)  # FNV's prime: odd, so invertible mod 2**64
_WORD_POLY_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_WILDCARD = np.uint64(0x5BD1E9955BD1E995)  # the hash of word_edit_keys' wildcard word


def one_word_candidates(left: list[str], right: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(left rows, right rows) of the pairs whose :func:`word_edit_keys` hashes match
    (sub = sub, left dele = right full, left full = right dele): every pair whose strings
    match, plus, with probability ~2**-64 a pair, one whose strings do not. Compiled hashes
    and integer joins, instead of a string per (row, word position) for every row."""
    from curation import kernels
    from curation.minhash import _code_points

    def hashes(texts: list[str]) -> pl.DataFrame:
        cps, lens = _code_points(texts)
        words = np.fromiter((t.count(" ") + 1 for t in texts), dtype=np.int64, count=len(texts))
        salt = np.arange(int(words.max(initial=0)) + 2, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        sub = np.empty(int(words.sum()), dtype=np.uint64)
        dele = np.empty_like(sub)
        full = np.empty(len(texts), dtype=np.uint64)
        kernels.word_edit_hashes(cps, lens, _WORD_POLY, _WORD_POLY_INV, _WILDCARD, salt, sub, dele, full)
        owner = np.repeat(np.arange(len(texts)), words)
        return pl.DataFrame({"row": owner, "sub": sub, "dele": dele}), pl.DataFrame(
            {"row": np.arange(len(texts)), "full": full}
        )

    if not left or not right:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    (a, a_full), (b, b_full) = hashes(left), hashes(right)
    pairs = pl.concat(
        [
            a.select("row", "sub").join(b.select("sub", pl.col("row").alias("_j")), on="sub"),
            a.select("row", "dele").join(
                b_full.select(pl.col("full").alias("dele"), pl.col("row").alias("_j")), on="dele"
            ),
            a_full.select("row", pl.col("full").alias("dele")).join(
                b.select("dele", pl.col("row").alias("_j")), on="dele"
            ),
        ],
        how="diagonal",
    ).select("row", "_j")
    return pairs["row"].to_numpy(), pairs["_j"].to_numpy()


def one_word_leaks(tr: pl.DataFrame, te: pl.DataFrame, *, min_words: int, same_label: bool) -> pl.DataFrame:
    """Train rows one word (substituted, inserted, deleted) from a test row.

    Args:
        tr: train rows with ``_i`` (row index) and ``_key`` (normalised text).
        te: test rows with ``_j``, ``id`` and ``_key``.
        min_words: both texts must have at least this many words (short texts differ by one
            word and mean something else).
        same_label: only pairs where the train row has the test row's label.

    Returns:
        (_i, _test_id, _sim) one row per leaking train row, the smallest test id; ``_sim`` is
        the share of words in common.
    """
    long_tr = tr.filter(pl.col("_key").str.count_matches(" ") + 1 >= min_words)
    long_te = te.filter(pl.col("_key").str.count_matches(" ") + 1 >= min_words)
    # the strings below for the rows that can be in a pair only: every pair of equal strings
    # has equal hashes, so the rows of hashed pairs hold every pair (and the strings decide)
    i, j = one_word_candidates(long_tr["_key"].to_list(), long_te["_key"].to_list())
    long_tr, long_te = long_tr[np.unique(i)], long_te[np.unique(j)]
    a = word_edit_keys(long_tr, "_i")
    b = word_edit_keys(long_te, "_j")
    full_b = b.unique("_j").select("_j", "full", "_n")
    full_a = a.unique("_i").select("_i", "full", "_n")
    pairs = pl.concat(
        [
            a.select("_i", "sub", "_n").join(b.select("_j", "sub"), on="sub").select("_i", "_j", "_n"),
            a.select("_i", "dele", "_n")
            .join(full_b.rename({"full": "dele"}), on="dele")
            .select("_i", "_j", "_n"),
            full_a.rename({"full": "dele"}).join(b.select("_j", "dele"), on="dele").select("_i", "_j", "_n"),
        ]
    ).unique(["_i", "_j"])
    pairs = pairs.join(
        te.select("_j", pl.col("id").alias("_test_id"), pl.col("label").alias("_test_label")), on="_j"
    )
    if same_label:
        pairs = pairs.join(tr.select("_i", "label"), on="_i").filter(
            pl.col("label").eq_missing(pl.col("_test_label"))
        )
    return (
        pairs.group_by("_i")
        .agg(pl.col("_test_id").min(), ((pl.col("_n") - 1) / pl.col("_n")).max().alias("_sim"))
        .sort("_i")
    )


def semantic_leaks(
    tr: pl.DataFrame,
    te: pl.DataFrame,
    *,
    train_embeddings: np.ndarray,
    test_embeddings: np.ndarray,
    threshold: float,
    same_label: bool,
    block_rows: int = 2048,
) -> pl.DataFrame:
    """Train rows whose embedding has cosine >= ``threshold`` with a test row's.

    Args:
        tr: train rows with ``_i`` and ``label``, in the order of ``train_embeddings``.
        te: test rows with ``_j`` (their order in ``te``), ``id`` and ``label``.
        same_label: only test rows with the train row's label count.

    Returns:
        (_i, _test_id, _sim): per leaking train row its most similar test row (ties: smallest id).
    """
    a = np.asarray(train_embeddings, dtype=np.float32)
    te_sorted = te.sort("_j")
    # te is sorted by id and numbered _j; test_embeddings follow the caller's test order
    b = np.asarray(test_embeddings, dtype=np.float32)[te_sorted["_orig"].to_numpy()]
    if len(a) != tr.height or len(b) != te.height:
        raise ValueError("embeddings must have one row per train / test row")
    tr_lab = tr["label"].cast(pl.String).fill_null("\x00").to_numpy()
    te_lab = te_sorted["label"].cast(pl.String).fill_null("\x00").to_numpy()
    hits_i, hits_j, hits_s = [], [], []
    for lo in range(0, len(a), block_rows):
        sims = a[lo : lo + block_rows] @ b.T
        if same_label:
            sims[tr_lab[lo : lo + block_rows, None] != te_lab[None, :]] = -np.inf
        best = sims.argmax(axis=1)  # first maximum = smallest _j = smallest test id
        best_sim = sims[np.arange(len(sims)), best]
        ok = best_sim >= threshold
        hits_i.append(lo + np.flatnonzero(ok))
        hits_j.append(best[ok])
        hits_s.append(best_sim[ok].astype(np.float64))
    found = pl.DataFrame(
        {
            "_i": np.concatenate(hits_i).astype(np.uint32) if hits_i else np.zeros(0, np.uint32),
            "_j": np.concatenate(hits_j).astype(np.uint32) if hits_j else np.zeros(0, np.uint32),
            "_sim": np.concatenate(hits_s) if hits_s else np.zeros(0),
        }
    )
    return found.join(te_sorted.select("_j", pl.col("id").alias("_test_id")), on="_j").select(
        "_i", "_test_id", "_sim"
    )


def count_test_leaks(
    train: pl.DataFrame,
    test: pl.DataFrame,
    *,
    cfg: DecontamParams | None = None,
    minhash: DedupParams | None = None,
) -> int:
    """Train rows that still copy a test row; the curated train must have none.

    Uses decontamination's own normalisation (:func:`curation.dedup.dedup_key`), so a copy
    disguised with zero-width characters, soft hyphens, look-alike letters or case counts
    exactly as :func:`remove_test_leaks` would remove it.

    Args:
        train: train rows (a ``text`` column).
        test: test rows (a ``text`` column).
        cfg: with ``minhash``, near copies count too (the decontam rule); without, only
            copies that are equal after normalisation.
        minhash: the ``dedup`` section (shingles, MinHash), with ``cfg``.

    Returns:
        The number of train rows that copy some test row.
    """
    if cfg is not None and minhash is not None:
        return remove_test_leaks(train, test, cfg=cfg, minhash=minhash).removed.height
    if (cfg is None) != (minhash is None):
        raise ValueError("count_test_leaks: pass both cfg and minhash for near copies, or neither")
    keys = test.select(dedup_key(pl.col("text")).alias("k"))["k"].implode()
    return int(train.select(dedup_key(pl.col("text")).is_in(keys).sum()).item())
