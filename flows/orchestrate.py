"""CLI commands for orchestration: `curagate serve` (Prefect deployments) and
`curagate label-counts` (the label-distribution plot file of dvc.yaml).

`register(app)` adds them to the main Typer app (flows/cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    import polars as pl

console = Console(stderr=True)

DEPLOYMENT_NAME = "local"


def label_counts_frame(curated: Path) -> pl.DataFrame:
    """Rows per label in curated train, curated test and removed train rows, sorted by label."""
    import polars as pl

    parts = []
    for name in ("train", "test", "removed"):
        path = curated / f"{name}.parquet"
        frame = (
            pl.read_parquet(path, columns=["label"])
            if path.is_file()
            else pl.DataFrame(schema={"label": pl.String})
        )
        parts.append(frame.group_by("label").len(name=name).with_columns(pl.col(name).cast(pl.Int64)))
    out = parts[0]
    for part in parts[1:]:
        out = out.join(part, on="label", how="full", coalesce=True)
    return out.filter(pl.col("label").is_not_null()).fill_null(0).sort("label")


def label_counts(
    curated: Annotated[Path, typer.Option("--curated", help="curated dir")] = Path("data/curated"),
    out: Annotated[Path, typer.Option("--out", help="CSV for `dvc plots`")] = Path(
        "reports/label_counts.csv"
    ),
) -> None:
    """Write rows per label (curated train, test, removed) as CSV for `dvc plots show`."""
    frame = label_counts_frame(curated)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out)
    console.print(f"{frame.height} labels -> {out}")


def serve(
    limit: Annotated[int, typer.Option("--limit", help="flow runs at once")] = 1,
) -> None:
    """Serve the Prefect deployments curate-dataset/local, train-adapter/local, pipeline/local
    review-sync/local and monitor/local from this directory (needs PREFECT_API_URL: a running server)."""
    from prefect import serve as prefect_serve

    from flows.console import load_cli_params
    from flows.prefect_flows import curate_dataset, monitor_deployment, pipeline, train_adapter
    from flows.review_flow import review_sync

    deployments = [
        f.to_deployment(name=DEPLOYMENT_NAME) for f in (curate_dataset, train_adapter, pipeline, review_sync)
    ]
    deployments.append(monitor_deployment(DEPLOYMENT_NAME, load_cli_params(None)))  # cron: monitor.schedule
    prefect_serve(*deployments, limit=limit)


def register(app: typer.Typer) -> None:
    """Add the serve and label-counts commands to ``app``."""
    app.command("serve")(serve)
    app.command("label-counts")(label_counts)
