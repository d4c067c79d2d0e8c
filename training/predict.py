"""Label new texts with a trained adapter: the same label-constrained decoding as evaluate,
plus the probability of the decoded label.

The adapter is loaded as evaluate loads it (the base model of training.json, then the LoRA
weights of ``<model_dir>/adapter``), prompted with the form it was trained with, and decoded
greedily over the token trie of its label set (``training.decoding``), batched with the
prompts' shared prefix computed once. The confidence of a row is the probability of its
label under the *constrained* distribution: the product, over the answer's tokens, of the
chosen token's softmax probability among the tokens the trie allows there. Tokens after the
point where only one label remains are forced (probability 1), so stopping there early
changes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.decoding import LabelDetermined, LabelTrie, label_trie, shared_prefix_len
from training.prompts import answer_suffix, build_prompt

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"  # as training.train writes it (not imported: that pulls in the trainer)
TRAINING_JSON = "training.json"


class PredictorError(RuntimeError):
    """The model directory cannot serve predictions; says which file and why."""


@dataclass(frozen=True)
class Predictor:
    """A loaded adapter ready to label texts."""

    model: Any
    tokenizer: Any
    trie: LabelTrie
    label_set: tuple[str, ...]
    prompt_form: str
    device: str
    version: str


def adapter_version(adapter_dir: Path) -> str:
    """``md5-<hex>``: the md5 over the adapter directory's files (relative path + content md5,
    sorted), so the same weights always give the same version, wherever they are copied."""
    entries = []
    for path in sorted(p for p in adapter_dir.rglob("*") if p.is_file()):
        entries.append(
            f"{path.relative_to(adapter_dir).as_posix()} {hashlib.md5(path.read_bytes()).hexdigest()}"
        )
    if not entries:
        raise PredictorError(f"{adapter_dir}: no adapter files")
    return "md5-" + hashlib.md5("\n".join(entries).encode()).hexdigest()


def read_training_record(model_dir: Path) -> dict[str, Any]:
    """training.json of ``model_dir``, checked for what prediction needs.

    Raises:
        PredictorError: missing or unreadable, not a classification adapter, no label set,
            or no adapter beside it.
    """
    path = model_dir / TRAINING_JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PredictorError(f"{path}: not found; run `curagate train` first") from exc
    except (OSError, ValueError) as exc:
        raise PredictorError(f"{path}: unreadable training record ({exc})") from exc
    if not isinstance(record, dict):
        raise PredictorError(f"{path}: not a JSON object")
    if record.get("task") != "classification":
        raise PredictorError(
            f"{path}: task {record.get('task')!r}; predict labels classification adapters only"
        )
    if not record.get("label_set"):
        raise PredictorError(f"{path}: no label_set recorded")
    if not isinstance(record.get("params"), dict) or "base_model" not in record["params"]:
        raise PredictorError(f"{path}: params.base_model missing")
    if not (model_dir / ADAPTER_DIR / "adapter_config.json").is_file():
        raise PredictorError(f"{model_dir / ADAPTER_DIR}: no adapter (adapter_config.json missing)")
    return record


def load_predictor(
    model_dir: Path, *, device: str | None = None, threads: int | None = 1, version: str | None = None
) -> Predictor:
    """Load the base model of training.json with the adapter of ``model_dir`` for decoding.

    Args:
        version: recorded with every prediction; None = :func:`adapter_version`.

    Raises:
        PredictorError: see :func:`read_training_record`.
    """
    record = read_training_record(model_dir)  # first: a missing model costs no model imports

    from peft import PeftModel

    from training.model import load_base_model

    if threads is not None:
        torch.set_num_threads(threads)
    loaded = load_base_model(
        record["params"]["base_model"], device=device, quantize_4bit=False, for_training=False,
        padding_side="left",
    )  # fmt: skip
    model = PeftModel.from_pretrained(loaded.model, str(model_dir / ADAPTER_DIR)).eval()
    labels = tuple(str(x) for x in record["label_set"])
    trie = label_trie(loaded.tokenizer, labels, suffix=answer_suffix(loaded.tokenizer))
    return Predictor(
        model=model,
        tokenizer=loaded.tokenizer,
        trie=trie,
        label_set=labels,
        prompt_form=record.get("prompt_form", "short"),
        device=loaded.device,
        version=version or adapter_version(model_dir / ADAPTER_DIR),
    )


def label_probability(trie: LabelTrie, generated: Sequence[int], logits: torch.Tensor) -> tuple[str, float]:
    """The label a constrained answer spells and its probability under the constrained
    distribution.

    Args:
        generated: the answer's token ids (as generate returned them, pads included).
        logits: raw logits of every generated step, shape (steps, vocab).
    """
    prefix: list[int] = []
    logprob = 0.0
    for step, token in enumerate(generated):
        key = tuple(prefix)
        if key in trie.determined:
            break  # one label left: every later token is forced
        allowed = list(trie.next_tokens(key))
        if not allowed:
            break
        scores = torch.log_softmax(logits[step, allowed].float(), dim=-1)
        logprob += float(scores[allowed.index(int(token))])
        prefix.append(int(token))
    label = trie.label_of(generated)
    if label is None:  # cannot happen under the trie constraint; a bug if it does
        raise RuntimeError(f"constrained answer {list(generated)} spells no label")
    return label, float(torch.tensor(logprob).exp())


@torch.no_grad()
def predict_texts(
    predictor: Predictor,
    texts: Sequence[str],
    *,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[str], list[float]]:
    """Labels and confidences for ``texts`` (in their order), ``batch_size`` rows a call.

    The loop is training.decoding.generate_batched's (shared prefix cached once, left
    padding after it, rows sorted by length), asking generate for the logits of each step.
    """
    from transformers import DynamicCache, StoppingCriteriaList

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not texts:
        return [], []
    tok, model, trie = predictor.tokenizer, predictor.model, predictor.trie
    prompts = [
        build_prompt(tok, t, task="classification", form=predictor.prompt_form, label_set=predictor.label_set)
        for t in texts
    ]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = shared_prefix_len(ids)
    prefix_cache = None
    if shared > 0:
        prefix_cache = DynamicCache()
        model(input_ids=torch.tensor([ids[0][:shared]], device=predictor.device), cache=prefix_cache)
    pad = tok.pad_token_id
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]) - shared)
    labels: list[str] = [""] * len(ids)
    confidences: list[float] = [0.0] * len(ids)
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        tails = [ids[i][shared:] for i in chunk]
        width = max(len(t) for t in tails)
        rows = [ids[chunk[0]][:shared] + [pad] * (width - len(t)) + t for t in tails]
        mask = [[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in tails]
        input_ids = torch.tensor(rows, device=predictor.device)
        start = input_ids.shape[1]
        kwargs: dict[str, Any] = {}
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(chunk))
            kwargs["cache"] = cache
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.tensor(mask, device=predictor.device),
            max_new_tokens=trie.depth,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=pad,
            prefix_allowed_tokens_fn=trie.allowed_fn(start),
            stopping_criteria=StoppingCriteriaList([LabelDetermined(trie, start)]),
            output_logits=True,
            return_dict_in_generate=True,
            **kwargs,
        )
        steps = torch.stack(out.logits, dim=1)  # (batch, steps, vocab)
        for row, i in enumerate(chunk):
            labels[i], confidences[i] = label_probability(
                trie, out.sequences[row, start:].tolist(), steps[row]
            )
        if on_batch is not None:
            on_batch(len(chunk))
    return labels, confidences
