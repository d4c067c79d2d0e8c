"""MinHash compatibility, dedup and decontamination on inline frames and planted copies."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from datasketch import MinHash

from curation.corrupt import corrupt
from curation.decontam import remove_test_leaks
from curation.dedup import drop_duplicates
from curation.ingest import parse_jsonl
from curation.minhash import shingles, signatures
from curation.validate import validate_records
from schemas.params import DataParams, DecontamParams, DedupParams

TEXTS = [
    "",
    "a",
    "hello world",
    "ünïcödé テキスト 😀 emoji and ß",
    "x" * 10_000,
    "the card has not arrived yet",
    "  spaces   everywhere  ",
    "\u0000 control \u200b zero width",
]


@pytest.mark.parametrize("kind", ["char", "word"])
@pytest.mark.parametrize(("num_perm", "seed", "ngram"), [(128, 1, 5), (64, 42, 3), (16, 0, 1)])
def test_signatures_equal_datasketch(kind: str, num_perm: int, seed: int, ngram: int) -> None:
    ours = signatures(TEXTS, kind=kind, ngram=ngram, num_perm=num_perm, seed=seed, batch_docs=3)
    for text, row in zip(TEXTS, ours, strict=True):
        reference = MinHash(num_perm=num_perm, seed=seed)
        reference.update_batch(shingles(text, kind=kind, ngram=ngram))
        np.testing.assert_array_equal(row, reference.hashvalues)


def _varied_texts(seed: int, n: int = 400) -> list[str]:
    """Seeded texts that stress the bulk path: mixed scripts, emoji, NUL, all lengths."""
    rng = np.random.default_rng(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyz     ",
        "αβγδεζηθικλμνξοπρστυφχψω абвгдеёжзий ",
        "テキストの日本語漢字😀🎉🚀 ",
        "\u200b\t\n\u00a0ß ﬁ é",
    ]
    out = []
    for i in range(n):
        pool = pools[i % len(pools)] if i % 7 else "".join(pools)
        length = int(rng.choice([0, 1, 2, 4, 5, 6, 30, 200]))
        out.append("".join(pool[int(k)] for k in rng.integers(0, len(pool), length)))
    return out


def _reference(texts: list[str], *, kind: str, ngram: int, num_perm: int, seed: int) -> np.ndarray:
    rows = []
    for text in texts:
        reference = MinHash(num_perm=num_perm, seed=seed)
        reference.update_batch(shingles(text, kind=kind, ngram=ngram))
        rows.append(reference.hashvalues)
    return np.array(rows, dtype=np.uint32).reshape(len(texts), num_perm)


@pytest.mark.parametrize("kind", ["char", "word"])
@pytest.mark.parametrize(("ngram", "batch_docs"), [(1, 1), (3, 7), (5, 256), (9, 64), (13, 5)])
def test_signatures_equal_datasketch_on_varied_text(kind: str, ngram: int, batch_docs: int) -> None:
    texts = _varied_texts(ngram) + [t for t in TEXTS if "\u0000" not in t]  # NUL: see below
    ours = signatures(texts, kind=kind, ngram=ngram, num_perm=32, seed=7, batch_docs=batch_docs)
    np.testing.assert_array_equal(ours, _reference(texts, kind=kind, ngram=ngram, num_perm=32, seed=7))


def test_signatures_across_shingle_batches_and_huge_alphabets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches share the hash cache; batches with a NUL or an alphabet too large to pack take
    the per-document path, the others the bulk path."""
    import curation.minhash as mh

    monkeypatch.setattr(mh, "_SHINGLE_BATCH", 50)
    monkeypatch.setattr(mh, "_CACHE_LIMIT", 300)
    cjk = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 9000))  # 9,000 code points: > 12 bits
    texts = _varied_texts(3, n=260) + TEXTS + [cjk[i : i + 40] for i in range(0, 9000, 40)] + [cjk]
    ours = signatures(texts, kind="char", ngram=5, num_perm=64, seed=1)
    np.testing.assert_array_equal(ours, _reference(texts, kind="char", ngram=5, num_perm=64, seed=1))
    assert ours.shape == (len(texts), 64)


def test_signatures_of_empty_input_and_empty_texts() -> None:
    assert signatures([], kind="char", ngram=5, num_perm=16, seed=1).shape == (0, 16)
    empty = signatures(["", ""], kind="char", ngram=5, num_perm=16, seed=1)
    assert (empty == np.uint32(0xFFFFFFFF)).all()


def _frame(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(len(rows))],
            "split": "train",
            "line": list(range(1, len(rows) + 1)),
            "text": [t for t, _ in rows],
            "label": [lab for _, lab in rows],
            "text_hash": [f"h{i}" for i in range(len(rows))],
        }
    )


