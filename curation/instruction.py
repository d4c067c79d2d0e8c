"""Instruction and chat data quality checks: pure detectors over (prompt ``text``, ``response``).

In the style of datatrove's Gopher/C4 filters and Data-Juicer's ops, each check is a snake_case
code (schemas.instruction_params.INSTRUCTION_CHECKS) with its threshold in params.yaml. Detect
first: :func:`detect_instruction_issues` adds, per check, a boolean column ``<check>``, a score
``<check>_score`` and a human ``<check>_why``; curation.policy.apply_instruction_policy decides.
Everything is a polars expression except PII (curation/pii.py, per candidate row); the language
of each response comes from a model run outside (flows/language.py), on the texts
:func:`language_inputs` prepares.

Rules (what counts, and why):
- ``empty_response``: no letter or digit once markup and template tokens are removed, or a
  placeholder (``N/A``, ``TODO``...). Whitespace-only responses never get here (validation
  quarantines them as ``empty_response``).
- ``short_response``: fewer than ``min_response_words`` words ("Yes, within 24 hours." is fine).
- ``prompt_echo``: the response's distinct words come from the prompt (share >=
  ``max_prompt_overlap``) *and* cover at least half of the prompt's: a short answer that
  quotes two words of the question is not an echo.
- ``repetitive_response``: Gopher's duplicate line fraction over sentences and lines
  (``max_duplicate_segment_fraction``) or Data-Juicer's word n-gram repetition ratio (share of
  n-gram occurrences whose n-gram occurs more than once, ``max_ngram_repetition``); code blocks
  are left out (code legitimately repeats lines).
- ``non_target_language``: the detected language is not in ``target_languages`` with
  probability >= ``min_language_confidence``; responses under ``language_min_words`` words are
  not judged.
- ``template_tokens``: chat-template tokens (``<|im_start|>``, ``[INST]``, ``<</SYS>>``,
  ``</s>``), ``{{ }}``/``{% %}`` placeholders and ``[Your Name]``-style fill-ins in the prompt
  or the response, and ``### Response:`` headers or ``Assistant:`` role prefixes in the response
  (a chat prompt may render its history that way), outside code.
- ``markup``: HTML tags and entities in the response, outside code blocks and inline code.
- ``refusal``: boilerplate AI refusals (``refusal_phrases``, case-insensitive); an apology
  followed by help ("I'm sorry to hear that ...") is not one.
- ``truncated_response``: an open code fence, more opening than closing brackets, a
  ``max_response_chars`` cap reached, or (from ``truncation_min_words`` words) an ending
  without terminal punctuation, or one on a comma, colon or function word ("... and the").
  A closing code fence, a list item, a table row, a URL or an emoji is a valid ending.
- ``pii_in_response``: an e-mail, phone, card or IBAN (curation/pii.py's rules).
"""

from __future__ import annotations

import polars as pl

from curation.pii import find_pii
from schemas.instruction_params import INSTRUCTION_CHECKS, InstructionParams
from schemas.review_params import PiiParams

