"""Semantic near-duplicates, outliers, coverage and slices on inline frames and hand-made vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.coverage import coverage_metrics, coverage_summary
from curation.semantic import class_coverage, find_semantic_issues, nearest_neighbours, outlier_scores
from schemas.records import HOLD_REASON
from schemas.semantic_params import SemanticParams


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rows(labels: list[str]) -> pl.DataFrame:
    n = len(labels)
    return pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "split": "train",
            "line": list(range(1, n + 1)),
            "text": [f"text {i}" for i in range(n)],
            "label": labels,
            "text_hash": [f"h{i}" for i in range(n)],
        }
    )


def planted() -> tuple[pl.DataFrame, np.ndarray]:
    """6 rows: r0~r3 (same label), r1~r4 (labels differ), r2, r5 alone."""
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=(6, 32)))
    emb = base.copy()
    emb[3] = base[0] + 0.02 * rng.normal(size=32)
    emb[4] = base[1] + 0.02 * rng.normal(size=32)
    return rows(["a", "b", "a", "a", "c", "b"]), unit(emb)


def test_flag_policy_holds_paraphrases_and_conflicts_keeping_the_earliest_line() -> None:
    frame, emb = planted()
    out = find_semantic_issues(frame, embeddings=emb, cfg=SemanticParams(duplicate_threshold=0.95))
    assert sorted(out.kept["id"]) == ["r0", "r1", "r2", "r5"]
    assert out.removed["reason"].to_list() == [HOLD_REASON, HOLD_REASON]
    issues = dict(zip(out.flags["id"], out.flags["issue"], strict=True))
    assert issues == {"r3": "paraphrase", "r4": "conflicting_duplicate"}
    assert dict(zip(out.flags["id"], out.flags["duplicate_of"], strict=True)) == {"r3": "r0", "r4": "r1"}
    assert (out.flags["score"] > 0.95).all()
    assert out.kept.height + out.removed.height == frame.height


def test_remove_policy_removes_with_duplicate_of_but_still_holds_conflicts() -> None:
    frame, emb = planted()
    out = find_semantic_issues(frame, embeddings=emb, cfg=SemanticParams(duplicate_policy="remove"))
    reasons = dict(zip(out.removed["id"], out.removed["reason"], strict=True))
    assert reasons == {"r3": "semantic_duplicate", "r4": HOLD_REASON}
    assert out.removed.filter(pl.col("id") == "r3")["duplicate_of"].item() == "r0"
    assert out.flags["issue"].to_list() == ["conflicting_duplicate"]
    off = find_semantic_issues(frame, embeddings=emb, cfg=SemanticParams(duplicate_policy="off"))
    assert off.kept.height == frame.height and off.removed.height == 0


def test_planted_off_topic_rows_score_highest_and_are_flagged_as_outliers() -> None:
    rng = np.random.default_rng(2)
    centres = unit(rng.normal(size=(3, 32)))
    topical = unit(np.repeat(centres, 20, axis=0) + 0.15 * rng.normal(size=(60, 32)))
    off_topic = unit(rng.normal(size=(3, 32)))
    emb = np.concatenate([topical, off_topic])
    scores = outlier_scores(emb, k=5)
    assert set(np.argsort(-scores)[:3]) == {60, 61, 62}
    frame = rows(["x"] * 63)
    cfg = SemanticParams(outlier_k=5, outlier_quantile=None, outlier_min_score=0.5, duplicate_policy="off")
    out = find_semantic_issues(frame, embeddings=emb, cfg=cfg)
    assert sorted(out.flags.filter(pl.col("issue") == "outlier")["id"]) == ["r60", "r61", "r62"]
    assert out.removed["detail"].str.starts_with("outlier: mean cosine distance").all()


def test_nearest_neighbours_are_sorted_and_independent_of_the_block_size() -> None:
    emb = unit(np.random.default_rng(3).normal(size=(50, 8)))
    i1, s1 = nearest_neighbours(emb, emb, k=4, block_rows=7, exclude_self=True)
    i2, s2 = nearest_neighbours(emb, emb, k=4, block_rows=64, exclude_self=True)
    assert (i1 == i2).all() and np.allclose(s1, s2)
    assert (np.diff(s1, axis=1) <= 0).all() and (i1 != np.arange(50)[:, None]).all()
    brute = np.argsort(-(emb @ emb.T - 3 * np.eye(50)), axis=1, kind="stable")[:, :4]
    assert (i1 == brute).all()


def test_coverage_counts_clusters_and_spread_per_class() -> None:
    rng = np.random.default_rng(4)
    same = np.repeat(unit(rng.normal(size=(1, 16))), 5, axis=0)
    varied = unit(rng.normal(size=(5, 16)))
    frame = rows(["narrow"] * 5 + ["wide"] * 5)
    cov = class_coverage(frame, embeddings=np.concatenate([same, varied]), threshold=0.95, k=10)
    by = {r["label"]: r for r in cov.to_dicts()}
    assert by["narrow"]["rows"] == 5 and by["narrow"]["clusters"] == 1 and abs(by["narrow"]["spread"]) < 1e-4
    assert by["wide"]["clusters"] == 5 and by["wide"]["spread"] > 0.5


def test_slices_break_counts_and_flags_down_by_extra_columns() -> None:
    frame = rows(["a"] * 4).with_columns(
        extra=pl.Series(
            [json.dumps({"source": s, "note": f"n{i}"}) for i, s in enumerate(["web", "app", "web", "web"])]
        )
    )
    curated = frame.filter(pl.col("id").is_in(["r0", "r1"]))
    removed = frame.filter(pl.col("id") == "r2").select("id", "split")
    held = frame.filter(pl.col("id") == "r3").select("id")
    flags = pl.DataFrame({"id": ["r3"], "issue": ["outlier"]})
    summary = coverage_summary(
        curated,
        validated=frame,
        removed=removed,
        held=held,
        flags=flags,
        embeddings=None,
        semantic=SemanticParams(),
        slice_columns=None,
        max_slice_values=3,
    )
    # "note" has 4 values > max_slice_values: not a slice; "source" is
    assert list(summary["slices"]) == ["source"]
    by = {r["value"]: r for r in summary["slices"]["source"]}
    assert by["web"] == {
        "value": "web",
        "input": 3,
        "curated": 1,
        "removed": 1,
        "held": 1,
        "flags_outlier": 1,
    }
    assert by["app"]["curated"] == 1 and by["app"]["flags_outlier"] == 0
    assert coverage_metrics(summary, curated_rows=2)["slices"] == summary["slices"]


def test_embedding_cache_gives_the_same_bytes_and_embeds_each_text_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.embed
    from flows import embed_cache

    calls: list[list[str]] = []

    def fake(texts: list[str], **_: object) -> np.ndarray:
        calls.append(list(texts))
        return unit(
            np.stack(
                [np.frombuffer(t.ljust(384 * 4, "x").encode()[: 384 * 4], np.uint8)[:384] for t in texts]
            )
            + 1.0
        )

    monkeypatch.setattr(flows.embed, "embed_texts", fake)
    monkeypatch.setattr(embed_cache, "_MEMORY", {})
    cfg = SemanticParams(enabled=True, model="minilm", cache_dir="cache")
    first = embed_cache.cached_embedder(cfg, base_dir=tmp_path)(["b", "a", "b"])
    monkeypatch.setattr(embed_cache, "_MEMORY", {})  # a new process: only the file remains
    again = embed_cache.cached_embedder(cfg, base_dir=tmp_path)(["a", "b", "c"])
    assert first.tobytes() == np.concatenate([again[1:2], again[:1], again[1:2]]).tobytes()
    assert calls == [["a", "b"], ["c"]]
    assert (tmp_path / "cache" / "minilm-b32-t1.parquet").is_file()


def test_gate_acts_on_outlier_rate_and_coverage_only_when_thresholds_are_set() -> None:
    from schemas.gate import evaluate_gate
    from schemas.training_params import GateParams

    quality = {"outlier_rate": 0.03, "min_class_spread": 0.2, "min_clusters_per_class": 4}
    loose = evaluate_gate(quality, thresholds=GateParams(require_accounting=False, require_noise_check=False))
    names = {c["name"] for c in loose["checks"]}
    assert not names & {"max_outlier_rate", "min_class_spread", "min_clusters_per_class"}
    strict = GateParams(
        require_accounting=False,
        require_noise_check=False,
        max_outlier_rate=0.01,
        min_class_spread=0.1,
        min_clusters_per_class=5,
    )
    failed = set(evaluate_gate(quality, thresholds=strict)["failed"])
    assert {"max_outlier_rate", "min_clusters_per_class"} <= failed and "min_class_spread" not in failed


def test_bad_semantic_params_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate_policy"):
        SemanticParams(duplicate_policy="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate_threshold"):
        SemanticParams(duplicate_threshold=1.5)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "min_score"), [("minilm", 0.6), ("static", 0.45)])
def test_pipeline_with_real_embeddings_finds_planted_paraphrases_and_is_byte_identical_with_a_cache(
    tmp_path: Path,
    banking_train: pl.DataFrame,
    banking_test: pl.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    min_score: float,
) -> None:
    from flows import embed_cache
    from flows.pipeline import run_curation, write_run
    from schemas.params import params_from_dict

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    labels = sorted(banking_train["label"].unique().to_list())[:8]
    train = banking_train.filter(pl.col("label").is_in(labels)).head(120)
    test = banking_test.filter(pl.col("label").is_in(labels)).head(30)
    planted = pl.DataFrame(
        {
            "text": [
                # a paraphrase of train row 0 and a paraphrased leak of test row 0 (label kept)
                "Could you tell me " + train["text"][0][0].lower() + train["text"][0][1:],
                "Please, " + test["text"][0],
                "The mitochondria is the powerhouse of the cell",
            ],
            "label": [train["label"][0], test["label"][0], labels[0]],
        }
    )
    rows = pl.concat([train, planted]).with_columns(source=pl.lit("web"))
    rows = rows.with_columns(
        source=pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.lit("app")).otherwise("source")
    )
    rows.write_csv(tmp_path / "train.csv")
    test.write_csv(tmp_path / "test.csv")
    raw = {
        "data": {"labels": labels},
        "noise": {"enabled": False},
        "decontam": {"semantic_threshold": 0.9},
        "semantic": {
            "enabled": True,
            "model": model,
            "outlier_min_score": min_score,  # each model's default (params.yaml)
            "duplicate_threshold": 0.9,
            "outlier_quantile": None,
            "cache_dir": "cache",
        },
    }
    outs = []
    for name, cache_dir in (("cold", "cache"), ("warm", "cache"), ("uncached", None)):
        monkeypatch.setattr(embed_cache, "_MEMORY", {})
        raw["semantic"]["cache_dir"] = cache_dir
        params = params_from_dict(raw, base_dir=tmp_path)
        run = run_curation(tmp_path / "train.csv", tmp_path / "test.csv", params=params, show_progress=False)
        write_run(run, tmp_path / name)
        outs.append(tmp_path / name)
    metrics = json.loads((outs[0] / "quality.json").read_text())
    assert metrics["accounting_ok"] == 1
    flags = pl.read_parquet(outs[0] / "flags.parquet")
    removed = pl.read_parquet(outs[0] / "removed.parquet")
    n = train.height
    ids = pl.read_csv(tmp_path / "train.csv").height
    assert ids == n + 3
    held = pl.read_parquet(outs[0] / "held.parquet")
    para_text, leak_text, off_text = planted["text"].to_list()
    assert para_text in set(held.filter(pl.col("issue") == "paraphrase")["text"])
    assert leak_text in set(removed.filter(pl.col("reason") == "test_leak")["text"])
    assert off_text in set(flags.filter(pl.col("issue") == "outlier")["text"])
    assert metrics["outlier_rate"] > 0 and metrics["min_clusters_per_class"] >= 1
    assert {r["value"] for r in metrics["slices"]["source"]} == {"app", "web"}
    html = (outs[0] / "report.html").read_text()
    assert "Semantic near-duplicates, side by side" in html and "Coverage per class" in html
    for name in ("train.parquet", "removed.parquet", "held.parquet", "flags.parquet", "quality.json"):
        assert (
            (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes()
        ), name


@pytest.mark.slow
def test_a_texts_vector_does_not_depend_on_the_other_texts_of_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.embed import embed_texts

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = [
        "My card has not arrived yet",
        "Why was I charged twice?",
        "I lost my card",
        "Top up by bank transfer",
    ]
    together = embed_texts(texts, batch_size=4, threads=1)
    for i, text in enumerate(texts):
        alone = embed_texts(
            [text, "an unrelated companion text of another length"][: 1 + i % 2], batch_size=4, threads=1
        )
        assert alone[0].tobytes() == together[i].tobytes(), text
