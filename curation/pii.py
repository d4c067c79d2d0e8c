"""PII detection and masking for text that leaves the machine (Label Studio tasks).

Detect first, then mask: :func:`find_pii` returns spans, :func:`mask_text` and :func:`mask_pii`
replace them. Libraries do the checking: ``phonenumbers`` (Google's libphonenumber) finds and
checks phone numbers, ``python-stdnum`` checks IBANs (mod 97 and each country's BBAN layout)
and the Luhn digit of cards. Presidio was not used: its analyzer needs a spaCy model fetched
from the net, and its pattern recognisers are the same regex + checksum ideas as below.

Matching runs on a normalised copy of the text in which every unicode space, zero-width
character and hyphen look-alike (no-break space, U+202F, U+2011 non-breaking hyphen, en dash,
minus, full-width digits ...) is replaced by its ASCII counterpart *one character for one*, so
offsets are unchanged and the original span is masked.

Decisions (what counts, and why):
- e-mail: ``local@domain.tld`` with unicode letters anywhere (internationalised addresses),
  the RFC 5322 atom characters in the local part (``o'brien``, ``a+tag``), a TLD of >= 2
  letters or ``xn--``; ``user@localhost`` is not an address that leaves a bank's inbox.
- IBAN: two letters, two digits, then letters/digits with optional single spaces, dashes
  or dots, any case, glued to a word or not; accepted only if python-stdnum validates it
  (mod 97 *and* the country's BBAN format), the longest valid prefix wins.
- card: a run of 13-19 digits grouped by up to two spaces/dashes/dots (or none), glued to a
  word or not, that passes Luhn *and* either has a card keyword (``card``, ``visa`` ...)
  shortly before it, or starts with a known scheme's IIN at a length that scheme issues, or
  is grouped the way cards are printed (4-4-4-4, 4-6-5, 4-4-4-4-3). A run right after an
  order/reference keyword (``order no.``, ``ref``) is that reference, unless a card keyword
  is also near. So ``ref 2024-0115-1234-5678`` and a Luhn-valid order number stay.
- phone: whatever ``phonenumbers.PhoneNumberMatcher`` finds (leniency POSSIBLE) for any
  region of ``phone_regions``, if it is its whole digit run (not the tail of a longer
  reference), not a date, ``phone_min_digits``-``phone_max_digits`` digits long, and either
  written internationally (``+``/``00``), or formatted (spaces, dashes, dots, brackets), or a
  bare run that libphonenumber calls valid and starts with a trunk prefix (``07946095812``),
  or any bare run with a phone keyword (``call``, ``phone`` ...) shortly before it
  (``call me on 5551234567``). A bare ``order 7946095812`` stays.
Placeholders contain no digits and no ``@``, so masking is idempotent.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
import polars as pl
from stdnum import iban as std_iban
from stdnum import luhn as std_luhn

from schemas.review_params import PiiParams

# --- normalisation (one character for one, so spans map back to the original) -------------

_SPACES = "\t\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
_HYPHENS = "\u00ad\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
_FULLWIDTH_DIGITS = "".join(chr(0xFF10 + i) for i in range(10))
_NORMALISE = str.maketrans(
    _SPACES + _ZERO_WIDTH + _HYPHENS + _FULLWIDTH_DIGITS + "\uff0b\uff20\uff0e",
    " " * (len(_SPACES) + len(_ZERO_WIDTH)) + "-" * len(_HYPHENS) + "0123456789" + "+@.",
)
# rows without any of these cannot hold PII: skipped without a Python call
_MAYBE_PII = r"[@＠0-9０-９]"


def normalise(text: str) -> str:
    """Unicode spaces -> ' ', hyphen look-alikes -> '-', full-width digits -> ASCII; same length."""
    return text.translate(_NORMALISE)


# --- patterns -------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])"
    r"\w[\w.!#$%&'*+/=?^`{|}~-]*"  # local part: RFC 5322 atoms, unicode letters allowed
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"  # domain labels
    r"(?:[^\W\d_]{2,}|xn--[a-z0-9-]+)"  # TLD: letters, or punycode
    r"(?!\w)"
)
_IBAN_START = re.compile(r"(?<![0-9])[A-Za-z]{2}[0-9]{2}")
_IBAN_BODY = re.compile(r"(?:[ .-]?[A-Za-z0-9])+")
# digit runs joined by up to two separators; groups are judged afterwards
_DIGIT_RUN = re.compile(r"\d+(?:[ .-]{1,2}\d+)*")
# a phone's run may also cross brackets: +44 (0)20 7946 0958
_PHONE_RUN = re.compile(r"\d+(?:[ .()/-]{1,3}\d+)*")
_DATE = re.compile(r"\d{4}([-./ ])\d{1,2}\1\d{1,2}|\d{1,2}([-./ ])\d{1,2}\2\d{4}")
_CARD_GROUPINGS = {(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 4, 2), (4, 4, 4, 1)}
_TRUNK_PREFIXES = ("0", "1")

# Issuer identification numbers of the schemes in use (ISO/IEC 7812 prefixes, as published by
# the schemes): (first, last) prefix of a given width, and the lengths that scheme issues.
_IIN_RANGES: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)),  # Mastercard
    (2221, 2720, (16,)),  # Mastercard 2-series
    (34, 34, (15,)),  # American Express
    (37, 37, (15,)),
    (6011, 6011, (16, 17, 18, 19)),  # Discover
    (644, 649, (16, 17, 18, 19)),
    (65, 65, (16, 17, 18, 19)),
    (3528, 3589, (16, 17, 18, 19)),  # JCB
    (300, 305, (14, 15, 16, 17, 18, 19)),  # Diners Club
    (36, 36, (14, 15, 16, 17, 18, 19)),
    (38, 39, (16, 17, 18, 19)),
    (62, 62, (16, 17, 18, 19)),  # UnionPay
    (50, 50, (13, 14, 15, 16, 17, 18, 19)),  # Maestro
    (56, 69, (13, 14, 15, 16, 17, 18, 19)),
)


@dataclass(frozen=True)
class PiiSpan:
    """One detected piece of PII: ``text[start:end]`` is of ``kind``."""

    start: int
    end: int
    kind: str


def luhn_valid(digits: str) -> bool:
    """True if a digit string passes the Luhn checksum (payment card numbers do)."""
    return bool(digits) and digits.isdigit() and std_luhn.is_valid(digits)


def iban_valid(candidate: str) -> bool:
    """True if ``candidate`` (any case; spaces, dashes, dots allowed) is a valid IBAN."""
    return bool(std_iban.is_valid(normalise(candidate)))


def known_iin(digits: str) -> bool:
    """True if ``digits`` starts with a card scheme's IIN and has a length that scheme issues."""
    for lo, hi, lengths in _IIN_RANGES:
        width = len(str(lo))
        if len(digits) in lengths and lo <= int(digits[:width]) <= hi:
            return True
    return False


