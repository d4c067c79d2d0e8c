"""Learning curve: train on growing fractions of the data, score each adapter on the test split.

Every point uses the same number of epochs, so each example gets the same training budget
and the curve shows what more data buys. With a second dataset (e.g. uncurated) the two
curves are drawn side by side on the same test sample.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from schemas.manifest import file_md5
from schemas.training_params import EvaluateParams, SweepParams, TrainParams
from training.evaluate import evaluate_adapter, png_base64
from training.train import ADAPTER_DIR, read_label_set, train_adapter

log = logging.getLogger(__name__)


def sweep_sizes(available: int, cap: int | None, fractions: tuple[float, ...]) -> list[int]:
    """Train-set sizes: each fraction of min(available, cap), at least 1, deduplicated."""
    full = available if cap is None else min(available, cap)
    return sorted({max(1, round(full * f)) for f in fractions})


def run_sweep(
    datasets: dict[str, Path],
    train_params: TrainParams,
    eval_params: EvaluateParams,
    sweep_params: SweepParams,
    *,
    out_dir: Path,
    test_dir: Path,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train and score one adapter per (dataset, size); write sweep.json and sweep.html.

    Args:
        datasets: name -> directory holding train.parquet (and optionally labels.json).
        test_dir: the directory whose test.parquet and labels.json every point is scored on.
        out_dir: adapters go to ``<out_dir>/<name>/<size>/``; the summary beside them.

    Returns:
        ``{"curves": {name: [{train_examples, accuracy, macro_f1, ...}]}, ...}``.
    """
    test = pl.read_parquet(test_dir / "test.parquet")
    label_set = read_label_set(test_dir, test) or []
    scoring = dataclasses.replace(eval_params, sample_size=sweep_params.sample_size)
    curves: dict[str, list[dict[str, Any]]] = {}
    for name, directory in datasets.items():
        train_path = directory / "train.parquet"
        frame = pl.read_parquet(train_path)
        points = []
        for size in sweep_sizes(frame.height, train_params.max_train_examples, sweep_params.fractions):
            point_dir = out_dir / name / str(size)
            params = dataclasses.replace(train_params, max_train_examples=size)
            record = train_adapter(
                frame,
                params,
                point_dir,
                label_set=label_set,
                extra_record={"train_file": str(train_path), "data_md5": file_md5(train_path)},
                show_progress=show_progress,
            )
            detail = evaluate_adapter(
                test,
                point_dir / ADAPTER_DIR,
                scoring,
                label_set=label_set,
                training_record=record,
                include_base=False,
                show_progress=show_progress,
            )
            adapter = detail["sides"]["adapter"]
            points.append(
                {
                    "train_examples": record["train_examples"],
                    "steps": record["steps"],
                    "train_seconds": record["train_seconds"],
                    "accuracy": adapter["accuracy"],
                    "macro_f1": adapter["macro_f1"],
                    "invalid_rate": adapter["invalid_rate"],
                    "test_n": detail["n"],
                }
            )
            log.info("%s, %d examples: accuracy %.3f", name, size, adapter["accuracy"])
        curves[name] = points
    result = {
        "curves": curves,
        "epochs": train_params.epochs,
        "fractions": list(sweep_params.fractions),
        "test_sample_size": sweep_params.sample_size,
        "test_seed": eval_params.seed,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "sweep.html").write_text(render_sweep_html(result), encoding="utf-8")
    return result


def render_sweep_html(result: dict[str, Any]) -> str:
    """A self-contained page with the learning curve(s) as an embedded PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in result["curves"].items():
        ax.plot([p["train_examples"] for p in points], [p["accuracy"] for p in points], "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("train examples (log scale)")
    ax.set_ylabel("adapter test accuracy")
    ax.set_title(f"Learning curve ({result['epochs']} epoch(s) per point)")
    ax.legend()
    image = png_base64(fig)
    plt.close(fig)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>curagate sweep</title></head>"
        f"<body><h2>Learning curve</h2><img alt='learning curve' "
        f"src='data:image/png;base64,{image}'></body></html>\n"
    )
