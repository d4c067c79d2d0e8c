"""Prompt formatting, answer-only loss masking, collation and answer parsing."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.prompts import (  # noqa: E402
    IGNORE_INDEX,
    INSTRUCTION_SYSTEM,
    SHORT_SYSTEM,
    build_prompt,
    collate,
    encode_example,
    parse_label,
)

LABELS = ["card_arrival", "card_linking", "exchange_rate", "lost_or_stolen_card"]


@pytest.fixture(scope="module")
def tokenizer():
    from training.model import load_tokenizer

    return load_tokenizer("smollm2")


def test_short_prompt_uses_chat_template_without_label_list(tokenizer) -> None:
    prompt = build_prompt(
        tokenizer, "Where is my card?", task="classification", form="short", label_set=LABELS
    )
    assert SHORT_SYSTEM in prompt
    assert "Where is my card?" in prompt
    assert "exchange_rate" not in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_labels_prompt_lists_every_label(tokenizer) -> None:
    prompt = build_prompt(
        tokenizer, "Where is my card?", task="classification", form="labels", label_set=LABELS
    )
    assert all(label in prompt for label in LABELS)
    with pytest.raises(ValueError, match="label set"):
        build_prompt(tokenizer, "x", task="classification", form="labels", label_set=None)


def test_instruction_prompt_is_a_user_turn(tokenizer) -> None:
    prompt = build_prompt(tokenizer, "Say hi", task="instruction", form="short", label_set=None)
    assert "<|im_start|>user\nSay hi<|im_end|>" in prompt


@pytest.mark.parametrize(("task", "form"), [("classification", "short"), ("instruction", "short")])
def test_no_prompt_gets_the_templates_hidden_default_system_message(tokenizer, task, form) -> None:
    # without a system turn SmolLM2's template injects "You are a helpful AI assistant named
    # SmolLM, trained by Hugging Face" (17 tokens on every example)
    prompt = build_prompt(tokenizer, "Say hi", task=task, form=form, label_set=LABELS)
    assert "SmolLM" not in prompt
    assert prompt.count("<|im_start|>system") == 1
    expected = SHORT_SYSTEM if task == "classification" else INSTRUCTION_SYSTEM
    assert prompt.startswith(f"<|im_start|>system\n{expected}<|im_end|>")


def test_loss_is_masked_to_answer_tokens_only(tokenizer) -> None:
    prompt = build_prompt(tokenizer, "My card is late", task="classification", form="short",
                          label_set=None)  # fmt: skip
    enc = encode_example(tokenizer, prompt, "card_arrival", max_length=256)
    prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert len(enc.input_ids) == len(enc.labels)
    assert enc.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    supervised = [t for t in enc.labels if t != IGNORE_INDEX]
    assert supervised == enc.input_ids[prompt_len:]
    # the supervised part is exactly the answer plus the end-of-turn token
    assert tokenizer.decode(supervised) == "card_arrival" + tokenizer.eos_token
    assert not enc.truncated


def test_truncation_cuts_the_prompt_and_keeps_the_answer(tokenizer) -> None:
    prompt = build_prompt(tokenizer, "word " * 200, task="classification", form="short",
                          label_set=None)  # fmt: skip
    enc = encode_example(tokenizer, prompt, "card_arrival", max_length=32)
    assert enc.truncated and len(enc.input_ids) == 32
    supervised = [t for t in enc.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(supervised) == "card_arrival" + tokenizer.eos_token
    with pytest.raises(ValueError, match="max_length"):
        encode_example(tokenizer, prompt, "a very long answer " * 10, max_length=16)


def test_collate_right_pads_and_masks_padding(tokenizer) -> None:
    short = encode_example(tokenizer, "a", "b", max_length=32)
    long = encode_example(tokenizer, "a b c d e f", "b", max_length=32)
    batch = collate([short, long], pad_id=tokenizer.pad_token_id)
    width = len(long.input_ids)
    assert all(len(row) == width for row in batch["input_ids"])
    pad = width - len(short.input_ids)
    assert batch["attention_mask"][0][-pad:] == [0] * pad
    assert batch["labels"][0][-pad:] == [IGNORE_INDEX] * pad
    assert batch["attention_mask"][1] == [1] * width


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("card_arrival", "card_arrival"),
        (" card_arrival\n", "card_arrival"),
        ("Card Arrival.", "card_arrival"),
        ("lost-or-stolen-card", "lost_or_stolen_card"),
        ("The intent is exchange_rate for this query", "exchange_rate"),
        ("card", None),
        ("", None),
        ("I cannot help with that", None),
    ],
)
def test_parse_label(output: str, expected: str | None) -> None:
    assert parse_label(output, LABELS) == expected
