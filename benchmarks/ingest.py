"""Ingest speed: the line-by-line parser (commit c877726) vs today's (polars for the clean
majority), in one process, on generated Banking77-like JSON Lines and CSV files.

Both parse the same bytes (``parse_input``: canonical rows + ids + text hashes); the result
frames must be equal (``DataFrame.equals``), and the script says whether they are.

    python benchmarks/ingest.py --sizes 200000 1000000 --out benchmarks/results/ingest.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synth import generate  # noqa: E402
from curation.ingest import parse_input  # noqa: E402
from schemas.params import ColumnMap, DataParams  # noqa: E402

BASELINE = "c877726"  # the last commit with the line-by-line parser only


def baseline_module():
    """curation/ingest.py as it was at BASELINE, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:curation/ingest.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path("/tmp") / f"curagate_ingest_{BASELINE}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"ingest_{BASELINE}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def files(n_rows: int, seed: int) -> dict[str, bytes]:
    s = generate(n_rows, seed=seed)
    jsonl = "".join(
        json.dumps({"id": f"r{i}", "text": t, "label": lab}) + "\n"
        for i, (t, lab) in enumerate(zip(s.texts, s.labels, strict=True))
    ).encode()
    buffer = io.StringIO()
    pl.DataFrame({"text": s.texts, "category": s.labels}).write_csv(buffer)  # Banking77's CSV layout
    return {"jsonl": jsonl, "csv": buffer.getvalue().encode()}


def timed(fn, content: bytes, suffix: str, data: DataParams):
    gc.collect()
    started = time.perf_counter()
    out = fn(content, suffix=suffix, split="train", source=f"bench{suffix}", data=data)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ingest.json")
    parser.add_argument(
        "--baseline-max", type=int, default=None, help="larger sizes run today's parser only (time budget)"
    )
    parser.add_argument("--append", action="store_true", help="add to the results already in --out")
    args = parser.parse_args()
    old = baseline_module()
    results = []
    for n in args.sizes:
        for fmt, content in files(n, args.seed).items():
            cols = ColumnMap(label="category") if fmt == "csv" else ColumnMap()
            data = DataParams(task="classification", columns=cols)
            t_new, (new_rows, new_bad) = timed(parse_input, content, f".{fmt}", data)
            row = {"format": fmt, "lines": n, "mb": round(len(content) / 2**20, 1)}
            row.update(polars_s=round(t_new, 2), polars_lines_per_s=round(n / t_new))
            if args.baseline_max is None or n <= args.baseline_max:
                t_old, (old_rows, old_bad) = timed(old.parse_input, content, f".{fmt}", data)
                row.update(line_by_line_s=round(t_old, 2), line_by_line_lines_per_s=round(n / t_old))
                row.update(speedup=round(t_old / t_new, 2))
                row["identical"] = bool(old_rows.equals(new_rows) and old_bad.equals(new_bad))
                del old_rows
            print(json.dumps(row), flush=True)
            results.append(row)
            del new_rows
    note = (
        f"one process, 2 shared cores; line_by_line = curation/ingest.py at {BASELINE}; "
        "polars = today's parse_input; both include ids and text hashes"
    )
    if args.append and args.out.is_file():
        results = json.loads(args.out.read_text())["results"] + results
    args.out.write_text(json.dumps({"results": results, "note": note}, indent=2) + "\n")


if __name__ == "__main__":
    main()
