"""Label noise: out-of-fold class probabilities -> cleanlab label issues -> flags.

Detect, don't delete: this step only flags rows (issue ``label_issue``, a score, the suggested
label). The policy (curation.policy) decides what a flag means for training.
The test split never reaches this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from schemas.params import NoiseParams
from schemas.records import FLAGS_SCHEMA

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]


def _vectorizer(view: str) -> TfidfVectorizer:
    if view == "tfidf_word":
        return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    if view == "tfidf_char":
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    raise ValueError(f"unknown feature view {view!r}")


def out_of_fold_probabilities(
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    n_classes: int,
    cfg: NoiseParams,
    embeddings: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Class probabilities for every row from a model that never saw that row (K folds).

    Each configured feature view trains its own logistic regression per fold; the views'
    probabilities are averaged (a small ensemble is better calibrated than any one view).

    Args:
        texts: train texts.
        labels: integer class ids, shape (n,).
        embeddings: precomputed sentence embeddings, required for the ``embedding`` view.
    """
    n = len(texts)
    counts = np.bincount(labels, minlength=n_classes)
    # StratifiedKFold needs every present class in at least `folds` rows; rarer classes are
    # still scored (they land in some folds' validation sets), only the split is not stratified
    folds = min(cfg.folds, max(2, int(counts[counts > 0].min()))) if n else cfg.folds
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    probs = np.zeros((n, n_classes))
    for view in cfg.features:
        view_probs = np.zeros((n, n_classes))
        for k, (fit_idx, val_idx) in enumerate(splitter.split(np.zeros(n), labels)):
            if view == "embedding":
                if embeddings is None:
                    raise ValueError("noise feature 'embedding' needs embeddings from the caller")
                a, b = embeddings[fit_idx], embeddings[val_idx]
            else:
                vec = _vectorizer(view)
                a = vec.fit_transform([texts[i] for i in fit_idx])
                b = vec.transform([texts[i] for i in val_idx])
            model = LogisticRegression(C=cfg.C, max_iter=300, random_state=cfg.seed)
            model.fit(a, labels[fit_idx])
            p = np.zeros((len(val_idx), n_classes))
            p[:, model.classes_] = model.predict_proba(b)
            view_probs[val_idx] = p
            if progress:
                progress(f"{view} fold {k + 1}/{folds}")
        probs += view_probs / len(cfg.features)
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

    Returns:
        (flags, probabilities): ``label_issue`` flags sorted by score (lowest label quality
        first) with the suggested label; and the out-of-fold probabilities (n x classes).
    """
    if not train.height:
        return pl.DataFrame(schema=FLAGS_SCHEMA), np.zeros((0, len(label_set)))
    index = {label: i for i, label in enumerate(label_set)}
    unknown = set(train["label"].unique()) - set(index)
    if unknown:
        raise ValueError(f"labels outside the label set reached noise detection: {sorted(unknown)}")
    y = np.array([index[v] for v in train["label"].to_list()], dtype=np.int64)
    probs = out_of_fold_probabilities(
        train["text"].to_list(), y, n_classes=len(label_set), cfg=cfg, embeddings=embeddings, progress=progress
    )
    present = np.unique(y)
    # cleanlab wants every column to be a class seen in the labels: restrict to present ones
    sub = probs[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    y_sub = np.searchsorted(present, y)
    if len(present) < 2:
        return pl.DataFrame(schema=FLAGS_SCHEMA), probs
    issues = find_label_issues(y_sub, sub, filter_by=cfg.filter_by)
    quality = get_label_quality_scores(y_sub, sub)
    self_conf = sub[np.arange(len(y_sub)), y_sub]
    issues |= self_conf < cfg.min_self_confidence
    suggested = present[sub.argmax(axis=1)]
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


__all__ = ["flag_label_issues", "out_of_fold_probabilities"]
