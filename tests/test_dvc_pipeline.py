"""dvc.yaml: stages call the CLI with options it defines, list only the params they read;
a real DVC repo re-runs only what changed and stops at a failed gate before training."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import polars as pl
import pytest
import typer.main
import yaml

from flows.cli import app
from flows.orchestrate import label_counts_frame
from schemas.manifest import file_md5
from tests.conftest import ROOT
from tests.tiny_project import CURATED_FILES, make_tiny_project, sh, stages_run

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGE_PARAMS = {
    "curate": ["data", "dedup", "decontam", "noise", "review", "report", "instruction", "semantic"],
    "gate": ["gate"],
    "train": ["gate", "train"],  # train re-derives the gate verdict
    "evaluate": ["evaluate"],
    "promote": ["registry", "evaluate"],  # evaluate: the bootstrap settings of the intervals
}


def test_each_stage_lists_only_the_params_sections_it_reads() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage, sections in STAGE_PARAMS.items():
        assert PIPELINE["stages"][stage]["params"] == sections
        assert set(sections) <= set(params)
    assert "params" not in PIPELINE["stages"]["label_counts"]


def test_stage_commands_use_only_options_the_cli_defines() -> None:
    cli = typer.main.get_command(app)
    for name, stage in PIPELINE["stages"].items():
        argv = shlex.split(stage["cmd"])
        assert argv[0] == "curagate", name
        command = cli.commands[argv[1]]  # type: ignore[attr-defined]
        args = argv[2:]
        if hasattr(command, "commands"):  # a sub-app: `curagate registry promote ...`
            command, args = command.commands[argv[2]], argv[3:]
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        used = {a for a in args if a.startswith("--")}
        assert used <= known, (name, used - known)


def test_gate_runs_between_curate_and_train() -> None:
    stages = PIPELINE["stages"]
    assert "data/curated/gate.json" in stages["train"]["deps"]
    assert any("gate.json" in next(iter(m)) for m in stages["gate"]["metrics"])
    assert "data/curated/quality.json" in stages["gate"]["deps"]


def test_label_counts_cover_train_test_and_removed(tmp_path: Path) -> None:
    pl.DataFrame({"label": ["a", "a", "b"]}).write_parquet(tmp_path / "train.parquet")
    pl.DataFrame({"label": ["b", "c"]}).write_parquet(tmp_path / "test.parquet")
    pl.DataFrame({"label": ["a"]}).write_parquet(tmp_path / "removed.parquet")
    counts = label_counts_frame(tmp_path)
    assert counts.to_dicts() == [
        {"label": "a", "train": 2, "test": 0, "removed": 1},
        {"label": "b", "train": 1, "test": 1, "removed": 0},
        {"label": "c", "train": 0, "test": 1, "removed": 0},
    ]


def _set_params(repo: Path, section: str, **values: object) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_repro_caches_reruns_downstream_only_and_stops_at_a_failed_gate(tmp_path: Path) -> None:
    repo = make_tiny_project(tmp_path / "repo")

    # 1. first repro runs every stage; dvc.lock records the curated files' md5s
    first = sh("dvc", "repro", cwd=repo)
    assert stages_run(first.stdout) == ["curate", "gate", "label_counts"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for o in lock["stages"]["curate"]["outs"]}
    for name in CURATED_FILES:
        assert outs[f"data/curated/{name}"] == file_md5(repo / "data" / "curated" / name)
    assert json.loads((repo / "data" / "curated" / "gate.json").read_text())["passed"] is True
    # git keeps the small metrics files; the parquet outs live in DVC's cache
    assert (
        sh("git", "check-ignore", "-q", "data/curated/train.parquet", cwd=repo, check=False).returncode == 0
    )
    assert sh("git", "check-ignore", "-q", "data/curated/quality.json", cwd=repo, check=False).returncode == 1
    sh("git", "add", "dvc.lock", "data/curated/quality.json", "data/curated/gate.json", "reports", cwd=repo)
    sh("git", "commit", "-qm", "repro", cwd=repo)

    # 2. nothing changed: nothing runs
    second = sh("dvc", "repro", cwd=repo)
    assert stages_run(second.stdout) == []
    assert "up to date" in second.stdout

    # 3. a gate threshold: only the gate re-runs
    _set_params(repo, "gate", min_examples=60)
    assert stages_run(sh("dvc", "repro", cwd=repo).stdout) == ["gate"]

    # 4. a dedup knob: curate re-runs (downstream only if its outputs changed); params diff shows it
    _set_params(repo, "dedup", threshold=0.8)
    diff = json.loads(sh("dvc", "params", "diff", "--json", cwd=repo).stdout)
    changed = diff["params.yaml"]["dedup.threshold"]
    assert (changed["old"], changed["new"]) == (0.9, 0.8)
    ran = stages_run(sh("dvc", "repro", cwd=repo).stdout)
    assert ran[0] == "curate" and set(ran) <= {"curate", "gate", "label_counts"}

    # 5. new raw rows: curate and everything downstream re-run
    train_csv = repo / "data" / "raw" / "train.csv"
    extra = pl.read_csv(train_csv).head(5).with_columns(pl.col("text") + " please, today")
    pl.concat([pl.read_csv(train_csv), extra]).write_csv(train_csv)
    assert stages_run(sh("dvc", "repro", cwd=repo).stdout) == ["curate", "gate", "label_counts"]

    # metrics and plots read the committed files
    metrics = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout)
    shown = json.dumps(metrics)
    assert "curated_train_rows" in shown and "quality_md5" in shown
    sh("dvc", "plots", "show", "-o", str(tmp_path / "plots"), cwd=repo)
    assert "label_distribution" in (tmp_path / "plots" / "index.html").read_text()

    # 6. a failed gate stops `dvc repro` with the gate's message: train never starts
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    tiny = yaml.safe_load((repo / "dvc.yaml").read_text())
    tiny["stages"]["train"] = pipeline["stages"]["train"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    _set_params(repo, "gate", min_examples=100_000)
    failed = sh("dvc", "repro", cwd=repo, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "gate failed" in output and "min_examples" in output
    assert "train" not in stages_run(failed.stdout)
    assert not (repo / "models" / "training.json").exists()
