"""The MLflow registry (flows/registry.py) against a real local backend: SQLite in tmp.

One backend for the whole cycle (MLflow creates its schema once, ~10 s): the first champion,
a better challenger promoted, rejections (not better, interval crossing zero, worse on the
reviewed production sample), rollback, and the CLI's errors without tracebacks. Adapters are
small stand-in directories: the registry never loads a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from schemas.params import Params, params_from_dict

LABELS = ("card_arrival", "card_linking", "exchange_rate")
N = 300


def _params(root: Path, **registry: object) -> Params:
    raw = {"registry": {"dir": "mlruns", **registry}, "evaluate": {"bootstrap_samples": 300}}
    return params_from_dict(raw, base_dir=root)


def _write_params(root: Path, **registry: object) -> Path:
    import yaml

    path = root / "params.yaml"
    path.write_text(
        yaml.safe_dump({"registry": {"dir": "mlruns", **registry}, "evaluate": {"bootstrap_samples": 300}})
    )
    return path


def _curated(root: Path) -> Path:
    curated = root / "curated"
    curated.mkdir(parents=True, exist_ok=True)
    manifest = {
        "files": {
            "train.parquet": {"md5": "1" * 32, "bytes": 1},
            "test.parquet": {"md5": "2" * 32, "bytes": 1},
        }
    }
    (curated / "manifest.json").write_text(json.dumps(manifest))
    return curated


def _adapter(root: Path, name: str, right: np.ndarray, *, evaluate_promotes: bool = True) -> dict[str, Path]:
    """A model dir (adapter/ + training.json) and its evaluation files, answering the N test
    rows correctly where ``right``."""
    model_dir = root / name
    (model_dir / "adapter").mkdir(parents=True)
    (model_dir / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 16, "name": name}))
    (model_dir / "adapter" / "adapter_model.safetensors").write_bytes(name.encode() * 64)
    record = {
        "params": {"base_model": "smollm2", "lora": {"r": 16, "alpha": 32}, "seed": 0},
        "task": "classification", "train_examples": 100, "final_loss": 0.5, "steps": 3,
        "loss_curve": [{"step": 1, "loss": 2.0}, {"step": 3, "loss": 0.5}],
        "train_file": str(_curated(root) / "train.parquet"), "data_md5": "1" * 32, "gate_md5": "3" * 32,
        "gate_override": False,
    }  # fmt: skip
    (model_dir / "training.json").write_text(json.dumps(record))
    gold = [LABELS[i % 3] for i in range(N)]
    pred = [g if ok else LABELS[(LABELS.index(g) + 1) % 3] for g, ok in zip(gold, right, strict=True)]
    verdict = {
        "verdict": "promote" if evaluate_promotes else "reject",
        "promote": evaluate_promotes,
        "reasons": [],
    }
    detail = {
        "n": N, "row_ids": [f"test-{i}" for i in range(N)], "row_labels": gold,
        "sides": {"adapter": {"accuracy": float(np.mean(right)), "predicted": pred}}, "verdict": verdict,
    }  # fmt: skip
    files = {"model_dir": model_dir}
    for key, text in (
        (
            "eval_json",
            json.dumps({"n": N, "adapter_accuracy": float(np.mean(right)), "verdict": verdict["verdict"]}),
        ),
        ("detail_json", json.dumps(detail)),
        ("html", "<html><body>eval</body></html>"),
    ):
        path = root / f"{name}-{key}"
        path.write_text(text)
        files[key] = path
    return files


def _right(first: int) -> np.ndarray:
    return np.arange(N) < first


def _production(path: Path, champion: np.ndarray, challenger: np.ndarray, version: str) -> Path:
    gold = [LABELS[i % 3] for i in range(len(champion))]

    def answer(ok: np.ndarray) -> list[str]:
        return [g if r else LABELS[(LABELS.index(g) + 1) % 3] for g, r in zip(gold, ok, strict=True)]

    pl.DataFrame({
        "id": [f"prod-{i}" for i in range(len(gold))], "text": [f"query {i}" for i in range(len(gold))],
        "label": gold, "champion_label": answer(champion), "challenger_label": answer(challenger),
        "champion_version": [version] * len(gold),
    }).write_parquet(path)  # fmt: skip
    return path


@pytest.mark.slow
def test_first_champion_promote_reject_and_rollback_on_a_real_backend(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from flows.registry import RegistryError, backend_of, download_champion, log_run, promote, rollback, show

    params = _params(tmp_path)
    runner = CliRunner()
    params_file = _write_params(tmp_path)

    # no backend yet: a clear error, no traceback, nothing created
    shown = runner.invoke(app, ["registry", "show", "--params", str(params_file)])
    assert shown.exit_code == 2 and "no registry yet" in shown.output and "Traceback" not in shown.output
    assert not (tmp_path / "mlruns").exists()

    # 1. the first adapter that passes evaluate becomes champion
    v1 = _adapter(tmp_path, "v1", _right(210))
    first = promote(**v1, params=params)
    assert first["verdict"] == "promote" and first["first_champion"] == 1 and first["champion_version"] == "1"
    backend = backend_of(params.registry, tmp_path)
    client = MlflowClient(tracking_uri=backend.tracking_uri, registry_uri=backend.tracking_uri)
    run = client.get_run(client.get_model_version("curagate-adapter", "1").run_id)
    assert run.data.params["train.lora.r"] == "16" and run.data.params["evaluate.bootstrap_samples"] == "300"
    assert run.data.tags["curagate.data_md5"] == "1" * 32 and run.data.tags["curagate.test_md5"] == "2" * 32
    assert run.data.metrics["adapter_accuracy"] == pytest.approx(0.7)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [2.0, 0.5]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "eval", "training.json", "promotion"} <= artifacts
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == ["1" * 32, "2" * 32]
    # logging again is a no-op: the same adapter is one run and one version
    again = log_run(v1["model_dir"], params=params, eval_json=v1["eval_json"], detail_json=v1["detail_json"])
    assert (again.version, again.logged_training, again.logged_evaluation) == ("1", False, False)

    # 2. a clearly better challenger is promoted, through the CLI: promotion.json and eval.json's block
    v2 = _adapter(tmp_path, "v2", _right(270))
    out = tmp_path / "promotion.json"
    result = runner.invoke(app, [
        "registry", "promote", "--params", str(params_file), "--model-dir", str(v2["model_dir"]),
        "--eval", str(v2["eval_json"]), "--detail", str(v2["detail_json"]), "--html", str(v2["html"]),
        "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    block = json.loads(out.read_text())["champion"]
    assert block == json.loads(v2["eval_json"].read_text())["champion"]
    assert (block["verdict"], block["champion_version"], block["previous_champion_version"]) == (
        "promote",
        "2",
        "1",
    )
    assert block["test_challenger"] == pytest.approx(0.9) and block["test_champion"] == pytest.approx(0.7)
    assert block["test_difference_low"] > 0
    version = client.get_model_version("curagate-adapter", "2")
    assert version.tags["curagate.promotion_verdict"] == "promote" and "pass:" in version.description
    assert str(client.get_model_version_by_alias("curagate-adapter", "champion").version) == "2"

    # 3. rejections: the champion stays, the verdict and reasons are on the version
    same = _adapter(tmp_path, "v3-same", _right(270))  # as good as the champion: not better
    assert promote(**same, params=params)["verdict"] == "reject"
    noisy_right = _right(270)
    noisy_right[270:280], noisy_right[:6] = True, False  # +4 rows: above the margin, interval crosses 0
    noisy = promote(**_adapter(tmp_path, "v4-noisy", noisy_right), params=params)
    assert (
        noisy["verdict"] == "reject"
        and noisy["test_difference"] >= 0.01
        and noisy["test_difference_low"] <= 0
    )
    better = _adapter(tmp_path, "v5-better", _right(295))
    sample = _production(tmp_path / "reviewed.parquet", _right(200)[:200] | True, _right(120)[:200], "2")
    worse = promote(**better, params=params, production=sample)
    assert (
        worse["verdict"] == "reject"
        and worse["test_difference_low"] > 0
        and worse["production_difference"] < 0
    )
    rejected = client.get_model_version("curagate-adapter", worse["challenger_version"])
    assert rejected.tags["curagate.promotion_verdict"] == "reject"
    assert "production rows" in rejected.tags["curagate.promotion_reasons"]
    assert str(client.get_model_version_by_alias("curagate-adapter", "champion").version) == "2"
    info = show(params=params)
    assert info["champion"] == "2" and info["history"] == ["1", "2"] and len(info["versions"]) == 5

    # 4. rollback: one command back to the previous champion, recorded; then nothing left to undo
    back = runner.invoke(app, ["registry", "rollback", "--params", str(params_file)])
    assert back.exit_code == 0, back.output
    assert str(client.get_model_version_by_alias("curagate-adapter", "champion").version) == "1"
    assert "curagate.rolled_back_at" in client.get_model_version("curagate-adapter", "2").tags
    assert show(params=params)["history"] == ["1"]
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(params=params)
    # the rolled-back version is not promoted again by a re-run; by hand it can be
    rerun = promote(**v2, params=params)
    assert rerun["verdict"] == "reject" and "was rolled back" in rerun["reasons"]
    assert rollback(params=params, to="2")["to_version"] == "2"
    pulled = download_champion(tmp_path / "served", params=params)
    assert (pulled / "adapter_model.safetensors").read_bytes() == b"v2" * 64
    unknown = runner.invoke(app, ["registry", "rollback", "--to", "99", "--params", str(params_file)])
    assert (
        unknown.exit_code == 2 and "no version '99'" in unknown.output and "Traceback" not in unknown.output
    )


# ── the reviewed production sample answered by the promote step itself (real models) ──

REVIEW_LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed"]
REVIEWED = [  # (text, reviewer's label)
    ("my card has not arrived yet", "card_arrival"),
    ("what is the euro to dollar rate", "exchange_rate"),
    ("I lost my card", "lost_or_stolen_card"),
    ("my top up did not work", "top_up_failed"),
    ("where is the card I ordered", "card_arrival"),
    ("someone stole my wallet and card", "lost_or_stolen_card"),
]


def _real_adapter(root: Path, name: str, right: np.ndarray, *, seed: int, train_texts: list[str]) -> dict:
    """_adapter's files with a real (untrained, random-B) LoRA on SmolLM2 and the training
    record predict needs; its train.parquet holds ``train_texts``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.model import load_base_model

    files = _adapter(root, name, right)
    shutil.rmtree(files["model_dir"] / "adapter")
    torch.manual_seed(seed)
    loaded = load_base_model("smollm2", device="cpu", for_training=False)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(loaded.model, lora).save_pretrained(files["model_dir"] / "adapter")
    train_file = root / f"{name}-train.parquet"
    pl.DataFrame({"id": [f"t{i}" for i in range(len(train_texts))], "text": train_texts}).write_parquet(
        train_file
    )
    record = json.loads((files["model_dir"] / "training.json").read_text())
    record.update(label_set=REVIEW_LABELS, prompt_form="short", train_file=str(train_file))
    (files["model_dir"] / "training.json").write_text(json.dumps(record))
    return files


