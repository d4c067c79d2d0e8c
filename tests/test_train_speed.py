"""The training loop's CPU savings keep the maths: answer-only LM head, length-grouped
batches, threads. A tiny random Llama (built from a config, nothing downloaded) stands
in for SmolLM2 so these run in a second."""

from __future__ import annotations

import random

import pytest
import torch

from schemas.training_params import TrainParams
from training.prompts import IGNORE_INDEX, Encoded, collate
from training.train import (
    causal_lm_loss,
    epoch_batches,
    set_threads,
    split_by_tokens,
    supervised_count,
    usable_cores,
)


def _tiny_lora_model() -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    lora = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False
    )
    return get_peft_model(LlamaForCausalLM(config), lora)


def _batch() -> dict[str, torch.Tensor]:
    """Three right-padded rows of different lengths; the answer is each row's tail."""
    rng = random.Random(0)
    rows = []
    for prompt_len, answer_len in ((9, 3), (5, 2), (12, 4)):
        ids = [rng.randrange(97) for _ in range(prompt_len + answer_len)]
        rows.append(Encoded(ids, [IGNORE_INDEX] * prompt_len + ids[prompt_len:], truncated=False))
    return {k: torch.tensor(v) for k, v in collate(rows, pad_id=0).items()}


def _loss_and_grads(model: torch.nn.Module, batch, *, answers_only: bool):
    model.zero_grad(set_to_none=True)
    loss = causal_lm_loss(model, batch, answers_only=answers_only)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_answer_only_lm_head_gives_the_full_logits_loss_and_gradients() -> None:
    model, batch = _tiny_lora_model(), _batch()
    full_loss, full_grads = _loss_and_grads(model, batch, answers_only=False)
    fast_loss, fast_grads = _loss_and_grads(model, batch, answers_only=True)
    assert torch.allclose(fast_loss, full_loss, rtol=1e-5, atol=1e-6)
    assert all(
        torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(fast_grads, full_grads, strict=True)
    )


def test_lm_head_only_sees_the_answer_positions() -> None:
    model, batch = _tiny_lora_model(), _batch()
    head = model.get_base_model().get_output_embeddings()
    rows_seen: list[int] = []
    hook = head.register_forward_hook(lambda _m, args, _out: rows_seen.append(args[0].shape[0]))
    try:
        causal_lm_loss(model, batch, answers_only=True)
    finally:
        hook.remove()
    supervised = int((batch["labels"] != IGNORE_INDEX).sum())  # 3 + 2 + 4
    assert rows_seen == [supervised]


def test_epoch_batches_cover_every_example_once() -> None:
    lengths = [random.Random(i).randrange(5, 80) for i in range(37)]
    for grouped in (False, True):
        batches = epoch_batches(lengths, 4, random.Random(1), group_by_length=grouped)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(37))
        assert all(1 <= len(b) <= 4 for b in batches)


def test_length_grouping_cuts_padding() -> None:
    rng = random.Random(0)
    lengths = [rng.randrange(5, 120) for _ in range(400)]

    def padded(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    plain = padded(epoch_batches(lengths, 8, random.Random(2), group_by_length=False))
    grouped = padded(epoch_batches(lengths, 8, random.Random(2), group_by_length=True))
    real = sum(lengths)
    assert grouped - real < 0.25 * (plain - real)  # most of the padding is gone


def test_threads_default_to_every_usable_core() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(None) == usable_cores()
        assert set_threads(1) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        TrainParams(threads=0)


def test_split_by_tokens_caps_padded_size_and_keeps_every_row() -> None:
    lengths = [30, 5, 12, 30, 7, 20, 9, 3]
    pieces = split_by_tokens(list(range(8)), lengths, 40)
    assert sorted(i for p in pieces for i in p) == list(range(8))
    assert all(len(p) * max(lengths[i] for i in p) <= 40 for p in pieces if len(p) > 1)
    assert split_by_tokens([0, 1], lengths, None) == [[0, 1]]


def test_pieces_weighted_by_supervised_tokens_give_the_whole_batch_gradient() -> None:
    model, batch = _tiny_lora_model(), _batch()
    whole_loss, whole_grads = _loss_and_grads(model, batch, answers_only=True)
    rows = [
        Encoded(ids[mask].tolist(), labels[mask].tolist(), truncated=False)
        for ids, labels, mask in zip(
            batch["input_ids"], batch["labels"], batch["attention_mask"].bool(), strict=True
        )
    ]
    lengths = [len(r.input_ids) for r in rows]
    total = sum(supervised_count(r) for r in rows)
    model.zero_grad(set_to_none=True)
    pieced_loss = 0.0
    for piece in split_by_tokens([0, 1, 2], lengths, max(lengths)):  # one row per piece
        tensors = {k: torch.tensor(v) for k, v in collate([rows[i] for i in piece], pad_id=0).items()}
        share = sum(supervised_count(rows[i]) for i in piece) / total
        loss = causal_lm_loss(model, tensors, answers_only=True) * share
        loss.backward()
        pieced_loss += float(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert pieced_loss == pytest.approx(float(whole_loss), rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads, whole_grads, strict=True))
