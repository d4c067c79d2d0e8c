"""Report: flat quality metrics (DVC metrics) and a self-contained HTML report with plots.

Pure: frames in, a dict and an HTML string out (plots are PNGs embedded as base64, so the
page opens in a browser with no network).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from schemas.records import FLAG_ISSUES  # noqa: E402

if TYPE_CHECKING:
    from curation.noise import NoiseCheck

Metric = float | int | str | None


def quality_metrics(
    *,
    input_rows: dict[str, int],
    curated_train: pl.DataFrame,
    curated_test: pl.DataFrame,
    removed: pl.DataFrame,
    held: pl.DataFrame,
    quarantine: pl.DataFrame,
    flags: pl.DataFrame,
    validated_train_rows: int,
    label_set: list[str] | None,
    test_leaks_remaining: int,
    removal_reasons: Sequence[str],
    duplicate_reasons: Sequence[str] = ("exact_duplicate", "near_duplicate"),
    noise: NoiseCheck | None = None,
    instruction: pl.DataFrame | None = None,
) -> dict[str, Metric]:
    """Flat metrics for quality.json; the accounting check proves no row was lost.

    Every number is finite (strict JSON parsers reject Infinity and NaN): a ratio that is
    undefined is null, and the count that makes it undefined is published beside it
    (``imbalance_ratio`` is null when ``classes_missing_from_train`` > 0).

    Args:
        input_rows: records read per split ("train", "test"), before anything was removed.
        held: rows held out of training for a reviewer (``pending_review``).
        removal_reasons: every reason a step can remove a row with; each gets a count.
        duplicate_reasons: the reasons that count towards ``duplicate_rate``.
        noise: whether noise detection ran (``curation.noise.noise_check``); publishes
            ``noise_checked`` (1/0), ``noise_checked_rows`` and, when skipped,
            ``noise_skip_reason``. None: noise detection was not part of this run (no keys).
        instruction: the instruction checks' summary (curation.instruction.
            summarise_instruction_checks); None (classification data): every count is 0.

    Raises:
        ValueError: a metric came out as Infinity or NaN (a bug: it must be null instead).
    """
    q = quarantine.group_by("split").len()
    quarantined = {s: int(q.filter(pl.col("split") == s)["len"].sum()) for s in ("train", "test")}
    reasons = removed.group_by("reason").len()
    removed_by = {r: int(reasons.filter(pl.col("reason") == r)["len"].sum()) for r in removal_reasons}
    flag_counts = {i: int((flags["issue"] == i).sum()) for i in FLAG_ISSUES}
    open_flags = (
        flags.filter(pl.col("status").is_in(["pending", "unsure"])) if "status" in flags.columns else flags
    )
    counts = (
        curated_train.group_by("label").len()
        if curated_train.height
        else pl.DataFrame({"label": [], "len": []})
    )
    classes = label_set if label_set is not None else counts["label"].to_list()
    per_class = {c: 0 for c in classes}
    per_class.update(dict(zip(counts["label"].to_list(), counts["len"].to_list(), strict=True)))
    min_c, max_c = (min(per_class.values()), max(per_class.values())) if per_class else (0, 0)
    missing_classes = sum(1 for n in per_class.values() if n == 0)
    accounted_train = curated_train.height + removed.height + held.height + quarantined["train"]
    accounted_test = curated_test.height + quarantined["test"]
    total_in = input_rows["train"] + input_rows["test"]
    blank_lines = int((quarantine["reason"] == "blank_line").sum())
    metrics: dict[str, Metric] = {
        "input_train_rows": input_rows["train"],
        "input_test_rows": input_rows["test"],
        "quarantined_train": quarantined["train"],
        "quarantined_test": quarantined["test"],
        "removed_total": removed.height,
        **{f"removed_{r}": n for r, n in removed_by.items()},
        "held_for_review": held.height,
        "curated_train_rows": curated_train.height,
        "curated_test_rows": curated_test.height,
        **{f"flags_{i}": n for i, n in flag_counts.items()},
        "unresolved_conflicts": int((open_flags["issue"] == "conflicting_duplicate").sum()),
        "pending_review": held.height,
        "duplicate_rate": _rate(sum(removed_by.get(r, 0) for r in duplicate_reasons), validated_train_rows),
        # blank lines are counted (input rows = file lines) but are no sign of a broken export
        "blank_lines": blank_lines,
        "quarantine_rate": _rate(
            quarantined["train"] + quarantined["test"] - blank_lines, total_in - blank_lines
        ),
        "label_issue_rate": _rate(flag_counts["label_issue"], validated_train_rows),
        "test_leaks_remaining": test_leaks_remaining,
        "num_classes": sum(1 for n in per_class.values() if n > 0),
        "min_class_count": min_c,
        "max_class_count": max_c,
        "classes_missing_from_train": missing_classes,
        # largest / smallest class; undefined (null) when a class has no rows or there are none
        "imbalance_ratio": round(max_c / min_c, 4) if min_c else None,
        "accounting_ok": int(accounted_train == input_rows["train"] and accounted_test == input_rows["test"]),
    }
    if noise is not None:
        metrics["noise_checked"] = int(noise.skipped_reason is None)
        metrics["noise_checked_rows"] = noise.checked_rows
        if noise.skipped_reason is not None:
            metrics["noise_skip_reason"] = noise.skipped_reason
    metrics.update(instruction_metrics(instruction, checked_rows=validated_train_rows))
    not_finite = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if not_finite:
        raise ValueError(f"quality metrics must be finite or null, not {not_finite}")
    return metrics


def instruction_metrics(summary: pl.DataFrame | None, *, checked_rows: int) -> dict[str, Metric]:
    """quality.json's instruction keys: rows failing each check (a row may fail several), the
    rows removed or held by any check, and their rate over the checked (validated train) rows."""
    from schemas.instruction_params import INSTRUCTION_CHECKS

    rows = dict.fromkeys(INSTRUCTION_CHECKS, 0)
    issue_rows = 0
    if summary is not None:
        rows.update(dict(zip(summary["check"].to_list(), summary["rows"].to_list(), strict=True)))
        issue_rows = int(summary["removed"].sum() + summary["held"].sum())
    checked = checked_rows if summary is not None else 0
    return {
        "instruction_checked_rows": checked,
        "instruction_issue_rows": issue_rows,
        "instruction_issue_rate": _rate(issue_rows, checked),
        **{f"instruction_{check}": int(n) for check, n in rows.items()},
    }


def _instruction_section(summary: pl.DataFrame) -> str:
    """Rows per check (bar) and a table per check: policy, counts, a few examples."""
    bar = _bar(
        summary["check"].to_list(), summary["rows"].to_list(), "rows failing each check", horizontal=True
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(row[k]))}</td>" for k in ("check", "action", "rows", "removed", "held")
        )
        + "<td><ul>"
        + "".join(f"<li>{html.escape(e)}</li>" for e in row["examples"])
        + "</ul></td></tr>"
        for row in summary.iter_rows(named=True)
    )
    head = "".join(f"<th>{h}</th>" for h in ("check", "policy", "rows", "removed", "held", "examples"))
    return (
        "<h2>Instruction and chat checks</h2><p>A row failing several checks is removed (or held) under "
        "the first one in this order; every check counts it.</p>"
        + bar
        + f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _rate(n: int, d: int) -> float:
    return round(n / d, 6) if d else 0.0


def _figure_to_img(fig: plt.Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'


def _bar(labels: list[str], values: list[float], title: str, *, horizontal: bool = False) -> str:
    height = max(3.0, 0.22 * len(labels)) if horizontal else 3.2
    fig, ax = plt.subplots(figsize=(7, height))
    if horizontal:
        ax.barh(labels, values, color="#4c72b0")
        ax.invert_yaxis()
    else:
        ax.bar(labels, values, color="#4c72b0")
        ax.tick_params(axis="x", rotation=30)
    ax.bar_label(ax.containers[0], fontsize=8)  # type: ignore[arg-type]  # small counts stay readable beside large ones
    ax.set_title(title)
    return _figure_to_img(fig, title)


def _table(frame: pl.DataFrame, max_rows: int) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in frame.head(max_rows).iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def rows_by_source(
    *,
    validated: pl.DataFrame,
    curated: pl.DataFrame,
    removed: pl.DataFrame,
    held: pl.DataFrame,
    quarantine: pl.DataFrame,
) -> pl.DataFrame:
    """Train rows per input file (the train file and each ``data.extra_train`` file).

    Args:
        validated: valid train rows with ``id`` and ``source``; the other frames are matched to
            their file through it, by id.
        quarantine: quarantined lines (``split``, ``source``); only train lines are counted.

    Returns:
        source, input, quarantined, removed, held, curated (input = the other four), sorted by
        source.
    """
    origin = validated.select("id", "source")

    def per_source(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return (
            frame.select("id").join(origin, on="id", how="inner").group_by("source").agg(pl.len().alias(name))
        )

    bad = quarantine.filter(pl.col("split") == "train").group_by("source").agg(pl.len().alias("quarantined"))
    counts = [per_source(removed, "removed"), per_source(held, "held"), per_source(curated, "curated")]
    sources = pl.concat([origin.select("source"), bad.select("source")]).unique()
    table = sources
    for part in (bad, *counts):
        table = table.join(part, on="source", how="left")
    cols = ["quarantined", "removed", "held", "curated"]
    table = table.with_columns(pl.col(cols).fill_null(0).cast(pl.Int64))
    return table.select("source", pl.sum_horizontal(cols).alias("input"), *cols).sort("source")


def render_report(
    *,
    metrics: dict[str, Any],
    validated_train: pl.DataFrame,
    curated_train: pl.DataFrame,
    removed: pl.DataFrame,
    held: pl.DataFrame,
    quarantine: pl.DataFrame,
    flags: pl.DataFrame,
    top_flags: int,
    stages: Sequence[str],
    title: str = "curagate quality report",
    instruction: pl.DataFrame | None = None,
    planted: pl.DataFrame | None = None,
    coverage_section: str | None = None,
) -> str:
    """A self-contained HTML page: counts per stage, reasons, clusters, labels, noise scores.

    Args:
        stages: the steps that can remove rows, in pipeline order (one bar each).
        planted: :func:`planted_vs_caught`'s table, shown first when the input was dirtied on
            purpose (`curagate demo-data`).
        coverage_section: HTML of the coverage step (curation.coverage.render_coverage), placed
            last; None: no such section.
    """
    parts: list[str] = []
    if planted is not None and planted.height:
        parts.append("<h2>Planted vs caught</h2>" + _table(planted, 100))
    stage_names = ["input", "quarantined", *stages, "held for review", "curated"]
    stage_counts = [
        metrics["input_train_rows"],
        metrics["quarantined_train"],
        *(int((removed["stage"] == stage).sum()) for stage in stages),
        held.height,
        metrics["curated_train_rows"],
    ]
    parts.append("<h2>Rows per stage (train)</h2>" + _bar(stage_names, stage_counts, "train rows by stage"))
    why = (
        pl.concat(
            [
                removed.select(pl.format("removed: {}", "reason").alias("why")),
                held.select(pl.format("held: {}", "issue").alias("why")),
                quarantine.select(pl.format("quarantined: {}", "reason").alias("why")),
            ]
        )
        .group_by("why")
        .len()
        .sort(["len", "why"], descending=[True, False])  # ties by name: byte-stable output
    )
    if why.height:
        parts.append(
            "<h2>Why rows left</h2>"
            + _bar(why["why"].to_list(), why["len"].to_list(), "rows by reason", horizontal=True)
        )
    dups = (
        removed.filter(pl.col("stage") == "dedup").group_by("duplicate_of").agg((pl.len() + 1).alias("size"))
    )
    if dups.height:
        sizes = dups.group_by("size").len().sort("size")
        parts.append(
            "<h2>Duplicate cluster sizes</h2>"
            + _bar([str(s) for s in sizes["size"]], sizes["len"].to_list(), "clusters by size")
        )
    if "label" in validated_train.columns and validated_train["label"].drop_nulls().len():
        before = validated_train.group_by("label").len().rename({"len": "before"})
        after = curated_train.group_by("label").len().rename({"len": "after"})
        dist = (
            before.join(after, on="label", how="full", coalesce=True)
            .fill_null(0)
            .sort(["before", "label"], descending=[True, False])
        )
        fig, ax = plt.subplots(figsize=(7, max(3.0, 0.16 * dist.height)))
        ax.barh(dist["label"], dist["before"], color="#c0c0c0", label="validated")
        ax.barh(dist["label"], dist["after"], color="#4c72b0", label="curated")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=6)
        ax.legend()
        ax.set_title("label distribution before and after curation")
        parts.append("<h2>Label distribution</h2>" + _figure_to_img(fig, "label distribution"))
    label_flags = flags.filter(pl.col("issue") == "label_issue")
    if label_flags.height:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.hist(label_flags["score"].to_list(), bins=30, color="#dd8452")
        ax.set_xlabel("1 - label quality (higher = more likely mislabelled)")
        ax.set_title("noise scores of flagged rows")
        parts.append("<h2>Noise scores</h2>" + _figure_to_img(fig, "noise scores"))
    if flags.height:
        shown = flags.sort(["score", "id"], descending=[True, False]).select(
            "id",
            "issue",
            pl.col("score").round(3),
            "given_label",
            "suggested_label",
            "text",
            *(["status"] if "status" in flags.columns else []),
        )
        parts.append(f"<h2>Top {top_flags} flagged examples</h2>" + _table(shown, top_flags))
    if instruction is not None:
        parts.append(_instruction_section(instruction))
    if "source" in validated_train.columns and validated_train["source"].n_unique() > 1:
        # more than one train file (data.extra_train): where the removed and held rows came from
        by_file = rows_by_source(
            validated=validated_train,
            curated=curated_train,
            removed=removed,
            held=held,
            quarantine=quarantine,
        )
        parts.append("<h2>Train rows by input file</h2>" + _table(by_file, 100))
    if quarantine.height:
        parts.append(
            "<h2>Quarantined lines</h2>"
            + _table(
                quarantine.select(
                    "split", "source", "line", "reason", "detail", pl.col("raw").str.slice(0, 120)
                ),
                50,
            )
        )
    if coverage_section:
        parts.append(coverage_section)
    metric_rows = pl.DataFrame({"metric": list(metrics), "value": [str(v) for v in metrics.values()]})
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:left;vertical-align:top}th{background:#eee}.ok{color:#080}.bad{color:#b00}"
    )
    verdict = (
        '<p class="ok">Accounting: every input row is curated, removed, held for review or quarantined.</p>'
        if metrics.get("accounting_ok")
        else '<p class="bad">Accounting FAILED: counts do not add up.</p>'
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{verdict}"
        f"<h2>Metrics</h2>{_table(metric_rows, 100)}{''.join(parts)}</body></html>"
    )


# ── planted vs caught (the demo's dirty input, whose truth is known) ─────────────────

DEDUP_REASONS = ("exact_duplicate", "near_duplicate")
PLANTED_KINDS = ("label_flip", "confusable_flip", "near_copy", "test_leak", "malformed")


def planted_vs_caught(
    planted: pl.DataFrame,
    *,
    curated_train: pl.DataFrame,
    removed: pl.DataFrame,
    flags: pl.DataFrame,
    quarantine: pl.DataFrame,
    by_edit: bool = False,
) -> pl.DataFrame:
    """Per planted defect kind: how many were planted, caught, and the recall.

    A defect is *caught* by the stage meant for it: a label flip when its row is flagged
    (label issue or conflicting duplicate), a near copy when it or its source is removed as
    a duplicate of the other (or the pair is flagged as a conflicting duplicate), a test leak
    when its row is removed as ``test_leak``, a malformed line when that train line is
    quarantined. ``out_of_train`` counts the planted rows that did not reach the curated
    train split at all, whatever the reason.

    Args:
        planted: ``Corruption.planted()`` (id, line, kind, edit, source).
        by_edit: one row per (kind, edit) instead of per kind (copy and leak edits).

    Returns:
        kind[, edit], planted, caught, recall, out_of_train.
    """
    flagged = set(flags["id"].to_list())
    conflicts = set(flags.filter(pl.col("issue") == "conflicting_duplicate")["id"].to_list())
    dup = removed.filter(pl.col("reason").is_in(DEDUP_REASONS))
    dup_pairs = set(zip(dup["id"].to_list(), dup["duplicate_of"].to_list(), strict=True))
    dup_ids = set(dup["id"].to_list())
    leaks = set(removed.filter(pl.col("reason") == "test_leak")["id"].to_list())
    bad_lines = set(quarantine.filter(pl.col("split") == "train")["line"].to_list())
    curated = set(curated_train["id"].to_list())

    def caught(kind: str, rid: str | None, line: int | None, source: str | None) -> bool:
        if kind in ("label_flip", "confusable_flip"):
            return rid in flagged
        if kind == "near_copy":
            return rid in dup_ids or (source, rid) in dup_pairs or rid in conflicts or source in conflicts
        if kind == "test_leak":
            return rid in leaks
        return line in bad_lines

    rows = planted.with_columns(
        pl.Series(
            "caught",
            [
                caught(k, r, ln, src)
                for k, r, ln, src in planted.select("kind", "id", "line", "source").iter_rows()
            ],
            dtype=pl.Boolean,
        ),
        (pl.col("id").is_not_null() & ~pl.col("id").is_in(sorted(curated))).alias("gone"),
    ).with_columns(
        pl.when(pl.col("kind") == "malformed").then(pl.col("caught")).otherwise("gone").alias("gone")
    )
    keys = ["kind", "edit"] if by_edit else ["kind"]
    order = {k: i for i, k in enumerate(PLANTED_KINDS)}
    table = (
        rows.group_by(keys)
        .agg(
            pl.len().alias("planted"),
            pl.col("caught").sum().alias("caught"),
            pl.col("gone").sum().alias("out_of_train"),
        )
        .with_columns((pl.col("caught") / pl.col("planted")).round(4).alias("recall"))
        .with_columns(pl.col("kind").replace_strict(order, default=len(order)).alias("_order"))
        .sort(["_order", *keys[1:]])
        .drop("_order")
    )
    return table.select(*keys, "planted", "caught", "recall", "out_of_train")


def planted_metrics(table: pl.DataFrame) -> dict[str, Metric]:
    """Flat ``planted_<kind>``, ``caught_<kind>``, ``recall_<kind>`` for quality.json."""
    out: dict[str, Metric] = {}
    for kind, planted, caught, recall in table.select("kind", "planted", "caught", "recall").iter_rows():
        out[f"planted_{kind}"] = int(planted)
        out[f"caught_{kind}"] = int(caught)
        out[f"recall_{kind}"] = float(recall)
    return out
