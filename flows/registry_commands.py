"""`curagate registry log|promote|rollback|show|pull`: the MLflow model registry; wiring only.

flows/cli.py calls :func:`register` to attach the sub-app. flows/registry.py (and mlflow with
it) loads when a registry command runs, not at start-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from flows.console import console, fail, load_cli_params
from schemas.params import DEFAULT_MODEL_DIR, DEFAULT_REPORTS_DIR

app = typer.Typer(
    help="Model registry (MLflow): log runs, promote a challenger over the champion, roll back.",
    no_args_is_help=True,
)

ParamsOpt = Annotated[
    Path | None,
    typer.Option("--params", help="params.yaml (its `registry:`); default ./params.yaml, else defaults"),
]
ModelDirOpt = Annotated[Path, typer.Option("--model-dir", help="holds adapter/ and training.json")]
EvalOpt = Annotated[Path, typer.Option("--eval", help="eval.json of this adapter")]
DetailOpt = Annotated[Path, typer.Option("--detail", help="eval_detail.json (per-row test answers)")]
HtmlOpt = Annotated[Path, typer.Option("--html", help="eval.html, logged with the run")]


def _check_paths(
    *, reads: tuple[Path | None, ...] = (), writes: tuple[Path, ...] = (), dirs: tuple[Path, ...] = ()
) -> None:
    """Refuse paths of the wrong kind before the registry is touched: a promote whose decision
    cannot be written must not have moved the alias already."""
    for path in reads:
        if path is not None and path.is_dir():
            fail(f"{path}: is a directory, not a file")
    for path in writes:
        if path.is_dir():
            fail(f"{path}: is a directory; the decision is written to a .json file")
    for path in (*writes, *dirs):
        for above in (path, *path.parents) if path in dirs else path.parents:
            if above.exists() and not above.is_dir():
                fail(f"{path}: cannot write there: {above} is a file, not a directory")


def _version_number(to: str | None) -> str | None:
    """--to as MLflow spells a version (a positive whole number), or a one-line error."""
    if to is not None and not (to.isdigit() and int(to) > 0):
        fail(f"--to {to!r}: a model version is a number (1, 2, ...); `curagate registry show` lists them")
    return to


@app.command("log")
def log_command(
    model_dir: ModelDirOpt = Path(DEFAULT_MODEL_DIR),
    eval_json: Annotated[
        Path | None, typer.Option("--eval", help="eval.json to log as well; default: none")
    ] = None,
    detail: Annotated[Path | None, typer.Option("--detail", help="eval_detail.json")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="eval.html")] = None,
    params: ParamsOpt = None,
) -> None:
    """Log an adapter's training (and evaluation) run and register it as a model version."""
    from flows.registry import RegistryError, log_run

    cfg = load_cli_params(params)
    _check_paths(reads=(eval_json, detail, html))
    try:
        logged = log_run(model_dir, params=cfg, eval_json=eval_json, detail_json=detail, html=html)
    except RegistryError as exc:
        fail(exc)
    what = [
        w
        for w, done in (("training", logged.logged_training), ("evaluation", logged.logged_evaluation))
        if done
    ]
    console.print(
        f"run {logged.run_id} (adapter {logged.adapter_md5[:8]}), model version {logged.version}: "
        f"logged {', '.join(what) or 'nothing new'} -> {logged.tracking_uri}"
    )