# fenced code blocks (an unclosed fence runs to the end) and inline code
_CODE = r"(?s)```.*?(?:```|\z)|`[^`\n]*`"
# special tokens and placeholders: wrong in a prompt or a response
_TEMPLATE_TOKENS = (
    r"(?i)<\|[a-z_][a-z0-9_]*\|>"  # <|im_start|>, <|endoftext|>, <|eot_id|>
    r"|\[/?INST\]|<</?SYS>>|</?s>"  # Llama-2 chat
    r"|\{\{[^{}\n]*\}\}|\{%[^%\n]*%\}"  # Jinja/Handlebars placeholders
    r"|\[(?:your|customer|user|insert|recipient)(?:'s)?[ _][^\]\n]{1,30}\]"  # [Your Name]
)
# ... and in a response also headers and role prefixes (a chat prompt may render its history so)
_TEMPLATE = (
    _TEMPLATE_TOKENS
    + r"|(?im:^[ \t]*#{2,}[ \t]*(?:instruction|response|input|output|human|assistant|answer|question)\b)"
    + r"|(?im:^[ \t]*(?:human|assistant|gpt)[ \t]*:)"  # ShareGPT/Anthropic role prefixes
)
_HTML_TAGS = (
    "html|head|body|div|span|p|br|hr|b|i|u|em|strong|a|ul|ol|li|table|thead|tbody|tr|td|th|img"
    "|font|h[1-6]|pre|code|script|style|iframe|blockquote|sup|sub|small|center|section|article"
    "|nav|header|footer|label|input|button|form|select|option|textarea|meta|link"
)
_MARKUP = (
    rf"(?i)</?(?:{_HTML_TAGS})(?:\s[^<>]*)?/?>|&(?:nbsp|amp|lt|gt|quot|apos|#\d{{2,5}}|#x[0-9a-f]{{2,4}});"
)
_WORD = r"[\p{L}\p{N}]+(?:['’][\p{L}]+)?"
_TERMINAL = r"(?:[.!?…。！？)\"'»”’\]}*`>~]|\p{Extended_Pictographic}|https?://\S+)\s*\z"
_LIST_ITEM = r"^\s*(?:[-*•+]|\d+[.)])\s+\S|^\s*\|"
_DANGLING = (
    r"(?i)(?:[,;:(\-–]|\b(?:and|or|but|the|a|an|to|of|with|for|in|on|at|by|from|your|our|is|are|"
    r"that|which|if|then|so|as|will|can|be|this|please))\s*\z"
)
# rows without an "@", an IBAN's start or 8+ digits (the shortest phone) cannot hold PII: no Python call
_MAYBE_EMAIL_OR_IBAN = r"[@＠]|[A-Za-z]{2}[0-9]{2}"
_PII_MIN_DIGITS = 8


def _strip_code(col: pl.Expr) -> pl.Expr:
    return col.str.replace_all(_CODE, " ")


def _plain(col: pl.Expr) -> pl.Expr:
    """The prose of a text: no code, no markup, no template tokens."""
    return _strip_code(col).str.replace_all(_TEMPLATE, " ").str.replace_all(_MARKUP, " ")


def _words(col: pl.Expr) -> pl.Expr:
    return col.str.to_lowercase().str.extract_all(_WORD)


def language_inputs(frame: pl.DataFrame, *, cfg: InstructionParams) -> pl.Series:
    """The response prose a language detector should judge: null where too short to tell.

    Code, markup and template tokens removed, whitespace collapsed, cut at ``language_max_chars``.
    """
    prose = _plain(pl.col("response").fill_null("")).str.replace_all(r"\s+", " ").str.strip_chars()
    return frame.select(
        pl.when(_words(prose).list.len() >= cfg.language_min_words)
        .then(prose.str.slice(0, cfg.language_max_chars))
        .otherwise(None)
        .alias("language_input")
    ).to_series()


