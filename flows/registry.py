"""The model registry: MLflow tracking + model registry on a local SQLite file (or any MLflow URI).

One MLflow run per adapter (found again by the adapter's content digest, tag
``curagate.adapter_md5``): train logs the resolved ``train:`` params, training.json's numbers
and loss curve, the adapter directory and the data version (md5s of the curated files, as
tags and as MLflow dataset inputs); evaluate adds the ``evaluate:`` params, eval.json's
metrics and eval.json / eval_detail.json / eval.html. The adapter becomes a version of the
registered model ``registry.model_name``; the promoted one carries the alias ``champion``.

:func:`promote` asks the pure rule (training/promotion.py) whether the challenger beats the
champion, records the verdict, both scores and the reasons on the version (tags and
description) and on the run (promotion.json), and moves the alias. :func:`rollback` moves it
back to the previous champion. mlflow is imported inside the functions: `curagate --help`
never loads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from schemas.gate import GateError, read_json_object
from schemas.manifest import MANIFEST_FILE, file_md5
from schemas.params import Params
from schemas.registry_params import RegistryParams

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"  # = training.train.ADAPTER_DIR (not imported here: it loads torch)
TRAINING_JSON = "training.json"  # = training.train.TRAINING_JSON
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
TAG = "curagate."  # prefix of every tag this module sets
HISTORY_TAG = f"{TAG}champion_history"  # registered-model tag: champion versions, oldest first
EVAL_ARTIFACTS = ("eval.json", "eval_detail.json", "eval.html")  # names under the run's eval/
MAX_TAG_CHARS = 5000  # MLflow's limit on a tag value
# the reviewed production sample (README "Registry and promotion"): required columns
PRODUCTION_COLUMNS = ("id", "text", "label", "champion_label", "challenger_label")


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; says why and what to run."""


@dataclass(frozen=True)
class Backend:
    """Where runs and models live: the tracking/registry URI and, for the local SQLite
    backend, the directory holding the database and the artifacts."""

    tracking_uri: str
    local_dir: Path | None

    @property
    def ui_command(self) -> str:
        return f"mlflow ui --backend-store-uri {self.tracking_uri}" + (
            f" --default-artifact-root {(self.local_dir / ARTIFACTS_DIR).as_uri()}" if self.local_dir else ""
        )


def backend_of(registry: RegistryParams, base_dir: Path) -> Backend:
    """``registry.tracking_uri``, else ``sqlite:///<base_dir>/<registry.dir>/mlflow.db``."""
    if registry.tracking_uri:
        return Backend(registry.tracking_uri, None)
    directory = Path(registry.dir)
    directory = (directory if directory.is_absolute() else base_dir / directory).resolve()
    return Backend(f"sqlite:///{directory / DB_FILE}", directory)


def _client(backend: Backend, *, create: bool) -> Any:
    """An MlflowClient on ``backend``; a local backend that does not exist yet is created only
    when ``create`` (logging), otherwise it is an error naming the directory."""
    if backend.local_dir is not None and not (backend.local_dir / DB_FILE).is_file():
        if not create:
            raise RegistryError(
                f"{backend.local_dir / DB_FILE}: no registry yet; `curagate train` / `curagate "
                "registry log` create it (registry.dir in params.yaml)"
            )
        backend.local_dir.mkdir(parents=True, exist_ok=True)
    for name in ("mlflow", "alembic"):  # schema-migration chatter on first use
        logging.getLogger(name).setLevel(logging.WARNING)
    # a tqdm bar per downloaded eval_detail.json is noise in a one-line command
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=backend.tracking_uri, registry_uri=backend.tracking_uri)


def _mlflow_errors() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException

    return (MlflowException,)


def adapter_digest(adapter_dir: Path) -> str:
    """md5 over the adapter directory's files (relative path and md5 of each, sorted): the
    adapter's identity in the registry."""
    if not adapter_dir.is_dir():
        raise RegistryError(f"{adapter_dir}: no adapter directory; run `curagate train` first")
    digest = hashlib.md5()
    for path in sorted(p for p in adapter_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(adapter_dir).as_posix()}\t{file_md5(path)}\n".encode())
    return digest.hexdigest()


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), item)
    else:
        yield prefix, value


def _param_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)


