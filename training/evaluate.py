"""Base model vs adapter vs a classic baseline on the same seeded held-out test rows.

Answers are valid by construction: both models decode greedily over a token trie of the
label strings (``training.decoding``), batched with left padding after the prefix every
prompt shares, whose key/value cache is computed once. Free generation survives only as a
diagnostic (its invalid-answer rate on a few rows). Every accuracy and macro-F1 carries a
percentile-bootstrap interval; differences (adapter - base, adapter - baseline) use paired
intervals, resampling the same row indices for both sides. A promote / reject verdict with
its reasons follows from those intervals and the `evaluate:` thresholds.

The base model is judged under its best prompt (form ``labels``: the label list in the
system message), the adapter under the prompt it was trained with (from training.json).

Outputs: ``eval.json`` (flat numbers for `dvc metrics`), a detailed JSON (per-class,
confusions, example errors, intervals) and an HTML section with embedded PNG plots.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from schemas.manifest import file_md5
from schemas.training_params import EvaluateParams
from training.baseline import fit_predict_baseline
from training.decoding import LabelTrie, generate_batched, label_trie, strip_answer
from training.intervals import (  # noqa: F401  (re-exported: callers import them from here)
    IndexStatistic,
    accuracy_statistic,
    bootstrap_interval,
    difference,
    encode_labels,
    interval_dict,
    macro_f1_statistic,
    side_statistics,
)
from training.prompts import answer_suffix, build_prompt, parse_label
from training.train import select_examples

log = logging.getLogger(__name__)

INVALID = "<invalid>"  # the prediction recorded when an output names no label

# ── metrics (pure) ───────────────────────────────────────────────────────────────────


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    label_set: Sequence[str],
    *,
    top_confused: int = 10,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1, invalid-output rate and top confused pairs.

    A ``None`` prediction (unparseable output) counts as wrong for every class: it lowers
    recall of the true class and is never a correct prediction of any class.

    Args:
        y_true: gold labels.
        y_pred: parsed predictions, None where the output named no label.
        label_set: the classes macro-F1 averages over (labels absent from both sides
            score 0 and are excluded by passing only the classes that occur in y_true).
        top_confused: how many (true, predicted) pairs to list.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} gold labels but {len(y_pred)} predictions")
    if not y_true:
        raise ValueError("no examples to score")
    pred = [p if p is not None else INVALID for p in y_pred]
    # Macro-F1 over the classes present in the gold labels: a sample that lacks a class
    # cannot say anything about it, and counting it as F1=0 would punish both sides alike.
    present = [label for label in label_set if label in set(y_true)]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, pred, labels=present, zero_division=0
    )
    per_class = {
        label: {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
        }
        for label, p, r, f, s in zip(present, precision, recall, f1, support, strict=True)
    }
    pairs = Counter((t, p) for t, p in zip(y_true, pred, strict=True) if t != p)
    confused = [
        {"true": t, "predicted": p, "count": n}
        for (t, p), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top_confused]
    ]
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, labels=present, average="macro", zero_division=0)),
        "invalid_rate": sum(p is None for p in y_pred) / len(y_pred),
        "per_class": per_class,
        "top_confused": confused,
    }


# ── the verdict (pure) ───────────────────────────────────────────────────────────────


def promotion_verdict(
    comparisons: dict[str, dict[str, dict[str, float]]],
    *,
    metric: str,
    margin: float,
    require_beat_baseline: bool,
    confidence: float,
) -> dict[str, Any]:
    """Promote the adapter only if it beats the base model by ``margin`` on ``metric`` with
    the paired interval's lower bound above zero (and, when required, beats the baseline
    with the lower bound above zero). Every comparison made is reported as a reason.

    Args:
        comparisons: ``{"adapter_vs_base": {metric: {value, low, high}}, "adapter_vs_baseline": ...}``;
            a missing comparison fails the rule that needs it.

    Returns:
        ``{"verdict": "promote" | "reject", "promote": bool, "reasons": [str, ...]}``.
    """
    level = f"{round(confidence * 100)}%"
    reasons: list[str] = []
    ok = True
    vs_base = comparisons.get("adapter_vs_base", {}).get(metric)
    if vs_base is None:
        ok = False
        reasons.append("base model not scored: adapter - base unknown")
    else:
        d, lo, hi = vs_base["value"], vs_base["low"], vs_base["high"]
        passed = d >= margin and lo > 0
        ok &= passed
        reasons.append(
            f"{'pass' if passed else 'fail'}: adapter - base {metric} {d:+.3f} "
            f"({level} paired interval [{lo:+.3f}, {hi:+.3f}]); needs >= {margin:+.3f} "
            "with the lower bound > 0"
        )
    vs_baseline = comparisons.get("adapter_vs_baseline", {}).get(metric)
    if vs_baseline is None:
        reasons.append(f"{'fail' if require_beat_baseline else 'info'}: classic baseline not scored")
        ok &= not require_beat_baseline
    else:
        d, lo, hi = vs_baseline["value"], vs_baseline["low"], vs_baseline["high"]
        passed = lo > 0
        if require_beat_baseline:
            ok &= passed
        tag = ("pass" if passed else "fail") if require_beat_baseline else "info"
        reasons.append(
            f"{tag}: adapter - baseline {metric} {d:+.3f} ({level} paired interval "
            f"[{lo:+.3f}, {hi:+.3f}]); "
            + ("required to be > 0 at the lower bound" if require_beat_baseline else "not required")
        )
    return {"verdict": "promote" if ok else "reject", "promote": bool(ok), "reasons": reasons}


# ── decoding sides ───────────────────────────────────────────────────────────────────


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show,
    )


def answer_budget(tokenizer: Any, label_set: Sequence[str], configured: int | None) -> int:
    """Free-generation tokens: the configured number, else the longest label plus its stop token."""
    if configured is not None:
        return configured
    return max(len(tokenizer(label, add_special_tokens=False)["input_ids"]) for label in label_set) + 1


def classify(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    form: str,
    label_set: Sequence[str],
    trie: LabelTrie | None,
    max_new_tokens: int,
    batch_size: int,
    device: str,
    progress: Progress | None = None,
    desc: str = "classify",
) -> tuple[list[str], list[str | None], float]:
    """Answers, labels and seconds for ``texts`` under prompt ``form``.

    With a trie every label is valid by construction (read from the token ids); without
    one (the free-generation diagnostic) the text is parsed and may name no label (None).
    """
    prompts = [
        build_prompt(tokenizer, t, task="classification", form=form, label_set=label_set) for t in texts
    ]
    bar = progress.add_task(desc, total=len(prompts)) if progress is not None else None
    started = time.perf_counter()
    generated = generate_batched(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device=device,
        trie=trie,
        on_batch=(lambda k: progress.update(bar, advance=k)) if progress is not None else None,
    )
    seconds = time.perf_counter() - started
    end = tokenizer.eos_token_id
    raw = [tokenizer.decode(strip_answer(g, end), skip_special_tokens=True) for g in generated]
    if trie is not None:
        labels: list[str | None] = [trie.label_of(g) for g in generated]
        raw = [str(label) for label in labels]  # the answer may have stopped once determined
    else:
        labels = [parse_label(r, label_set) for r in raw]
    return raw, labels, seconds


def baseline_train_rows(
    training_record: dict[str, Any], train: pl.DataFrame | None
) -> tuple[pl.DataFrame | None, str]:
    """The adapter's own train rows (its seeded subset) for the classic baseline.

    ``train`` when given, else training.json's ``train_file`` when it still has the recorded
    md5. Returns (rows or None, where they came from / why not).
    """
    source = "argument"
    if train is None:
        path = training_record.get("train_file")
        if not path or not Path(path).is_file():
            return None, f"train file {path!r} not found"
        if training_record.get("data_md5") and file_md5(Path(path)) != training_record["data_md5"]:
            return None, f"{path} changed since training (md5 differs from training.json)"
        train, source = pl.read_parquet(path), str(path)
    params = training_record.get("params", {})
    rows = select_examples(train, params.get("max_train_examples"), params.get("seed", 0))
    return rows, source


# ── the comparison ───────────────────────────────────────────────────────────────────


def _side_result(
    sample: pl.DataFrame,
    raw: Sequence[str],
    pred: Sequence[str | None],
    label_set: Sequence[str],
    params: EvaluateParams,
    stats: dict[str, IndexStatistic],
) -> dict[str, Any]:
    gold = sample["label"].to_list()
    metrics = classification_metrics(gold, list(pred), label_set, top_confused=params.top_confused)
    for key, statistic in stats.items():
        low, high = bootstrap_interval(
            statistic,
            len(gold),
            samples=params.bootstrap_samples,
            confidence=params.confidence,
            seed=params.seed,
        )
        metrics[f"{key}_ci"] = [round(low, 6), round(high, 6)]
    metrics["predicted"] = list(pred)  # per row, in the order of the top-level row_ids
    metrics["errors"] = [
        {"id": i, "text": t, "label": g, "output": r, "predicted": p}
        for i, t, g, r, p in zip(
            sample["id"].to_list(), sample["text"].to_list(), gold, raw, pred, strict=True
        )
        if p != g
    ][: params.num_errors]
    return metrics


def evaluate_adapter(
    test: pl.DataFrame,
    adapter_dir: Path,
    params: EvaluateParams,
    *,
    label_set: Sequence[str],
    training_record: dict[str, Any],
    train: pl.DataFrame | None = None,
    device: str | None = None,
    include_base: bool = True,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Score the base model, the adapter and the classic baseline on the same seeded rows.

    Args:
        test: the curated test split (id, text, label).
        adapter_dir: the saved LoRA adapter.
        params: the `evaluate:` section.
        label_set: every label (the trie, and the base prompt's list).
        training_record: training.json (base model, the adapter's prompt form, train rows).
        train: the curated train split the adapter was trained from; None reads
            training.json's ``train_file`` (skipping the baseline if it moved or changed).
        include_base: also score the base model (sweeps skip it after the first run).

    Returns:
        Detailed results: per side metrics with intervals, paired comparisons, the verdict,
        the free-generation diagnostic, prompts used, timing, example errors.
    """
    from peft import PeftModel

    from training.model import load_base_model
    from training.train import set_threads

    set_threads(params.threads)
    base_model = training_record["params"]["base_model"]
    adapter_form = training_record.get("prompt_form", "short")
    sample = select_examples(test, params.sample_size, params.seed)
    texts, gold = sample["text"].to_list(), sample["label"].to_list()
    unknown = sorted(set(gold) - set(label_set))
    if unknown:
        raise ValueError(f"test labels missing from the label set: {unknown[:5]}")
    # Evaluation runs in full precision even on CUDA: the comparison should not depend on
    # quantisation noise, and a 135M model fits anywhere.
    loaded = load_base_model(
        base_model, device=device, quantize_4bit=False, for_training=False, padding_side="left"
    )
    tokenizer = loaded.tokenizer
    model = PeftModel.from_pretrained(loaded.model, str(adapter_dir))
    model.eval()
    trie = label_trie(tokenizer, label_set, suffix=answer_suffix(tokenizer))
    budget = answer_budget(tokenizer, label_set, params.max_new_tokens)
    free_rows = min(params.free_generation_rows, len(texts))

    sides: dict[str, dict[str, Any]] = {}
    stats: dict[str, dict[str, IndexStatistic]] = {}
    runs = [("adapter", adapter_form)]
    if include_base:
        runs.insert(0, ("base", params.base_prompt))
    with _progress(show_progress) as progress:
        for side, form in runs:
            common = {
                "form": form, "label_set": label_set, "batch_size": params.batch_size,
                "device": loaded.device, "progress": progress,
            }  # fmt: skip
            with model.disable_adapter() if side == "base" else nullcontext():
                raw, pred, seconds = classify(
                    model, tokenizer, texts, trie=trie, max_new_tokens=trie.depth, desc=side, **common
                )
                free_raw, free_pred, free_seconds = classify(
                    model, tokenizer, texts[:free_rows], trie=None, max_new_tokens=budget,
                    desc=f"{side} (free)", **common,
                )  # fmt: skip
            stats[side] = side_statistics(gold, pred, label_set)
            result = _side_result(sample, raw, pred, label_set, params, stats[side])
            sides[side] = {
                "prompt_form": form,
                "decoding": "label_trie",
                "seconds": round(seconds, 3),
                "seconds_per_example": round(seconds / len(texts), 4),
                **result,
                "free_generation": _free_generation_summary(
                    gold[:free_rows], free_pred, free_raw, free_seconds
                ),
            }
            log.info("%s (%s prompt): accuracy %.3f", side, form, result["accuracy"])

    rows, baseline_source = baseline_train_rows(training_record, train)
    if rows is not None:
        started = time.perf_counter()
        pred = fit_predict_baseline(
            rows["text"].to_list(), rows["label"].to_list(), texts, params=params.baseline
        )
        seconds = time.perf_counter() - started
        stats["baseline"] = side_statistics(gold, pred, label_set)
        result = _side_result(sample, pred, pred, label_set, params, stats["baseline"])
        sides["baseline"] = {
            "prompt_form": "-",
            "decoding": "tfidf_linear_svm",
            "train_rows": rows.height,
            "train_source": baseline_source,
            "seconds": round(seconds, 3),
            "seconds_per_example": round(seconds / len(texts), 4),
            **result,
        }
        log.info("baseline (%d train rows): accuracy %.3f", rows.height, result["accuracy"])
    else:
        log.warning("classic baseline skipped: %s", baseline_source)

    comparisons = compare_sides(stats, n=len(texts), params=params)
    verdict = promotion_verdict(
        comparisons,
        metric=params.promote_metric,
        margin=params.promote_margin,
        require_beat_baseline=params.require_beat_baseline,
        confidence=params.confidence,
    )
    return {
        "n": len(texts),
        "sample_seed": params.seed,
        "device": loaded.device,
        "base_model_source": loaded.source,
        "adapter_dir": str(adapter_dir),
        "decoding": "greedy over a token trie of the labels (valid by construction)",
        "max_answer_tokens": trie.depth,
        "free_generation_rows": free_rows,
        "bootstrap": {
            "samples": params.bootstrap_samples,
            "confidence": params.confidence,
            "method": "percentile, paired over row indices",
            "seed": params.seed,
        },  # fmt: skip
        "baseline_skipped": None if rows is not None else baseline_source,
        # per-row identity of the scored sample: a later adapter is compared with this one on
        # the same rows (training/promotion.py pairs them by id)
        "row_ids": sample["id"].to_list(),
        "row_labels": gold,
        "sides": sides,
        "comparisons": comparisons,
        "verdict": verdict,
    }


