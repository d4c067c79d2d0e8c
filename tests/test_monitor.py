"""Monitor: drift found on a seeded shifted window and not on an i.i.d. one, windows cover
every row once, the statistics on known cases, the retrain policy, traffic ingest with
quarantine, the CLI; and (slow) the `monitor` flow served by a real Prefect server starting
the `pipeline` deployment on drift."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from curation.drift import (
    assign_windows,
    auc_interval,
    judge,
    label_shift,
    monitor_windows,
    novel_terms,
    retrain_decision,
    tokens,
    verdict_of,
)
from schemas.monitor_params import MonitorParams
from schemas.params import ParamsError, params_from_dict
from schemas.predictions import PREDICTIONS_SCHEMA
from tests.test_prefect_server import server as server  # the real Prefect server fixture

SMALL = MonitorParams(window_rows=200, min_window_rows=50, reference_rows=400, bootstrap_samples=200, folds=3)
PRODUCTS = ("Zyntra", "Quorvex", "Paywisp", "Novacard")


def _predictions(
    frame: pl.DataFrame, confidence: np.ndarray, labels: list[str] | None = None
) -> pl.DataFrame:
    n = frame.height
    return pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "text": frame["text"],
            "label": labels if labels is not None else frame["label"],
            "confidence": confidence,
            "model_version": ["md5-test"] * n,
            "predicted_at": ["2026-01-01T00:00:00Z"] * n,
        },
        schema=PREDICTIONS_SCHEMA,
    )


@pytest.fixture(scope="module")
def planted(banking_train: pl.DataFrame, banking_test: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Reference: train rows of 10 intents. Baseline and i.i.d. window: disjoint test rows of
    the same intents. Shifted window: half new intents, product names, lower confidence."""
    rng = np.random.default_rng(3)
    labels = sorted(banking_train["label"].unique().to_list())
    known, new = labels[:10], labels[10:20]
    reference = banking_train.filter(pl.col("label").is_in(known)).sample(n=600, seed=1)
    test = banking_test.filter(pl.col("label").is_in(known)).sample(fraction=1.0, seed=2, shuffle=True)
    baseline = _predictions(test.head(200), rng.beta(8, 2, 200))
    iid = _predictions(test.slice(200, 200), rng.beta(8, 2, 200))
    novel = banking_test.filter(pl.col("label").is_in(new)).sample(n=100, seed=4)
    mixed = pl.concat([test.slice(200, 100), novel])
    texts = [f"{t} with my {PRODUCTS[i % 4]} card" if i % 3 == 0 else t for i, t in enumerate(mixed["text"])]
    # the model maps new intents onto a few known ones, with less confidence
    guesses = [*mixed["label"][:100], *[known[i % 2] for i in range(100)]]
    shifted = _predictions(
        mixed.with_columns(text=pl.Series(texts)), np.r_[rng.beta(8, 2, 100), rng.beta(2, 2, 100)], guesses
    )
    return {"reference": reference, "baseline": baseline, "iid": iid, "shifted": shifted}


def test_drift_found_on_a_shifted_window_not_on_an_iid_one(planted: dict[str, pl.DataFrame]) -> None:
    ok = monitor_windows(planted["iid"], planted["reference"], baseline=planted["baseline"], cfg=SMALL)
    assert ok["verdict"] == "ok", ok["windows"][-1]["checks"]
    assert ok["label_reference"] == "baseline" and len(ok["windows"]) == 1
    drift = monitor_windows(planted["shifted"], planted["reference"], baseline=planted["baseline"], cfg=SMALL)
    assert drift["verdict"] == "drift"
    assert set(drift["failed_checks"]) == {
        "input_drift",
        "novel_terms",
        "prediction_drift",
        "confidence_drift",
    }
    new_terms = {t for t, _ in drift["windows"][-1]["stats"]["top_new_terms"]}
    assert {p.lower() for p in PRODUCTS} <= new_terms


def test_windows_cover_every_row_once_and_merge_small_ones() -> None:
    frame = pl.DataFrame(
        {"text": [f"t{i}" for i in range(530)], "predicted_at": ["2026-01-01T00:00:00Z"] * 530}
    )
    rows = assign_windows(frame, cfg=MonitorParams(window_rows=200, min_window_rows=150))
    assert rows.height == 530 and sorted(rows["text"]) == sorted(frame["text"])
    assert rows.group_by("window").len().sort("window")["len"].to_list() == [200, 330]  # tail of 130 + 200
    stamps = ["2026-01-01T09:00:00Z"] * 60 + ["2026-01-03T10:00:00Z"] * 70 + ["2026-01-02T10:00:00Z"] * 10
    timed = pl.DataFrame({"text": [f"t{i}" for i in range(140)], "predicted_at": stamps})
    daily = assign_windows(timed, cfg=MonitorParams(window_by="time", window_every="1d", min_window_rows=50))
    sizes = daily.group_by("window", maintain_order=True).agg(pl.len(), pl.col("window_start").first())
    assert sizes["len"].to_list() == [70, 70]  # day 2 (10 rows) joins day 1, in time order
    assert sizes["window_start"].to_list() == ["2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"]
    with pytest.raises(ValueError, match="not ISO-8601"):
        assign_windows(
            timed.with_columns(predicted_at=pl.lit("yesterday")), cfg=MonitorParams(window_by="time")
        )


