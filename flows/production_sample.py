"""The reviewed production sample of a promotion, with both models' answers filled in.

The promote step compares challenger and champion on the production rows people reviewed
(README "Registry and promotion"). Nobody has the challenger's answers on those rows, and the
champion's are in the reviewed predictions only when the current champion served them, so
:func:`answer_production_sample` predicts what is missing with the same code as `curagate
predict` (training/predict.py: label-constrained decoding, batched). :func:`reviewed_sample`
builds the rows from prediction review's own files (``prediction_review.decisions_file`` and
the texts in ``sample_file``), leaving out rows the challenger was trained on.

Wiring only: the row logic is curation.production.production_comparison_rows; torch loads
when a model has to answer, not on import.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from schemas.params import Params

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]  # (what, rows done, rows in all)


class ProductionSampleError(RuntimeError):
    """The reviewed production sample cannot be built; says which file and why."""


def _resolve(path: str | Path, base_dir: Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else base_dir / path


def trained_texts(model_dir: Path, base_dir: Path) -> tuple[pl.Series | None, str]:
    """The texts of the train file an adapter was trained from (training.json's
    ``train_file``), and where they came from; None with the reason when unreadable."""
    try:
        record = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{model_dir / 'training.json'}: unreadable ({exc})"
    train_file = record.get("train_file") if isinstance(record, dict) else None
    if not train_file:
        return None, f"{model_dir / 'training.json'}: no train_file recorded"
    for candidate in (Path(train_file), _resolve(train_file, base_dir)):
        if candidate.is_file():
            try:
                return pl.read_parquet(candidate, columns=["text"])["text"], str(candidate)
            except (OSError, pl.exceptions.PolarsError) as exc:
                return None, f"{candidate}: unreadable ({exc})"
    return None, f"{train_file}: not found"


def reviewed_sample(
    params: Params, *, model_dirs: Mapping[str, Path]
) -> tuple[pl.DataFrame | None, list[str]]:
    """The reviewed production rows from prediction review's files, or None when there are none.

    Rows whose text any of ``model_dirs`` (``{"challenger": dir, "champion": dir}``) was
    trained on are left out: a model's answer on its own train row says nothing about
    production, whichever side it helps.

    Returns:
        (rows: id, text, label, weight, model_label, model_version; reasons (info lines)).

    Raises:
        ProductionSampleError: a decisions or sample file that exists but cannot be read.
    """
    from curation.production import production_comparison_rows

    review = params.prediction_review
    decisions_path = _resolve(review.decisions_file, params.base_dir)
    sample_path = _resolve(review.sample_file, params.base_dir)
    if not decisions_path.is_file():
        return None, [f"info: no reviewed production rows ({decisions_path} not found)"]
    try:
        decisions = pl.read_parquet(decisions_path)
        sample = (
            pl.read_parquet(sample_path, columns=["id", "text_hash", "text"])
            if sample_path.is_file()
            else pl.DataFrame(schema={"id": pl.String, "text_hash": pl.String, "text": pl.String})
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ProductionSampleError(f"{decisions_path} / {sample_path}: unreadable ({exc})") from exc
    # the decisions file keeps no text (the sample file holds the original texts locally)
    texts = sample.unique(["id", "text_hash"], keep="first")
    joined = decisions.drop("text", strict=False).join(texts, on=["id", "text_hash"], how="left")
    reasons: list[str] = []
    trained: list[pl.Series] = []
    for name, model_dir in model_dirs.items():
        seen, source = trained_texts(model_dir, params.base_dir)
        if seen is None:
            reasons.append(
                f"info: the {name}'s train rows could not be read ({source}): none of them left out"
            )
        else:
            trained.append(seen)
    try:
        rows, counts = production_comparison_rows(
            joined, trained_texts=pl.concat(trained) if trained else None
        )
    except ValueError as exc:
        raise ProductionSampleError(f"{decisions_path}: {exc}") from exc
    reasons.insert(
        0,
        f"info: reviewed production sample from {decisions_path}: {counts['judged']} judged rows, "
        f"{counts['trained_on']} left out (the {' or the '.join(model_dirs)} was trained on them), "
        f"{counts['without_text']} without their text: {counts['rows']} compared",
    )
    return rows, reasons


def predict_labels(
    model_dir: Path,
    texts: list[str],
    *,
    params: Params,
    what: str,
    on_progress: ProgressFn | None = None,
) -> list[str]:
    """``model_dir``'s labels for ``texts``: `curagate predict`'s code and ``predict:`` knobs."""
    from training.predict import load_predictor, predict_texts

    if not texts:
        return []
    predictor = load_predictor(model_dir, threads=params.predict.threads)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(what, done, len(texts))

    labels, _ = predict_texts(predictor, texts, batch_size=params.predict.batch_size, on_batch=step)
    return labels


def answer_production_sample(
    frame: pl.DataFrame,
    *,
    params: Params,
    challenger_dir: Path,
    champion_dir: Path | None,
    champion_ids: Collection[str],
    champion_version: str | None,
    on_progress: ProgressFn | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """Fill ``challenger_label`` and ``champion_label`` where the sample lacks them.

    The challenger answers every row. The champion's answer is the reviewed prediction's own
    (``model_label``) where ``model_version`` is one of ``champion_ids`` (its registry version
    or its adapter's content version), else it is predicted with ``champion_dir``.

    Returns:
        (the frame with both label columns and ``champion_version``, reasons (info lines)).

    Raises:
        ProductionSampleError: rows need the champion's answers and there is no champion model.
    """
    reasons: list[str] = []
    texts = frame["text"].cast(pl.String).to_list()
    if "challenger_label" not in frame.columns:
        labels = predict_labels(
            challenger_dir, texts, params=params, what="challenger", on_progress=on_progress
        )
        frame = frame.with_columns(challenger_label=pl.Series(labels, dtype=pl.String))
        reasons.append(f"info: the challenger answered the {len(texts)} reviewed rows (predict's decoding)")
    if "champion_label" not in frame.columns and champion_dir is not None:
        served = (
            frame["model_version"].cast(pl.String).is_in(list(champion_ids))
            if "model_version" in frame.columns and "model_label" in frame.columns
            else pl.Series([False] * frame.height)
        )
        missing = [t for t, s in zip(texts, served.to_list(), strict=True) if not s]
        predicted = iter(
            predict_labels(champion_dir, missing, params=params, what="champion", on_progress=on_progress)
        )
        served_labels = (
            frame["model_label"].to_list() if "model_label" in frame.columns else [None] * frame.height
        )
        labels = [
            lab if s else next(predicted) for lab, s in zip(served_labels, served.to_list(), strict=True)
        ]
        frame = frame.with_columns(
            champion_label=pl.Series(labels, dtype=pl.String),
            champion_version=pl.lit(champion_version, dtype=pl.String),
        )
        reasons.append(
            f"info: the champion's answers: {frame.height - len(missing)} from the reviewed predictions "
            f"it served, {len(missing)} predicted now"
        )
    elif "champion_label" not in frame.columns:
        # no champion: the rule does not compare on production; a placeholder keeps the shape
        frame = frame.with_columns(champion_label=pl.lit(None, dtype=pl.String))
    return frame, reasons


def champion_model_dir(client: Any, run_id: str, dest: Path) -> Path:
    """The champion's adapter/ and training.json from its MLflow run into ``dest`` (a model
    dir training/predict.py can load)."""
    dest.mkdir(parents=True, exist_ok=True)
    client.download_artifacts(run_id, "adapter", str(dest))
    client.download_artifacts(run_id, "training.json", str(dest))
    return dest
