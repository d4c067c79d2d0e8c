"""Predict and monitor on files: read, validate, call the library, write. The `curagate
predict|monitor` commands and the `monitor` Prefect flow's tasks both call these.

- :func:`predict_file`: traffic (JSONL / CSV / Parquet, no label needed) through the same
  ingest and validation as curate; bad lines go to ``<out>.quarantine.parquet`` with their
  reason; every valid row is labelled by the adapter (training/predict.py) in chunks of
  ``predict.chunk_rows``, each chunk stamped and appended to predictions.parquet (written
  beside the target and renamed into place when complete).
- :func:`monitor_files`: the drift checks of curation/drift.py over windows of
  predictions.parquet against the curated train split and the model's predictions on the
  curated test split (the baseline); writes monitor.json (flat, for `dvc metrics`),
  monitor_detail.json and monitor.html (plots over windows).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import io
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from curation.ingest import InputFileError
from schemas.params import ColumnMap, DataParams, Params
from schemas.predictions import PREDICTION_COLUMNS, PREDICTIONS_SCHEMA
from schemas.records import QUARANTINE_SCHEMA

log = logging.getLogger(__name__)

TRAFFIC_SPLIT = "traffic"  # the split name bad traffic lines carry in their quarantine file
BASELINE_FILE = "baseline_predictions.parquet"
COLORS = {"ok": "green", "warn": "orange", "drift": "red"}  # monitor.html's verdict colours


class MonitorError(RuntimeError):
    """A predict or monitor input cannot be used; names the file and why."""


def quarantine_path(out: Path) -> Path:
    """Where predict puts the traffic lines it could not read: beside the predictions."""
    return out.with_name(out.name.removesuffix(".parquet") + ".quarantine.parquet")


def utc_now() -> str:
    """The ISO-8601 UTC timestamp predictions carry (second precision)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ── predict ──────────────────────────────────────────────────────────────────────────