def _free_generation_summary(
    gold: Sequence[str], pred: Sequence[str | None], raw: Sequence[str], seconds: float
) -> dict[str, Any]:
    """The unconstrained diagnostic: how often free text names no label, on a few rows."""
    n = len(gold)
    if n == 0:
        return {"rows": 0}
    return {
        "rows": n,
        "invalid_rate": round(sum(p is None for p in pred) / n, 6),
        "accuracy": round(sum(p == g for p, g in zip(pred, gold, strict=True)) / n, 6),
        "seconds_per_example": round(seconds / n, 4),
        "examples": [{"label": g, "output": r} for g, r in zip(gold, raw, strict=True)][:5],
    }


def compare_sides(
    stats: dict[str, dict[str, IndexStatistic]], *, n: int, params: EvaluateParams
) -> dict[str, dict[str, dict[str, float]]]:
    """Paired differences ``adapter - base`` and ``adapter - baseline`` with intervals."""
    comparisons: dict[str, dict[str, dict[str, float]]] = {}
    if "adapter" not in stats:
        return comparisons
    for other in ("base", "baseline"):
        if other not in stats:
            continue
        entry = {}
        for key in ("accuracy", "macro_f1"):
            diff = difference(stats["adapter"][key], stats[other][key])
            value = float(diff(np.arange(n)))
            low, high = bootstrap_interval(
                diff, n, samples=params.bootstrap_samples, confidence=params.confidence, seed=params.seed
            )
            entry[key] = interval_dict(value, low, high)
        comparisons[f"adapter_vs_{other}"] = entry
    return comparisons


