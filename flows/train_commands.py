"""CLI commands for the training half: gate, train, evaluate, sweep.

`register(app)` adds them to the main Typer app (flows/cli.py). These only wire: read
files, call the pure gate or the training recipe, write outputs, print a summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.console import Console

from curation.gate import evaluate_gate, format_failures
from schemas.params import ParamsError
from schemas.training_params import TrainingParams, load_training_params

log = logging.getLogger(__name__)
console = Console(stderr=True)

CuratedOpt = Annotated[
    Path, typer.Option("--curated", help="curated dir: train/test.parquet, quality.json, labels.json")
]
ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml")]
GateOpt = Annotated[Path, typer.Option("--gate", help="gate.json written by `curagate gate`")]
ModelDirOpt = Annotated[Path, typer.Option("--model-dir", help="holds adapter/ and training.json")]


def _load(params: Path) -> TrainingParams:
    try:
        return load_training_params(params)
    except ParamsError as exc:
        console.print(f"[red]params error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        console.print(f"[red]{path}: not found[/red]")
        raise typer.Exit(2)
    return json.loads(path.read_text(encoding="utf-8"))


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def gate(
    curated: CuratedOpt = Path("data/curated"),
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option("--out", help="gate.json to write")] = Path("data/curated/gate.json"),
    override: Annotated[
        bool, typer.Option("--override", help="allow training despite failed thresholds")
    ] = False,
) -> None:
    """Check quality.json against the gate thresholds; exit 1 when any fails."""
    from training.train import file_md5

    thresholds = _load(params).gate
    quality_path = curated / "quality.json"
    report = evaluate_gate(_read_json(quality_path), thresholds=thresholds, override=override)
    report["quality_file"] = str(quality_path)
    report["quality_md5"] = file_md5(quality_path)
    if (curated / "train.parquet").is_file():
        report["data_md5"] = file_md5(curated / "train.parquet")  # the data version the verdict is for
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    passed = sum(c["passed"] for c in report["checks"])
    if report["passed"]:
        console.print(f"[green]gate passed[/green]: {passed}/{len(report['checks'])} checks -> {out}")
        return
    console.print(f"[red]gate failed[/red]: {len(report['failed'])} threshold(s) -> {out}")
    for line in format_failures(report):
        console.print(f"  {line}")
    if override:
        console.print("[yellow]--override: training allowed anyway; recorded in gate.json[/yellow]")
        return
    raise typer.Exit(1)


def train(
    curated: CuratedOpt = Path("data/curated"),
    params: ParamsOpt = Path("params.yaml"),
    gate_file: GateOpt = Path("data/curated/gate.json"),
    model_dir: ModelDirOpt = Path("models"),
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Train a LoRA adapter on curated train.parquet, if gate.json allows it."""
    from training.train import GateError, train_from_curated

    _setup_logging()
    settings = _load(params).train
    try:
        record = train_from_curated(
            curated, settings, model_dir, gate_path=gate_file, show_progress=not no_progress
        )
    except GateError as exc:
        console.print(f"[red]training refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"adapter -> {record['adapter_dir']}: {record['train_examples']} examples, "
        f"{record['steps']} steps, {record['train_seconds']:.0f}s, "
        f"{record['tokens_per_second']} tokens/s, final loss {record['final_loss']}, "
        f"device {record['device']}"
    )


def evaluate(
    curated: CuratedOpt = Path("data/curated"),
    params: ParamsOpt = Path("params.yaml"),
    model_dir: ModelDirOpt = Path("models"),
    out: Annotated[Path, typer.Option("--out", help="flat metrics for DVC")] = Path("reports/eval.json"),
    detail: Annotated[Path, typer.Option("--detail", help="per-class, confusions, errors")] = Path(
        "reports/eval_detail.json"
    ),
    html: Annotated[Path, typer.Option("--html", help="HTML section with plots")] = Path("reports/eval.html"),
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Compare the base model (label-list prompt) with the adapter on the test split."""
    from training.evaluate import evaluate_adapter, write_eval_outputs
    from training.train import ADAPTER_DIR, TRAINING_JSON, read_label_set

    _setup_logging()
    settings = _load(params).evaluate
    record = _read_json(model_dir / TRAINING_JSON)
    if record.get("task") != "classification":
        console.print("[red]evaluate scores classification adapters only[/red]")
        raise typer.Exit(2)
    test = pl.read_parquet(curated / "test.parquet")
    label_set = read_label_set(curated, test) or []
    result = evaluate_adapter(
        test,
        model_dir / ADAPTER_DIR,
        settings,
        label_set=label_set,
        training_record=record,
        show_progress=not no_progress,
    )
    flat = write_eval_outputs(
        result, eval_json=out, detail_json=detail, html_path=html, training_record=record
    )
    for side, r in result["sides"].items():
        console.print(
            f"{side:8s} prompt={r['prompt_form']:7s} accuracy {r['accuracy']:.3f} "
            f"macro-F1 {r['macro_f1']:.3f} invalid {r['invalid_rate']:.3f}"
        )
    console.print(f"eval -> {out}, {detail}, {html}; gain {flat.get('accuracy_gain')}")


def sweep(
    curated: CuratedOpt = Path("data/curated"),
    params: ParamsOpt = Path("params.yaml"),
    uncurated: Annotated[
        Path | None,
        typer.Option("--uncurated", help="a second dir (train/test.parquet) to compare with"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="output dir")] = Path("reports/sweep"),
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Learning curve: adapter accuracy vs train examples (curated vs uncurated)."""
    from training.sweep import run_sweep

    _setup_logging()
    settings = _load(params)
    datasets = {"curated": curated}
    if uncurated is not None:
        datasets["uncurated"] = uncurated
    result = run_sweep(
        datasets,
        settings.train,
        settings.evaluate,
        settings.sweep,
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
