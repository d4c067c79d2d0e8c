"""Prefect flow `review-sync`: push new flags to Label Studio, then pull decisions.

The tasks wrap the same functions the CLI uses (flows/labelstudio.py); nothing new here.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.labelstudio import connect, pull_reviews, push_flags
from schemas.params import load_params
from schemas.review_params import labelstudio_params


@task(name="review-push")
def push_task(out_dir: str, params_path: str) -> dict[str, Any]:
    """Push flags of ``out_dir``; returns the push report as a dict."""
    cfg = labelstudio_params(load_params(params_path))
    return asdict(push_flags(connect(cfg), Path(out_dir), cfg))


@task(name="review-pull")
def pull_task(to: str, params_path: str) -> dict[str, Any]:
    """Pull reviews into ``to``; returns the pull report as a dict."""
    cfg = labelstudio_params(load_params(params_path))
    return asdict(pull_reviews(connect(cfg), Path(to), cfg))


@flow(name="review-sync")
def review_sync(
    out_dir: str = "data/curated",
    to: str = "data/curated/reviews.parquet",
    params_path: str = "params.yaml",
) -> dict[str, Any]:
    """Push new flags, then pull every completed review into reviews.parquet."""
    logger = get_run_logger()
    pushed = push_task(out_dir, params_path)
    logger.info("pushed %d new flags (%d already there)", pushed["imported"], pushed["skipped"])
    pulled = pull_task(to, params_path)
    logger.info("pulled %d reviews into %s", pulled["reviews"], pulled["path"])
    return {"push": pushed, "pull": pulled}
