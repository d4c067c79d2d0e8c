"""Base model vs adapter on the held-out test split: greedy generation -> label -> metrics.

The base model is judged under its best prompt (form ``labels``: the label list in the
system message), the adapter under the prompt it was trained with (from training.json);
both are recorded. The long label-list prefix is identical for every row, so its key/value
cache is computed once and reused: the per-row cost is the user turn and the answer only.

Outputs: ``eval.json`` (flat numbers for `dvc metrics`), a detailed JSON (per-class,
confusions, example errors) and an HTML section with embedded PNG plots.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from schemas.training_params import EvaluateParams
from training.prompts import build_prompt, parse_label

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


# ── generation ───────────────────────────────────────────────────────────────────────


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@torch.no_grad()
def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    device: str,
    desc: str = "generate",
    show_progress: bool = True,
) -> list[str]:
    """Greedy answers, one prompt at a time, reusing the key/value cache of the prefix that
    every prompt shares (the system message): with a 77-label list that prefix is ~95% of
    the tokens, so caching it makes the long prompt nearly as cheap as the short one."""
    from transformers import DynamicCache

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = min((_common_prefix_len(ids[0], other) for other in ids[1:]), default=len(ids[0]))
    shared = min(shared, min(len(x) for x in ids) - 1)  # keep >= 1 new token per prompt
    prefix_cache = None
    if shared > 0:
        prefix = torch.tensor([ids[0][:shared]], device=device)
        prefix_cache = model(input_ids=prefix, past_key_values=DynamicCache()).past_key_values
    eos = tokenizer.eos_token_id
    outputs = []
    progress = Progress(
        TextColumn(f"[bold]{desc}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show_progress,
    )
    with progress:
        bar = progress.add_task(desc, total=len(ids))
        for row in ids:
            input_ids = torch.tensor([row], device=device)
            kwargs: dict[str, Any] = {}
            if prefix_cache is not None:
                kwargs["past_key_values"] = copy.deepcopy(prefix_cache)
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
                **kwargs,
            )
            new = generated[0, input_ids.shape[1] :]
            outputs.append(tokenizer.decode(new, skip_special_tokens=True))
            progress.update(bar, advance=1)
    return outputs


def answer_budget(tokenizer: Any, label_set: Sequence[str], configured: int | None) -> int:
    """Tokens to generate: the configured number, else the longest label plus its stop token."""
    if configured is not None:
        return configured
    return max(len(tokenizer(label, add_special_tokens=False)["input_ids"]) for label in label_set) + 1


def sample_test(frame: pl.DataFrame, size: int | None, seed: int) -> pl.DataFrame:
    """A seeded sample of the test split (sorted by id first, so file order does not matter)."""
    frame = frame.sort("id")
    if size is None or size >= frame.height:
        return frame
    return frame.sample(n=size, seed=seed, shuffle=True).sort("id")


def predict(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    form: str,
    label_set: Sequence[str],
    max_new_tokens: int,
    device: str,
    desc: str,
    show_progress: bool = True,
) -> tuple[list[str], list[str | None], float]:
    """Raw outputs, parsed labels and seconds taken for ``texts`` under prompt ``form``."""
    prompts = [
        build_prompt(tokenizer, t, task="classification", form=form, label_set=label_set) for t in texts
    ]
    started = time.perf_counter()
    raw = generate_answers(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        device=device,
        desc=desc,
        show_progress=show_progress,
    )
    seconds = time.perf_counter() - started
    return raw, [parse_label(r, label_set) for r in raw], seconds


# ── the comparison ───────────────────────────────────────────────────────────────────


def evaluate_adapter(
    test: pl.DataFrame,
    adapter_dir: Path,
    params: EvaluateParams,
    *,
    label_set: Sequence[str],
    training_record: dict[str, Any],
    device: str | None = None,
    include_base: bool = True,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Score the base model and the adapter on a seeded test sample.

    Args:
        test: the curated test split (id, text, label).
        adapter_dir: the saved LoRA adapter.
        params: the `evaluate:` section.
        label_set: every label (parsing and the base prompt's list).
        training_record: training.json (base model and the adapter's prompt form).
        include_base: also score the base model (sweeps skip it after the first run).

    Returns:
        Detailed results: per side metrics, prompts used, timing, example errors.
    """
    from peft import PeftModel

    from training.model import load_base_model
    from training.train import set_threads

    set_threads(params.threads)
    base_model = training_record["params"]["base_model"]
    adapter_form = training_record.get("prompt_form", "short")
    sample = sample_test(test, params.sample_size, params.seed)
    texts, gold = sample["text"].to_list(), sample["label"].to_list()
    # Evaluation runs in full precision even on CUDA: the comparison should not depend on
    # quantisation noise, and a 135M model fits anywhere.
    loaded = load_base_model(
        base_model, device=device, quantize_4bit=False, for_training=False, padding_side="left"
    )
    tokenizer = loaded.tokenizer
    model = PeftModel.from_pretrained(loaded.model, str(adapter_dir))
    model.eval()
    budget = answer_budget(tokenizer, label_set, params.max_new_tokens)

    sides: dict[str, dict[str, Any]] = {}
    runs = [("adapter", adapter_form)]
    if include_base:
        runs.insert(0, ("base", params.base_prompt))
    for side, form in runs:
        if side == "base":
            with model.disable_adapter():
                raw, pred, seconds = predict(
                    model, tokenizer, texts, form=form, label_set=label_set,
                    max_new_tokens=budget, device=loaded.device, desc="base",
                    show_progress=show_progress,
                )  # fmt: skip
        else:
            raw, pred, seconds = predict(
                model, tokenizer, texts, form=form, label_set=label_set,
                max_new_tokens=budget, device=loaded.device, desc="adapter",
                show_progress=show_progress,
            )  # fmt: skip
        metrics = classification_metrics(gold, pred, label_set, top_confused=params.top_confused)
        errors = [
            {"id": i, "text": t, "label": g, "output": r, "predicted": p}
            for i, t, g, r, p in zip(sample["id"].to_list(), texts, gold, raw, pred, strict=True)
            if p != g
        ][: params.num_errors]
        sides[side] = {
            "prompt_form": form,
            "seconds": round(seconds, 3),
            "seconds_per_example": round(seconds / len(texts), 4),
            **metrics,
            "errors": errors,
        }
        log.info("%s (%s prompt): accuracy %.3f", side, form, metrics["accuracy"])
    return {
        "n": len(texts),
        "sample_seed": params.seed,
        "device": loaded.device,
        "base_model_source": loaded.source,
        "adapter_dir": str(adapter_dir),
        "max_new_tokens": budget,
        "sides": sides,
    }


