"""Benchmark the instruction/chat checks on seeded Banking77 instruction data with planted defects.

Usage:
    .venv/bin/python benchmarks/instruction_quality.py            # 10,003 rows, then a 50k-row speed run
    .venv/bin/python benchmarks/instruction_quality.py --quick    # 2,000 rows, no speed run

Every Banking77 train query (CC-BY-4.0, Casanueva et al. 2020) becomes a prompt with a templated
support answer (curation/instruction_corrupt.py); a seeded 100 rows per check get a planted
defect of that kind and 100 rows per tricky kind become clean rows built to look suspicious.
Per check: recall on its planted rows, precision = found / (found + clean rows it fails),
the rows planted with *another* defect that also show this one (reported, not counted as
false positives: a "<br>" planted as an empty response is also markup), and the precision of
the reason rows are removed or held under (the first failing check, remove before flag).
Speed: rows/s of language detection, the detectors and the policy, in this process.
Writes benchmarks/results/instruction_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import polars as pl

from curation.instruction import detect_instruction_issues, language_inputs
from curation.instruction_corrupt import TRICKY_KINDS, check_scores, instruction_dataset
from curation.policy import apply_instruction_policy
from flows.language import detect_languages
from schemas.params import load_params

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "instruction_quality.json"
DATA = Path(os.environ.get("BANKING77_DIR", "/work/shared/data/banking77"))
SEED = 7
PER_KIND = 100  # planted defects per check, and tricky clean rows per tricky kind
SPEED_COPIES = 5  # the speed run: the dataset this many times over (new ids)


def _as_train(truth: pl.DataFrame) -> pl.DataFrame:
    """The frame the instruction step sees after ingest and validation."""
    return truth.select("id", pl.col("prompt").alias("text"), "response").with_columns(
        split=pl.lit("train"),
        line=pl.int_range(1, pl.len() + 1),
        label=pl.lit(None, pl.String),
        text_hash=pl.lit("h"),
    )


def _timed(frame: pl.DataFrame, cfg) -> tuple[pl.DataFrame, object, dict[str, float]]:
    t0 = time.perf_counter()
    languages = detect_languages(language_inputs(frame, cfg=cfg))
    t1 = time.perf_counter()
    detected = detect_instruction_issues(frame, cfg=cfg, languages=languages)
    t2 = time.perf_counter()
    outcome = apply_instruction_policy(detected, cfg=cfg)
    t3 = time.perf_counter()
    seconds = {"language": t1 - t0, "detect": t2 - t1, "policy": t3 - t2, "total": t3 - t0}
    return detected, outcome, {k: round(v, 3) for k, v in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 rows, no speed run")
    args = parser.parse_args()
    cfg = load_params(ROOT / "params.yaml").instruction
    queries = pl.read_csv(DATA / "train.csv").rename({"category": "label"})
    per_kind = PER_KIND
    if args.quick:
        queries, per_kind = queries.head(2000), 20
    truth = instruction_dataset(queries, seed=SEED, defects_per_kind=per_kind, tricky_per_kind=per_kind)
    frame = _as_train(truth)
    detect_languages(pl.Series(["warm up the model"]))  # model load is not per-row cost
    detected, outcome, seconds = _timed(frame, cfg)
    scores = check_scores(detected, truth, primary=outcome.primary)
    joined = detected.join(truth.select("id", "planted", "tricky"), on="id")
    tricky = joined.filter(pl.col("tricky").is_not_null())
    tricky_fp = {
        kind: tricky.filter((pl.col("tricky") == kind) & (pl.col("instruction_issues").list.len() > 0)).height
        for kind in TRICKY_KINDS
    }
    plain = joined.filter(pl.col("planted").is_null() & pl.col("tricky").is_null())
    plain_fp = plain.filter(pl.col("instruction_issues").list.len() > 0).height
    result: dict[str, object] = {
        "rows": frame.height,
        "planted_per_check": per_kind,
        "tricky_per_kind": per_kind,
        "seed": SEED,
        "checks": scores.to_dicts(),
        "tricky_rows_with_any_issue": tricky_fp,
        "tricky_rows": tricky.height,
        "plain_clean_rows": plain.height,
        "plain_clean_rows_with_any_issue": plain_fp,
        "removed_rows": outcome.removed.filter(pl.col("reason") != "pending_review").height,
        "held_rows": outcome.flags.height,
        "seconds": seconds,
        "rows_per_second": round(frame.height / seconds["total"], 1),
    }
    if not args.quick:
        big = pl.concat(
            [frame.with_columns(id=pl.format("c{}-{}", pl.lit(c), "id")) for c in range(SPEED_COPIES)]
        ).with_columns(line=pl.int_range(1, pl.len() + 1))
        _, _, big_seconds = _timed(big, cfg)
        result["speed_run"] = {
            "rows": big.height,
            "seconds": big_seconds,
            "rows_per_second": round(big.height / big_seconds["total"], 1),
        }
    result["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs: timings are noisy)"
    )
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with pl.Config(tbl_rows=20, tbl_cols=12, tbl_width_chars=200):
        print(scores)
    print(json.dumps({k: v for k, v in result.items() if k != "checks"}, indent=2))


if __name__ == "__main__":
    main()
