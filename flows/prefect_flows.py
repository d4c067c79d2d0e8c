"""Prefect flows: `curate-dataset`, `train-adapter`, `pipeline`, `monitor` (and `review-sync`,
from flows/review_flow.py).

Only wiring. `curate-dataset` runs the pipeline's table through the same loop as the CLI,
each step as a Prefect task wrapping the step's plain function; gate, train and evaluate
tasks wrap the functions of flows/modeling.py that the CLI commands call too. Retries go
only on steps that touch files. `pipeline` runs `dvc repro` itself, so both paths leave
the same dvc.lock. Every run publishes a markdown artifact (quality metrics + gate verdict)
and a link to report.html, and returns the data version (md5 of curated train.parquet) with
the gate verdict. Runs without a server too (Prefect's ephemeral mode).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows.files import output_frames, read_reviews, write_outputs
from flows.modeling import evaluate_curated, gate_curated, read_json_if_present, train_curated
from flows.pipeline import run_curation
from flows.steps import Step
from schemas.gate import GateRecord, format_failures
from schemas.manifest import file_md5
from schemas.params import (
    DEFAULT_CURATED_DIR,
    DEFAULT_MODEL_DIR,
    DEFAULT_REPORTS_DIR,
    Params,
    find_params,
    load_params,
)

IO_RETRIES = 2  # steps that read or write files may meet a transient error; compute steps never retry


def run_as_task(step: Step, kwargs: dict[str, Any]) -> Any:
    """The runner's step caller for Prefect: the step's own function as a task of its name.

    No cache: a step's inputs are whole frames, and hashing them would cost more than the step.
    """
    runnable = task(step.call, name=step.name, retries=IO_RETRIES if step.io else 0, cache_policy=NONE)
    return runnable(**kwargs)


@task(name="write-outputs", retries=IO_RETRIES, cache_policy=NONE)
def write_task(files: dict[str, Any], out: Path) -> list[str]:
    """Write every curated file (each checked against its pandera contract), all or nothing."""
    return [str(p) for p in write_outputs(files, out)]


@task(name="gate", retries=IO_RETRIES, cache_policy=NONE)
def gate_task(curated: Path, params: Params, out: Path, override: bool) -> GateRecord:
    """gate.json for ``curated`` (pass or fail)."""
    return gate_curated(curated, params=params, out=out, override=override)


@task(name="train", cache_policy=NONE)  # no retries: a failed training is looked at, not re-run
def train_task(curated: Path, params: Params, gate: Path, model_dir: Path) -> dict[str, Any]:
    """adapter/ and training.json under ``model_dir``, if the gate allows it."""
    return train_curated(curated, params=params, gate=gate, model_dir=model_dir)


@task(name="evaluate", cache_policy=NONE)
def evaluate_task(curated: Path, params: Params, model_dir: Path, reports: Path) -> dict[str, Any]:
    """eval.json, eval_detail.json, eval.html under ``reports``; returns eval.json's metrics."""
    flat, _ = evaluate_curated(
        curated,
        params=params,
        model_dir=model_dir,
        out=reports / "eval.json",
        detail=reports / "eval_detail.json",
        html=reports / "eval.html",
    )
    return flat


# ── dvc ──────────────────────────────────────────────────────────────────────────────


def _venv_env() -> dict[str, str]:
    """This interpreter's bin directory first on PATH, so dvc.yaml's `curagate` is this one."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@task(name="dvc-repro", cache_policy=NONE)
def dvc_repro_task(repo: Path, targets: list[str], force: bool) -> int:
    """`dvc repro [targets]` in ``repo``, its output streamed to the run log; returns the exit code."""
    logger = get_run_logger()
    dvc = Path(sys.executable).parent / "dvc"
    cmd = [str(dvc) if dvc.exists() else "dvc", "repro", *(["--force"] if force else []), *targets]
    logger.info("$ %s  (in %s)", " ".join(cmd), repo)
    proc = subprocess.Popen(
        cmd, cwd=repo, env=_venv_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        logger.info("%s", line.rstrip())
    return proc.wait()


# ── artifacts ────────────────────────────────────────────────────────────────────────


def verdict_of(gate: dict[str, Any] | GateRecord | None) -> str:
    """passed | failed | overridden | missing."""
    if gate is None:
        return "missing"
    if isinstance(gate, GateRecord):
        gate = gate.model_dump()
    if gate.get("passed"):
        return "passed"
    return "overridden" if gate.get("allowed") else "failed"


def quality_markdown(
    quality: dict[str, Any] | None,
    gate: dict[str, Any] | GateRecord | None,
    data_version: str | None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A markdown summary: data version, gate verdict (failed checks), quality metrics table."""
    lines = [
        "# Curation quality",
        "",
        f"- data version (md5 of curated train.parquet): `{data_version or 'none'}`",
        f"- gate: **{verdict_of(gate).upper()}**",
    ]
    if gate is not None:
        lines += [f"  - {failure}" for failure in format_failures(gate)]
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: `{value}`")
    if quality:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {quality[key]} |" for key in sorted(quality)]
    return "\n".join(lines) + "\n"