def flat_metrics(detail: dict[str, Any]) -> dict[str, Any]:
    """The numbers DVC tracks: ``<side>_accuracy`` (+ ``_low``/``_high``), ``<side>_macro_f1``,
    paired differences with intervals, and the verdict as flat keys."""
    flat: dict[str, Any] = {"n": detail["n"]}
    for side, result in detail["sides"].items():
        for key in ("accuracy", "macro_f1", "invalid_rate", "seconds_per_example"):
            flat[f"{side}_{key}"] = round(result[key], 6)
        for key in ("accuracy", "macro_f1"):
            if f"{key}_ci" in result:
                flat[f"{side}_{key}_low"], flat[f"{side}_{key}_high"] = result[f"{key}_ci"]
        free = result.get("free_generation") or {}
        if free.get("rows"):
            flat[f"{side}_free_invalid_rate"] = free["invalid_rate"]
    if "base" in detail["sides"] and "adapter" in detail["sides"]:
        flat["accuracy_gain"] = round(flat["adapter_accuracy"] - flat["base_accuracy"], 6)
        flat["macro_f1_gain"] = round(flat["adapter_macro_f1"] - flat["base_macro_f1"], 6)
    for name, entry in (detail.get("comparisons") or {}).items():
        other = name.removeprefix("adapter_vs_")
        for key, interval in entry.items():
            prefix = f"adapter_minus_{other}_{key}"
            flat[prefix] = interval["value"]
            flat[f"{prefix}_low"], flat[f"{prefix}_high"] = interval["low"], interval["high"]
    verdict = detail.get("verdict")
    if verdict:
        flat["verdict"] = verdict["verdict"]
        flat["verdict_promote"] = int(verdict["promote"])
        flat["verdict_reasons"] = "; ".join(verdict["reasons"])
    return flat


