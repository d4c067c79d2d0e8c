"""Label noise: out-of-fold class probabilities -> cleanlab label issues -> flags.

Detect, don't delete: this step only flags rows (issue ``label_issue``, a score, the suggested
label). The policy (curation.policy) decides what a flag means for training.
The test split never reaches this module.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import polars as pl
from cleanlab.filter import find_label_issues
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import StratifiedKFold

from schemas.params import NoiseParams
from schemas.records import FLAGS_SCHEMA

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]


class NoiseCheck(NamedTuple):
    """Whether label-noise detection can run on a train set, for quality.json and the gate.

    ``skipped_reason`` is None when it runs, else a snake_case code:
    ``no_rows``; ``single_class`` (one label only: nothing to confuse it with);
    ``one_row_per_class`` (no class has two rows, so no row can be held out of its model);
    ``single_class_fold`` (a fold would train a classifier on one class only).
    """

    checked_rows: int
    skipped_reason: str | None


def _folds(labels: np.ndarray, counts: np.ndarray, cfg: NoiseParams) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded stratified (fit, held-out) index pairs; needs some class with two rows."""
    # StratifiedKFold needs some class with `folds` rows; a class with fewer is still split
    # as well as it can be (sklearn warns), so one rare class does not cost everyone folds
    folds = min(cfg.folds, max(2, int(counts.max())))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(np.zeros(len(labels)), labels))


def _skip_reason(labels: np.ndarray, n_classes: int, cfg: NoiseParams) -> str | None:
    """Why out-of-fold probabilities cannot be computed for these labels (None: they can)."""
    if len(labels) == 0:
        return "no_rows"
    counts = np.bincount(labels, minlength=n_classes)
    if np.count_nonzero(counts) < 2:
        return "single_class"  # sklearn: "the number of classes has to be greater than one"
    if counts.max() < 2:
        return "one_row_per_class"  # StratifiedKFold: n_splits > members of every class
    if any(len(np.unique(labels[fit])) < 2 for fit, _ in _folds(labels, counts, cfg)):
        return "single_class_fold"
    return None


def _label_ids(train: pl.DataFrame, label_set: Sequence[str]) -> np.ndarray:
    """Class id of every row (its label's position in ``label_set``)."""
    if len(set(label_set)) != len(label_set):
        raise ValueError("label_set has duplicate labels")
    index = {label: i for i, label in enumerate(label_set)}
    unknown = set(train["label"].unique()) - set(index)
    if unknown:
        raise ValueError(f"labels outside the label set reached noise detection: {sorted(unknown)}")
    return np.array([index[v] for v in train["label"].to_list()], dtype=np.int64)


def noise_check(train: pl.DataFrame, *, label_set: Sequence[str], cfg: NoiseParams) -> NoiseCheck:
    """Whether :func:`flag_label_issues` will score these rows, and why not.

    Cheap (label counts and the fold split, no model): call it beside ``flag_label_issues``
    to publish ``noise_checked`` / ``noise_skip_reason`` (see ``curation.report``).

    Raises:
        ValueError: a ``label`` column missing, duplicate labels in ``label_set`` or labels
            outside it.
    """
    if "label" not in train.columns:
        raise ValueError("noise detection needs columns ['label']")
    reason = _skip_reason(_label_ids(train, label_set), len(label_set), cfg)
    return NoiseCheck(checked_rows=0 if reason else train.height, skipped_reason=reason)


_SCORE_ROWS_PER_BLOCK = 1 << 17  # held-out rows scored per predict_proba call (bounds its copies)


def _view_matrix(view: str, texts: Sequence[str], embeddings: np.ndarray | None) -> Any:
    """Features of one view for all rows.

    Vectorizers are fitted on all texts at once, not per fold: they see no labels, so no label
    information leaks across folds, and it saves K-1 refits (most of the TF-IDF cost).
    """
    if view == "embedding":
        if embeddings is None:
            raise ValueError("noise feature 'embedding' needs embeddings from the caller")
        if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
            raise ValueError(f"embeddings shape {embeddings.shape} does not match {len(texts)} texts")
        return np.asarray(embeddings, dtype=np.float32)
    if view == "tfidf_word":
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
        return vec.fit_transform(texts)
    if view == "tfidf_char":
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
        return vec.fit_transform(texts)
    if view == "hashed":
        # stateless hashing: memory does not grow with the vocabulary (1M+ rows); 2**18 columns
        # keep the classifier's dense weights at classes x 2**18 (77 classes: 160 MB in float64)
        counts = HashingVectorizer(
            ngram_range=(1, 2), n_features=2**18, alternate_sign=False, norm=None
        ).transform(texts)
        return TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    raise ValueError(f"unknown feature view {view!r}")


