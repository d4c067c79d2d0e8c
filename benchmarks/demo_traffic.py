"""Build the demo's bundled production traffic, ``data/traffic/demo.jsonl`` (committed to git).

The DVC ``predict`` and ``monitor`` stages (and the scheduled ``monitor/local`` flow, through
``monitor.traffic``) read it, so ``dvc repro`` builds a monitoring report from a fresh clone.

What is in it (seeded, ``--seed``): ``--rows`` queries from the bundled Banking77 *train* split
(``data/raw/train.csv``; never the test split, which stays the untouched yardstick of evaluate
and the monitor's baseline), in two days of ``received_at`` times. On the second day a share
of the queries (``--product-share``) names a product the training data never saw ("my Zyntra
card has not arrived"), the "new product name" case of the monitor's novel-terms check. The
label column is dropped: traffic has no labels.

Banking77 has no third split, so the day-one queries are rows the curated train split also
holds: against that reference they look *more* familiar than real traffic would (no unseen
words at all), which is why the second day's product share is large enough to show.

    python benchmarks/demo_traffic.py            # rewrites data/traffic/demo.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
# made-up product names (none is a Banking77 word), as in benchmarks/monitor.py
PRODUCTS = ("Zyntra", "Quorvex", "Flexiloan", "Paywisp", "Novacard", "Crypdex", "Glimmo", "Vaultly")
CHANNELS = ("app", "web", "chat")
START = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)  # day one, 08:00 UTC


def inject_product(text: str, product: str) -> str:
    """Put a product name where a customer would: before card/account/app, else at the end."""
    for word in ("card", "account", "app", "transfer", "payment"):
        at = text.lower().find(word)
        if at >= 0:
            return f"{text[:at]}{product} {text[at:]}"
    return f"{text.rstrip('?.! ')} with {product}?"


def build(*, source: Path, rows: int, product_share: float, seed: int) -> list[dict[str, str]]:
    """The traffic records, in time order."""
    rng = np.random.default_rng(seed)
    train = pl.read_csv(source)
    texts = train["text"][rng.choice(train.height, rows, replace=False).tolist()].to_list()
    day = rows // 2
    shifted = set(day + rng.choice(rows - day, round((rows - day) * product_share), replace=False))
    step = dt.timedelta(hours=12) / max(day, 1)  # each day's queries spread over 12 hours
    records = []
    for i, text in enumerate(texts):
        if i in shifted:
            text = inject_product(text, PRODUCTS[int(rng.integers(len(PRODUCTS)))])
        when = START + dt.timedelta(days=i // day) + step * (i % day)
        records.append(
            {
                "id": f"traffic-{i + 1:04d}",
                "text": text,
                "channel": CHANNELS[int(rng.integers(len(CHANNELS)))],
                "received_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=ROOT / "data" / "raw" / "train.csv")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "traffic" / "demo.jsonl")
    parser.add_argument("--rows", type=int, default=400, help="0.1-0.2 CPU-s each to predict on 2 cores")
    parser.add_argument("--product-share", type=float, default=0.5, help="of day two's queries")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    records = build(source=args.source, rows=args.rows, product_share=args.product_share, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    print(f"{len(records)} traffic rows -> {args.out}")


if __name__ == "__main__":
    main()
