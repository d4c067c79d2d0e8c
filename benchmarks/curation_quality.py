"""Curation quality on a seeded corruption of Banking77: the issue's targets, measured.

Corrupts the bundled Banking77 train split (~4% label flips, ~5% exact/lightly edited copies,
~1% test rows copied into train, ~0.4% malformed lines), runs the whole `curagate curate`
pipeline on it and writes benchmarks/results/curation_quality.json.

    .venv/bin/python benchmarks/curation_quality.py [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

from curation.corrupt import corrupt
from flows.pipeline import run_curation, write_run
from schemas.params import params_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _prf(found: set[str], truth: set[str]) -> dict[str, float]:
    tp = len(found & truth)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "found": len(found),
        "truth": len(truth),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "curation_quality.json")
    parser.add_argument(
        "--engine", choices=("datasketch", "fast"), help="dedup.engine (default: params.yaml)"
    )
    args = parser.parse_args()
    labels = json.loads((ROOT / "data/raw/categories.json").read_text())
    train = pl.read_csv(ROOT / "data/raw/train.csv").rename({"category": "label"})
    test = pl.read_csv(ROOT / "data/raw/test.csv").rename({"category": "label"})
    lines, test_lines, truth = corrupt(train, test, labels=labels, seed=args.seed)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["columns"]["label"] = "label"
    raw["data"]["labels"] = str(ROOT / "data/raw/categories.json")
    if args.engine:
        raw["dedup"]["engine"] = args.engine
    params = params_from_dict(raw, base_dir=ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        (tmp_path / "test.jsonl").write_bytes(b"\n".join(test_lines) + b"\n")
        start = time.perf_counter()
        run = run_curation(
            tmp_path / "train.jsonl", tmp_path / "test.jsonl", params=params, show_progress=True
        )
        write_run(run, tmp_path / "out")
        seconds = time.perf_counter() - start
    quarantine = run.frame("quarantine")
    quarantined = dict(zip(quarantine["line"].to_list(), quarantine["reason"].to_list(), strict=True))
    # conflicting-label duplicates are held for review, not removed: dedup caught them all the same
    held = run.frame("held")
    conflicts = held.filter(pl.col("issue") == "conflicting_duplicate").select(
        "id", pl.lit("dedup").alias("stage")
    )
    removed = pl.concat([run.frame("removed").select("id", "stage"), conflicts])
    removed_ids = set(removed["id"])
    copy_pairs = truth.copies
    involved = set(copy_pairs) | set(copy_pairs.values()) | set(truth.leaks)
    clean = [i for i in run.frame("validated_train")["id"].to_list() if i not in involved]
    # a pair is caught when dedup/decontam removed exactly one of the two (the other kept or
    # held for a label review, which is not a duplicate decision)
    dup_removed = set(removed.filter(pl.col("stage").is_in(["dedup", "decontam"]))["id"])
    dedup_removed = set(removed.filter(pl.col("stage") == "dedup")["id"])
    leak_removed = set(removed.filter(pl.col("stage") == "decontam")["id"])
    by_kind: dict[str, list[int]] = {}
    for copy, source in copy_pairs.items():
        caught = (copy in dup_removed) != (source in dup_removed)
        counts = by_kind.setdefault(truth.copy_edits[copy], [0, 0])
        counts[0] += caught
        counts[1] += 1
    flagged = set(run.frame("flags").filter(pl.col("issue") == "label_issue")["id"])
    flipped = set(truth.flipped)
    result = {
        "seed": args.seed,
        "train_lines": len(lines),
        "seconds_end_to_end": round(seconds, 1),
        "malformed": {
            "injected": len(truth.malformed),
            "quarantined_with_matching_reason": sum(
                quarantined.get(k) == v for k, v in truth.malformed.items()
            ),
            "clean_rows_quarantined": sum(1 for line in quarantined if line not in truth.malformed),
        },
        "copies": {
            "injected": len(copy_pairs),
            "caught_one_of_pair_removed": sum(c for c, _ in by_kind.values()),
            "recall": round(sum(c for c, _ in by_kind.values()) / len(copy_pairs), 4),
            "recall_without_word_replace": round(
                sum(c for k, (c, _) in by_kind.items() if k != "word_replace")
                / sum(n for k, (_, n) in by_kind.items() if k != "word_replace"),
                4,
            ),
            "by_edit": {k: f"{c}/{n}" for k, (c, n) in sorted(by_kind.items())},
            "other_rows": len(clean),
            "other_rows_removed_by_dedup": sum(1 for i in clean if i in dedup_removed),
            "other_rows_removed_by_dedup_rate": round(
                sum(1 for i in clean if i in dedup_removed) / len(clean), 4
            ),
            # natural near copies of test rows in Banking77's train split: real leaks, not errors
            "other_rows_removed_as_test_leak": sum(1 for i in clean if i in leak_removed),
        },
        "test_leaks": {
            "injected": len(truth.leaks),
            "removed": sum(1 for i in truth.leaks if i in removed_ids),
            "recall": round(sum(1 for i in truth.leaks if i in removed_ids) / len(truth.leaks), 4),
        },
        "label_flips": _prf(flagged, flipped),
        "noise_features": list(params.noise.features),
        "dedup_engine": params.dedup.engine,
        "accounting_ok": run.metrics["accounting_ok"],
        "quality": run.metrics,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "quality"}, indent=2))


if __name__ == "__main__":
    main()
