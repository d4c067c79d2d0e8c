"""`curagate demo-data` and `curagate compare`: the demo's dirty input, and proof that curation
made the adapter better (or did not).

demo-data: seeded faults planted into the bundled clean Banking77 train split
(curation/corrupt.py) -> ``data/demo/train.jsonl`` + ``planted.parquet`` (the truth, which
the curate report turns into planted vs caught when ``report.planted`` names it).

compare: the `train:` recipe trained twice with `compare:`'s budget, the same seeds and the
same test rows: (a) on the raw rows that only passed validation (no dedup, decontamination or
noise removal), (b) on the curated rows. Both adapters are scored on the curated (untouched)
test split, split into the rows that had a leaked copy in the raw arm's train rows and the
rest, with the paired difference; the TF-IDF + SVM baseline runs on both arms too.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.console import console, fail, load_cli_params
from schemas.params import DEFAULT_CURATED_DIR, DEFAULT_MODEL_DIR, DEFAULT_REPORTS_DIR, Params, load_label_set

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import polars as pl

# polars loads in the functions that use it: registering these commands costs no start-up time
DEMO_DIR = "data/demo"
FLIP_KINDS = ("label_flip", "confusable_flip")


class CompareError(RuntimeError):
    """compare cannot run on these files; says which and why."""


# ── demo-data ────────────────────────────────────────────────────────────────────────


def _read_source(path: Path, params: Params) -> pl.DataFrame:
    import polars as pl

    cols = params.data.columns
    try:
        frame = pl.read_csv(path, infer_schema_length=0)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise CompareError(f"{path}: cannot read the clean source split: {exc}") from exc
    missing = sorted({cols.text, cols.label} - set(frame.columns))
    if missing:
        raise CompareError(f"{path}: missing column(s) {missing} (data.columns)")
    return frame.select(pl.col(cols.text).alias("text"), pl.col(cols.label).alias("label"))


def make_demo_data(params: Params, *, out_dir: Path) -> dict[str, Any]:
    """Write the dirty demo train split and its truth; returns counts per planted kind.

    Raises:
        CompareError: a source split is unreadable, or a confusable pair names an unknown label.
    """
    from curation.corrupt import corrupt

    demo = params.demo
    base = params.base_dir
    train = _read_source(base / demo.source_train, params)
    test = _read_source(base / demo.source_test, params)
    labels = load_label_set(params.data.labels, base) or sorted(set(test["label"].to_list()))
    unknown = sorted({lab for pair in demo.confusable_pairs for lab in pair} - set(labels))
    if unknown:
        raise CompareError(f"demo.confusable_pairs: unknown label(s) {unknown}")
    lines, _, truth = corrupt(
        train,
        test,
        labels=labels,
        seed=demo.seed,
        flip_rate=demo.flip_rate,
        copy_rate=demo.copy_rate,
        leak_rate=demo.leak_rate,
        malformed_rate=demo.malformed_rate,
        max_text_chars=params.data.max_text_chars,
        confusable_pairs=[(a, b) for a, b in demo.confusable_pairs],
        confusable_share=demo.confusable_share,
        leak_edits=demo.leak_edits,
        label_key=params.data.columns.label,
        copy_flipped=demo.copy_flipped_rows,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    planted = truth.planted()
    planted.write_parquet(out_dir / "planted.parquet")
    counts = dict(planted.group_by("kind").len().sort("kind").iter_rows())
    return {"train_lines": len(lines), "source_rows": train.height, "planted": counts}


# ── compare ──────────────────────────────────────────────────────────────────────────


def leak_map(removed: pl.DataFrame, test: pl.DataFrame, planted: pl.DataFrame | None) -> dict[str, str]:
    """Train row id -> the test row id it copies: decontam's finds, plus the planted leaks
    (matched to the test row by text) that decontam missed (one-word paraphrases)."""
    import polars as pl

    found = removed.filter(pl.col("reason") == "test_leak")
    leaks = dict(zip(found["id"].to_list(), found["duplicate_of"].to_list(), strict=True))
    if planted is not None:
        by_text = dict(zip(test["text"].to_list(), test["id"].to_list(), strict=True))
        for rid, text in planted.filter(pl.col("kind") == "test_leak").select("id", "source").iter_rows():
            if rid not in leaks and text in by_text:
                leaks[rid] = by_text[text]
    return leaks


def _read_planted(params: Params, raw: pl.DataFrame) -> pl.DataFrame | None:
    """The demo's planted faults, or None (logged), exactly as curate's report reads them."""
    from curation.ingest import InputFileError
    from flows.files import read_planted

    try:
        return read_planted(params.report, raw["id"])
    except InputFileError as exc:
        raise CompareError(str(exc)) from exc


def compare_curation(
    *,
    raw_train: Path,
    raw_test: Path,
    curated: Path,
    params: Params,
    work_dir: Path,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train both arms, score them on the same rows; returns the result compare.json holds.

    Raises:
        CompareError: the curated directory is incomplete, or the raw input cannot be read.
    """
    import polars as pl

    from curation.ingest import InputFileError
    from flows.pipeline import run_curation
    from training.baseline import fit_predict_baseline
    from training.compare import (
        compare_recipe,
        group_comparison,
        predict_arms,
        row_groups,
        scored_rows,
        train_arms,
    )
    from training.train import read_label_set, select_examples

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    for name in ("train.parquet", "test.parquet", "removed.parquet"):
        if not (curated / name).is_file():
            raise CompareError(f"{curated / name}: not found; run `curagate curate` first")
    curated_train = pl.read_parquet(curated / "train.parquet")
    test = pl.read_parquet(curated / "test.parquet")
    removed = pl.read_parquet(curated / "removed.parquet")
    label_set = read_label_set(curated, test) or []
    try:
        run = run_curation(raw_train, raw_test, params=params, until="validate", show_progress=False)
    except InputFileError as exc:
        raise CompareError(str(exc)) from exc
    raw = run.frame("validated_train").select("id", "text", "label")
    seconds["validate"] = round(time.perf_counter() - started, 3)

    planted = _read_planted(params, raw)
    leaks = leak_map(removed, test, planted)
    flipped = (
        set() if planted is None else set(planted.filter(pl.col("kind").is_in(FLIP_KINDS))["id"].to_list())
    )
    recipe = compare_recipe(params.train, params.compare.max_train_examples)
    frames = {"raw": raw, "curated": curated_train.select("id", "text", "label")}
    subsets = {arm: select_examples(f, recipe.max_train_examples, recipe.seed) for arm, f in frames.items()}
    arms_info: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    for arm, frame in frames.items():
        ids = subsets[arm]["id"].to_list()
        arms_info[arm] = {
            "rows_available": frame.height,
            "leaked_train_rows": sum(i in leaks for i in ids),
            "planted_flips_in_train": sum(i in flipped for i in ids) if planted is not None else None,
        }
        (work_dir / arm).mkdir(parents=True, exist_ok=True)
        paths[arm] = work_dir / arm / "train.parquet"
        frame.write_parquet(paths[arm])
    leaked_test = {leaks[i] for i in subsets["raw"]["id"].to_list() if i in leaks}
    rows = scored_rows(
        test, sample_size=params.compare.sample_size, seed=params.evaluate.seed, leaked=leaked_test
    ) if params.compare.leak_rows else scored_rows(
        test, sample_size=params.compare.sample_size, seed=params.evaluate.seed, leaked=set()
    )  # fmt: skip
    groups = row_groups(rows)
    texts, gold = rows["text"].to_list(), rows["label"].to_list()

    step = time.perf_counter()
    records = train_arms(
        paths,
        recipe,
        work_dir=work_dir,
        label_set=label_set,
        parallel=params.compare.parallel,
        show_progress=show_progress,
    )
    seconds["train"] = round(time.perf_counter() - step, 3)
    for arm, record in records.items():
        arms_info[arm].update(
            train_examples=record["train_examples"],
            steps=record["steps"],
            train_seconds=record["train_seconds"],
            tokens_per_second=record["tokens_per_second"],
            peak_memory_bytes=record["peak_memory_bytes"],
            final_loss=record["final_loss"],
        )

    step = time.perf_counter()
    predictions, score_seconds = predict_arms(
        texts,
        {arm: work_dir / arm / "adapter" for arm in frames},
        base_model=recipe.base_model,
        prompt_form=records["curated"]["prompt_form"],
        label_set=label_set,
        params=params.evaluate,
        show_progress=show_progress,
    )
    seconds["score"] = round(time.perf_counter() - step, 3)
    for arm in frames:
        arms_info[arm]["score_seconds_per_row"] = round(score_seconds[arm] / max(len(texts), 1), 4)
    adapter = group_comparison(gold, predictions, groups, label_set=label_set, params=params.evaluate)

    step = time.perf_counter()
    baselines: dict[str, Any] = {}
    sets = {"same_budget": subsets}
    if params.compare.baseline_full:
        sets["all_rows"] = frames
    for name, chosen in sets.items():
        pred = {
            arm: fit_predict_baseline(
                f["text"].to_list(), f["label"].to_list(), texts, params=params.evaluate.baseline
            )
            for arm, f in chosen.items()
        }
        baselines[name] = {
            "train_rows": {arm: f.height for arm, f in chosen.items()},
            **group_comparison(gold, pred, groups, label_set=label_set, params=params.evaluate),
        }
    seconds["baseline"] = round(time.perf_counter() - step, 3)
    seconds["total"] = round(time.perf_counter() - started, 3)
    return {
        "budget": {
            "max_train_examples": recipe.max_train_examples,
            "sample_size": params.compare.sample_size,
            "epochs": recipe.epochs,
            "seed": recipe.seed,
            "test_seed": params.evaluate.seed,
        },
        "rows": {
            "scored": rows.height,
            "sample": int(rows["in_sample"].sum()),
            "leaked": int(rows["leaked"].sum()),
            "leaked_in_sample": int((rows["in_sample"] & rows["leaked"]).sum()),
        },
        "arms": arms_info,
        "adapter": adapter,
        "baseline": baselines,
        "contamination": contamination(adapter),
        "seconds": seconds,
        "groups": {
            "clean": "seeded test sample without the rows that leaked into raw train",
            "leaked": "every test row with a copy (exact, typo or paraphrase) in the raw arm's train rows",
            "sample": "the seeded test sample as drawn (leaked rows included where sampled)",
        },
    }


