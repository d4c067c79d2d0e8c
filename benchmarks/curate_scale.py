"""The whole `curagate curate` pipeline (run_curation + write_outputs) at 10k, 100k, 1M rows.

Each size runs in its own child process (so each gets its own peak RSS) on generated JSONL:
Banking77-like train rows (benchmarks/synth.py) with 10% near copies, 2% label flips and
0.5% test leaks, and the real Banking77 test split. Per-stage wall seconds come from
``CurationRun.stage_seconds``; per-stage peak RSS from a 50 ms sampler over the stage's
interval. Writes benchmarks/results/curate_scale.json and curate_scale.png.

    .venv/bin/python benchmarks/curate_scale.py --sizes 10000 100000 1000000 \\
        --set noise.features='[hashed]'

``--cli`` measures the real command instead: the data are written by one child, then
``curagate curate`` (``python -m flows.cli curate``) runs as another, sampled every 0.2 s
for its RSS (with its children); CPU is the child's user + system time. Results go to
``--out`` (``benchmarks/results/curate_cli.json`` by default with ``--cli``):

    .venv/bin/python benchmarks/curate_scale.py --cli --sizes 1000000 10000000 \\
        --set noise.features='[hashed]'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synth import generated_params  # noqa: E402  (after the path: run as a script)

RESULTS = ROOT / "benchmarks" / "results"


def write_data(n_rows: int, seed: int, tmp: Path) -> tuple[Path, Path, set[str]]:
    """Train and test JSONL files, and the ids of the train rows whose label was flipped."""
    from benchmarks.synth import generate, load_banking

    labels = sorted(load_banking()["label"].unique().to_list())
    test = load_banking("test")
    data = generate(n_rows, seed=seed)
    rng = np.random.default_rng(seed + 1)
    texts, gold = list(data.texts), list(data.labels)
    given = list(gold)
    flipped = rng.choice(len(texts), size=int(0.02 * len(texts)), replace=False)
    for i in flipped:
        given[i] = labels[(labels.index(gold[i]) + 1 + int(rng.integers(len(labels) - 1))) % len(labels)]
    test_texts, test_labels = test["text"].to_list(), test["label"].to_list()
    for j in rng.choice(len(test_texts), size=min(len(test_texts), int(0.005 * len(texts))), replace=False):
        texts.append(test_texts[j])
        given.append(test_labels[j])
    train_path, test_path = tmp / "train.jsonl", tmp / "test.jsonl"
    with train_path.open("w") as f:
        for i, (t, lab) in enumerate(zip(texts, given, strict=True)):
            f.write(json.dumps({"id": f"r{i}", "text": t, "label": lab}) + "\n")
    with test_path.open("w") as f:
        for j, (t, lab) in enumerate(zip(test_texts, test_labels, strict=True)):
            f.write(json.dumps({"id": f"t{j}", "text": t, "label": lab}) + "\n")
    return train_path, test_path, {f"r{i}" for i in flipped}


def noise_quality(removed: pl.DataFrame, flags: pl.DataFrame, flipped: set[str]) -> dict:
    """Precision/recall of the label-issue flags on the planted flips that reached noise
    detection (flipped rows removed earlier as copies or leaks are not counted)."""
    removed_before = removed.filter(pl.col("stage").is_in(["dedup", "decontam"]))["id"]
    eligible = flipped - set(removed_before.to_list())
    flagged = set(flags.filter(pl.col("issue") == "label_issue")["id"].to_list())
    tp = len(flagged & eligible)
    precision = tp / len(flagged) if flagged else 0.0
    recall = tp / len(eligible) if eligible else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {
        "planted_flips": len(eligible),
        "flagged": len(flagged),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def one_size(n_rows: int, seed: int, overrides: list[str]) -> dict:
    """Generate, curate and write one size; returns timings and memory (runs in a child)."""
    from flows.pipeline import run_curation, write_run
    from schemas.params import params_from_dict

    raw = generated_params(overrides)
    params = params_from_dict({k: v for k, v in raw.items() if k != "scale"}, base_dir=ROOT)
    proc = psutil.Process()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            samples.append((time.perf_counter(), proc.memory_info().rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        train_path, test_path, flipped = write_data(n_rows, seed, tmp)
        t_gen = time.perf_counter() - t0
        t1, c1 = time.perf_counter(), time.process_time()
        run = run_curation(train_path, test_path, params=params, show_progress=False)
        t2 = time.perf_counter()
        write_run(run, tmp / "out")
        t3, c3 = time.perf_counter(), time.process_time()
    stop.set()
    sampler.join()
    bounds, start = {}, t1
    for name, secs in run.stage_seconds.items():
        bounds[name] = (start, start + secs)
        start += secs
    bounds["write_outputs"] = (t2, t3)
    stages = {}
    for name, (lo, hi) in bounds.items():
        peak = max((r for t, r in samples if lo <= t <= hi + 0.05), default=0)
        secs = run.stage_seconds.get(name, round(hi - lo, 3))
        stages[name] = {"seconds": secs, "peak_rss_mib": round(peak / 2**20, 1)}
    return {
        "rows": n_rows,
        "input_train_rows": run.metrics.get("input_train_rows"),
        "curated_train_rows": run.metrics.get("curated_train_rows"),
        "generate_seconds": round(t_gen, 2),
        "curate_seconds": round(t3 - t1, 2),
        "curate_cpu_seconds": round(c3 - c1, 2),
        "stages": stages,
        "peak_rss_mib": round(max((r for _, r in samples), default=0) / 2**20, 1),
        "noise_quality": noise_quality(run.frame("removed"), run.frame("flags"), flipped)
        if "noise" in run.stages_run
        else None,
        "overrides": overrides,
    }


STAGE_LINE = re.compile(
    r"(?P<stage>[a-z_]+): .* \((?P<seconds>[0-9.]+) s, peak RSS so far (?P<peak>[0-9.]+) GiB\)$"
)


def cli_params(tmp: Path, train: Path, test: Path, overrides: list[str]) -> Path:
    """The repository's params.yaml with the generated files and ``overrides`` applied."""
    raw = generated_params(overrides)
    raw["data"]["train"], raw["data"]["test"] = str(train), str(test)
    raw["data"]["extra_train"] = []
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _sampled_child(cmd: list[str], log_path: Path) -> dict:
    """Run ``cmd`` with its log in ``log_path``; wall and CPU seconds, peak RSS of its tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        # a wide console: rich would wrap the per-stage log lines that are parsed afterwards
        env = {**os.environ, "COLUMNS": "400"}
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        proc, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            except psutil.Error:  # the child ended between poll and sample
                rss = 0
            peak = max(peak, rss)
            time.sleep(0.2)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "returncode": child.returncode,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "peak_rss_mib": round(peak / 2**20, 1),
    }


def cli_size(n_rows: int, seed: int, overrides: list[str]) -> dict:
    """Write the data (one child), then time and sample ``curagate curate`` (another)."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("CURATE_SCALE_TMP")) as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--write", str(n_rows), "--seed", str(seed), "--dir", str(tmp)]
        subprocess.run(cmd, check=True)
        t_gen = time.perf_counter() - t0
        train, test = tmp / "train.jsonl", tmp / "test.jsonl"
        flipped = set((tmp / "flipped.txt").read_text().split())
        params = cli_params(tmp, train, test, overrides)
        cmd = [
            sys.executable,
            "-m",
            "flows.cli",
            "curate",
            "--params",
            str(params),
            "--out",
            str(tmp / "out"),
        ]
        measured = _sampled_child(cmd + ["--quiet"], tmp / "curate.log")
        log_text = (tmp / "curate.log").read_text(errors="replace")
        if measured["returncode"] != 0:
            print(log_text[-3000:], file=sys.stderr)
            raise SystemExit(f"curagate curate failed at {n_rows} rows")
        stages = {}
        for line in log_text.splitlines():
            if (found := STAGE_LINE.search(line.strip())) and found["stage"] not in stages:
                stages[found["stage"]] = {
                    "seconds": float(found["seconds"]),
                    "peak_rss_so_far_gib": float(found["peak"]),
                }
        out = tmp / "out"
        metrics = json.loads((out / "quality.json").read_text())
        flags = pl.read_parquet(out / "flags.parquet") if (out / "flags.parquet").exists() else None
        removed = pl.read_parquet(out / "removed.parquet")
        quality = noise_quality(removed, flags, flipped) if flags is not None else None
        return {
            "rows": n_rows,
            "input_bytes": train.stat().st_size,
            "generate_seconds": round(t_gen, 2),
            **{k: v for k, v in measured.items() if k != "returncode"},
            "stages": stages,
            "input_train_rows": metrics.get("input_train_rows"),
            "curated_train_rows": metrics.get("curated_train_rows"),
            "removed_rows": removed.height,
            "noise_quality": quality,
            "overrides": overrides,
        }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results[0]["stages"])
    rows = [r["rows"] for r in results]
    totals = np.array([sum(v["seconds"] for v in r["stages"].values()) for r in results])
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.6))
    ticks = [f"{n:,}" for n in rows]
    bottom = np.zeros(len(rows))
    # shares, not seconds: a stacked bar on a log axis would misstate the stages' sizes
    for name in names:
        secs = np.array([r["stages"].get(name, {}).get("seconds", 0.0) for r in results])
        ax_t.bar(ticks, 100 * secs / totals, bottom=bottom, label=name)
        bottom += 100 * secs / totals
    for x, total in enumerate(totals):
        ax_t.text(x, 101, f"{total:.0f} s", ha="center", va="bottom", fontsize=8)
    ax_t.set_ylim(0, 112)
    ax_t.set_ylabel("% of wall time by stage")
    ax_t.set_xlabel("train rows (total wall seconds on top)")
    ax_t.legend(fontsize=7, loc="lower left")
    ax_m.plot(rows, [r["peak_rss_mib"] / 1024 for r in results], marker="o")
    ax_m.set_xscale("log")
    ax_m.set_xlabel("train rows")
    ax_m.set_ylabel("peak RSS (GiB)")
    fig.suptitle("curagate curate: time and memory by size (2 shared cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="params override a.b=value"
    )
    parser.add_argument("--cli", action="store_true", help="time the real `curagate curate` process")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--write", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.write:
        _, _, flipped = write_data(args.write, args.seed, args.dir)
        (args.dir / "flipped.txt").write_text("\n".join(sorted(flipped)) + "\n")
        return
    if args.cli:
        out = args.out or RESULTS / "curate_cli.json"
        done = json.loads(out.read_text()) if out.exists() else {"sizes": []}
        for n in args.sizes:
            result = cli_size(n, args.seed, args.overrides)
            print(json.dumps(result), flush=True)
            done["sizes"] = [r for r in done["sizes"] if r["rows"] != n] + [result]
            done["sizes"].sort(key=lambda r: r["rows"])
            done["note"] = "2 shared cores; the whole `curagate curate` process, sampled every 0.2 s"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(done, indent=2) + "\n")
        plot(done["sizes"], out.with_suffix(".png"))
        return
    args.out = args.out or RESULTS / "curate_scale.json"
    if args.one:
        print(json.dumps(one_size(args.one, args.seed, args.overrides)))
        return
    results = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--seed", str(args.seed)]
        cmd += [f"--set={o}" for o in args.overrides]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"size {n} failed")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        results.append(result)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"sizes": results, "note": "2 shared cores"}, indent=2) + "\n")
    growth = {
        f"{a['rows']}->{b['rows']}": round(b["curate_seconds"] / a["curate_seconds"], 2)
        for a, b in zip(results, results[1:], strict=False)
    }
    args.out.write_text(
        json.dumps({"sizes": results, "time_growth": growth, "note": "2 shared cores"}, indent=2) + "\n"
    )
    plot(results, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
