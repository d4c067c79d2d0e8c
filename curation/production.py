"""People check the model's production answers: the review sample, the accuracy estimate, and
reviewed answers turned into labelled train rows.

Pure functions over polars frames (flows/labelstudio.py does the Label Studio and file I/O):

- :func:`sample_predictions`: a stratified sample of predictions (strata = predicted label x
  confidence band), low-confidence strata over-sampled; every sampled row records its
  stratum's size, its inclusion probability and its weight (= 1 / probability).
- :func:`estimate_accuracy`: production accuracy with the over-sampling undone: each
  stratum's reviewed accuracy weighted by the stratum's size (the inverse-probability,
  Hajek form: rows reviewed in a stratum stand for all of its rows), with a weighted
  bootstrap percentile interval.
- :func:`reviewed_train_rows`: reviewed answers -> rows in the input files' own columns, for
  the next curate (``data.extra_train``), where they pass dedup, decontam and noise checks
  like every other train row.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from curation.ingest import text_hash
from schemas.params import ColumnMap

LOW_BAND = "low"
HIGH_BAND = "high"
STRATUM_SEPARATOR = "|"  # stratum = "<predicted label>|<band>"
SAMPLE_ID_HEX = 12  # 48 bits: distinct per traffic window
ORIGIN = "production"  # value of the `origin` column of reviewed train rows
ID_PREFIX = "production-"  # reviewed rows' ids never collide with curate's derived "train-..." ids

SAMPLE_SCHEMA = pl.Schema(
    {
        "id": pl.String,
        "text_hash": pl.String,
        "text": pl.String,
        "label": pl.String,  # the model's answer
        "confidence": pl.Float64,
        "model_version": pl.String,
        "predicted_at": pl.String,
        "band": pl.String,  # low | high
        "stratum": pl.String,
        "stratum_size": pl.Int64,  # rows of the stratum in the predictions (N_h)
        "stratum_sampled": pl.Int64,  # rows of the stratum in the sample (n_h)
        "population": pl.Int64,  # rows of the predictions sampled from (N)
        "inclusion_prob": pl.Float64,  # n_h / N_h
        "weight": pl.Float64,  # N_h / n_h: the rows this one stands for
        "sample_id": pl.String,  # which predictions (window) and sampling options
    }
)


# ── sampling ─────────────────────────────────────────────────────────────────────────


def allocate_sample(sizes: np.ndarray, factors: np.ndarray, *, total: int, minimum: int) -> np.ndarray:
    """How many rows each stratum gives: ``minimum`` each, the rest in proportion to size x factor.

    Capped at each stratum's size; integer shares by largest remainder (ties: the earlier
    stratum). When ``total`` cannot give every stratum its minimum, the strata of largest
    size x factor get it first.

    Args:
        sizes: rows per stratum (N_h), in a fixed stratum order.
        factors: over-sampling factor per stratum (1 = its plain share).
        total: sample size wanted.
        minimum: rows every non-empty stratum gets first, while ``total`` allows.

    Returns:
        rows to sample per stratum (n_h), summing to ``min(total, sizes.sum())``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    priority = sizes * np.asarray(factors, dtype=np.float64)
    if total >= sizes.sum():
        return sizes.copy()
    floor = np.minimum(sizes, minimum)
    alloc = np.zeros_like(sizes)
    if floor.sum() >= total:  # not enough for every minimum: the biggest strata first
        remaining = total
        for i in np.lexsort((np.arange(len(sizes)), -priority)):
            take = min(int(floor[i]), remaining)
            alloc[i], remaining = take, remaining - take
        return alloc
    alloc = floor.copy()
    remaining = int(total - alloc.sum())
    capacity = sizes - alloc
    order = np.arange(len(sizes))
    while remaining > 0:
        weights = np.where(capacity > 0, priority, 0.0)
        share = remaining * weights / weights.sum()
        whole = np.floor(share).astype(np.int64)
        give = np.minimum(whole, capacity)
        left = remaining - int(give.sum())
        if left > 0 and (give == whole).all():  # nothing capped: the rest by largest remainder
            fraction = np.where(capacity - give > 0, share - whole, -1.0)
            give[np.lexsort((order, -fraction))[:left]] += 1
        alloc += give  # (a capped stratum's excess is shared out again in the next round)
        capacity -= give
        remaining -= int(give.sum())
    return alloc


