"""`curagate labelstudio start|stop` and `curagate review push|pull`; wiring only.

flows/cli.py calls :func:`register` to attach both sub-apps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from flows.console import load_cli_params
from schemas.params import Params
from schemas.review_params import LabelStudioParams

log = logging.getLogger(__name__)
console = Console(stderr=True)

ParamsOpt = Annotated[
    Path | None,
    typer.Option("--params", help="params.yaml (its `labelstudio:`); default ./params.yaml or defaults"),
]


def _cfg(params: Path | None) -> LabelStudioParams:
    return load_cli_params(params).labelstudio


def _fail(exc: Exception) -> NoReturn:
    """Print the reason (as plain text: it may hold brackets) and exit 1, without a traceback."""
    console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1) from exc


def labelstudio_start(
    port: Annotated[int | None, typer.Option(help="port (default labelstudio.server.port)")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="data dir (default labelstudio.server.data_dir)")
    ] = None,
    params: ParamsOpt = None,
) -> None:
    """Start a local Label Studio (installing it into its own venv on first use)."""
    # Label Studio's SDK and the PII libraries load when a review command runs, not at start-up
    from flows.labelstudio import (
        LabelStudioError,
        start_server,
    )

    cfg = _cfg(params)
    try:
        with console.status("starting Label Studio (first run installs it; minutes)"):
            state = start_server(cfg.server, port=port, data_dir=data_dir)
    except LabelStudioError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    creds = Path(state.data_dir) / "credentials.json"
    console.print(f"Label Studio at {state.url} (pid {state.pid}); login {cfg.server.username}")
    console.print(f"password and API token: {creds} (or your LABEL_STUDIO_* env)")
    typer.echo(f"export LABEL_STUDIO_URL={state.url}")


def labelstudio_stop(
    data_dir: Annotated[
        Path | None, typer.Option(help="data dir (default labelstudio.server.data_dir)")
    ] = None,
    params: ParamsOpt = None,
) -> None:
    """Stop the Label Studio server started from this data dir."""
    from flows.labelstudio import (
        stop_server,
    )

    cfg = _cfg(params)
    stopped = stop_server(Path(data_dir or cfg.server.data_dir), timeout_s=cfg.server.stop_timeout_s)
    console.print("stopped" if stopped else "no running server recorded")


def review_push(
    out: Annotated[Path, typer.Option("--out", help="curate output dir with flags.parquet")],
    params: ParamsOpt = None,
) -> None:
    """Push new flags as Label Studio tasks (PII masked; re-runs add only new flags).

    Instruction/chat flags go to their own project: prompt, response, the checks' reasons, and
    keep / drop / unsure."""
    from flows.labelstudio import (
        LabelStudioError,
        connect,
        push_flags,
    )

    cfg = _cfg(params)
    try:
        report = push_flags(connect(cfg), out, cfg)
    except (LabelStudioError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
    console.print(
        f"project {report.project_id}: {report.flags} flags, {report.imported} imported, "
        f"{report.skipped} already there; PII masked {report.pii_masked}"
    )


def review_pull(
    to: Annotated[Path, typer.Option("--to", help="reviews.parquet to write")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="the curate output dir that was pushed (maps pseudonymised ids back; its labels.json "
            "tells label from instruction/chat review)",
        ),
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="auto (from --out: instruction/chat data -> labelstudio.instruction_project_title), "
            "label or instruction",
        ),
    ] = "auto",
    params: ParamsOpt = None,
) -> None:
    """Pull completed annotations into reviews.parquet."""
    from flows.labelstudio import (
        LabelStudioError,
        connect,
        pull_reviews,
    )

    cfg = _cfg(params)
    try:
        report = pull_reviews(connect(cfg), to, cfg, flags_dir=out, kind=kind)
    except (LabelStudioError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
    console.print(f"project {report.project_id}: {report.reviews} reviews -> {report.path}")


def review_push_predictions(
    predictions: Annotated[
        Path, typer.Option("--predictions", help="predictions.parquet from `curagate predict`")
    ],
    params: ParamsOpt = None,
) -> None:
    """Send a sample of the model's answers for review (stratified, low confidence over-sampled)."""
    from flows.console import fail
    from flows.labelstudio import LabelStudioError, push_prediction_sample, read_predictions

    cfg = load_cli_params(params)
    try:
        report = push_prediction_sample(read_predictions(predictions), cfg)
    except (LabelStudioError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    console.print(
        f"project {report.project_id}: {report.predictions} predictions -> {report.sampled} sampled "
        f"in {report.strata} strata, {report.imported} imported, {report.skipped} already there; "
        f"PII masked {report.pii_masked}; weights in {report.sample_file}"
    )


def review_pull_predictions(params: ParamsOpt = None) -> None:
    """Bring back the verdicts: production accuracy (weights undone) and reviewed train rows."""
    from flows.console import fail
    from flows.labelstudio import LabelStudioError, pull_prediction_reviews

    cfg = load_cli_params(params)
    try:
        report = pull_prediction_reviews(cfg)
    except (LabelStudioError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    est = report.estimate
    if est["accuracy"] is None:
        accuracy = "no verdicts yet"
    else:
        accuracy = (
            f"accuracy {est['accuracy']:.3f} [{est['accuracy_low']:.3f}, {est['accuracy_high']:.3f}] "
            f"({est['reviewed']} reviewed, unweighted {est['accuracy_unweighted']:.3f}, "
            f"model {report.model_version})"
        )
    console.print(
        f"project {report.project_id}: {report.tasks} tasks, {report.reviewed} reviewed "
        f"({report.unsure} unsure); {accuracy} -> {report.metrics_file}; "
        f"{report.train_rows} train rows -> {report.reviewed_file} "
        f"({_curate_reads(cfg, report.reviewed_file)})",
        markup=False,
        highlight=False,
    )


def _curate_reads(cfg: Params, reviewed: Path | str) -> str:
    """Whether the next curate reads the reviewed rows (data.extra_train names the file or its
    directory, the default data/feedback), or what to do so it does."""
    reviewed = Path(reviewed).resolve()
    listed = {Path(name).resolve() for name in cfg.data.extra_train}
    if reviewed in listed or reviewed.parent in listed:
        return "the next curate reads it: data.extra_train"
    return f"list it, or {reviewed.parent}, in data.extra_train for curate to read it"


def register(app: typer.Typer) -> None:
    """Attach the `labelstudio` (start/stop) and `review` (push/pull) sub-apps to ``app``."""
    server = typer.Typer(help="Local Label Studio server", no_args_is_help=True)
    server.command("start")(labelstudio_start)
    server.command("stop")(labelstudio_stop)
    review = typer.Typer(help="Human review of flagged rows in Label Studio", no_args_is_help=True)
    review.command("push")(review_push)
    review.command("pull")(review_pull)
    review.command("push-predictions")(review_push_predictions)
    review.command("pull-predictions")(review_pull_predictions)
    app.add_typer(server, name="labelstudio")
    app.add_typer(review, name="review")
