"""Near-duplicate removal: the plain datasketch recipe vs curagate's drop_duplicates.

Both run in this one process on the same seeded Banking77-like rows (benchmarks/synth.py:
spliced queries plus 10% near copies made with curation/corrupt.py's edits):

(a) datasketch: normalise, ``MinHash.bulk`` over character 5-gram sets, ``MinHashLSH``
    (threshold = dedup.threshold) insert + query, union-find; the earliest row of a cluster
    is kept.
(b) curagate: ``drop_duplicates`` (exact + LSH at dedup.lsh_threshold + verification).

The machine is shared, so the ratio (measured here, back to back) matters more than the
absolute numbers; CPU seconds are reported beside wall seconds.

    .venv/bin/python benchmarks/dedup.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from datasketch import MinHash, MinHashLSH

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.synth import as_train_frame, generate, normalized, score  # noqa: E402
from curation.dedup import drop_duplicates  # noqa: E402
from curation.minhash import shingles, signatures  # noqa: E402
from schemas.params import DedupParams  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "dedup.json"


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> PeakRSS:
        self._proc = psutil.Process()
        self.start = self._proc.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    with PeakRSS() as mem:
        result = fn()
    return result, {
        "wall_s": round(time.perf_counter() - wall, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "peak_rss_mib": round(mem.peak / 2**20, 1),
        "rss_growth_mib": round((mem.peak - mem.start) / 2**20, 1),
    }


def datasketch_recipe(texts: list[str], cfg: DedupParams) -> np.ndarray:
    """The usual datasketch dedup: MinHash.bulk, MinHashLSH insert/query, union-find."""
    norm = normalized(texts)
    sets = [shingles(t, kind=cfg.shingle, ngram=cfg.ngram) for t in norm]
    mins = MinHash.bulk(sets, num_perm=cfg.num_perm, seed=cfg.seed)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    with lsh.insertion_session() as session:
        for i, m in enumerate(mins):
            session.insert(i, m, check_duplication=False)
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(mins):
        for j in lsh.query(m):
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)  # the earliest row represents the cluster
    return np.fromiter((find(i) for i in range(len(texts))), dtype=np.int64, count=len(texts))


def curagate_recipe(texts: list[str], labels: list[str], cfg: DedupParams) -> np.ndarray:
    frame = as_train_frame_from(texts, labels)
    result = drop_duplicates(frame, cfg=cfg)
    rep = np.arange(len(texts))
    removed = result.removed
    rows = removed["id"].str.slice(1).cast(int).to_numpy()
    reps = removed["duplicate_of"].str.slice(1).cast(int).to_numpy()
    rep[rows] = reps
    return rep


def as_train_frame_from(texts: list[str], labels: list[str]):
    from benchmarks.synth import Synth

    return as_train_frame(Synth(texts=texts, labels=labels, family=np.zeros(0), edit=[]))


def signature_rate(texts: list[str], cfg: DedupParams) -> dict:
    norm = sorted(set(normalized(texts)))
    cpu = time.process_time()
    wall = time.perf_counter()
    signatures(norm, kind=cfg.shingle, ngram=cfg.ngram, num_perm=cfg.num_perm, seed=cfg.seed)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    ref_cpu = time.process_time()
    sample = norm[:5000]
    MinHash.bulk(
        [shingles(t, kind=cfg.shingle, ngram=cfg.ngram) for t in sample], num_perm=cfg.num_perm, seed=cfg.seed
    )
    ref_cpu = time.process_time() - ref_cpu
    return {
        "docs": len(norm),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "docs_per_s": round(len(norm) / wall),
        "docs_per_cpu_s": round(len(norm) / cpu),
        "datasketch_bulk_docs_per_cpu_s": round(len(sample) / ref_cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cfg = DedupParams()
    data = generate(args.rows, seed=args.seed)
    print(f"{len(data.texts)} rows, {int((np.asarray(data.edit) != '').sum())} injected copies", flush=True)
    sig = signature_rate(data.texts, cfg)
    print("signatures:", sig, flush=True)
    cur_rep, cur_t = timed(lambda: curagate_recipe(data.texts, data.labels, cfg))
    print("curagate:", cur_t, flush=True)
    ds_rep, ds_t = timed(lambda: datasketch_recipe(data.texts, cfg))
    print("datasketch:", ds_t, flush=True)
    n = len(data.texts)
    result = {
        "rows": n,
        "injected_copies": int((np.asarray(data.edit) != "").sum()),
        "seed": args.seed,
        "params": {
            "shingle": cfg.shingle,
            "ngram": cfg.ngram,
            "num_perm": cfg.num_perm,
            "datasketch_lsh_threshold": cfg.threshold,
            "curagate_lsh_threshold": cfg.lsh_threshold,
            "threshold": cfg.threshold,
            "max_char_edits": cfg.max_char_edits,
            "word_order": cfg.word_order,
        },
        "datasketch": {
            **ds_t,
            "docs_per_s": round(n / ds_t["wall_s"]),
            "docs_per_cpu_s": round(n / ds_t["cpu_s"]),
            **score(data, ds_rep),
        },
        "curagate": {
            **cur_t,
            "docs_per_s": round(n / cur_t["wall_s"]),
            "docs_per_cpu_s": round(n / cur_t["cpu_s"]),
            **score(data, cur_rep),
        },
        "speedup_wall": round(ds_t["wall_s"] / cur_t["wall_s"], 2),
        "speedup_cpu": round(ds_t["cpu_s"] / cur_t["cpu_s"], 2),
        "signatures": sig,
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "note": "2 shared cores",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_wall", "speedup_cpu")}))
    for k in ("datasketch", "curagate"):
        r = result[k]
        print(
            k,
            r["docs_per_s"],
            "docs/s",
            "recall",
            round(r["recall"], 4),
            "precision",
            round(r["precision"], 4),
        )


if __name__ == "__main__":
    main()
