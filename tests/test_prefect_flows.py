"""Prefect flows on tiny data (Prefect's test harness, no server of our own): the same files
as the CLI and as `dvc repro`, artifacts published, training refused without a valid gate."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from flows.prefect_flows import (
    curate_dataset,
    pipeline,
    quality_markdown,
    train_adapter,
    verdict_of,
)
from schemas.manifest import file_md5
from tests.conftest import ROOT
from tests.tiny_project import CURATED_FILES, make_tiny_project, sh, tiny_params, write_tiny_data

GATE = {
    "passed": False,
    "allowed": False,
    "override": False,
    "failed": ["min_examples"],
    "checks": [
        {
            "name": "min_examples",
            "metric": "curated_train_rows",
            "value": 10,
            "limit": 100,
            "comparison": ">=",
            "passed": False,
            "reason": "",
        }
    ],
}


def test_markdown_names_the_verdict_the_failed_checks_and_the_data_version() -> None:
    text = quality_markdown({"curated_train_rows": 10, "accounting_ok": 1}, GATE, "abc123")
    assert "**FAILED**" in text and "min_examples: 10 vs limit >= 100" in text
    assert "`abc123`" in text and "| curated_train_rows | 10 |" in text
    assert verdict_of(None) == "missing"
    assert verdict_of({**GATE, "allowed": True, "override": True}) == "overridden"
    assert verdict_of({**GATE, "passed": True, "allowed": True, "failed": []}) == "passed"


# ── flows under Prefect's test harness (a temporary API server and database) ──────────


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_data(root / "raw")
    params = tiny_params()
    params["data"]["labels"] = str(root / "raw" / "categories.json")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _cli(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _flow_equals_cli(root: Path, *, cli_params: str, flow_params: str, out: str) -> Any:
    """`curagate curate` (into ``root/cli``) and the curate-dataset flow (into ``root/out``):
    the flow completes and writes the CLI's files byte for byte; returns its final state."""
    raw = ("--train", str(root / "raw/train.csv"), "--test", str(root / "raw/test.csv"))
    _cli("curate", *raw, "--params", str(root / cli_params), "--out", str(root / "cli"), "--quiet", cwd=ROOT)
    state = curate_dataset(
        train=str(root / "raw/train.csv"),
        test=str(root / "raw/test.csv"),
        params_path=str(root / flow_params),
        out=str(root / out),
        return_state=True,
    )
    assert state.is_completed()
    for name in CURATED_FILES:
        assert file_md5(root / out / name) == file_md5(root / "cli" / name), name
    return state


def _artifacts(flow_run_id: UUID) -> dict[str, Any]:
    """Artifacts of one flow run by key (raw API call: 3.8's client.read_artifacts sends
    null filters the server rejects, and empty ones exclude flow-level artifacts)."""
    from prefect.client.orchestration import get_client

    body = {
        "artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}},
        "limit": 50,
        "offset": 0,
        "sort": "CREATED_DESC",
    }
    with get_client(sync_client=True) as client:
        response = client.request("POST", "/artifacts/filter", json=body)  # type: ignore[arg-type]
    return {a["key"]: a["data"] for a in response.json()}


@pytest.mark.slow  # plus a temporary Dask cluster
def test_curate_dataset_flow_shards_signatures_when_params_say_dask(harness, tiny_inputs: Path) -> None:
    """`scale.runner: dask` in params.yaml: the flow's dedup and decontam tasks run their
    signatures as `sharded-signatures` subflows on Dask; the files equal the CLI's local run."""
    from prefect.client.orchestration import get_client

    root = tiny_inputs
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params_dask.yaml").write_text(
        yaml.safe_dump({**params, "scale": {"runner": "dask", "shards": 2}})
    )
    _flow_equals_cli(root, cli_params="params.yaml", flow_params="params_dask.yaml", out="dask")
    body = {"flows": {"name": {"any_": ["sharded-signatures"]}}, "limit": 50, "offset": 0, "sort": "ID_DESC"}
    with get_client(sync_client=True) as client:  # raw call: see _artifacts
        shard_runs = client.request("POST", "/flow_runs/filter", json=body).json()  # type: ignore[arg-type]
    assert len(shard_runs) == 2 and all(r["state_type"] == "COMPLETED" for r in shard_runs)


