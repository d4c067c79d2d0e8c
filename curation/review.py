"""Review loop, pure side: flags -> Label Studio task payloads, annotations -> decisions.

Nothing here talks to Label Studio or the disk (flows/labelstudio.py does); these functions
turn frames into JSON-able dicts and back, so the whole round trip is testable without a server.

Text is masked for PII before it is put in a task (``build_tasks`` masks itself, so a caller
cannot forget); masking is idempotent, placeholders never match a pattern again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

import polars as pl

from schemas.review_params import DECISIONS, REVIEWS_SCHEMA, LabelStudioParams, PiiParams

log = logging.getLogger(__name__)

# Names inside the labelling config; annotations are read back by these names.
TEXT_TAG = "text"
DECISION_TAG = "decision"
LABEL_TAG = "label"
# Task data keys (Label Studio keeps its own task id; ours travels as flag_id).
KEY_FIELDS = ("flag_id", "text_hash")

RESOLVED_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "id": pl.String,
    "text_hash": pl.String,
    "decision": pl.String,
    "label": pl.String,
    "n_reviews": pl.Int64,
    "disagreement": pl.Boolean,
}

# --- PII ---------------------------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# Country code, check digits, then 11-30 alphanumerics, optionally in groups of four.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{1,4}){3,8}\b")
# Digit runs with single space/dash separators; Luhn decides whether it is a card.
_CARD = re.compile(r"(?<![\w\-])\d(?:[ \-]?\d){9,22}(?![\w\-])")
# A phone number must *look* like one, so bare digit runs (order and reference numbers) stay:
# an international prefix (+44 ..., 0044 ...), a bracketed area code, or a grouped national
# number starting with 0, or the 3-3-4 North-American grouping.
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"(?:\+|\b00)\d{1,3}[ \-.]?(?:\(\d{1,4}\)[ \-.]?)?\d{1,4}(?:[ \-.]?\d{1,5}){1,5}"
    r"|\(\d{2,5}\)[ \-.]?\d{2,5}(?:[ \-.]?\d{2,5}){1,3}"
    r"|\b0\d{2,4}[ \-.]\d{3,4}(?:[ \-.]?\d{3,4}){0,2}"
    r"|\b\d{3}[\-.]\d{3}[\-.]\d{4}"
    r"|\b\d{3} \d{3} \d{4}"
    r")(?![\w\-])"
)


def luhn_valid(digits: str) -> bool:
    """True if a digit string passes the Luhn checksum (payment card numbers do)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """True if ``candidate`` (spaces allowed) passes the ISO 13616 mod-97 check."""
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:  # shortest (Norway) and longest IBANs
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _mask_one(text: str, cfg: PiiParams) -> tuple[str, dict[str, int]]:
    counts = dict.fromkeys(cfg.kinds, 0)

    def sub(kind: str, pattern: re.Pattern[str], accept: Callable[[str], bool], s: str) -> str:
        def repl(m: re.Match[str]) -> str:
            if not accept(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return cfg.placeholder.format(kind=kind.upper())

        return pattern.sub(repl, s)

    def card_ok(s: str) -> bool:
        d = _digits(s)
        return cfg.card_min_digits <= len(d) <= cfg.card_max_digits and luhn_valid(d)

    def phone_ok(s: str) -> bool:
        return cfg.phone_min_digits <= len(_digits(s)) <= cfg.phone_max_digits

    # Order matters: IBANs and cards contain digit runs a phone pattern could also match.
    steps: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = [
        ("iban", _IBAN, iban_valid),
        ("card", _CARD, card_ok),
        ("email", _EMAIL, lambda _s: True),
        ("phone", _PHONE, phone_ok),
    ]
    for kind, pattern, accept in steps:
        if kind in cfg.kinds:
            text = sub(kind, pattern, accept, text)
    return text, counts


def mask_pii(texts: pl.Series, *, cfg: PiiParams) -> tuple[pl.Series, dict[str, int]]:
    """Replace e-mails, phone numbers, card numbers (Luhn-checked) and IBANs (mod-97-checked).

    Args:
        texts: String series; nulls stay null.
        cfg: Which kinds to mask and the placeholder (``[{kind}]`` -> ``[EMAIL]``).

    Returns:
        The masked series (same name and length) and the number of matches masked per kind.
    """
    counts = dict.fromkeys(cfg.kinds, 0)
    if not cfg.enabled:
        return texts.clone(), counts
    out: list[str | None] = []
    for value in texts.to_list():
        if value is None:
            out.append(None)
            continue
        masked, found = _mask_one(value, cfg)
        out.append(masked)
        for kind, n in found.items():
            counts[kind] += n
    return pl.Series(texts.name, out, dtype=pl.String), counts


# --- Label Studio payloads ---------------------------------------------------------------


def build_label_config(labels: Sequence[str], cfg: LabelStudioParams) -> str:
    """Labelling interface XML: the masked text, the flag's context, a decision and a label.

    Raises:
        ValueError: empty or duplicated label set.
    """
    if not labels:
        raise ValueError("label set is empty")
    if len(set(labels)) != len(labels):
        raise ValueError("label set has duplicates")
    label_choices = "\n".join(f"      <Choice value={quoteattr(str(lab))}/>" for lab in labels)
    decision_choices = "\n".join(f"      <Choice value={quoteattr(d)}/>" for d in DECISIONS)
    layout = {"select": 'layout="select"', "inline": 'showInline="true"', "vertical": ""}
    return f"""<View>
  <Header value="Flag: $issue (score $score)" size="5"/>
  <Text name="{TEXT_TAG}" value="$text"/>
  <View style="display:flex; gap:2em">
    <View>
      <Header value="Given label" size="6"/>
      <Text name="given_label" value="$given_label"/>
    </View>
    <View>
      <Header value="Suggested label" size="6"/>
      <Text name="suggested_label" value="$suggested_label"/>
    </View>
  </View>
  <Header value="Decision" size="5"/>
  <Choices name="{DECISION_TAG}" toName="{TEXT_TAG}" choice="single-radio" required="true"
           showInline="true">
{decision_choices}
  </Choices>
  <Header value="Correct label (for relabel)" size="5"/>
  <Choices name="{LABEL_TAG}" toName="{TEXT_TAG}" choice="single" {layout[cfg.label_layout]}>
{label_choices}
  </Choices>
</View>"""


def flag_keys(flags: pl.DataFrame) -> set[tuple[str, str]]:
    """The (id, text_hash) keys of a flags frame."""
    return set(flags.select("id", "text_hash").iter_rows())


def task_keys(tasks: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """The (id, text_hash) keys of existing Label Studio tasks (from their data)."""
    keys = set()
    for task in tasks:
        data = task.get("data") or {}
        if all(k in data for k in KEY_FIELDS):
            keys.add((str(data["flag_id"]), str(data["text_hash"])))
    return keys


def select_new_flags(flags: pl.DataFrame, existing: set[tuple[str, str]]) -> pl.DataFrame:
    """Flags whose (id, text_hash) has no task yet, first occurrence of each key, sorted."""
    if not existing:
        new = flags
    else:
        seen = pl.DataFrame(list(existing), schema={"id": pl.String, "text_hash": pl.String}, orient="row")
        new = flags.join(seen, on=["id", "text_hash"], how="anti")
    return new.unique(["id", "text_hash"], keep="first", maintain_order=True).sort(["id", "text_hash"])


def _choice(tag: str, value: str) -> dict[str, Any]:
    return {
        "from_name": tag,
        "to_name": TEXT_TAG,
        "type": "choices",
        "value": {"choices": [value]},
    }


def build_tasks(
    flags: pl.DataFrame, labels: Sequence[str], *, cfg: LabelStudioParams
) -> list[dict[str, Any]]:
    """One Label Studio task per flag, text PII-masked, the suggestion as a prediction.

    Args:
        flags: Rows of flags.parquet (id, text_hash, text, issue, score, given_label,
            suggested_label, duplicate_of).
        labels: The label set; a suggestion outside it is not pre-filled.
        cfg: The ``labelstudio`` section (PII options, model_version, prefill_decision).

    Returns:
        JSON-able dicts ``{"data": {...}, "predictions": [...]}`` for ``import_tasks``.

    Raises:
        ValueError: a required column is missing.
    """
    required = ["id", "text_hash", "text", "issue", "score", "given_label", "suggested_label"]
    missing = [c for c in required if c not in flags.columns]
    if missing:
        raise ValueError(f"flags frame lacks column(s) {missing}")
    masked, _ = mask_pii(flags["text"], cfg=cfg.pii)
    label_set = set(labels)
    has_dup = "duplicate_of" in flags.columns
    tasks: list[dict[str, Any]] = []
    for i, row in enumerate(flags.iter_rows(named=True)):
        suggested = row["suggested_label"]
        given = row["given_label"]
        score = None if row["score"] is None else float(row["score"])
        data = {
            "flag_id": str(row["id"]),
            "text_hash": str(row["text_hash"]),
            "issue": row["issue"],
            "score": score,
            TEXT_TAG: masked[i] or "",
            "given_label": given or "",
            "suggested_label": suggested or "",
            "duplicate_of": (row["duplicate_of"] if has_dup else None) or "",
        }
        result = []
        if suggested is not None and suggested in label_set:
            result.append(_choice(LABEL_TAG, suggested))
            if cfg.prefill_decision:
                result.append(_choice(DECISION_TAG, "keep" if suggested == given else "relabel"))
        task: dict[str, Any] = {"data": data}
        if result:
            task["predictions"] = [{"model_version": cfg.model_version, "score": score, "result": result}]
        tasks.append(task)
    return tasks


# --- annotations -> reviews -> decisions ----------------------------------------------------


def _choices(result: Sequence[dict[str, Any]], tag: str) -> str | None:
    for item in result or ():
        if item.get("from_name") == tag and item.get("type") == "choices":
            chosen = (item.get("value") or {}).get("choices") or []
            if chosen:
                return str(chosen[0])
    return None


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _annotator(annotation: dict[str, Any]) -> str:
    completed_by = annotation.get("completed_by")
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id"))
    name = annotation.get("created_username")
    if name:
        # Label Studio writes "email, user_id"; the e-mail is the readable part
        return str(name).split(",")[0].strip()
    return str(completed_by) if completed_by is not None else "unknown"


def annotations_to_reviews(tasks: list[dict[str, Any]]) -> pl.DataFrame:
    """Completed annotations of exported tasks -> rows of reviews.parquet.

    Cancelled (skipped) annotations are ignored. A ``relabel`` whose label is missing becomes
    ``unsure``; a ``relabel`` to the given label becomes ``keep``; ``label`` is set only for
    ``relabel``. Tasks without our key fields (not pushed by curagate) are ignored.

    Returns:
        Frame with REVIEWS_SCHEMA columns, sorted by (id, text_hash, time, task_id).
    """
    rows: list[dict[str, Any]] = []
    for task in tasks:
        data = task.get("data") or {}
        if not all(k in data for k in KEY_FIELDS):
            continue
        given = data.get("given_label") or None
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            result = ann.get("result") or []
            decision = _choices(result, DECISION_TAG)
            label = _choices(result, LABEL_TAG)
            if decision not in DECISIONS:
                log.warning("task %s: annotation without a valid decision -> unsure", task["id"])
                decision = "unsure"
            if decision == "relabel" and label is None:
                decision = "unsure"
            elif decision == "relabel" and label == given:
                decision = "keep"
            rows.append(
                {
                    "id": str(data["flag_id"]),
                    "text_hash": str(data["text_hash"]),
                    "decision": decision,
                    "label": label if decision == "relabel" else None,
                    "annotator": _annotator(ann),
                    "time": _parse_time(ann.get("updated_at") or ann.get("created_at")),
                    "task_id": int(task["id"]),
                }
            )
    frame = pl.DataFrame(rows, schema=REVIEWS_SCHEMA)
    return frame.sort(["id", "text_hash", "time", "task_id"], nulls_last=False)


def resolve_decisions(
    reviews: pl.DataFrame, *, policy: Literal["latest", "majority"] = "latest"
) -> pl.DataFrame:
    """One decision per (id, text_hash) from possibly several reviews.

    Args:
        reviews: Rows of reviews.parquet (``time`` a UTC datetime or ISO string).
        policy: ``latest`` takes the most recent review; ``majority`` the most frequent
            (decision, label) pair, ties broken by the most recent among the tied.

    Returns:
        Columns id, text_hash, decision, label, n_reviews, disagreement (True when the
        reviews of a key do not all agree on (decision, label)), sorted by id, text_hash.

    Raises:
        ValueError: unknown policy or missing columns.
    """
    if policy not in ("latest", "majority"):
        raise ValueError(f"policy={policy!r} must be 'latest' or 'majority'")
    needed = ["id", "text_hash", "decision", "label", "time"]
    missing = [c for c in needed if c not in reviews.columns]
    if missing:
        raise ValueError(f"reviews frame lacks column(s) {missing}")
    if reviews.is_empty():
        return pl.DataFrame(schema=RESOLVED_SCHEMA)
    frame = reviews
    if frame.schema["time"] == pl.String:
        frame = frame.with_columns(pl.col("time").str.to_datetime(time_zone="UTC"))
    if "task_id" not in frame.columns:
        frame = frame.with_columns(task_id=pl.lit(0, pl.Int64))
    keys = ["id", "text_hash"]
    vote = ["decision", "label"]
    # Order within a key: newest last, task id and row order breaking exact time ties.
    frame = frame.with_row_index("_row").sort([*keys, "time", "task_id", "_row"])
    stats = frame.group_by(keys).agg(
        n_reviews=pl.len().cast(pl.Int64),
        disagreement=pl.struct(vote).n_unique() > 1,
    )
    if policy == "latest":
        chosen = frame.group_by(keys, maintain_order=True).last().select([*keys, *vote])
    else:
        tallied = frame.with_columns(
            _votes=pl.len().over([*keys, *vote]),
            _order=pl.int_range(pl.len()).over(keys),
        )
        chosen = (
            tallied.sort([*keys, "_votes", "_order"])
            .group_by(keys, maintain_order=True)
            .last()
            .select([*keys, *vote])
        )
    out = chosen.join(stats, on=keys, how="left").sort(keys)
    return out.select(list(RESOLVED_SCHEMA)).cast(RESOLVED_SCHEMA)  # type: ignore[arg-type]