def _classifier(cfg: NoiseParams) -> Any:
    if cfg.classifier == "sgd":
        # log loss gives probabilities; one pass over sparse rows per epoch, so it scales to
        # millions of rows where lbfgs logistic regression on 77 classes takes minutes at 10k
        # n_jobs fits the one-vs-rest classes in parallel threads; each class has its own
        # seed drawn up front, so the result does not depend on it
        return SGDClassifier(
            loss="log_loss",
            alpha=cfg.alpha,
            max_iter=cfg.max_iter,
            tol=1e-4,
            random_state=cfg.seed,
            n_jobs=cfg.n_jobs,
        )
    return LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=cfg.seed)


def fit_subsample(
    fit_idx: np.ndarray, labels: np.ndarray, *, max_rows: int | None, min_per_class: int, seed: int
) -> np.ndarray:
    """At most about ``max_rows`` of the rows ``fit_idx``, stratified by label (sorted indices).

    Each class keeps its share of ``max_rows``, but never fewer than ``min_per_class`` rows (or
    all it has): a rare class must stay learnable, or all its rows look mislabelled. A linear
    model's out-of-fold probabilities stop improving long before a million rows, while its
    fitting time grows with them; the held-out rows are all scored either way.
    """
    if max_rows is None or len(fit_idx) <= max_rows:
        return fit_idx
    fold_labels = labels[fit_idx]
    counts = np.bincount(fold_labels)
    quota = np.minimum(counts, np.maximum(np.ceil(counts * max_rows / len(fit_idx)), min_per_class))
    # a seeded shuffle, then the first `quota` rows of each class in that order
    shuffled = np.random.default_rng(seed).permutation(len(fit_idx))
    order = shuffled[np.argsort(fold_labels[shuffled], kind="stable")]
    sorted_labels = fold_labels[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return np.sort(fit_idx[order[rank < quota[sorted_labels]]])


def out_of_fold_probabilities(
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    n_classes: int,
    cfg: NoiseParams,
    embeddings: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Class probabilities for every row from a model that never saw that row's label (K folds).

    Each configured feature view trains its own linear classifier per fold (``cfg.classifier``:
    SGD with log loss, or lbfgs logistic regression); the views' probabilities are averaged.

    Args:
        texts: train texts.
        labels: integer class ids in ``[0, n_classes)``, shape (n,).
        n_classes: number of classes (columns of the result).
        cfg: the noise section of params.yaml.
        embeddings: precomputed sentence embeddings (n x d), required for the ``embedding`` view.
        progress: called with a short message after each fold.

    Returns:
        (n x n_classes) probabilities; rows sum to 1.

    Raises:
        ValueError: labels and texts differ in length, labels outside ``[0, n_classes)``, labels
            too few or too uniform for K folds (see :class:`NoiseCheck`), or the ``embedding``
            view without (matching) embeddings.
    """
    n = len(texts)
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels shape {labels.shape} does not match {n} texts")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be class ids in [0, {n_classes})")
    if n == 0:
        return np.zeros((0, n_classes))
    reason = _skip_reason(labels, n_classes, cfg)
    if reason is not None:
        raise ValueError(f"out-of-fold probabilities need more varied labels: {reason}")
    splits = _folds(labels, np.bincount(labels, minlength=n_classes), cfg)
    folds = len(splits)
    probs = np.zeros((n, n_classes))
    for view in cfg.features:
        features = _view_matrix(view, texts, embeddings)
        for k, (all_fit_idx, val_idx) in enumerate(splits):
            fit_idx = fit_subsample(
                all_fit_idx,
                labels,
                max_rows=cfg.max_fit_rows,
                min_per_class=cfg.min_fit_rows_per_class,
                seed=cfg.seed + k,
            )
            model = _classifier(cfg)
            model.fit(features[fit_idx], labels[fit_idx])
            # the held-out rows are scored a block at a time, added straight into `probs`
            # (rows are independent, so the values are those of one call and one sum over
            # views): no n x classes copies per view or per fold, which at 10M rows are GBs
            for lo in range(0, len(val_idx), _SCORE_ROWS_PER_BLOCK):
                rows = val_idx[lo : lo + _SCORE_ROWS_PER_BLOCK]
                block = np.zeros((len(rows), n_classes))
                block[:, model.classes_] = model.predict_proba(features[rows])
                probs[rows] += block / len(cfg.features)
            if progress:
                progress(f"{view} fold {k + 1}/{folds}")
        del features
    return probs


def flag_label_issues(
    train: pl.DataFrame,
    *,
    label_set: Sequence[str],
    cfg: NoiseParams,
    embeddings: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> tuple[pl.DataFrame, np.ndarray]:
    """Find rows whose given label is likely wrong.

    Args:
        train: rows with id, text, text_hash, label (all labels within ``label_set``).
        label_set: the class names; column order of the probabilities.
        cfg: the noise section of params.yaml (views, classifier, cleanlab filter).
        embeddings: sentence embeddings in row order (flows.embed.embed_texts), needed when
            ``cfg.features`` has ``embedding``.
        progress: called with a short message after each fold.

    Returns:
        (flags, probabilities): ``label_issue`` flags sorted by score (lowest label quality
        first) with the suggested label; and the out-of-fold probabilities (n x classes).
        A train set too small or too uniform to hold rows out (:func:`noise_check` says why)
        gets no flags and uniform probabilities: no model, no evidence against any label.

    Raises:
        ValueError: missing columns, labels outside ``label_set``, embeddings that do not match
            the rows.
    """
    missing = {"id", "text", "text_hash", "label"} - set(train.columns)
    if missing:
        raise ValueError(f"noise detection needs columns {sorted(missing)}")
    if embeddings is not None and embeddings.shape[0] != train.height:
        raise ValueError(f"embeddings have {embeddings.shape[0]} rows, train has {train.height}")
    y = _label_ids(train, label_set)
    reason = _skip_reason(y, len(label_set), cfg)
    if reason is not None:
        log.info("noise: skipped on %d rows (%s)", train.height, reason)
        uniform = np.full((train.height, len(label_set)), 1.0 / max(len(label_set), 1))
        return pl.DataFrame(schema=FLAGS_SCHEMA), uniform
    probs = out_of_fold_probabilities(
        train["text"].to_list(),
        y,
        n_classes=len(label_set),
        cfg=cfg,
        embeddings=embeddings,
        progress=progress,
    )
    counts = np.bincount(y, minlength=len(label_set))
    present = np.flatnonzero(counts)  # at least two classes: _skip_reason checked
    # A class with a handful of rows cannot be learnt, and its per-class threshold in
    # cleanlab's confident joint (the mean probability of its own rows) becomes tiny, so
    # every row looks like it might belong there and the estimated number of issues balloons.
    # Such classes stay out of the estimate; their rows are flagged when the model prefers
    # another label (a reviewer then confirms a rare label or fixes a wrong one).
    learnable = np.flatnonzero(counts >= cfg.min_class_rows)
    if len(learnable) < 2:  # tiny data: no estimate without them, so keep every class in it
        learnable = present
    rare_row = counts[y] < counts[learnable].min()
    rows = np.flatnonzero(~rare_row)
    # cleanlab wants every column to be a class seen in the labels: restrict to present ones.
    # At 10M rows each n x classes copy is GBs, so the given-label probability and the best
    # label come a block of rows at a time (each block laid out as the whole restricted copy
    # was, so its row sums, and every bit, are the same); the label quality is cleanlab's
    # default score (get_label_quality_scores, self_confidence): that same probability.
    y_sub = np.searchsorted(present, y)
    self_conf = np.empty(len(y))
    suggested = np.empty(len(y), dtype=np.int64)
    for lo in range(0, len(y), _SCORE_ROWS_PER_BLOCK):
        block = probs[lo : lo + _SCORE_ROWS_PER_BLOCK][:, present]
        block = block / np.clip(block.sum(axis=1, keepdims=True), 1e-12, None)
        self_conf[lo : lo + len(block)] = block[np.arange(len(block)), y_sub[lo : lo + len(block)]]
        suggested[lo : lo + len(block)] = present[block.argmax(axis=1)]
    quality = self_conf
    issues = rare_row & (suggested != y)
    if len(learnable) >= 2:
        if len(learnable) == probs.shape[1] and len(rows) == len(y):
            # every row and class: normalise `probs` itself, not a copy (the same values)
            main = probs
            main /= np.clip(main.sum(axis=1, keepdims=True), 1e-12, None)
        else:
            main = probs[np.ix_(rows, learnable)]
            main = main / np.clip(main.sum(axis=1, keepdims=True), 1e-12, None)
        # low_self_confidence: cleanlab estimates *how many* labels are wrong from the
        # confident joint, then flags that many rows with the lowest given-label probability;
        # on planted flips this beats the per-class "both" filter by ~0.14 F1
        # (benchmarks/noise_quality.py)
        issues[rows] = find_label_issues(np.searchsorted(learnable, y[rows]), main, filter_by=cfg.filter_by)
    issues |= self_conf < cfg.min_self_confidence
    flagged = np.flatnonzero(issues)
    flags = pl.DataFrame(
        {
            "id": train["id"].to_numpy()[flagged],
            "text_hash": train["text_hash"].to_numpy()[flagged],
            "text": train["text"].to_numpy()[flagged],
            "issue": "label_issue",
            # score: how likely the given label is wrong (1 - cleanlab's label quality)
            "score": 1.0 - quality[flagged],
            "given_label": train["label"].to_numpy()[flagged],
            "suggested_label": [label_set[i] for i in suggested[flagged]],
            "duplicate_of": None,
        },
        schema=FLAGS_SCHEMA,
    ).sort(["score", "id"], descending=[True, False])
    log.info("noise: %d of %d rows flagged as label issues", flags.height, train.height)
    return flags, probs


__all__ = ["NoiseCheck", "flag_label_issues", "noise_check", "out_of_fold_probabilities"]
