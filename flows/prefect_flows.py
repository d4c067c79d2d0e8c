"""Prefect flows: `curate-dataset`, `train-adapter`, `pipeline` (and `review-sync`, from
flows/review_flow.py).

Only wiring. The tasks wrap the stage functions of flows/pipeline.py and the command
functions of flows/train_commands.py, the same code `curagate` and so `dvc repro` run;
`pipeline` runs `dvc repro` itself, so both paths leave the same dvc.lock. Every run
publishes a markdown artifact (quality metrics + gate verdict) and a link to report.html,
and returns the data version (md5 of curated train.parquet) with the gate verdict.
Runs without a server too (Prefect's ephemeral mode).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NONE

from curation.gate import format_failures
from flows import train_commands
from flows.pipeline import (
    CurationRun,
    curate_stage,
    decontam_stage,
    dedup_stage,
    ingest_stage,
    noise_stage,
    report_stage,
    scale_hooks,
    validate_stage,
    write_outputs,
)
from schemas.params import Params, load_params
from schemas.scale_params import scale_params_from_dict
from training.train import file_md5

# Stage tasks pass a CurationRun (polars frames) along: hashing it for a cache key would
# cost time for nothing, so no task caches.
NO_CACHE: dict[str, Any] = {"cache_policy": NONE}


def _done(run: CurationRun, stage: str, summary: str) -> CurationRun:
    run.stages_run.append(stage)
    get_run_logger().info("%s: %s", stage, summary)
    return run


# ── curation stage tasks: each wraps one stage function of flows/pipeline.py ─────────────


@task(name="ingest", retries=2, **NO_CACHE)
def ingest_task(train: Path, test: Path, params: Params, params_dir: Path) -> CurationRun:
    """Read both raw files into a fresh run (fresh on each retry, so retries are safe)."""
    run = CurationRun(params=params)
    return _done(run, "ingest", ingest_stage(run, train, test, params_dir))


@task(name="validate", **NO_CACHE)
def validate_task(run: CurationRun) -> CurationRun:
    """Schema checks; failures to quarantine."""
    return _done(run, "validate", validate_stage(run))


@task(name="dedup", **NO_CACHE)
def dedup_task(run: CurationRun) -> CurationRun:
    """Exact and near duplicates out."""
    return _done(run, "dedup", dedup_stage(run))


@task(name="decontam", **NO_CACHE)
def decontam_task(run: CurationRun) -> CurationRun:
    """Train rows copying test rows out."""
    return _done(run, "decontam", decontam_stage(run))


@task(name="noise", **NO_CACHE)
def noise_task(run: CurationRun) -> CurationRun:
    """Label-issue flags from out-of-fold probabilities."""
    return _done(run, "noise", noise_stage(run))


@task(name="curate", retries=2, **NO_CACHE)
def curate_task(run: CurationRun, reviews: Path | None) -> CurationRun:
    """Review policy (reads reviews.parquet when given)."""
    return _done(run, "curate", curate_stage(run, reviews))


@task(name="report", **NO_CACHE)
def report_task(run: CurationRun) -> CurationRun:
    """quality.json metrics and the HTML report."""
    return _done(run, "report", report_stage(run))


@task(name="write-outputs", retries=2, **NO_CACHE)
def write_task(run: CurationRun, out: Path) -> list[str]:
    """Write every curated file (each checked against its pandera contract)."""
    return [str(p) for p in write_outputs(run, out)]


# ── gate, train, evaluate: the `curagate` command functions, as `dvc repro` runs them ──────


def _call_command(name: str, command: Any, *, ok: tuple[int, ...] = (0,), **kwargs: Any) -> int:
    """Call a Typer command function; its typer.Exit becomes an exit code (or an error)."""
    try:
        command(**kwargs)
    except train_commands.typer.Exit as exc:
        if exc.exit_code in ok:
            return int(exc.exit_code)
        raise RuntimeError(f"`curagate {name}` exited with {exc.exit_code}") from exc
    return 0


@task(name="gate", retries=2, **NO_CACHE)
def gate_task(curated: Path, params_path: Path, out: Path, override: bool) -> dict[str, Any]:
    """`curagate gate`: write gate.json (pass or fail) and return it."""
    _call_command(
        "gate",
        train_commands.gate,
        ok=(0, 1),
        curated=curated,
        params=params_path,
        out=out,
        override=override,
    )
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return report


@task(name="check-gate", **NO_CACHE)
def check_gate_task(curated: Path, gate: Path) -> dict[str, Any]:
    """Refuse unless gate.json allows training for the current data version.

    Raises:
        GateError: no gate record, failed gate, or gate computed from other data.
    """
    from training.train import check_gate

    return check_gate(gate, curated / "quality.json", curated / "train.parquet")


@task(name="train", retries=2, **NO_CACHE)
def train_task(curated: Path, params_path: Path, gate: Path, model_dir: Path) -> dict[str, Any]:
    """`curagate train`: adapter/ and training.json under ``model_dir``."""
    _call_command(
        "train",
        train_commands.train,
        curated=curated,
        params=params_path,
        gate_file=gate,
        model_dir=model_dir,
        no_progress=True,
    )
    record: dict[str, Any] = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    return record


@task(name="evaluate", retries=2, **NO_CACHE)
def evaluate_task(curated: Path, params_path: Path, model_dir: Path, reports: Path) -> dict[str, Any]:
    """`curagate evaluate`: eval.json, eval_detail.json, eval.html under ``reports``."""
    out = reports / "eval.json"
    _call_command(
        "evaluate",
        train_commands.evaluate,
        curated=curated,
        params=params_path,
        model_dir=model_dir,
        out=out,
        detail=reports / "eval_detail.json",
        html=reports / "eval.html",
        no_progress=True,
    )
    flat: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return flat


# ── dvc ──────────────────────────────────────────────────────────────────────────────


def _venv_env() -> dict[str, str]:
    """This interpreter's bin directory first on PATH, so dvc.yaml's `curagate` is this one."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@task(name="dvc-repro", **NO_CACHE)
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


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def verdict_of(gate: dict[str, Any] | None) -> str:
    """passed | failed | overridden | missing."""
    if gate is None:
        return "missing"
    if gate.get("passed"):
        return "passed"
    return "overridden" if gate.get("allowed") else "failed"


