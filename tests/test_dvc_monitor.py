"""The production loop under DVC: the predict_baseline, predict and monitor stages list only
the params they read; (slow) in a real git + DVC repo with a tiny adapter, `dvc repro` builds
monitor.json from the traffic file, re-runs only the monitor on a threshold, nothing on a
flow-only key, rebuilds byte-identical predictions, and re-curates when reviewed rows land
in data/feedback (curate's extra_train directory)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows.monitoring import FLOW_ONLY_KEYS
from schemas.manifest import file_md5
from schemas.monitor_params import MonitorParams
from tests.conftest import ROOT
from tests.tiny_project import make_tiny_project, sh, stages_run

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
MONITOR_STAGES = ("curate", "predict_baseline", "predict", "monitor")


def test_monitor_stage_lists_exactly_the_keys_the_checks_read() -> None:
    checks = {f"monitor.{f.name}" for f in dataclasses.fields(MonitorParams)} - {
        f"monitor.{k}" for k in FLOW_ONLY_KEYS
    }
    assert set(PIPELINE["stages"]["monitor"]["params"]) == checks
    for stage in ("predict", "predict_baseline"):
        listed = PIPELINE["stages"][stage]["params"]
        assert "predict" in listed and "monitor" not in listed and "data" not in listed
    # the traffic file is a dep, and curate depends on the feedback directory (extra_train)
    assert "${monitor.traffic}" in PIPELINE["stages"]["predict"]["deps"]
    assert "data/feedback" in PIPELINE["stages"]["curate"]["deps"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["data"]["extra_train"] == ["data/feedback"]
    assert (ROOT / params["monitor"]["traffic"]).is_file()  # the bundled demo traffic
    assert (ROOT / "data" / "feedback" / ".gitkeep").is_file()


def test_bundled_demo_traffic_is_train_rows_not_test_rows() -> None:
    traffic = pl.read_ndjson(ROOT / "data" / "traffic" / "demo.jsonl")
    test = pl.read_csv(ROOT / "data" / "raw" / "test.csv")
    assert traffic.height <= 400  # ~0.2 CPU-s a row: the demo's `dvc repro` stays short
    assert traffic["id"].n_unique() == traffic.height
    assert not set(traffic["text"]) & set(test["text"])
    assert traffic["received_at"].str.contains(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all()


def _traffic(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": f"t{i}", "text": t, "received_at": f"2026-11-30T08:{i:02d}:00Z"})
        for i, t in enumerate(texts)
    ]
    lines.insert(3, "{not json")  # a bad line: quarantined beside the predictions
    path.write_text("\n".join(lines) + "\n")


def _set(repo: Path, section: str, **values: object) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow  # SmolLM2 + a tiny adapter predict ~40 rows twice; four DVC runs
def test_repro_builds_the_monitor_report_and_reruns_only_what_changed(tmp_path: Path) -> None:
    from tests.test_predict import _tiny_adapter

    repo = make_tiny_project(tmp_path / "repo", stages=MONITOR_STAGES)
    _tiny_adapter(repo / "models")
    test = pl.read_csv(repo / "data" / "raw" / "test.csv")
    _traffic(
        repo / "data" / "traffic" / "demo.jsonl",
        pl.read_csv(repo / "data" / "raw" / "train.csv")["text"][:24].to_list(),
    )
    _set(repo, "monitor", baseline_rows=12, reference_rows=200, folds=3, bootstrap_samples=100)
    _set(repo, "predict", batch_size=8)
    sh("git", "add", ".", cwd=repo)
    sh("git", "commit", "-qm", "traffic", cwd=repo)

    # 1. the whole chain: curate, the baseline, the traffic's predictions, the drift checks
    first = sh("dvc", "repro", cwd=repo)
    assert set(stages_run(first.stdout)) == set(MONITOR_STAGES)
    monitor = repo / "reports" / "monitor"
    flat = json.loads((monitor / "monitor.json").read_text())
    assert flat["verdict"] in ("ok", "warn", "drift") and flat["rows"] == 24
    assert pl.read_parquet(monitor / "baseline_predictions.parquet").height == 12
    assert set(pl.read_parquet(monitor / "baseline_predictions.parquet")["text"]) <= set(test["text"])
    predictions = pl.read_parquet(monitor / "predictions.parquet")
    assert predictions["predicted_at"][0] == "2026-11-30T08:00:00Z"  # the traffic's own time
    bad = pl.read_parquet(monitor / "predictions.quarantine.parquet")
    assert bad["reason"].to_list() == ["invalid_json"] and bad["line"].to_list() == [4]
    metrics = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout)
    assert "monitor.json" in json.dumps(metrics)
    assert (
        sh("git", "check-ignore", "-q", "reports/monitor/monitor.json", cwd=repo, check=False).returncode == 1
    )
    md5 = file_md5(monitor / "predictions.parquet")
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "repro", cwd=repo)

    # 2. nothing changed: nothing runs; a flow-only key (schedule) re-runs nothing either
    assert stages_run(sh("dvc", "repro", cwd=repo).stdout) == []
    _set(repo, "monitor", schedule="0 6 * * *")
    assert stages_run(sh("dvc", "repro", cwd=repo).stdout) == []

    # 3. a threshold: only the checks re-run
    _set(repo, "monitor", auc_warn=0.56)
    assert stages_run(sh("dvc", "repro", cwd=repo).stdout) == ["monitor"]

    # 4. a forced rebuild of the predictions writes the same bytes (times come from the traffic)
    assert stages_run(sh("dvc", "repro", "-f", "-s", "predict", cwd=repo).stdout) == ["predict"]
    assert file_md5(monitor / "predictions.parquet") == md5

    # 5. reviewed rows land in data/feedback (versioned with dvc add, as the README says):
    # curate re-runs without any edit of dvc.yaml or params.yaml, and reads them
    before = json.loads((repo / "data" / "curated" / "quality.json").read_text())["input_train_rows"]
    reviewed = [
        {"id": f"production-{i}", "text": f"my card from the Zyntra shop number {i} never came",
         "category": test["category"][0], "origin": "production"}
        for i in range(3)
    ]  # fmt: skip
    feedback = repo / "data" / "feedback" / "reviewed.jsonl"
    feedback.write_text("".join(json.dumps(r) + "\n" for r in reviewed))
    sh("dvc", "add", "data/feedback/reviewed.jsonl", cwd=repo)
    ran = stages_run(sh("dvc", "repro", cwd=repo).stdout)
    assert ran[0] == "curate"
    after = json.loads((repo / "data" / "curated" / "quality.json").read_text())["input_train_rows"]
    assert after == before + 3
    # a prediction-review record (local Parquet beside it) is not a change: .dvcignore
    pl.DataFrame({"id": ["x"]}).write_parquet(repo / "data" / "feedback" / "prediction_sample.parquet")
    assert stages_run(sh("dvc", "repro", cwd=repo).stdout) == []