def _reasons(removed: pl.DataFrame) -> dict[str, tuple[str, str]]:
    return {r["id"]: (r["reason"], r["duplicate_of"]) for r in removed.iter_rows(named=True)}


def test_exact_and_near_duplicates_keep_the_first_line() -> None:
    train = _frame(
        [
            ("Where is my new card?", "card_arrival"),
            ("where is my NEW card", "card_arrival"),  # exact after normalisation
            ("Where is my nwe card?", "card_arrival"),  # a typo
            ("my new card where is", "card_arrival"),  # words reordered
            ("How do I top up with a cheque?", "top_up"),
        ]
    )
    result = drop_duplicates(train, cfg=DedupParams())
    assert result.kept["id"].to_list() == ["r0", "r4"]
    assert _reasons(result.removed) == {
        "r1": ("exact_duplicate", "r0"),
        "r2": ("near_duplicate", "r0"),
        "r3": ("near_duplicate", "r0"),
    }
    assert result.flags.is_empty()
    assert result.kept.height + result.removed.height == train.height


def test_duplicates_with_conflicting_labels_are_flagged_not_dropped() -> None:
    train = _frame([("My card was stolen", "lost_or_stolen_card"), ("my card was stolen!", "card_arrival")])
    result = drop_duplicates(train, cfg=DedupParams())
    assert _reasons(result.removed) == {"r1": ("pending_review", "r0")}
    flag = result.flags.row(0, named=True)
    assert flag["issue"] == "conflicting_duplicate"
    assert (flag["given_label"], flag["suggested_label"], flag["duplicate_of"]) == (
        "card_arrival",
        "lost_or_stolen_card",
        "r0",
    )


def test_distinct_texts_and_punctuation_only_texts_are_not_merged() -> None:
    train = _frame(
        [
            ("???", "a"),
            ("!!!", "a"),
            ("How do I activate my card?", "a"),
            ("Why was my transfer declined?", "a"),
        ]
    )
    result = drop_duplicates(train, cfg=DedupParams())
    assert result.removed.is_empty()


def test_dedup_does_not_depend_on_row_order() -> None:
    train = _frame(
        [(f"query number {i} about my card", "card_arrival") for i in range(30)]
        + [("query number 3 about my card!", "card_arrival")]
    )
    a = drop_duplicates(train, cfg=DedupParams())
    b = drop_duplicates(train.sample(fraction=1.0, shuffle=True, seed=3), cfg=DedupParams())
    assert a.removed.sort("id").equals(b.removed.sort("id"))


def test_test_leaks_are_removed_and_test_is_untouched() -> None:
    train = _frame(
        [
            ("How do I top up by card?", "top_up"),
            ("how do i top up by crad", "top_up"),
            ("Unrelated question about fees", "fees"),
        ]
    )
    test = _frame([("How do I top up by card", "top_up")]).with_columns(id=pl.lit("t0"), split=pl.lit("test"))
    before = test.clone()
    result = remove_test_leaks(train, test, cfg=DecontamParams(), minhash=DedupParams())
    assert _reasons(result.removed) == {"r0": ("test_leak", "t0"), "r1": ("test_leak", "t0")}
    assert result.kept["id"].to_list() == ["r2"]
    assert test.equals(before)


def test_planted_copies_and_leaks_are_found(banking_train, banking_test, banking_labels) -> None:
    """Seeded corruption of 3,000 Banking77 rows: copies and leaks found, clean rows kept."""
    lines, _, truth = corrupt(
        banking_train.head(3000), banking_test, labels=banking_labels, seed=11, malformed_rate=0
    )
    data = DataParams()
    ingested, _ = parse_jsonl(b"\n".join(lines), split="train", source="c.jsonl", data=data)
    train, _ = validate_records(ingested, data=data, labels=banking_labels)
    test_rows = banking_test.with_columns(
        id=pl.format("t{}", pl.int_range(pl.len())), split=pl.lit("test"), line=pl.int_range(pl.len()) + 1
    )
    deduped = drop_duplicates(train, cfg=DedupParams())
    leaks = remove_test_leaks(deduped.kept, test_rows, cfg=DecontamParams(), minhash=DedupParams())
    removed = set(deduped.removed["id"]) | set(leaks.removed["id"])
    # one-word replacements are indistinguishable from Banking77's own paraphrases (see README)
    copies = {c: s for c, s in truth.copies.items() if truth.copy_edits[c] != "word_replace"}
    caught = sum((c in removed) != (s in removed) for c, s in copies.items())
    involved = set(truth.copies) | set(truth.copies.values()) | set(truth.leaks)
    clean = [i for i in train["id"] if i not in involved]
    clean_removed = sum(i in removed for i in clean)
    leaks_found = sum(i in removed for i in truth.leaks)
    assert caught / len(copies) >= 0.95
    assert clean_removed / len(clean) <= 0.03
    assert leaks_found / len(truth.leaks) >= 0.95


