"""Prefect flow `review-sync`: push new flags to Label Studio, then pull decisions.

The tasks wrap the same functions the CLI uses (flows/labelstudio.py); nothing new here.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.labelstudio import connect, pull_reviews, push_flags
from schemas.params import DEFAULT_CURATED_DIR, find_params, load_params
from schemas.review_params import LabelStudioParams


@task(name="review-push", retries=2)
def push_task(out_dir: str, cfg: LabelStudioParams) -> dict[str, Any]:
    """Push flags of ``out_dir``; returns the push report as a dict (idempotent: safe to retry)."""
    return asdict(push_flags(connect(cfg), Path(out_dir), cfg))


@task(name="review-pull", retries=2)
def pull_task(to: str, out_dir: str, cfg: LabelStudioParams) -> dict[str, Any]:
    """Pull reviews into ``to`` (ids of ``out_dir``'s flags restored); returns the pull report."""
    return asdict(pull_reviews(connect(cfg), Path(to), cfg, flags_dir=Path(out_dir)))


@flow(name="review-sync")
def review_sync(
    out_dir: str = DEFAULT_CURATED_DIR,
    to: str = f"{DEFAULT_CURATED_DIR}/reviews.parquet",
    params_path: str | None = None,
) -> dict[str, Any]:
    """Push new flags, then pull every completed review into reviews.parquet."""
    logger = get_run_logger()
    cfg = load_params(find_params(params_path)).labelstudio
    pushed = push_task(out_dir, cfg)
    logger.info("pushed %d new flags (%d already there)", pushed["imported"], pushed["skipped"])
    pulled = pull_task(to, out_dir, cfg)
    logger.info("pulled %d reviews into %s", pulled["reviews"], pulled["path"])
    return {"push": pushed, "pull": pulled}
