"""Seeded corruption of a clean labelled dataset: the faults curagate must catch, with truth.

Used by the tests, the benchmarks and the demo to measure recall and precision: label flips,
exact and lightly edited copies, test rows leaked into train, and malformed lines of many
kinds. Pure: frames and a seed in, JSONL lines and the ground truth out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import polars as pl

COPY_EDITS = ("exact", "case", "punctuation", "whitespace", "typo", "word_swap", "word_replace")
MALFORMED_KINDS = (
    "invalid_json",
    "not_a_json_object",
    "missing_text",
    "null_text",
    "text_wrong_type",
    "empty_text",
    "label_not_in_label_set",
    "null_label",
    "text_too_long",
    "invalid_utf8",
    "duplicate_id",
)


@dataclass
class Corruption:
    """Ground truth of what was injected."""

    flipped: dict[str, str] = field(default_factory=dict)  # id -> original label
    copies: dict[str, str] = field(default_factory=dict)  # copy id -> source id
    copy_edits: dict[str, str] = field(default_factory=dict)  # copy id -> edit kind
    leaks: dict[str, str] = field(default_factory=dict)  # train id -> test id
    malformed: dict[int, str] = field(default_factory=dict)  # 1-based line -> kind


def _edit(text: str, kind: str, rng: np.random.Generator, vocab: list[str]) -> str:
    words = text.split()
    if kind == "case":
        return text.upper() if rng.random() < 0.5 else text.lower()
    if kind == "punctuation":
        stripped = text.rstrip("?.!")
        return stripped + rng.choice(["", "!", "?", "...", " ?"]) if stripped != text else text + "?"
    if kind == "whitespace":
        return "  " + "   ".join(words) + " "
    if kind == "typo" and len(text) > 3:
        i = int(rng.integers(1, len(text) - 1))
        op = rng.integers(3)
        if op == 0:  # swap two adjacent characters
            return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]
        if op == 1:  # drop a character
            return text[:i] + text[i + 1 :]
        return text[:i] + str(rng.choice(list("abcdefghijklmnopqrstuvwxyz"))) + text[i + 1 :]
    if kind == "word_swap" and len(words) > 2:
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)
    if kind == "word_replace" and len(words) > 2:
        i = int(rng.integers(len(words)))
        words[i] = str(rng.choice(vocab))
        return " ".join(words)
    return text


def corrupt(
    train: pl.DataFrame,
    test: pl.DataFrame,
    *,
    labels: list[str],
    seed: int,
    flip_rate: float = 0.04,
    copy_rate: float = 0.05,
    leak_rate: float = 0.01,
    malformed_rate: float = 0.004,
    max_text_chars: int = 20_000,
) -> tuple[list[bytes], list[bytes], Corruption]:
    """Corrupt ``train`` (columns text, label) and return JSONL lines for train and test.

    Rows get ids ``r<n>`` (train) and ``t<n>`` (test). Rates are fractions of the train rows.

    Returns:
        (train_lines, test_lines, truth); lines are bytes (one malformed kind is bad UTF-8).
    """
    rng = np.random.default_rng(seed)
    texts = train["text"].to_list()
    gold = train["label"].to_list()
    n = len(texts)
    truth = Corruption()
    given = list(gold)
    ids = [f"r{i}" for i in range(n)]
    for i in rng.choice(n, size=int(round(flip_rate * n)), replace=False):
        others = [lab for lab in labels if lab != gold[i]]
        given[i] = str(rng.choice(others))
        truth.flipped[ids[i]] = gold[i]
    rows = [{"id": ids[i], "text": texts[i], "label": given[i]} for i in range(n)]
    vocab = sorted({w for t in texts[:2000] for w in t.split() if w.isalpha()})
    for k, i in enumerate(rng.choice(n, size=int(round(copy_rate * n)), replace=False)):
        kind = COPY_EDITS[k % len(COPY_EDITS)]
        cid = f"r{n + k}"
        # a copy carries the source's *gold* label: a duplicate, not a second label error
        rows.append({"id": cid, "text": _edit(texts[i], kind, rng, vocab), "label": gold[i]})
        truth.copies[cid] = ids[i]
        truth.copy_edits[cid] = kind
    test_rows = [
        {"id": f"t{j}", "text": t, "label": lab}
        for j, (t, lab) in enumerate(test.select("text", "label").iter_rows())
    ]
    next_id = n + len(truth.copies)
    for k, j in enumerate(rng.choice(len(test_rows), size=int(round(leak_rate * n)), replace=False)):
        lid = f"r{next_id + k}"
        src = test_rows[j]
        text = src["text"] if k % 2 == 0 else _edit(src["text"], "typo", rng, vocab)
        rows.append({"id": lid, "text": text, "label": src["label"]})
        truth.leaks[lid] = src["id"]
    order = rng.permutation(len(rows))
    lines = [json.dumps(rows[i], ensure_ascii=False).encode() for i in order]
    n_bad = max(len(MALFORMED_KINDS), int(round(malformed_rate * n)))
    for k in range(n_bad):
        kind = MALFORMED_KINDS[k % len(MALFORMED_KINDS)]
        bid = f"bad{k}"
        bad: bytes
        if kind == "invalid_json":
            bad = json.dumps({"id": bid, "text": "truncated", "label": labels[0]}).encode()[:-7]
        elif kind == "not_a_json_object":
            bad = json.dumps(["text", labels[0]]).encode()
        elif kind == "missing_text":
            bad = json.dumps({"id": bid, "label": labels[0]}).encode()
        elif kind == "null_text":
            bad = json.dumps({"id": bid, "text": None, "label": labels[0]}).encode()
        elif kind == "text_wrong_type":
            bad = json.dumps({"id": bid, "text": 12345, "label": labels[0]}).encode()
        elif kind == "empty_text":
            bad = json.dumps({"id": bid, "text": "   \t ", "label": labels[0]}).encode()
        elif kind == "label_not_in_label_set":
            bad = json.dumps({"id": bid, "text": f"query number {k}", "label": "no_such_label"}).encode()
        elif kind == "null_label":
            bad = json.dumps({"id": bid, "text": f"query number {k}", "label": None}).encode()
        elif kind == "text_too_long":
            bad = json.dumps(
                {"id": bid, "text": "lorem ipsum " * (max_text_chars // 10), "label": labels[0]}
            ).encode()
        elif kind == "invalid_utf8":
            bad = (
                b'{"id": "'
                + bid.encode()
                + b'", "text": "caf\xe9 card", "label": "'
                + labels[0].encode()
                + b'"}'
            )
        else:  # duplicate_id: a new text reusing an id that appears earlier in the file
            bad = json.dumps({"id": "r0", "text": f"another query {k}", "label": labels[0]}).encode()
        # duplicate ids must come after the original line; append those at the end
        pos = len(lines) if kind == "duplicate_id" else int(rng.integers(len(lines) + 1))
        lines.insert(pos, bad)
    # recover line numbers of malformed lines after all insertions
    kinds_by_line = {}
    good_ids = {r["id"] for r in rows}
    for lineno, line in enumerate(lines, start=1):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec = None
        if (
            isinstance(rec, dict)
            and rec.get("id") in good_ids
            and not str(rec.get("text", "")).startswith("another query")
        ):
            continue
        kinds_by_line[lineno] = _classify_bad(line, rec)
    truth.malformed = kinds_by_line
    test_lines = [json.dumps(r, ensure_ascii=False).encode() for r in test_rows]
    return lines, test_lines, truth


def _classify_bad(line: bytes, rec: object) -> str:
    if rec is None:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return "invalid_utf8"
        return "invalid_json"
    if not isinstance(rec, dict):
        return "not_a_json_object"
    if "text" not in rec:
        return "missing_text"
    if rec["text"] is None:
        return "null_text"
    if not isinstance(rec["text"], str):
        return "text_wrong_type"
    if not rec["text"].strip():
        return "empty_text"
    if rec.get("label") is None:
        return "null_label"
    if rec.get("label") == "no_such_label":
        return "label_not_in_label_set"
    if rec["text"].startswith("another query"):
        return "duplicate_id"
    return "text_too_long"