def test_candidate_and_cross_pairs_equal_brute_force() -> None:
    """Bucket pairs from the sort-based grouping equal the all-pairs definition."""
    from curation.minhash import candidate_pairs, cross_pairs

    rng = np.random.default_rng(0)
    left = rng.integers(0, 6, size=(60, 4)).astype(np.uint64) + np.arange(4, dtype=np.uint64) * 100
    right = rng.integers(0, 9, size=(25, 4)).astype(np.uint64) + np.arange(4, dtype=np.uint64) * 100
    same = {(i, j) for i in range(60) for j in range(i + 1, 60) if (left[i] == left[j]).any()}
    cross = {(i, j) for i in range(60) for j in range(25) if (left[i] == right[j]).any()}
    assert candidate_pairs(left).tolist() == sorted(map(list, same))
    assert cross_pairs(left, right).tolist() == sorted(map(list, cross))
    assert candidate_pairs(left[:1]).shape == (0, 2)
    assert cross_pairs(left, right[:0]).shape == (0, 2)


def test_pair_verifier_equals_the_rule_checked_pair_by_pair() -> None:
    """Early rejection on partial signatures and the per-text caches change no decision.

    Signatures are built to land on both sides of the threshold (116 of 128 equal slots for
    0.9), texts to hit the edit and word-order rules, empty texts included.
    """
    from rapidfuzz.distance import OSA

    from curation.minhash import PairVerifier, estimated_jaccard, same_key_pairs, word_bag_ids

    rng = np.random.default_rng(1)
    words = ["card", "pin", "top", "up", "atm", "fee"]
    left = [" ".join(rng.choice(words, size=rng.integers(0, 5))) for _ in range(80)]
    right = [" ".join(rng.choice(words, size=rng.integers(0, 5))) for _ in range(50)]
    right[:10] = [t[::-1] for t in left[:10]]  # reversed letters: rarely near
    right[10:20] = [t + "s" for t in left[10:20]]  # one character added
    base = rng.integers(0, 2**32, size=128, dtype=np.uint64).astype(np.uint32)
    left_sig = np.tile(base, (80, 1))
    right_sig = np.tile(base, (50, 1))
    for sig in (left_sig, right_sig):  # 0..40 differing slots, anywhere in the signature
        for row in sig:
            row[rng.choice(128, size=rng.integers(0, 40), replace=False)] ^= np.uint32(1)
    pairs = np.array([(i, j) for i in range(80) for j in range(50)], dtype=np.int64)
    verify = PairVerifier(left, right, left_sig, right_sig, threshold=0.9, max_char_edits=1, word_order=True)
    ok, sims = verify(pairs)
    jac = estimated_jaccard(left_sig, right_sig, pairs)
    expected = np.array(
        [
            bool(left[i] and right[j])
            and (
                jac[k] >= 0.9
                or OSA.distance(left[i], right[j]) <= 1
                or sorted(left[i].split()) == sorted(right[j].split())
            )
            for k, (i, j) in enumerate(pairs)
        ]
    )
    assert ok.tolist() == expected.tolist()
    assert 0 < ok.sum() < len(pairs) and 0 < (jac >= 0.9).sum()
    assert sims.tolist() == jac[ok].tolist()
    # word bags: shared ids across lists; same-bag pairs within one list
    lb, rb = word_bag_ids(["a b", "b  a", ""], ["a b b", "b a"])
    assert lb[0] == lb[1] == rb[1] and lb[0] != rb[0] and lb[2] not in (lb[0], rb[0])
    assert same_key_pairs(np.array([3, 1, 3, 3])).tolist() == [[0, 2], [0, 3], [2, 3]]


def test_dedup_reports_progress_per_candidate_block() -> None:
    from curation.dedup import candidate_bands

    texts = ["my card was declined", "my card was declined!", "how do i top up", "how do i top up?"]
    frame = pl.DataFrame(
        {"id": ["a", "b", "c", "d"], "line": [1, 2, 3, 4], "text": texts, "label": ["x", "x", "y", "y"]}
    ).with_columns(split=pl.lit("train"), text_hash=pl.col("text"))
    notes: list[str] = []
    cfg = DedupParams(bands_per_pass=8)
    drop_duplicates(frame, cfg=cfg, progress=notes.append)
    bands, _ = candidate_bands(cfg)
    assert len(notes) == -(-bands // 8) and notes[-1].startswith(f"LSH block {len(notes)}:")