def quality_markdown(
    quality: dict[str, Any] | None,
    gate: dict[str, Any] | None,
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
    gate: dict[str, Any] | None,
    *,
    extra: dict[str, Any] | None = None,
    eval_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish the quality/gate artifact and the report link; return the run summary."""
    train_file = curated / "train.parquet"
    data_version = file_md5(train_file) if train_file.is_file() else None
    quality = _read_json(curated / "quality.json")
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
    train: str = "data/raw/train.csv",
    test: str = "data/raw/test.csv",
    params_path: str = "params.yaml",
    out: str = "data/curated",
    reviews: str | None = None,
    gate_out: str | None = None,
    override: bool = False,
    fail_on_gate: bool = False,
) -> dict[str, Any]:
    """Curate raw train/test into ``out``, then gate it; returns data version + gate verdict.

    Args:
        gate_out: gate.json path; default ``<out>/gate.json`` (where `curagate train` looks).
        fail_on_gate: end the run Failed when the gate fails (after publishing artifacts).
    """
    logger = get_run_logger()
    params_file, out_dir = Path(params_path), Path(out)
    gate_path = Path(gate_out) if gate_out else out_dir / "gate.json"
    params = load_params(params_file)
    run = ingest_task(Path(train), Path(test), params, params_file.parent)
    run = validate_task(run)
    # params.yaml → scale: signatures on Dask, dedup's LSH index in Redis (same files either way)
    with scale_hooks(scale_params_from_dict(params.section("scale")), params) as (run.signer, run.candidates):
        run = dedup_task(run)
        run = decontam_task(run)
    run.signer = run.candidates = None  # free the remembered signatures before noise
    run = noise_task(run)
    run = curate_task(run, Path(reviews) if reviews else None)
    run = report_task(run)
    written = write_task(run, out_dir)
    logger.info("wrote %d files to %s", len(written), out_dir)
    gate = gate_task(out_dir, params_file, gate_path, override)
    summary = publish(out_dir, gate)
    logger.info("data version %s, gate %s", summary["data_version"], summary["gate"])
    if fail_on_gate and not gate.get("allowed"):
        raise RuntimeError("gate failed: " + "; ".join(format_failures(gate)))
    return summary


@flow(name="train-adapter")
def train_adapter(
    curated: str = "data/curated",
    params_path: str = "params.yaml",
    gate: str = "data/curated/gate.json",
    model_dir: str = "models",
    reports: str = "reports",
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train (and evaluate) an adapter; refuses unless gate.json passed for this data version."""
    logger = get_run_logger()
    curated_dir, gate_path = Path(curated), Path(gate)
    report = check_gate_task(curated_dir, gate_path)
    record = train_task(curated_dir, Path(params_path), gate_path, Path(model_dir))
    logger.info("adapter: %d steps, final loss %s", record["steps"], record["final_loss"])
    metrics = (
        evaluate_task(curated_dir, Path(params_path), Path(model_dir), Path(reports)) if evaluate else None
    )
    return publish(
        curated_dir,
        report,
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
    summary = publish(
        root / "data" / "curated",
        _read_json(root / "data" / "curated" / "gate.json"),
        extra={"dvc_lock_md5": file_md5(lock) if lock.is_file() else None, "dvc_repro_exit": code},
        eval_metrics=_read_json(root / "reports" / "eval.json"),
    )
    if code != 0:
        raise RuntimeError(f"dvc repro exited with {code}; gate {summary['gate']} {summary['gate_failed']}")
    return summary


__all__ = ["curate_dataset", "pipeline", "train_adapter"]