def _ngram_repetition(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    """Per ``_row``: the share of word n-gram occurrences whose n-gram occurs more than once."""
    long = frame.select("_row", "_words").explode("_words").drop_nulls("_words")
    # exploded rows stay in order: a plain shift is the next word when it is the same row's
    same_row = [pl.col("_row").shift(-k) == pl.col("_row") for k in range(n)]
    gram = pl.concat_str(
        [pl.when(same).then(pl.col("_words").shift(-k)) for k, same in enumerate(same_row)], separator=" "
    )
    # grouped by a 64-bit hash of the n-gram (2x faster than by the string; only counts depend on it)
    grams = long.select("_row", gram.alias("_gram")).drop_nulls("_gram")
    counts = grams.select("_row", pl.col("_gram").hash(seed=0)).group_by("_row", "_gram").len()
    return counts.group_by("_row").agg(
        (pl.col("len").filter(pl.col("len") > 1).sum() / pl.col("len").sum()).alias("_ngram_rep")
    )


def _pii(responses: pl.Series, cfg: InstructionParams) -> tuple[list[int], list[str | None]]:
    pii_cfg = PiiParams(kinds=cfg.pii_kinds)
    min_digits = min(_PII_MIN_DIGITS, pii_cfg.phone_min_digits, pii_cfg.card_min_digits)
    maybe = (
        (
            responses.str.contains(_MAYBE_EMAIL_OR_IBAN)
            | (responses.str.count_matches(r"[0-9０-９]") >= min_digits)
        )
        .fill_null(False)
        .to_list()
    )
    counts: list[int] = []
    kinds: list[str | None] = []
    for text, check in zip(responses.to_list(), maybe, strict=True):
        spans = find_pii(text, cfg=pii_cfg) if check and text else []
        counts.append(len(spans))
        kinds.append(", ".join(sorted({s.kind for s in spans})) if spans else None)
    return counts, kinds


def detect_instruction_issues(
    frame: pl.DataFrame,
    *,
    cfg: InstructionParams,
    languages: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Run every check whose policy is not ``off`` on prompt (``text``) / ``response`` pairs.

    Args:
        frame: rows with ``text`` and ``response`` (any other columns are kept).
        cfg: the ``instruction`` section of params.yaml.
        languages: one row per frame row, columns ``language`` (ISO code, null = not judged)
            and ``language_score``, from a detector run on :func:`language_inputs`; None: the
            language check is skipped (it reports no issue).

    Returns:
        ``frame`` with, per check, ``<check>`` (bool), ``<check>_score`` (float) and
        ``<check>_why`` (null when the check passed), and ``instruction_issues``: the failed
        checks in priority order.

    Raises:
        ValueError: a missing column, or ``languages`` of another length.
    """
    missing = {"text", "response"} - set(frame.columns)
    if missing:
        raise ValueError(f"instruction checks need columns {sorted(missing)}")
    if languages is not None and languages.height != frame.height:
        raise ValueError(f"languages has {languages.height} rows for {frame.height} rows")
    on = {c: cfg.policy.action(c) != "off" for c in INSTRUCTION_CHECKS}
    resp = pl.col("response").fill_null("")
    prompt = pl.col("text").fill_null("")
    work = frame.with_row_index("_row").with_columns(
        _prose=_plain(resp),
        _nocode=_strip_code(resp),
        _prompt_words=_words(prompt).list.unique(),
    )
    work = work.with_columns(
        _words=_words(pl.col("_prose")),
        _segments=pl.col("_prose")
        .str.to_lowercase()
        .str.replace_all(r"([.!?])\s+", "$1\n")
        .str.split("\n")
        .list.eval(pl.element().str.strip_chars(" \t.!?,;:").filter(pl.element().str.len_chars() > 0)),
    )
    work = work.with_columns(
        _n_words=pl.col("_words").list.len(),
        _resp_distinct=pl.col("_words").list.unique(),
        _n_segments=pl.col("_segments").list.len(),
    )
    rep = _ngram_repetition(work.filter(pl.col("_n_words") >= cfg.repetition_ngram), cfg.repetition_ngram)
    work = work.join(rep, on="_row", how="left").with_columns(pl.col("_ngram_rep").fill_null(0.0))
    if languages is not None:
        work = work.with_columns(
            _lang=languages["language"].cast(pl.String),
            _lang_score=languages["language_score"].cast(pl.Float64),
        )
    else:
        work = work.with_columns(_lang=pl.lit(None, pl.String), _lang_score=pl.lit(None, pl.Float64))
    if on["pii_in_response"]:
        counts, kinds = _pii(work["response"].fill_null(""), cfg)
        work = work.with_columns(
            _pii_n=pl.Series(counts, dtype=pl.Int64), _pii_kinds=pl.Series(kinds, dtype=pl.String)
        )
    else:
        work = work.with_columns(_pii_n=pl.lit(0, pl.Int64), _pii_kinds=pl.lit(None, pl.String))

    shown = resp.str.replace_all(r"\s+", " ").str.slice(0, 40)
    placeholder = (
        pl.col("_prose")
        .str.strip_chars(" \t\n.!?-_*\"'()[]")
        .str.to_lowercase()
        .is_in(list(cfg.empty_placeholders))
    )
    content = pl.col("_prose").str.contains(r"[\p{L}\p{N}]")
    empty = ~content | placeholder
    shared = pl.col("_resp_distinct").list.set_intersection("_prompt_words").list.len()
    containment = shared / pl.col("_resp_distinct").list.len().clip(lower_bound=1)
    coverage = shared / pl.col("_prompt_words").list.len().clip(lower_bound=1)
    dup_segments = (
        pl.when(pl.col("_n_segments") >= 2)
        .then(1.0 - pl.col("_segments").list.unique().list.len() / pl.col("_n_segments"))
        .otherwise(0.0)
    )
    template_hits = _strip_code(prompt).str.count_matches(_TEMPLATE_TOKENS) + pl.col(
        "_nocode"
    ).str.count_matches(_TEMPLATE)
    markup_hits = pl.col("_nocode").str.count_matches(_MARKUP)
    refusal_pattern = "(?i)" + "|".join(f"(?:{p})" for p in cfg.refusal_phrases)
    refusal_hit = pl.col("_nocode").str.extract(f"({refusal_pattern})", 1)
    stripped = resp.str.strip_chars()
    fences = resp.str.count_matches("```")
    opens = pl.col("_nocode").str.count_matches(r"[(\[{]")
    closes = pl.col("_nocode").str.count_matches(r"[)\]}]")
    last_line = stripped.str.split("\n").list.last().fill_null("")
    valid_end = (
        stripped.str.ends_with("```") | stripped.str.contains(_TERMINAL) | last_line.str.contains(_LIST_ITEM)
    )
    cap = cfg.max_response_chars
    at_cap = resp.str.len_chars() >= cap if cap is not None else pl.lit(False)
    truncation = (
        pl.when(fences % 2 == 1)
        .then(pl.lit("an unclosed code fence"))
        .when(opens > closes)
        .then(pl.format("{} opening vs {} closing brackets", opens, closes))
        .when(at_cap)
        .then(pl.format("{} characters, the generation limit", resp.str.len_chars()))
        .when(~stripped.str.ends_with("```") & (pl.col("_n_words") >= 3) & stripped.str.contains(_DANGLING))
        .then(pl.format("ends on '{}'", stripped.str.slice(-12)))
        .when((pl.col("_n_words") >= cfg.truncation_min_words) & ~valid_end)
        .then(pl.format("ends mid-sentence: '...{}'", stripped.str.slice(-24)))
    )
    targets = list(cfg.target_languages)
    foreign = (
        pl.col("_lang").is_not_null()
        & ~pl.col("_lang").is_in(targets)
        & (pl.col("_lang_score") >= cfg.min_language_confidence)
    )
    rules: dict[str, tuple[pl.Expr, pl.Expr, pl.Expr]] = {
        # check: (fails, score, why)
        "empty_response": (
            empty,
            pl.lit(1.0),
            pl.when(placeholder)
            .then(pl.format("a placeholder: '{}'", shown))
            .otherwise(pl.format("no letters or digits once markup is removed: '{}'", shown)),
        ),
        "short_response": (
            ~empty & (pl.col("_n_words") < cfg.min_response_words),
            pl.col("_n_words").cast(pl.Float64),
            pl.format("{} word(s), fewer than {}: '{}'", "_n_words", pl.lit(cfg.min_response_words), shown),
        ),
        "prompt_echo": (
            ~empty & (containment >= cfg.max_prompt_overlap) & (coverage >= 0.5),
            containment,
            pl.format(
                "{} of its distinct words are the prompt's (covering {} of them)",
                containment.round(2),
                coverage.round(2),
            ),
        ),
        "repetitive_response": (
            (dup_segments > cfg.max_duplicate_segment_fraction)
            | (pl.col("_ngram_rep") > cfg.max_ngram_repetition),
            pl.max_horizontal(dup_segments, pl.col("_ngram_rep")),
            pl.format(
                "duplicate sentence/line fraction {}, repeated {}-gram share {}",
                dup_segments.round(2),
                pl.lit(cfg.repetition_ngram),
                pl.col("_ngram_rep").round(2),
            ),
        ),
        "non_target_language": (
            foreign,
            pl.col("_lang_score").fill_null(0.0),
            pl.format(
                "language '{}' (p={}), target {}",
                "_lang",
                pl.col("_lang_score").round(2),
                pl.lit("/".join(targets)),
            ),
        ),
        "template_tokens": (
            template_hits > 0,
            template_hits.cast(pl.Float64),
            pl.format(
                "template token(s): '{}'",
                pl.coalesce(
                    _strip_code(prompt).str.extract(f"({_TEMPLATE_TOKENS})", 1),
                    pl.col("_nocode").str.extract(f"({_TEMPLATE})", 1),
                ).fill_null("?"),
            ),
        ),
        "markup": (
            markup_hits > 0,
            markup_hits.cast(pl.Float64),
            pl.format(
                "{} HTML tag(s)/entities, e.g. '{}'",
                markup_hits,
                pl.col("_nocode").str.extract(f"({_MARKUP})", 1).fill_null("?"),
            ),
        ),
        "refusal": (
            refusal_hit.is_not_null(),
            pl.lit(1.0),
            pl.format("boilerplate refusal: '{}'", refusal_hit),
        ),
        "truncated_response": (truncation.is_not_null(), pl.lit(1.0), truncation),
        "pii_in_response": (
            pl.col("_pii_n") > 0,
            pl.col("_pii_n").cast(pl.Float64),
            pl.format("{} PII span(s): {}", "_pii_n", "_pii_kinds"),
        ),
    }
    out = work.with_columns(
        (rules[c][0].fill_null(False) & pl.lit(on[c])).alias(c) for c in INSTRUCTION_CHECKS
    ).with_columns(
        pl.when(pl.col(c)).then(rules[c][1].cast(pl.Float64)).otherwise(pl.lit(0.0)).alias(f"{c}_score")
        for c in INSTRUCTION_CHECKS
    )
    # the sentences of the detail only for the few rows that fail something
    failing = out.filter(pl.any_horizontal(INSTRUCTION_CHECKS)).select(
        "_row", *(pl.when(pl.col(c)).then(rules[c][2]).alias(f"{c}_why") for c in INSTRUCTION_CHECKS)
    )
    out = out.join(failing, on="_row", how="left", maintain_order="left")
    out = out.with_columns(
        instruction_issues=pl.concat_list(
            [pl.when(pl.col(c)).then(pl.lit(c)).otherwise(None) for c in INSTRUCTION_CHECKS]
        ).list.drop_nulls()
    )
    return out.drop(pl.selectors.starts_with("_"))


def summarise_instruction_checks(
    detected: pl.DataFrame, *, cfg: InstructionParams, primary: pl.DataFrame
) -> pl.DataFrame:
    """One row per check: its policy, rows failing it, rows removed / held under it, examples.

    Args:
        detected: the output of :func:`detect_instruction_issues`.
        primary: ``id`` and ``primary`` (the check a row was removed or held under, or null).

    Returns:
        check, action, rows, removed, held and ``examples`` (up to ``report_examples``
        "prompt => response (why)" strings, earliest lines first).
    """
    joined = detected.join(primary.select("id", "primary"), on="id", how="left")
    order = "line" if "line" in joined.columns else "id"
    rows = []
    for check in INSTRUCTION_CHECKS:
        action = cfg.policy.action(check)
        failing = joined.filter(pl.col(check)).sort(order)
        mine = joined.filter(pl.col("primary") == check)
        examples = failing.head(cfg.report_examples).select(
            pl.format(
                "{} => {} ({})",
                pl.col("text").str.slice(0, 80),
                pl.col("response").str.replace_all(r"\s+", " ").str.slice(0, 120),
                pl.col(f"{check}_why"),
            )
        )
        rows.append(
            {
                "check": check,
                "action": action,
                "rows": failing.height,
                "removed": mine.height if action == "remove" else 0,
                "held": mine.height if action == "flag" else 0,
                "examples": examples.to_series().to_list(),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "check": pl.String,
            "action": pl.String,
            "rows": pl.Int64,
            "removed": pl.Int64,
            "held": pl.Int64,
            "examples": pl.List(pl.String),
        },
    )


__all__ = ["detect_instruction_issues", "language_inputs", "summarise_instruction_checks"]
