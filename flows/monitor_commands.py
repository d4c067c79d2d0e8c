"""`curagate predict` and `curagate monitor`: parse options, call flows/monitoring.py, print a
summary. `register(app)` adds them to the main Typer app (flows/cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.console import console, fail, load_cli_params
from schemas.params import DEFAULT_CURATED_DIR, DEFAULT_MODEL_DIR, DEFAULT_REPORTS_DIR

ParamsOpt = Annotated[
    Path | None, typer.Option("--params", help="params.yaml; default ./params.yaml, else built-in defaults")
]


def predict(
    traffic: Annotated[
        Path, typer.Option("--in", help="texts to label (.jsonl, .csv, .parquet; no label needed)")
    ],
    out: Annotated[Path, typer.Option("--out", help="predictions.parquet")] = Path("predictions.parquet"),
    model_dir: Annotated[Path, typer.Option("--model-dir", help="holds adapter/ and training.json")] = Path(
        DEFAULT_MODEL_DIR
    ),
    params: ParamsOpt = None,
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="version recorded per row; default the adapter's md5"),
    ] = None,
    sample_rows: Annotated[
        str | None,
        typer.Option(
            "--sample-rows",
            help="a seeded sample (monitor.seed) of this many valid rows; default (or null) all",
        ),
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Label new texts with the adapter (label-constrained, with a confidence); bad lines are
    quarantined beside --out with their reason."""
    import dataclasses
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from curation.ingest import InputFileError
    from flows.monitoring import predict_file
    from training.predict import PredictorError

    cfg = load_cli_params(params)
    sample = _sample_rows(sample_rows)
    if model_version is not None:
        cfg = dataclasses.replace(cfg, predict=dataclasses.replace(cfg.predict, model_version=model_version))
    progress = Progress(
        TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=no_progress, transient=True,  # an error leaves its line alone
    )  # fmt: skip
    bar = progress.add_task("predict", total=None)

    def stop(signum: int, frame: object) -> None:
        # SIGTERM (a scheduler's kill, `timeout`): unwind so the temporary files are removed
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        with progress:
            summary = predict_file(
                traffic,
                out,
                params=cfg,
                model_dir=model_dir,
                on_progress=lambda done, total: progress.update(bar, completed=done, total=total),
                sample_rows=sample,
            )
    except (InputFileError, PredictorError) as exc:
        fail(exc)
    console.print(
        f"{summary['input_rows']} lines -> [green]{summary['predictions']} predictions[/] "
        f"-> {summary['out']}, "
        f"{summary['quarantined']} quarantined -> {summary['quarantine']}; model {summary['model_version']}; "
        f"{summary['seconds']:.1f} s"
    )


def _sample_rows(value: str | None) -> int | None:
    """--sample-rows as a count; "null"/"None" (a null param templated by DVC) mean all rows."""
    if value is None or value.strip().lower() in ("null", "none", "all", ""):
        return None
    if not value.strip().isdigit() or int(value) < 1:
        fail(f"--sample-rows {value!r}: a number of rows (>= 1), or null for all")
    return int(value)


def monitor(
    predictions: Annotated[
        Path, typer.Option("--predictions", help="predictions.parquet from `curagate predict`")
    ],
    reference: Annotated[
        Path, typer.Option("--reference", help="curated dir (train.parquet, test.parquet)")
    ] = Path(DEFAULT_CURATED_DIR),
    out: Annotated[Path, typer.Option("--out", help="output dir: monitor.json, monitor.html")] = Path(
        f"{DEFAULT_REPORTS_DIR}/monitor"
    ),
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline-predictions", help="the model's predictions on the curated test split"),
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model-dir", help="without --baseline-predictions: predict the test split with this model"
        ),
    ] = None,
    params: ParamsOpt = None,
) -> None:
    """Drift checks of a window of predictions against the curated training data; exit 0 for
    every verdict (ok / warn / drift: read monitor.json)."""
    from flows.monitoring import MonitorError, monitor_files
    from training.predict import PredictorError

    cfg = load_cli_params(params)
    try:
        flat, result = monitor_files(
            reference, predictions, out, params=cfg, baseline=baseline, model_dir=model_dir
        )
    except (MonitorError, PredictorError) as exc:
        fail(exc)
    color = {"ok": "green", "warn": "yellow", "drift": "red"}[flat["verdict"]]
    failed = f" ({flat['failed_checks']})" if flat["failed_checks"] else ""
    console.print(
        f"verdict [{color}]{flat['verdict']}[/]{failed}; {flat['windows']} window(s), "
        f"{flat['windows_drift']} drift, {flat['windows_warn']} warn -> {out}/monitor.json, monitor.html"
    )
    for check in result["windows"][-1]["checks"]:
        console.print(f"  {check['check']:17s} {check['level']:5s} {check['value']:+.4f}  {check['what']}")
    if baseline is None and model_dir is None:
        console.print("  (no baseline predictions: confidence drift skipped; labels compared with train)")


def register(app: typer.Typer) -> None:
    """Add the predict and monitor commands to ``app``."""
    app.command("predict")(predict)
    app.command("monitor")(monitor)
