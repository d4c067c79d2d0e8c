"""Dedup: exact (after normalisation) and MinHash-LSH near duplicates, clustered by union-find.

One representative per cluster is kept: the earliest input line. Other members are removed
with ``duplicate_of`` the representative; members whose label disagrees with it are not
dropped silently but flagged ``conflicting_duplicate`` and held for review.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import NamedTuple

import numpy as np
import polars as pl

from curation.minhash import (
    PairVerifier,
    Signer,
    band_keys,
    bucket_candidates,
    candidate_pairs,
    canonical_text,
    confusable_skeletons_of,
    exact_bands,
    folded_text,
    lsh_bands,
    one_edit_pairs,
    same_key_pairs,
    signatures,
    strip_punctuation,
)
from schemas.params import DedupParams
from schemas.records import FLAGS_SCHEMA, REMOVED_SCHEMA

log = logging.getLogger(__name__)


class StepResult(NamedTuple):
    """What a curation step returns: rows kept, rows removed (with reasons), rows flagged."""

    kept: pl.DataFrame
    removed: pl.DataFrame
    flags: pl.DataFrame


def dedup_key(text: pl.Expr) -> pl.Expr:
    """The string two rows must share to be exact duplicates.

    Texts that normalise to nothing (only punctuation) fall back to their canonical form with
    punctuation kept, so "???" and "!!!" are not called copies of each other while "?\u200b??"
    still is a copy of "???".
    """
    return dedup_key_from_canonical(canonical_text(text))


def dedup_key_from_canonical(canonical: pl.Expr) -> pl.Expr:
    """:func:`dedup_key` of a text already in :func:`canonical_text` form (computing the
    canonical form once, in its own column, halves the normalisation time)."""
    norm = strip_punctuation(canonical)
    return pl.when(norm.str.len_chars() > 0).then(norm).otherwise(canonical.str.strip_chars())


def dedup_keys(texts: pl.Series) -> pl.Series:
    """:func:`dedup_key` of every text of a Series (the same strings), faster: an ASCII text
    needs only lower-casing before its punctuation is stripped (invisibles, NFKC and the
    confusable skeletons touch only non-ASCII characters), so the full canonical form is
    computed for the other texts alone."""
    name = texts.name
    other = (texts.str.len_bytes() != texts.str.len_chars()).arg_true()
    canonical = texts.str.to_lowercase()
    if len(other):
        folded = texts.gather(other).to_frame(name).select(folded_text(pl.col(name))).to_series()
        # the skeleton table of the characters these texts hold: the same strings as the
        # whole table (keys are single characters), without building it (~0.07 s)
        table = confusable_skeletons_of(folded.drop_nulls().to_list())
        canonical = canonical.scatter(other, folded.str.replace_many(table) if table else folded)
    # dedup_key_from_canonical, with the stripped form computed once (a when/then in one
    # select computed it twice) and the fallback only for the texts that strip to nothing
    norm = canonical.to_frame(name).select(strip_punctuation(pl.col(name))).to_series()
    empty = (norm.str.len_bytes() == 0).arg_true()
    if len(empty):
        norm = norm.scatter(empty, canonical.gather(empty).str.strip_chars())
    return norm


def local_signer(cfg: DedupParams) -> Signer:
    """``signatures`` with the dedup section's MinHash settings, computed in this process."""
    return partial(
        signatures,
        kind=cfg.shingle,
        ngram=cfg.ngram,
        num_perm=cfg.num_perm,
        seed=cfg.seed,
        engine=cfg.engine,
    )


def exact_edit_rule(cfg: DedupParams) -> bool:
    """Whether the edit rule's pairs come from :func:`one_edit_pairs` (all of them) rather
    than from LSH at ``lsh_threshold`` (those that LSH happens to find)."""
    return cfg.engine == "fast" and cfg.max_char_edits <= 1


def candidate_bands(cfg: DedupParams) -> tuple[int, int]:
    """(bands, rows) of the in-memory LSH: with the fast engine and at most one edit, the
    pigeonhole banding that finds every pair reaching ``threshold`` (:func:`exact_bands`);
    otherwise datasketch's banding at ``lsh_threshold``, which also finds edit copies."""
    if exact_edit_rule(cfg):
        return exact_bands(cfg.threshold, cfg.num_perm)
    return lsh_bands(cfg.lsh_threshold, cfg.num_perm)


# signatures -> blocks of LSH candidate pairs (i, j), i < j; a block is verified as it comes
CandidateSource = Callable[[np.ndarray], Iterable[np.ndarray]]


