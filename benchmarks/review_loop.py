"""Benchmark the review loop against a real Label Studio: server start, push and pull of N flags.

Usage: .venv/bin/python benchmarks/review_loop.py [--flags 1000] [--annotate 200]
Writes benchmarks/results/review_loop.json. Flags are Banking77 train rows (seeded sample)
with a random suggested label; a fresh temporary data dir every run, so the start time includes
Label Studio's database migrations (the venv is installed beforehand and timed separately).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import socket
import tempfile
import time
from pathlib import Path

import polars as pl

from curation.review import mask_pii
from flows.labelstudio import (
    connect,
    ensure_venv,
    find_project,
    list_tasks,
    pull_reviews,
    push_flags,
    start_server,
    stop_server,
)
from schemas.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_flags(data: Path, n: int, seed: int) -> tuple[pl.DataFrame, list[str]]:
    """N flags from Banking77 train rows: given = true label, suggestion = another label."""
    labels = json.loads((data / "categories.json").read_text(encoding="utf-8"))
    rows = pl.read_csv(data / "train.csv").sample(n, seed=seed)
    rng = random.Random(seed)
    given = rows["category"].to_list()
    return (
        pl.DataFrame(
            {
                "id": [f"bench{i:05d}" for i in range(n)],
                "text_hash": [f"{hash(t) & 0xFFFFFFFF:08x}" for t in rows["text"]],
                "text": rows["text"],
                "issue": [rng.choice(["label_issue", "conflicting_duplicate"]) for _ in range(n)],
                "score": [rng.random() for _ in range(n)],
                "given_label": given,
                "suggested_label": [rng.choice([x for x in labels if x != g]) for g in given],
                "duplicate_of": [None] * n,
            },
            schema_overrides={"duplicate_of": pl.String},
        ),
        labels,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flags", type=int, default=1000, help="number of flags to push")
    parser.add_argument("--annotate", type=int, default=200, help="tasks annotated before pull")
    parser.add_argument("--seed", type=int, default=0, help="sample and suggestion seed")
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/banking77"))
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/review_loop.json")
    args = parser.parse_args()

    base = load_params(args.params).labelstudio
    result: dict[str, object] = {
        "flags": args.flags,
        "annotated": args.annotate,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "label_studio": base.server.package,
    }
    t0 = time.perf_counter()
    ensure_venv((ROOT / base.server.venv).resolve(), base.server.package)
    result["venv_ready_s"] = round(time.perf_counter() - t0, 2)

    flags, labels = make_flags(args.data, args.flags, args.seed)
    t0 = time.perf_counter()
    mask_pii(flags["text"], cfg=base.pii)
    result["mask_pii_s"] = round(time.perf_counter() - t0, 3)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        server = dataclasses.replace(
            base.server, venv=str(ROOT / base.server.venv), data_dir=str(tmp_path / "ls")
        )
        cfg = dataclasses.replace(base, server=server)
        for var in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
            os.environ.pop(var, None)
        t0 = time.perf_counter()
        start_server(cfg.server, port=_free_port())
        result["server_start_s"] = round(time.perf_counter() - t0, 2)
        try:
            out = tmp_path / "curated"
            out.mkdir()
            flags.write_parquet(out / "flags.parquet")
            (out / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
            ls = connect(cfg)

            t0 = time.perf_counter()
            first = push_flags(ls, out, cfg)
            result["push_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            second = push_flags(ls, out, cfg)
            result["push_again_noop_s"] = round(time.perf_counter() - t0, 2)
            assert first.imported == args.flags and second.imported == 0

            project_id = find_project(ls, cfg.project_title)
            tasks = list_tasks(ls, project_id, page_size=cfg.page_size)[: args.annotate]
            rng = random.Random(args.seed)
            t0 = time.perf_counter()
            for task in tasks:
                decision = rng.choice(["keep", "relabel", "drop", "unsure"])
                result_items = [{"from_name": "decision", "to_name": "text", "type": "choices",
                                 "value": {"choices": [decision]}}]  # fmt: skip
                if decision == "relabel":
                    result_items.append({"from_name": "label", "to_name": "text",
                                         "type": "choices", "value": {"choices": [
                                             task["data"]["suggested_label"]]}})  # fmt: skip
                ls.annotations.create(id=task["id"], result=result_items)
            result["annotate_via_api_s"] = round(time.perf_counter() - t0, 2)

            t0 = time.perf_counter()
            pulled = pull_reviews(ls, tmp_path / "reviews.parquet", cfg)
            result["pull_s"] = round(time.perf_counter() - t0, 2)
            result["pulled_reviews"] = pulled.reviews
            result["pii_masked"] = first.pii_masked
        finally:
            stop_server(Path(cfg.server.data_dir), timeout_s=cfg.server.stop_timeout_s)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
