"""`curagate`: one subcommand per pipeline step (each runs the table up to there), `curate` for
all of them, and the gate/train/evaluate, review and orchestration commands beside them.

Works in any directory: ``--params FILE``, else ./params.yaml, else built-in defaults. Every
error a user can cause ends in a one-line message and exit code 2 (a failed gate: 1);
``--verbose`` adds the traceback of an unexpected error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.console import console, fail, load_cli_params
from flows.steps import pipeline_steps
from schemas.params import DEFAULT_CURATED_DIR

app = typer.Typer(
    help="curagate: curate a labelled dataset, gate it on quality, train and evaluate an adapter.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

TrainOpt = Annotated[
    Path | None, typer.Option("--train", help="raw train file (.jsonl, .csv, .parquet); default data.train")
]
TestOpt = Annotated[
    Path | None, typer.Option("--test", help="raw held-out test file; default data.test (decontam needs one)")
]
ParamsOpt = Annotated[
    Path | None, typer.Option("--params", help="params.yaml; default ./params.yaml, else built-in defaults")
]
OutOpt = Annotated[Path, typer.Option("--out", help="output directory")]
ReviewsOpt = Annotated[
    Path | None, typer.Option("--reviews", help="reviews.parquet from `curagate review pull`")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="no progress bar")]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    from rich.logging import RichHandler  # ~0.05 s: only when a command runs, not for --help

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    # libraries' INFO chatter (matplotlib's categorical-axis notes) is not for data engineers
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    # bitsandbytes warns at import that its optional CPU 4-bit kernels are absent: noise for
    # fp32 LoRA on CPU, and it buried predict's real error message
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def _run(
    stage: str,
    train: Path | None,
    test: Path | None,
    params: Path | None,
    out: Path,
    reviews: Path | None,
    quiet: bool,
) -> None:
    # the pipeline's libraries load here, not at start-up: `curagate --help` stays quick
    from curation.ingest import InputFileError
    from flows.files import OutputError, read_reviews
    from flows.pipeline import run_curation, write_run

    cfg = load_cli_params(params)
    train_path = train or Path(cfg.data.train)
    test_path = test or (Path(cfg.data.test) if cfg.data.test else None)
    try:
        embed = None
        if "embedding" in cfg.noise.features:
            from flows.embed import embed_texts as embed  # loads a model: only when asked for
        run = run_curation(
            train_path,
            test_path,
            params=cfg,
            until=stage,
            reviews=read_reviews(reviews or (Path(cfg.review.decisions) if cfg.review.decisions else None)),
            show_progress=not quiet,
            embed=embed,
        )
        written = write_run(run, out)
    except (InputFileError, OutputError) as exc:
        fail(exc)
    for path in written:
        console.print(f"  wrote {path}")
    if run.metrics:
        m = run.metrics
        console.print(
            f"[bold]{m['input_train_rows']}[/] train records -> [green]{m['curated_train_rows']} curated[/], "
            f"{m['removed_total']} removed, {m['held_for_review']} held for review, "
            f"{m['quarantined_train']} quarantined; {m['flags_label_issue']} label issues, "
            f"{m['flags_conflicting_duplicate']} conflicts; "
            f"accounting {'ok' if m['accounting_ok'] else '[red]FAILED[/]'}"
        )


def _stage_command(stage: str, doc: str):
    def command(
        train: TrainOpt = None,
        test: TestOpt = None,
        params: ParamsOpt = None,
        out: OutOpt = Path(DEFAULT_CURATED_DIR),
        reviews: ReviewsOpt = None,
        quiet: QuietOpt = False,
    ) -> None:
        _run(stage, train, test, params, out, reviews, quiet)

    command.__doc__ = doc
    return command


for _step in pipeline_steps():
    if _step.command:
        app.command(_step.command_name)(_stage_command(_step.name, _step.help))
app.command("curate")(_stage_command(pipeline_steps()[-1].name, "Curate end to end: every step, every file."))


def _register_commands() -> None:
    """Commands beside the curation steps (training, review, orchestration)."""
    from flows import (
        compare,
        monitor_commands,
        orchestrate,
        registry_commands,
        review_commands,
        train_commands,
    )

    for module in (
        train_commands,
        review_commands,
        orchestrate,
        monitor_commands,
        registry_commands,
        compare,
    ):
        module.register(app)


_register_commands()


def main() -> None:
    """Console entry point: no traceback reaches a user unless they ask with --verbose."""
    try:
        app()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # the last line of defence: a bug, reported as one
        if "-v" in sys.argv or "--verbose" in sys.argv:
            raise
        console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (re-run with -v for details)"
        )
        raise SystemExit(3) from exc


if __name__ == "__main__":
    main()