def read_traffic(
    path: Path, *, data: DataParams, time_column: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Traffic rows to label (id, text, extra input columns) and the quarantined lines.

    Curate's ingest and validation, with the label optional: an input label is kept as the
    extra column ``input_label``.

    Args:
        time_column: an input column with each row's own time (``predict.time_column``): when
            the traffic has it, a row whose value is not an ISO-8601 time is quarantined
            (``invalid_time``) and the others carry it, normalised to UTC, as ``_time``.

    Raises:
        InputFileError: a whole-file problem (with the file and the reason).
    """
    from curation.validate import validate_records
    from flows.files import read_input

    ingested, quarantine = read_input(path, split=TRAFFIC_SPLIT, data=data)
    given = pl.when(pl.col("label_type").is_in(["string", "number"])).then(pl.col("label"))
    neutral = ingested.with_columns(
        _input_label=given, label=pl.lit(None, pl.String), label_type=pl.lit("string")
    )
    valid, bad = validate_records(neutral, data=dataclasses.replace(data, task="classification"), labels=None)
    valid = valid.sort("line")
    rows = valid.select("id", "text", "extra", "_input_label")
    extras = _extra_columns(rows)
    if rows["_input_label"].null_count() < rows.height:
        label = rows.select(input_label="_input_label")
        # no other extra columns: an empty frame has no rows to add the label to
        extras = extras.with_columns(label["input_label"]) if extras.width else label
    rows = pl.concat([rows.select("id", "text"), extras], how="horizontal")
    quarantined = [quarantine, bad]
    if time_column is not None:
        rows, late = _check_times(rows, valid, path=path, column=time_column)
        quarantined.append(late)
    return rows, pl.concat(quarantined, how="diagonal_relaxed").cast(QUARANTINE_SCHEMA).select(
        QUARANTINE_SCHEMA.names()
    ).sort("line")


def _iso_utc(value: object) -> str | None:
    """``value`` as ``YYYY-MM-DDTHH:MM:SSZ`` (a naive time counts as UTC), or None."""
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_times(
    rows: pl.DataFrame, valid: pl.DataFrame, *, path: Path, column: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows with a valid ``column`` time (as ``_time``) and the others as quarantined lines."""
    if column not in rows.columns:  # traffic without its own time: stamped by the clock
        log.debug("%s: no %r column (predict.time_column): predicted_at is the clock", path, column)
        return rows, valid.head(0).select("split", "source", "line", "id", "raw")
    # row by row: polars infers one format from the first value and nulls the rest
    times = pl.Series("_time", [_iso_utc(v) for v in rows[column].to_list()], dtype=pl.String)
    ok = times.is_not_null()
    late = (
        valid.filter(~ok)
        .select("split", "source", "line", "id", "raw")
        .with_columns(
            stage=pl.lit("validate"),
            reason=pl.lit("invalid_time"),
            detail=pl.format(
                f"{column}: {{}} is not an ISO-8601 time",
                rows.filter(~ok)[column].cast(pl.String).fill_null("null"),
            ),
        )
    )
    return rows.with_columns(times).filter(ok), late


def _extra_columns(rows: pl.DataFrame) -> pl.DataFrame:
    """Extra input columns (ingest keeps them as JSON text), renamed ``input_<name>`` where a
    name is one of the predictions' own columns."""
    if rows["extra"].drop_nulls().is_empty():
        return pl.DataFrame()
    try:
        extras = rows["extra"].str.json_decode().struct.unnest()  # polars 2: the Series form infers
    except (pl.exceptions.PolarsError, TypeError) as exc:  # mixed types across rows: keep the JSON text
        log.warning("extra columns kept as JSON text (%s)", exc)
        return rows.select(extra_json=pl.col("extra"))
    return extras.rename(
        {c: f"input_{c}" for c in extras.columns if c in PREDICTION_COLUMNS or c == "input_label"}
    )


def predict_file(
    traffic: Path,
    out: Path,
    *,
    params: Params,
    model_dir: Path,
    predictor: Any = None,
    predicted_at: Callable[[], str] = utc_now,
    on_progress: Callable[[int, int], None] | None = None,
    sample_rows: int | None = None,
) -> dict[str, Any]:
    """Label every valid line of ``traffic`` into ``out`` (predictions.parquet).

    Both files (predictions and the quarantine beside them) are written under temporary names
    and renamed into place at the end: a run that is killed or fails leaves the previous
    files, never a half-written one.

    Args:
        predictor: a loaded :class:`training.predict.Predictor`; None loads ``model_dir``'s.
        predicted_at: the clock each chunk is stamped with (tests pass a fixed one); unused
            when the traffic has the ``predict.time_column`` column (each row's own time).
        on_progress: called with (rows done, rows in total) after each batch.
        sample_rows: predict a seeded sample (``monitor.seed``) of this many valid rows, in
            file order (the monitor's baseline on the test split); None = every row.

    Returns:
        A summary: input rows, predictions, quarantined, model version, seconds, files.

    Raises:
        InputFileError: the traffic file cannot be read as a whole, has no valid line, or
            ``out`` cannot be written.
        training.predict.PredictorError: the model directory cannot serve.
    """
    import pyarrow.parquet as pq

    from training.predict import load_predictor, predict_texts

    bad_path = quarantine_path(out)
    _check_writable(out)
    _remove_stale_temporaries(out)
    time_column = params.predict.time_column
    rows, quarantine = read_traffic(traffic, data=params.data, time_column=time_column)
    if rows.is_empty():  # nothing to label is an input problem, not an empty success
        reasons = quarantine.group_by("reason").len().sort("len", "reason", descending=[True, False])
        counts = ", ".join(f"{r} {n}" for r, n in reasons.iter_rows())
        first = quarantine.row(0, named=True) if quarantine.height else None
        where = f"; line {first['line']}: {first['reason']}, {first['detail']}" if first else ""
        raise InputFileError(f"{traffic}: no valid line to predict ({counts or 'no records'}{where})")
    if sample_rows is not None and sample_rows < rows.height:
        keep = rows.with_row_index("_i").sample(sample_rows, seed=params.monitor.seed)["_i"].sort()
        rows = rows[keep.to_list()]
    if predictor is None:  # before any file is written: a model that cannot serve leaves nothing
        predictor = load_predictor(
            model_dir, threads=params.predict.threads, version=params.predict.model_version
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp, bad_tmp = _temporary(out), _temporary(bad_path)
    writer = None
    done = 0
    try:
        quarantine.write_parquet(bad_tmp)
        empty = _prediction_frame(rows.head(0).drop("_time", strict=False), [], [], predictor.version, "")
        writer = pq.ParquetWriter(tmp, empty.to_arrow().schema)

        def advance(k: int) -> None:
            nonlocal done
            done += k
            if on_progress is not None:
                on_progress(done, rows.height)

        for chunk in rows.iter_slices(params.predict.chunk_rows):
            labels, confidences = predict_texts(
                predictor, chunk["text"].to_list(), batch_size=params.predict.batch_size, on_batch=advance
            )
            stamp = chunk["_time"] if "_time" in chunk.columns else predicted_at()
            frame = _prediction_frame(chunk.drop("_time", strict=False), labels, confidences,
                                      predictor.version, stamp)  # fmt: skip
            writer.write_table(frame.to_arrow())
        writer.close()
        writer = None
        # the quarantine first: a kill between the renames pairs old predictions with new
        # quarantined lines, never new predictions with a stale quarantine file
        bad_tmp.replace(bad_path)
        tmp.replace(out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        bad_tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    return {
        "input_rows": rows.height + quarantine.height,
        "predictions": rows.height,
        "quarantined": quarantine.height,
        "model_version": predictor.version,
        "seconds": round(seconds, 3),
        "seconds_per_10k": round(seconds / rows.height * 10_000, 1) if rows.height else None,
        "out": str(out),
        "quarantine": str(bad_path),
    }


def _temporary(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process (renamed into place when done)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _check_writable(out: Path) -> None:
    """Refuse an --out that is a directory or under a file before any work is done."""
    if out.is_dir():
        raise InputFileError(f"{out}: is a directory; --out names the predictions .parquet file")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise InputFileError(f"{out}: cannot write under {parent}: it is a file, not a directory")


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files a killed run left beside ``out`` (its process is gone)."""
    if not out.parent.is_dir():
        return
    for name in (out.name, quarantine_path(out).name):
        for stale in out.parent.glob(f".{name}.*.tmp"):
            pid = stale.name.removeprefix(f".{name}.").removesuffix(".tmp")
            if pid.isdigit() and not _alive(int(pid)):
                log.info("%s: removing what a killed predict run left", stale)
                stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _prediction_frame(
    chunk: pl.DataFrame, labels: list[str], confidences: list[float], version: str, stamp: str | pl.Series
) -> pl.DataFrame:
    """The fixed columns of PREDICTIONS_SCHEMA, then the chunk's extra input columns."""
    fixed = pl.DataFrame(
        {
            "id": chunk["id"],
            "text": chunk["text"],
            "label": pl.Series(labels, dtype=pl.String),
            "confidence": pl.Series(confidences, dtype=pl.Float64),
            "model_version": pl.Series([version] * chunk.height, dtype=pl.String),
            "predicted_at": stamp.cast(pl.String).rename("predicted_at")
            if isinstance(stamp, pl.Series)
            else pl.Series([stamp] * chunk.height, dtype=pl.String),
        },
        schema=PREDICTIONS_SCHEMA,
    )
    return pl.concat([fixed, chunk.drop("id", "text")], how="horizontal")


def read_predictions(path: Path) -> pl.DataFrame:
    """predictions.parquet, checked against PREDICTIONS_SCHEMA's fixed columns.

    Raises:
        MonitorError: missing, unreadable, or a fixed column missing or of another type.
    """
    if path.is_dir():
        raise MonitorError(f"{path}: is a directory; pass the predictions .parquet file")
    if not path.is_file():
        raise MonitorError(f"{path}: predictions file not found; run `curagate predict` first")
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt file
        raise MonitorError(f"{path}: unreadable Parquet ({exc})") from exc
    wrong = [
        f"{name} ({frame.schema.get(name, 'missing')}, expected {dtype})"
        for name, dtype in PREDICTIONS_SCHEMA.items()
        if frame.schema.get(name) != dtype
    ]
    if wrong:
        raise MonitorError(f"{path}: not a predictions file: {', '.join(wrong)}")
    bad = frame.filter(~pl.col("confidence").is_between(0.0, 1.0) | pl.col("label").is_null())
    if bad.height:
        raise MonitorError(f"{path}: {bad.height} row(s) with a null label or a confidence outside [0, 1]")
    return frame


# ── monitor ──────────────────────────────────────────────────────────────────────────


def baseline_predictions(
    reference: Path, out_dir: Path, *, params: Params, model_dir: Path, predictor: Any = None
) -> Path:
    """The model's predictions on (a ``monitor.baseline_rows`` sample of) the curated test
    split, cached in ``out_dir`` per model version and sample size (predicted again when the
    adapter or the sample size changed)."""
    from training.predict import ADAPTER_DIR, adapter_version

    target = out_dir / BASELINE_FILE
    version = params.predict.model_version or adapter_version(model_dir / ADAPTER_DIR)
    test = reference / "test.parquet"
    if not test.is_file():
        raise MonitorError(f"{test}: not found; the baseline needs the curated test split")
    wanted = pl.scan_parquet(test).select(pl.len()).collect().item()
    if params.monitor.baseline_rows is not None:
        wanted = min(wanted, params.monitor.baseline_rows)
    if target.is_file():
        try:
            cached = pl.read_parquet(target, columns=["model_version"])["model_version"]
        except Exception:  # a corrupt or foreign cache file is predicted again, not trusted
            cached = pl.Series([], dtype=pl.String)
        if cached.unique().to_list() == [version] and cached.len() == wanted:
            return target
    # the curated split is already valid: its columns are id, text, label (not data.columns'
    # names), and it has no traffic time column (predict.time_column)
    curated = dataclasses.replace(
        params,
        data=dataclasses.replace(params.data, columns=ColumnMap()),
        predict=dataclasses.replace(params.predict, time_column=None),
    )
    predict_file(test, target, params=curated, model_dir=model_dir, predictor=predictor,
                 sample_rows=params.monitor.baseline_rows)  # fmt: skip
    return target


# monitor: keys that steer the flow or the baseline, not the checks: the DVC monitor stage does
# not list them, so monitor_detail.json must not record them either
FLOW_ONLY_KEYS = ("min_production_accuracy", "review", "traffic", "schedule", "baseline_rows")


def check_settings(cfg: Any) -> dict[str, Any]:
    """The ``monitor:`` keys the drift checks read (recorded in monitor_detail.json)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in FLOW_ONLY_KEYS}


def monitor_files(
    reference: Path,
    predictions: Path,
    out_dir: Path,
    *,
    params: Params,
    baseline: Path | None = None,
    model_dir: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Drift checks of ``predictions`` against the curated dir ``reference``.

    Args:
        baseline: the model's predictions on the curated test split; None with ``model_dir``
            predicts them (cached in ``out_dir``), None without it skips the confidence check.

    Returns:
        (monitor.json's flat metrics, the detailed result).

    Raises:
        MonitorError: a missing or malformed input file (named).
    """
    from curation.drift import flat_monitor_metrics, monitor_windows

    train = reference / "train.parquet"
    if not train.is_file():
        raise MonitorError(f"{train}: not found; pass --reference a curated directory (`curagate curate`)")
    reference_rows = pl.read_parquet(train, columns=["text", "label"])
    window_rows = read_predictions(predictions)
    for above in (out_dir, *out_dir.parents):
        if above.exists() and not above.is_dir():
            raise MonitorError(
                f"{out_dir}: cannot write the report there: {above} is a file, not a directory"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    if baseline is None and model_dir is not None:
        baseline = baseline_predictions(reference, out_dir, params=params, model_dir=model_dir)
    baseline_rows = read_predictions(baseline) if baseline is not None else None
    try:
        result = monitor_windows(window_rows, reference_rows, baseline=baseline_rows, cfg=params.monitor)
    except ValueError as exc:
        raise MonitorError(f"{predictions}: {exc}") from exc
    result.update(
        predictions=str(predictions),
        reference=str(reference),
        baseline=str(baseline) if baseline is not None else None,
        model_versions=sorted(window_rows["model_version"].unique().to_list()),
        thresholds=check_settings(params.monitor),
    )
    flat = flat_monitor_metrics(result)
    (out_dir / "monitor.json").write_text(json.dumps(flat, indent=2) + "\n", encoding="utf-8")
    (out_dir / "monitor_detail.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "monitor.html").write_text(render_monitor_html(result), encoding="utf-8")
    return flat, result


# ── the page ─────────────────────────────────────────────────────────────────────────


def window_figure(result: dict[str, Any]) -> Any:
    """Four panels over windows, each with its warn / drift thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = result["windows"]
    cfg = result["thresholds"]
    x = [w["window"] for w in windows]
    stats = [w["stats"] for w in windows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)

    def panel(ax: Any, key: str, title: str, warn: float | None, drift: float | None) -> None:
        values = [s.get(key) for s in stats]
        ax.plot(x, values, marker="o")
        if warn is not None:
            ax.axhline(warn, color="orange", ls="--", lw=1, label="warn")
        if drift is not None:
            ax.axhline(drift, color="red", ls="--", lw=1, label="drift")
        ax.set_title(title, fontsize=10)

    ax = axes[0][0]
    panel(ax, "auc", "input drift: two-sample AUC (band: interval)", None, None)
    ax.fill_between(
        x, [s.get("auc_low", 0.5) for s in stats], [s.get("auc_high", 0.5) for s in stats], alpha=0.3
    )
    ax.axhline(cfg["auc_warn"], color="orange", ls="--", lw=1, label="warn (lower bound)")
    ax.axhline(cfg["auc_drift"], color="red", ls="--", lw=1, label="drift (lower bound)")
    ax.legend(fontsize=7)
    panel(axes[0][1], "novel_rate_excess", "novel terms: unseen-token rate - test split's",
          cfg["novel_rate_warn"], cfg["novel_rate_drift"])  # fmt: skip
    panel(axes[1][0], "psi", "prediction drift: PSI (a level counts only with chi-square p below its alpha)",
          cfg["psi_warn"], cfg["psi_drift"])  # fmt: skip
    axes[1][0].legend(fontsize=7)
    axes[0][1].legend(fontsize=7)
    ax = axes[1][1]
    panel(ax, "mean_confidence", "confidence: mean (line) and low share (dots)", None, None)
    ax.plot(x, [s.get("low_confidence_share") for s in stats], "s:", label="low-confidence share")
    base = stats[0].get("baseline_mean_confidence")
    if base is not None:
        ax.axhline(base, color="grey", lw=1, label="test split mean")
        ax.axhline(base - cfg["confidence_drop_drift"], color="red", ls="--", lw=1, label="drift")
    ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("window")
    fig.tight_layout()
    return fig


def _window_span(window: dict[str, Any]) -> str:
    """``rows 501-1000`` for a row window (its start label says only ``rows 501-``), else the
    start time of a time window."""
    start = str(window["start"])
    if start.startswith("rows ") and start.endswith("-"):
        first = int(start.removeprefix("rows ").removesuffix("-"))
        return f"rows {first:,}–{first + window['rows'] - 1:,}"
    return start


PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;font-size:14px;color:#222;max-width:960px;margin:0 auto;"
    "padding:12px 24px}h1{margin:8px 0 4px}h2{font-size:18px;margin:22px 0 8px;border-bottom:1px solid #ddd}"
    "p.meta{color:#555;margin:2px 0}code{font-size:12px;overflow-wrap:anywhere}"
    "table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
    "th{background:#f4f4f4;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "img{max-width:100%}.terms{columns:3;max-width:600px}.terms span{display:block}"
)


def _level_cell(level: str) -> str:
    return f"<td style='color:{COLORS[level]};font-weight:600'>{level}</td>"


def render_monitor_html(result: dict[str, Any]) -> str:
    """One offline page: verdict, the last window's checks, plots over windows, new terms."""
    import matplotlib.pyplot as plt

    fig = window_figure(result)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    windows = result["windows"]
    last = windows[-1]
    color = COLORS[result["verdict"]]
    counts = {level: sum(w["verdict"] == level for w in windows) for level in COLORS}
    checks = "".join(
        f"<tr><td>{c['check']}</td>{_level_cell(c['level'])}<td class='num'>{c['value']:.4f}</td>"
        f"<td class='num'>{c['warn']}</td><td class='num'>{c['drift']}</td>"
        f"<td>{html.escape(c['what'])}</td></tr>"
        for c in last["checks"]
    )
    terms = (
        "".join(f"<span>{html.escape(t)} <b>{n}</b></span>" for t, n in last["stats"]["top_new_terms"])
        or "<span>none</span>"
    )
    rows = "".join(
        f"<tr><td class='num'>{w['window']}</td><td>{html.escape(_window_span(w))}</td>"
        f"<td class='num'>{w['rows']:,}</td>{_level_cell(w['verdict'])}"
        f"<td>{', '.join(w['failed_checks'])}</td></tr>"
        for w in windows
    )
    failed = ", ".join(last["failed_checks"])
    models = html.escape(", ".join(result["model_versions"]))
    files = {k: html.escape(str(result[k])) for k in ("predictions", "reference", "baseline")}
    header = "".join(f"<th>{h}</th>" for h in ("check", "level", "value", "warn at", "drift at", "what"))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>curagate monitor</title>"
        f"<style>{PAGE_STYLE}</style></head><body>"
        f"<h1>Monitor: <span style='color:{color}'>{result['verdict']}</span>"
        f"{' (' + html.escape(failed) + ')' if failed else ''}</h1>"
        f"<p class='meta'>The verdict is the last window's; {len(windows)} window(s): "
        f"{counts['drift']} drift, {counts['warn']} warn, {counts['ok']} ok. Model {models}; "
        f"label reference: {result['label_reference']}.</p>"
        f"<p class='meta'>predictions <code>{files['predictions']}</code> vs reference "
        f"<code>{files['reference']}</code>, baseline <code>{files['baseline']}</code></p>"
        f"<h2>Last window ({html.escape(_window_span(last))}, {last['rows']:,} rows)</h2>"
        f"<table><tr>{header}</tr>{checks}</table>"
        f"<h2>Over windows</h2><img alt='drift statistics over windows' src='data:image/png;base64,{image}'>"
        "<table><tr><th>window</th><th>span</th><th>rows</th><th>verdict</th><th>failed checks</th></tr>"
        f"{rows}</table>"
        f"<h2>New terms in the last window</h2><div class='terms'>{terms}</div>"
        "</body></html>\n"
    )


__all__ = [
    "InputFileError",
    "MonitorError",
    "baseline_predictions",
    "monitor_files",
    "predict_file",
    "read_predictions",
    "read_traffic",
]
