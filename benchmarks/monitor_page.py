"""The README's screenshot of monitor.html: `curagate monitor` on traffic with a drift window.

Traffic: benchmarks/demo_traffic.py's recipe at ``--rows`` rows (Banking77 train queries over
two days; on day two ``--product-share`` of them name a product the training data never
saw). Predictions and the baseline (the curated test split) come from benchmarks/monitor.py's
stand-in predictor (TF-IDF into a log-loss linear model fitted on the curated train split),
not the adapter: an adapter predicts ~5 rows a CPU-second here, and the page shows the same
statistics whichever model answered. Then the real CLI writes the page and headless Chromium
photographs it.

Needs a curated directory (``curagate demo-data`` + ``curagate curate``, or ``dvc repro``).

    python benchmarks/monitor_page.py [--curated data/curated] [--rows 3000]
Writes benchmarks/results/monitor_page.png (and the run under .cache/monitor_page/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.demo_traffic import build  # noqa: E402
from benchmarks.monitor import fit_stand_in  # noqa: E402
from schemas.predictions import PREDICTIONS_SCHEMA  # noqa: E402

WINDOW_SIZE = "1000,1240"  # the page at a laptop's width, tall enough for the plots and tables


def stand_in_predictions(model: object, frame: pl.DataFrame, *, stamps: list[str]) -> pl.DataFrame:
    proba = model.predict_proba(frame["text"].to_list())  # type: ignore[attr-defined]
    best = proba.argmax(axis=1)
    return pl.DataFrame(
        {
            "id": frame["id"],
            "text": frame["text"],
            "label": model.classes_[best].astype(str).tolist(),  # type: ignore[attr-defined]
            "confidence": proba[np.arange(len(best)), best],
            "model_version": ["stand-in-tfidf"] * frame.height,
            "predicted_at": stamps,
        },
        schema=PREDICTIONS_SCHEMA,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--curated", type=Path, default=ROOT / "data" / "curated")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--product-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "monitor_page")
    parser.add_argument("--png", type=Path, default=ROOT / "benchmarks" / "results" / "monitor_page.png")
    args = parser.parse_args()

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    train = pl.read_parquet(args.curated / "train.parquet")
    test = pl.read_parquet(args.curated / "test.parquet")
    model = fit_stand_in(train)
    records = build(
        source=ROOT / "data" / "raw" / "train.csv", rows=args.rows, product_share=args.product_share,
        seed=args.seed,
    )  # fmt: skip
    traffic = pl.DataFrame(records)
    stand_in_predictions(model, traffic, stamps=traffic["received_at"].to_list()).write_parquet(
        work / "predictions.parquet"
    )
    sample = test.sample(min(300, test.height), seed=0)
    stand_in_predictions(model, sample, stamps=["2026-11-29T00:00:00Z"] * sample.height).write_parquet(
        work / "baseline_predictions.parquet"
    )
    out = work / "monitor"

    def rel(path: Path) -> str:  # the page names its files: relative to the checkout, as a user runs it
        return os.path.relpath(path.resolve(), ROOT)

    cmd = [sys.executable, "-m", "flows.cli", "monitor", "--reference", rel(args.curated),
           "--predictions", rel(work / "predictions.parquet"),
           "--baseline-predictions", rel(work / "baseline_predictions.parquet"),
           "--out", rel(out), "--params", "params.yaml"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    flat = json.loads((out / "monitor.json").read_text())
    print(json.dumps({k: flat[k] for k in ("verdict", "failed_checks", "windows", "windows_drift")}))
    args.png.parent.mkdir(parents=True, exist_ok=True)
    page = (out / "monitor.html").resolve().as_uri()
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={WINDOW_SIZE}", f"--screenshot={args.png}", page],
        check=True, capture_output=True,
    )  # fmt: skip
    print(f"screenshot -> {args.png}")


if __name__ == "__main__":
    main()
