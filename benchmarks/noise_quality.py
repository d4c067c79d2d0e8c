"""Benchmark label-noise detection on seeded, corrupted Banking77: precision, recall, F1, time.

Usage: .venv/bin/python benchmarks/noise_quality.py [--seed 7] [--recipes baseline default ...]
Writes benchmarks/results/noise_quality.json. The train file is corrupted with
curation.corrupt (4% label flips, plus copies and leaks that carry their *gold* label); only
well-formed rows reach the noise step, as in the pipeline. A flagged row is a true positive
when its id is in truth.flipped. Seconds cover the whole noise step (vectorise, K folds,
cleanlab); the ``*_embedding`` recipes also include encoding the texts with MiniLM.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import polars as pl

from curation.corrupt import corrupt
from curation.ingest import text_hash
from curation.noise import flag_label_issues
from schemas.params import NoiseParams, load_params

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BANKING77_DIR", "/work/shared/data/banking77"))


def recipes(default: NoiseParams) -> dict[str, NoiseParams]:
    """Named configurations: the previous default (baseline), params.yaml's, and variants."""
    return {
        # the recipe before this benchmark: lbfgs LR on word + char TF-IDF, cleanlab "both"
        "baseline": NoiseParams(
            features=("tfidf_word", "tfidf_char"),
            classifier="logreg",
            C=10.0,
            max_iter=300,
            filter_by="both",
        ),
        "default": default,
        "hashed": dataclasses.replace(default, features=("hashed",)),
        "word_char": dataclasses.replace(default, features=("tfidf_word", "tfidf_char")),
        "word_embedding": dataclasses.replace(default, features=("tfidf_word", "embedding")),
        "embedding": dataclasses.replace(default, features=("embedding",)),
    }


def corrupted_train(seed: int) -> tuple[pl.DataFrame, list[str], set[str]]:
    """Well-formed rows of the corrupted train file, the label set, and the flipped ids."""
    labels = json.loads((DATA / "categories.json").read_text())
    train = pl.read_csv(DATA / "train.csv").rename({"category": "label"})
    test = pl.read_csv(DATA / "test.csv").rename({"category": "label"})
    lines, _, truth = corrupt(train, test, labels=labels, seed=seed)
    malformed = set(truth.malformed)
    rows = [json.loads(line) for no, line in enumerate(lines, start=1) if no not in malformed]
    frame = pl.DataFrame(rows).select("id", "text", "label")
    frame = frame.with_columns(text_hash=text_hash(pl.col("text")))
    return frame, labels, set(truth.flipped)


def score(flagged: set[str], flipped: set[str]) -> dict[str, float]:
    tp = len(flagged & flipped)
    precision = tp / len(flagged) if flagged else 0.0
    recall = tp / len(flipped) if flipped else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "flagged": len(flagged),
        "true_positives": tp,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--recipes", nargs="+", default=["baseline", "default", "hashed"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/noise_quality.json")
    args = parser.parse_args()

    default = load_params(ROOT / "params.yaml").noise
    known = recipes(default)
    unknown = sorted(set(args.recipes) - set(known))
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {sorted(known)}")
    train, labels, flipped = corrupted_train(args.seed)
    print(f"{train.height} rows, {len(flipped)} flipped labels")

    results = {}
    embeddings, embed_seconds = None, 0.0
    for name in args.recipes:
        cfg = known[name]
        if "embedding" in cfg.features and embeddings is None:
            from flows.embed import embed_texts

            start = time.perf_counter()
            embeddings = embed_texts(train["text"].to_list(), batch_size=128)
            embed_seconds = time.perf_counter() - start
            print(f"embedded {train.height} texts in {embed_seconds:.1f}s")
        start = time.perf_counter()
        flags, _ = flag_label_issues(
            train,
            label_set=labels,
            cfg=cfg,
            embeddings=embeddings if "embedding" in cfg.features else None,
        )
        # an embedding recipe pays for encoding once; it is counted in its seconds
        seconds = time.perf_counter() - start + ("embedding" in cfg.features) * embed_seconds
        results[name] = {
            "params": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "enabled"},
            **score(set(flags["id"].to_list()), flipped),
            "seconds": round(seconds, 1),
        }
        r = results[name]
        print(f"{name:15s} P={r['precision']:.3f} R={r['recall']:.3f} F1={r['f1']:.3f} {seconds:.1f}s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "dataset": f"banking77 train, curation.corrupt(seed={args.seed})",
        "rows": train.height,
        "flipped": len(flipped),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "note": "seconds are wall time on a shared machine; load from other jobs inflates them",
        "results": results,
    }
    if args.out.exists():  # keep recipes measured in earlier runs
        previous = json.loads(args.out.read_text()).get("results", {})
        report["results"] = {**previous, **results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