def banded_candidates(cfg: DedupParams) -> CandidateSource:
    """LSH candidates in memory, ``cfg.bands_per_pass`` bands at a time (:func:`candidate_bands`).

    On dense data the pairs of all bands at once do not fit in memory while the verified ones
    are few. A pair found in two passes is verified twice, with the same result, so the
    outcome does not depend on the passes.
    """

    # the exact sources find every pair the verifier accepts, so a rare extra candidate from
    # bucket_candidates' packed keys changes nothing; datasketch's banding keeps exact buckets
    pairs_of = bucket_candidates if exact_edit_rule(cfg) else candidate_pairs

    def blocks(sig: np.ndarray) -> Iterable[np.ndarray]:
        bands, rows = candidate_bands(cfg)
        keys = band_keys(sig, bands=bands, rows=rows)
        for lo in range(0, bands, cfg.bands_per_pass):
            yield pairs_of(keys[:, lo : lo + cfg.bands_per_pass])

    return blocks


def cluster_labels(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` texts linked by ``pairs`` (k x 2): one number per text,
    components numbered by their first text (scipy's ``connected_components`` numbering;
    compiled union-find here, so dedup does not load scipy.sparse: 0.3 s of start-up)."""
    from curation import kernels

    labels = np.empty(n, dtype=np.int64)
    kernels.component_labels(n, np.ascontiguousarray(pairs, dtype=np.int64).reshape(-1, 2), labels)
    return labels


def near_duplicate_clusters(
    norm_texts: list[str],
    *,
    cfg: DedupParams,
    signer: Signer | None = None,
    candidates: CandidateSource | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Cluster distinct normalised texts that are near duplicates (see ``PairVerifier``).

    ``signer`` computes the MinHash signatures (default: :func:`local_signer`); ``candidates``
    turns them into LSH candidate pairs (default: :func:`banded_candidates`; the pipeline may
    use an index in Redis, which gives the same pairs). ``progress`` is called with a short
    message after each block of candidates.

    Returns:
        (cluster id per text, {(i, j): similarity} for the verified pairs).
    """
    n = len(norm_texts)
    if n == 0:
        return np.zeros(0, dtype=np.int64), {}
    sig = (signer or local_signer(cfg))(norm_texts)
    code = np.array([n, 1], dtype=np.int64)  # one int64 per pair: 1-D unique is fast
    verifier = PairVerifier(
        norm_texts,
        norm_texts,
        sig,
        sig,
        threshold=cfg.threshold,
        max_char_edits=cfg.max_char_edits,
        word_order=cfg.word_order,
    )
    found_codes, found_sims, n_candidates = [], [], 0
    for k, block in enumerate((candidates or banded_candidates(cfg))(sig), start=1):
        n_candidates += len(block)
        ok, sims = verifier(block)
        found_codes.append(block[ok] @ code)
        found_sims.append(sims)
        if progress:
            progress(f"LSH block {k}: {n_candidates:,} candidate pairs checked")
    exact_sources = []
    if verifier.left_bag is not None:  # word-order copies, which LSH may miss
        exact_sources.append(lambda: same_key_pairs(verifier.left_bag))
    if exact_edit_rule(cfg) and cfg.max_char_edits == 1:  # every one-edit copy
        exact_sources.append(lambda: one_edit_pairs(norm_texts, keys_per_pass=cfg.one_edit_keys_per_pass))
    for source in exact_sources:
        block = source()
        n_candidates += len(block)
        ok, sims = verifier(block)
        found_codes.append(block[ok] @ code)
        found_sims.append(sims)
    all_codes = np.concatenate(found_codes) if found_codes else np.zeros(0, dtype=np.int64)
    all_sims = np.concatenate(found_sims) if found_sims else np.zeros(0)
    unique_codes, first = np.unique(all_codes, return_index=True)
    verified = np.stack([unique_codes // n, unique_codes % n], axis=1).reshape(-1, 2)
    verified_sims = all_sims[first]
    labels = cluster_labels(n, verified)
    bands, rows = candidate_bands(cfg)
    log.info(
        "dedup: %d distinct texts, %d LSH candidate pairs, %d verified (b=%d, r=%d)",
        n,
        n_candidates,
        len(verified),
        bands,
        rows,
    )
    return labels, {(int(i), int(j)): float(s) for (i, j), s in zip(verified, verified_sims, strict=True)}


def drop_duplicates(
    train: pl.DataFrame,
    *,
    cfg: DedupParams,
    signer: Signer | None = None,
    candidates: CandidateSource | None = None,
    progress: Callable[[str], None] | None = None,
) -> StepResult:
    """Remove exact and near duplicates from the validated train rows.

    Args:
        train: validated rows with at least id, line, text, label, text_hash.
        cfg: the ``dedup`` section of params.yaml.
        signer: computes MinHash signatures (default in process; the pipeline may shard it).
        candidates: LSH candidate pairs from signatures (default in memory; or Redis).
        progress: called with a short message as candidate blocks are verified.

    Returns:
        kept: one representative per cluster plus all singletons;
        removed: exact_duplicate / near_duplicate rows and conflicting members (pending_review);
        flags: one ``conflicting_duplicate`` flag per conflicting member.
    """
    frame = train.with_columns(_key=dedup_keys(train["text"]))
    keys = frame.select(pl.col("_key").unique(maintain_order=True)).to_series()
    # sort distinct keys so cluster numbering never depends on row order or process
    keys = keys.sort()
    cluster_of_key, sims = near_duplicate_clusters(
        keys.to_list(), cfg=cfg, signer=signer, candidates=candidates, progress=progress
    )
    key_index = pl.DataFrame({"_key": keys, "_kid": np.arange(len(keys)), "_cluster": cluster_of_key})
    frame = frame.join(key_index, on="_key", how="left")
    reps = (
        frame.sort("line")
        .group_by("_cluster", maintain_order=True)
        .agg(
            pl.col("id").first().alias("_rep_id"),
            pl.col("label").first().alias("_rep_label"),
            pl.col("_kid").first().alias("_rep_kid"),
            pl.len().alias("cluster_size"),
        )
    )
    frame = frame.join(reps, on="_cluster", how="left")
    is_rep = pl.col("id") == pl.col("_rep_id")
    exact = pl.col("_kid") == pl.col("_rep_kid")
    conflicting = ~is_rep & pl.col("label").ne_missing(pl.col("_rep_label"))
    # similarity of each row's key to its representative's key: 1 for the same key, the
    # verified pair's estimate when the two are directly linked, null when linked via others
    sim_frame = pl.DataFrame(
        {
            "_lo": np.fromiter((i for i, _ in sims), dtype=np.int64, count=len(sims)),
            "_hi": np.fromiter((j for _, j in sims), dtype=np.int64, count=len(sims)),
            "_pair_sim": np.fromiter(sims.values(), dtype=np.float64, count=len(sims)),
        }
    )
    frame = (
        frame.with_columns(
            _lo=pl.min_horizontal("_kid", "_rep_kid").cast(pl.Int64),
            _hi=pl.max_horizontal("_kid", "_rep_kid").cast(pl.Int64),
        )
        .join(sim_frame, on=["_lo", "_hi"], how="left", maintain_order="left")
        .with_columns(
            _sim=pl.when(pl.col("_kid") == pl.col("_rep_kid"))
            .then(pl.lit(1.0))
            .otherwise(pl.col("_pair_sim"))
        )
        .drop("_lo", "_hi", "_pair_sim")
    )
    kept = frame.filter(is_rep)
    dropped = frame.filter(~is_rep)
    removed = dropped.select(
        "id",
        "split",
        "line",
        pl.lit("dedup").alias("stage"),
        pl.when(conflicting)
        .then(pl.lit("pending_review"))
        .when(exact)
        .then(pl.lit("exact_duplicate"))
        .otherwise(pl.lit("near_duplicate"))
        .alias("reason"),
        pl.col("_rep_id").alias("duplicate_of"),
        pl.when(conflicting)
        .then(pl.format("conflicting_duplicate: label '{}' vs '{}' of {}", "label", "_rep_label", "_rep_id"))
        .when(exact)
        .then(pl.lit("same text after normalisation"))
        .otherwise(
            pl.format(
                "estimated Jaccard {} to the kept row (cluster of {})",
                pl.col("_sim").round(3).cast(pl.String).fill_null("n/a, linked via another member"),
                "cluster_size",
            )
        )
        .alias("detail"),
        "text",
        "label",
    )
    flags = dropped.filter(conflicting).select(
        "id",
        "text_hash",
        "text",
        pl.lit("conflicting_duplicate").alias("issue"),
        pl.col("_sim").fill_null(cfg.threshold).alias("score"),
        pl.col("label").alias("given_label"),
        pl.col("_rep_label").alias("suggested_label"),
        pl.col("_rep_id").alias("duplicate_of"),
    )
    kept = kept.drop(pl.selectors.starts_with("_"), "cluster_size").sort("line")
    return StepResult(
        kept=kept,
        removed=removed.cast(REMOVED_SCHEMA).sort("line"),
        flags=flags.cast(FLAGS_SCHEMA).sort("id"),
    )


def cluster_sizes(removed: pl.DataFrame) -> pl.DataFrame:
    """Size of every duplicate cluster (representative + removed members), for the report."""
    dup = removed.filter(pl.col("stage") == "dedup")
    return dup.group_by("duplicate_of").agg((pl.len() + 1).alias("size")).sort("duplicate_of")