@app.command("promote")
def promote_command(
    model_dir: ModelDirOpt = Path(DEFAULT_MODEL_DIR),
    eval_json: EvalOpt = Path(f"{DEFAULT_REPORTS_DIR}/eval.json"),
    detail: DetailOpt = Path(f"{DEFAULT_REPORTS_DIR}/eval_detail.json"),
    html: HtmlOpt = Path(f"{DEFAULT_REPORTS_DIR}/eval.html"),
    production: Annotated[
        Path | None,
        typer.Option("--production", help="reviewed production rows default registry.production_sample"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="the decision (champion block) as JSON")] = Path(
        f"{DEFAULT_REPORTS_DIR}/promotion.json"
    ),
    write_eval: Annotated[
        bool, typer.Option("--write-eval/--no-write-eval", help="also add the `champion` block to --eval")
    ] = True,
    params: ParamsOpt = None,
) -> None:
    """Challenger vs champion: promote the adapter (alias `champion`) only if it is better."""
    _check_paths(reads=(eval_json, detail, html, production), writes=(out,))
    from flows.registry import RegistryError, promote

    cfg = load_cli_params(params)
    # the reviewed production rows may need both models' answers: a bar per model that answers
    progress = Progress(
        TextColumn("[bold]promote: {task.description} answers"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip
    bars: dict[str, TaskID] = {}

    def on_progress(what: str, done: int, total: int) -> None:
        if what not in bars:
            bars[what] = progress.add_task(what, total=total)
        progress.update(bars[what], completed=done)

    try:
        with progress:
            result = promote(
                model_dir, params=cfg, eval_json=eval_json, detail_json=detail, html=html,
                production=production, on_progress=on_progress,
            )  # fmt: skip
    except RegistryError as exc:
        fail(exc)
    block = {k: v for k, v in result.items() if k != "detail"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"champion": block}, indent=2) + "\n", encoding="utf-8")
    if write_eval:
        flat = json.loads(eval_json.read_text(encoding="utf-8"))
        flat["champion"] = block
        eval_json.write_text(json.dumps(flat, indent=2) + "\n", encoding="utf-8")
    color = "green" if block["promoted"] else "yellow"
    console.print(
        f"[{color}]{block['verdict']}[/{color}]: version {block['challenger_version']} "
        f"(champion now: {block['champion_version'] or 'none'}) -> {out}"
    )
    for reason in result["detail"]["reasons"]:
        console.print(f"  {reason}", markup=False, highlight=False)


@app.command("rollback")
def rollback_command(
    to: Annotated[
        str | None, typer.Option("--to", help="a version number; default the previous champion")
    ] = None,
    params: ParamsOpt = None,
) -> None:
    """Move the `champion` alias back to the previous champion (or to --to VERSION)."""
    from flows.registry import RegistryError, rollback

    cfg = load_cli_params(params)
    to = _version_number(to)
    try:
        result = rollback(params=cfg, to=to)
    except RegistryError as exc:
        fail(exc)
    console.print(
        f"champion: version {result['from_version']} -> {result['to_version']} "
        f"(history {', '.join(result['history'])})"
    )


@app.command("show")
def show_command(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON to stdout")] = False,
    params: ParamsOpt = None,
) -> None:
    """The champion, its history and every registered version with its verdict."""
    from flows.registry import RegistryError, show

    cfg = load_cli_params(params)
    try:
        info = show(params=cfg)
    except RegistryError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    console.print(f"{info['model']} at {info['tracking_uri']}; champion: {info['champion'] or 'none'}")
    console.print(f"champion history: {', '.join(info['history']) or '-'}")
    for v in info["versions"]:
        aliases = f" @{','.join(v['aliases'])}" if v["aliases"] else ""
        console.print(
            f"  v{v['version']}{aliases}: {v['verdict']}, test diff {v['test_difference'] or '-'}, "
            f"data {v['data_md5'][:8] or '-'}, adapter {v['adapter_md5'][:8]}",
            markup=False,
            highlight=False,
        )
    console.print(f"browse: {info['ui']}", markup=False, highlight=False)


@app.command("pull")
def pull_command(
    to: Annotated[
        Path,
        typer.Option(
            "--to", help="directory the champion's adapter/ and training.json go to (predict's --model-dir)"
        ),
    ] = Path(f"{DEFAULT_MODEL_DIR}/champion"),
    params: ParamsOpt = None,
) -> None:
    """Copy the champion's adapter out of the registry (what predict serves)."""
    from flows.registry import RegistryError, download_champion

    cfg = load_cli_params(params)
    _check_paths(dirs=(to,))
    try:
        path = download_champion(to, params=cfg)
    except RegistryError as exc:
        fail(exc)
    console.print(f"champion adapter -> {path}")


def register(main: typer.Typer) -> None:
    """Add the `registry` sub-app to the main app."""
    main.add_typer(app, name="registry")
