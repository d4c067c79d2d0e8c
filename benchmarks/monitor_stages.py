"""What the DVC predict_baseline, predict and monitor stages add to the demo's `dvc repro`.

Runs each stage's command from dvc.yaml (params.yaml's values templated in, as DVC does) as a
child process, and records its CPU seconds (user + system, children's rusage) and wall time.
The adapter is an untrained LoRA of the demo's shape (r=16 on all linear layers of
SmolLM2-135M, the 77 Banking77 labels), made in seconds: prediction cost depends on the
shape and the label trie, not on what was learnt (benchmarks/monitor.py measured the same).

Needs a curated directory (data/curated: `curagate demo-data` + `curagate curate`).

    python benchmarks/monitor_stages.py     # -> benchmarks/results/monitor_stages.json
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".cache" / "monitor_stages"
STAGES = ("predict_baseline", "predict", "monitor")


def untrained_adapter(model_dir: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from training.model import load_base_model

    torch.manual_seed(0)
    labels = json.loads((ROOT / "data" / "raw" / "categories.json").read_text())
    loaded = load_base_model("smollm2", device="cpu", for_training=False)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(loaded.model, lora).save_pretrained(model_dir / "adapter")
    record = {"task": "classification", "prompt_form": "short", "label_set": labels,
              "params": {"base_model": "smollm2"}}  # fmt: skip
    (model_dir / "training.json").write_text(json.dumps(record))


def stage_command(stage: dict, params: dict) -> list[str]:
    """The stage's cmd with ${section.key} filled from params.yaml, models/ and reports/ moved
    under WORK (the checkout's own are left alone)."""
    cmd = stage["cmd"]
    for section, values in params.items():
        if isinstance(values, dict):
            for key, value in values.items():
                cmd = cmd.replace(f"${{{section}.{key}}}", str(value))
    argv = shlex.split(cmd)
    moved = {"models": str(WORK / "models")}
    argv = [moved.get(a, a) for a in argv]
    return [a.replace("reports/monitor", str(WORK / "reports" / "monitor")) for a in argv]


def main() -> None:
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if not (WORK / "models" / "training.json").is_file():
        untrained_adapter(WORK / "models")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    results = {}
    for name in STAGES:
        argv = stage_command(pipeline["stages"][name], params)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        results[name] = {"cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1),
                         "command": " ".join(argv[1:]).replace(f"{ROOT}/", "")}  # fmt: skip
        print(
            name, results[name]["cpu_seconds"], "CPU-s", results[name]["wall_seconds"], "s wall", flush=True
        )
    monitor = json.loads((WORK / "reports" / "monitor" / "monitor.json").read_text())
    out = {
        "stages": results,
        "rows": {"baseline": params["monitor"]["baseline_rows"], "traffic": monitor["rows"]},
        "monitor_verdict": monitor["verdict"],
        "monitor_failed_checks": monitor["failed_checks"],
        "total_cpu_seconds": round(sum(r["cpu_seconds"] for r in results.values()), 1),
        "total_wall_seconds": round(sum(r["wall_seconds"] for r in results.values()), 1),
        "adapter": "untrained LoRA r=16 all-linear (random B), SmolLM2-135M, fp32, predict.threads 1",
        "load_average_at_end": os.getloadavg(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    path = ROOT / "benchmarks" / "results" / "monitor_stages.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("total_cpu_seconds", "total_wall_seconds", "monitor_verdict")}))


if __name__ == "__main__":
    main()