def contamination(adapter: dict[str, Any]) -> dict[str, Any]:
    """How much leaked rows flatter the raw arm: its accuracy on leaked vs clean rows, and the
    sample's accuracy minus the clean accuracy (the inflation a user would have been shown)."""
    out: dict[str, Any] = {}
    for arm in ("raw", "curated"):
        clean = adapter.get("clean", {}).get(arm, {}).get("accuracy")
        leaked = adapter.get("leaked", {}).get(arm, {}).get("accuracy")
        sample = adapter.get("sample", {}).get(arm, {}).get("accuracy")
        out[arm] = {
            "leaked_minus_clean": None if clean is None or leaked is None else round(leaked - clean, 6),
            "sample_minus_clean": None if clean is None or sample is None else round(sample - clean, 6),
        }
    return out


def render_compare_html(result: dict[str, Any]) -> str:
    """A small self-contained page: the arms, the adapter and baseline tables per row group."""

    def cell(entry: dict[str, Any], arm: str, key: str) -> str:
        side = entry.get(arm)
        if not side:
            return "–"
        low, high = side[f"{key}_ci"]
        return f"{side[key]:.3f} [{low:.3f}, {high:.3f}]"

    def diff(entry: dict[str, Any], key: str) -> str:
        d = entry.get("difference", {}).get(key)
        return "–" if d is None else f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

    def table(title: str, comparison: dict[str, Any]) -> str:
        body = "".join(
            f"<tr><td>{html.escape(group)}</td><td>{comparison[group]['n']}</td>"
            f"<td>{cell(comparison[group], 'raw', 'accuracy')}</td>"
            f"<td>{cell(comparison[group], 'curated', 'accuracy')}</td>"
            f"<td>{diff(comparison[group], 'accuracy')}</td>"
            f"<td>{diff(comparison[group], 'macro_f1')}</td></tr>"
            for group in ("clean", "leaked", "sample")
            if group in comparison
        )
        return (
            f"<h3>{html.escape(title)}</h3><table><tr><th>test rows</th><th>n</th><th>raw accuracy</th>"
            "<th>curated accuracy</th><th>curated − raw accuracy</th><th>curated − raw macro-F1</th></tr>"
            f"{body}</table>"
        )

    arms = "".join(
        f"<tr><td>{arm}</td>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in info.values()) + "</tr>"
        for arm, info in result["arms"].items()
    )
    heads = "".join(f"<th>{html.escape(k)}</th>" for k in next(iter(result["arms"].values())))
    parts = [
        "<h2>What curation bought: raw vs curated, same recipe and budget</h2>",
        f"<p>budget: {html.escape(json.dumps(result['budget']))}; "
        f"rows: {html.escape(json.dumps(result['rows']))}</p>",
        f"<table><tr><th>arm</th>{heads}</tr>{arms}</table>",
        table("LoRA adapter (label-constrained decoding)", result["adapter"]),
    ]
    for name, entry in result["baseline"].items():
        parts.append(table(f"TF-IDF + linear SVM ({name}: {entry['train_rows']})", entry))
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>curagate compare</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


