"""Evaluation: trie-constrained decoding never yields an invalid label (property test on random
tries, random logits and tiny random-weight models), batched prefix-cached decoding matches
plain decoding, bootstrap intervals on known cases, the verdict rules, the classic baseline."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

from schemas.training_params import BaselineParams, EvaluateParams
from training.baseline import fit_predict_baseline
from training.decoding import LabelTrie, generate_batched, shared_prefix_len
from training.evaluate import (
    accuracy_statistic,
    bootstrap_interval,
    difference,
    flat_metrics,
    macro_f1_statistic,
    promotion_verdict,
    side_statistics,
    token_loss_statistic,
)

END = 1  # eos = pad in the tiny vocabulary
VOCAB = 24


class ToyTokenizer:
    """Whitespace-separated integers are the token ids: prompts are written as ids."""

    eos_token_id = END
    pad_token_id = END

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [int(x) for x in text.split()]}


def _tiny_model(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, eos_token_id=END, pad_token_id=END,
        bos_token_id=0,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # peaky logits: the unconstrained argmax is rarely on the trie
        model.lm_head.weight.mul_(50.0)
    return model


def _random_trie(rng: random.Random) -> LabelTrie:
    """Up to 8 labels of 1-4 tokens, some of them token prefixes of others."""
    sequences: dict[str, list[int]] = {}
    for i in range(rng.randint(1, 8)):
        if sequences and rng.random() < 0.3:  # extend an existing label: a prefix pair
            base = rng.choice(list(sequences.values()))
            seq = base + [rng.randint(2, VOCAB - 1)]
        else:
            seq = [rng.randint(2, VOCAB - 1) for _ in range(rng.randint(1, 4))]
        if seq not in sequences.values():
            sequences[f"label{i}"] = seq
    return LabelTrie.from_sequences(sequences, end=END)


# ── the trie ─────────────────────────────────────────────────────────────────────────


def test_trie_allows_prefix_labels_and_maps_ids_back() -> None:
    trie = LabelTrie.from_sequences({"card": [5], "card_arrival": [5, 6], "rate": [7, 8]}, end=END)
    assert trie.next_tokens([]) == (5, 7)
    assert trie.next_tokens([5]) == (END, 6)  # "card" may end here or continue
    assert trie.next_tokens([5, 6, END]) == ()
    assert trie.label_of([5, END, END]) == "card"
    assert trie.label_of([5, 6, END]) == "card_arrival"
    assert trie.label_of([9, END]) is None  # off the trie
    # decoding may stop once one label remains below the prefix: [7] can only become "rate"
    assert trie.label_of([7, END]) == "rate" and trie.determined[(7,)] == "rate"
    assert (5,) not in trie.determined and trie.determined[(5, 6)] == "card_arrival"
    assert trie.depth == 3
    with pytest.raises(ValueError, match="tokenise identically"):
        LabelTrie.from_sequences({"a": [5], "b": [5, END]}, end=END)


def test_property_constrained_greedy_over_random_logits_always_spells_a_label() -> None:
    """400 random tries x random logit streams through transformers' own constraint
    processor (what generate applies): the greedy path always ends on a label."""
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    for case in range(400):
        trie = _random_trie(rng)
        processor = PrefixConstrainedLogitsProcessor(trie.allowed_fn(start=0), num_beams=1)
        ids = torch.empty((1, 0), dtype=torch.long)
        for _ in range(trie.depth):
            logits = torch.randn((1, VOCAB), generator=gen) * 10
            if case % 4 == 0:  # adversarial: every allowed token at -inf
                logits[0, list(trie.next_tokens(ids[0].tolist()) or (END,))] = -math.inf
            token = processor(ids, logits).argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, token], dim=1)
            if token.item() == END:
                break
        assert trie.label_of(ids[0].tolist()) is not None, (case, ids.tolist())


def _generate_on_random_models(cases: int) -> None:
    """Real `generate` (batched, left padding after a shared cached prefix) on random models
    x random tries: every answer is a label; free generation often is not."""
    rng = random.Random(1)
    tokenizer = ToyTokenizer()
    free_invalid = 0
    for case in range(cases):
        model = _tiny_model(case)
        trie = _random_trie(rng)
        shared = [rng.randint(2, VOCAB - 1) for _ in range(rng.randint(0, 5))]
        prompts = [
            " ".join(map(str, shared + [rng.randint(2, VOCAB - 1) for _ in range(rng.randint(1, 6))]))
            for _ in range(rng.randint(1, 5))
        ]
        out = generate_batched(
            model, tokenizer, prompts, max_new_tokens=1, batch_size=3, device="cpu", trie=trie
        )
        assert all(trie.label_of(ids) is not None for ids in out), (case, out)
        free = generate_batched(
            model, tokenizer, prompts, max_new_tokens=trie.depth, batch_size=3, device="cpu"
        )
        free_invalid += sum(trie.label_of(ids) is None for ids in free)
    assert free_invalid > 0  # the constraint is doing the work, not the random models


def _full_trie_decode(model, prompts: list[str], trie: LabelTrie) -> list[list[int]]:
    """Plain one-row generate over the trie to the end token (no early stop, no cache)."""
    out = []
    for prompt in prompts:
        ids = torch.tensor([ToyTokenizer()(prompt)["input_ids"]])
        generated = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=trie.depth,
            do_sample=False, eos_token_id=END, pad_token_id=END,
            prefix_allowed_tokens_fn=trie.allowed_fn(ids.shape[1]),
        )  # fmt: skip
        out.append(generated[0, ids.shape[1] :].tolist())
    return out


def test_generate_with_the_trie_on_tiny_random_models_yields_labels_only() -> None:
    _generate_on_random_models(4)


@pytest.mark.slow
def test_property_generate_with_the_trie_on_many_random_models() -> None:
    _generate_on_random_models(40)


def test_batched_prefix_cached_decoding_matches_one_row_at_a_time() -> None:
    model = _tiny_model(7)
    tokenizer = ToyTokenizer()
    prompts = ["3 4 5 6 9", "3 4 5 6 10 11 12", "3 4 5 6 13 2", "3 4 5 7"]
    assert shared_prefix_len([tokenizer(p)["input_ids"] for p in prompts]) == 3
    batched = generate_batched(model, tokenizer, prompts, max_new_tokens=4, batch_size=4, device="cpu")
    for prompt, got in zip(prompts, batched, strict=True):
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                               do_sample=False, eos_token_id=END, pad_token_id=END)  # fmt: skip
        expected = plain[0, ids.shape[1] :].tolist()
        # generate stops at eos; the batched rows are padded after it with eos as well
        assert got[: len(expected)] == expected
        assert all(t == END for t in got[len(expected) :])


# ── bootstrap intervals on known cases ───────────────────────────────────────────────


def _ci(stat, n: int, seed: int = 0, samples: int = 1000) -> tuple[float, float]:
    return bootstrap_interval(stat, n, samples=samples, confidence=0.95, seed=seed)


def test_interval_of_all_correct_and_all_wrong_is_degenerate() -> None:
    assert _ci(accuracy_statistic(np.ones(50)), 50) == (1.0, 1.0)
    assert _ci(accuracy_statistic(np.zeros(50)), 50) == (0.0, 0.0)


def test_paired_difference_of_identical_predictions_is_zero() -> None:
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 5, 200)
    pred = np.where(rng.random(200) < 0.6, gold, rng.integers(0, 5, 200))
    for stat in (accuracy_statistic(gold == pred), macro_f1_statistic(gold, pred, 5)):
        assert _ci(difference(stat, stat), 200) == (0.0, 0.0)


def test_paired_interval_is_narrower_than_unpaired_for_correlated_sides() -> None:
    """Two sides that agree on most rows: pairing cancels the shared row difficulty."""
    rng = np.random.default_rng(4)
    a = rng.random(400) < 0.7
    b = a.copy()
    flip = rng.choice(400, 20, replace=False)
    b[flip] = ~b[flip]
    low, high = _ci(difference(accuracy_statistic(a), accuracy_statistic(b)), 400)
    (al, ah), (bl, bh) = _ci(accuracy_statistic(a), 400), _ci(accuracy_statistic(b), 400)
    assert high - low < 0.5 * ((ah - al) + (bh - bl))


def test_interval_covers_a_known_proportion_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(5)
    truth, n, trials = 0.3, 200, 120
    covered = 0
    for trial in range(trials):
        correct = rng.random(n) < truth
        low, high = _ci(accuracy_statistic(correct), n, seed=trial, samples=400)
        covered += low <= truth <= high
        assert low <= correct.mean() <= high
    assert 0.88 <= covered / trials <= 1.0  # nominal 0.95; binomial slack for 120 trials


def test_macro_f1_statistic_matches_classification_metrics_on_the_full_sample() -> None:
    from training.evaluate import classification_metrics

    labels = ["a", "b", "c", "d"]
    gold = ["a", "a", "b", "b", "c", "a"]
    pred = ["a", "b", "b", None, "a", "a"]
    stats = side_statistics(gold, pred, labels)
    full = np.arange(len(gold))
    m = classification_metrics(gold, pred, labels)
    assert float(stats["macro_f1"](full)) == pytest.approx(m["macro_f1"])
    assert float(stats["accuracy"](full)) == pytest.approx(m["accuracy"])


def test_token_loss_statistic_pools_tokens_over_rows() -> None:
    nll, count = np.array([2.0, 6.0]), np.array([1.0, 3.0])
    assert float(token_loss_statistic(nll, count)(np.arange(2))) == pytest.approx(8.0 / 4.0)


# ── the verdict ──────────────────────────────────────────────────────────────────────


def _cmp(value: float, low: float, high: float) -> dict[str, dict[str, float]]:
    return {"accuracy": {"value": value, "low": low, "high": high}}


def _verdict(comparisons, *, require: bool = False, margin: float = 0.05) -> dict:
    return promotion_verdict(
        comparisons, metric="accuracy", margin=margin, require_beat_baseline=require, confidence=0.95
    )


def test_verdict_promotes_only_with_margin_and_a_positive_lower_bound() -> None:
    assert _verdict({"adapter_vs_base": _cmp(0.30, 0.25, 0.35)})["verdict"] == "promote"
    small = _verdict({"adapter_vs_base": _cmp(0.03, 0.01, 0.05)})
    assert small["verdict"] == "reject" and small["reasons"][0].startswith("fail")
    noisy = _verdict({"adapter_vs_base": _cmp(0.10, -0.01, 0.21)})
    assert noisy["promote"] is False
    assert _verdict({})["verdict"] == "reject"  # base not scored


def test_verdict_reports_the_baseline_and_requires_it_only_when_asked() -> None:
    comparisons = {"adapter_vs_base": _cmp(0.30, 0.25, 0.35), "adapter_vs_baseline": _cmp(-0.2, -0.25, -0.15)}
    relaxed = _verdict(comparisons)
    assert relaxed["verdict"] == "promote"
    assert any(r.startswith("info: adapter - baseline") for r in relaxed["reasons"])
    strict = _verdict(comparisons, require=True)
    assert strict["verdict"] == "reject" and strict["reasons"][1].startswith("fail")
    missing = _verdict({"adapter_vs_base": _cmp(0.30, 0.25, 0.35)}, require=True)
    assert missing["verdict"] == "reject"


def test_flat_metrics_carry_intervals_and_the_verdict() -> None:
    side = {"accuracy": 0.5, "macro_f1": 0.4, "invalid_rate": 0.0, "seconds_per_example": 0.1,
            "accuracy_ci": [0.4, 0.6], "macro_f1_ci": [0.3, 0.5],
            "free_generation": {"rows": 4, "invalid_rate": 0.25}}  # fmt: skip
    detail = {
        "n": 10,
        "sides": {"base": side, "adapter": {**side, "accuracy": 0.9}},
        "comparisons": {"adapter_vs_base": _cmp(0.4, 0.2, 0.6)},
        "verdict": {"verdict": "promote", "promote": True, "reasons": ["pass: x", "info: y"]},
    }
    flat = flat_metrics(detail)
    assert flat["base_accuracy_low"] == 0.4 and flat["adapter_macro_f1_high"] == 0.5
    assert flat["base_free_invalid_rate"] == 0.25
    assert flat["adapter_minus_base_accuracy_low"] == 0.2
    assert flat["verdict"] == "promote" and flat["verdict_promote"] == 1
    assert flat["verdict_reasons"] == "pass: x; info: y"


# ── params and the classic baseline ──────────────────────────────────────────────────


def test_evaluate_params_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="promote_metric"):
        EvaluateParams(promote_metric="loss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        EvaluateParams(confidence=1.0)
    with pytest.raises(ValueError, match="char_ngrams"):
        BaselineParams(char_ngrams=(5, 2))


def test_classic_baseline_learns_a_separable_toy_task(banking_train, banking_test) -> None:
    labels = ["card_arrival", "exchange_rate", "lost_or_stolen_phone"]
    train = (
        banking_train.filter(banking_train["label"].is_in(labels))
        .group_by("label", maintain_order=True)
        .head(40)
    )
    test = banking_test.filter(banking_test["label"].is_in(labels))
    pred = fit_predict_baseline(
        train["text"].to_list(), train["label"].to_list(), test["text"].to_list(), params=BaselineParams()
    )
    accuracy = np.mean([p == g for p, g in zip(pred, test["label"].to_list(), strict=True)])
    assert accuracy >= 0.85  # three distinct intents: TF-IDF + SVM separates them
    with pytest.raises(ValueError, match="two labels"):
        fit_predict_baseline(["a", "b"], ["x", "x"], ["c"], params=BaselineParams())


# ── real model (slow) ────────────────────────────────────────────────────────────────


@pytest.mark.slow
def test_instruction_evaluation_scores_loss_perplexity_and_rouge(tmp_path) -> None:
    import polars as pl
    from peft import LoraConfig, get_peft_model

    from training.evaluate import evaluate_instruction_adapter, write_eval_outputs
    from training.model import load_base_model

    loaded = load_base_model("smollm2", device="cpu", for_training=False)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(loaded.model, lora).save_pretrained(tmp_path / "adapter")  # untrained: B = 0
    test = pl.DataFrame({"id": ["a", "b", "c"],
                         "text": ["Say hello.", "Name a colour.", "What is 2 + 2?"],
                         "response": ["Hello!", "Blue.", "4"]})  # fmt: skip
    params = EvaluateParams(sample_size=None, batch_size=2, bootstrap_samples=200, threads=1,
                            instruction_generated_rows=2, instruction_max_new_tokens=8)  # fmt: skip
    record = {"params": {"base_model": "smollm2", "max_length": 128}}
    detail = evaluate_instruction_adapter(test, tmp_path / "adapter", params, training_record=record,
                                          device="cpu", show_progress=False)  # fmt: skip
    base, adapter = detail["sides"]["base"], detail["sides"]["adapter"]
    assert base["token_loss"] == pytest.approx(adapter["token_loss"], abs=1e-4)  # B = 0 adapter
    assert base["perplexity"] == pytest.approx(math.exp(base["token_loss"]), rel=1e-4)
    assert base["token_loss_ci"][0] <= base["token_loss"] <= base["token_loss_ci"][1]
    assert 0.0 <= base["rouge_l"] <= 1.0 and base["rouge_l_rows"] == 2
    assert detail["verdict"]["verdict"] == "reject"  # no improvement: nothing to promote
    flat = write_eval_outputs(detail, eval_json=tmp_path / "eval.json", detail_json=tmp_path / "d.json",
                              html_path=tmp_path / "eval.html", training_record=None)  # fmt: skip
    assert flat["verdict_promote"] == 0 and "adapter_perplexity_high" in flat