@pytest.mark.slow
def test_curate_dataset_flow_writes_the_cli_files_and_publishes_artifacts(harness, tiny_inputs: Path) -> None:
    root = tiny_inputs
    state = _flow_equals_cli(root, cli_params="params.yaml", flow_params="params.yaml", out="flow")
    _cli("gate", "--curated", str(root / "cli"), "--params", str(root / "params.yaml"),
         "--out", str(root / "cli/gate.json"), cwd=ROOT)  # fmt: skip
    summary = state.result()
    cli_gate = json.loads((root / "cli/gate.json").read_text())
    flow_gate = json.loads((root / "flow/gate.json").read_text())
    assert {**flow_gate, "quality_file": None} == {**cli_gate, "quality_file": None}

    assert summary["data_version"] == file_md5(root / "flow/train.parquet")
    assert summary["gate"] == "passed" and summary["gate_failed"] == []
    artifacts = _artifacts(state.state_details.flow_run_id)
    assert "**PASSED**" in artifacts["curation-quality"]
    assert summary["data_version"] in artifacts["curation-quality"]
    link = str(artifacts["curation-report"])
    assert "file://" in link and "report.html" in link


@pytest.mark.slow
def test_train_adapter_refuses_a_failed_or_stale_gate(harness, tiny_inputs: Path, tmp_path: Path) -> None:
    root = tiny_inputs
    curated = root / "flow"
    assert (curated / "quality.json").is_file(), "runs after the curate-dataset test"
    failing = dict(yaml.safe_load((root / "params.yaml").read_text()))
    failing["gate"] = {**failing["gate"], "min_examples": 100_000}
    (tmp_path / "failing.yaml").write_text(yaml.safe_dump(failing))
    gate = tmp_path / "gate.json"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "gate", "--curated", str(curated),
         "--params", str(tmp_path / "failing.yaml"), "--out", str(gate)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and json.loads(gate.read_text())["passed"] is False

    refused = train_adapter(
        curated=str(curated), params_path=str(root / "params.yaml"), gate=str(gate),
        model_dir=str(tmp_path / "models"), return_state=True,
    )  # fmt: skip
    assert refused.is_failed()
    assert "gate failed" in str(refused.message) or "gate failed" in repr(
        refused.result(raise_on_failure=False)
    )
    assert not (tmp_path / "models").exists()

    # a passing gate computed from another quality.json is stale
    stale = json.loads((curated / "gate.json").read_text())
    stale["quality_md5"] = "0" * 32
    gate.write_text(json.dumps(stale))
    refused = train_adapter(
        curated=str(curated), params_path=str(root / "params.yaml"), gate=str(gate),
        model_dir=str(tmp_path / "models"), return_state=True,
    )  # fmt: skip
    assert refused.is_failed()
    assert "re-run `curagate gate`" in repr(refused.result(raise_on_failure=False))
    assert not (tmp_path / "models").exists()


def _lock_without_report(repo: Path) -> dict[str, Any]:
    """dvc.lock minus report.html: its label-distribution plot orders tied label counts
    arbitrarily (curation/report.py sorts by count only), so its bytes vary between runs."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = lock["stages"]["curate"]["outs"]
    lock["stages"]["curate"]["outs"] = [o for o in outs if not o["path"].endswith("report.html")]
    return lock


@pytest.mark.slow
def test_pipeline_flow_and_dvc_repro_leave_the_same_dvc_lock_and_files(harness, tmp_path: Path) -> None:
    by_dvc = make_tiny_project(tmp_path / "by_dvc")
    by_flow = make_tiny_project(tmp_path / "by_flow")
    sh("dvc", "repro", cwd=by_dvc)
    state = pipeline(repo=str(by_flow), return_state=True)
    assert state.is_completed()
    summary = state.result()

    assert _lock_without_report(by_flow) == _lock_without_report(by_dvc)
    for name in CURATED_FILES:
        path = Path("data/curated") / name
        assert file_md5(by_flow / path) == file_md5(by_dvc / path), name
    assert summary["dvc_lock_md5"] == file_md5(by_flow / "dvc.lock")
    assert summary["data_version"] == file_md5(by_flow / "data/curated/train.parquet")
    assert summary["gate"] == "passed"

    # the flow fails like `dvc repro` when the gate fails, and says so in its artifact
    params = yaml.safe_load((by_flow / "params.yaml").read_text())
    params["gate"]["min_examples"] = 100_000
    (by_flow / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = pipeline(repo=str(by_flow), return_state=True)
    assert failed.is_failed()
    assert "min_examples" in repr(failed.result(raise_on_failure=False))
    assert "**FAILED**" in _artifacts(failed.state_details.flow_run_id)["curation-quality"]
