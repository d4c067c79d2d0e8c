"""Gate, train and evaluate on a curated directory: read files, call the library, write files.

The `curagate gate|train|evaluate` commands and the Prefect tasks both call these (never
each other), so `dvc repro` and a deployment run do the same thing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from schemas.gate import GateError, GateRecord, make_gate_record, read_json_object, write_gate_record
from schemas.params import Params

log = logging.getLogger(__name__)


class ModelStageError(RuntimeError):
    """A training-side stage cannot run on these files; says which and why."""


def gate_curated(curated: Path, *, params: Params, out: Path, override: bool = False) -> GateRecord:
    """Judge ``curated`` against params' gate thresholds; gate.json is written pass or fail.

    Raises:
        GateError: no curate output to judge (missing/corrupt manifest or quality.json).
    """
    record = make_gate_record(curated, thresholds=params.gate, override=override)
    write_gate_record(out, record)
    return record


def train_curated(
    curated: Path, *, params: Params, gate: Path | None, model_dir: Path, show_progress: bool = False
) -> dict[str, Any]:
    """Train an adapter on ``curated`` if its gate record allows it; returns training.json.

    Raises:
        GateError: the gate refuses (with the reason).
    """
    from training.train import train_from_curated  # imports torch: only when training

    record = train_from_curated(
        curated, params.train, model_dir, gate_path=gate, gate=params.gate, show_progress=show_progress
    )
    log_to_registry(model_dir, params=params)
    return record


def evaluate_curated(
    curated: Path,
    *,
    params: Params,
    model_dir: Path,
    out: Path,
    detail: Path,
    html: Path,
    show_progress: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score base model and adapter on the curated test split; writes eval.json, detail, html.

    Returns:
        (flat metrics of eval.json, the full result with per-side scores).

    Raises:
        ModelStageError: no training record, or a task evaluate cannot score.
    """
    from training.evaluate import evaluate_adapter, evaluate_instruction_adapter, write_eval_outputs
    from training.train import ADAPTER_DIR, TRAINING_JSON, read_label_set

    try:
        record = read_json_object(model_dir / TRAINING_JSON, "training record")
    except GateError as exc:
        raise ModelStageError(f"{exc}; run `curagate train` first") from exc
    test_path, train_path = curated / "test.parquet", curated / "train.parquet"
    for path in (test_path, train_path):
        if not path.is_file():
            raise ModelStageError(f"{path}: not found; run `curagate curate` first")
    test = pl.read_parquet(test_path)
    if record.get("task") in ("instruction", "chat"):  # chat is scored like instruction data
        result = evaluate_instruction_adapter(
            test,
            model_dir / ADAPTER_DIR,
            params.evaluate,
            training_record=record,
            show_progress=show_progress,
        )
    elif record.get("task") == "classification":
        result = evaluate_adapter(
            test,
            model_dir / ADAPTER_DIR,
            params.evaluate,
            label_set=read_label_set(curated, test) or [],
            training_record=record,
            train=pl.read_parquet(train_path),  # the classic baseline learns from the same rows
            show_progress=show_progress,
        )
    else:
        raise ModelStageError(f"{model_dir / TRAINING_JSON}: unknown task {record.get('task')!r}")
    flat = write_eval_outputs(
        result, eval_json=out, detail_json=detail, html_path=html, training_record=record
    )
    log_to_registry(model_dir, params=params, eval_json=out, detail=detail, html=html)
    return flat, result


def log_to_registry(
    model_dir: Path,
    *,
    params: Params,
    eval_json: Path | None = None,
    detail: Path | None = None,
    html: Path | None = None,
) -> str | None:
    """Log a train/evaluate run to the MLflow registry when ``registry.enabled``; returns the run
    id. A registry that cannot be written is a warning, not a lost adapter: `curagate registry
    log` (and the promote stage) log it later."""
    if not params.registry.enabled:
        return None
    from flows.registry import RegistryError, log_run  # loads mlflow: only when logging

    try:
        logged = log_run(model_dir, params=params, eval_json=eval_json, detail_json=detail, html=html)
    except RegistryError as exc:
        log.warning("not logged to the registry: %s (retry: curagate registry log)", exc)
        return None
    log.info("registry: run %s, model version %s (%s)", logged.run_id, logged.version, logged.tracking_uri)
    return logged.run_id


def read_json_if_present(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when the file is absent or not a JSON object."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
