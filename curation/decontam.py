"""Decontaminate: remove train rows that are exact or near copies of a test row.

The test set is only read: it is never deduplicated, edited or filtered to suit train.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from curation.dedup import StepResult, dedup_key, local_signer
from curation.minhash import PairVerifier, Signer, band_keys, cross_pairs, lsh_bands
from schemas.params import DecontamParams, DedupParams
from schemas.records import FLAGS_SCHEMA, REMOVED_SCHEMA

log = logging.getLogger(__name__)


def remove_test_leaks(
    train: pl.DataFrame,
    test: pl.DataFrame,
    *,
    cfg: DecontamParams,
    minhash: DedupParams,
    signer: Signer | None = None,
) -> StepResult:
    """Drop train rows whose text matches a test row (exact after normalisation, or near).

    Args:
        train: candidate train rows (id, line, text, ...).
        test: the validated test rows; untouched.
        cfg: the ``decontam`` section (its own Jaccard threshold).
        minhash: the ``dedup`` section, for shingling and MinHash settings.
        signer: computes MinHash signatures (default in process; the pipeline may shard it).

    Returns:
        kept train rows; removed rows with reason ``test_leak`` and ``duplicate_of`` the test id
        (the most similar test row, ties to the smallest id); no flags.
    """
    tr = train.with_columns(_key=dedup_key(pl.col("text"))).with_row_index("_i")
    te = test.with_columns(_key=dedup_key(pl.col("text"))).sort("id").with_row_index("_j")
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
        bands, rows = lsh_bands(cfg.lsh_threshold, minhash.num_perm)
        pairs = cross_pairs(
            band_keys(sig_tr, bands=bands, rows=rows), band_keys(sig_te, bands=bands, rows=rows)
        )
        verify = PairVerifier(
            tr["_key"].to_list(),
            te["_key"].to_list(),
            sig_tr,
            sig_te,
            threshold=cfg.threshold,
            max_char_edits=cfg.max_char_edits,
            word_order=cfg.word_order,
        )
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
    leaks = pl.concat([exact.select("_i", "_test_id", "_sim").cast(near.schema), near]).unique(
        "_i", keep="first", maintain_order=True
    )
    hit = tr.join(leaks, on="_i", how="inner")
    removed = hit.select(
        "id",
        "split",
        "line",
        pl.lit("decontam").alias("stage"),
        pl.lit("test_leak").alias("reason"),
        pl.col("_test_id").alias("duplicate_of"),
        pl.format("copy of test row {} (estimated Jaccard {})", "_test_id", pl.col("_sim").round(3)).alias(
            "detail"
        ),
        "text",
        "label",
    )
    kept = tr.join(leaks, on="_i", how="anti").drop("_i", "_key")
    return StepResult(
        kept=kept.sort("line"),
        removed=removed.cast(REMOVED_SCHEMA).sort("line"),
        flags=pl.DataFrame(schema=FLAGS_SCHEMA),
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
