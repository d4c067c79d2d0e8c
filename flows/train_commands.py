"""`curagate gate|train|evaluate|sweep`: parse options, call flows/modeling.py, print a summary.

`register(app)` adds them to the main Typer app (flows/cli.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from flows.console import console, fail, load_cli_params
from schemas.params import DEFAULT_CURATED_DIR, DEFAULT_MODEL_DIR, DEFAULT_REPORTS_DIR

CuratedOpt = Annotated[
    Path, typer.Option("--curated", help="curated dir: train/test.parquet, quality.json, manifest.json")
]
ParamsOpt = Annotated[
    Path | None, typer.Option("--params", help="params.yaml; default ./params.yaml, else built-in defaults")
]
GateOpt = Annotated[Path | None, typer.Option("--gate", help="gate.json; default <curated>/gate.json")]
ModelDirOpt = Annotated[Path, typer.Option("--model-dir", help="holds adapter/ and training.json")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress")]


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def gate(
    curated: CuratedOpt = Path(DEFAULT_CURATED_DIR),
    params: ParamsOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="gate.json; default <curated>/gate.json")] = None,
    override: Annotated[
        bool, typer.Option("--override", help="allow training despite failed thresholds")
    ] = False,
) -> None:
    """Check quality.json (and the files behind it) against the gate thresholds; exit 1 on failure."""
    from flows.modeling import gate_curated  # polars, pydantic: loaded by the command, not --help
    from schemas.gate import GateError, format_failures

    cfg = load_cli_params(params)
    out = out or curated / "gate.json"
    try:
        record = gate_curated(curated, params=cfg, out=out, override=override)
    except GateError as exc:
        fail(exc)
    passed = sum(c.passed for c in record.checks)
    if record.passed:
        console.print(f"[green]gate passed[/green]: {passed}/{len(record.checks)} checks -> {out}")
        return
    console.print(f"[red]gate failed[/red]: {len(record.failed)} check(s) -> {out}")
    for line in format_failures(record):
        console.print(f"  {line}")
    if override:
        console.print("[yellow]--override: training allowed anyway; recorded in gate.json[/yellow]")
        return
    raise typer.Exit(1)


def train(
    curated: CuratedOpt = Path(DEFAULT_CURATED_DIR),
    params: ParamsOpt = None,
    gate_file: GateOpt = None,
    model_dir: ModelDirOpt = Path(DEFAULT_MODEL_DIR),
    no_progress: NoProgressOpt = False,
) -> None:
    """Train a LoRA adapter on curated train.parquet, if gate.json allows it for this data."""
    from flows.modeling import train_curated
    from schemas.gate import GateError

    _setup_logging()
    cfg = load_cli_params(params)
    try:
        record = train_curated(
            curated,
            params=cfg,
            gate=gate_file or curated / "gate.json",
            model_dir=model_dir,
            show_progress=not no_progress,
        )
    except GateError as exc:
        fail(f"training refused: {exc}", code=1)
    console.print(
        f"adapter -> {record['adapter_dir']}: {record['train_examples']} examples, "
        f"{record['steps']} steps, {record['train_seconds']:.0f}s, "
        f"{record['tokens_per_second']} tokens/s, final loss {record['final_loss']}, "
        f"device {record['device']}"
    )


def evaluate(
    curated: CuratedOpt = Path(DEFAULT_CURATED_DIR),
    params: ParamsOpt = None,
    model_dir: ModelDirOpt = Path(DEFAULT_MODEL_DIR),
    out: Annotated[Path, typer.Option("--out", help="flat metrics for DVC")] = Path(
        f"{DEFAULT_REPORTS_DIR}/eval.json"
    ),
    detail: Annotated[Path, typer.Option("--detail", help="per-class, confusions, errors")] = Path(
        f"{DEFAULT_REPORTS_DIR}/eval_detail.json"
    ),
    html: Annotated[Path, typer.Option("--html", help="HTML section with plots")] = Path(
        f"{DEFAULT_REPORTS_DIR}/eval.html"
    ),
    no_progress: NoProgressOpt = False,
) -> None:
    """Compare the base model with the adapter on the held-out test split."""
    from flows.modeling import ModelStageError, evaluate_curated

    _setup_logging()
    cfg = load_cli_params(params)
    try:
        flat, result = evaluate_curated(
            curated,
            params=cfg,
            model_dir=model_dir,
            out=out,
            detail=detail,
            html=html,
            show_progress=not no_progress,
        )
    except ModelStageError as exc:
        fail(exc)
    for side, r in result.get("sides", {}).items():
        if "accuracy" in r:
            low, high = r.get("accuracy_ci", (None, None))
            interval = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
            console.print(
                f"{side:8s} accuracy {r['accuracy']:.3f}{interval} macro-F1 {r['macro_f1']:.3f} "
                f"invalid {r['invalid_rate']:.3f}"
            )
        else:  # instruction data: answer-token loss
            console.print(f"{side:8s} " + ", ".join(f"{k} {v}" for k, v in r.items() if isinstance(v, float)))
    console.print(f"verdict: {flat.get('verdict')} ({flat.get('verdict_reasons')})")
    console.print(f"eval -> {out}, {detail}, {html}")


def sweep(
    curated: CuratedOpt = Path(DEFAULT_CURATED_DIR),
    params: ParamsOpt = None,
    uncurated: Annotated[
        Path | None,
        typer.Option("--uncurated", help="a second dir (train/test.parquet) to compare with"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="output dir")] = Path(f"{DEFAULT_REPORTS_DIR}/sweep"),
    no_progress: NoProgressOpt = False,
) -> None:
    """Learning curve: adapter accuracy vs train examples (curated vs uncurated)."""
    from training.sweep import run_sweep

    _setup_logging()
    cfg = load_cli_params(params)
    datasets = {"curated": curated}
    if uncurated is not None:
        datasets["uncurated"] = uncurated
    result = run_sweep(
        datasets,
        cfg.train,
        cfg.evaluate,
        cfg.sweep,
        out_dir=out,
        test_dir=curated,
        show_progress=not no_progress,
    )
    for name, points in result["curves"].items():
        line = ", ".join(f"{p['train_examples']}: {p['accuracy']:.3f}" for p in points)
        console.print(f"{name}: {line}")
    console.print(f"sweep -> {out}")


def register(app: typer.Typer) -> None:
    """Add the gate, train, evaluate and sweep commands to ``app``."""
    app.command("gate")(gate)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("sweep")(sweep)