def _keyword_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")", re.IGNORECASE)


@dataclass(frozen=True)
class _Context:
    card: re.Pattern[str]
    phone: re.Pattern[str]
    reference: re.Pattern[str]  # matches at the very end of the text before a number
    window: int


@functools.lru_cache(maxsize=8)
def _context(cfg: PiiParams) -> _Context:
    ref = "|".join(re.escape(w) for w in cfg.reference_keywords)
    return _Context(
        card=_keyword_pattern(cfg.card_keywords),
        phone=_keyword_pattern(cfg.phone_keywords),
        reference=re.compile(
            rf"\b(?:{ref})\b(?:\s*(?:no|nr|num|number|id|code)\b)?[\s:#.=-]{{0,3}}$", re.IGNORECASE
        ),
        window=cfg.context_chars,
    )


def _before(norm: str, start: int, ctx: _Context) -> str:
    return norm[max(0, start - ctx.window) : start]


# --- detectors (each returns candidate spans on the normalised text) --------------------------


def _emails(norm: str) -> list[PiiSpan]:
    if "@" not in norm:
        return []
    return [PiiSpan(m.start(), m.end(), "email") for m in _EMAIL.finditer(norm)]


def _ibans(norm: str) -> list[PiiSpan]:
    spans = []
    pos = 0
    for m in _IBAN_START.finditer(norm):
        if m.start() < pos:
            continue
        body = _IBAN_BODY.match(norm, m.end())
        end = body.end() if body else m.end()
        # the longest prefix that validates, ends after a letter or digit
        ends = [m.end() + i + 1 for i, c in enumerate(norm[m.end() : end]) if c.isalnum()]
        for stop in reversed(ends):
            if std_iban.is_valid(norm[m.start() : stop]):
                spans.append(PiiSpan(m.start(), stop, "iban"))
                pos = stop
                break
    return spans


def _card_ok(digits: str, groups: tuple[int, ...], before: str, ctx: _Context) -> bool:
    if not luhn_valid(digits):
        return False
    if ctx.card.search(before):
        return True
    if ctx.reference.search(before):
        return False
    return known_iin(digits) or groups in _CARD_GROUPINGS


def _cards(norm: str, cfg: PiiParams, ctx: _Context) -> list[PiiSpan]:
    spans = []
    for run in _DIGIT_RUN.finditer(norm):
        parts = list(re.finditer(r"\d+", run.group(0)))
        if sum(len(p.group(0)) for p in parts) < cfg.card_min_digits:
            continue
        # the whole run first, then shorter windows of whole groups (a card then a year)
        n = len(parts)
        windows = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + cfg.card_max_digits) + 1)]
        used: set[int] = set()
        for i, j in sorted(windows, key=lambda w: (w[0] - w[1], w[0])):
            if used.intersection(range(i, j)):
                continue
            groups = tuple(len(p.group(0)) for p in parts[i:j])
            if not cfg.card_min_digits <= sum(groups) <= cfg.card_max_digits:
                continue
            start, end = run.start() + parts[i].start(), run.start() + parts[j - 1].end()
            if start >= 2 and norm[start - 1] in ".," and norm[start - 2].isdigit():
                continue  # the fraction of a decimal number (0.4221165755827173), not a card
            digits = "".join(p.group(0) for p in parts[i:j])
            if _card_ok(digits, groups, _before(norm, start, ctx), ctx):
                spans.append(PiiSpan(start, end, "card"))
                used.update(range(i, j))
    return spans