# ── instruction data: answer-token loss, perplexity, ROUGE-L ────────────────────────


@torch.no_grad()
def answer_token_losses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    device: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: summed negative log-likelihood of the response tokens (end token included,
    prompt masked exactly as in training) and how many response tokens there were."""
    from training.prompts import IGNORE_INDEX, collate, encode_example

    encoded = [
        encode_example(tokenizer, p, r, max_length=max_length)
        for p, r in zip(prompts, responses, strict=True)
    ]
    nll, count = np.zeros(len(encoded)), np.zeros(len(encoded))
    for begin in range(0, len(encoded), batch_size):
        batch = collate(encoded[begin : begin + batch_size], pad_id=tokenizer.pad_token_id)
        t = {k: torch.tensor(v, device=device) for k, v in batch.items()}
        logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits[:, :-1]
        target = t["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none"
        )
        nll[begin : begin + len(target)] = losses.sum(dim=1).cpu().numpy()
        count[begin : begin + len(target)] = (target != IGNORE_INDEX).sum(dim=1).cpu().numpy()
    return nll, count


def token_loss_statistic(nll: np.ndarray, count: np.ndarray) -> IndexStatistic:
    """Mean loss per answer token of a resample (tokens pooled over its rows)."""
    return lambda idx: nll[idx].sum(axis=-1) / np.maximum(count[idx].sum(axis=-1), 1)


def rouge_l(references: Sequence[str], candidates: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure per pair (google-research rouge-score; no stemmer, no NLTK data)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score(r, c)["rougeL"].fmeasure for r, c in zip(references, candidates, strict=True)]


def evaluate_instruction_adapter(
    test: pl.DataFrame,
    adapter_dir: Path,
    params: EvaluateParams,
    *,
    training_record: dict[str, Any],
    device: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Base vs adapter on held-out instruction rows (id, text = prompt, response).

    Mean answer-token loss and perplexity (exp of it) with bootstrap intervals over rows,
    the paired loss difference, and ROUGE-L of freely generated answers on a few rows.
    Verdict: promote when the adapter's loss is lower with the paired interval's upper
    bound of (adapter - base) below zero.
    """
    from peft import PeftModel

    from training.model import load_base_model
    from training.train import set_threads

    set_threads(params.threads)
    sample = select_examples(test, params.sample_size, params.seed)
    task = "chat" if training_record.get("task") == "chat" and "messages" in sample.columns else "instruction"
    prompts_text = sample["messages" if task == "chat" else "text"].to_list()
    responses = sample["response"].to_list()
    loaded = load_base_model(
        training_record["params"]["base_model"], device=device, quantize_4bit=False,
        for_training=False, padding_side="left",
    )  # fmt: skip
    tokenizer = loaded.tokenizer
    model = PeftModel.from_pretrained(loaded.model, str(adapter_dir)).eval()
    prompts = [build_prompt(tokenizer, t, task=task, form="chat", label_set=None) for t in prompts_text]
    max_length = int(training_record["params"].get("max_length", 512))
    k = min(params.instruction_generated_rows, len(prompts))
    interval = {"samples": params.bootstrap_samples, "confidence": params.confidence, "seed": params.seed}
    sides: dict[str, dict[str, Any]] = {}
    stats: dict[str, IndexStatistic] = {}
    for side in ("base", "adapter"):
        with model.disable_adapter() if side == "base" else nullcontext():
            started = time.perf_counter()
            nll, count = answer_token_losses(
                model, tokenizer, prompts, responses, batch_size=params.batch_size,
                max_length=max_length, device=loaded.device,
            )  # fmt: skip
            generated = generate_batched(
                model, tokenizer, prompts[:k], max_new_tokens=params.instruction_max_new_tokens,
                batch_size=params.batch_size, device=loaded.device,
            )  # fmt: skip
        seconds = time.perf_counter() - started
        stats[side] = token_loss_statistic(nll, count)
        loss = float(stats[side](np.arange(len(prompts))))
        low, high = bootstrap_interval(stats[side], len(prompts), **interval)
        answers = [
            tokenizer.decode(strip_answer(g, tokenizer.eos_token_id), skip_special_tokens=True)
            for g in generated
        ]
        rouge = rouge_l(responses[:k], answers)
        sides[side] = {
            "token_loss": round(loss, 6),
            "token_loss_ci": [round(low, 6), round(high, 6)],
            "perplexity": round(math.exp(loss), 6),
            "perplexity_ci": [round(math.exp(low), 6), round(math.exp(high), 6)],
            "answer_tokens": int(count.sum()),
            "rouge_l": round(float(np.mean(rouge)), 6) if rouge else None,
            "rouge_l_rows": k,
            "seconds": round(seconds, 3),
            "examples": [
                {"prompt": p, "reference": r, "generated": a}
                for p, r, a in zip(prompts_text, responses, answers, strict=False)
            ][:5],  # fmt: skip
        }
    diff = difference(stats["adapter"], stats["base"])
    value = float(diff(np.arange(len(prompts))))
    low, high = bootstrap_interval(diff, len(prompts), **interval)
    comparisons = {"adapter_vs_base": {"token_loss": interval_dict(value, low, high)}}
    promote = high < 0
    level = f"{round(params.confidence * 100)}%"
    reasons = [
        f"{'pass' if promote else 'fail'}: adapter - base answer-token loss {value:+.4f} "
        f"({level} paired interval [{low:+.4f}, {high:+.4f}]); needs the upper bound < 0"
    ]
    return {
        "task": "instruction",
        "n": len(prompts),
        "sample_seed": params.seed,
        "device": loaded.device,
        "base_model_source": loaded.source,
        "adapter_dir": str(adapter_dir),
        "bootstrap": {**interval, "method": "percentile, paired over row indices"},
        "sides": sides,
        "comparisons": comparisons,
        "verdict": {"verdict": "promote" if promote else "reject", "promote": promote, "reasons": reasons},
    }


