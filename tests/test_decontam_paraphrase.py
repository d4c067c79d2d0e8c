"""Decontamination's paraphrase rules: one word away from a test row, or semantically near one."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curation.decontam import remove_test_leaks
from schemas.params import DecontamParams, DedupParams

TEST = [
    ("t1", "how do i get a refund for a duplicated payment today", "refund"),
    ("t2", "why has my card payment been declined by the shop again", "declined"),
    ("t3", "freeze my card", "freeze"),
]


def frames(rows: list[tuple[str, str, str]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    train = pl.DataFrame(
        {
            "id": [r[0] for r in rows],
            "split": "train",
            "line": list(range(1, len(rows) + 1)),
            "text": [r[1] for r in rows],
            "label": [r[2] for r in rows],
        }
    )
    test = pl.DataFrame(
        {"id": [t[0] for t in TEST], "text": [t[1] for t in TEST], "label": [t[2] for t in TEST]}
    )
    return train, test


def test_one_word_substituted_inserted_or_deleted_is_a_leak() -> None:
    train, test = frames(
        [
            ("sub", "how do i get a refund for a duplicated transfer today", "refund"),
            ("ins", "Why has my card payment been declined by the big shop again?", "declined"),
            ("del", "how do i get refund for a duplicated payment today", "refund"),
            ("two", "how can i get a refund for a duplicated transfer today", "refund"),
            ("other_label", "how do i get a refund for a duplicated charge today", "charge"),
            ("short", "unfreeze my card", "freeze"),
        ]
    )
    out = remove_test_leaks(train, test, cfg=DecontamParams(one_word_min_words=4), minhash=DedupParams())
    removed = dict(zip(out.removed["id"], out.removed["duplicate_of"], strict=True))
    assert removed == {"sub": "t1", "ins": "t2", "del": "t1"}
    assert out.removed["detail"].str.starts_with("one word from test row").all()
    assert out.removed["reason"].unique().to_list() == ["test_leak"]
    assert sorted(out.kept["id"]) == ["other_label", "short", "two"]
    assert out.kept.height + out.removed.height == train.height
    # without the label rule the other-label neighbour counts too; switched off, none of them
    loose = remove_test_leaks(
        train, test, cfg=DecontamParams(one_word_min_words=4, same_label=False), minhash=DedupParams()
    )
    assert "other_label" in set(loose.removed["id"])
    off = remove_test_leaks(train, test, cfg=DecontamParams(one_word=False), minhash=DedupParams())
    assert not {"sub", "ins"} & set(off.removed["id"])


def test_semantic_rule_removes_rows_near_a_test_row_by_cosine() -> None:
    train, test = frames(
        [
            ("para", "i was charged twice, can i have my money back", "refund"),
            ("far", "what is the exchange rate", "refund"),
            ("para_other_label", "did my card get blocked at the store", "freeze"),
        ]
    )
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16)).astype(np.float32)
    e_test = base / np.linalg.norm(base, axis=1, keepdims=True)
    e_train = np.stack([e_test[0] + 0.05 * rng.normal(size=16), rng.normal(size=16), e_test[1]]).astype(
        np.float32
    )
    e_train /= np.linalg.norm(e_train, axis=1, keepdims=True)
    cfg = DecontamParams(semantic_threshold=0.95)
    out = remove_test_leaks(
        train, test, cfg=cfg, minhash=DedupParams(), train_embeddings=e_train, test_embeddings=e_test
    )
    assert out.removed["id"].to_list() == ["para"]
    assert out.removed["duplicate_of"].to_list() == ["t1"]
    assert out.removed["detail"][0].startswith("paraphrase of test row t1 (cosine 0.9")
    # same_label off: the identical vector of another label's test row is a leak too
    loose = remove_test_leaks(
        train,
        test,
        cfg=DecontamParams(semantic_threshold=0.95, same_label=False),
        minhash=DedupParams(),
        train_embeddings=e_train,
        test_embeddings=e_test,
    )
    assert sorted(loose.removed["id"]) == ["para", "para_other_label"]


def test_one_word_pairs_within_train_join_semantic_clusters() -> None:
    from curation.decontam import one_word_pairs
    from curation.semantic import find_semantic_issues
    from schemas.semantic_params import SemanticParams

    train, _ = frames(
        [
            ("a", "how do i get a refund for a duplicated payment today", "refund"),
            ("b", "how do i get a refund for my duplicated payment today", "refund"),
            ("c", "how do i get a refund for a duplicated payment", "refund"),
            ("d", "how do i get a refund for a duplicated payment today", "charge"),
            ("e", "what is the exchange rate for euros", "rate"),
        ]
    )
    train = train.with_columns(text_hash=pl.col("id"))
    pairs = one_word_pairs(train, min_words=4, same_label=True)
    assert pairs.tolist() == [[0, 1], [0, 2]]
    emb = np.eye(5, 8, dtype=np.float32)  # orthogonal: only the one-word pairs link rows
    out = find_semantic_issues(train, embeddings=emb, cfg=SemanticParams(), extra_pairs=pairs)
    assert dict(zip(out.flags["id"], out.flags["duplicate_of"], strict=True)) == {"b": "a", "c": "a"}
    assert sorted(out.kept["id"]) == ["a", "d", "e"]


@pytest.mark.parametrize("min_words", [1, 4])
def test_one_word_hash_prefilter_keeps_every_string_pair(min_words: int, monkeypatch) -> None:
    """The hashed prefilter narrows the rows the string keys are built for; the leaks must be
    the string computation's over all rows (Banking77 plus texts with odd words)."""
    from pathlib import Path

    import curation.decontam as decontam

    root = Path(__file__).resolve().parents[1]
    train = pl.read_csv(root / "data/raw/train.csv").head(3000).rename({"category": "label"})
    test = pl.read_csv(root / "data/raw/test.csv").rename({"category": "label"})
    odd = ["a \x00 c d", "a b c d", "a  b c", "a b c", "x", "", "\x00 b c d"]
    tr = pl.concat([train.select("text", "label"), pl.DataFrame({"text": odd, "label": "x"})])
    te = pl.concat([test.select("text", "label"), pl.DataFrame({"text": odd[::-1], "label": "x"})])
    tr = tr.with_columns(_key=decontam.dedup_keys(tr["text"])).with_row_index("_i")
    te = te.with_row_index("_j").with_columns(id=pl.format("t{}", "_j"), _key=decontam.dedup_keys(te["text"]))
    fast = decontam.one_word_leaks(tr, te, min_words=min_words, same_label=True)
    monkeypatch.setattr(
        decontam,
        "one_word_candidates",
        lambda left, right: (np.arange(len(left)), np.arange(len(right))),  # every row: no prefilter
    )
    every = decontam.one_word_leaks(tr, te, min_words=min_words, same_label=True)
    assert fast.height > 0 and fast.equals(every)