def test_statistics_on_known_cases() -> None:
    y = np.r_[np.zeros(50, bool), np.ones(50, bool)]
    assert auc_interval(y, y.astype(float), samples=100, confidence=0.9, seed=0) == (1.0, 1.0, 1.0)
    assert auc_interval(y, -y.astype(float), samples=100, confidence=0.9, seed=0)[0] == 0.0
    value, low, high = auc_interval(
        y, np.random.default_rng(0).random(100), samples=200, confidence=0.95, seed=0
    )
    assert low <= value <= high and low < 0.5 < high
    same = label_shift(["a", "b"] * 50, ["a", "b"] * 80)
    assert same["chi2_p"] > 0.99 and same["psi"] < 1e-9
    moved = label_shift(["a"] * 90 + ["b"] * 10, ["a", "b"] * 80)
    assert moved["chi2_p"] < 1e-6 and moved["psi"] > 0.25
    vocab = tokens(pl.Series(["my card is late", "card 1234 blocked"])).unique()
    rate, terms = novel_terms(vocab, pl.Series(["my Zyntra card", "zyntra is late 9999"]), top=5)
    assert terms == [("zyntra", 2)] and rate == pytest.approx(2 / 6)  # digits are not tokens


def test_levels_and_verdict_follow_the_thresholds() -> None:
    cfg = MonitorParams()
    stats = {"auc_low": cfg.auc_warn, "novel_rate_excess": 0.0, "chi2_p": 0.5, "psi": 1.0,
             "mean_confidence": 0.5, "baseline_mean_confidence": 0.51 + cfg.confidence_drop_drift,
             "low_confidence_share": 0.1, "baseline_low_confidence_share": 0.1}  # fmt: skip
    levels = {c["check"]: c["level"] for c in judge(stats, cfg=cfg)}
    # prediction drift needs both a small p-value and a large PSI
    assert levels == {"input_drift": "warn", "novel_terms": "ok", "prediction_drift": "ok",
                      "confidence_drift": "drift"}  # fmt: skip
    assert verdict_of(judge(stats, cfg=cfg)) == ("drift", ["input_drift", "confidence_drift"])
    assert verdict_of([]) == ("ok", [])


def test_retrain_policy() -> None:
    assert retrain_decision("drift", ["novel_terms"], None, min_production_accuracy=0.8)[0] is True
    assert retrain_decision("warn", ["novel_terms"], None, min_production_accuracy=0.8)[0] is False
    retrain, reasons = retrain_decision("ok", [], 0.7, min_production_accuracy=0.8)
    assert retrain is True and "0.700 < 0.800" in reasons[-1]
    assert retrain_decision("ok", [], 0.9, min_production_accuracy=0.8)[0] is False


def test_monitor_params_are_checked() -> None:
    with pytest.raises(ValueError, match="warn threshold"):
        MonitorParams(auc_warn=0.7, auc_drift=0.6)
    with pytest.raises(ParamsError, match="monitor"):
        params_from_dict({"monitor": {"window_rows": "many"}})
    assert params_from_dict({"monitor": {"window_by": "time"}}).monitor.window_by == "time"


def test_traffic_is_ingested_and_validated_like_curate(tmp_path: Path) -> None:
    from flows.monitoring import quarantine_path, read_traffic
    from schemas.params import DataParams

    lines = [
        json.dumps({"text": "where is my card", "channel": "app", "label": "card_arrival"}),
        "{not json",
        json.dumps({"text": ""}),
        json.dumps({"text": 7}),
        json.dumps({"text": "what rate today", "channel": "web", "confidence": 3}),
        "",
    ]
    path = tmp_path / "traffic.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows, quarantine = read_traffic(path, data=DataParams())
    assert rows["text"].to_list() == ["where is my card", "what rate today"]
    assert rows["channel"].to_list() == ["app", "web"]
    assert rows["input_label"].to_list() == ["card_arrival", None]  # an input label is kept, renamed
    assert rows["input_confidence"].to_list() == [None, 3]  # a clash with a predictions column, renamed
    assert quarantine["reason"].to_list() == ["invalid_json", "empty_text", "text_wrong_type", "blank_line"]
    assert rows.height + quarantine.height == len(lines)
    assert quarantine_path(tmp_path / "p.parquet").name == "p.quarantine.parquet"


