"""Coverage per class (rows, distinct near-duplicate clusters, spread) and counts per slice.

Pure: frames and, when the semantic checks ran, the curated rows' embeddings in; plain dicts
out (quality.json, report.html). A class with many rows but few clusters or a small spread is
a coverage gap the gate can act on; a slice (an extra input column such as source, language or
channel) whose rows are removed or flagged far more often than the others is visible here
before it becomes a biased model.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import polars as pl

from curation.semantic import class_coverage
from schemas.semantic_params import SemanticParams

MAX_SHOWN = 20  # paraphrase clusters and outliers listed in report.html


def slice_columns_of(
    validated: pl.DataFrame, *, columns: tuple[str, ...] | None, max_values: int
) -> pl.DataFrame:
    """The slice columns decoded from ``extra`` (the input's columns beyond id/text/label).

    Args:
        columns: the columns to use; None = every extra column with 2..``max_values`` values.

    Returns:
        id plus one String column per slice (missing values as null).
    """
    if "extra" not in validated.columns or validated["extra"].drop_nulls().len() == 0:
        return validated.select("id")
    decoded = validated.select("id").with_columns(
        _x=validated["extra"].str.json_decode(infer_schema_length=None)
    )
    if not isinstance(decoded.schema["_x"], pl.Struct):
        return validated.select("id")
    wide = decoded.unnest("_x")
    names = [c for c in wide.columns if c != "id" and not wide.schema[c].is_nested()]
    if columns is not None:
        names = [c for c in columns if c in names]
    else:
        names = [c for c in names if 2 <= wide[c].cast(pl.String).n_unique() <= max_values]
    return wide.select("id", *(pl.col(c).cast(pl.String) for c in sorted(names)))


def coverage_summary(
    curated: pl.DataFrame,
    *,
    validated: pl.DataFrame,
    removed: pl.DataFrame,
    held: pl.DataFrame,
    flags: pl.DataFrame,
    embeddings: np.ndarray | None,
    semantic: SemanticParams,
    slice_columns: tuple[str, ...] | None,
    max_slice_values: int,
) -> dict[str, Any]:
    """Coverage per class (with embeddings) and counts per slice value.

    Returns:
        {"classes": [{label, rows, clusters, spread}, ...] (empty without embeddings),
         "slices": {column: [{value, input, curated, removed, held, flags_<issue>...}, ...]}}
    """
    out: dict[str, Any] = {"classes": [], "slices": {}}
    if embeddings is not None:
        out["outliers"] = int((flags["issue"] == "outlier").sum())
        out["validated_rows"] = validated.height
    if embeddings is not None and curated.height and "label" in curated.columns:
        out["classes"] = class_coverage(
            curated,
            embeddings=embeddings,
            threshold=semantic.duplicate_threshold,
            k=semantic.neighbours,
            block_rows=semantic.block_rows,
            cfg=semantic,
        ).to_dicts()
    slices = slice_columns_of(validated, columns=slice_columns, max_values=max_slice_values)
    where = pl.concat(
        [
            curated.select("id", pl.lit("curated").alias("_where")),
            removed.filter(pl.col("split") == "train").select("id", pl.lit("removed").alias("_where")),
            held.select("id", pl.lit("held").alias("_where")),
        ]
    ).unique("id", keep="first")
    issues = sorted(set(flags["issue"].to_list()))
    for col in [c for c in slices.columns if c != "id"]:
        frame = slices.select("id", pl.col(col).fill_null("(none)").alias("value")).join(
            where, on="id", how="left"
        )
        flagged = flags.select("id", "issue").join(
            slices.select("id", pl.col(col).fill_null("(none)").alias("value")), on="id"
        )
        table = (
            frame.group_by("value")
            .agg(
                pl.len().alias("input"),
                *((pl.col("_where") == w).sum().alias(w) for w in ("curated", "removed", "held")),
            )
            .join(
                flagged.group_by("value").agg(
                    *((pl.col("issue") == i).sum().alias(f"flags_{i}") for i in issues)
                ),
                on="value",
                how="left",
            )
            .fill_null(0)
            .sort("value")
        )
        out["slices"][col] = table.to_dicts()
    return out


def coverage_metrics(coverage: dict[str, Any], *, curated_rows: int) -> dict[str, Any]:
    """Flat quality.json metrics from :func:`coverage_summary` (gate inputs among them)."""
    metrics: dict[str, Any] = {}
    if "outliers" in coverage:
        n = coverage["validated_rows"]
        metrics["outlier_rate"] = round(coverage["outliers"] / n, 6) if n else 0.0
    classes = coverage.get("classes") or []
    if classes:
        spreads = [c["spread"] for c in classes if c["spread"] is not None]
        metrics["min_class_spread"] = round(min(spreads), 4) if spreads else None
        metrics["min_clusters_per_class"] = min(c["clusters"] for c in classes)
        metrics["coverage_per_class"] = {
            c["label"]: {k: c[k] for k in ("rows", "clusters", "spread")} for c in classes
        }
    if coverage.get("slices"):
        metrics["slices"] = coverage["slices"]
    return metrics


def render_coverage(
    coverage: dict[str, Any], *, flags: pl.DataFrame, removed: pl.DataFrame, validated: pl.DataFrame
) -> str:
    """HTML for report.html: paraphrase clusters side by side, outliers, coverage, slices."""
    parts: list[str] = []
    para = flags.filter(pl.col("issue") == "paraphrase")
    sem = removed.filter(pl.col("stage") == "semantic")
    if para.height or sem.filter(pl.col("reason") == "semantic_duplicate").height:
        pairs = pl.concat(
            [
                para.select("id", "text", "duplicate_of", pl.col("score").round(4).alias("cosine"), "issue"),
                sem.filter(pl.col("reason") == "semantic_duplicate").select(
                    "id",
                    "text",
                    "duplicate_of",
                    pl.col("detail").alias("cosine"),
                    pl.col("reason").alias("issue"),
                ),
            ],
            how="vertical_relaxed",
        ).sort("duplicate_of", "id")
        pairs = pairs.join(
            validated.select(pl.col("id").alias("duplicate_of"), pl.col("text").alias("kept_text")),
            on="duplicate_of",
            how="left",
            maintain_order="left",
        )
        rows = "".join(
            f"<tr><td>{html.escape(str(r['duplicate_of']))}</td><td>{html.escape(str(r['kept_text']))}</td>"
            f"<td>{html.escape(str(r['id']))}</td><td>{html.escape(str(r['text']))}</td><td>{html.escape(str(r['cosine']))}</td>"
            f"<td>{html.escape(str(r['issue']))}</td></tr>"
            for r in pairs.head(MAX_SHOWN).to_dicts()
        )
        parts.append(
            "<h2>Semantic near-duplicates, side by side</h2><table><tr><th>kept row</th><th>kept text</th>"
            "<th>member</th>"
            f"<th>member text</th><th>cosine</th><th>issue</th></tr>{rows}</table>"
        )
    outliers = flags.filter(pl.col("issue") == "outlier").sort(["score", "id"], descending=[True, False])
    if outliers.height:
        rows = "".join(
            f"<tr><td>{html.escape(str(r['id']))}</td><td>{r['score']:.4f}</td><td>{html.escape(str(r['given_label']))}</td>"
            f"<td>{html.escape(str(r['text']))}</td></tr>"
            for r in outliers.head(MAX_SHOWN).to_dicts()
        )
        parts.append(
            "<h2>Outliers (mean cosine distance to nearest rows)</h2><table><tr><th>id</th><th>score</th>"
            f"<th>label</th><th>text</th></tr>{rows}</table>"
        )
    classes = coverage.get("classes") or []
    if classes:
        ordered = sorted(
            classes, key=lambda c: (c["spread"] if c["spread"] is not None else -1.0, c["label"])
        )
        rows = "".join(
            f"<tr><td>{html.escape(c['label'])}</td><td>{c['rows']}</td><td>{c['clusters']}</td><td>{c['spread']}</td></tr>"
            for c in ordered
        )
        parts.append(
            "<h2>Coverage per class (least spread first)</h2><table><tr><th>class</th><th>rows</th>"
            f"<th>distinct clusters</th><th>spread</th></tr>{rows}</table>"
        )
    for col, table in sorted((coverage.get("slices") or {}).items()):
        if not table:
            continue
        heads = list(table[0])
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(r[h]))}</td>" for h in heads) + "</tr>" for r in table
        )
        parts.append(
            f"<h2>Slice: {html.escape(col)}</h2><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads)
            + f"</tr>{rows}</table>"
        )
    return "".join(parts)