def flat_instruction_metrics(detail: dict[str, Any]) -> dict[str, Any]:
    """eval.json keys for instruction data: loss, perplexity (+ intervals), ROUGE-L, verdict."""
    flat: dict[str, Any] = {"n": detail["n"]}
    for side, r in detail["sides"].items():
        for key in ("token_loss", "perplexity"):
            flat[f"{side}_{key}"] = r[key]
            flat[f"{side}_{key}_low"], flat[f"{side}_{key}_high"] = r[f"{key}_ci"]
        if r["rouge_l"] is not None:
            flat[f"{side}_rouge_l"] = r["rouge_l"]
    d = detail["comparisons"]["adapter_vs_base"]["token_loss"]
    flat["adapter_minus_base_token_loss"] = d["value"]
    flat["adapter_minus_base_token_loss_low"], flat["adapter_minus_base_token_loss_high"] = (
        d["low"],
        d["high"],
    )
    flat["verdict"] = detail["verdict"]["verdict"]
    flat["verdict_promote"] = int(detail["verdict"]["promote"])
    flat["verdict_reasons"] = "; ".join(detail["verdict"]["reasons"])
    return flat


def render_instruction_html(detail: dict[str, Any]) -> str:
    """The HTML section for instruction data: loss, perplexity and ROUGE-L per side."""
    rows = "".join(
        f"<tr><td>{side}</td><td>{r['token_loss']:.4f} [{r['token_loss_ci'][0]:.4f}, "
        f"{r['token_loss_ci'][1]:.4f}]</td><td>{r['perplexity']:.2f} [{r['perplexity_ci'][0]:.2f}, "
        f"{r['perplexity_ci'][1]:.2f}]</td><td>{r['rouge_l'] if r['rouge_l'] is not None else '-'} "
        f"({r['rouge_l_rows']} rows)</td></tr>"
        for side, r in detail["sides"].items()
    )
    verdict = detail["verdict"]
    reasons = "".join(f"<li>{html.escape(x)}</li>" for x in verdict["reasons"])
    return (
        "<section id='evaluation'><h2>Base model vs adapter (instruction data)</h2>"
        f"<p>{detail['n']} held-out rows (seed {detail['sample_seed']}); loss over answer tokens only.</p>"
        f"<h3>Verdict: {verdict['verdict']}</h3><ul>{reasons}</ul>"
        "<table><tr><th>model</th><th>answer-token loss</th><th>perplexity</th><th>ROUGE-L</th></tr>"
        f"{rows}</table></section>"
    )


