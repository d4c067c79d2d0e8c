"""Decontamination's candidate sources at scale: LSH at ``decontam.lsh_threshold`` (before)
vs the fast engine's exact sources (pigeonhole bands at ``decontam.threshold``, the one-edit
neighbourhood, equal word bags; after), on the same rows in one process.

Rows: benchmarks/curate_scale.py's generated train (Banking77-like, 10% near copies, 0.5% of
rows copied from the real Banking77 test split) deduplicated by curagate, against the 3,080
test rows. Each variant calls ``remove_test_leaks`` with its own signatures; CPU seconds
(``time.process_time``, all threads) are the steadier figure on the shared machine. Writes
benchmarks/results/decontam.json.

    .venv/bin/python benchmarks/decontam.py --rows 200000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "decontam.json"


def one_size(n_rows: int, seed: int) -> dict:
    import polars as pl

    import curation.decontam as decontam
    from benchmarks.curate_scale import write_data
    from flows.pipeline import run_curation
    from schemas.params import params_from_dict

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["columns"]["label"] = "label"  # the generated files' column
    raw["data"]["labels"] = str(ROOT / "data" / "raw" / "categories.json")
    params = params_from_dict({k: v for k, v in raw.items() if k != "scale"}, base_dir=ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        train_path, test_path, _ = write_data(n_rows, seed, Path(tmp))
        # keep the test frame, which the run releases once no later step of `until` reads it
        with mock.patch("flows.pipeline._release_after", lambda *_: None):
            run = run_curation(train_path, test_path, params=params, until="dedup", show_progress=False)
        planted = set(pl.read_ndjson(train_path).join(pl.read_ndjson(test_path), on="text", how="semi")["id"])
    train, test = run.values["train"], run.values["test"]
    result: dict = {"rows": n_rows, "train_rows_after_dedup": train.height, "test_rows": test.height}
    removed = {}
    for variant, exact in (("lsh", False), ("exact", True)):
        notes: list[str] = []
        handler = _Collect(notes)
        decontam.log.addHandler(handler)
        decontam.log.setLevel("INFO")
        with mock.patch.object(decontam, "exact_leak_rule", lambda *_, exact=exact: exact):
            cpu, wall = time.process_time(), time.perf_counter()
            step = decontam.remove_test_leaks(train, test, cfg=params.decontam, minhash=params.dedup)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        decontam.log.removeHandler(handler)
        removed[variant] = set(step.removed["id"])
        result[variant] = {
            "cpu_seconds": round(cpu, 2),
            "wall_seconds": round(wall, 2),
            "log": notes,
            "leaks_removed": step.removed.height,
            "planted_leaks_caught": len(removed[variant] & planted),
        }
        print(variant, json.dumps(result[variant]), flush=True)
    result["planted_leaks_surviving_dedup"] = len(planted & set(train["id"]))
    result["only_exact"] = len(removed["exact"] - removed["lsh"])
    result["only_lsh"] = len(removed["lsh"] - removed["exact"])
    lsh, exact = result["lsh"]["cpu_seconds"], result["exact"]["cpu_seconds"]
    result["cpu_ratio_lsh_over_exact"] = round(lsh / max(exact, 1e-9), 2)
    return result


class _Collect:
    """A logging handler keeping decontam's candidate counts."""

    def __init__(self, notes: list[str]) -> None:
        import logging

        self.level, self.notes, self.filters = logging.INFO, notes, []
        self.lock = None

    def handle(self, record) -> None:
        self.notes.append(record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    for n in args.rows:
        old[str(n)] = {**one_size(n, args.seed), "load_average_at_end": list(os.getloadavg())}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