def flat_metrics(detail: dict[str, Any]) -> dict[str, Any]:
    """The numbers DVC tracks: ``<side>_accuracy``, ``<side>_macro_f1``, ... and the gain."""
    flat: dict[str, Any] = {"n": detail["n"]}
    for side, result in detail["sides"].items():
        for key in ("accuracy", "macro_f1", "invalid_rate", "seconds_per_example"):
            flat[f"{side}_{key}"] = round(result[key], 6)
    if "base" in detail["sides"] and "adapter" in detail["sides"]:
        flat["accuracy_gain"] = round(flat["adapter_accuracy"] - flat["base_accuracy"], 6)
        flat["macro_f1_gain"] = round(flat["adapter_macro_f1"] - flat["base_macro_f1"], 6)
    return flat


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

    sides = detail["sides"]
    parts = ["<section id='evaluation'><h2>Base model vs adapter</h2>"]
    parts.append(
        f"<p>{detail['n']} test examples (seeded sample, seed {detail['sample_seed']}), greedy "
        f"decoding, device {html.escape(detail['device'])}.</p>"
    )
    rows = "".join(
        f"<tr><td>{side}</td><td>{html.escape(r['prompt_form'])}</td><td>{r['accuracy']:.3f}</td>"
        f"<td>{r['macro_f1']:.3f}</td><td>{r['invalid_rate']:.3f}</td>"
        f"<td>{r['seconds_per_example']:.3f}</td></tr>"
        for side, r in sides.items()
    )
    parts.append(
        "<table><tr><th>model</th><th>prompt</th><th>accuracy</th><th>macro-F1</th>"
        f"<th>invalid outputs</th><th>s / example</th></tr>{rows}</table>"
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
    flat = flat_metrics(detail)
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