# ── report ───────────────────────────────────────────────────────────────────────────


def png_base64(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG (the report stays one offline file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(fig: Any, alt: str) -> str:
    import matplotlib.pyplot as plt

    data = png_base64(fig)
    plt.close(fig)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_eval_html(detail: dict[str, Any], training_record: dict[str, Any] | None) -> str:
    """An HTML section: headline table, loss curve, per-class F1 and confusions, errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if detail.get("task") == "instruction":
        return render_instruction_html(detail)
    sides = detail["sides"]
    parts = ["<section id='evaluation'><h2>Base model vs adapter vs classic baseline</h2>"]
    level = f"{round(detail['bootstrap']['confidence'] * 100)}%"
    parts.append(
        f"<p>{detail['n']} test examples (seeded sample, seed {detail['sample_seed']}), the same "
        f"rows for every side; {html.escape(detail['decoding'])}; device "
        f"{html.escape(detail['device'])}. Intervals: {level} percentile bootstrap, "
        f"{detail['bootstrap']['samples']} resamples, paired for differences.</p>"
    )
    verdict = detail["verdict"]
    color = "green" if verdict["promote"] else "red"
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in verdict["reasons"])
    parts.append(
        f"<h3>Verdict: <span style='color:{color}'>{verdict['verdict']}</span></h3><ul>{reasons}</ul>"
    )

    def ci(r: dict[str, Any], key: str) -> str:
        low, high = r[f"{key}_ci"]
        return f"{r[key]:.3f} [{low:.3f}, {high:.3f}]"

    def free(r: dict[str, Any]) -> str:
        f = r.get("free_generation") or {}
        return f"{f['invalid_rate']:.3f} of {f['rows']}" if f.get("rows") else "-"

    rows = "".join(
        f"<tr><td>{side}</td><td>{html.escape(r['prompt_form'])}</td><td>{ci(r, 'accuracy')}</td>"
        f"<td>{ci(r, 'macro_f1')}</td><td>{r['invalid_rate']:.3f}</td><td>{free(r)}</td>"
        f"<td>{r['seconds_per_example']:.3f}</td></tr>"
        for side, r in sides.items()
    )
    parts.append(
        f"<table><tr><th>model</th><th>prompt</th><th>accuracy [{level}]</th>"
        f"<th>macro-F1 [{level}]</th><th>invalid answers</th><th>free-generation invalid "
        f"(diagnostic)</th><th>s / example</th></tr>{rows}</table>"
    )
    comparison_rows = "".join(
        f"<tr><td>{html.escape(name.replace('_vs_', ' - '))}</td>"
        + "".join(
            f"<td>{e[k]['value']:+.3f} [{e[k]['low']:+.3f}, {e[k]['high']:+.3f}]</td>"
            for k in ("accuracy", "macro_f1")
        )
        + "</tr>"
        for name, e in detail["comparisons"].items()
    )
    parts.append(
        f"<table><tr><th>paired difference</th><th>accuracy [{level}]</th><th>macro-F1 [{level}]</th>"
        f"</tr>{comparison_rows}</table>"
    )
    if training_record and training_record.get("loss_curve"):
        curve = training_record["loss_curve"]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot([c["step"] for c in curve], [c["loss"] for c in curve])
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (answer tokens)")
        ax.set_title("Loss curve")
        parts.append(_img(fig, "loss curve"))
    if "adapter" in sides:
        per_class = sides["adapter"]["per_class"]
        labels = sorted(per_class, key=lambda k: per_class[k]["f1"])
        fig, ax = plt.subplots(figsize=(7, max(3, 0.14 * len(labels))))
        ax.barh(labels, [per_class[k]["f1"] for k in labels], label="adapter")
        if "base" in sides:
            base = sides["base"]["per_class"]
            ax.scatter([base[k]["f1"] for k in labels], labels, color="black", s=8, label="base")
        ax.set_xlabel("F1")
        ax.tick_params(axis="y", labelsize=5)
        ax.legend(loc="lower right")
        ax.set_title("Per-class F1 (test sample)")
        parts.append(_img(fig, "per-class F1"))
    for side, r in sides.items():
        confused = "".join(
            f"<tr><td>{html.escape(c['true'])}</td><td>{html.escape(c['predicted'])}</td>"
            f"<td>{c['count']}</td></tr>"
            for c in r["top_confused"]
        )
        parts.append(
            f"<h3>{side}: top confused pairs</h3><table><tr><th>true</th><th>predicted</th>"
            f"<th>count</th></tr>{confused}</table>"
        )
        errors = "".join(
            f"<tr><td>{html.escape(e['text'])}</td><td>{html.escape(e['label'])}</td>"
            f"<td>{html.escape(e['output'])}</td><td>{html.escape(str(e['predicted']))}</td></tr>"
            for e in r["errors"]
        )
        parts.append(
            f"<h3>{side}: example errors</h3><table><tr><th>text</th><th>label</th>"
            f"<th>raw output</th><th>parsed</th></tr>{errors}</table>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def write_eval_outputs(
    detail: dict[str, Any],
    *,
    eval_json: Path,
    detail_json: Path,
    html_path: Path,
    training_record: dict[str, Any] | None,
) -> dict[str, Any]:
    """Write eval.json (flat), the detailed JSON and the HTML report; return the flat dict."""
    flat = flat_instruction_metrics(detail) if detail.get("task") == "instruction" else flat_metrics(detail)
    for path in (eval_json, detail_json, html_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    eval_json.write_text(json.dumps(flat, indent=2) + "\n", encoding="utf-8")
    detail_json.write_text(json.dumps(detail, indent=2) + "\n", encoding="utf-8")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>curagate evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
        "font-size:12px}</style></head><body>"
        f"{render_eval_html(detail, training_record)}</body></html>\n"
    )
    html_path.write_text(page, encoding="utf-8")
    return flat
