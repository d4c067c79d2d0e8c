"""Near-duplicate removal end to end: datasketch, rensa and the `curagate dedup` CLI.

One seeded corpus (benchmarks/synth.py: Banking77-like spliced queries plus 10% near copies
made with curation/corrupt.py's edits) is written once as JSONL. Each tool then runs in its
own child process, from reading the JSONL to kept/removed rows:

- datasketch: polars normalisation (lower case, punctuation and spaces collapsed), character
  5-gram sets, ``MinHash.bulk``, ``MinHashLSH(threshold=0.8)`` insert + query, union-find
  (the earliest row represents its cluster);
- rensa 0.5: the same normalisation and shingles, ``RMinHashDeduplicator(threshold=0.8,
  use_lsh=True)`` over the rows in order (a row is dropped when it matches a kept one);
- curagate: ``python -m flows.cli dedup`` (ingest, validate, dedup) as a subprocess; its time
  is the whole process, start-up included.

Scores (benchmarks/synth.py ``score``): recall = injected copies removed with a member of
their own family kept; other rows removed = removed rows that are not such a copy, over the
rows that should stay. The machine is shared: compare tools within one run.

    .venv/bin/python benchmarks/peers.py --rows 200000
    .venv/bin/python benchmarks/peers.py --rows 1000000 --skip datasketch
    .venv/bin/python benchmarks/peers.py --rows 200000 --before /tmp/before  # + another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "peers.json"
PEER_THRESHOLD = 0.8  # the peers' LSH/similarity threshold (their documented usual setting)
NUM_PERM = 128
NGRAM = 5
SEED = 1
TOOLS = ("datasketch", "rensa", "curagate")


def _shingle_sets(path: Path) -> list[list[str]]:
    """Read the JSONL, normalise (lower case, punctuation and spaces collapsed), 5-grams."""
    texts = (
        pl.read_ndjson(path, schema={"id": pl.String, "text": pl.String, "label": pl.String})
        .select(
            pl.col("text")
            .str.to_lowercase()
            .str.replace_all(r"[\p{P}\p{S}]+", " ")
            .str.replace_all(r"\s+", " ")
            .str.strip_chars()
        )["text"]
        .to_list()
    )
    return [[t[i : i + NGRAM] for i in range(len(t) - NGRAM + 1)] or [t] for t in texts]


def run_datasketch(path: Path) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    sets = [[s.encode() for s in doc] for doc in _shingle_sets(path)]
    mins = MinHash.bulk(sets, num_perm=NUM_PERM, seed=SEED)
    lsh = MinHashLSH(threshold=PEER_THRESHOLD, num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for i, m in enumerate(mins):
            session.insert(i, m, check_duplication=False)
    parent = list(range(len(mins)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(mins):
        for j in sorted(lsh.query(m)):
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    return np.fromiter((find(i) for i in range(len(mins))), dtype=np.int64, count=len(mins))


def run_rensa(path: Path) -> tuple[np.ndarray, float]:
    """(representative per row, seconds of the timed part); representatives of dropped rows
    are looked up after the clock stops (the dedup itself only says keep / drop)."""
    from rensa import RMinHash, RMinHashDeduplicator

    t0 = time.perf_counter()
    docs = _shingle_sets(path)
    dedup = RMinHashDeduplicator(threshold=PEER_THRESHOLD, num_perm=NUM_PERM, use_lsh=True, seed=SEED)
    keep = dedup.add_pairs((str(i), doc) for i, doc in enumerate(docs))
    seconds = time.perf_counter() - t0
    rep = np.arange(len(docs))
    dropped = [i for i, k in enumerate(keep) if not k]
    sketches = RMinHash.from_token_sets([docs[i] for i in dropped], num_perm=NUM_PERM, seed=SEED)
    for i, m in zip(dropped, sketches, strict=True):
        found = sorted(int(k) for k in dedup.get_duplicates(m))
        rep[i] = found[0] if found else i
    return rep, seconds


def child(tool: str, path: Path, out: Path) -> None:
    t0 = time.perf_counter()
    if tool == "rensa":
        rep, seconds = run_rensa(path)
    else:
        rep = run_datasketch(path)
        seconds = time.perf_counter() - t0
    np.save(out, rep)
    print(json.dumps({"seconds": round(seconds, 3)}))


def write_corpus(n_rows: int, seed: int, tmp: Path):
    from benchmarks.synth import generate

    data = generate(n_rows, seed=seed)
    path = tmp / "train.jsonl"
    pl.DataFrame(
        {"id": [f"r{i}" for i in range(len(data.texts))], "text": data.texts, "label": data.labels}
    ).write_ndjson(path)
    return data, path


def curagate_params(tmp: Path, overrides: list[str]) -> Path:
    from benchmarks.synth import generated_params

    raw = generated_params(overrides)
    raw["data"]["test"] = None  # dedup needs no test split
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_curagate(
    path: Path, params: Path, tmp: Path, n: int, root: Path = ROOT
) -> tuple[np.ndarray, float, float]:
    """``curagate dedup`` of the checkout at ``root`` (another one: ``--before``)."""
    out = tmp / f"curated-{root.name}"
    cmd = [sys.executable, "-m", "flows.cli", "dedup", "--train", str(path), "--params", str(params)]
    cmd += ["--out", str(out), "--quiet"]
    done, seconds, cpu = _timed_child(cmd, cwd=root)
    if done.returncode != 0:
        raise SystemExit(f"curagate dedup failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    removed = pl.read_parquet(out / "removed.parquet").filter(pl.col("stage") == "dedup")
    rep = np.arange(n)
    rows = removed["id"].str.slice(1).cast(pl.Int64).to_numpy()
    rep[rows] = removed["duplicate_of"].str.slice(1).cast(pl.Int64).to_numpy()
    return rep, seconds, cpu


def _timed_child(cmd: list[str], cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a child; (result, wall seconds, CPU seconds of the child: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the child imports that checkout's code
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, wall, cpu


def _commit(root: Path) -> str:
    """The commit a checkout is at (for the record of a --before run)."""
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or str(root)


def scores(data, rep: np.ndarray) -> dict:
    from benchmarks.synth import score

    s = score(data, rep)
    families = len(np.unique(data.family))
    correct = round(s["recall"] * s["should_remove"])
    return {
        "recall": round(s["recall"], 4),
        "other_rows_removed": round((s["removed"] - correct) / families, 5),
        "removed": s["removed"],
        "should_remove": s["should_remove"],
        "recall_by_edit": {k: round(v, 4) for k, v in s["recall_by_edit"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=TOOLS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="curagate a.b=value")
    parser.add_argument("--label", default=None, help="key of this run in the results file")
    parser.add_argument("--child", choices=("datasketch", "rensa"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout (e.g. `git worktree add /tmp/before <commit>`): its `curagate dedup` "
        "runs in the same run as tool curagate_before",
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.data.with_suffix(f".{args.child}.npy"))
        return
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data, path = write_corpus(args.rows, args.seed, tmp)
        n = len(data.texts)
        tools = [*TOOLS, *(["curagate_before"] if args.before else [])]
        for tool in tools:
            if tool in args.skip:
                continue
            if tool.startswith("curagate"):
                params = curagate_params(tmp, args.overrides)
                root = args.before.resolve() if tool == "curagate_before" else ROOT
                rep, wall, cpu = run_curagate(path, params, tmp, n, root)
                entry = {"seconds": round(wall, 3), "process_seconds": round(wall, 3)}
            else:
                cmd = [sys.executable, __file__, "--child", tool, "--data", str(path)]
                done, wall, cpu = _timed_child(cmd)
                if done.returncode != 0:
                    raise SystemExit(f"{tool} failed:\n{done.stderr[-3000:]}")
                inner = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
                rep = np.load(path.with_suffix(f".{tool}.npy"))
                entry = {"seconds": inner, "process_seconds": round(wall, 3)}
            entry["process_cpu_seconds"] = round(cpu, 3)
            entry["docs_per_s"] = round(n / entry["seconds"])
            entry["docs_per_process_cpu_s"] = round(n / cpu)
            entry.update(scores(data, rep))
            results[tool] = entry
            print(tool, json.dumps(entry), flush=True)
    label = args.label or f"{args.rows}"
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    merged = {k: v for k, v in old.get(label, {}).items() if k in TOOLS}  # tools not rerun
    results = {**merged, **results}
    for mine_name in ("curagate", "curagate_before"):
        for peer in ("rensa", "datasketch"):
            if peer in results and mine_name in results:
                mine, theirs = results[mine_name], results[peer]
                keys = ("process_seconds", "process_cpu_seconds")
                results[f"{mine_name}_vs_{peer}"] = {k: round(theirs[k] / mine[k], 2) for k in keys}
    old[label] = {
        "rows": args.rows,
        "seed": args.seed,
        "curagate_overrides": args.overrides,
        **({"curagate_before_checkout": _commit(args.before)} if args.before else {}),
        "peer_threshold": PEER_THRESHOLD,
        "note": "2 shared cores; seconds: datasketch/rensa from reading the JSONL to kept/removed "
        "inside their process, curagate the whole CLI process (start-up, ingest, validate, dedup); "
        "process_*: each tool's whole child process (wall, and user+system CPU, which the load "
        "of other processes on the machine inflates less)",
        "load_average_at_end": list(os.getloadavg()),
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
