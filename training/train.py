"""The LoRA / QLoRA training recipe, top to bottom.

    curated train.parquet ─► prompts (answer-only loss) ─► base model + LoRA ─► loop ─► save

Reads files only (never imports `curation`): train.parquet (id, text, label, text_hash; or
id, text=prompt, response for instruction data), labels.json, gate.json, quality.json.
Writes `<model_dir>/adapter/` and `<model_dir>/training.json`: resolved params, data and
gate hashes, device, loss curve, tokens/s, peak memory, wall time and the gate override.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import get_linear_schedule_with_warmup

from schemas.gate import GateError, check_gate
from schemas.manifest import file_md5
from schemas.training_params import GateParams, TrainParams
from training.model import load_base_model
from training.prompts import IGNORE_INDEX, Encoded, build_prompt, collate, encode_example

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
TRAINING_JSON = "training.json"
LENGTH_GROUP_BATCHES = 50  # micro-batches per length-sorted mega-batch (transformers uses 50)


def read_label_set(curated_dir: Path, frame: pl.DataFrame | None = None) -> list[str] | None:
    """labels.json from the curated directory, else the sorted labels of ``frame``."""
    path = curated_dir / "labels.json"
    if path.is_file():
        labels = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(labels, list):
            raise ValueError(f"{path}: expected a JSON list of labels")
        return [str(x) for x in labels] or None  # []: instruction/chat data has no label set
    if frame is not None and "label" in frame.columns:
        return sorted(frame["label"].unique().to_list())
    return None


def task_of(frame: pl.DataFrame) -> str:
    """'chat' with a messages column, 'instruction' with a response column, 'classification'
    with a label."""
    if "messages" in frame.columns and "response" in frame.columns:
        return "chat"
    if "response" in frame.columns:
        return "instruction"
    if "label" in frame.columns:
        return "classification"
    raise ValueError(f"train data needs a 'label' or a 'response' column, has {frame.columns}")


def peak_memory_bytes(device: str) -> int:
    """Peak accelerator memory on CUDA, else this process's peak resident set size."""
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a process started by a
    # big parent (a test runner, a flow) would report the parent's peak
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: ``threads``, or every usable core when None.

    Every core is fastest on an idle machine; on a CPU shared with other busy processes
    extra threads spin-wait for each other (benchmarks/train_cpu.py measured 2 threads at
    0.3-0.5x of one on a loaded 2-core box), so params.yaml can pin one.

    Returns:
        The thread count now in effect.
    """
    torch.set_num_threads(threads if threads is not None else usable_cores())
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so a run is repeatable on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ── the recipe ───────────────────────────────────────────────────────────────────────


def select_examples(frame: pl.DataFrame, limit: int | None, seed: int) -> pl.DataFrame:
    """A seeded subset of at most ``limit`` rows (sorted by id first, so order-independent)."""
    frame = frame.sort("id")
    if limit is None or limit >= frame.height:
        return frame
    return frame.sample(n=limit, seed=seed, shuffle=True).sort("id")


def encode_frame(
    frame: pl.DataFrame,
    tokenizer: Any,
    *,
    task: str,
    params: TrainParams,
    label_set: list[str] | None,
) -> list[Encoded]:
    """Prompt and tokenise every row, loss on the answer only."""
    answer_col = "label" if task == "classification" else "response"
    prompt_col = "messages" if task == "chat" else "text"  # chat: every turn, through the template
    encoded = []
    for text, answer in zip(frame[prompt_col].to_list(), frame[answer_col].to_list(), strict=True):
        prompt = build_prompt(tokenizer, text, task=task, form=params.prompt, label_set=label_set)
        encoded.append(encode_example(tokenizer, prompt, str(answer), max_length=params.max_length))
    return encoded


def epoch_batches(
    lengths: list[int], batch_size: int, rng: random.Random, *, group_by_length: bool
) -> list[list[int]]:
    """One epoch of micro-batches (example indices), shuffled with ``rng``.

    With ``group_by_length`` the shuffled order is cut into mega-batches of
    ``LENGTH_GROUP_BATCHES`` micro-batches, each sorted by length before it is split, so a
    micro-batch holds similar lengths and dynamic padding wastes little (as transformers'
    ``group_by_length``); the micro-batches are then shuffled again so long and short ones
    interleave.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * LENGTH_GROUP_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def split_by_tokens(idx: list[int], lengths: list[int], max_tokens: int | None) -> list[list[int]]:
    """Cut a micro-batch into pieces whose padded size (rows x longest row) fits ``max_tokens``.

    Activation memory grows with the padded size, and length grouping gathers the longest
    rows into one batch (8 x 114 tokens on Banking77): pieces cap the peak while
    ``supervised_count`` weighting keeps the gradient of the whole batch. A row longer
    than ``max_tokens`` becomes a piece of its own.
    """
    if max_tokens is None:
        return [idx]
    pieces: list[list[int]] = [[]]
    for i in sorted(idx, key=lambda i: lengths[i], reverse=True):
        piece = pieces[-1]
        if piece and lengths[piece[0]] * (len(piece) + 1) > max_tokens:
            pieces.append(piece := [])
        piece.append(i)
    return pieces


