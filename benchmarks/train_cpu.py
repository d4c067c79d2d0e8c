"""CPU LoRA training speed and memory: the machine's ceiling, where a step's time goes,
and today's settings against the new ones, interleaved in one process.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/train_cpu.py [--steps 4] [--chunk 2]

1. Ceiling: fp32 matmul GFLOP/s on SmolLM2-135M's own shapes (384 tokens x each linear),
   at one thread and at every usable core; tokens/s ceiling = FLOP/s / FLOPs per trained
   token (forward 2N + backward input-gradients 2N, frozen weights need no weight grads).
2. Variants, each its own model + LoRA (same seed, same examples), run in interleaved
   chunks of ``--chunk`` steps so a noisy shared CPU hits them alike:
     old           threads 1, full-vocab logits, shuffled batches, LoRA dropout 0.05 (main before #12)
     new_same      old + LM head at answer positions only, the same batches and dropout
                   masks (its loss curve must match old's: same maths, less work)
     new           new_same + length-grouped batches + LoRA dropout 0 + pieces of <= 384
                   padded tokens (the new params.yaml)
     new_all_cores new at every usable core (threads: null)
   Per step: collation, forward, backward, optimizer time; tokens/s, examples/s, loss.
3. Peak RSS per variant: a child process runs a few steps of one variant alone.

Writes benchmarks/results/train_cpu.json. Other processes share this CPU: the load
average is recorded with the numbers, and ratios matter more than absolute values.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import polars as pl  # noqa: E402
import torch  # noqa: E402

from training.model import load_base_model  # noqa: E402
from training.prompts import build_prompt, collate, encode_example  # noqa: E402
from training.train import (
    causal_lm_loss,
    epoch_batches,
    split_by_tokens,
    supervised_count,
    usable_cores,
)  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
OUT = ROOT / "benchmarks" / "results" / "train_cpu.json"
EXAMPLES = 600  # the demo's train.max_train_examples before #12
BATCH = 8
MAX_LENGTH = 128
LR = 1e-3
SEED = 0
TOKENS = 384  # batch 8 x ~48 tokens: the matmul height of a real step
MATMUL_SECONDS = 2.0

VARIANTS = {
    "old": {
        "threads": 1,
        "answers_only": False,
        "group_by_length": False,
        "lora_dropout": 0.05,
        "max_batch_tokens": None,
    },
    "new_same": {
        "threads": 1,
        "answers_only": True,
        "group_by_length": False,
        "lora_dropout": 0.05,
        "max_batch_tokens": None,
    },
    "new": {
        "threads": 1,
        "answers_only": True,
        "group_by_length": True,
        "lora_dropout": 0.0,
        "max_batch_tokens": 384,
    },
    "new_all_cores": {
        "threads": None,
        "answers_only": True,
        "group_by_length": True,
        "lora_dropout": 0.0,
        "max_batch_tokens": 384,
    },
}


def matmul_gflops(threads: int) -> dict[str, float]:
    """fp32 GFLOP/s of F.linear on each SmolLM2-135M weight shape, plus the weighted mean."""
    torch.set_num_threads(threads)
    shapes = {"q_o": (576, 576, 2), "k_v": (192, 576, 2), "gate_up": (1536, 576, 2),
              "down": (576, 1536, 1), "lm_head": (49152, 576, 0)}  # fmt: skip
    result: dict[str, float] = {}
    flops_total = seconds_total = 0.0
    for name, (out_f, in_f, per_layer) in shapes.items():
        x, w = torch.randn(TOKENS, in_f), torch.randn(out_f, in_f)
        torch.nn.functional.linear(x, w)  # warm-up
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < MATMUL_SECONDS:
            torch.nn.functional.linear(x, w)
            n += 1
        seconds = time.perf_counter() - start
        flops = 2.0 * TOKENS * in_f * out_f * n
        result[name] = round(flops / seconds / 1e9, 2)
        weight = per_layer * 30 if per_layer else 1  # 30 decoder layers, one LM head
        flops_total += flops / n * weight
        seconds_total += seconds / n * weight
    result["model_weighted"] = round(flops_total / seconds_total / 1e9, 2)
    return result


def load_examples(tokenizer) -> list:
    frame = pl.read_csv(DATA).rename({"category": "label"}).sample(EXAMPLES, seed=SEED)
    return [
        encode_example(
            tokenizer,
            build_prompt(tokenizer, text, task="classification", form="short", label_set=None),
            label,
            max_length=MAX_LENGTH,
        )
        for text, label in zip(frame["text"], frame["label"], strict=True)
    ]


class Run:
    """One variant: its own LoRA model, optimizer, batch stream, timings and loss curve."""

    def __init__(self, name: str, settings: dict, examples: list, pad_id: int) -> None:
        from peft import LoraConfig, get_peft_model

        self.name, self.settings, self.examples, self.pad_id = name, settings, examples, pad_id
        torch.manual_seed(SEED)
        base = load_base_model("smollm2", device="cpu", for_training=True).model
        dropout = settings["lora_dropout"]
        lora = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM"
        )
        self.model = get_peft_model(base, lora)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=LR)
        self.rng = random.Random(SEED)
        self.lengths = [len(e.input_ids) for e in examples]
        self.queue: list[list[int]] = []
        self.steps: list[dict] = []
        torch.manual_seed(SEED)
        self.rng_state = torch.get_rng_state()  # each variant draws the same dropout masks

    def step(self) -> None:
        threads = self.settings["threads"]
        torch.set_num_threads(threads if threads is not None else usable_cores())
        if not self.queue:
            self.queue = epoch_batches(self.lengths, BATCH, self.rng,
                                       group_by_length=self.settings["group_by_length"])  # fmt: skip
        idx = self.queue.pop(0)
        torch.set_rng_state(self.rng_state)
        total = sum(supervised_count(self.examples[i]) for i in idx)
        tokens = padded = 0
        collate_s = forward_s = backward_s = 0.0
        losses = []
        for piece in split_by_tokens(idx, self.lengths, self.settings["max_batch_tokens"]):
            t0 = time.perf_counter()
            batch = collate([self.examples[i] for i in piece], pad_id=self.pad_id)
            tensors = {k: torch.tensor(v) for k, v in batch.items()}
            t1 = time.perf_counter()
            loss = causal_lm_loss(self.model, tensors, answers_only=self.settings["answers_only"])
            share = sum(supervised_count(self.examples[i]) for i in piece) / total
            t2 = time.perf_counter()
            (loss * share).backward()
            t3 = time.perf_counter()
            losses.append(loss.item() * share)
            tokens += int(tensors["attention_mask"].sum())
            padded += int(tensors["attention_mask"].numel())
            collate_s, forward_s, backward_s = collate_s + t1 - t0, forward_s + t2 - t1, backward_s + t3 - t2
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        self.rng_state = torch.get_rng_state()
        self.steps.append({
            "loss": round(sum(losses), 5), "tokens": tokens, "padded_tokens": padded, "examples": len(idx),
            "collate_s": collate_s, "forward_s": forward_s, "backward_s": backward_s, "optimizer_s": t4 - t3,
        })  # fmt: skip

    def summary(self) -> dict:
        total = {k: sum(s[k] for s in self.steps) for k in self.steps[0] if k != "loss"}
        seconds = total["collate_s"] + total["forward_s"] + total["backward_s"] + total["optimizer_s"]
        return {
            "settings": self.settings,
            "steps": len(self.steps),
            "seconds": round(seconds, 2),
            "tokens_per_second": round(total["tokens"] / seconds, 2),
            "examples_per_second": round(total["examples"] / seconds, 3),
            "padding_fraction": round(1 - total["tokens"] / total["padded_tokens"], 3),
            "time_split": {k[:-2]: round(total[k] / seconds, 3) for k in total if k.endswith("_s")},
            "mean_loss": round(sum(s["loss"] for s in self.steps) / len(self.steps), 4),
            "loss_curve": [s["loss"] for s in self.steps],
        }


def profile_step(run: Run) -> list[dict]:
    """Top operators of one training step by self CPU time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run.step()
    run.steps.pop()  # a profiled step is slower: keep it out of the timings
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_share": round(e.self_cpu_time_total / total, 3)} for e in events[:8]]


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux keeps that across exec, so a
    child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_peak(variant: str, steps: int) -> dict:
    """Peak RSS of a fresh process running ``steps`` steps of one variant (alone)."""
    cmd = [sys.executable, __file__, "--child", variant, "--steps", str(steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=2)
    parser.add_argument("--memory-steps", type=int, default=4)
    parser.add_argument("--child")
    args = parser.parse_args()

    loaded = load_base_model("smollm2", device="cpu", for_training=False)
    tokenizer = loaded.tokenizer
    examples = load_examples(tokenizer)
    if args.child:
        del loaded
        run = Run(args.child, VARIANTS[args.child], examples, tokenizer.pad_token_id)
        batches = epoch_batches(run.lengths, BATCH, run.rng, group_by_length=run.settings["group_by_length"])
        run.queue = sorted(batches, key=lambda b: -max(run.lengths[i] for i in b))  # worst case first
        for _ in range(args.steps):
            run.step()
        peak = peak_rss_bytes()
        seconds = run.summary()["seconds"]
        print(
            json.dumps(
                {"variant": args.child, "steps": args.steps, "peak_rss_bytes": peak, "seconds": seconds}
            )
        )
        return
    del loaded

    started = time.perf_counter()
    cores = usable_cores()
    load_start = os.getloadavg()
    ceiling = {"threads_1": matmul_gflops(1), f"threads_{cores}": matmul_gflops(cores)}
    runs = {name: Run(name, s, examples, tokenizer.pad_token_id) for name, s in VARIANTS.items()}
    # frozen base weights, the LM head counted once (tied to the embedding)
    n_params = sum(p.numel() for p in runs["old"].model.parameters() if not p.requires_grad)
    per_token = 4 * n_params  # forward 2N + backward (input gradients only) 2N
    best = max(c["model_weighted"] for c in ceiling.values()) * 1e9
    for _ in range(0, args.steps, args.chunk):
        for run in runs.values():
            for _ in range(args.chunk):
                run.step()
    profiles = {name: profile_step(run) for name, run in runs.items() if name in ("old", "new")}
    summaries = {name: run.summary() for name, run in runs.items()}
    del runs
    memory = {name: child_peak(name, args.memory_steps) for name in ("old", "new")}
    old, new = summaries["old"], summaries["new"]
    result = {
        "machine": {
            "usable_cores": cores,
            "torch": torch.__version__,
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },  # fmt: skip
        "setup": {
            "examples": EXAMPLES,
            "batch_size": BATCH,
            "lora": "r16 all-linear dropout 0.05",
            "steps_per_variant": args.steps,
            "interleave_chunk": args.chunk,
        },  # fmt: skip
        "matmul_gflops": ceiling,
        "flops_per_trained_token": per_token,
        "ceiling_tokens_per_second": round(best / per_token, 1),
        "profile_top_ops": profiles,
        "variants": summaries,
        "peak_rss": memory,
        "peak_rss_note": "child process per variant, its widest batches first (worst case)",
        "ratios_new_vs_old": {
            "tokens_per_second": round(new["tokens_per_second"] / old["tokens_per_second"], 2),
            "examples_per_second": round(new["examples_per_second"] / old["examples_per_second"], 2),
            "new_all_cores_tokens_per_second": round(
                summaries["new_all_cores"]["tokens_per_second"] / old["tokens_per_second"], 2
            ),
            "new_same_tokens_per_second": round(
                summaries["new_same"]["tokens_per_second"] / old["tokens_per_second"], 2
            ),
            "peak_rss": round(memory["new"]["peak_rss_bytes"] / memory["old"]["peak_rss_bytes"], 2),
            "loss_curve_max_abs_diff_new_same_vs_old": round(
                max(
                    abs(a - b)
                    for a, b in zip(summaries["new_same"]["loss_curve"], old["loss_curve"], strict=True)
                ),
                5,
            ),
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        json.dumps(
            {k: result[k] for k in ("ceiling_tokens_per_second", "ratios_new_vs_old", "peak_rss")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