# ── commands ─────────────────────────────────────────────────────────────────────────

ParamsOpt = Annotated[
    Path | None, typer.Option("--params", help="params.yaml; default ./params.yaml, else built-in defaults")
]


def demo_data(
    params: ParamsOpt = None,
    out: Annotated[Path, typer.Option("--out", help="output directory")] = Path(DEMO_DIR),
) -> None:
    """Dirty the bundled clean Banking77 train split (seeded, `demo:`): train.jsonl + planted.parquet."""
    cfg = load_cli_params(params)
    try:
        summary = make_demo_data(cfg, out_dir=out)
    except CompareError as exc:
        fail(exc)
    planted = ", ".join(f"{n} {k}" for k, n in summary["planted"].items())
    console.print(f"{summary['train_lines']} train lines from {summary['source_rows']} clean rows: {planted}")
    console.print(f"demo data -> {out / 'train.jsonl'}, {out / 'planted.parquet'}")


def compare(
    train: Annotated[
        Path | None, typer.Option("--train", help="the raw train file curate read; default data.train")
    ] = None,
    test: Annotated[Path | None, typer.Option("--test", help="raw test file; default data.test")] = None,
    curated: Annotated[Path, typer.Option("--curated", help="curate's output dir")] = Path(
        DEFAULT_CURATED_DIR
    ),
    params: ParamsOpt = None,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="both arms' adapters")] = Path(
        f"{DEFAULT_MODEL_DIR}/compare"
    ),
    out: Annotated[Path, typer.Option("--out", help="compare.json")] = Path(
        f"{DEFAULT_REPORTS_DIR}/compare.json"
    ),
    html_out: Annotated[Path, typer.Option("--html", help="compare.html")] = Path(
        f"{DEFAULT_REPORTS_DIR}/compare.html"
    ),
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Train the recipe on raw (validated only) and on curated rows; score both on the same test rows."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_cli_params(params)
    train_path = train or Path(cfg.data.train)
    test_path = test or (Path(cfg.data.test) if cfg.data.test else None)
    if test_path is None:
        fail("compare needs the raw test split: pass --test FILE or set data.test")
    try:
        result = compare_curation(
            raw_train=train_path,
            raw_test=test_path,
            curated=curated,
            params=cfg,
            work_dir=work_dir,
            show_progress=not no_progress,
        )
    except CompareError as exc:
        fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    html_out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    html_out.write_text(render_compare_html(result), encoding="utf-8")
    for group in ("clean", "leaked", "sample"):
        entry = result["adapter"].get(group, {})
        if entry.get("n"):
            d = entry["difference"]["accuracy"]
            console.print(
                f"adapter {group:7s} n={entry['n']:4d} raw {entry['raw']['accuracy']:.3f} "
                f"curated {entry['curated']['accuracy']:.3f} curated-raw {d['value']:+.3f} "
                f"[{d['low']:+.3f}, {d['high']:+.3f}]"
            )
    console.print(f"compare -> {out}, {html_out} ({result['seconds']['total']:.0f} s)")


def register(app: typer.Typer) -> None:
    """Add the demo-data and compare commands to ``app``."""
    app.command("demo-data")(demo_data)
    app.command("compare")(compare)