def test_labelled_traffic_without_other_columns_keeps_its_label(tmp_path: Path) -> None:
    """A CSV of text and label only (e.g. the test split sent as traffic): no extra columns."""
    from flows.monitoring import read_traffic
    from schemas.params import DataParams

    path = tmp_path / "traffic.csv"
    path.write_text("text,label\nwhere is my card,card_arrival\nwhat rate today,exchange_rate\n")
    rows, quarantine = read_traffic(path, data=DataParams())
    assert rows.columns == ["id", "text", "input_label"]
    assert rows["input_label"].to_list() == ["card_arrival", "exchange_rate"]
    assert quarantine.height == 0


@pytest.mark.slow  # matplotlib and a page: a few seconds
def test_cli_monitor_writes_metrics_and_page_and_refuses_bad_files(
    tmp_path: Path, planted: dict[str, pl.DataFrame]
) -> None:
    from flows.cli import app

    curated = tmp_path / "curated"
    curated.mkdir()
    planted["reference"].write_parquet(curated / "train.parquet")
    planted["shifted"].write_parquet(tmp_path / "predictions.parquet")
    planted["baseline"].write_parquet(tmp_path / "baseline.parquet")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"monitor": {"window_rows": 200, "reference_rows": 400, "folds": 3}}))
    args = ["monitor", "--reference", str(curated), "--predictions", str(tmp_path / "predictions.parquet"),
            "--out", str(tmp_path / "mon"), "--params", str(params)]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--baseline-predictions", str(tmp_path / "baseline.parquet")])
    assert result.exit_code == 0, result.output
    flat = json.loads((tmp_path / "mon" / "monitor.json").read_text())
    assert (
        flat["verdict"] == "drift" and flat["verdict_level"] == 2 and "novel_terms" in flat["failed_checks"]
    )
    assert all(isinstance(v, int | float | str) for v in flat.values())  # flat, for dvc metrics
    assert "data:image/png;base64," in (tmp_path / "mon" / "monitor.html").read_text()

    planted["shifted"].drop("confidence").write_parquet(tmp_path / "bad.parquet")
    bad = CliRunner().invoke(app, [*args[:3], "--predictions", str(tmp_path / "bad.parquet"), *args[5:]])
    assert bad.exit_code == 2 and "bad.parquet:notapredictionsfile:confidence" in "".join(bad.output.split())
    missing = CliRunner().invoke(app, ["monitor", "--reference", str(tmp_path / "nope"), *args[3:]])
    assert missing.exit_code == 2 and "train.parquet:notfound" in "".join(missing.output.split())


# ── the flow against a real Prefect server ──────────────────────────────────────────


def _api(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_monitor_flow_served_triggers_the_pipeline_deployment_on_drift(
    server: dict[str, str], tmp_path: Path, planted: dict[str, pl.DataFrame]
) -> None:
    from tests.test_prefect_server import BIN, _stop, _wait_for

    project = tmp_path / "project"
    (project / "curated").mkdir(parents=True)
    planted["reference"].write_parquet(project / "curated" / "train.parquet")
    planted["shifted"].write_parquet(project / "predictions.parquet")
    planted["baseline"].write_parquet(project / "baseline.parquet")
    monitor = {"window_rows": 200, "reference_rows": 400, "folds": 3, "bootstrap_samples": 200}
    (project / "params.yaml").write_text(yaml.safe_dump({"monitor": monitor}))
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        serve = subprocess.Popen(
            [str(BIN / "curagate"), "serve"], cwd=project, env=server, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    api = server["PREFECT_API_URL"]
    try:
        for name in ("monitor", "pipeline"):
            _wait_for(f"{api}/deployments/name/{name}/local", serve, log)
        run = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "monitor/local",
             "--param", "predictions=predictions.parquet", "--param", "baseline_predictions=baseline.parquet",
             "--param", "reference=curated", "--param", "out=reports/monitor",
             "--param", "repo=no-such-repo", "--watch"],
            cwd=project, env=server, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + log.read_text()[-3000:]
        pipeline_runs = _api(f"{api}/flow_runs/filter", {"flows": {"name": {"any_": ["pipeline"]}}})
        monitor_runs = _api(f"{api}/flow_runs/filter", {"flows": {"name": {"any_": ["monitor"]}}})
        artifacts = _api(f"{api}/artifacts/filter", {"artifacts": {"key": {"any_": ["monitor"]}}})
    finally:
        _stop(serve)
    flat = json.loads((project / "reports" / "monitor" / "monitor.json").read_text())
    assert flat["verdict"] == "drift"
    assert len(monitor_runs) == 1 and monitor_runs[0]["state_type"] == "COMPLETED"
    # the pipeline deployment was started by the monitor run, with its parameters
    assert len(pipeline_runs) == 1 and pipeline_runs[0]["parameters"] == {"repo": "no-such-repo"}
    assert pipeline_runs[0]["deployment_id"] is not None
    assert artifacts and "retrain triggered" in artifacts[0]["data"]
    assert "input_drift" in artifacts[0]["data"]