def _numbers(flat: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        return read_json_object(path, what)
    except GateError as exc:
        raise RegistryError(str(exc)) from exc


def _data_version(record: dict[str, Any]) -> dict[str, str]:
    """The curated data an adapter was trained on, as tags: training.json's train.parquet and
    gate.json md5s, and test.parquet's / manifest.json's md5 from the curated directory."""
    tags = {
        f"{TAG}data_md5": str(record.get("data_md5", "")),
        f"{TAG}gate_md5": str(record.get("gate_md5", "")),
        f"{TAG}gate_override": str(record.get("gate_override", "")),
        f"{TAG}train_file": str(record.get("train_file", "")),
    }
    train_file = record.get("train_file")
    if train_file:
        manifest_path = Path(train_file).parent / MANIFEST_FILE
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            tags[f"{TAG}manifest_md5"] = file_md5(manifest_path)
            tags[f"{TAG}test_md5"] = str(manifest["files"]["test.parquet"]["md5"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s: not readable; the run records train.parquet's md5 only", manifest_path)
    return {k: v for k, v in tags.items() if v}


def _experiment_id(client: Any, registry: RegistryParams, backend: Backend) -> str:
    experiment = client.get_experiment_by_name(registry.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = (backend.local_dir / ARTIFACTS_DIR).as_uri() if backend.local_dir else None
    return client.create_experiment(registry.experiment, artifact_location=location)


def _find_run(client: Any, experiment_id: str, digest: str) -> Any | None:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG}adapter_md5` = '{digest}'", max_results=1,
        order_by=["attribute.start_time DESC"],
    )  # fmt: skip
    return runs[0] if runs else None


def _find_version(client: Any, registry: RegistryParams, digest: str) -> Any | None:
    versions = client.search_model_versions(
        f"name = '{registry.model_name}' and tag.`{TAG}adapter_md5` = '{digest}'"
    )
    return max(versions, key=lambda v: int(v.version)) if versions else None


def _log_training(client: Any, experiment_id: str, model_dir: Path, digest: str) -> Any:
    from mlflow.entities import Dataset, DatasetInput, Metric, Param

    record = _read(model_dir / TRAINING_JSON, "training record")
    tags = {f"{TAG}adapter_md5": digest, f"{TAG}task": str(record.get("task", "")), **_data_version(record)}
    tags["mlflow.runName"] = f"adapter-{digest[:8]}"
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    params = [Param(f"train.{k}", _param_text(v)) for k, v in _flatten("", record.get("params", {}))]
    scalars = {k: v for k, v in record.items() if k not in ("params", "loss_curve")}
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [Metric(k, v, stamp, 0) for k, v in _numbers(scalars).items()]
    for point in record.get("loss_curve") or []:
        if isinstance(point, dict) and "step" in point and "loss" in point:
            metrics.append(Metric("loss", float(point["loss"]), stamp, int(point["step"])))
    client.log_batch(run_id, metrics=metrics, params=params)
    datasets = []
    for name, key in (("curated-train", "data_md5"), ("curated-test", "test_md5")):
        md5 = tags.get(f"{TAG}{key}")
        if md5:
            source = record.get("train_file", "") if key == "data_md5" else tags.get(f"{TAG}train_file", "")
            datasets.append(
                DatasetInput(Dataset(name=name, digest=md5, source_type="local", source=str(source)))
            )
    if datasets:
        client.log_inputs(run_id, datasets=datasets)
    client.log_artifact(run_id, str(model_dir / TRAINING_JSON))
    client.log_artifacts(run_id, str(model_dir / ADAPTER_DIR), ADAPTER_DIR)
    client.set_terminated(run_id)
    return client.get_run(run_id)


def _register(client: Any, registry: RegistryParams, run: Any, digest: str) -> Any:
    version = _find_version(client, registry, digest)
    if version is not None:
        return version
    try:
        client.get_registered_model(registry.model_name)
    except _mlflow_errors():
        client.create_registered_model(
            registry.model_name, description="LoRA adapters trained by curagate on curated data"
        )
    return client.create_model_version(
        registry.model_name,
        source=f"runs:/{run.info.run_id}/{ADAPTER_DIR}",
        run_id=run.info.run_id,
        tags={
            f"{TAG}adapter_md5": digest,
            **{k: v for k, v in run.data.tags.items() if k.startswith(TAG)},
        },
        description="challenger: not compared with the champion yet",
    )


@dataclass(frozen=True)
class Logged:
    """What :func:`log_run` did: the run and model version of an adapter."""

    run_id: str
    version: str
    adapter_md5: str
    logged_training: bool
    logged_evaluation: bool
    tracking_uri: str


def log_run(
    model_dir: Path,
    *,
    params: Params,
    eval_json: Path | None = None,
    detail_json: Path | None = None,
    html: Path | None = None,
) -> Logged:
    """Log an adapter's training (and, given eval.json, its evaluation) and register it as a
    model version. Idempotent: an adapter already logged (same digest) is not logged again,
    an evaluation already logged (same eval_detail.json md5) neither.

    Raises:
        RegistryError: missing inputs, or the backend refused (the message says which).
    """
    registry = params.registry
    backend = backend_of(registry, params.base_dir)
    digest = adapter_digest(model_dir / ADAPTER_DIR)
    try:
        client = _client(backend, create=True)
        experiment_id = _experiment_id(client, registry, backend)
        run = _find_run(client, experiment_id, digest)
        logged_training = run is None
        if run is None:
            run = _log_training(client, experiment_id, model_dir, digest)
        version = _register(client, registry, run, digest)
        logged_evaluation = False
        if eval_json is not None:
            logged_evaluation = _log_evaluation(
                client, run, params=params, eval_json=eval_json, detail_json=detail_json, html=html
            )
    except _mlflow_errors() as exc:
        raise RegistryError(f"registry {backend.tracking_uri}: {exc}") from exc
    return Logged(
        run.info.run_id,
        str(version.version),
        digest,
        logged_training,
        logged_evaluation,
        backend.tracking_uri,
    )


def _log_evaluation(
    client: Any,
    run: Any,
    *,
    params: Params,
    eval_json: Path,
    detail_json: Path | None,
    html: Path | None,
) -> bool:
    from mlflow.entities import Metric, Param

    flat = _read(eval_json, "eval.json")
    files = [p for p in (eval_json, detail_json, html) if p is not None]
    for path in files:
        if not path.is_file():
            raise RegistryError(f"{path}: not found; run `curagate evaluate` first")
    eval_md5 = file_md5(detail_json or eval_json)
    run = client.get_run(run.info.run_id)
    if run.data.tags.get(f"{TAG}eval_md5") == eval_md5:
        return False
    run_id = run.info.run_id
    logged = run.data.params
    params_now = {f"evaluate.{k}": _param_text(v) for k, v in _flatten("", asdict(params.evaluate))}
    new = [Param(k, v) for k, v in params_now.items() if k not in logged]
    changed = sorted(k for k, v in params_now.items() if k in logged and logged[k] != v)
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [Metric(k, v, stamp, 0) for k, v in _numbers(flat).items()]
    client.log_batch(run_id, metrics=metrics, params=new)
    tags = {f"{TAG}eval_md5": eval_md5, f"{TAG}verdict": str(flat.get("verdict", ""))}
    if changed:  # MLflow params are write-once: a re-evaluation under other params says so
        tags[f"{TAG}evaluate_params_changed"] = _clip(", ".join(changed))
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:  # fixed names: a later promote reads them back
        for path, name in zip((eval_json, detail_json, html), EVAL_ARTIFACTS, strict=True):
            if path is not None:
                copy = Path(tmp) / name
                shutil.copyfile(path, copy)
                client.log_artifact(run_id, str(copy), "eval")
    return True


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 3] + "..."


# ── champion / challenger ────────────────────────────────────────────────────────────


def _champion(client: Any, registry: RegistryParams) -> Any | None:
    try:
        return client.get_model_version_by_alias(registry.model_name, registry.champion_alias)
    except _mlflow_errors():
        return None


def _history(client: Any, registry: RegistryParams) -> list[str]:
    try:
        model = client.get_registered_model(registry.model_name)
    except _mlflow_errors():
        return []
    raw = model.tags.get(HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


def _set_history(client: Any, registry: RegistryParams, history: list[str]) -> None:
    client.set_registered_model_tag(registry.model_name, HISTORY_TAG, _clip(",".join(history)))


def _test_answers(detail: dict[str, Any], where: str) -> Any:
    from training.promotion import HeldOutAnswers

    try:
        ids, labels = detail["row_ids"], detail["row_labels"]
        predicted = detail["sides"]["adapter"]["predicted"]
    except (KeyError, TypeError) as exc:
        raise RegistryError(
            f"{where}: no per-row test answers (row_ids, sides.adapter.predicted); "
            "re-run `curagate evaluate` with this version of curagate"
        ) from exc
    return HeldOutAnswers([str(i) for i in ids], [str(g) for g in labels], predicted)


def _champion_answers(client: Any, champion: Any) -> tuple[Any, list[str]]:
    """The champion's test answers from its run's eval_detail.json; empty (so the rule
    rejects for want of common rows) with a reason when the run has none."""
    from training.promotion import HeldOutAnswers

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(champion.run_id, "eval/eval_detail.json", tmp)
        except (*_mlflow_errors(), OSError):
            reason = f"fail: the champion (version {champion.version}) has no eval_detail.json logged"
            return HeldOutAnswers([], [], []), [reason]
        detail = _read(Path(path), "champion's eval_detail.json")
    try:
        return _test_answers(detail, f"champion version {champion.version}"), []
    except RegistryError as exc:
        return HeldOutAnswers([], [], []), [f"fail: {exc}"]


def read_production_sample(path: Path, *, champion_version: str | None) -> Any:
    """The reviewed production rows as the rule's input.

    Columns: ``id``, ``text``, ``label`` (the reviewer's label), ``champion_label`` and
    ``challenger_label`` (each model's answer on that text); optional ``weight`` (> 0: the
    review sample's inverse inclusion probability) and ``champion_version`` (which version
    produced champion_label: must be the current champion).

    Raises:
        RegistryError: unreadable file, missing columns, nulls, or another champion's answers.
    """
    return production_answers(_read_sample_frame(path), str(path), champion_version=champion_version)


def _read_sample_frame(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise RegistryError(f"{path}: cannot read the production sample ({exc})") from exc


def production_answers(frame: pl.DataFrame, where: str, *, champion_version: str | None) -> Any:
    """:func:`read_production_sample`'s checks on a frame (``where`` names it in errors)."""
    from training.promotion import ProductionAnswers

    path = where
    missing = [c for c in PRODUCTION_COLUMNS if c not in frame.columns]
    if missing:
        raise RegistryError(
            f"{path}: production sample lacks column(s) {missing}; needs {list(PRODUCTION_COLUMNS)}"
        )
    nulls = [c for c in ("id", "text", "label") if frame[c].null_count()]
    if nulls:
        raise RegistryError(f"{path}: production sample has empty {nulls} (rows must be reviewed)")
    if frame["id"].n_unique() != frame.height:
        raise RegistryError(f"{path}: production sample repeats ids")
    if "champion_version" in frame.columns:
        seen = sorted({str(v) for v in frame["champion_version"].drop_nulls().to_list()})
        if champion_version is not None and seen and seen != [champion_version]:
            raise RegistryError(
                f"{path}: champion_label comes from version(s) {seen}, the champion is version "
                f"{champion_version}; predict the sample again with the champion"
            )
    weights = None
    if "weight" in frame.columns:
        weights = frame["weight"].cast(pl.Float64, strict=False).to_list()
        if any(w is None or not w > 0 for w in weights):
            raise RegistryError(f"{path}: production sample weights must be numbers > 0")
    return ProductionAnswers(
        [str(v) for v in frame["label"].to_list()],
        frame["champion_label"].cast(pl.String).to_list(),
        frame["challenger_label"].cast(pl.String).to_list(),
        weights,
    )


def _production_sample(
    client: Any,
    current: Any | None,
    *,
    params: Params,
    challenger_dir: Path,
    sample: Path | None,
    on_progress: Any = None,
) -> tuple[Any | None, list[str], str | None]:
    """The rule's production input: the given sample file, else (``registry.
    production_from_reviews``) the rows people reviewed; the answers it lacks (the challenger's,
    the champion's where it did not serve them) predicted now. Returns (answers or None,
    reasons, where the rows came from)."""
    from flows.production_sample import (
        ProductionSampleError,
        answer_production_sample,
        champion_model_dir,
        reviewed_sample,
    )

    if current is None:  # the first champion: evaluate's verdict alone decides, nothing to predict
        if sample is None:
            return None, [], None
        frame = _read_sample_frame(sample)
        if not {"champion_label", "challenger_label"} <= set(frame.columns):
            return None, [f"info: no champion: {sample} not compared"], str(sample)
        return production_answers(frame, str(sample), champion_version=None), [], str(sample)
    if sample is None and not params.registry.production_from_reviews:
        return None, [], None
    if sample is not None:
        given = _read_sample_frame(sample)
        if {"champion_label", "challenger_label"} <= set(given.columns):  # complete: nothing to predict
            return (
                production_answers(given, str(sample), champion_version=str(current.version)),
                [],
                str(sample),
            )
    from training.predict import PredictorError, adapter_version  # torch: only when a model answers

    reasons: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        # the champion's adapter and training record: its train rows (left out of the reviewed
        # rows) and, where it did not serve a row, its answer
        champion_dir = champion_model_dir(client, current.run_id, Path(tmp) / "champion")
        if sample is not None:
            frame, where = _read_sample_frame(sample), str(sample)
            if "text" not in frame.columns:
                raise RegistryError(f"{sample}: production sample lacks column(s) ['text']")
        else:
            try:
                frame, reasons = reviewed_sample(
                    params, model_dirs={"challenger": challenger_dir, "champion": champion_dir}
                )
            except ProductionSampleError as exc:
                raise RegistryError(str(exc)) from exc
            where = params.prediction_review.decisions_file
            if frame is None or frame.height == 0:
                return None, reasons, None
        if not {"champion_label", "challenger_label"} <= set(frame.columns):
            try:
                ids = {str(current.version), adapter_version(champion_dir / ADAPTER_DIR)}
                frame, more = answer_production_sample(
                    frame, params=params, challenger_dir=challenger_dir, champion_dir=champion_dir,
                    champion_ids=ids, champion_version=str(current.version), on_progress=on_progress,
                )  # fmt: skip
            except (PredictorError, ProductionSampleError, OSError, ValueError) as exc:
                raise RegistryError(f"{where}: cannot answer the reviewed rows ({exc})") from exc
            reasons += more
    return production_answers(frame, where, champion_version=str(current.version)), reasons, where


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def champion_block(
    verdict: dict[str, Any], *, version: str, previous: str | None, champion: str | None
) -> dict:
    """The ``champion`` block of eval.json / promotion.json: flat scalars (DVC metrics)."""
    block: dict[str, Any] = {
        "verdict": verdict["verdict"],
        "promoted": int(verdict["promote"]),
        "challenger_version": version,
        "previous_champion_version": previous or "",
        "champion_version": champion or "",
        "first_champion": int(verdict.get("first_champion", False)),
        "metric": verdict.get("metric", ""),
    }
    for part in ("test", "production"):
        entry = verdict.get(part) or {}
        if "difference" in entry:
            block[f"{part}_rows"] = entry["rows"]
            block[f"{part}_challenger"] = entry["challenger"]
            block[f"{part}_champion"] = entry["champion"]
            d = entry["difference"]
            block[f"{part}_difference"] = d["value"]
            block[f"{part}_difference_low"], block[f"{part}_difference_high"] = d["low"], d["high"]
    block["reasons"] = "; ".join(verdict["reasons"])
    return block


def promote(
    model_dir: Path,
    *,
    params: Params,
    eval_json: Path,
    detail_json: Path,
    html: Path | None = None,
    production: Path | None = None,
    on_progress: Any = None,
) -> dict[str, Any]:
    """Log and register the adapter in ``model_dir`` (the challenger), decide whether it replaces
    the champion (training/promotion.py), record the decision and move the alias.

    The reviewed production sample is ``production`` (or ``registry.production_sample``), else,
    with ``registry.production_from_reviews``, the rows people reviewed (flows/
    production_sample.py: rows the challenger trained on left out). Answers it lacks are
    predicted here: the challenger's on every row, the champion's where it did not serve them.
    ``on_progress(what, done, total)`` follows those predictions.

    Returns:
        The champion block (flat: verdict, versions, both scores, the paired differences and
        their intervals, reasons) plus ``detail`` (the rule's full verdict).

    Raises:
        RegistryError: missing inputs, an unusable production sample, or a backend error.
    """
    from training.promotion import champion_verdict

    registry = params.registry
    detail = _read(detail_json, "eval_detail.json")
    challenger = _test_answers(detail, str(detail_json))
    logged = log_run(model_dir, params=params, eval_json=eval_json, detail_json=detail_json, html=html)
    backend = backend_of(registry, params.base_dir)
    try:
        client = _client(backend, create=False)
        current = _champion(client, registry)
        if current is not None and str(current.version) == logged.version:
            verdict = {
                "verdict": "promote", "promote": True, "first_champion": False,
                "metric": registry.promote_metric,
                "reasons": [f"info: version {logged.version} is already the champion"],
            }  # fmt: skip
            block = champion_block(
                verdict, version=logged.version, previous=logged.version, champion=logged.version
            )
            return {**block, "detail": verdict}
        extra: list[str] = []
        champion_answers = None
        if current is not None:
            champion_answers, extra = _champion_answers(client, current)
        sample = production or (Path(registry.production_sample) if registry.production_sample else None)
        if sample is not None and not sample.is_absolute() and production is None:
            sample = params.base_dir / sample
        answers, production_reasons, sample_source = _production_sample(
            client, current, params=params, challenger_dir=model_dir, sample=sample, on_progress=on_progress
        )
        extra += production_reasons
        interval = params.evaluate
        verdict = champion_verdict(
            challenger,
            champion_answers,
            evaluate_verdict=detail.get("verdict") or {},
            production=answers,
            metric=registry.promote_metric,
            margin=registry.promote_margin,
            production_margin=registry.production_margin,
            samples=interval.bootstrap_samples,
            confidence=interval.confidence,
            seed=interval.seed,
        )
        if extra:
            verdict["reasons"][1:1] = extra
        rolled_back = client.get_model_version(registry.model_name, logged.version).tags.get(
            f"{TAG}rolled_back_at"
        )
        if rolled_back and verdict["promote"]:  # a rollback is a person's decision: it stands
            verdict.update(verdict="reject", promote=False)
            verdict["reasons"].append(
                f"fail: version {logged.version} was rolled back at {rolled_back}; make it champion "
                f"again by hand: curagate registry rollback --to {logged.version}"
            )
        previous = str(current.version) if current is not None else None
        if verdict["promote"]:
            client.set_registered_model_alias(registry.model_name, registry.champion_alias, logged.version)
            history = _history(client, registry)
            if previous is not None and (not history or history[-1] != previous):
                history.append(previous)  # an alias set by hand joins the history
            _set_history(client, registry, [*history, logged.version])
        champion = logged.version if verdict["promote"] else previous
        block = champion_block(verdict, version=logged.version, previous=previous, champion=champion)
        _record_decision(client, registry, logged, block, verdict, sample_source)
    except _mlflow_errors() as exc:
        raise RegistryError(f"registry {backend.tracking_uri}: {exc}") from exc
    return {**block, "detail": verdict}


def _record_decision(
    client: Any, registry: RegistryParams, logged: Logged, block: dict, verdict: dict, sample: str | None
) -> None:
    when = _now()
    tags = {
        f"{TAG}promotion_verdict": block["verdict"],
        f"{TAG}promotion_decided_at": when,
        f"{TAG}promotion_compared_with": block["previous_champion_version"] or "none",
        f"{TAG}promotion_reasons": _clip(block["reasons"]),
        f"{TAG}production_sample": str(sample) if sample else "none",
    }
    for key in ("test_challenger", "test_champion", "test_difference", "production_challenger",
                "production_champion", "production_difference"):  # fmt: skip
        if key in block:
            tags[f"{TAG}{key}"] = str(block[key])
    for key, value in tags.items():
        client.set_model_version_tag(registry.model_name, logged.version, key, value)
    lines = [f"{block['verdict']} ({when}) vs champion {block['previous_champion_version'] or 'none'}:"]
    lines += [f"- {r}" for r in verdict["reasons"]]
    client.update_model_version(registry.model_name, logged.version, description=_clip("\n".join(lines)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "promotion.json"
        path.write_text(json.dumps({"decided_at": when, **block, "detail": verdict}, indent=2) + "\n")
        client.log_artifact(logged.run_id, str(path), "promotion")


def rollback(*, params: Params, to: str | None = None) -> dict[str, Any]:
    """Move the champion alias back to the previous champion (or to version ``to``); recorded
    on both versions and in the champion history.

    Raises:
        RegistryError: no registry, no champion, no previous champion, or an unknown version.
    """
    registry = params.registry
    backend = backend_of(registry, params.base_dir)
    try:
        client = _client(backend, create=False)
        current = _champion(client, registry)
        if current is None:
            raise RegistryError(
                f"{registry.model_name}: no {registry.champion_alias!r} version to roll back from"
            )
        history = _history(client, registry)
        if not history or history[-1] != str(current.version):
            history.append(str(current.version))
        if to is None:
            if len(history) < 2:
                raise RegistryError(
                    f"{registry.model_name}: version {current.version} is the only champion there has been; "
                    "nothing to roll back to"
                )
            target, history = history[-2], history[:-1]
        else:
            try:
                client.get_model_version(registry.model_name, to)
            except _mlflow_errors() as exc:
                raise RegistryError(f"{registry.model_name}: no version {to!r}") from exc
            target, history = str(to), [*history, str(to)]
        client.set_registered_model_alias(registry.model_name, registry.champion_alias, target)
        _set_history(client, registry, history)
        when = _now()
        client.set_model_version_tag(registry.model_name, str(current.version), f"{TAG}rolled_back_at", when)
        client.set_model_version_tag(registry.model_name, target, f"{TAG}restored_at", when)
        if f"{TAG}rolled_back_at" in client.get_model_version(registry.model_name, target).tags:
            client.delete_model_version_tag(registry.model_name, target, f"{TAG}rolled_back_at")
        client.set_model_version_tag(registry.model_name, target, f"{TAG}restored_from", str(current.version))
    except _mlflow_errors() as exc:
        raise RegistryError(f"registry {backend.tracking_uri}: {exc}") from exc
    return {"from_version": str(current.version), "to_version": target, "history": history, "at": when}


def show(*, params: Params) -> dict[str, Any]:
    """The registered model: champion, champion history and every version with its verdict.

    Raises:
        RegistryError: no registry yet.
    """
    registry = params.registry
    backend = backend_of(registry, params.base_dir)
    try:
        client = _client(backend, create=False)
        current = _champion(client, registry)
        versions = client.search_model_versions(f"name = '{registry.model_name}'")
        history = _history(client, registry)
    except _mlflow_errors() as exc:
        raise RegistryError(f"registry {backend.tracking_uri}: {exc}") from exc
    rows = [
        {
            "version": str(v.version),
            "run_id": v.run_id,
            "adapter_md5": v.tags.get(f"{TAG}adapter_md5", ""),
            "data_md5": v.tags.get(f"{TAG}data_md5", ""),
            "verdict": v.tags.get(f"{TAG}promotion_verdict", "not compared"),
            "test_difference": v.tags.get(f"{TAG}test_difference", ""),
            "aliases": list(v.aliases),
        }
        for v in sorted(versions, key=lambda v: int(v.version))
    ]
    return {
        "tracking_uri": backend.tracking_uri,
        "ui": backend.ui_command,
        "model": registry.model_name,
        "champion": str(current.version) if current is not None else None,
        "history": history,
        "versions": rows,
    }


def download_champion(dest: Path, *, params: Params) -> Path:
    """Copy the champion's adapter directory to ``dest`` (what a predict step serves).

    Raises:
        RegistryError: no registry or no champion.
    """
    registry = params.registry
    backend = backend_of(registry, params.base_dir)
    try:
        client = _client(backend, create=False)
        current = _champion(client, registry)
        if current is None:
            raise RegistryError(f"{registry.model_name}: no {registry.champion_alias!r} version yet")
        dest.mkdir(parents=True, exist_ok=True)
        path = client.download_artifacts(current.run_id, ADAPTER_DIR, str(dest))
        # training.json beside adapter/: the base model and label set predict loads it with
        client.download_artifacts(current.run_id, TRAINING_JSON, str(dest))
    except _mlflow_errors() as exc:
        raise RegistryError(f"registry {backend.tracking_uri}: {exc}") from exc
    return Path(path)
