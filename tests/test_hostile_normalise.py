"""Hostile input: copies disguised with invisible characters, look-alike letters and case.

Normalisation is shared by exact dedup keys, MinHash shingles and decontamination, so a
disguise that normalises away is caught by all three, and by the leak counter.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curation.decontam import count_test_leaks, remove_test_leaks
from curation.dedup import dedup_key, drop_duplicates
from curation.minhash import confusable_skeletons, normalize_text, signatures
from schemas.params import DecontamParams, DedupParams

ORIGINAL = "Why has my top-up not arrived yet? I paid with a card."
CYRILLIC = str.maketrans("aeocpAEOCP", "аеосрАЕОСР")  # Cyrillic а е о с р look-alikes


def _zero_width_between_chars(text: str) -> str:
    return "\u200b".join(text)


def _zero_width_after_spaces(text: str) -> str:
    return text.replace(" ", " \u200b")


def _soft_hyphens(text: str) -> str:
    return "\u00ad".join(text)


def _cyrillic_look_alikes(text: str) -> str:
    return text.translate(CYRILLIC)


def _greek_look_alikes(text: str) -> str:
    return text.translate(str.maketrans("aoi", "αοι"))


def _every_trick(text: str) -> str:
    """Upper case (casefold), look-alikes, a word joiner and a BOM at once."""
    return "\ufeff" + _cyrillic_look_alikes(text.upper()).replace(" ", "\u2060 ")


DISGUISES = {
    "zero_width_between_chars": _zero_width_between_chars,
    "zero_width_after_spaces": _zero_width_after_spaces,
    "soft_hyphens": _soft_hyphens,
    "cyrillic_look_alikes": _cyrillic_look_alikes,
    "greek_look_alikes": _greek_look_alikes,
    "every_trick": _every_trick,
}


def _norm(texts: list[str]) -> list[str]:
    return pl.DataFrame({"t": texts}).select(normalize_text(pl.col("t")))["t"].to_list()


def _keys(texts: list[str]) -> list[str]:
    return pl.DataFrame({"t": texts}).select(dedup_key(pl.col("t")))["t"].to_list()


def _frame(texts: list[str], *, prefix: str = "r", split: str = "train") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [f"{prefix}{i}" for i in range(len(texts))],
            "split": split,
            "line": list(range(1, len(texts) + 1)),
            "text": texts,
            "label": "card_arrival",
            "text_hash": [f"h{prefix}{i}" for i in range(len(texts))],
        }
    )


UNRELATED = ["How do I change my PIN?", "Which currencies can I hold?"]


@pytest.mark.parametrize("disguise", sorted(DISGUISES))
def test_a_disguised_copy_normalises_to_the_original(disguise: str) -> None:
    disguised = DISGUISES[disguise](ORIGINAL)
    assert disguised != ORIGINAL
    norm = _norm([ORIGINAL, disguised])
    assert norm[1] == norm[0]
    assert _keys([disguised]) == _keys([ORIGINAL])


def test_case_folding_is_casefold_not_lower() -> None:
    # lower() keeps "ß" and the final sigma; casefold() makes them equal to "ss" and "σ"
    assert _norm(["STRASSE", "Straße", "ΣΟΦΟΣ", "σοφος"]) == [
        *_norm(["strasse"]) * 2,
        *_norm(["σοφοσ"]) * 2,
    ]


def test_disguised_test_rows_are_removed_by_decontam() -> None:
    train = _frame([f(ORIGINAL) for f in DISGUISES.values()] + UNRELATED)
    test = _frame([ORIGINAL, "Can I get a refund?"], prefix="t", split="test")
    result = remove_test_leaks(train, test, cfg=DecontamParams(), minhash=DedupParams())
    removed = result.removed.sort("id")
    assert removed["id"].to_list() == [f"r{i}" for i in range(len(DISGUISES))]
    assert set(removed["reason"]) == {"test_leak"}
    assert set(removed["duplicate_of"]) == {"t0"}
    # exact after normalisation, not merely similar
    assert removed["detail"].str.contains(r"Jaccard 1\.0").all()
    assert result.kept["text"].to_list() == UNRELATED
    assert result.kept.height + result.removed.height == train.height


def test_leak_counter_counts_disguised_copies_when_decontam_is_skipped() -> None:
    train = _frame([f(ORIGINAL) for f in DISGUISES.values()] + UNRELATED)
    test = _frame([ORIGINAL], prefix="t", split="test")
    assert count_test_leaks(train, test) == len(DISGUISES)
    near = {"cfg": DecontamParams(), "minhash": DedupParams()}
    assert count_test_leaks(train, test, **near) == len(DISGUISES)
    cleaned = remove_test_leaks(train, test, **near).kept
    assert count_test_leaks(cleaned, test) == 0
    assert count_test_leaks(cleaned, test, **near) == 0


def test_leak_counter_needs_both_near_sections() -> None:
    frame = _frame([ORIGINAL])
    with pytest.raises(ValueError, match="both cfg and minhash"):
        count_test_leaks(frame, frame, cfg=DecontamParams())


def test_disguised_copies_are_exact_duplicates_in_dedup() -> None:
    train = _frame([ORIGINAL] + [f(ORIGINAL) for f in DISGUISES.values()] + UNRELATED)
    result = drop_duplicates(train, cfg=DedupParams())
    assert result.kept["text"].to_list() == [ORIGINAL, *UNRELATED]
    assert set(result.removed["reason"]) == {"exact_duplicate"}
    assert set(result.removed["duplicate_of"]) == {"r0"}
    assert result.removed.height == len(DISGUISES)


def test_disguised_copies_have_the_same_minhash_signature() -> None:
    norm = _norm([ORIGINAL] + [f(ORIGINAL) for f in DISGUISES.values()])
    sig = signatures(norm, kind="char", ngram=5, num_perm=64, seed=1)
    assert (sig == sig[0]).all()


RUSSIAN = "Моя карта ещё не пришла, что делать?"


def test_a_cyrillic_sentence_keeps_its_letters_and_dedups_against_itself() -> None:
    texts = [
        RUSSIAN,
        RUSSIAN.upper(),  # the same Russian text in capitals
        _zero_width_between_chars(RUSSIAN),  # and disguised
        RUSSIAN.replace("а", "a"),  # with Latin "a" for Cyrillic "а": a mixed-script copy
        "Moya karta eshchyo ne prishla, chto delat?",  # its transliteration: another text
        "Mon kapta ewe he npnwla, yto delat?",  # Latin letters shaped like it: another text
        *UNRELATED,
    ]
    result = drop_duplicates(_frame(texts), cfg=DedupParams())
    assert sorted(result.removed["id"].to_list()) == ["r1", "r2", "r3"]
    assert set(result.removed["duplicate_of"]) == {"r0"}
    # Cyrillic letters without a Latin look-alike are not rewritten into anything else
    key = _norm([RUSSIAN])[0]
    assert all(ch in key for ch in "мяктщнилд")


def test_a_greek_sentence_does_not_collide_with_latin_text() -> None:
    greek = "Η κάρτα μου δεν έφτασε ακόμα"
    keys = _keys([greek, greek.upper(), "H kapta moy den eftase akoma", *UNRELATED])
    assert keys[0] == keys[1]
    assert len(set(keys)) == len(keys) - 1


def test_skeleton_table_leaves_ascii_alone_and_is_a_fixpoint() -> None:
    table = confusable_skeletons()
    assert table["а"] == "a" and table["ο"] == "o" and table["ß"] == "ss"
    assert not any(ord(c) < 128 for c in table)  # "0", "1", "m" keep their meaning
    for value in table.values():
        assert "".join(table.get(ch, ch) for ch in value) == value
        assert value == value.casefold()


def test_normalisation_is_deterministic_across_table_builds() -> None:
    texts = [f(ORIGINAL) for f in DISGUISES.values()] + [RUSSIAN, "ünïcödé テキスト 😀 ß"]
    first = _norm(texts)
    table = dict(confusable_skeletons())
    confusable_skeletons.cache_clear()
    assert confusable_skeletons() == table
    assert _norm(texts) == first
    np.testing.assert_array_equal(
        signatures(first, kind="char", ngram=5, num_perm=32, seed=1),
        signatures(_norm(texts), kind="char", ngram=5, num_perm=32, seed=1),
    )


def test_dedup_keys_of_a_series_equal_the_expression() -> None:
    from curation.dedup import dedup_keys

    texts = [ORIGINAL, *(f(ORIGINAL) for f in DISGUISES.values()), *UNRELATED]
    texts += ["???", "!!!", "?\u200b??", "", "  ", "ß", "ＦＵＬＬ width", "\u00ad", "a\x1cb", "Ǆ ǅ", None]
    series = pl.Series("text", texts, dtype=pl.String)
    expected = series.to_frame().select(dedup_key(pl.col("text"))).to_series()
    assert dedup_keys(series).to_list() == expected.to_list()


def test_strip_punctuation_equals_the_plain_run_pattern() -> None:
    """strip_punctuation matches only the runs that change (not a lone space): on random
    strings of spaces, other whitespace, punctuation, symbols and letters it gives the
    strings of the plain ``[P S \\s]+ -> " "`` replacement."""
    import random

    from curation.minhash import strip_punctuation

    rnd = random.Random(0)
    alphabet = list(
        " \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000 ab.,!?-'\"$+^`|~_()[]{}\u00e9\u2014\u201c\U0001f600"
    )
    texts = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12))) for _ in range(20_000)]
    frame = pl.DataFrame({"t": texts})
    got = frame.select(strip_punctuation(pl.col("t")))["t"]
    plain = frame.select(pl.col("t").str.replace_all(r"[\p{P}\p{S}\s]+", " ").str.strip_chars())["t"]
    assert got.equals(plain)
    assert got.str.contains("  ").sum() == 0 and (got != frame["t"]).sum() > 10_000


def test_the_skeleton_table_of_some_texts_is_the_whole_table_restricted() -> None:
    """dedup_keys builds the table of the characters its texts hold: the same entries as the
    whole table for those characters (confusables, case folds, marks, scripts, ASCII)."""
    import random

    from curation.minhash import confusable_skeletons_of

    full = confusable_skeletons()
    rnd = random.Random(0)
    sample = rnd.sample(sorted(full), 2000) + [chr(c) for c in range(0x20, 0x3000, 7)]
    texts = ["".join(sample[i : i + 50]) for i in range(0, len(sample), 50)] + [ORIGINAL, *UNRELATED]
    chars = set("".join(texts))
    restricted = confusable_skeletons_of(texts)
    assert restricted == {c: v for c, v in full.items() if c in chars}
    assert len(restricted) > 1000 and confusable_skeletons_of([]) == {}
