"""Benchmark the drift checks: false alarms on i.i.d. windows, detection on shifted ones; and
the time `curagate predict` takes per 10k predictions.

Usage: .venv/bin/python benchmarks/monitor.py [--iid 30] [--shifted 10] [--predict-rows 100]
Writes benchmarks/results/monitor.json and benchmarks/results/monitor_windows.png.

Set-up (seeded): 10 of Banking77's 77 intents are held out. The reference is the train split
without them; the test split (known intents) is halved: half A is the baseline (the test
split's predictions), half B the source of i.i.d. traffic windows. Shifted windows replace a
share of B's rows with rows of the held-out intents (new kinds of request) and/or inject
made-up product names into a share of rows. Each window has ``monitor.window_rows`` rows and
gets the checks and thresholds of params.yaml.

The predictor in the drift part is a stand-in: word + char TF-IDF (training/baseline.py's
features) into a log-loss linear model (SGD) fitted on the reference, its predicted-class
probability as the confidence, so hundreds of windows are affordable on 2 cores. The drift
statistics do not care which model produced the labels and confidences; the adapter's
confidences differ in level (the baseline comes from the same model, so only changes count).

The predict part labels ``--predict-rows`` test rows with an untrained LoRA (r=16 on all
linear layers, the demo's shape) on SmolLM2-135M through training/predict.py, and in the same
process the same rows with evaluate's decoding (training.decoding.generate_batched) as the
reference; time per 10k predictions is extrapolated from those rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curation.drift import monitor_windows
from schemas.params import load_params

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BANKING77_DIR", "/work/shared/data/banking77"))
HELD_OUT_INTENTS = 10
PRODUCTS = ("Zyntra", "Quorvex", "Flexiloan", "Paywisp", "Novacard", "Crypdex", "Glimmo", "Vaultly",
            "Trezzo", "Orbipay")  # fmt: skip
# scenario -> (share of rows from held-out intents, share of rows with a product name)
SCENARIOS = {
    "new_intents_10pct": (0.10, 0.0),
    "new_intents_20pct": (0.20, 0.0),
    "new_intents_30pct": (0.30, 0.0),
    "new_products_10pct": (0.0, 0.10),
    "new_products_20pct": (0.0, 0.20),
    "intents_20pct_products_10pct": (0.20, 0.10),
}


def inject_product(text: str, product: str) -> str:
    """Put a product name where a customer would: before card/account/app, else at the end."""
    for word in ("card", "account", "app", "transfer", "payment"):
        at = text.lower().find(word)
        if at >= 0:
            return f"{text[:at]}{product} {text[at:]}"
    return f"{text.rstrip('?.! ')} with {product}?"


def fit_stand_in(reference: pl.DataFrame) -> Any:
    """TF-IDF (training/baseline.py's word + char features) -> log-loss SGD (a logistic
    regression that fits 77 classes in seconds)."""
    from sklearn.linear_model import SGDClassifier

    from schemas.training_params import BaselineParams
    from training.baseline import build_baseline

    model = build_baseline(BaselineParams()).set_params(
        svm=SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=30, tol=None, random_state=0)
    )
    return model.fit(reference["text"].to_list(), reference["label"].to_list())


def predict_stand_in(model: Any, frame: pl.DataFrame) -> pl.DataFrame:
    proba = model.predict_proba(frame["text"].to_list())
    best = proba.argmax(axis=1)
    return frame.with_columns(
        label=pl.Series(model.classes_[best].astype(str)),
        confidence=pl.Series(proba[np.arange(len(best)), best]),
        predicted_at=pl.lit("2026-01-01T00:00:00Z"),
    )


def make_window(
    rng: np.random.Generator, known: pl.DataFrame, novel: pl.DataFrame, n: int, novel_share: float,
    product_share: float,
) -> pl.DataFrame:  # fmt: skip
    k = round(n * novel_share)
    rows = known[rng.choice(known.height, n - k, replace=False).tolist()]
    if k:
        rows = pl.concat([rows, novel[rng.choice(novel.height, k, replace=False).tolist()]])
    rows = rows[rng.permutation(rows.height).tolist()]
    if product_share:
        texts = rows["text"].to_list()
        for i in rng.choice(len(texts), round(n * product_share), replace=False):
            texts[i] = inject_product(texts[i], PRODUCTS[int(rng.integers(len(PRODUCTS)))])
        rows = rows.with_columns(text=pl.Series(texts))
    return rows.select("text")


def drift_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_params(ROOT / "params.yaml").monitor
    rng = np.random.default_rng(args.seed)
    train = pl.read_csv(DATA / "train.csv").rename({"category": "label"})
    test = pl.read_csv(DATA / "test.csv").rename({"category": "label"})
    intents = sorted(train["label"].unique().to_list())
    held = sorted(rng.choice(intents, HELD_OUT_INTENTS, replace=False).tolist())
    reference = train.filter(~pl.col("label").is_in(held))
    novel = pl.concat([train, test]).filter(pl.col("label").is_in(held))
    known = test.filter(~pl.col("label").is_in(held)).sample(fraction=1.0, seed=args.seed, shuffle=True)
    half = known.height // 2
    baseline_rows, traffic_rows = known.head(half), known.tail(known.height - half)
    started = time.perf_counter()
    model = fit_stand_in(reference)
    fit_seconds = time.perf_counter() - started
    baseline = predict_stand_in(model, baseline_rows)
    accuracy = float((baseline["label"] == baseline_rows["label"]).mean())
    n = cfg.window_rows
    plan = [("iid", 0.0, 0.0)] * args.iid + [
        (name, a, b) for name, (a, b) in SCENARIOS.items() for _ in range(args.shifted)
    ]
    outcomes: dict[str, list[dict[str, Any]]] = {}
    seconds = []
    for name, novel_share, product_share in plan:
        window = make_window(rng, traffic_rows, novel, n, novel_share, product_share)
        predicted = predict_stand_in(model, window)
        t = time.perf_counter()
        result = monitor_windows(predicted, reference, baseline=baseline, cfg=cfg)
        seconds.append(time.perf_counter() - t)
        w = result["windows"][-1]
        outcomes.setdefault(name, []).append(
            {
                "verdict": w["verdict"],
                "levels": {c["check"]: c["level"] for c in w["checks"]},
                "stats": {k: v for k, v in w["stats"].items() if isinstance(v, float)},
            }  # fmt: skip
        )
    summary = {}
    for name, runs in outcomes.items():
        checks = sorted({c for r in runs for c in r["levels"]})
        summary[name] = {
            "windows": len(runs),
            "drift_rate": round(float(np.mean([r["verdict"] == "drift" for r in runs])), 4),
            "warn_or_drift_rate": round(float(np.mean([r["verdict"] != "ok" for r in runs])), 4),
            "check_drift_rate": {
                c: round(float(np.mean([r["levels"].get(c) == "drift" for r in runs])), 4) for c in checks
            },
            "check_warn_or_drift_rate": {
                c: round(float(np.mean([r["levels"].get(c, "ok") != "ok" for r in runs])), 4) for c in checks
            },
            "mean_stats": {
                k: round(float(np.mean([r["stats"][k] for r in runs])), 4) for k in runs[0]["stats"]
            },
        }
    stream_figure(model, traffic_rows, novel, reference, baseline, cfg, rng, args.figure)
    return {
        "held_out_intents": held,
        "reference_rows": reference.height,
        "baseline_rows": baseline.height,
        "traffic_pool_rows": traffic_rows.height,
        "window_rows": n,
        "stand_in_model": "word+char TF-IDF -> log-loss SGDClassifier (alpha 1e-5, 30 epochs), "
        "fitted on the reference",
        "stand_in_fit_seconds": round(fit_seconds, 2),
        "stand_in_baseline_accuracy": round(accuracy, 4),
        "seconds_per_window": round(float(np.mean(seconds)), 3),
        "false_alarm_rate_drift": summary["iid"]["drift_rate"],
        "false_alarm_rate_warn_or_drift": summary["iid"]["warn_or_drift_rate"],
        "detection_rate_drift": {k: v["drift_rate"] for k, v in summary.items() if k != "iid"},
        "scenarios": summary,
    }


def stream_figure(model, traffic, novel, reference, baseline, cfg, rng, path: Path) -> None:
    """The monitor page's plots for a stream: 6 i.i.d. windows, then 6 with 20% new intents
    and 10% product names (the picture README shows)."""
    from flows.monitoring import window_figure

    windows = [make_window(rng, traffic, novel, cfg.window_rows, 0.0, 0.0) for _ in range(6)]
    windows += [make_window(rng, traffic, novel, cfg.window_rows, 0.2, 0.1) for _ in range(6)]
    stream = predict_stand_in(model, pl.concat(windows))
    result = monitor_windows(stream, reference, baseline=baseline, cfg=cfg)
    result["thresholds"] = dataclasses.asdict(cfg)
    fig = window_figure(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")


def predict_benchmark(rows: int) -> dict[str, Any]:
    """Seconds per prediction: training/predict.py vs evaluate's decoding, same rows, one process."""
    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model

    from training.decoding import generate_batched
    from training.model import load_base_model
    from training.predict import load_predictor, predict_texts
    from training.prompts import build_prompt

    labels = json.loads((DATA / "categories.json").read_text())
    texts = pl.read_csv(DATA / "test.csv")["text"].sample(rows, seed=0).to_list()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        loaded = load_base_model("smollm2", device="cpu", for_training=False)
        lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(loaded.model, lora).save_pretrained(model_dir / "adapter")
        (model_dir / "training.json").write_text(json.dumps(
            {"task": "classification", "prompt_form": "short", "label_set": labels,
             "params": {"base_model": "smollm2"}}))  # fmt: skip
        predictor = load_predictor(model_dir, device="cpu", threads=1)
        prompts = [build_prompt(predictor.tokenizer, x, task="classification", form="short", label_set=labels)
                   for x in texts]  # fmt: skip
        runs: dict[str, list[tuple[float, float]]] = {"evaluate": [], "predict": []}
        for name in ("evaluate", "predict", "evaluate", "predict"):  # alternated: the box's load drifts
            wall, cpu = time.perf_counter(), time.process_time()
            if name == "predict":
                predict_texts(predictor, texts, batch_size=16)
            else:
                generate_batched(predictor.model, predictor.tokenizer, prompts, batch_size=16, device="cpu",
                                 max_new_tokens=predictor.trie.depth, trie=predictor.trie)  # fmt: skip
            runs[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    cpu = {k: float(np.mean([c for _, c in v])) for k, v in runs.items()}
    wall = {k: float(np.mean([w for w, _ in v])) for k, v in runs.items()}
    return {
        "rows": rows,
        "adapter": "untrained LoRA r=16 all-linear (random B), SmolLM2-135M, fp32, 1 thread, batch 16",
        "predict_cpu_seconds": round(cpu["predict"], 2),
        "evaluate_decoding_cpu_seconds": round(cpu["evaluate"], 2),
        "predict_over_evaluate_cpu": round(cpu["predict"] / cpu["evaluate"], 3),
        "predict_wall_seconds": round(wall["predict"], 2),
        "cpu_seconds_per_10k_predictions_extrapolated": round(cpu["predict"] / rows * 10_000),
        "wall_seconds_per_10k_predictions_extrapolated_loaded_box": round(wall["predict"] / rows * 10_000),
        "note": "mean of two alternated runs each; CPU time of the one torch thread; wall on a shared box",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iid", type=int, default=30, help="i.i.d. windows")
    parser.add_argument("--shifted", type=int, default=10, help="windows per shift scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predict-rows", type=int, default=0, help="rows for the predict timing; 0 = skip")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/monitor.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "benchmarks/results/monitor_windows.png")
    args = parser.parse_args()
    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "note": "shared 2-core box",
    }
    if args.iid or args.shifted:
        report["drift"] = drift_benchmark(args)
        print(json.dumps({k: v for k, v in report["drift"].items() if k != "scenarios"}, indent=1))
    if args.predict_rows:
        report["predict"] = predict_benchmark(args.predict_rows)
        print(json.dumps(report["predict"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
