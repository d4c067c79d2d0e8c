"""`curagate`: one command per stage. dvc.yaml and the Prefect flows call the same code."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from curation.ingest import InputFileError
from flows.pipeline import STAGES, run_curation, write_outputs
from schemas.params import ParamsError, load_params

app = typer.Typer(
    help="curagate: curate a labelled dataset, gate it on quality, train and evaluate an adapter.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

TrainOpt = Annotated[Path, typer.Option("--train", help="raw train file (.jsonl, .csv, .parquet)")]
TestOpt = Annotated[Path, typer.Option("--test", help="raw held-out test file")]
ParamsOpt = Annotated[
    Path | None, typer.Option("--params", help="params.yaml; without it built-in defaults apply")
]
OutOpt = Annotated[Path, typer.Option("--out", help="output directory")]
ReviewsOpt = Annotated[
    Path | None, typer.Option("--reviews", help="reviews.parquet from `curagate review pull`")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="no progress bar")]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    # libraries' INFO chatter (matplotlib's categorical-axis notes) is not for data engineers
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


def _run(
    stage: str, train: Path, test: Path, params: Path | None, out: Path, reviews: Path | None, quiet: bool
) -> None:
    try:
        cfg = load_params(params)
        run = run_curation(
            train,
            test,
            params=cfg,
            params_dir=params.parent if params else Path("."),
            until=stage,
            reviews_path=reviews,
            show_progress=not quiet,
        )
    except (InputFileError, ParamsError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    written = write_outputs(run, out)
    for path in written:
        console.print(f"  wrote {path}")
    if run.metrics:
        m = run.metrics
        console.print(
            f"[bold]{m['input_train_rows']}[/] train records -> [green]{m['curated_train_rows']} curated[/], "
            f"{m['removed_total']} removed, {m['quarantined_train']} quarantined; "
            f"{m['flags_label_issue']} label issues, {m['flags_conflicting_duplicate']} conflicts; "
            f"accounting {'ok' if m['accounting_ok'] else '[red]FAILED[/]'}"
        )


def _stage_command(stage: str, doc: str):
    def command(
        train: TrainOpt = Path("data/raw/train.csv"),
        test: TestOpt = Path("data/raw/test.csv"),
        params: ParamsOpt = None,
        out: OutOpt = Path("data/curated"),
        reviews: ReviewsOpt = None,
        quiet: QuietOpt = False,
    ) -> None:
        _run(stage, train, test, params, out, reviews, quiet)

    command.__doc__ = doc
    return command


STAGE_HELP = {
    "ingest": "Read raw train/test files; unreadable lines go to quarantine.parquet.",
    "validate": "Ingest, then check every record against the schema (quarantine with reasons).",
    "dedup": "... then remove exact and near duplicates (removed.parquet, flags.parquet).",
    "decontam": "... then remove train rows that copy test rows (reason test_leak).",
    "noise": "... then flag likely label errors with cleanlab (flags.parquet).",
    "report": "All curation stages: train/test.parquet, removed, flags, quality.json, report.html.",
}
for _stage, _doc in STAGE_HELP.items():
    app.command(_stage)(_stage_command(_stage, _doc))
app.command("curate")(_stage_command("report", "Curate end to end: every stage, every output file."))
assert set(STAGE_HELP) <= set(STAGES)


def _register_optional() -> None:
    """Commands that live beside the curation CLI (training, review, orchestration)."""
    import importlib

    for module in ("flows.train_commands", "flows.review_commands", "flows.orchestrate"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(app)


_register_optional()

if __name__ == "__main__":
    app()
