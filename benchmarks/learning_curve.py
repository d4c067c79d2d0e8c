"""Learning curve on Banking77 with the demo's dirty input: raw (validated only) vs curated rows,
and the clean bundled split as the ceiling, at several train sizes.

Every size is scored with the TF-IDF + linear SVM baseline (training/baseline.py: seconds per
point) on the same seeded test sample evaluate uses; adapter points come from `curagate
compare` result files (full LoRA training at every size does not fit a 2-core CPU today), passed
with --adapter. Writes benchmarks/results/learning_curve.json and learning_curve.png.

    PYTHONPATH=. .venv/bin/python benchmarks/learning_curve.py \
        [--adapter benchmarks/results/compare_n200.json ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from flows.compare import leak_map, make_demo_data
from flows.pipeline import run_curation
from schemas.params import params_from_dict
from training.baseline import fit_predict_baseline
from training.compare import group_comparison
from training.evaluate import bootstrap_interval, side_statistics
from training.train import select_examples

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SIZES = (250, 500, 1000, 2000, 4000, 8000, None)  # None = every row of the arm


def _accuracy(gold: list[str], pred: list[str], label_set: list[str], params: Any) -> dict[str, Any]:
    stats = side_statistics(gold, pred, label_set)
    value = float(stats["accuracy"](np.arange(len(gold))))
    low, high = bootstrap_interval(
        stats["accuracy"],
        len(gold),
        samples=params.bootstrap_samples,
        confidence=params.confidence,
        seed=params.seed,
    )
    return {"accuracy": round(value, 4), "accuracy_ci": [round(low, 4), round(high, 4)]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", type=Path, nargs="*", default=[], help="compare.json files")
    parser.add_argument("--out", type=Path, default=RESULTS / "learning_curve.json")
    parser.add_argument("--flip-rate", type=float, help="override demo.flip_rate (e.g. 0.2)")
    parser.add_argument("--confusable-share", type=float, help="override demo.confusable_share")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--replot", action="store_true", help="only add --adapter points to --out and redraw")
    args = parser.parse_args()
    if args.replot:
        out = json.loads(args.out.read_text())
        out["adapter_points"] = adapter_points(args.adapter)
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        plot(out, args.out.with_suffix(".png"))
        return
    raw_params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if args.flip_rate is not None:
        raw_params["demo"]["flip_rate"] = args.flip_rate
    if args.confusable_share is not None:
        raw_params["demo"]["confusable_share"] = args.confusable_share
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        base = params_from_dict(raw_params, base_dir=ROOT)
        demo = make_demo_data(base, out_dir=tmp_path)
        raw_params["data"]["train"] = str(tmp_path / "train.jsonl")
        raw_params["data"]["test"] = str(ROOT / base.data.test)  # type: ignore[operator]
        raw_params["data"]["labels"] = str(ROOT / "data/raw/categories.json")
        raw_params["report"]["planted"] = str(tmp_path / "planted.parquet")
        params = params_from_dict(raw_params, base_dir=ROOT)
        started = time.perf_counter()
        dirty = run_curation(
            Path(params.data.train), Path(params.data.test), params=params, show_progress=False
        )
        curate_seconds = time.perf_counter() - started
        clean_params = params_from_dict(
            {**raw_params, "data": {**raw_params["data"], "train": str(ROOT / "data/raw/train.csv")}},
            base_dir=ROOT,
        )
        clean = run_curation(
            Path(clean_params.data.train), Path(params.data.test), params=clean_params, until="validate",
            show_progress=False,
        )  # fmt: skip
        planted = pl.read_parquet(tmp_path / "planted.parquet")
    test = dirty.frame("test")
    label_set = [str(x) for x in json.loads((ROOT / "data/raw/categories.json").read_text())]
    sample = select_examples(test, params.evaluate.sample_size, params.evaluate.seed)
    texts, gold = sample["text"].to_list(), sample["label"].to_list()
    arms = {
        "raw": dirty.frame("validated_train").select("id", "text", "label"),
        "curated": dirty.frame("train").select("id", "text", "label"),
        "clean_source": clean.frame("validated_train").select("id", "text", "label"),
    }
    leaks = leak_map(dirty.frame("removed"), test, planted)
    flipped = set(planted.filter(pl.col("kind").is_in(["label_flip", "confusable_flip"]))["id"].to_list())
    curves: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    paired: list[dict[str, Any]] = []
    for size in SIZES:
        preds = {}
        raw_ids = select_examples(arms["raw"], size, params.train.seed)["id"].to_list()
        leaked_test = {leaks[i] for i in raw_ids if i in leaks}
        clean_idx = np.array([i for i, t in enumerate(sample["id"].to_list()) if t not in leaked_test])
        clean_gold = [gold[i] for i in clean_idx]
        for name, frame in arms.items():
            rows = select_examples(frame, size, params.train.seed)
            t0 = time.perf_counter()
            preds[name] = fit_predict_baseline(
                rows["text"].to_list(), rows["label"].to_list(), texts, params=params.evaluate.baseline
            )
            ids = rows["id"].to_list()
            curves[name].append(
                {
                    "train_rows": rows.height,
                    **_accuracy(gold, preds[name], label_set, params.evaluate),
                    "clean_rows": len(clean_idx),
                    "clean_accuracy": _accuracy(
                        clean_gold, [preds[name][i] for i in clean_idx], label_set, params.evaluate
                    )["accuracy"],
                    "planted_flips_in_train": sum(i in flipped for i in ids) if name != "clean_source" else 0,
                    "leaked_train_rows": sum(i in leaks for i in ids) if name != "clean_source" else 0,
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
        both = {arm: preds[arm] for arm in ("raw", "curated")}
        groups = {"sample": np.arange(len(gold)), "clean": clean_idx}
        compared = group_comparison(gold, both, groups, label_set=label_set, params=params.evaluate)
        diff = compared["sample"]["difference"]
        paired.append(
            {
                "size": size or "all",
                "leaked_test_rows_in_sample": len(gold) - len(clean_idx),
                "curated_minus_raw": diff,
                "curated_minus_raw_clean_rows": compared["clean"]["difference"],
            }
        )
        print(
            size,
            {n: (c[-1]["accuracy"], c[-1]["clean_accuracy"]) for n, c in curves.items()},
            paired[-1],
            flush=True,
        )
    adapters = adapter_points(args.adapter)
    out = {
        "demo": demo,
        "demo_params": {
            k: raw_params["demo"][k]
            for k in ("seed", "flip_rate", "confusable_share", "copy_rate", "leak_rate")
        },
        "quality": {
            k: v for k, v in dirty.metrics.items() if k.startswith(("planted_", "caught_", "recall_"))
        },
        "curate_seconds": round(curate_seconds, 1),
        "test_rows": len(gold),
        "test_seed": params.evaluate.seed,
        "baseline": "word 1-2 + char_wb 2-5 TF-IDF, LinearSVC C=0.5 (evaluate.baseline)",
        "curves": curves,
        "baseline_curated_minus_raw": paired,
        "adapter_points": adapters,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    if not args.no_plot:
        plot(out, args.out.with_suffix(".png"))
    print(f"-> {args.out}")


def adapter_points(paths: list[Path]) -> list[dict[str, Any]]:
    """The LoRA points of `curagate compare` result files, per row group."""
    adapters = []
    for path in paths:
        result = json.loads(path.read_text())
        for group in ("sample", "clean", "leaked"):
            entry = result["adapter"].get(group, {})
            if entry.get("n"):
                adapters.append(
                    {
                        "file": str(path.relative_to(ROOT) if path.is_absolute() else path),
                        "train_rows": result["budget"]["max_train_examples"],
                        "group": group,
                        "n": entry["n"],
                        "raw": entry["raw"],
                        "curated": entry["curated"],
                        "curated_minus_raw": entry["difference"],
                    }
                )
    return adapters


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {"raw": "#c44e52", "curated": "#4c72b0", "clean_source": "#999999"}
    names = {"raw": "raw (validated only)", "curated": "curated", "clean_source": "clean source (no faults)"}
    for name, points in result["curves"].items():
        ax.plot(
            [p["train_rows"] for p in points], [p["clean_accuracy"] for p in points],
            "o--" if name == "clean_source" else "o-",
            color=colours[name], label=f"TF-IDF + SVM, {names[name]}",
        )  # fmt: skip
    for p in result["adapter_points"]:
        if p["group"] != "clean":
            continue
        for arm, marker in (("raw", "s"), ("curated", "D")):
            value, (low, high) = p[arm]["accuracy"], p[arm]["accuracy_ci"]
            ax.errorbar(
                p["train_rows"], value, yerr=[[value - low], [high - value]],
                fmt=marker, color=colours[arm], markerfacecolor="white", capsize=3,
                label=f"LoRA SmolLM2-135M, {names[arm]}",
            )  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("train rows (log scale)")
    ax.set_ylabel("accuracy (test rows without a leaked copy)")
    ax.set_title("Banking77 with planted faults: raw vs curated")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    main()