def sample_predictions(
    predictions: pl.DataFrame,
    *,
    size: int,
    low_confidence: float,
    oversample: float,
    minimum: int,
    seed: int,
) -> pl.DataFrame:
    """A stratified sample of predictions, low-confidence answers over-sampled, weights recorded.

    Strata are (predicted label, band): band ``low`` when the confidence is below
    ``low_confidence`` (or missing), else ``high``. Low strata get ``oversample`` times their
    share (:func:`allocate_sample`). Within a stratum the rows are chosen by a seeded hash of
    (id, text_hash), so the sample does not depend on row order, and the same predictions give
    the same sample (re-pushing adds nothing).

    Args:
        predictions: rows with at least id, text, label, confidence (schemas/predictions.py);
            model_version and predicted_at are carried when present.
        size: rows wanted (all rows when there are fewer).
        low_confidence: the band threshold.
        oversample: factor of the low strata (>= 1).
        minimum: rows every non-empty stratum gets first, while ``size`` allows.
        seed: which rows of a stratum are chosen.

    Returns:
        SAMPLE_SCHEMA rows sorted by (stratum, id, text_hash); ``weight`` sums to the number of
        predictions.

    Raises:
        ValueError: a required column is missing, or an option is out of range.
    """
    missing = [c for c in ("id", "text", "label", "confidence") if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack column(s) {missing}")
    if size < 1 or oversample < 1.0 or minimum < 0:
        raise ValueError("need size >= 1, oversample >= 1 and minimum >= 0")
    frame = predictions.select(
        pl.col("id").cast(pl.String),
        pl.col("text").cast(pl.String),
        pl.col("label").cast(pl.String),
        pl.col("confidence").cast(pl.Float64),
        *(
            (pl.col(c).cast(pl.String) if c in predictions.columns else pl.lit(None, pl.String)).alias(c)
            for c in ("model_version", "predicted_at")
        ),
    ).with_columns(text_hash=text_hash(pl.col("text").fill_null("")))
    low = pl.col("confidence").is_null() | (pl.col("confidence") < low_confidence)
    frame = frame.with_columns(
        band=pl.when(low).then(pl.lit(LOW_BAND)).otherwise(pl.lit(HIGH_BAND)),
    ).with_columns(stratum=pl.col("label").fill_null("") + STRATUM_SEPARATOR + pl.col("band"))
    sample_id = _sample_id(frame, size=size, low_confidence=low_confidence, oversample=oversample, seed=seed)
    strata = (
        frame.group_by("stratum").agg(pl.len().alias("stratum_size"), pl.col("band").first()).sort("stratum")
    )
    factors = np.where(strata["band"].to_numpy() == LOW_BAND, oversample, 1.0)
    sampled = allocate_sample(strata["stratum_size"].to_numpy(), factors, total=size, minimum=minimum)
    strata = strata.drop("band").with_columns(stratum_sampled=pl.Series(sampled, dtype=pl.Int64))
    chosen = (
        frame.with_columns(_draw=_draw_key(seed))
        .join(strata, on="stratum", how="left")
        .sort("stratum", "_draw", "id", "text_hash")
        .filter(pl.int_range(pl.len()).over("stratum") < pl.col("stratum_sampled"))
        .with_columns(
            population=pl.lit(frame.height, pl.Int64),
            inclusion_prob=pl.col("stratum_sampled") / pl.col("stratum_size"),
            weight=pl.col("stratum_size") / pl.col("stratum_sampled"),
            sample_id=pl.lit(sample_id),
        )
    )
    return chosen.select(list(SAMPLE_SCHEMA)).cast(SAMPLE_SCHEMA).sort("stratum", "id", "text_hash")  # type: ignore[arg-type]


def _draw_key(seed: int) -> pl.Expr:
    """A seeded, process-independent pseudo-random key per row (sha1 of seed, id, text_hash)."""
    return pl.concat_str(
        [pl.lit(str(seed)), pl.col("id"), pl.col("text_hash")], separator="\x1f"
    ).map_elements(lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest(), return_dtype=pl.String)


def _sample_id(frame: pl.DataFrame, **options: Any) -> str:
    """Names the window and the sampling options: the same predictions and options, the same id."""
    keys = frame.select(pl.concat_str(["id", "text_hash"], separator="\x1f")).to_series().sort()
    joined = repr(sorted(options.items())) + "\x1e" + keys.str.join("\x1e").item()
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()[:SAMPLE_ID_HEX]


# ── the accuracy estimate ────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class AccuracyEstimate:
    """Production accuracy over the strata that have reviews, with its bootstrap interval."""

    accuracy: float | None  # weighted (over-sampling undone); None without reviews
    accuracy_low: float | None
    accuracy_high: float | None
    accuracy_unweighted: float | None  # plain share of correct reviews (biased by the over-sampling)
    reviewed: int  # rows with a correct/wrong verdict
    correct: int
    strata_reviewed: int
    population: int  # predictions the reviewed samples were drawn from
    population_covered: float | None  # share of them in strata that have reviews (the estimate's scope)
    confidence: float
    bootstrap_samples: int

    def as_metrics(self) -> dict[str, Any]:
        """Flat, for ``dvc metrics`` (reports/production.json)."""
        return asdict(self)


def estimate_accuracy(
    reviewed: pl.DataFrame, *, bootstrap_samples: int, confidence: float, seed: int
) -> AccuracyEstimate:
    """Accuracy of the reviewed answers with the sampling weights undone.

    Each stratum's accuracy (its reviewed rows' share of ``correct``) is weighted by the
    stratum's size N_h: the inverse-probability (Hajek) estimate with weights N_h / r_h, where
    r_h is the number of rows of the stratum reviewed so far (rows not reviewed yet are taken to
    be like the reviewed ones of their stratum). Strata of different samples (``sample_id``,
    one per push) are separate strata. The interval is a percentile bootstrap that resamples
    the reviewed rows with replacement, each with its weight (benchmarks/prediction_review.py
    measures its coverage).

    Args:
        reviewed: one row per reviewed answer: sample_id, stratum, stratum_size, population,
            correct (bool).
        bootstrap_samples: resamples for the interval.
        confidence: two-sided level of the interval.
        seed: bootstrap seed.

    Raises:
        ValueError: a required column is missing, or an option is out of range.
    """
    needed = ["sample_id", "stratum", "stratum_size", "population", "correct"]
    missing = [c for c in needed if c not in reviewed.columns]
    if missing:
        raise ValueError(f"reviewed frame lacks column(s) {missing}")
    if bootstrap_samples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError("need bootstrap_samples >= 1 and 0 < confidence < 1")
    if reviewed.is_empty():
        return AccuracyEstimate(None, None, None, None, 0, 0, 0, 0, None, confidence, bootstrap_samples)
    keys = ["sample_id", "stratum"]
    rows = reviewed.with_columns(
        _weight=pl.col("stratum_size").cast(pl.Float64) / pl.len().over(keys),
        _hit=pl.col("correct").cast(pl.Float64),
    ).sort(*keys, "_hit")  # a fixed row order: the bootstrap draws do not depend on the input's
    weight = rows["_weight"].to_numpy()
    hit = rows["_hit"].to_numpy()
    point = float(weight @ hit / weight.sum())
    # resample the reviewed rows with replacement, each keeping its weight (N_h / r_h): a
    # within-stratum resample would see no variance in the many strata with one review
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(hit), np.full(len(hit), 1.0 / len(hit)), size=bootstrap_samples)
    replicates = (counts @ (weight * hit)) / (counts @ weight)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    strata = rows.group_by(keys).agg(
        pl.col("stratum_size").first().cast(pl.Float64).alias("size"), pl.col("population").first()
    )
    size = strata["size"].to_numpy()
    population = int(strata.group_by("sample_id").agg(pl.col("population").first())["population"].sum())
    return AccuracyEstimate(
        accuracy=point,
        accuracy_low=float(low),
        accuracy_high=float(high),
        accuracy_unweighted=float(hit.mean()),
        reviewed=len(hit),
        correct=int(hit.sum()),
        strata_reviewed=strata.height,
        population=population,
        population_covered=float(size.sum() / population) if population else None,
        confidence=confidence,
        bootstrap_samples=bootstrap_samples,
    )


