"""Seeded Banking77-like data at any size, with injected near copies and their ground truth.

Banking77 has 10k training queries; benchmarks need 200k-1M. New base texts are spliced
from two queries of the same intent (the first words of one, the last words of the other),
sometimes with a word replaced, and kept only when new after normalisation. Near copies are
made with curation/corrupt.py's edit functions, so they are the faults the tests plant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from curation.corrupt import COPY_EDITS, _edit
from curation.minhash import normalize_text

_PUNCT = re.compile(r"[^\w\s]+")
RAW = Path(__file__).resolve().parents[1] / "data" / "raw"


@dataclass
class Synth:
    texts: list[str]
    labels: list[str]
    family: np.ndarray  # rows with the same family are copies of one base text
    edit: list[str]  # "" for a base row, else the corrupt.py edit that made the copy


def generated_params(overrides: Sequence[str] = ()) -> dict:
    """The repository's params.yaml as a dict, for generated rows (label column ``label``,
    the bundled label set), with ``a.b=value`` overrides (values parsed as YAML) applied."""
    import yaml

    raw = yaml.safe_load((RAW.parents[1] / "params.yaml").read_text())
    raw["data"]["columns"]["label"] = "label"
    raw["data"]["labels"] = str(RAW / "categories.json")
    for item in overrides:
        dotted, value = item.split("=", 1)
        *path, last = dotted.split(".")
        node = raw
        for key in path:
            node = node.setdefault(key, {})
        node[last] = yaml.safe_load(value)
    return raw


def load_banking(split: str = "train") -> pl.DataFrame:
    return pl.read_csv(RAW / f"{split}.csv").rename({"category": "label"})


def generate(n_rows: int, *, seed: int, copy_rate: float = 0.1, base: pl.DataFrame | None = None) -> Synth:
    """``n_rows`` rows: distinct base texts plus ``copy_rate`` of near copies (shuffled)."""
    rng = np.random.default_rng(seed)
    base = load_banking() if base is None else base
    src_texts = base["text"].to_list()
    src_labels = base["label"].to_list()
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(src_labels):
        by_label.setdefault(lab, []).append(i)
    vocab = sorted({w for t in src_texts for w in t.split() if w.isalpha()})
    n_copies = int(round(copy_rate * n_rows))
    n_base = n_rows - n_copies
    texts, labels, seen = [], [], set()

    def add(text: str, label: str) -> None:
        # the same text after curagate's normalisation is the same base (not a new one)
        key = " ".join(_PUNCT.sub(" ", text.lower()).split())
        if key not in seen:
            seen.add(key)
            texts.append(text)
            labels.append(label)

    # the real queries first, in a seeded order: the file is grouped by intent, and a small
    # sample must still hold every intent (its own generator: the splices below stay the same)
    for i in np.random.default_rng([seed, 1]).permutation(len(src_texts)):
        if len(texts) >= n_base:
            break
        add(src_texts[i], src_labels[i])
    words = [t.split() for t in src_texts]
    while len(texts) < n_base:
        m = min(n_base - len(texts), 50_000) * 2
        first = rng.integers(0, len(src_texts), m)
        cut_a = rng.random(m)
        cut_b = rng.random(m)
        swap = rng.random(m) < 0.5
        for k in range(m):
            i = int(first[k])
            lab = src_labels[i]
            peers = by_label[lab]
            j = peers[int(rng.integers(len(peers)))]
            wa, wb = words[i], words[j]
            if j == i or len(wa) < 4 or len(wb) < 4:
                continue
            # at least 2 words of each query, so a splice is rarely a near copy of either
            ia = 2 + int(cut_a[k] * (len(wa) - 3))
            ib = 1 + int(cut_b[k] * (len(wb) - 3))
            out = wa[:ia] + wb[ib:]
            if swap[k]:  # or the other way round
                out = wb[: ib + 1] + wa[ia:]
            add(" ".join(out), lab)
            if len(texts) >= n_base:
                break
    family = list(range(n_base))
    edit = [""] * n_base
    sources = rng.integers(0, n_base, n_copies)
    for k, i in enumerate(sources):
        kind = COPY_EDITS[k % len(COPY_EDITS)]
        texts.append(_edit(texts[i], kind, rng, vocab))
        labels.append(labels[i])
        family.append(int(i))
        edit.append(kind)
    order = rng.permutation(len(texts))
    return Synth(
        texts=[texts[i] for i in order],
        labels=[labels[i] for i in order],
        family=np.asarray(family)[order],
        edit=[edit[i] for i in order],
    )


def as_train_frame(s: Synth) -> pl.DataFrame:
    """The columns curagate's dedup step reads (id, split, line, text, label, text_hash)."""
    n = len(s.texts)
    return pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "split": "train",
            "line": np.arange(1, n + 1),
            "text": s.texts,
            "label": s.labels,
            "text_hash": [f"h{i}" for i in range(n)],
        }
    )


def normalized(texts: list[str]) -> list[str]:
    return pl.DataFrame({"t": texts}).select(normalize_text(pl.col("t")))["t"].to_list()


def score(s: Synth, representative: np.ndarray) -> dict:
    """Recall and precision of a clustering against the injected copies.

    ``representative[i]`` is the row kept for row i (i itself when kept). A removed row is
    correct when its representative is of the same family; recall is correct removals over
    the rows that should go (rows minus families), also per edit kind.
    """
    rep = np.asarray(representative)
    removed = rep != np.arange(len(rep))
    correct = removed & (s.family[rep] == s.family)
    should = len(rep) - len(np.unique(s.family))
    out = {
        "removed": int(removed.sum()),
        "should_remove": int(should),
        "recall": float(correct.sum() / should) if should else 1.0,
        "precision": float(correct.sum() / removed.sum()) if removed.sum() else 1.0,
    }
    # per edit kind: was the copy (or its source) removed with the other as representative?
    edits = np.asarray(s.edit)
    fam_rep = {}
    for i in np.flatnonzero(edits == ""):
        fam_rep[int(s.family[i])] = int(rep[i])
    per_kind = {}
    for kind in COPY_EDITS:
        idx = np.flatnonzero(edits == kind)
        if idx.size:
            same = [rep[i] == fam_rep[int(s.family[i])] for i in idx]
            per_kind[kind] = float(np.mean(same))
    out["recall_by_edit"] = per_kind
    return out
