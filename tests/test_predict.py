"""Predict: the confidence is the label's probability under the trie-constrained distribution
(toy logits), the adapter version is a content hash; and (slow) `curagate predict` with the
real SmolLM2 and a tiny adapter: valid labels, confidences that match a direct computation,
the same labels as evaluate's decoding, bad lines quarantined."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from schemas.predictions import PREDICTION_COLUMNS, PREDICTIONS_SCHEMA
from training.decoding import LabelTrie
from training.predict import PredictorError, adapter_version, label_probability, read_training_record

END = 1


def test_confidence_is_the_product_of_constrained_token_probabilities() -> None:
    trie = LabelTrie.from_sequences({"card": [5], "card_arrival": [5, 6], "rate": [7, 8]}, end=END)
    logits = torch.zeros(3, 10)
    logits[0, 5], logits[0, 7], logits[0, 3] = 2.0, 0.0, 50.0  # token 3 is off the trie: ignored
    logits[1, 6], logits[1, END] = 1.0, 0.0
    label, p = label_probability(trie, [5, 6, END], logits)
    first = math.exp(2) / (math.exp(2) + 1)
    second = math.exp(1) / (math.exp(1) + 1)
    assert label == "card_arrival" and p == pytest.approx(first * second)
    # once one label is left ("rate" after 7) the remaining tokens are forced: probability 1
    label, p = label_probability(trie, [7, 8, END], logits)
    assert label == "rate" and p == pytest.approx(1 / (math.exp(2) + 1))


def test_adapter_version_is_a_content_hash(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_model.safetensors").write_bytes(b"weights")
    assert adapter_version(tmp_path / "a") == adapter_version(tmp_path / "b")
    (tmp_path / "b" / "adapter_model.safetensors").write_bytes(b"other")
    assert adapter_version(tmp_path / "a") != adapter_version(tmp_path / "b")
    with pytest.raises(PredictorError, match="training.json: not found"):
        read_training_record(tmp_path)
    (tmp_path / "training.json").write_text(json.dumps({"task": "instruction"}))
    with pytest.raises(PredictorError, match="classification adapters only"):
        read_training_record(tmp_path)


# ── the real model and a tiny adapter ───────────────────────────────────────────────

LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed"]


def _tiny_adapter(model_dir: Path) -> None:
    """An untrained LoRA with random B (so it changes the model) and its training.json: the
    files `curagate train` leaves, made in seconds instead of a training run."""
    from peft import LoraConfig, get_peft_model

    from training.model import load_base_model

    torch.manual_seed(0)
    loaded = load_base_model("smollm2", device="cpu", for_training=False)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(loaded.model, lora).save_pretrained(model_dir / "adapter")
    record = {"task": "classification", "prompt_form": "short", "label_set": LABELS,
              "params": {"base_model": "smollm2"}}  # fmt: skip
    (model_dir / "training.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_predict_cli_with_smollm2_and_a_tiny_adapter(tmp_path: Path) -> None:
    from flows.cli import app
    from training.decoding import generate_batched
    from training.predict import load_predictor
    from training.prompts import build_prompt

    _tiny_adapter(tmp_path / "models")
    texts = ["my card has not arrived yet", "what is the euro to dollar rate", "I lost my card",
             "my top up did not work", "where is the card I ordered"]  # fmt: skip
    lines = [json.dumps({"text": t, "channel": "app"}) for t in texts[:3]]
    lines += ["{broken", json.dumps({"text": "  "})]
    lines += [json.dumps({"text": t, "channel": "web"}) for t in texts[3:]]
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text("\n".join(lines) + "\n")
    (tmp_path / "params.yaml").write_text("predict: {batch_size: 2, chunk_rows: 3}\n")
    out = tmp_path / "out" / "predictions.parquet"
    args = ["predict", "--in", str(traffic), "--out", str(out), "--model-dir", str(tmp_path / "models"),
            "--params", str(tmp_path / "params.yaml"), "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    frame = pl.read_parquet(out)
    assert tuple(frame.columns[: len(PREDICTION_COLUMNS)]) == PREDICTION_COLUMNS
    assert {k: frame.schema[k] for k in PREDICTIONS_SCHEMA} == dict(PREDICTIONS_SCHEMA)
    assert frame["text"].to_list() == texts and frame["channel"].to_list() == ["app"] * 3 + ["web"] * 2
    assert set(frame["label"]) <= set(LABELS)
    assert frame["confidence"].is_between(0.0, 1.0, closed="right").all()
    assert frame["model_version"].unique().to_list() == [adapter_version(tmp_path / "models" / "adapter")]
    assert frame["predicted_at"].str.contains(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all()
    bad = pl.read_parquet(out.with_name("predictions.quarantine.parquet"))
    assert bad["reason"].to_list() == ["invalid_json", "empty_text"] and bad["line"].to_list() == [4, 5]

    # the same labels as evaluate's decoding; the confidence equals a direct computation
    predictor = load_predictor(tmp_path / "models", device="cpu")
    tok = predictor.tokenizer
    prompts = [build_prompt(tok, t, task="classification", form="short", label_set=LABELS) for t in texts]
    generated = generate_batched(predictor.model, tok, prompts, max_new_tokens=predictor.trie.depth,
                                 batch_size=2, device="cpu", trie=predictor.trie)  # fmt: skip
    assert [predictor.trie.label_of(g) for g in generated] == frame["label"].to_list()
    for prompt, label, confidence in zip(prompts, frame["label"], frame["confidence"], strict=True):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        answer = tok(label + tok.eos_token, add_special_tokens=False)["input_ids"]
        p, prefix = 1.0, []
        for token in answer:
            allowed = list(predictor.trie.next_tokens(prefix))
            with torch.no_grad():
                logits = predictor.model(input_ids=torch.tensor([ids + prefix])).logits[0, -1]
            p *= float(torch.softmax(logits[allowed], dim=-1)[allowed.index(token)])
            prefix.append(token)
        assert confidence == pytest.approx(p, rel=1e-3, abs=1e-5)

    missing = CliRunner().invoke(app, [*args[:5], "--model-dir", str(tmp_path / "none"), *args[7:]])
    assert missing.exit_code == 2 and "training.json:notfound" in "".join(missing.output.split())