# ── reviewed answers -> train rows ─────────────────────────────────────────────────


def reviewed_train_rows(decisions: pl.DataFrame, *, columns: ColumnMap) -> pl.DataFrame:
    """Reviewed answers with a known right label -> train rows in the input files' columns.

    A ``correct`` verdict keeps the model's label, ``wrong`` takes the reviewer's; ``unsure``
    rows and rows without their text (pushed from elsewhere) give no train row. Ids are
    ``production-<prediction id>`` (``-2``, ``-3``... when a prediction id repeats across
    windows), so they never collide with curate's derived ids.

    Args:
        decisions: resolved verdicts: id, text_hash, text, verdict, right_label, model_label,
            model_version, reviewed_at (UTC datetime).
        columns: ``data.columns``: the names the train files use for id, text and label.

    Returns:
        Columns (columns.id, columns.text, columns.label, origin, reviewed_at (ISO 8601 text),
        model_label, model_version), sorted by id.

    Raises:
        ValueError: a required column is missing.
    """
    needed = [
        "id",
        "text_hash",
        "text",
        "verdict",
        "right_label",
        "model_label",
        "model_version",
        "reviewed_at",
    ]
    missing = [c for c in needed if c not in decisions.columns]
    if missing:
        raise ValueError(f"decisions frame lacks column(s) {missing}")
    usable = decisions.filter(
        pl.col("verdict").is_in(["correct", "wrong"])
        & pl.col("right_label").is_not_null()
        & pl.col("text").is_not_null()
    ).sort("id", "text_hash")
    base = pl.lit(ID_PREFIX) + pl.col("id")
    occurrence = pl.int_range(1, pl.len() + 1).over("id")
    rows = usable.select(
        pl.when(occurrence > 1)
        .then(base + "-" + occurrence.cast(pl.String))
        .otherwise(base)
        .alias(columns.id),
        pl.col("text").alias(columns.text),
        pl.col("right_label").alias(columns.label),
        pl.lit(ORIGIN).alias("origin"),
        pl.col("reviewed_at")
        .dt.convert_time_zone("UTC")
        .dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .alias("reviewed_at"),
        pl.col("model_label"),
        pl.col("model_version"),
    )
    return rows.sort(columns.id)


