"""Seconds per row and accuracy of the evaluation decoders on real SmolLM2-135M, Banking77.

    free generation, one row at a time (the old path)  vs  trie-constrained greedy
    (batch 1 and batched)  vs  per-label log-likelihood scoring (77 continuations per row)

Run: HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/eval_speed.py [ROWS] [ADAPTER_DIR]
Writes benchmarks/results/eval_speed.json. Without ADAPTER_DIR the adapter side is a fresh
(untrained, B=0) LoRA: the same cost as a trained one, so the speed numbers hold.

End to end (evaluate_adapter: both sides, baseline, intervals, verdict) on ROWS test rows,
the adapter trained on the seeded TRAIN_ROWS subset of Banking77 train:
    python benchmarks/eval_speed.py e2e ROWS ADAPTER_DIR TRAIN_ROWS  -> results/eval_e2e.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import polars as pl
import torch

from training.decoding import label_trie
from training.evaluate import answer_budget, classify
from training.model import load_base_model
from training.prompts import answer_suffix, build_prompt

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"


@torch.no_grad()
def score_labels(model, tokenizer, prompts, label_set) -> list[str]:
    """Per-label log-likelihood (lm-eval-harness style): the prompt once, then all labels
    as one batch of continuations over a copy of its cache."""
    from transformers import DynamicCache

    seqs = [tokenizer(x + answer_suffix(tokenizer), add_special_tokens=False)["input_ids"] for x in label_set]
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id
    inputs = torch.tensor([s[:-1] + [pad] * (width - len(s)) for s in seqs])
    targets = torch.tensor([s[1:] + [-100] * (width - len(s)) for s in seqs])
    first = torch.tensor([s[0] for s in seqs])
    out = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        cache = DynamicCache()
        logits = model(input_ids=ids, cache=cache).logits[0, -1].log_softmax(-1)
        cache.batch_repeat_interleave(len(seqs))
        mask = torch.cat(
            [
                torch.ones(len(seqs), ids.shape[1], dtype=torch.long),
                (inputs != pad) | (torch.arange(width - 1) == 0),
            ],
            1,
        )
        cont = model(input_ids=inputs, attention_mask=mask.long(), cache=cache).logits.log_softmax(-1)
        lp = (
            cont.gather(-1, targets.clamp(min=0).unsqueeze(-1))
            .squeeze(-1)
            .masked_fill(targets == -100, 0)
            .sum(1)
        )
        out.append(label_set[int((lp + logits[first]).argmax())])
    return out


def end_to_end(rows: int, adapter: str, train_rows: int) -> None:
    import hashlib

    from schemas.training_params import EvaluateParams
    from training.evaluate import evaluate_adapter, flat_metrics

    def with_ids(frame: pl.DataFrame) -> pl.DataFrame:
        ids = [hashlib.md5(t.encode()).hexdigest()[:16] for t in frame["text"].to_list()]
        return (
            frame.rename({"category": "label"}).with_columns(pl.Series("id", ids)).unique("id", keep="first")
        )

    labels = json.loads((RAW / "categories.json").read_text())
    train, test = with_ids(pl.read_csv(RAW / "train.csv")), with_ids(pl.read_csv(RAW / "test.csv"))
    record = {
        "params": {"base_model": "smollm2", "max_train_examples": train_rows, "seed": 0},
        "prompt_form": "short",
    }
    params = EvaluateParams(sample_size=rows, free_generation_rows=8, threads=1)
    started = time.perf_counter()
    detail = evaluate_adapter(test, Path(adapter), params, label_set=labels, training_record=record,
                              train=train, device="cpu", show_progress=False)  # fmt: skip
    flat = flat_metrics(detail)
    flat["wall_seconds"] = round(time.perf_counter() - started, 1)
    flat["load_average"] = os.getloadavg()[0]
    flat["adapter_train_rows"] = train_rows
    print(json.dumps(flat, indent=2))
    (ROOT / "benchmarks" / "results" / "eval_e2e.json").write_text(json.dumps(flat, indent=2) + "\n")


def main() -> None:
    if sys.argv[1:2] == ["e2e"]:
        end_to_end(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    adapter = sys.argv[2] if len(sys.argv) > 2 else None
    torch.set_num_threads(1)
    labels = json.loads((RAW / "categories.json").read_text())
    test = pl.read_csv(RAW / "test.csv").rename({"category": "label"}).sample(n=rows, seed=0, shuffle=True)
    texts, gold = test["text"].to_list(), test["label"].to_list()
    loaded = load_base_model(
        "smollm2", device="cpu", quantize_4bit=False, for_training=False, padding_side="left"
    )
    tok = loaded.tokenizer
    from peft import LoraConfig, PeftModel, get_peft_model

    model = (
        PeftModel.from_pretrained(loaded.model, adapter)
        if adapter
        else get_peft_model(
            loaded.model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM")
        )
    ).eval()
    trie = label_trie(tok, labels, suffix=answer_suffix(tok))
    budget = answer_budget(tok, labels, None)
    results = {
        "rows": rows,
        "threads": 1,
        "load_average": os.getloadavg()[0],
        "adapter": adapter or "untrained LoRA r=16",
        "runs": [],
    }

    def record(side, form, method, batch, n, seconds, pred):
        acc = sum(p == g for p, g in zip(pred, gold[:n], strict=True)) / n
        invalid = sum(p is None for p in pred) / n
        results["runs"].append(
            {
                "side": side,
                "prompt": form,
                "method": method,
                "batch": batch,
                "rows": n,
                "seconds_per_row": round(seconds / n, 4),
                "accuracy": round(acc, 4),
                "invalid_rate": round(invalid, 4),
            }
        )
        print(results["runs"][-1], flush=True)

    for side, form in (("base", "labels"), ("adapter", "short")):
        ctx = model.disable_adapter() if side == "base" else torch.no_grad()
        with ctx:
            small = max(4, rows // 8)
            _, pred, s = classify(
                model,
                tok,
                texts[:small],
                form=form,
                label_set=labels,
                trie=None,
                max_new_tokens=budget,
                batch_size=1,
                device="cpu",
            )
            record(side, form, "free", 1, small, s, pred)
            _, pred, s = classify(
                model,
                tok,
                texts[:small],
                form=form,
                label_set=labels,
                trie=trie,
                max_new_tokens=trie.depth,
                batch_size=1,
                device="cpu",
            )
            record(side, form, "trie", 1, small, s, pred)
            _, pred, s = classify(
                model,
                tok,
                texts,
                form=form,
                label_set=labels,
                trie=trie,
                max_new_tokens=trie.depth,
                batch_size=16,
                device="cpu",
            )
            record(side, form, "trie", 16, rows, s, pred)
            if form == "short":
                prompts = [
                    build_prompt(tok, t, task="classification", form=form, label_set=labels)
                    for t in texts[:small]
                ]
                started = time.perf_counter()
                pred = score_labels(model, tok, prompts, labels)
                record(side, form, "score_77_labels", 1, small, time.perf_counter() - started, pred)
    out = ROOT / "benchmarks" / "results" / "eval_speed.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
