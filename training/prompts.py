"""Examples -> chat-formatted prompts -> token ids with the loss on the answer only.

Two classification prompt forms, both through the model's chat template:

- ``labels``: the system message lists every label. The fairest prompt for a base model
  that has never seen the task, but long (77 Banking77 intents make ~570 tokens), so it is
  slow on CPU. Evaluation caches its shared prefix (the system message) once.
- ``short``: one fixed sentence in the system message, the text as the user turn. A
  trained adapter learns the label set from the data, so it needs no list; this is what
  training uses by default (prompt length dominates CPU cost).

Instruction data (prompt/response) uses the user turn for the prompt and the assistant
turn for the response, after a short explicit system message.

Chat data (``messages``: the conversation as JSON text, from curation) goes through the chat
template turn by turn: every turn before the final assistant one is the prompt (the short
system message first when the conversation has none), the final assistant turn the answer.

Every prompt carries an explicit system message: without one SmolLM2's chat template
injects its own ("You are a helpful AI assistant named SmolLM, trained by Hugging Face",
17 tokens), which costs CPU time on every example and differs between models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label id the cross-entropy loss skips

SHORT_SYSTEM = "Reply with the intent label only."
INSTRUCTION_SYSTEM = "You are a helpful assistant."
LABELS_SYSTEM = (
    "Classify the user's message into exactly one of these intent labels and reply with "
    "the label only, spelled exactly as listed:\n{labels}"
)


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: ids, and labels masked to -100 outside the answer."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool


def system_message(form: str, label_set: Sequence[str] | None) -> str:
    """The system message of a classification prompt form."""
    if form == "short":
        return SHORT_SYSTEM
    if form == "labels":
        if not label_set:
            raise ValueError("prompt form 'labels' needs the label set")
        return LABELS_SYSTEM.format(labels="\n".join(label_set))
    raise ValueError(f"unknown prompt form {form!r}; expected 'short' or 'labels'")


def classification_messages(
    text: str, *, form: str, label_set: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """Chat messages (system + user) asking for the label of ``text``."""
    return [
        {"role": "system", "content": system_message(form, label_set)},
        {"role": "user", "content": text},
    ]


def instruction_messages(prompt: str) -> list[dict[str, str]]:
    """Chat messages (system + user) for an instruction example."""
    return [{"role": "system", "content": INSTRUCTION_SYSTEM}, {"role": "user", "content": prompt}]


def chat_messages(messages: str) -> list[dict[str, str]]:
    """The turns of a chat example before its final assistant turn (the prompt), from the
    ``messages`` JSON text of a curated row; an explicit system message when it has none."""
    turns = [{"role": t["role"], "content": t["content"]} for t in json.loads(messages)]
    if not turns or turns[-1]["role"] != "assistant":
        raise ValueError("a chat example must end with the assistant's turn")
    context = turns[:-1]
    if context[0]["role"] != "system":
        context.insert(0, {"role": "system", "content": INSTRUCTION_SYSTEM})
    return context


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """The chat template applied up to and including the assistant header."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def answer_suffix(tokenizer: PreTrainedTokenizerBase) -> str:
    """What ends an assistant turn (SmolLM2: ``<|im_end|>``), so the model learns to stop."""
    return tokenizer.eos_token or ""


def encode_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, *, max_length: int
) -> Encoded:
    """Tokenise prompt + answer; labels are -100 on every prompt token.

    The prompt and the answer are tokenised separately and concatenated, so the boundary is
    exact (no guessing where the answer starts after joint tokenisation). When too long, the
    prompt is cut from the left (keeping the end of the text and the assistant header) so
    the answer, the only supervised part, always survives.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + answer_suffix(tokenizer), add_special_tokens=False)["input_ids"]
    if len(answer_ids) >= max_length:
        raise ValueError(
            f"answer alone has {len(answer_ids)} tokens, max_length={max_length}: raise max_length"
        )
    room = max_length - len(answer_ids)
    truncated = len(prompt_ids) > room
    if truncated:
        prompt_ids = prompt_ids[len(prompt_ids) - room :]
    return Encoded(
        input_ids=prompt_ids + answer_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
        truncated=truncated,
    )


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    task: str,
    form: str,
    label_set: Sequence[str] | None,
) -> str:
    """The rendered prompt for one example of any task kind (chat: ``text`` is the
    example's ``messages`` JSON text)."""
    if task == "chat":
        return render_prompt(tokenizer, chat_messages(text))
    if task == "instruction":
        return render_prompt(tokenizer, instruction_messages(text))
    return render_prompt(tokenizer, classification_messages(text, form=form, label_set=label_set))


def collate(batch: Sequence[Encoded], *, pad_id: int) -> dict[str, list[list[int]]]:
    """Right-pad a batch for training; padded positions are masked in attention and loss."""
    width = max(len(e.input_ids) for e in batch)
    input_ids, labels, attention = [], [], []
    for e in batch:
        pad = width - len(e.input_ids)
        input_ids.append(e.input_ids + [pad_id] * pad)
        labels.append(e.labels + [IGNORE_INDEX] * pad)
        attention.append([1] * len(e.input_ids) + [0] * pad)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def parse_label(output: str, label_set: Sequence[str]) -> str | None:
    """Map generated text to a label, or None when it names none (an invalid output).

    Exact match first, then case/space/hyphen-insensitive, then the longest label that
    appears inside the output (base models like to add words around the label).
    """
    text = output.strip().strip(".\"'`").strip()
    if text in label_set:
        return text

    def norm(s: str) -> str:
        return s.strip().lower().replace(" ", "_").replace("-", "_")

    by_norm = {norm(label): label for label in label_set}
    first_line = text.splitlines()[0] if text else ""
    for candidate in (text, first_line):
        if norm(candidate) in by_norm:
            return by_norm[norm(candidate)]
    lowered = norm(text)
    contained = [label for key, label in by_norm.items() if key and key in lowered]
    if contained:
        return max(contained, key=len)
    return None
