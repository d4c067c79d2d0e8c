"""The classic baseline every adapter must be compared with: word + character TF-IDF into a
linear SVM (scikit-learn), trained on the adapter's own train rows, scored on the same test
rows. On Banking77 it reaches ~0.62 accuracy from 600 rows and ~0.91 from the full split, in
seconds on one core: an adapter that cannot beat it is not worth its cost.
"""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

from schemas.training_params import BaselineParams


def build_baseline(params: BaselineParams) -> Pipeline:
    """An unfitted pipeline: word and char_wb TF-IDF (sublinear tf) -> LinearSVC."""
    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(analyzer="word", ngram_range=params.word_ngrams, sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=params.char_ngrams, sublinear_tf=True)),
        ]
    )
    return Pipeline([("tfidf", features), ("svm", LinearSVC(C=params.svm_c))])


def fit_predict_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    test_texts: Sequence[str],
    *,
    params: BaselineParams,
) -> list[str]:
    """Fit on the train rows and predict a label for every test text.

    Raises:
        ValueError: no train rows, or fewer than two classes (a classifier needs two).
    """
    if len(train_texts) != len(train_labels):
        raise ValueError(f"{len(train_texts)} train texts but {len(train_labels)} labels")
    if len(set(train_labels)) < 2:
        raise ValueError("the baseline needs train rows of at least two labels")
    model = build_baseline(params).fit(list(train_texts), list(train_labels))
    return [str(p) for p in model.predict(list(test_texts))]