def publish(
    curated: Path,
    gate: dict[str, Any] | GateRecord | None,
    *,
    extra: dict[str, Any] | None = None,
    eval_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish the quality/gate artifact and the report link; return the run summary."""
    train_file = curated / "train.parquet"
    data_version = file_md5(train_file) if train_file.is_file() else None
    quality = read_json_if_present(curated / "quality.json")
    if isinstance(gate, GateRecord):
        gate = gate.model_dump()
    markdown = quality_markdown(quality, gate, data_version, extra)
    if eval_metrics:
        markdown += "\n## Evaluation\n\n| metric | value |\n|---|---|\n"
        markdown += "".join(f"| {k} | {v} |\n" for k, v in sorted(eval_metrics.items()))
    create_markdown_artifact(
        markdown=markdown, key="curation-quality", description=f"gate {verdict_of(gate)}, data {data_version}"
    )
    report = curated / "report.html"
    if report.is_file():
        create_link_artifact(
            link=report.resolve().as_uri(),
            link_text="report.html",
            key="curation-report",
            description="HTML quality report of this run",
        )
    return {
        "data_version": data_version,
        "gate": verdict_of(gate),
        "gate_failed": list(gate.get("failed", [])) if gate else [],
        "quality": quality,
        "report": str(report.resolve()) if report.is_file() else None,
        **(extra or {}),
    }


# ── flows ────────────────────────────────────────────────────────────────────────────


@flow(name="curate-dataset")
def curate_dataset(
    train: str | None = None,
    test: str | None = None,
    params_path: str | None = None,
    out: str = DEFAULT_CURATED_DIR,
    reviews: str | None = None,
    gate_out: str | None = None,
    override: bool = False,
    fail_on_gate: bool = False,
) -> dict[str, Any]:
    """Curate raw train/test into ``out``, then gate it; returns data version + gate verdict.

    Args:
        train, test: raw files; default ``data.train`` / ``data.test`` of params.yaml.
        params_path: default ./params.yaml, else the built-in defaults.
        gate_out: gate.json path; default ``<out>/gate.json`` (where `curagate train` looks).
        fail_on_gate: end the run Failed when the gate fails (after publishing artifacts).
    """
    logger = get_run_logger()
    params = load_params(find_params(params_path))
    out_dir = Path(out)
    gate_path = Path(gate_out) if gate_out else out_dir / "gate.json"
    test_file = test or params.data.test
    reviews_file = reviews or params.review.decisions
    embed = None
    if "embedding" in params.noise.features:
        from flows.embed import embed_texts as embed  # loads a model: only when asked for
    run = run_curation(
        Path(train or params.data.train),
        Path(test_file) if test_file else None,
        params=params,
        reviews=read_reviews(Path(reviews_file) if reviews_file else None),
        show_progress=False,
        call=run_as_task,
        note=logger.info,
        embed=embed,
    )
    written = write_task(output_frames(run.values, run.stages_run), out_dir)
    logger.info("wrote %d files to %s; seconds per step %s", len(written), out_dir, run.stage_seconds)
    gate = gate_task(out_dir, params, gate_path, override)
    summary = publish(out_dir, gate)
    logger.info("data version %s, gate %s", summary["data_version"], summary["gate"])
    if fail_on_gate and not gate.allowed:
        raise RuntimeError("gate failed: " + "; ".join(format_failures(gate)))
    return summary


@flow(name="train-adapter")
def train_adapter(
    curated: str = DEFAULT_CURATED_DIR,
    params_path: str | None = None,
    gate: str | None = None,
    model_dir: str = DEFAULT_MODEL_DIR,
    reports: str = DEFAULT_REPORTS_DIR,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train (and evaluate) an adapter; refuses unless gate.json passed for this data version."""
    logger = get_run_logger()
    params = load_params(find_params(params_path))
    curated_dir = Path(curated)
    gate_path = Path(gate) if gate else curated_dir / "gate.json"
    record = train_task(curated_dir, params, gate_path, Path(model_dir))
    logger.info("adapter: %d steps, final loss %s", record["steps"], record["final_loss"])
    metrics = evaluate_task(curated_dir, params, Path(model_dir), Path(reports)) if evaluate else None
    return publish(
        curated_dir,
        read_json_if_present(gate_path),
        extra={"adapter": record["adapter_dir"], "final_loss": record["final_loss"]},
        eval_metrics=metrics,
    )


@flow(name="pipeline")
def pipeline(repo: str = ".", targets: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Everything, versioned with DVC: `dvc repro` (curate, gate, train, evaluate) in ``repo``.

    Raises:
        RuntimeError: `dvc repro` failed (a failed gate among others), after publishing.
    """
    root = Path(repo)
    code = dvc_repro_task(root, list(targets or []), force)
    lock = root / "dvc.lock"
    curated = root / DEFAULT_CURATED_DIR
    summary = publish(
        curated,
        read_json_if_present(curated / "gate.json"),
        extra={"dvc_lock_md5": file_md5(lock) if lock.is_file() else None, "dvc_repro_exit": code},
        eval_metrics=read_json_if_present(root / DEFAULT_REPORTS_DIR / "eval.json"),
    )
    if code != 0:
        raise RuntimeError(f"dvc repro exited with {code}; gate {summary['gate']} {summary['gate_failed']}")
    return summary


# ── the production loop: monitor ─────────────────────────────────────────────────────

MONITOR_DIR = f"{DEFAULT_REPORTS_DIR}/monitor"
PIPELINE_DEPLOYMENT = "pipeline/local"


@task(name="predict", cache_policy=NONE)  # no retries: a bad traffic file does not heal
def predict_task(traffic: Path, out: Path, params: Params, model_dir: Path) -> dict[str, Any]:
    """predictions.parquet (+ its quarantine file) for the traffic file."""
    from flows.monitoring import predict_file

    return predict_file(traffic, out, params=params, model_dir=model_dir)


@task(name="drift-checks", cache_policy=NONE)
def drift_task(
    reference: Path,
    predictions: Path,
    out: Path,
    params: Params,
    baseline: Path | None,
    model_dir: Path | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """monitor.json, monitor_detail.json, monitor.html; returns (flat metrics, detail)."""
    from flows.monitoring import monitor_files

    return monitor_files(reference, predictions, out, params=params, baseline=baseline, model_dir=model_dir)


@task(name="push-review-sample", cache_policy=NONE)
def push_review_sample(predictions: Path, params: Params) -> dict[str, Any] | None:
    """Step 3: send a sample of the predictions to Label Studio (`review push-predictions`).
    A no-op unless ``monitor.review: true``; the review side's push function is called here."""
    if not params.monitor.review:
        return None
    import polars as pl

    from flows.labelstudio import push_prediction_sample

    report = push_prediction_sample(pl.read_parquet(predictions), params)
    get_run_logger().info(
        "review sample: %d of %d predictions sampled, %d new tasks (%d already in Label Studio)",
        report.sampled,
        report.predictions,
        report.imported,
        report.skipped,
    )
    return dataclasses.asdict(report)


@task(name="pull-review-decisions", cache_policy=NONE)
def pull_review_decisions(params: Params) -> dict[str, Any] | None:
    """Step 4: pull reviewers' decisions on predictions; returns at least
    ``{"production_accuracy": float | None}``. A no-op unless ``monitor.review: true``."""
    if not params.monitor.review:
        return None
    from flows.labelstudio import pull_prediction_reviews

    report = pull_prediction_reviews(params)
    get_run_logger().info(
        "review decisions: %d reviewed (%d unsure), %d new train rows -> %s",
        report.reviewed,
        report.unsure,
        report.train_rows,
        report.reviewed_file,
    )
    return {**dataclasses.asdict(report), "production_accuracy": report.estimate.get("accuracy")}


@task(name="trigger-pipeline", cache_policy=NONE)
def trigger_pipeline_task(deployment: str, parameters: dict[str, Any]) -> str:
    """Start a run of the `pipeline` deployment without waiting for it; returns its run id."""
    from prefect.deployments import run_deployment

    run = run_deployment(name=deployment, parameters=parameters, timeout=0)
    return str(run.id)


def monitor_markdown(flat: dict[str, Any], detail: dict[str, Any], decision: dict[str, Any]) -> str:
    """What the monitor run saw, what it did and why."""
    lines = [
        "# Monitor",
        "",
        f"- verdict: **{flat['verdict'].upper()}**"
        + (f" (failed: {flat['failed_checks']})" if flat["failed_checks"] else ""),
        f"- predictions: `{detail['predictions']}` ({flat['rows']} rows, {flat['windows']} window(s); "
        f"{flat['windows_drift']} drift, {flat['windows_warn']} warn), "
        f"model {', '.join(detail['model_versions'])}",
        f"- action: **{decision['action']}**",
    ]
    lines += [f"  - {reason}" for reason in decision["reasons"]]
    if decision.get("pipeline_run_id"):
        lines.append(f"- triggered `{decision['deployment']}`: flow run `{decision['pipeline_run_id']}`")
    lines += ["", "| check (last window) | level | value | warn at | drift at |", "|---|---|---|---|---|"]
    lines += [
        f"| {c['check']} | {c['level']} | {c['value']:.4f} | {c['warn']} | {c['drift']} |"
        for c in detail["windows"][-1]["checks"]
    ]
    terms = detail["windows"][-1]["stats"]["top_new_terms"]
    if terms:
        lines += ["", "New terms: " + ", ".join(f"`{t}` ({n})" for t, n in terms)]
    return "\n".join(lines) + "\n"


@flow(name="monitor")
def monitor(
    traffic: str | None = None,
    predictions: str | None = None,
    reference: str = DEFAULT_CURATED_DIR,
    model_dir: str = DEFAULT_MODEL_DIR,
    out: str = MONITOR_DIR,
    baseline_predictions: str | None = None,
    params_path: str | None = None,
    repo: str = ".",
    deployment: str = PIPELINE_DEPLOYMENT,
    trigger: bool = True,
) -> dict[str, Any]:
    """The production loop's watch: predict on new traffic, check drift, (review), retrain.

    1. predict on ``traffic`` (default ``monitor.traffic``) into ``<out>/predictions.parquet``,
       or take already logged ``predictions``; 2. the drift checks against ``reference``;
    3-4. push a review sample and pull decisions (no-ops unless ``monitor.review``);
    5. on a ``drift`` verdict, or production accuracy below ``monitor.min_production_accuracy``,
       start the ``pipeline`` deployment (``dvc repro`` in ``repo``) without waiting for it.
    What it saw, did and why is published as artifacts (markdown + a table of windows).
    """
    from curation.drift import retrain_decision

    logger = get_run_logger()
    params = load_params(find_params(params_path))
    out_dir = Path(out)
    traffic = traffic or params.monitor.traffic
    if predictions is None:
        if traffic is None:
            raise ValueError(
                "monitor needs traffic (a file to predict on, or monitor.traffic) or predictions"
            )
        summary = predict_task(Path(traffic), out_dir / "predictions.parquet", params, Path(model_dir))
        logger.info("predicted %d rows (%d quarantined) in %ss", summary["predictions"],
                    summary["quarantined"], summary["seconds"])  # fmt: skip
        predictions = summary["out"]
    has_model = (Path(model_dir) / "training.json").is_file()
    baseline = Path(baseline_predictions) if baseline_predictions else None
    flat, detail = drift_task(
        Path(reference), Path(predictions), out_dir, params, baseline,
        Path(model_dir) if baseline is None and has_model else None,
    )  # fmt: skip
    logger.info("drift verdict %s %s", flat["verdict"], flat["failed_checks"])
    pushed = push_review_sample(Path(predictions), params)
    pulled = pull_review_decisions(params)
    accuracy = (pulled or {}).get("production_accuracy")
    retrain, reasons = retrain_decision(
        flat["verdict"], detail["failed_checks"], accuracy,
        min_production_accuracy=params.monitor.min_production_accuracy,
    )  # fmt: skip
    decision: dict[str, Any] = {"retrain": retrain, "reasons": reasons, "deployment": deployment,
                                "pipeline_run_id": None}  # fmt: skip
    if retrain and trigger:
        decision["pipeline_run_id"] = trigger_pipeline_task(deployment, {"repo": repo})
        decision["action"] = "retrain triggered"
    else:
        decision["action"] = "retrain needed, trigger off" if retrain else "none"
    logger.info("%s: %s", decision["action"], "; ".join(reasons))
    create_markdown_artifact(
        markdown=monitor_markdown(flat, detail, decision), key="monitor",
        description=f"verdict {flat['verdict']}, {decision['action']}",
    )  # fmt: skip
    create_table_artifact(
        table=[{"window": w["window"], "start": w["start"], "rows": w["rows"], "verdict": w["verdict"],
                "failed": ", ".join(w["failed_checks"])} for w in detail["windows"]],
        key="monitor-windows", description="drift verdict per window",
    )  # fmt: skip
    html = out_dir / "monitor.html"
    create_link_artifact(link=html.resolve().as_uri(), link_text="monitor.html", key="monitor-report")
    return {**flat, **decision, "review_push": pushed, "review_pull": pulled, "production_accuracy": accuracy}


def monitor_deployment(name: str, params: Params) -> Any:
    """The `monitor/<name>` deployment: on ``monitor.schedule`` (cron) when set, reading
    ``monitor.traffic`` by default."""
    cfg = params.monitor
    return monitor.to_deployment(
        name=name, cron=cfg.schedule, parameters={"traffic": cfg.traffic} if cfg.traffic else None
    )


__all__ = ["curate_dataset", "monitor", "pipeline", "train_adapter"]