# ── reviewed answers -> the promotion's production sample ──────────────────────────


def _comparable_text(column: str) -> pl.Expr:
    """Case and spacing folded: a reviewed row re-read by curate (stripped, re-spaced) still
    matches its train copy."""
    return pl.col(column).str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def production_comparison_rows(
    decisions: pl.DataFrame, *, trained_texts: pl.Series | None = None
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Reviewed answers with a known right label -> the rows two models are compared on.

    ``correct`` keeps the model's label as the truth, ``wrong`` the reviewer's; ``unsure``
    rows and rows without their text give nothing. Rows whose text the challenger was trained
    on (``trained_texts``: its train rows' texts) are left out: a model's score on its own
    train rows says nothing about production (the reviewed rows of one window are the next
    curate's extra train input, so they must not also judge the model trained on them).

    Args:
        decisions: resolved verdicts with their texts: id, text_hash, text, verdict,
            right_label, model_label, model_version; optional weight (the review sample's
            inverse inclusion probability).
        trained_texts: texts the challenger was trained on; None = leave none out.

    Returns:
        (rows: id (unique: ``<id>-2``... when a prediction id repeats across windows), text,
        label, weight, model_label, model_version, sorted by id; counts: judged,
        without_text, trained_on, rows).

    Raises:
        ValueError: a required column is missing.
    """
    needed = ["id", "text_hash", "text", "verdict", "right_label", "model_label", "model_version"]
    missing = [c for c in needed if c not in decisions.columns]
    if missing:
        raise ValueError(f"decisions frame lacks column(s) {missing}")
    judged = decisions.filter(
        pl.col("verdict").is_in(["correct", "wrong"]) & pl.col("right_label").is_not_null()
    )
    occurrence = pl.int_range(1, pl.len() + 1).over("id")
    # the unique id is set before rows are left out, so a row keeps it whatever else is dropped
    usable = (
        judged.filter(pl.col("text").is_not_null())
        .sort("id", "text_hash")
        .with_columns(
            pl.when(occurrence > 1)
            .then(pl.col("id") + "-" + occurrence.cast(pl.String))
            .otherwise(pl.col("id"))
            .alias("id")
        )
    )
    kept = usable
    if trained_texts is not None:
        seen = pl.DataFrame({"key": trained_texts.cast(pl.String)}).select(_comparable_text("key")).unique()
        kept = usable.with_columns(key=_comparable_text("text")).join(seen, on="key", how="anti").drop("key")
    weight = pl.col("weight").cast(pl.Float64) if "weight" in kept.columns else pl.lit(1.0)
    rows = kept.select(
        pl.col("id"),
        pl.col("text"),
        pl.col("right_label").alias("label"),
        weight.alias("weight"),
        pl.col("model_label").cast(pl.String),
        pl.col("model_version").cast(pl.String),
    )
    counts = {
        "judged": judged.height,
        "without_text": judged.height - usable.height,
        "trained_on": usable.height - kept.height,
        "rows": rows.height,
    }
    return rows.sort("id"), counts


__all__ = [
    "SAMPLE_SCHEMA",
    "AccuracyEstimate",
    "allocate_sample",
    "estimate_accuracy",
    "production_comparison_rows",
    "reviewed_train_rows",
    "sample_predictions",
]
