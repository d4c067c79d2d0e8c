"""Shared fixtures: tiny seeded data built from the bundled Banking77 demo files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"


@pytest.fixture(scope="session")
def banking_labels() -> list[str]:
    return json.loads((RAW / "categories.json").read_text())


@pytest.fixture(scope="session")
def banking_train() -> pl.DataFrame:
    return pl.read_csv(RAW / "train.csv").rename({"category": "label"})


@pytest.fixture(scope="session")
def banking_test() -> pl.DataFrame:
    return pl.read_csv(RAW / "test.csv").rename({"category": "label"})


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
