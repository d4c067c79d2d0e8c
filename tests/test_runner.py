"""The one runner: a step added to the table reaches the loop, the files, quality.json, the
report and the CLI; the runner checks what steps return; every command works in an empty
directory without params.yaml."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import yaml

from curation.dedup import StepResult
from flows.pipeline import pipeline_steps, run_curation, write_run
from flows.steps import STEPS, Step
from schemas.params import params_from_dict
from schemas.records import FLAGS_SCHEMA
from tests import toy_step
from tests.conftest import ROOT
from tests.tiny_project import tiny_params, write_tiny_data


@pytest.fixture()
def restore_table() -> Iterator[None]:
    saved = list(STEPS)
    yield
    STEPS[:] = saved  # the table is one list, shared by every path: put it back as it was


@pytest.fixture()
def with_toy_step(restore_table: None) -> None:
    toy_step.install()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runner")
    write_tiny_data(root / "raw")
    return root


def _params(root: Path, **noise: object):
    raw = tiny_params()
    raw["data"]["labels"] = str(root / "raw" / "categories.json")
    raw["noise"] = {**raw["noise"], **noise}
    return params_from_dict(raw, base_dir=root)


def test_a_step_added_to_the_table_runs_and_is_accounted(with_toy_step, tiny: Path, tmp_path: Path) -> None:
    assert "too_short" in [s.name for s in pipeline_steps()]
    params = _params(tiny, enabled=False)
    run = run_curation(tiny / "raw/train.csv", tiny / "raw/test.csv", params=params, show_progress=False)
    assert run.stages_run[:2] == ["ingest", "validate"]
    at = run.stages_run.index("too_short")
    assert run.stages_run[at + 1] == "dedup"  # where install() put it
    assert set(run.stage_seconds) == set(run.stages_run)
    write_run(run, tmp_path / "out")
    removed = pl.read_parquet(tmp_path / "out/removed.parquet")
    short = removed.filter(pl.col("reason") == "too_short")
    assert short.height > 0 and (short["text"].str.len_chars() < toy_step.MIN_CHARS).all()
    quality = json.loads((tmp_path / "out/quality.json").read_text())
    assert quality["removed_too_short"] == short.height
    assert quality["accounting_ok"] == 1
    assert "too_short" in (tmp_path / "out/report.html").read_text()
    train = pl.read_parquet(tmp_path / "out/train.parquet")
    assert (train["text"].str.len_chars() >= toy_step.MIN_CHARS).all()


def test_a_step_removing_rows_with_an_undeclared_reason_is_refused(restore_table: None, tiny: Path) -> None:
    def sloppy(train: pl.DataFrame) -> StepResult:
        gone = toy_step.drop_short_rows(train).removed.with_columns(reason=pl.lit("because"))
        return StepResult(kept=train, removed=gone, flags=pl.DataFrame(schema=FLAGS_SCHEMA))

    STEPS.insert(1, Step("sloppy", "removes without saying why in the table", sloppy, reads=("train",)))
    with pytest.raises(ValueError, match="undeclared reason"):
        run_curation(
            tiny / "raw/train.csv",
            tiny / "raw/test.csv",
            params=_params(tiny, enabled=False),
            show_progress=False,
        )


def _curagate(*args: str, cwd: Path, launcher: str | None = None) -> subprocess.CompletedProcess:
    head = ["-c", launcher] if launcher else ["-m", "flows.cli"]
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *head, *args], cwd=cwd, capture_output=True, text=True, check=False, env=env
    )


def test_the_toy_step_is_a_cli_subcommand_that_runs_the_table_up_to_it(tiny: Path, tmp_path: Path) -> None:
    raw = tiny_params()
    raw["data"]["labels"] = str(tiny / "raw" / "categories.json")
    raw["data"]["test"] = str(tiny / "raw" / "test.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))  # read as ./params.yaml
    proc = _curagate(
        "too-short", "--train", str(tiny / "raw/train.csv"), "--out", "out", "--quiet",
        cwd=tmp_path, launcher=toy_step.LAUNCH,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "too_short:" in proc.stderr  # the runner's step log line
    kept = pl.read_parquet(tmp_path / "out/too_short_train.parquet")
    assert (kept["text"].str.len_chars() >= toy_step.MIN_CHARS).all()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow  # 17 CLI processes
def test_every_command_works_in_an_empty_directory_without_params(tmp_path: Path) -> None:
    """Built-in defaults without params.yaml; stages that need a test split say so; errors are
    one line and an exit code, never a traceback."""
    texts = [f"please help me with my card number {i} today" for i in range(30)]
    _jsonl(tmp_path / "big.jsonl", [{"text": t, "label": "a" if i % 2 else "b"} for i, t in enumerate(texts)])
    _jsonl(
        tmp_path / "test.jsonl", [{"text": "where is my card", "label": "a"}, {"text": "rate", "label": "b"}]
    )

    def ok(*args: str) -> subprocess.CompletedProcess:
        proc = _curagate(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        return proc

    def refused(code: int, needle: str, *args: str) -> None:
        proc = _curagate(*args, cwd=tmp_path)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and needle in proc.stderr, (args, proc.stderr[-2000:])

    ok("dedup", "--train", "big.jsonl", "--out", "out", "--quiet")
    assert (tmp_path / "out/dedup_train.parquet").is_file() and (tmp_path / "out/manifest.json").is_file()
    ok("ingest", "--train", "big.jsonl", "--out", "ingested", "--quiet")
    refused(2, "decontam needs a test split", "decontam", "--train", "big.jsonl", "--out", "o2", "--quiet")
    refused(2, "decontam needs a test split", "curate", "--train", "big.jsonl", "--out", "o2", "--quiet")
    refused(2, "file not found", "curate", "--test", "test.jsonl", "--out", "o3", "--quiet")  # no data.train
    ok("curate", "--train", "big.jsonl", "--test", "test.jsonl", "--out", "cur", "--quiet")
    refused(1, "gate failed", "gate", "--curated", "cur")  # 30 rows < min_examples 100: says why
    refused(2, "no manifest", "gate", "--curated", "nowhere")
    refused(1, "training refused", "train", "--curated", "cur", "--no-progress")
    refused(2, "training record", "evaluate", "--curated", "cur", "--no-progress")
    ok("label-counts", "--curated", "cur", "--out", "counts.csv")
    ok("labelstudio", "stop", "--data-dir", "ls")
    for command in ("serve", "sweep", "review push", "labelstudio start"):
        ok(*command.split(), "--help")
    (tmp_path / "params.yaml").write_text("dedupe: {}\n")  # ./params.yaml is read when present
    refused(2, "did you mean 'dedup'", "ingest", "--train", "big.jsonl", "--out", "o4")


@pytest.mark.slow  # a real git + DVC repo
def test_the_toy_step_runs_under_dvc_repro(tmp_path: Path) -> None:
    from tests.tiny_project import make_tiny_project, sh

    repo = make_tiny_project(tmp_path / "repo", stages=("curate",))
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    cmd = pipeline["stages"]["curate"]["cmd"]
    pipeline["stages"]["curate"]["cmd"] = cmd.replace("curagate", f"python -c '{toy_step.LAUNCH}'", 1)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    sh("dvc", "repro", cwd=repo)
    quality = json.loads((repo / "data/curated/quality.json").read_text())
    removed = pl.read_parquet(repo / "data/curated/removed.parquet")
    assert quality["removed_too_short"] == (removed["reason"] == "too_short").sum() > 0
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert "tests.toy_step" in lock["stages"]["curate"]["cmd"]


def test_the_cli_starts_without_the_heavy_libraries() -> None:
    """`curagate --help` must not pay for torch, transformers, prefect, sklearn or matplotlib,
    nor for polars, pandera, pydantic, datasketch, phonenumbers or YAML: the commands that use
    them import them."""
    heavy = ["torch", "transformers", "prefect", "sklearn", "cleanlab", "matplotlib", "label_studio_sdk"]
    heavy += ["polars", "pandera", "pydantic", "datasketch", "phonenumbers", "yaml", "numpy"]
    heavy.append("mlflow")  # flows/registry.py loads it when a registry command runs
    code = f"import sys, flows.cli; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
