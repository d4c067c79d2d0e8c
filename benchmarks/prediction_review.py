"""Benchmark the prediction-review sample and estimate (pure side; no server).

Usage: .venv/bin/python benchmarks/prediction_review.py [--predictions 10000] [--trials 200]
Writes benchmarks/results/prediction_review.json:
- time to sample N predictions and build their Label Studio tasks (PII masking included), and
  to estimate accuracy from the reviewed sample (bootstrap);
- the estimator's behaviour over seeded trials on a planted population whose low-confidence
  answers are right far less often: bias of the weighted and the plain (unweighted) estimate,
  and how often the 95% interval holds the true accuracy (coverage).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import polars as pl

from curation.production import estimate_accuracy, sample_predictions
from curation.review import build_prediction_tasks
from schemas.params import load_params

ROOT = Path(__file__).resolve().parents[1]
LABELS = [f"intent_{i}" for i in range(77)]
# planted accuracy by confidence band: the over-sampled low band is mostly wrong
ACCURACY_LOW, ACCURACY_HIGH = 0.35, 0.92


def population(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(len(LABELS)) * 2.0)
    labels = rng.choice(LABELS, n, p=weights)
    confidence = rng.beta(4.0, 2.0, n)
    correct = rng.uniform(size=n) < np.where(confidence < 0.5, ACCURACY_LOW, ACCURACY_HIGH)
    frame = pl.DataFrame(
        {
            "id": [f"p{seed}-{i}" for i in range(n)],
            "text": [f"query {i}: call me on +44 20 7946 {i % 10000:04d}" for i in range(n)],
            "label": labels,
            "confidence": confidence,
            "model_version": ["v1"] * n,
            "predicted_at": ["2026-12-02T10:00:00Z"] * n,
        }
    )
    return frame, correct


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--predictions", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    review = params.prediction_review

    def draw(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
        return sample_predictions(
            frame,
            size=review.sample_size,
            low_confidence=review.low_confidence,
            oversample=review.low_confidence_oversample,
            minimum=review.min_per_stratum,
            seed=seed,
        )

    frame, correct = population(args.predictions, seed=0)
    t0 = time.perf_counter()
    sample = draw(frame, review.seed)
    sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tasks, pii = build_prediction_tasks(
        sample, LABELS, cfg=params.labelstudio, model_version=review.model_version
    )
    tasks_s = time.perf_counter() - t0
    truth = frame.select("id", pl.Series("correct", correct))
    reviewed = sample.join(truth, on="id")
    t0 = time.perf_counter()
    estimate_accuracy(
        reviewed, bootstrap_samples=review.bootstrap_samples, confidence=review.confidence, seed=0
    )
    estimate_s = time.perf_counter() - t0

    rows = []
    for trial in range(args.trials):
        pop, ok = population(args.predictions, seed=1 + trial)
        got = draw(pop, trial).join(pop.select("id", pl.Series("correct", ok)), on="id")
        est = estimate_accuracy(
            got, bootstrap_samples=review.bootstrap_samples, confidence=review.confidence, seed=trial
        )
        rows.append(
            (float(ok.mean()), est.accuracy, est.accuracy_low, est.accuracy_high, est.accuracy_unweighted)
        )
    true, point, low, high, plain = (np.array(col) for col in zip(*rows, strict=True))
    result = {
        "predictions": args.predictions,
        "sample_size": int(sample.height),
        "strata_sampled": int(sample["stratum"].n_unique()),
        "low_band_share_population": float((frame["confidence"] < review.low_confidence).mean()),
        "low_band_share_sample": float((sample["band"] == "low").mean()),
        "sample_s": round(sample_s, 3),
        "build_tasks_s": round(tasks_s, 3),
        "pii_masked": pii,
        "estimate_s": round(estimate_s, 3),
        "trials": args.trials,
        "weighted_bias": round(float((point - true).mean()), 4),
        "weighted_abs_error_mean": round(float(np.abs(point - true).mean()), 4),
        "unweighted_bias": round(float((plain - true).mean()), 4),
        "interval_coverage": round(float(((low <= true) & (true <= high)).mean()), 3),
        "interval_width_mean": round(float((high - low).mean()), 4),
        "params": {
            "sample_size": review.sample_size,
            "low_confidence": review.low_confidence,
            "low_confidence_oversample": review.low_confidence_oversample,
            "bootstrap_samples": review.bootstrap_samples,
            "confidence": review.confidence,
        },
        "machine": f"{platform.machine()}, {platform.python_version()} (shared 2-core box, loaded)",
    }
    out = ROOT / "benchmarks" / "results" / "prediction_review.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
