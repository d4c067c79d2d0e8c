"""PII detection and masking (curation/pii.py): each listed format, look-alikes, the labelled
file's precision/recall floors, and the options."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from benchmarks.pii_quality import CASES, expected_spans, load_cases, score
from curation.pii import find_pii, iban_valid, known_iin, luhn_valid, mask_pii, mask_text, normalise
from schemas.params import ParamsError, params_from_dict
from schemas.review_params import PII_KINDS, PiiParams

PII = PiiParams()
FLOOR = 0.95  # precision and recall, per kind, on the labelled file
BANKING77 = Path(os.environ.get("BANKING77_DIR", "/work/shared/data/banking77"))
_CASES = load_cases(CASES)
_HARD = [c for c in _CASES if c["source"] == "hard"]


def _mask(text: str, cfg: PiiParams = PII) -> tuple[str, dict[str, int]]:
    masked, counts = mask_pii(pl.Series("text", [text]), cfg=cfg)
    return masked[0], counts


@pytest.mark.parametrize("case", _HARD, ids=[f"{c['note']}: {c['text'][:30]}" for c in _HARD])
def test_every_hard_case(case: dict) -> None:
    got = {(s.start, s.end, s.kind) for s in find_pii(case["text"], cfg=PII)}
    assert got == expected_spans(case)


def test_labelled_file_meets_floors() -> None:
    kinds = {k for c in _CASES for k, _ in c["pii"]}
    assert len(_CASES) >= 200 and kinds == set(PII_KINDS)
    assert sum(not c["pii"] for c in _CASES) >= 100  # negatives: dates, refs, amounts, Banking77
    result = score(_CASES, PII)
    for kind, metrics in result["per_kind"].items():
        assert metrics["tp"] >= 40, kind
        assert metrics["precision"] >= FLOOR, (kind, metrics, result["failures"])
        assert metrics["recall"] >= FLOOR, (kind, metrics, result["failures"])


@pytest.mark.skipif(not (BANKING77 / "train.csv").exists(), reason="Banking77 not available")
def test_banking77_has_nothing_to_mask() -> None:
    texts = pl.read_csv(BANKING77 / "train.csv")["text"]
    masked, counts = mask_pii(texts, cfg=PII)
    assert masked.equals(texts) and sum(counts.values()) == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to john.doe+bank@example.co.uk please", "write to [EMAIL] please"),
        ("mail o'brien@example.com", "mail [EMAIL]"),
        ("call +44 20 7946 0958 now", "call [PHONE] now"),
        ("call 1-800-555-0199", "call [PHONE]"),
        ("us 555.123.4567", "us [PHONE]"),
        ("card4111111111111111", "card[CARD]"),
        ("card 4111\u00a01111\u00a01111\u00a01111 lost", "card [CARD] lost"),
        ("send to DE89-3704-0044-0532-0130-00", "send to [IBAN]"),
        ("iban de89 3704 0044 0532 0130 00", "iban [IBAN]"),
        ("ref 2024-0115-1234-5678", "ref 2024-0115-1234-5678"),
        ("order 4111111111111111", "order 4111111111111111"),
        ("the score was 0.4221165755827173", "the score was 0.4221165755827173"),  # a decimal's fraction
        ("ratio 3,4111111111111111 today", "ratio 3,4111111111111111 today"),
        ("card 4111.1111.1111.1111", "card [CARD]"),  # dots between groups: still a card
    ],
)
def test_mask_text_replaces_the_original_span(text: str, expected: str) -> None:
    assert mask_text(text, cfg=PII)[0] == expected


def test_unicode_is_matched_normalised_but_kept_outside_spans() -> None:
    text = "tel\u00a0+44\u00a020\u00a07946\u00a00958\u00a0\u2011 thanks"
    assert len(normalise(text)) == len(text)
    masked, counts = _mask(text)
    assert masked == "tel\u00a0[PHONE]\u00a0\u2011 thanks"
    assert counts["phone"] == 1


def test_mask_pii_counts_nulls_and_config() -> None:
    texts = pl.Series("text", ["a@b.com and c@d.org", None, "+44 20 7946 0958", "plain"])
    masked, counts = mask_pii(texts, cfg=PII)
    assert masked.to_list() == ["[EMAIL] and [EMAIL]", None, "[PHONE]", "plain"]
    assert counts == {"email": 2, "phone": 1, "card": 0, "iban": 0}
    assert masked.name == "text"
    only_email = PiiParams(kinds=("email",), placeholder="<{kind}>")
    masked, counts = mask_pii(texts, cfg=only_email)
    assert masked[0] == "<EMAIL> and <EMAIL>" and masked[2] == "+44 20 7946 0958"
    assert counts == {"email": 2}
    masked, counts = mask_pii(texts, cfg=PiiParams(enabled=False))
    assert masked.to_list() == texts.to_list() and sum(counts.values()) == 0
    empty, counts = mask_pii(pl.Series("text", [], pl.String), cfg=PII)
    assert empty.is_empty() and sum(counts.values()) == 0


def test_mask_pii_is_idempotent() -> None:
    once, _ = _mask("mail a@b.com card 4111111111111111 tel +44 20 7946 0958 iban DE89370400440532013000")
    assert once == "mail [EMAIL] card [CARD] tel [PHONE] iban [IBAN]"
    twice, counts = _mask(once)
    assert twice == once and sum(counts.values()) == 0


def test_context_options_decide_ambiguous_numbers() -> None:
    # a bare national number needs a phone keyword; without the keyword list it stays
    assert _mask("call me on 5551234567")[0] == "call me on [PHONE]"
    no_keywords = PiiParams(phone_keywords=("zzz",))
    assert _mask("call me on 5551234567", no_keywords)[0] == "call me on 5551234567"
    # a card keyword beats a reference keyword; the window bounds how far back it counts
    assert _mask("card for order 4111111111111111")[0] == "card for order [CARD]"
    short_window = PiiParams(context_chars=8)
    assert _mask("card for order 4111111111111111", short_window)[0].endswith("4111111111111111")
    # a US-only region set still finds a UK number written internationally
    assert _mask("ring +44 20 7946 0958", PiiParams(phone_regions=("US",)))[0] == "ring [PHONE]"


def test_checksums_and_iin() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert not luhn_valid("") and not luhn_valid("4111 1111")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82WEST12345698765433")
    assert iban_valid("de89\u00a03704-0044-0532-0130-00")
    assert known_iin("4111111111111111") and known_iin("378282246310005") and known_iin("2223003122003222")
    assert not known_iin("2024011512345678") and not known_iin("41111111111111")  # 14-digit Visa


def test_pii_params_checked() -> None:
    with pytest.raises(ParamsError, match="kinds"):
        params_from_dict({"labelstudio": {"pii": {"kinds": ["ssn"]}}})
    with pytest.raises(ParamsError, match="phone_regions"):
        params_from_dict({"labelstudio": {"pii": {"phone_regions": ["XX"]}}})
    with pytest.raises(ParamsError, match="idempotent"):
        params_from_dict({"labelstudio": {"pii": {"placeholder": "<{kind}1>"}}})
    cfg = params_from_dict(
        {"labelstudio": {"pii": {"phone_regions": ["DE"], "card_keywords": ["karte"]}}}
    ).labelstudio
    assert cfg.pii.phone_regions == ("DE",) and cfg.pii.card_keywords == ("karte",)
