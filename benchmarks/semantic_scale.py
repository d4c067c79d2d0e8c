"""Semantic dedup throughput at 100k and 1M generated rows on this machine's 2 cores.

Rows are Banking77 train queries with 1-3 random word edits each (seeded), so nearly every row
is a distinct text. Each configuration runs in its own process (its peak RSS is its own):
embed the texts (no cache), then the neighbour search the pipeline would run
(``curation.semantic.search_neighbours`` with the ``semantic`` defaults: numpy below 20k rows,
faiss exact IndexFlatIP below 200k, IVF above), and the pairs at the dedup threshold.
At 100k the IVF search is also run and its pairs compared with the exact ones (recall).
MiniLM embeds ~100x slower than the static model: its 100k embedding time is extrapolated from
a measured slice, and its search runs on the real slice vectors tiled with noise.

    nice -n 10 env HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python benchmarks/semantic_scale.py

writes benchmarks/results/semantic_scale.json; ``--ivf-recall 1000000`` adds the IVF search's
recall against exact search on 5,000 of the 1M rows (key ``ivf_recall_1000000``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "semantic_scale.json"
MINILM_SLICE = 2000  # texts MiniLM really embeds; the rest of its 100k is extrapolated
NOISE = 0.05  # spread of the noise added to tiled slice vectors (MiniLM search stand-in)


def generated(rows: int, seed: int) -> list[str]:
    texts = pl.read_csv(ROOT / "data/raw/train.csv")["text"].to_list()
    rng = np.random.default_rng(seed)
    vocab = sorted({w for t in texts for w in t.split() if w.isalpha()})
    base = rng.integers(len(texts), size=rows)
    edits = rng.integers(1, 4, size=rows)
    picks = rng.integers(len(vocab), size=(rows, 3))
    where = rng.random(size=(rows, 3))
    out = []
    for i in range(rows):
        words = texts[base[i]].split()
        for e in range(edits[i]):
            pos = int(where[i, e] * (len(words) + 1))
            if e % 2 == 0 and pos < len(words):
                words[pos] = vocab[picks[i, e]]
            else:
                words.insert(pos, vocab[picks[i, e]])
        out.append(" ".join(words))
    return out


def peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    value = fn()
    return value, round(time.process_time() - c0, 1), round(time.perf_counter() - w0, 1)


def one(model: str, rows: int, seed: int, compare_ivf: bool) -> dict:
    from curation.semantic import index_neighbours, search_neighbours, semantic_pairs
    from flows.embed_cache import raw_embedder
    from schemas.semantic_params import SemanticParams

    cfg = SemanticParams(enabled=True, model=model, cache_dir=None)
    texts, _, gen_wall = timed(lambda: generated(rows, seed))
    embed = raw_embedder(cfg, base_dir=ROOT)
    embed(["warm up: load (or distil) the model outside the timing"])
    result: dict = {"model": model, "rows": rows, "generate_wall_s": gen_wall}
    if model == "minilm":
        part, cpu, wall = timed(lambda: embed(texts[:MINILM_SLICE]))
        result |= {
            "embed_measured_rows": MINILM_SLICE,
            "embed_cpu_s_measured": cpu,
            "embed_wall_s_measured": wall,
            "embed_cpu_s": round(cpu * rows / MINILM_SLICE),
            "embed_wall_s": round(wall * rows / MINILM_SLICE),
            "embed_extrapolated": True,
        }
        rng = np.random.default_rng(seed)
        reps = -(-rows // len(part))
        emb = np.tile(part, (reps, 1))[:rows] + rng.normal(0, NOISE, (rows, part.shape[1])).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    else:
        emb, cpu, wall = timed(lambda: embed(texts))
        result |= {"embed_cpu_s": cpu, "embed_wall_s": wall, "embed_extrapolated": False}
    result["embed_rows_per_cpu_s"] = round(
        (MINILM_SLICE if model == "minilm" else rows) / max(result.get("embed_cpu_s_measured", cpu), 1e-9)
    )
    k = max(cfg.neighbours, cfg.outlier_k)
    knn, cpu, wall = timed(lambda: search_neighbours(emb, emb, k=k, cfg=cfg, exclude_self=True))
    kind = "numpy" if rows < cfg.index_min_rows else ("ivf" if rows >= cfg.ivf_min_rows else "flat")
    pairs, _ = semantic_pairs(emb, threshold=cfg.duplicate_threshold, k=cfg.neighbours, knn=knn)
    result |= {
        "search": kind,
        "search_cpu_s": cpu,
        "search_wall_s": wall,
        "pairs_at_duplicate_threshold": len(pairs),
        "search_threads": cfg.search_threads,
    }
    if compare_ivf and kind != "ivf":
        ivf, cpu, wall = timed(
            lambda: index_neighbours(
                emb, emb, k=k, kind="ivf", exclude_self=True, probe=cfg.ivf_probe, seed=cfg.ivf_seed
            )
        )
        exact = {tuple(p) for p in pairs.tolist()}
        approx = {
            tuple(p)
            for p in semantic_pairs(emb, threshold=cfg.duplicate_threshold, k=10, knn=ivf)[0].tolist()
        }
        loose = {tuple(p) for p in semantic_pairs(emb, threshold=0.9, k=10, knn=knn)[0].tolist()}
        loose_ivf = {tuple(p) for p in semantic_pairs(emb, threshold=0.9, k=10, knn=ivf)[0].tolist()}
        result["ivf_same_rows"] = {
            "search_cpu_s": cpu,
            "search_wall_s": wall,
            "pair_recall_vs_exact": round(len(exact & approx) / max(len(exact), 1), 4),
            "pair_recall_vs_exact_at_0.9": round(len(loose & loose_ivf) / max(len(loose), 1), 4),
            "extra_pairs": len(approx - exact),
        }
    result["peak_rss_gb"] = peak_rss_gb()
    result["load_average_1m"] = round(os.getloadavg()[0], 1)
    result["cfg"] = {
        f: getattr(cfg, f)
        for f in (
            "index_min_rows",
            "ivf_min_rows",
            "ivf_lists",
            "ivf_probe",
            "neighbours",
            "duplicate_threshold",
        )
    }
    return result


def ivf_sample_recall(rows: int, seed: int, queries: int) -> dict:
    """IVF against exact search at ``rows`` (too slow to run exactly for all rows): the first
    ``queries`` rows' neighbours both ways, and the pairs among them at two thresholds."""
    from curation.semantic import index_neighbours
    from flows.embed_cache import raw_embedder
    from schemas.semantic_params import SemanticParams

    cfg = SemanticParams(enabled=True, model="static", cache_dir=None)
    emb = raw_embedder(cfg, base_dir=ROOT)(generated(rows, seed))
    k = cfg.neighbours
    common = dict(k=k + 1, exclude_self=False, probe=cfg.ivf_probe, seed=cfg.ivf_seed)
    # queries against the whole base; the row itself is then dropped from both answers
    (ivf, ivf_s), ivf_cpu, _ = timed(lambda: index_neighbours(emb[:queries], emb, kind="ivf", **common))
    (flat, flat_s), flat_cpu, _ = timed(lambda: index_neighbours(emb[:queries], emb, kind="flat", **common))
    out: dict = {"rows": rows, "queries": queries, "ivf_cpu_s": ivf_cpu, "exact_cpu_s": flat_cpu}
    for threshold in (cfg.duplicate_threshold, 0.9):
        found = []
        for idx, sims in ((ivf, ivf_s), (flat, flat_s)):
            rows_ = np.repeat(np.arange(queries), idx.shape[1])
            keep = (sims.ravel() >= threshold) & (idx.ravel() != rows_) & (idx.ravel() >= 0)
            found.append(set(zip(rows_[keep].tolist(), idx.ravel()[keep].tolist(), strict=True)))
        approx, exact = found
        out[f"pair_recall_at_{threshold}"] = round(len(approx & exact) / max(len(exact), 1), 4)
        out[f"exact_pairs_at_{threshold}"] = len(exact)
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "ROWS"))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--runs", default="static:100000,static:1000000,minilm:100000")
    parser.add_argument(
        "--ivf-recall", type=int, metavar="ROWS", help="only: IVF vs exact on 5,000 queries at ROWS rows"
    )
    args = parser.parse_args()
    if args.ivf_recall:
        results = json.loads(OUT.read_text()) if OUT.is_file() else {}
        results[f"ivf_recall_{args.ivf_recall}"] = part = ivf_sample_recall(args.ivf_recall, args.seed, 5000)
        print(part)
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        return
    if args.one:
        model, rows = args.one[0], int(args.one[1])
        print(json.dumps(one(model, rows, args.seed, compare_ivf=rows <= 200_000)))
        return
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    runs = results.setdefault("runs", {})
    for spec in args.runs.split(","):
        model, rows = spec.split(":")
        proc = subprocess.run(
            [sys.executable, __file__, "--one", model, rows, "--seed", str(args.seed)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{spec} failed (exit {proc.returncode})")
        runs[spec] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(spec, runs[spec])
        results["cores"] = os.cpu_count()
        results["command"] = (
            "nice -n 10 env HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python benchmarks/semantic_scale.py"
        )
        OUT.write_text(json.dumps(results, indent=2) + "\n")  # after each run: a later failure keeps it
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
