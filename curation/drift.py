"""Drift statistics: a window of production predictions against the curated training data.

Pure functions over polars frames and numpy arrays (no I/O, no clock, no model): the flow
reads predictions.parquet, the curated train split and the test split's predictions (the
baseline), and passes them in.

Four checks per window, each with a ``warn`` and a ``drift`` threshold from `monitor:`:

- **input drift**: a classifier two-sample test. TF-IDF + logistic regression learns to tell
  reference rows from window rows; its out-of-fold ROC AUC is 0.5 when they are
  indistinguishable. The check reads the lower bound of a percentile-bootstrap interval.
- **novel terms**: the share of window tokens never seen in the reference, in excess of the
  test split's own share (a held-out set also holds some unseen words), with the most
  frequent new terms listed: the "new product name" case.
- **prediction drift**: a chi-square test of predicted-label counts (window vs reference
  labels, a 2 x K contingency table, so the reference's own sampling noise counts) together
  with the PSI: both must pass a level, so a huge window does not alarm on a trivial shift
  and a small one not on PSI's small-sample bias alone.
- **confidence drift**: the fall in mean confidence and the rise in the low-confidence share
  against the test split's predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from schemas.monitor_params import MonitorParams

LEVELS = ("ok", "warn", "drift")
TOKEN_PATTERN = r"[^\W\d_]{2,}"  # runs of 2+ letters: words and names, not amounts or card digits
PSI_EPSILON = 0.5  # additive smoothing of label counts for PSI (a label absent on one side)

# ── windows ──────────────────────────────────────────────────────────────────────────


def assign_windows(predictions: pl.DataFrame, *, cfg: MonitorParams) -> pl.DataFrame:
    """``predictions`` with a ``window`` column (0, 1, ...) and ``window_start`` (a label).

    ``window_by: rows``: consecutive runs of ``window_rows`` rows in file order; ``time``:
    ``predicted_at`` truncated to ``window_every``, in time order. A window with fewer than
    ``min_window_rows`` rows is merged into the previous one (the first into the next).

    Raises:
        ValueError: ``window_by: time`` and a ``predicted_at`` that is not an ISO-8601 time.
    """
    if predictions.is_empty():
        return predictions.with_columns(window=pl.lit(0, pl.Int64), window_start=pl.lit("", pl.String))
    if cfg.window_by == "rows":
        frame = predictions.with_row_index("_row").with_columns(
            _key=(pl.col("_row") // cfg.window_rows).cast(pl.Int64)
        )
        frame = frame.with_columns(_start=pl.format("rows {}-", pl.col("_key") * cfg.window_rows + 1))
    else:
        stamp = pl.col("predicted_at").str.to_datetime(strict=False, time_zone="UTC")
        frame = predictions.with_row_index("_row").with_columns(_ts=stamp)
        bad = frame.filter(pl.col("_ts").is_null())
        if bad.height:
            raise ValueError(
                f"{bad.height} predicted_at value(s) are not ISO-8601 times, e.g. {bad['predicted_at'][0]!r}"
            )
        frame = frame.sort("_ts", "_row", maintain_order=True).with_columns(
            _bucket=pl.col("_ts").dt.truncate(cfg.window_every)
        )
        frame = frame.with_columns(
            _key=pl.col("_bucket").rank("dense").cast(pl.Int64) - 1,
            _start=pl.col("_bucket").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    sizes = frame.group_by("_key").agg(pl.len().alias("n"), pl.col("_start").first()).sort("_key")
    merged = _merge_small(sizes["n"].to_list(), cfg.min_window_rows)
    mapping = pl.DataFrame({"_key": sizes["_key"], "window": pl.Series(merged, dtype=pl.Int64)}).join(
        sizes.select("_key", "_start"), on="_key"
    )
    starts = mapping.group_by("window").agg(pl.col("_start").sort_by("_key").first().alias("window_start"))
    out = frame.join(mapping.select("_key", "window"), on="_key").join(starts, on="window")
    drop = [c for c in ("_row", "_key", "_start", "_ts", "_bucket") if c in out.columns]
    return out.sort("window", "_row").drop(drop)


def _merge_small(sizes: Sequence[int], min_rows: int) -> list[int]:
    """New window index per original window: a small window joins the one before it, and
    while the first is still small the next ones join it."""
    index: list[int] = []
    current, total = -1, 0
    for n in sizes:
        if current < 0 or (total >= min_rows and n >= min_rows):
            current, total = current + 1, 0
        index.append(current)
        total += n
    return index


# ── statistics ───────────────────────────────────────────────────────────────────────


def auc_interval(
    is_window: np.ndarray, scores: np.ndarray, *, samples: int, confidence: float, seed: int
) -> tuple[float, float, float]:
    """ROC AUC of ``scores`` for ``is_window`` with a percentile-bootstrap interval.

    Vectorised: every resample's AUC is the Mann-Whitney statistic from its ranks.
    """
    y = np.asarray(is_window, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if y.all() or not y.any():
        raise ValueError("an AUC needs rows of both groups")
    from scipy.stats import rankdata

    def auc(yy: np.ndarray, ss: np.ndarray) -> np.ndarray:
        ranks = rankdata(ss, axis=-1)
        n1 = yy.sum(axis=-1)
        n0 = yy.shape[-1] - n1
        u = (ranks * yy).sum(axis=-1) - n1 * (n1 + 1) / 2
        return np.divide(u, n1 * n0, out=np.full(u.shape, 0.5), where=(n1 * n0) > 0)

    value = float(auc(y, s))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(samples, len(y)))
    boot = auc(y[idx], s[idx])
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return value, float(low), float(high)


def two_sample_auc(
    reference: Sequence[str],
    window: Sequence[str],
    *,
    folds: int,
    seed: int,
    samples: int,
    confidence: float,
) -> dict[str, float]:
    """Classifier two-sample test: out-of-fold AUC of TF-IDF + logistic regression telling
    ``window`` texts from ``reference`` texts, with its bootstrap interval.

    Returns:
        ``{"auc", "auc_low", "auc_high"}``; 0.5 means the two sets are indistinguishable.

    Raises:
        ValueError: fewer than ``folds`` texts on a side.
    """
    if min(len(reference), len(window)) < folds:
        raise ValueError(
            f"two-sample test needs >= {folds} texts per side, got {len(reference)}/{len(window)}"
        )
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    texts = [*reference, *window]
    y = np.r_[np.zeros(len(reference), dtype=int), np.ones(len(window), dtype=int)]
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=1.0, solver="liblinear", class_weight="balanced"),
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, texts, y, cv=cv, method="predict_proba")[:, 1]
    auc, low, high = auc_interval(y == 1, scores, samples=samples, confidence=confidence, seed=seed)
    return {"auc": auc, "auc_low": low, "auc_high": high}


def tokens(texts: pl.Series) -> pl.Series:
    """Lower-cased word tokens (letters only, 2+ characters), exploded into one Series."""
    return texts.str.to_lowercase().str.extract_all(TOKEN_PATTERN).explode().drop_nulls()


def novel_terms(vocabulary: pl.Series, window: pl.Series, *, top: int) -> tuple[float, list[tuple[str, int]]]:
    """Share of ``window``'s tokens absent from ``vocabulary`` and the ``top`` new terms.

    Args:
        vocabulary: the reference's distinct tokens (``tokens(reference_texts).unique()``).
        window: the window's texts.

    Returns:
        (rate in [0, 1], [(term, count), ...] by count then term).
    """
    toks = tokens(window)
    if toks.is_empty():
        return 0.0, []
    unseen = toks.filter(~toks.is_in(vocabulary.implode()))
    counts = (
        unseen.value_counts(name="count").sort(["count", unseen.name], descending=[True, False]).head(top)
    )
    terms = [(str(t), int(c)) for t, c in counts.iter_rows()]
    return unseen.len() / toks.len(), terms


def label_shift(window: Sequence[str], reference: Sequence[str]) -> dict[str, float]:
    """Chi-square test (window vs reference label counts, 2 x K) and PSI of the labels.

    Returns:
        ``{"chi2", "chi2_p", "psi"}``; PSI = sum (q - p) ln(q / p) over labels, counts smoothed
        by ``PSI_EPSILON``.
    """
    if not window or not reference:
        raise ValueError("label shift needs labels on both sides")
    from scipy.stats import chi2_contingency

    labels = sorted(set(window) | set(reference))
    index = {label: i for i, label in enumerate(labels)}
    q = np.bincount([index[x] for x in window], minlength=len(labels)).astype(float)
    p = np.bincount([index[x] for x in reference], minlength=len(labels)).astype(float)
    if len(labels) == 1:
        return {"chi2": 0.0, "chi2_p": 1.0, "psi": 0.0}
    result = chi2_contingency(np.vstack([q, p]), correction=False)
    qs = (q + PSI_EPSILON) / (q.sum() + PSI_EPSILON * len(labels))
    ps = (p + PSI_EPSILON) / (p.sum() + PSI_EPSILON * len(labels))
    psi = float(np.sum((qs - ps) * np.log(qs / ps)))
    return {"chi2": float(result.statistic), "chi2_p": float(result.pvalue), "psi": psi}


def confidence_shift(window: np.ndarray, baseline: np.ndarray, *, low: float) -> dict[str, float]:
    """Mean confidence and low-confidence share (below ``low``) of window and baseline."""
    w, b = np.asarray(window, dtype=float), np.asarray(baseline, dtype=float)
    if not len(w) or not len(b):
        raise ValueError("confidence shift needs confidences on both sides")
    return {
        "mean_confidence": float(w.mean()),
        "baseline_mean_confidence": float(b.mean()),
        "low_confidence_share": float((w < low).mean()),
        "baseline_low_confidence_share": float((b < low).mean()),
    }


# ── checks and verdict ───────────────────────────────────────────────────────────────


def _level(value: float, warn: float, drift: float) -> str:
    """drift / warn / ok for a statistic where higher is worse (thresholds reached count)."""
    return "drift" if value >= drift else "warn" if value >= warn else "ok"


def _p_level(p: float, alpha_warn: float, alpha_drift: float) -> str:
    """drift / warn / ok for a p-value (strictly below alpha counts)."""
    return "drift" if p < alpha_drift else "warn" if p < alpha_warn else "ok"


def judge(stats: dict[str, Any], *, cfg: MonitorParams) -> list[dict[str, Any]]:
    """One record per check that could run: name, level, the value and its thresholds."""
    checks: list[dict[str, Any]] = []
    if "auc_low" in stats:
        checks.append(
            {
                "check": "input_drift",
                "value": stats["auc_low"],
                "warn": cfg.auc_warn,
                "drift": cfg.auc_drift,
                "level": _level(stats["auc_low"], cfg.auc_warn, cfg.auc_drift),
                "what": "two-sample classifier AUC, interval lower bound",
            }  # fmt: skip
        )
    if "novel_rate_excess" in stats:
        excess = stats["novel_rate_excess"]
        checks.append(
            {
                "check": "novel_terms",
                "value": excess,
                "warn": cfg.novel_rate_warn,
                "drift": cfg.novel_rate_drift,
                "level": _level(excess, cfg.novel_rate_warn, cfg.novel_rate_drift),
                "what": "unseen-token rate minus the test split's",
            }  # fmt: skip
        )
    if "chi2_p" in stats:
        by_p = _p_level(stats["chi2_p"], cfg.chi2_alpha_warn, cfg.chi2_alpha_drift)
        by_psi = _level(stats["psi"], cfg.psi_warn, cfg.psi_drift)
        level = LEVELS[min(LEVELS.index(by_p), LEVELS.index(by_psi))]
        checks.append(
            {
                "check": "prediction_drift",
                "value": stats["psi"],
                "warn": cfg.psi_warn,
                "drift": cfg.psi_drift,
                "level": level,
                "what": f"PSI of predicted labels (chi-square p = {stats['chi2_p']:.2g})",
            }  # fmt: skip
        )
    if "baseline_mean_confidence" in stats:
        drop = stats["baseline_mean_confidence"] - stats["mean_confidence"]
        rise = stats["low_confidence_share"] - stats["baseline_low_confidence_share"]
        by_drop = _level(drop, cfg.confidence_drop_warn, cfg.confidence_drop_drift)
        by_rise = _level(rise, cfg.low_share_rise_warn, cfg.low_share_rise_drift)
        level = LEVELS[max(LEVELS.index(by_drop), LEVELS.index(by_rise))]
        checks.append(
            {
                "check": "confidence_drift",
                "value": drop,
                "warn": cfg.confidence_drop_warn,
                "drift": cfg.confidence_drop_drift,
                "level": level,
                "what": f"mean-confidence fall (low-confidence share {rise:+.3f})",
            }  # fmt: skip
        )
    return checks


def verdict_of(checks: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """The worst level over ``checks`` and the names of the checks at warn or drift."""
    worst = max((LEVELS.index(c["level"]) for c in checks), default=0)
    return LEVELS[worst], [c["check"] for c in checks if c["level"] != "ok"]


def window_statistics(
    window: pl.DataFrame,
    *,
    reference_texts: Sequence[str],
    vocabulary: pl.Series,
    label_reference: Sequence[str],
    baseline: pl.DataFrame | None,
    baseline_novel_rate: float,
    cfg: MonitorParams,
) -> dict[str, Any]:
    """Every statistic of one window of predictions (text, label, confidence)."""
    texts = window["text"].to_list()
    stats: dict[str, Any] = {"rows": window.height}
    if len(texts) >= cfg.folds and len(reference_texts) >= cfg.folds:
        stats.update(
            two_sample_auc(
                reference_texts,
                texts,
                folds=cfg.folds,
                seed=cfg.seed,
                samples=cfg.bootstrap_samples,
                confidence=cfg.confidence,
            )  # fmt: skip
        )
    rate, terms = novel_terms(vocabulary, window["text"], top=cfg.top_new_terms)
    stats.update(
        novel_token_rate=rate,
        baseline_novel_token_rate=baseline_novel_rate,
        novel_rate_excess=rate - baseline_novel_rate,
        top_new_terms=terms,
    )
    if label_reference:
        stats.update(label_shift(window["label"].to_list(), list(label_reference)))
    if baseline is not None and baseline.height:
        stats.update(
            confidence_shift(
                window["confidence"].to_numpy(), baseline["confidence"].to_numpy(), low=cfg.low_confidence
            )
        )
    return stats


def monitor_windows(
    predictions: pl.DataFrame,
    reference: pl.DataFrame,
    *,
    baseline: pl.DataFrame | None,
    cfg: MonitorParams,
) -> dict[str, Any]:
    """The drift checks over every window of ``predictions``; the verdict is the last window's.

    Args:
        predictions: rows of predictions.parquet (text, label, confidence, predicted_at).
        reference: the curated train split (text, label).
        baseline: the model's predictions on the curated test split (text, label,
            confidence); None skips the confidence check, and prediction drift then compares
            with the train labels whatever ``label_reference`` says.

    Returns:
        ``{"verdict", "failed_checks", "windows": [{window, start, rows, stats, checks, verdict}, ...],
        "label_reference"}``.

    Raises:
        ValueError: no predictions or an empty reference.
    """
    if predictions.is_empty():
        raise ValueError("no predictions to monitor")
    if reference.is_empty():
        raise ValueError("the reference (curated train split) is empty")
    sample = reference.sample(n=min(cfg.reference_rows, reference.height), seed=cfg.seed, shuffle=True)
    vocabulary = tokens(reference["text"]).unique()
    baseline_rate = (
        novel_terms(vocabulary, baseline["text"], top=0)[0]
        if baseline is not None and baseline.height
        else 0.0
    )
    use_baseline = cfg.label_reference == "baseline" and baseline is not None and baseline.height > 0
    label_reference = (baseline if use_baseline else reference)["label"].drop_nulls().to_list()
    windowed = assign_windows(predictions, cfg=cfg)
    windows = []
    for (index,), window in windowed.group_by("window", maintain_order=True):
        stats = window_statistics(
            window,
            reference_texts=sample["text"].to_list(),
            vocabulary=vocabulary,
            label_reference=label_reference,
            baseline=baseline,
            baseline_novel_rate=baseline_rate,
            cfg=cfg,
        )
        checks = judge(stats, cfg=cfg)
        verdict, failed = verdict_of(checks)
        windows.append(
            {
                "window": int(index),
                "start": window["window_start"][0],
                "rows": window.height,
                "stats": stats,
                "checks": checks,
                "verdict": verdict,
                "failed_checks": failed,
            }  # fmt: skip
        )
    last = windows[-1]
    return {
        "verdict": last["verdict"],
        "failed_checks": last["failed_checks"],
        "label_reference": "baseline" if use_baseline else "train",
        "windows": windows,
    }


def flat_monitor_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """monitor.json: flat numbers of the last window, the verdict and counts over windows."""
    last = result["windows"][-1]
    stats = last["stats"]
    flat: dict[str, Any] = {
        "verdict": result["verdict"],
        "verdict_level": LEVELS.index(result["verdict"]),
        "failed_checks": ",".join(result["failed_checks"]),
        "windows": len(result["windows"]),
        "windows_warn": sum(w["verdict"] == "warn" for w in result["windows"]),
        "windows_drift": sum(w["verdict"] == "drift" for w in result["windows"]),
        "rows": sum(w["rows"] for w in result["windows"]),
        "last_window_rows": last["rows"],
        "label_reference": result["label_reference"],
    }
    for key in (
        "auc", "auc_low", "auc_high", "novel_token_rate", "baseline_novel_token_rate", "novel_rate_excess",
        "chi2", "chi2_p", "psi", "mean_confidence", "baseline_mean_confidence", "low_confidence_share",
        "baseline_low_confidence_share",
    ):  # fmt: skip
        if key in stats:
            flat[key] = round(float(stats[key]), 6)
    for check in last["checks"]:
        flat[f"{check['check']}_level"] = LEVELS.index(check["level"])
    return flat


def retrain_decision(
    verdict: str, failed_checks: Sequence[str], production_accuracy: float | None, *,
    min_production_accuracy: float | None,
) -> tuple[bool, list[str]]:  # fmt: skip
    """The monitor's policy: retrain on a ``drift`` verdict, or when reviewed production
    accuracy is below its threshold. Returns (retrain, the reasons, one per rule)."""
    reasons = []
    retrain = verdict == "drift"
    named = f" ({', '.join(failed_checks)})" if failed_checks else ""
    reasons.append(f"{'retrain' if retrain else 'no retrain'}: drift verdict {verdict}{named}")
    if production_accuracy is None or min_production_accuracy is None:
        reasons.append("production accuracy: not checked (no reviewed sample or no threshold)")
    else:
        low = production_accuracy < min_production_accuracy
        retrain |= low
        reasons.append(
            f"{'retrain' if low else 'no retrain'}: production accuracy {production_accuracy:.3f} "
            f"{'<' if low else '>='} {min_production_accuracy:.3f}"
        )
    return retrain, reasons