def _phones(norm: str, cfg: PiiParams, ctx: _Context) -> list[PiiSpan]:
    runs = [(m.start(), m.end()) for m in _PHONE_RUN.finditer(norm)]
    found: dict[tuple[int, int], PiiSpan] = {}
    for region in cfg.phone_regions:
        for match in phonenumbers.PhoneNumberMatcher(norm, region, leniency=phonenumbers.Leniency.POSSIBLE):
            key = (match.start, match.end)
            if key in found:
                continue
            raw = match.raw_string
            digits = re.sub(r"\D", "", raw)
            if not cfg.phone_min_digits <= len(digits) <= cfg.phone_max_digits or _DATE.fullmatch(raw):
                continue
            first = re.search(r"\d", raw)
            assert first is not None  # a match always holds digits
            digit_start = match.start + first.start()
            run = next(((s, e) for s, e in runs if s <= digit_start < e), None)
            if run is not None and len(re.sub(r"\D", "", norm[run[0] : run[1]])) != len(digits):
                continue  # the tail or head of a longer number (a reference, a failed card)
            international = raw.startswith("+") or raw.startswith("00")
            formatted = not raw.isdigit()
            bare_valid = raw.startswith(_TRUNK_PREFIXES) and phonenumbers.is_valid_number(match.number)
            keyword = bool(ctx.phone.search(_before(norm, match.start, ctx)))
            if international or formatted or bare_valid or keyword:
                found[key] = PiiSpan(match.start, match.end, "phone")
    return list(found.values())


def find_pii(text: str, *, cfg: PiiParams) -> list[PiiSpan]:
    """Spans of PII in ``text`` (offsets into ``text`` itself), sorted, non-overlapping.

    Kinds are tried e-mail, IBAN, card, phone; a later kind's span that overlaps an earlier
    one's is dropped (an IBAN or card holds digit runs a phone matcher would also take).
    """
    if not cfg.enabled:
        return []
    norm = normalise(text)
    ctx = _context(cfg)
    n_digits = sum(c.isdigit() for c in norm)
    detectors: dict[str, Callable[[], list[PiiSpan]]] = {
        "email": lambda: _emails(norm),
        "iban": lambda: _ibans(norm),
        "card": lambda: _cards(norm, cfg, ctx) if n_digits >= cfg.card_min_digits else [],
        "phone": lambda: _phones(norm, cfg, ctx) if n_digits >= cfg.phone_min_digits else [],
    }
    chosen: list[PiiSpan] = []
    for kind in ("email", "iban", "card", "phone"):
        if kind not in cfg.kinds:
            continue
        for span in detectors[kind]():
            if all(span.end <= c.start or span.start >= c.end for c in chosen):
                chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def mask_text(text: str, *, cfg: PiiParams) -> tuple[str, dict[str, int]]:
    """``text`` with every PII span replaced by ``cfg.placeholder``, and counts per kind."""
    counts = dict.fromkeys(cfg.kinds, 0)
    out, pos = [], 0
    for span in find_pii(text, cfg=cfg):
        out.append(text[pos : span.start])
        out.append(cfg.placeholder.format(kind=span.kind.upper()))
        counts[span.kind] += 1
        pos = span.end
    out.append(text[pos:])
    return "".join(out), counts


def mask_pii(texts: pl.Series, *, cfg: PiiParams) -> tuple[pl.Series, dict[str, int]]:
    """Replace e-mails, phone numbers, card numbers and IBANs in a string series.

    Rows without a digit or an ``@`` are skipped in one vectorised test; the rest go through
    :func:`mask_text`.

    Args:
        texts: String series; nulls stay null.
        cfg: Which kinds to mask, the placeholder (``[{kind}]`` -> ``[EMAIL]``), regions and
            context keywords.

    Returns:
        The masked series (same name and length) and the number of spans masked per kind.
    """
    counts = dict.fromkeys(cfg.kinds, 0)
    if not cfg.enabled or texts.is_empty():
        return texts.clone(), counts
    maybe = texts.str.contains(_MAYBE_PII).fill_null(False).to_list()
    out: list[str | None] = []
    for value, check in zip(texts.to_list(), maybe, strict=True):
        if not check:
            out.append(value)
            continue
        masked, found = mask_text(value, cfg=cfg)
        out.append(masked)
        for kind, n in found.items():
            counts[kind] += n
    return pl.Series(texts.name, out, dtype=pl.String), counts
