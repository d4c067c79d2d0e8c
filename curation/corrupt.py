"""Seeded corruption of a clean labelled dataset: the faults curagate must catch, with truth.

Used by the tests, the benchmarks and the demo to measure recall and precision: label flips,
exact and lightly edited copies, test rows leaked into train, and malformed lines of many
kinds. Pure: frames and a seed in, JSONL lines and the ground truth out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    flip_kinds: dict[str, str] = field(default_factory=dict)  # flipped id -> random | confusable
    leak_edits: dict[str, str] = field(default_factory=dict)  # leak id -> edit kind (exact, typo, ...)
    leak_texts: dict[str, str] = field(default_factory=dict)  # leak id -> the test row's text

    def planted(self) -> pl.DataFrame:
        """One row per planted defect: ``id`` (null for malformed lines), ``line`` (malformed
        only), ``kind`` (label_flip, confusable_flip, near_copy, test_leak, malformed),
        ``edit`` (the flip's original label, the copy's or leak's edit, the malformed kind)
        and ``source`` (the copied row's id, the leaked test text)."""
        rows: list[dict[str, object]] = []
        for rid, original in self.flipped.items():
            kind = "confusable_flip" if self.flip_kinds.get(rid) == "confusable" else "label_flip"
            rows.append({"id": rid, "line": None, "kind": kind, "edit": original, "source": None})
        for cid, src in self.copies.items():
            edit = self.copy_edits.get(cid)
            rows.append({"id": cid, "line": None, "kind": "near_copy", "edit": edit, "source": src})
        for lid, tid in self.leaks.items():
            edit = self.leak_edits.get(lid, "exact")
            rows.append(
                {
                    "id": lid,
                    "line": None,
                    "kind": "test_leak",
                    "edit": edit,
                    "source": self.leak_texts.get(lid, tid),
                }
            )
        for line, bad in sorted(self.malformed.items()):
            rows.append({"id": None, "line": line, "kind": "malformed", "edit": bad, "source": None})
        schema = {
            "id": pl.String,
            "line": pl.Int64,
            "kind": pl.String,
            "edit": pl.String,
            "source": pl.String,
        }
        return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


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
    confusable_pairs: Sequence[tuple[str, str]] = (),
    confusable_share: float = 0.0,
    leak_edits: Sequence[str] = ("exact", "typo"),
    label_key: str = "label",
    copy_flipped: bool = True,
) -> tuple[list[bytes], list[bytes], Corruption]:
    """Corrupt ``train`` (columns text, label) and return JSONL lines for train and test.

    Rows get ids ``r<n>`` (train) and ``t<n>`` (test). Rates are fractions of the train rows.

    Args:
        confusable_pairs: intents people (and models) confuse, e.g. card_arrival and
            card_delivery_estimate; a ``confusable_share`` of the flips turns a row of one
            into the other (the hardest flips to see: the text fits both labels).
        leak_edits: how leaked test rows are edited, in turn (:data:`COPY_EDITS` kinds;
            ``word_replace`` is a one-word paraphrase).
        label_key: the label's field name in the output lines (e.g. Banking77's ``category``).
        copy_flipped: copies may be made of flipped rows (the copy keeps the gold label, so
            the pair becomes a conflicting duplicate held for review); False copies only
            rows whose label was left alone.

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
    n_flips = int(round(flip_rate * n))
    partner = {a: b for a, b in confusable_pairs} | {b: a for a, b in confusable_pairs}
    pool = np.arange(n)
    if confusable_share > 0 and partner:
        candidates = np.array([i for i in range(n) if gold[i] in partner], dtype=np.int64)
        n_conf = min(len(candidates), int(round(confusable_share * n_flips)))
        chosen = rng.choice(candidates, size=n_conf, replace=False)
        for i in chosen:
            given[i] = partner[gold[i]]
            truth.flipped[ids[i]] = gold[i]
            truth.flip_kinds[ids[i]] = "confusable"
        pool = np.setdiff1d(pool, chosen)
        n_flips -= n_conf
    # without confusable flips this draws exactly what earlier versions drew (same seed, same data)
    flip_rows = (
        rng.choice(pool, size=n_flips, replace=False)
        if len(pool) < n
        else rng.choice(n, size=n_flips, replace=False)
    )
    for i in flip_rows:
        others = [lab for lab in labels if lab != gold[i]]
        given[i] = str(rng.choice(others))
        truth.flipped[ids[i]] = gold[i]
        truth.flip_kinds[ids[i]] = "random"
    rows = [{"id": ids[i], "text": texts[i], "label": given[i]} for i in range(n)]
    vocab = sorted({w for t in texts[:2000] for w in t.split() if w.isalpha()})
    n_copies = int(round(copy_rate * n))
    if copy_flipped:
        copy_rows = rng.choice(n, size=n_copies, replace=False)
    else:
        kept = np.array([i for i in range(n) if ids[i] not in truth.flipped], dtype=np.int64)
        copy_rows = rng.choice(kept, size=min(n_copies, len(kept)), replace=False)
    for k, i in enumerate(copy_rows):
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
        edit = leak_edits[k % len(leak_edits)]
        text = src["text"] if edit == "exact" else _edit(src["text"], edit, rng, vocab)
        rows.append({"id": lid, "text": text, "label": src["label"]})
        truth.leaks[lid] = src["id"]
        truth.leak_edits[lid] = edit
        truth.leak_texts[lid] = src["text"]
    order = rng.permutation(len(rows))
    lines = [json.dumps(_keyed(rows[i], label_key), ensure_ascii=False).encode() for i in order]
    n_bad = max(len(MALFORMED_KINDS), int(round(malformed_rate * n)))
    for k in range(n_bad):
        kind = MALFORMED_KINDS[k % len(MALFORMED_KINDS)]
        bid = f"bad{k}"
        bad: bytes
        if kind == "invalid_json":
            bad = json.dumps({"id": bid, "text": "truncated", label_key: labels[0]}).encode()[:-7]
        elif kind == "not_a_json_object":
            bad = json.dumps(["text", labels[0]]).encode()
        elif kind == "missing_text":
            bad = json.dumps({"id": bid, label_key: labels[0]}).encode()
        elif kind == "null_text":
            bad = json.dumps({"id": bid, "text": None, label_key: labels[0]}).encode()
        elif kind == "text_wrong_type":
            bad = json.dumps({"id": bid, "text": 12345, label_key: labels[0]}).encode()
        elif kind == "empty_text":
            bad = json.dumps({"id": bid, "text": "   \t ", label_key: labels[0]}).encode()
        elif kind == "label_not_in_label_set":
            bad = json.dumps({"id": bid, "text": f"query number {k}", label_key: "no_such_label"}).encode()
        elif kind == "null_label":
            bad = json.dumps({"id": bid, "text": f"query number {k}", label_key: None}).encode()
        elif kind == "text_too_long":
            bad = json.dumps(
                {"id": bid, "text": "lorem ipsum " * (max_text_chars // 10), label_key: labels[0]}
            ).encode()
        elif kind == "invalid_utf8":
            bad = (
                b'{"id": "'
                + bid.encode()
                + b'", "text": "caf\xe9 card", "'
                + label_key.encode()
                + b'": "'
                + labels[0].encode()
                + b'"}'
            )
        else:  # duplicate_id: a new text reusing an id that appears earlier in the file
            bad = json.dumps({"id": "r0", "text": f"another query {k}", label_key: labels[0]}).encode()
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
        kinds_by_line[lineno] = _classify_bad(line, rec, label_key)
    truth.malformed = kinds_by_line
    test_lines = [json.dumps(_keyed(r, label_key), ensure_ascii=False).encode() for r in test_rows]
    return lines, test_lines, truth


def _keyed(record: dict[str, object], label_key: str) -> dict[str, object]:
    """``record`` with its ``label`` field renamed to ``label_key`` (same field order)."""
    if label_key == "label":
        return record
    return {(label_key if k == "label" else k): v for k, v in record.items()}


def _classify_bad(line: bytes, rec: object, label_key: str = "label") -> str:
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
    if rec.get(label_key) is None:
        return "null_label"
    if rec.get(label_key) == "no_such_label":
        return "label_not_in_label_set"
    if rec["text"].startswith("another query"):
        return "duplicate_id"
    return "text_too_long"
