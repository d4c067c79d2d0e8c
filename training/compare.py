"""Raw vs curated, the training side: the same recipe trained on two row sets, both adapters
scored on the same test rows, and paired statistics per group of rows (clean, leaked).

Reads and writes only its own files (train.parquet in, adapter/ + training.json out); what
the rows are (validated-only vs curated) and which test rows leaked is decided by the caller
(flows/compare.py), so this module knows nothing of curation.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from schemas.manifest import file_md5
from schemas.training_params import EvaluateParams, TrainParams
from training.evaluate import (
    bootstrap_interval,
    classification_metrics,
    difference,
    interval_dict,
    side_statistics,
)

log = logging.getLogger(__name__)

ARMS = ("raw", "curated")  # the order of every per-arm list; differences are curated - raw


# ── statistics (pure) ────────────────────────────────────────────────────────────────


def group_comparison(
    gold: Sequence[str],
    predictions: dict[str, Sequence[str | None]],
    groups: dict[str, np.ndarray],
    *,
    label_set: Sequence[str],
    params: EvaluateParams,
    arms: tuple[str, str] = ARMS,
) -> dict[str, dict[str, Any]]:
    """Accuracy and macro-F1 with intervals per arm and group, and the paired difference.

    Args:
        gold: gold labels of every scored row.
        predictions: arm -> one prediction per row (None = no label).
        groups: group name -> row indices into ``gold`` (an empty group is reported with n=0).
        arms: (a, b); the difference is ``b - a`` on the same resampled rows.

    Returns:
        ``{group: {"n", a: {accuracy, accuracy_ci, macro_f1, macro_f1_ci}, b: {...},
        "difference": {accuracy: {value, low, high}, macro_f1: {...}}}}``.
    """
    first, second = arms
    out: dict[str, dict[str, Any]] = {}
    for name, idx in groups.items():
        idx = np.asarray(idx, dtype=np.int64)
        entry: dict[str, Any] = {"n": int(idx.size)}
        if idx.size == 0:
            out[name] = entry
            continue
        g = [gold[i] for i in idx]
        stats = {}
        for arm in arms:
            p = [predictions[arm][i] for i in idx]
            stats[arm] = side_statistics(g, p, label_set)
            metrics = classification_metrics(g, p, label_set, top_confused=0)
            arm_entry: dict[str, Any] = {}
            for key in ("accuracy", "macro_f1"):
                low, high = bootstrap_interval(
                    stats[arm][key],
                    idx.size,
                    samples=params.bootstrap_samples,
                    confidence=params.confidence,
                    seed=params.seed,
                )
                arm_entry[key] = round(metrics[key], 6)
                arm_entry[f"{key}_ci"] = [round(low, 6), round(high, 6)]
            entry[arm] = arm_entry
        diffs = {}
        for key in ("accuracy", "macro_f1"):
            diff = difference(stats[second][key], stats[first][key])
            low, high = bootstrap_interval(
                diff,
                idx.size,
                samples=params.bootstrap_samples,
                confidence=params.confidence,
                seed=params.seed,
            )
            diffs[key] = interval_dict(float(diff(np.arange(idx.size))), low, high)
        entry["difference"] = diffs
        out[name] = entry
    return out


def scored_rows(test: pl.DataFrame, *, sample_size: int | None, seed: int, leaked: set[str]) -> pl.DataFrame:
    """The seeded test sample (as evaluate draws it) plus every leaked test row, with flags.

    Returns:
        the rows (sorted by id) with boolean columns ``in_sample`` and ``leaked``.
    """
    from training.train import select_examples

    sample_ids = set(select_examples(test, sample_size, seed)["id"].to_list())
    return (
        test.filter(pl.col("id").is_in(sorted(sample_ids | leaked)))
        .sort("id")
        .with_columns(
            pl.col("id").is_in(sorted(sample_ids)).alias("in_sample"),
            pl.col("id").is_in(sorted(leaked)).alias("leaked"),
        )
    )


def row_groups(rows: pl.DataFrame) -> dict[str, np.ndarray]:
    """clean (sampled, not leaked), leaked (every leaked row) and sample (the seeded sample as is)."""
    in_sample = rows["in_sample"].to_numpy()
    leaked = rows["leaked"].to_numpy()
    return {
        "clean": np.flatnonzero(in_sample & ~leaked),
        "leaked": np.flatnonzero(leaked),
        "sample": np.flatnonzero(in_sample),
    }


# ── training and scoring (torch) ─────────────────────────────────────────────────────


def train_arm(
    train_path: str, params: TrainParams, out_dir: str, label_set: list[str], show_progress: bool
) -> dict[str, Any]:
    """Train one arm from its train.parquet (a top-level function: runs in a worker process)."""
    from training.train import train_adapter

    if not show_progress:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = Path(train_path)
    return train_adapter(
        pl.read_parquet(path),
        params,
        Path(out_dir),
        label_set=label_set,
        extra_record={"train_file": str(path), "data_md5": file_md5(path)},
        show_progress=show_progress,
    )


def train_arms(
    arms: dict[str, Path],
    params: TrainParams,
    *,
    work_dir: Path,
    label_set: list[str],
    parallel: bool,
    show_progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Train one adapter per arm into ``<work_dir>/<arm>/``, with the same recipe and seed.

    Args:
        parallel: train the arms in separate processes at once (each uses ``params.threads``
            threads; worth it when the machine has a core per arm, as the 2-core demo does).

    Returns:
        arm -> its training record.
    """
    jobs = {name: (str(path), params, str(work_dir / name), label_set) for name, path in arms.items()}
    if not parallel or len(jobs) < 2:
        return {name: train_arm(*job, show_progress) for name, job in jobs.items()}
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
        futures = {name: pool.submit(train_arm, *job, False) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def predict_arms(
    texts: Sequence[str],
    adapters: dict[str, Path],
    *,
    base_model: str,
    prompt_form: str,
    label_set: Sequence[str],
    params: EvaluateParams,
    show_progress: bool = True,
) -> tuple[dict[str, list[str | None]], dict[str, float]]:
    """Label-constrained answers of every adapter on ``texts`` (the base model loaded once).

    Returns:
        (arm -> predictions, arm -> seconds).
    """
    from peft import PeftModel

    from training.decoding import label_trie
    from training.evaluate import _progress, classify
    from training.model import load_base_model
    from training.prompts import answer_suffix
    from training.train import set_threads

    set_threads(params.threads)
    loaded = load_base_model(base_model, quantize_4bit=False, for_training=False, padding_side="left")
    names = list(adapters)
    model = PeftModel.from_pretrained(loaded.model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    model.eval()
    trie = label_trie(loaded.tokenizer, label_set, suffix=answer_suffix(loaded.tokenizer))
    predictions: dict[str, list[str | None]] = {}
    seconds: dict[str, float] = {}
    with _progress(show_progress) as progress:
        for name in names:
            model.set_adapter(name)
            _, pred, took = classify(
                model,
                loaded.tokenizer,
                texts,
                form=prompt_form,
                label_set=label_set,
                trie=trie,
                max_new_tokens=trie.depth,
                batch_size=params.batch_size,
                device=loaded.device,
                progress=progress,
                desc=name,
            )
            predictions[name], seconds[name] = pred, round(took, 3)
            log.info("%s adapter scored %d rows in %.0f s", name, len(texts), took)
    return predictions, seconds


def compare_recipe(params: TrainParams, max_train_examples: int | None) -> TrainParams:
    """The main recipe with compare's own budget (same seeds, epochs, everything else)."""
    return dataclasses.replace(params, max_train_examples=max_train_examples)
