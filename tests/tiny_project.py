"""A tiny copy of the project for orchestration tests: Banking77 rows, the real dvc.yaml
(curate, gate, label_counts) and params.yaml with small-data gate thresholds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from flows.files import CURATE_FILES
from tests.conftest import RAW, ROOT

NUM_LABELS = 10
TRAIN_PER_LABEL = 30
TEST_PER_LABEL = 8
# what a curate run writes, less report.html (its plots' bytes are not compared)
CURATED_FILES = tuple(name for name in CURATE_FILES if name != "report.html")
CODE = ("curation", "schemas", "training", "flows")  # dvc.yaml deps must exist


def venv_env(**extra: str) -> dict[str, str]:
    """This interpreter's bin first on PATH (dvc.yaml calls `curagate`), quiet telemetry."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(ROOT)
    env["DVC_NO_ANALYTICS"] = "1"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.update(extra)
    return env


def sh(
    *cmd: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command; on failure the assertion shows its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or venv_env(), capture_output=True, text=True, check=False)
    if check:
        assert proc.returncode == 0, f"{cmd}: {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def write_tiny_data(raw: Path) -> list[str]:
    """300 train / 80 test Banking77 rows over 10 labels, as CSV; returns the labels."""
    raw.mkdir(parents=True, exist_ok=True)
    train = pl.read_csv(RAW / "train.csv")
    test = pl.read_csv(RAW / "test.csv")
    labels = sorted(train["category"].unique().to_list())[:NUM_LABELS]
    for frame, per_label, name in ((train, TRAIN_PER_LABEL, "train.csv"), (test, TEST_PER_LABEL, "test.csv")):
        frame.filter(pl.col("category").is_in(labels)).group_by("category", maintain_order=True).head(
            per_label
        ).write_csv(raw / name)
    (raw / "categories.json").write_text(json.dumps(labels, indent=1) + "\n")
    return labels


def tiny_params() -> dict[str, Any]:
    """The project's params.yaml, with thresholds a 300-row dataset can pass."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["noise"]["folds"] = 3
    params["gate"].update(min_examples=50, min_per_class=5)
    # the clean tiny split, not the demo's dirty one (no demo_data stage here)
    params["data"]["train"] = "data/raw/train.csv"
    params["report"]["planted"] = None
    return params


def curate_tiny(dest: Path, **param_overrides: dict[str, Any]) -> Path:
    """Tiny raw data under ``dest/raw`` curated in process into ``dest/curated`` (returned)."""
    from flows.pipeline import run_curation, write_run
    from schemas.params import params_from_dict

    write_tiny_data(dest / "raw")
    raw = tiny_params()
    raw["data"]["labels"] = str(dest / "raw" / "categories.json")
    raw["data"]["extra_train"] = []  # in process (cwd: the checkout): not the checkout's data/feedback
    for section, values in param_overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    params = params_from_dict(raw, base_dir=dest)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run = run_curation(dest / "raw/train.csv", dest / "raw/test.csv", params=params, show_progress=False)
    write_run(run, dest / "curated")
    return dest / "curated"


def make_tiny_project(dest: Path, *, stages: tuple[str, ...] = ("curate", "gate", "label_counts")) -> Path:
    """A git + DVC repo at ``dest`` with the project's dvc.yaml limited to ``stages``."""
    dest.mkdir(parents=True, exist_ok=True)
    write_tiny_data(dest / "data" / "raw")
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if k in stages}
    if "demo_data" not in stages:  # its outs are nobody's deps then
        demo_outs = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["demo_data"]["outs"])
        for stage in pipeline["stages"].values():
            stage["deps"] = [d for d in stage.get("deps", []) if d not in demo_outs]
    if "train" not in stages:
        pipeline["plots"] = [p for p in pipeline.get("plots", []) if "loss" not in p]
    (dest / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    for name in CODE:
        src, dst = ROOT / name, dest / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    shutil.copy(ROOT / ".gitignore", dest / ".gitignore")
    (dest / "data" / "feedback").mkdir(parents=True, exist_ok=True)  # curate's extra_train dep
    (dest / "data" / "feedback" / ".gitkeep").touch()
    sh("git", "init", "-q", cwd=dest)
    sh("git", "config", "user.email", "test@example.com", cwd=dest)
    sh("git", "config", "user.name", "test", cwd=dest)
    sh("dvc", "init", "-q", cwd=dest)
    sh("dvc", "config", "core.analytics", "false", cwd=dest)
    shutil.copy(ROOT / ".dvcignore", dest / ".dvcignore")  # after init, which writes its own
    sh("git", "add", ".", cwd=dest)
    sh("git", "commit", "-qm", "tiny project", cwd=dest)
    return dest


def stages_run(output: str) -> list[str]:
    """Stage names from `dvc repro` output lines "Running stage 'x':"."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