@pytest.mark.slow
def test_promote_answers_the_reviewed_rows_with_both_models(tmp_path: Path) -> None:
    from flows.registry import promote
    from training.predict import adapter_version, load_predictor, predict_texts

    feedback = tmp_path / "feedback"
    feedback.mkdir()
    raw = {
        "registry": {"dir": "mlruns"},
        "evaluate": {"bootstrap_samples": 300},
        "predict": {"batch_size": 4},
        "prediction_review": {
            "sample_file": "feedback/sample.parquet",  # relative: to the params' directory
            "decisions_file": "feedback/decisions.parquet",
        },
    }
    params = params_from_dict(raw, base_dir=tmp_path)
    # v1 was trained on row 3's text, v2 on row 4's: both are left out of the comparison
    v1 = _real_adapter(tmp_path, "v1", _right(210), seed=0, train_texts=[REVIEWED[3][0]])
    first = promote(**v1, params=params)  # the first champion: nothing to compare, nothing predicted
    assert first["verdict"] == "promote" and "production_rows" not in first

    texts = [t for t, _ in REVIEWED]
    gold = [g for _, g in REVIEWED]
    served = adapter_version(v1["model_dir"] / "adapter")
    # rows 0-4 were served by the champion (their answers are taken as they are: set to the
    # truth here, so a re-prediction would show); row 5 by another version (predicted now);
    versions = [served] * 5 + ["md5-someone-else"]
    pl.DataFrame({
        "id": [f"p{i}" for i in range(6)], "text_hash": [f"h{i}" for i in range(6)],
        "verdict": ["correct"] * 6, "right_label": gold, "model_label": gold,
        "model_version": versions, "weight": [1.0, 2.0, 1.0, 1.0, 1.0, 3.0],
    }).write_parquet(feedback / "decisions.parquet")  # fmt: skip
    keys = {"id": [f"p{i}" for i in range(6)], "text_hash": [f"h{i}" for i in range(6)]}
    pl.DataFrame({**keys, "text": texts}).write_parquet(feedback / "sample.parquet")
    v2 = _real_adapter(tmp_path, "v2", _right(270), seed=1, train_texts=[texts[4].upper()])
    seen: dict[str, int] = {}
    result = promote(**v2, params=params, on_progress=lambda what, done, total: seen.update({what: total}))

    compared = [0, 1, 2, 5]
    weights = np.array([1.0, 2.0, 1.0, 3.0])
    challenger, _ = predict_texts(load_predictor(v2["model_dir"]), [texts[i] for i in compared], batch_size=4)
    champion_5, _ = predict_texts(load_predictor(v1["model_dir"]), [texts[5]], batch_size=4)
    champion = [gold[i] for i in compared[:-1]] + champion_5
    truth = [gold[i] for i in compared]

    def weighted(answers: list[str]) -> float:
        return float((np.array(answers) == np.array(truth)) @ weights / weights.sum())

    assert result["production_rows"] == 4 and seen == {"challenger": 4, "champion": 1}
    assert result["production_challenger"] == pytest.approx(weighted(challenger), abs=1e-6)
    assert result["production_champion"] == pytest.approx(weighted(champion), abs=1e-6)
    reasons = result["reasons"]
    assert "6 judged rows, 2 left out (the challenger or the champion was trained on them)" in reasons
    assert "3 from the reviewed predictions it served, 1 predicted now" in reasons