def supervised_count(example: Encoded) -> int:
    """Positions whose next token is supervised: the terms of this example's loss."""
    return sum(label != IGNORE_INDEX for label in example.labels[1:])


def causal_lm_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, answers_only: bool
) -> torch.Tensor:
    """Mean next-token cross-entropy over the supervised positions (labels != -100).

    With ``answers_only`` the decoder runs once and the LM head (576 x 49,152 for SmolLM2,
    a fifth of the model's FLOPs per position) is applied only where a label is
    supervised: the answer, ~7 of ~43 tokens of a Banking77 prompt. This skips the full
    batch x seq x vocab logits, their softmax and their gradient; the loss is the same
    as the model's own (``model(**batch).loss``, used when ``answers_only`` is False).
    """
    if not answers_only:
        return model(**batch).loss
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    keep = targets != IGNORE_INDEX
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def make_optimizer(model: torch.nn.Module, params: TrainParams, device: str, quantized: bool):
    """Paged 8-bit AdamW for QLoRA on CUDA (optimizer state off the GPU's hot path);
    plain AdamW on CPU, where bitsandbytes' paged optimizers do not apply."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if device == "cuda" and quantized:
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
    return torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)


def train_adapter(
    frame: pl.DataFrame,
    params: TrainParams,
    out_dir: Path,
    *,
    label_set: list[str] | None = None,
    device: str | None = None,
    extra_record: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train a LoRA adapter on ``frame`` and save it with its training record.

    Args:
        frame: curated train rows (id, text, label | response).
        params: the `train:` section.
        out_dir: gets ``adapter/`` and ``training.json``.
        label_set: the labels (recorded, and listed in the prompt for form 'labels').
        device: "cuda" / "cpu"; None picks CUDA when available.
        extra_record: merged into training.json (data hash, gate hash, override...).
        show_progress: draw a rich progress bar.

    Returns:
        The training record written to training.json.
    """
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    threads = set_threads(params.threads)
    seed_everything(params.seed)
    task = task_of(frame)

    # 1. Data: a seeded subset (CPU budget), prompts, answer-only labels.
    frame = select_examples(frame, params.max_train_examples, params.seed)
    loaded = load_base_model(
        params.base_model,
        device=device,
        quantize_4bit=params.quantize_4bit,
        gradient_checkpointing=params.gradient_checkpointing,
        for_training=True,
    )
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    examples = encode_frame(frame, tokenizer, task=task, params=params, label_set=label_set)
    truncated = sum(e.truncated for e in examples)
    if truncated:
        log.warning("%d of %d prompts cut to max_length=%d", truncated, len(examples), params.max_length)
    log.info("training on %d %s examples, device %s", len(examples), task, device)

    # 2. Model: LoRA on the chosen projections; only the adapter's weights train.
    lora = LoraConfig(
        r=params.lora.r,
        lora_alpha=params.lora.alpha,
        lora_dropout=params.lora.dropout,
        target_modules=(
            params.lora.target_modules
            if isinstance(params.lora.target_modules, str)
            else list(params.lora.target_modules)
        ),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    # 3. Schedule: epochs over the data unless max_steps caps it; linear warmup then decay.
    per_step = params.batch_size * params.grad_accum
    epoch_steps = math.ceil(len(examples) / per_step)
    total_steps = max(1, math.ceil(epoch_steps * params.epochs))
    if params.max_steps is not None:
        total_steps = min(total_steps, params.max_steps)
    optimizer = make_optimizer(model, params, device, loaded.quantized)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(params.warmup_ratio * total_steps), total_steps
    )

    # 4. Loop: shuffle each epoch with the seed (length-grouped micro-batches when set),
    # pad each micro-batch to its own longest row, clip, step.
    rng = random.Random(params.seed)
    lengths = [len(e.input_ids) for e in examples]
    queue: list[list[int]] = []
    losses: list[dict[str, float]] = []
    tokens_seen = 0
    model.train()
    loop_started = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total} loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        bar = progress.add_task("train", total=total_steps, loss=float("nan"))
        for step in range(total_steps):
            step_loss = 0.0
            for _ in range(params.grad_accum):
                if not queue:
                    queue = epoch_batches(
                        lengths, params.batch_size, rng, group_by_length=params.group_by_length
                    )
                idx = queue.pop(0)
                # the mean loss over the micro-batch's supervised tokens, piece by piece
                total = sum(supervised_count(examples[i]) for i in idx)
                for piece in split_by_tokens(idx, lengths, params.max_batch_tokens):
                    batch = collate([examples[i] for i in piece], pad_id=tokenizer.pad_token_id)
                    tensors = {k: torch.tensor(v, device=device) for k, v in batch.items()}
                    loss = causal_lm_loss(model, tensors, answers_only=params.lm_head_answers_only)
                    share = sum(supervised_count(examples[i]) for i in piece) / total / params.grad_accum
                    (loss * share).backward()
                    step_loss += loss.item() * share
                    tokens_seen += int(tensors["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], params.max_grad_norm
            )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append({"step": step + 1, "loss": round(step_loss, 6)})
            progress.update(bar, advance=1, loss=step_loss)
            if (step + 1) % params.log_every == 0:
                log.info("step %d/%d loss %.4f", step + 1, total_steps, step_loss)
    loop_seconds = time.perf_counter() - loop_started

    # 5. Save: the adapter (not the base weights) and the record beside it.
    adapter_dir = out_dir / ADAPTER_DIR
    adapter_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    record: dict[str, Any] = {
        "params": dataclasses.asdict(params),
        "task": task,
        "prompt_form": params.prompt if task == "classification" else "chat",
        "label_set": label_set,
        "base_model_source": loaded.source,
        "device": device,
        "quantized_4bit": loaded.quantized,
        "torch_threads": threads,
        "train_examples": len(examples),
        "truncated_prompts": truncated,
        "steps": total_steps,
        "examples_seen": total_steps * per_step,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "tokens_seen": tokens_seen,
        "train_seconds": round(loop_seconds, 3),
        "tokens_per_second": round(tokens_seen / loop_seconds, 2) if loop_seconds else None,
        "peak_memory_bytes": peak_memory_bytes(device),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "final_loss": losses[-1]["loss"] if losses else None,
        "loss_curve": losses,
        "adapter_dir": str(adapter_dir),
    }
    record.update(extra_record or {})
    (out_dir / TRAINING_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info(
        "saved %s: %d steps, %.1f tokens/s, final loss %.4f",
        adapter_dir,
        total_steps,
        record["tokens_per_second"] or 0.0,
        record["final_loss"] or float("nan"),
    )
    return record


def train_from_curated(
    curated_dir: Path,
    params: TrainParams,
    model_dir: Path,
    *,
    gate_path: Path | None,
    gate: GateParams | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Entry point for `curagate train`: check the gate, then train on curated train.parquet.

    Args:
        curated_dir: holds train.parquet, quality.json, labels.json, manifest.json.
        params: the `train:` section.
        model_dir: gets adapter/ and training.json.
        gate_path: gate.json to honour; None skips the gate (tests, sweeps on raw data).
        gate: the `gate:` thresholds the verdict is re-derived with (default: built-in).

    Raises:
        GateError: the gate refuses training.
    """
    train_path = curated_dir / "train.parquet"
    # the gate first: it names a missing or incomplete curated directory instead of crashing on it
    record = check_gate(gate_path, curated_dir, thresholds=gate or GateParams()) if gate_path else None
    if not train_path.is_file():
        raise GateError(f"{train_path}: not found; run `curagate curate` first")
    extra: dict[str, Any] = {
        "train_file": str(train_path),
        "data_md5": file_md5(train_path),
        "gate_file": None,
        "gate_md5": None,
        "gate_override": None,
    }
    if gate_path is not None and record is not None:
        extra.update(
            gate_file=str(gate_path),
            gate_md5=file_md5(gate_path),
            gate_override=record.override,
            gate_passed=record.passed,
        )
    frame = pl.read_parquet(train_path)
    label_set = read_label_set(curated_dir, frame)
    return train_adapter(
        frame,
        params,
        model_dir,
        label_set=label_set,
        extra_record=extra,
        show_progress=show_progress,
    )
