"""Review loop, pure side: flags -> Label Studio task payloads, annotations -> decisions.

Nothing here talks to Label Studio or the disk (flows/labelstudio.py does); these functions
turn frames into JSON-able dicts and back, so the whole round trip is testable without a server.

Two kinds of review task: label review of classification flags (:func:`build_tasks`: decision
and label) and instruction/chat review of held (prompt, response) pairs
(:func:`build_instruction_tasks`: keep / drop / unsure, with the checks' reasons).

Every string that leaves for Label Studio is masked for PII (curation/pii.py) inside
``build_tasks`` (and ``build_instruction_tasks``: prompt, response, reasons), once, so a caller
can neither forget it nor pay for it twice: the text, the ``duplicate_of`` id, and the row id
itself (an id that holds PII travels as a pseudonym that ``restore_flag_ids`` maps back). Label
names travel as they are (they are the label vocabulary); ``text_hash`` is a SHA-1 of the whole
text (of prompt and response for an instruction/chat flag); other columns of the flags frame
(raw text, meta ...) never leave.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

import polars as pl

from curation.pii import find_pii, mask_pii
from schemas.review_params import (
    DECISIONS,
    INSTRUCTION_DECISIONS,
    REVIEWS_SCHEMA,
    VERDICTS,
    LabelStudioParams,
    PiiParams,
)

log = logging.getLogger(__name__)

# Names inside the labelling config; annotations are read back by these names.
TEXT_TAG = "text"
DECISION_TAG = "decision"
LABEL_TAG = "label"
RESPONSE_TAG = "response"  # instruction/chat review: the response under review
REASONS_TAG = "reasons"  # ... and what the checks said about it
# task data ``kind`` of an instruction/chat task (label-review tasks carry none)
INSTRUCTION_KIND = "instruction"
# a quoted excerpt inside a check's reason ("ends mid-sentence: '...call me on 0791'")
_QUOTED = r"'[^']*'"
# Task data keys (Label Studio keeps its own task id; ours travels as flag_id).
KEY_FIELDS = ("flag_id", "text_hash")
# A row id that holds PII travels as PSEUDONYM_PREFIX + a salted hash (see pseudonymise_id).
PSEUDONYM_PREFIX = "pii-"
PSEUDONYM_HEX = 20  # 80 bits: no collision among any realistic number of flags

RESOLVED_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "id": pl.String,
    "text_hash": pl.String,
    "decision": pl.String,
    "label": pl.String,
    "n_reviews": pl.Int64,
    "disagreement": pl.Boolean,
}

# --- Label Studio payloads ---------------------------------------------------------------


def _label_choices(labels: Sequence[str]) -> str:
    """The label set as <Choice> lines of a labelling interface.

    Raises:
        ValueError: empty or duplicated label set.
    """
    if not labels:
        raise ValueError("label set is empty")
    if len(set(labels)) != len(labels):
        raise ValueError("label set has duplicates")
    return "\n".join(f"      <Choice value={quoteattr(str(lab))}/>" for lab in labels)


def build_label_config(labels: Sequence[str], cfg: LabelStudioParams) -> str:
    """Labelling interface XML: the masked text, the flag's context, a decision and a label.

    Raises:
        ValueError: empty or duplicated label set.
    """
    label_choices = _label_choices(labels)
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


def select_new_flags(
    flags: pl.DataFrame, existing: set[tuple[str, str]], *, pii: PiiParams | None = None
) -> pl.DataFrame:
    """Flags whose (id, text_hash) has no task yet, first occurrence of each key, sorted.

    With ``pii``, a task keyed by the pseudonym of a flag's id (an id holding PII, see
    :func:`pseudonymise_id`) counts as that flag's task.
    """
    new = flags
    if existing:
        seen = pl.DataFrame(list(existing), schema={"id": pl.String, "text_hash": pl.String}, orient="row")
        new = flags.join(seen, on=["id", "text_hash"], how="anti")
        if pii is not None and seen["id"].str.starts_with(PSEUDONYM_PREFIX).any() and not new.is_empty():
            pairs = new.select("id", "text").iter_rows()
            sent_as = pl.Series("_sent", [pseudonymise_id(str(i), t or "", cfg=pii) for i, t in pairs])
            new = (
                new.with_columns(sent_as)
                .join(seen.rename({"id": "_sent"}), on=["_sent", "text_hash"], how="anti")
                .drop("_sent")
            )
    return new.unique(["id", "text_hash"], keep="first", maintain_order=True).sort(["id", "text_hash"])


def _choice(tag: str, value: str) -> dict[str, Any]:
    return {
        "from_name": tag,
        "to_name": TEXT_TAG,
        "type": "choices",
        "value": {"choices": [value]},
    }


def pseudonymise_id(row_id: str, text: str, *, cfg: PiiParams) -> str:
    """``row_id`` itself, or a pseudonym if it holds PII (an input id like ``a@b.com-17``).

    The pseudonym hashes the id with the row's *unmasked* text, which never leaves: knowing the
    pseudonym and guessing the id is not enough to confirm the guess.
    """
    return _pseudonym(row_id, text) if find_pii(row_id, cfg=cfg) else row_id


def _masked_flag_id(flag_id: str, text: str, *, cfg: LabelStudioParams, counts: dict[str, int]) -> str:
    """The id as it may leave for Label Studio: a pseudonym when it holds PII (counted by kind)."""
    id_spans = find_pii(flag_id, cfg=cfg.pii)
    if not id_spans:
        return flag_id
    for span in id_spans:
        counts[span.kind] += 1
    return _pseudonym(flag_id, text)


def _pseudonym(row_id: str, text: str) -> str:
    digest = hashlib.sha256(f"{text}\x00{row_id}".encode()).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX]


def restore_flag_ids(reviews: pl.DataFrame, flags: pl.DataFrame, *, cfg: PiiParams) -> pl.DataFrame:
    """Map pseudonymous ids in ``reviews`` back to the flags' row ids (others unchanged).

    Args:
        reviews: Rows of reviews.parquet, as read back from Label Studio.
        flags: The flags that were pushed (id, text_hash, text).
        cfg: The PII options the push used.

    Returns:
        ``reviews`` with the same rows and columns; an id with no matching flag stays as it is.
    """
    if reviews.is_empty() or not reviews["id"].str.starts_with(PSEUDONYM_PREFIX).any():
        return reviews
    pairs = {
        pseudonymise_id(str(i), t or "", cfg=cfg): str(i)
        for i, t in flags.select("id", "text").unique().iter_rows()
    }
    mapping = {k: v for k, v in pairs.items() if k != v}
    return reviews.with_columns(pl.col("id").replace(mapping))


def build_tasks(
    flags: pl.DataFrame, labels: Sequence[str], *, cfg: LabelStudioParams
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One Label Studio task per flag, PII-masked, the suggestion as a prediction.

    Args:
        flags: Rows of flags.parquet (id, text_hash, text, issue, score, given_label,
            suggested_label, duplicate_of). Other columns are not sent.
        labels: The label set; a suggestion outside it is not pre-filled.
        cfg: The ``labelstudio`` section (PII options, model_version, prefill_decision).

    Returns:
        JSON-able dicts ``{"data": {...}, "predictions": [...]}`` for ``import_tasks``, and the
        number of PII spans masked per kind (text, ids and duplicate_of together).

    Raises:
        ValueError: a required column is missing.
    """
    required = ["id", "text_hash", "text", "issue", "score", "given_label", "suggested_label"]
    missing = [c for c in required if c not in flags.columns]
    if missing:
        raise ValueError(f"flags frame lacks column(s) {missing}")
    has_dup = "duplicate_of" in flags.columns
    dup = flags["duplicate_of"] if has_dup else pl.Series("duplicate_of", [None] * flags.height, pl.String)
    masked, counts = mask_pii(flags["text"], cfg=cfg.pii)
    masked_dup, dup_counts = mask_pii(dup.cast(pl.String), cfg=cfg.pii)
    label_set = set(labels)
    tasks: list[dict[str, Any]] = []
    for i, row in enumerate(flags.iter_rows(named=True)):
        suggested = row["suggested_label"]
        given = row["given_label"]
        score = None if row["score"] is None else float(row["score"])
        flag_id = _masked_flag_id(str(row["id"]), row["text"] or "", cfg=cfg, counts=counts)
        data = {
            "flag_id": flag_id,
            "text_hash": str(row["text_hash"]),
            "issue": row["issue"],
            "score": score,
            TEXT_TAG: masked[i] or "",
            "given_label": given or "",
            "suggested_label": suggested or "",
            "duplicate_of": masked_dup[i] or "",
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
    for kind, n in dup_counts.items():
        counts[kind] += n
    return tasks, counts


# --- instruction/chat review: keep or drop a held (prompt, response) pair --------------------


def build_instruction_label_config(cfg: LabelStudioParams) -> str:
    """Decision-only interface of instruction/chat review: the masked prompt (or the chat turns
    before the final answer, one ``role: content`` line each), the masked response, the reasons
    the checks gave, and keep / drop / unsure.

    No label choices (the rows have none) and no response editing: an edited response would be
    a new row that has not been through the checks, so the reviewer decides on the row as it is.
    ``cfg`` is taken for symmetry with :func:`build_label_config` (nothing in it changes the XML).
    """
    del cfg
    decision_choices = "\n".join(f"      <Choice value={quoteattr(d)}/>" for d in INSTRUCTION_DECISIONS)
    return f"""<View>
  <Header value="Held: $issue (score $score)" size="5"/>
  <Header value="Prompt (or the conversation so far)" size="6"/>
  <View style="white-space: pre-wrap">
    <Text name="{TEXT_TAG}" value="${TEXT_TAG}"/>
  </View>
  <Header value="Response" size="6"/>
  <View style="white-space: pre-wrap">
    <Text name="{RESPONSE_TAG}" value="${RESPONSE_TAG}"/>
  </View>
  <Header value="Why it was held" size="6"/>
  <Text name="{REASONS_TAG}" value="${REASONS_TAG}"/>
  <Header value="Decision: keep it for training, drop it, or unsure (stays held)" size="5"/>
  <Choices name="{DECISION_TAG}" toName="{TEXT_TAG}" choice="single-radio" required="true"
           showInline="true">
{decision_choices}
  </Choices>
</View>"""


def instruction_review_queue(flags: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """The instruction/chat flags to review, with the response and the reasons of each.

    Args:
        flags: rows of flags.parquet (id, text_hash, text, issue, score; with ``status``, the
            rows a reviewer already kept or dropped are left out: they are no longer held).
        held: rows of held.parquet with ``response`` and ``detail`` (every check the row failed,
            ``check: why; ...``).

    Returns:
        id, text_hash, text, response, issue, score, reasons; one row per flag still held,
        sorted by id.

    Raises:
        ValueError: a required column is missing (held.parquet from before responses were
            written there), or a flag has no held row.
    """
    need = {
        "flags": (flags, ["id", "text_hash", "text", "issue", "score"]),
        "held": (held, ["id", "response", "detail"]),
    }
    for name, (frame, cols) in need.items():
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks column(s) {missing}: re-run curate to rewrite it")
    if "status" in flags.columns:  # decided rows are curated or removed now: nothing to review
        flags = flags.filter(pl.col("status").is_in(["pending", "unsure"]) | pl.col("status").is_null())
    queue = flags.select("id", "text_hash", "text", "issue", "score").join(
        held.select("id", "response", pl.col("detail").alias("reasons")), on="id", how="left"
    )
    orphans = queue.filter(pl.col("response").is_null())["id"]
    if orphans.len():
        raise ValueError(
            f"{orphans.len()} flag(s) have no held row with a response (e.g. {orphans[0]!r}): "
            "flags and held files are from different runs; re-run curate"
        )
    return queue.select("id", "text_hash", "text", "response", "issue", "score", "reasons").sort(
        "id", "text_hash"
    )


def build_instruction_tasks(
    queue: pl.DataFrame, *, cfg: LabelStudioParams
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One Label Studio task per held instruction/chat row: prompt, response and reasons masked.

    The reasons quote the response ("ends mid-sentence: '...'"): an excerpt cut out of a PII span
    may no longer look like PII, so on a row whose prompt or response held PII the quoted
    excerpts are left out of the reasons (the masked response is shown in full anyway).

    Args:
        queue: :func:`instruction_review_queue` rows (id, text_hash, text, response, issue,
            score, reasons).
        cfg: the ``labelstudio`` section (PII options).

    Returns:
        JSON-able task dicts (``data`` only: there is no suggestion to pre-fill) and the PII
        spans masked per kind (prompt, response and ids).

    Raises:
        ValueError: a required column is missing.
    """
    required = ["id", "text_hash", "text", "response", "issue", "score", "reasons"]
    missing = [c for c in required if c not in queue.columns]
    if missing:
        raise ValueError(f"instruction review queue lacks column(s) {missing}")
    prompts, counts = mask_pii(queue["text"], cfg=cfg.pii)
    responses, response_counts = mask_pii(queue["response"], cfg=cfg.pii)
    had_pii = (prompts.ne_missing(queue["text"]) | responses.ne_missing(queue["response"])).to_list()
    reasons = queue["reasons"].fill_null("")
    safe = pl.Series(
        "reasons",
        [re.sub(_QUOTED, "'…'", r) if pii else r for r, pii in zip(reasons.to_list(), had_pii, strict=True)],
        dtype=pl.String,
    )
    masked_reasons, _ = mask_pii(safe, cfg=cfg.pii)  # the reasons' PII is the response's: counted once
    for kind, n in response_counts.items():
        counts[kind] += n
    tasks: list[dict[str, Any]] = []
    for i, row in enumerate(queue.iter_rows(named=True)):
        flag_id = _masked_flag_id(str(row["id"]), row["text"] or "", cfg=cfg, counts=counts)
        data = {
            "flag_id": flag_id,
            "text_hash": str(row["text_hash"]),
            "kind": INSTRUCTION_KIND,
            "issue": row["issue"],
            "score": None if row["score"] is None else float(row["score"]),
            TEXT_TAG: prompts[i] or "",
            RESPONSE_TAG: responses[i] or "",
            REASONS_TAG: masked_reasons[i] or "",
        }
        tasks.append({"data": data})
    return tasks, counts


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
        # an instruction/chat row has no label: relabel is not one of its decisions
        allowed = INSTRUCTION_DECISIONS if data.get("kind") == INSTRUCTION_KIND else DECISIONS
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            result = ann.get("result") or []
            decision = _choices(result, DECISION_TAG)
            label = _choices(result, LABEL_TAG)
            if decision not in allowed:
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


# --- prediction review: "is the model's answer right? if not, the right label" -------------

VERDICT_TAG = "verdict"
# task data fields a prediction task carries besides its key (flag_id = prediction id, text_hash)
PREDICTION_TASK_FIELDS = (
    "model_label",
    "confidence",
    "model_version",
    "predicted_at",
    "sample_id",
    "stratum",
    "stratum_size",
    "stratum_sampled",
    "population",
    "inclusion_prob",
    "weight",
)
VERDICTS_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "id": pl.String,
    "text_hash": pl.String,
    "decision": pl.String,  # the verdict (correct | wrong | unsure), named for resolve_decisions
    "label": pl.String,  # the right label: the model's for correct, the reviewer's for wrong
    "annotator": pl.String,
    "time": pl.Datetime("us", "UTC"),
    "task_id": pl.Int64,
    "model_label": pl.String,
    "confidence": pl.Float64,
    "model_version": pl.String,
    "predicted_at": pl.String,
    "sample_id": pl.String,
    "stratum": pl.String,
    "stratum_size": pl.Int64,
    "stratum_sampled": pl.Int64,
    "population": pl.Int64,
    "inclusion_prob": pl.Float64,
    "weight": pl.Float64,
}


def build_prediction_label_config(labels: Sequence[str], cfg: LabelStudioParams) -> str:
    """Interface XML of prediction review: the masked text, the model's answer, "is this
    right?" (correct / wrong / unsure) and "if not, the right label" (pre-filled with the
    model's label).

    Raises:
        ValueError: empty or duplicated label set.
    """
    label_choices = _label_choices(labels)
    verdict_choices = "\n".join(f"      <Choice value={quoteattr(v)}/>" for v in VERDICTS)
    layout = {"select": 'layout="select"', "inline": 'showInline="true"', "vertical": ""}
    return f"""<View>
  <Header value="The model answered: $model_label (confidence $confidence)" size="5"/>
  <Text name="{TEXT_TAG}" value="$text"/>
  <Header value="Is this right?" size="5"/>
  <Choices name="{VERDICT_TAG}" toName="{TEXT_TAG}" choice="single-radio" required="true"
           showInline="true">
{verdict_choices}
  </Choices>
  <Header value="If not, the right label" size="5"/>
  <Choices name="{LABEL_TAG}" toName="{TEXT_TAG}" choice="single" {layout[cfg.label_layout]}>
{label_choices}
  </Choices>
</View>"""


def build_prediction_tasks(
    sample: pl.DataFrame, labels: Sequence[str], *, cfg: LabelStudioParams, model_version: str
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One Label Studio task per sampled prediction, PII-masked, the model's label pre-filled.

    The task data keep the sampling record (stratum, its size, inclusion probability, weight),
    so the accuracy estimate can be made from the tasks alone. The text and an id holding PII
    are masked or pseudonymised exactly as for flags (:func:`build_tasks`).

    Args:
        sample: rows of curation.production.SAMPLE_SCHEMA.
        labels: the label set; an answer outside it is not pre-filled.
        cfg: the ``labelstudio`` section (PII options, label layout).
        model_version: model_version of the pre-filled prediction (the adapter's own version
            travels in the task data).

    Returns:
        JSON-able task dicts for ``import_tasks``, and PII spans masked per kind.

    Raises:
        ValueError: a required column is missing.
    """
    required = [
        "id",
        "text_hash",
        "text",
        "label",
        *[c for c in PREDICTION_TASK_FIELDS if c != "model_label"],
    ]
    missing = [c for c in required if c not in sample.columns]
    if missing:
        raise ValueError(f"sample frame lacks column(s) {missing}")
    masked, counts = mask_pii(sample["text"], cfg=cfg.pii)
    label_set = set(labels)
    tasks: list[dict[str, Any]] = []
    for i, row in enumerate(sample.iter_rows(named=True)):
        row_id = str(row["id"])
        id_spans = find_pii(row_id, cfg=cfg.pii)
        if id_spans:
            row_id = _pseudonym(row_id, row["text"] or "")
            for span in id_spans:
                counts[span.kind] += 1
        data: dict[str, Any] = {
            "flag_id": row_id,
            "text_hash": str(row["text_hash"]),
            TEXT_TAG: masked[i] or "",
        }
        data["model_label"] = row["label"] or ""
        data.update({key: row[key] for key in PREDICTION_TASK_FIELDS if key != "model_label"})
        task: dict[str, Any] = {"data": data}
        if row["label"] in label_set:
            score = None if row["confidence"] is None else float(row["confidence"])
            result = [_choice(LABEL_TAG, row["label"])]
            task["predictions"] = [{"model_version": model_version, "score": score, "result": result}]
        tasks.append(task)
    return tasks, counts


def annotations_to_verdicts(tasks: list[dict[str, Any]]) -> pl.DataFrame:
    """Completed annotations of prediction-review tasks -> one row per annotation.

    ``correct`` takes the model's label as the right one; ``wrong`` needs a label other than
    the model's (else it becomes ``unsure``); ``correct`` with another label picked is a
    contradiction and becomes ``unsure``. Cancelled annotations and tasks without our key are
    ignored.

    Returns:
        VERDICTS_SCHEMA rows sorted by (id, text_hash, time, task_id); ``decision`` holds the
        verdict and ``label`` the right label, so :func:`resolve_decisions` can resolve them.
    """
    rows: list[dict[str, Any]] = []
    for task in tasks:
        data = task.get("data") or {}
        if not all(k in data for k in KEY_FIELDS) or "model_label" not in data:
            continue
        model_label = data.get("model_label") or None
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            result = ann.get("result") or []
            verdict = _choices(result, VERDICT_TAG)
            label = _choices(result, LABEL_TAG)
            if verdict not in VERDICTS:
                log.warning("task %s: annotation without a valid verdict -> unsure", task.get("id"))
                verdict = "unsure"
            if verdict == "correct" and label not in (None, model_label):
                verdict = "unsure"  # "right" but another label picked: ask again rather than guess
            elif verdict == "wrong" and (label is None or label == model_label):
                verdict = "unsure"
            right = model_label if verdict == "correct" else label if verdict == "wrong" else None
            rows.append(
                {
                    "id": str(data["flag_id"]),
                    "text_hash": str(data["text_hash"]),
                    "decision": verdict,
                    "label": right,
                    "annotator": _annotator(ann),
                    "time": _parse_time(ann.get("updated_at") or ann.get("created_at")),
                    "task_id": int(task["id"]),
                    **{key: data.get(key) for key in PREDICTION_TASK_FIELDS},
                }
            )
    frame = pl.DataFrame(rows, schema=VERDICTS_SCHEMA)
    return frame.sort(["id", "text_hash", "time", "task_id"], nulls_last=False)
