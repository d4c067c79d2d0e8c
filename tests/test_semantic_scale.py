"""Semantic curation at scale: faiss search equals the numpy search, the static model, sharded embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.semantic import index_neighbours, nearest_neighbours, search_neighbours, semantic_pairs
from schemas.semantic_params import SemanticParams


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted(n: int = 3000, copies: int = 200, dims: int = 32, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random directions plus ``copies`` near copies of some of them (cosine ~0.99)."""
    rng = np.random.default_rng(seed)
    base = unit(rng.normal(size=(n, dims)))
    source = rng.choice(n, size=copies, replace=False)
    near = unit(base[source] + rng.normal(0, 0.02, size=(copies, dims)))
    return np.concatenate([base, near]), np.stack([source, n + np.arange(copies)], axis=1)


def pair_set(emb: np.ndarray, knn: tuple[np.ndarray, np.ndarray], threshold: float) -> set[tuple[int, int]]:
    pairs, _ = semantic_pairs(emb, threshold=threshold, k=knn[0].shape[1], knn=knn)
    return {(int(a), int(b)) for a, b in pairs}


def test_flat_index_finds_the_same_pairs_as_numpy_blocks() -> None:
    emb, truth = planted()
    brute = nearest_neighbours(emb, emb, k=5, exclude_self=True)
    flat = index_neighbours(emb, emb, k=5, kind="flat", exclude_self=True)
    assert flat[0].shape == brute[0].shape == (len(emb), 5)
    assert not (flat[0] == np.arange(len(emb))[:, None]).any()  # a row is never its own neighbour
    assert pair_set(emb, flat, 0.9) == pair_set(emb, brute, 0.9) >= {tuple(map(int, p)) for p in truth}
    np.testing.assert_allclose(flat[1], brute[1], atol=1e-5)
    # neighbours sorted by similarity, then by index
    assert (np.diff(flat[1], axis=1) <= 0).all()


def test_exact_copies_do_not_hide_a_row_behind_itself() -> None:
    emb = unit(np.repeat(np.eye(4, 8) + 0.01, 3, axis=0))  # 4 groups of 3 identical vectors
    idx, sims = index_neighbours(emb, emb, k=2, kind="flat", exclude_self=True)
    for row in range(len(emb)):
        group = set(range(row // 3 * 3, row // 3 * 3 + 3)) - {row}
        assert set(idx[row].tolist()) == group and idx[row].tolist() == sorted(group)
    np.testing.assert_allclose(sims, 1.0, atol=1e-6)


def test_ivf_index_is_deterministic_and_finds_the_planted_copies() -> None:
    emb, truth = planted(n=6000, copies=300)
    first = index_neighbours(emb, emb, k=5, kind="ivf", exclude_self=True, probe=8, seed=1)
    again = index_neighbours(emb, emb, k=5, kind="ivf", exclude_self=True, probe=8, seed=1)
    assert first[0].tobytes() == again[0].tobytes() and first[1].tobytes() == again[1].tobytes()
    found = pair_set(emb, first, 0.9)
    expected = {tuple(map(int, p)) for p in truth}
    assert len(found & expected) / len(expected) >= 0.98


def test_search_picks_numpy_below_the_threshold_and_faiss_above() -> None:
    emb, _ = planted(n=500, copies=20)
    small = SemanticParams(index_min_rows=10_000)
    assert search_neighbours(emb, emb, k=3, cfg=small, exclude_self=True)[0].tobytes() == (
        nearest_neighbours(emb, emb, k=3, exclude_self=True)[0].tobytes()
    )
    flat = SemanticParams(index_min_rows=100, index="flat")
    expected = index_neighbours(emb, emb, k=3, kind="flat", exclude_self=True)
    assert search_neighbours(emb, emb, k=3, cfg=flat, exclude_self=True)[0].tobytes() == expected[0].tobytes()
    ivf = SemanticParams(index_min_rows=100, index="flat", ivf_min_rows=200, ivf_probe=2)
    approx = index_neighbours(emb, emb, k=3, kind="ivf", exclude_self=True, probe=2)
    assert search_neighbours(emb, emb, k=3, cfg=ivf, exclude_self=True)[0].tobytes() == approx[0].tobytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "bert"}, "model"),
        ({"index": "hnsw"}, "index"),
        ({"ivf_lists": 0}, "ivf_lists"),
        ({"search_threads": 0}, "search_threads"),
    ],
)
def test_semantic_params_refuse_bad_search_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SemanticParams(**kwargs)


# --- the static model (distilled once from the packaged MiniLM: ~20 s) ---------------------


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flows.embed_static import static_model_dir

    return static_model_dir(tmp_path_factory.mktemp("models"), dims=64)


@pytest.mark.slow
def test_static_distillation_is_byte_identical_and_cached(static_dir: Path, tmp_path: Path) -> None:
    from flows.embed_static import static_model_dir

    manifest = json.loads((static_dir / "manifest.json").read_text())
    vectors = np.load(static_dir / "vectors.npy")
    assert vectors.shape == (manifest["vocabulary"], 64) and vectors.dtype == np.float32
    before = (static_dir / "vectors.npy").stat().st_mtime_ns
    assert static_model_dir(static_dir.parent, dims=64) == static_dir  # cached: not distilled again
    assert (static_dir / "vectors.npy").stat().st_mtime_ns == before
    again = static_model_dir(tmp_path, dims=64)  # a fresh distillation elsewhere
    assert (again / "vectors.npy").read_bytes() == (static_dir / "vectors.npy").read_bytes()
    assert again.name == static_dir.name and "pca64" in again.name


@pytest.mark.slow
def test_static_vectors_depend_on_their_text_only_and_see_paraphrases(static_dir: Path) -> None:
    from flows.embed_static import embed_texts_static

    texts = [
        "Help! I lost my card!",
        "Help! I lost the card!",
        "What is the exchange rate for euros?",
        "",
        "ünïcödé テキスト 😀",
    ] * 3
    emb = embed_texts_static(texts, model_dir=static_dir)
    one_by_one = np.concatenate([embed_texts_static([t], model_dir=static_dir, batch_size=1) for t in texts])
    assert emb.tobytes() == one_by_one.tobytes()
    assert emb.shape == (15, 64) and emb.dtype == np.float32
    assert not emb[3].any()  # no token: a zero vector, never NaN
    np.testing.assert_allclose(np.linalg.norm(emb[[0, 1, 2, 4]], axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


@pytest.mark.slow  # a Prefect server and a 2-process Dask cluster
def test_dask_cluster_embeddings_equal_single_process(banking_train, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    import os

    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.distributed import distributed_embeddings
    from flows.embed_cache import raw_embedder
    from schemas.scale_params import ScaleParams

    texts = banking_train.head(2000)["text"].to_list() + ["", "x" * 2000]
    cfg = SemanticParams(enabled=True, model="static", static_dims=64, model_cache_dir="models")
    single = raw_embedder(cfg, base_dir=tmp_path)(texts)
    before = os.environ.get("PREFECT_API_URL")
    with prefect_test_harness(server_startup_timeout=120):
        os.environ["PREFECT_API_URL"] = prefect.settings.PREFECT_API_URL.value()
        try:
            with distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster:
                scale = ScaleParams(runner="dask", shards=2, dask_address=cluster.scheduler_address)
                sharded = distributed_embeddings(
                    texts, semantic=cfg, scale=scale, base_dir=tmp_path, shard_rows=300
                )
        finally:
            if before is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = before
    assert sharded.dtype == single.dtype and sharded.shape == single.shape
    assert sharded.tobytes() == single.tobytes()


def test_static_embedder_goes_through_the_text_hash_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.embed_static
    from flows import embed_cache

    calls: list[list[str]] = []

    def fake(texts: list[str], **_: object) -> np.ndarray:
        calls.append(list(texts))
        return unit(np.stack([np.arange(1, 9, dtype=np.float32) * (1 + len(t)) for t in texts]))

    monkeypatch.setattr(flows.embed_static, "embed_texts_static", fake)
    monkeypatch.setattr(flows.embed_static, "static_model_dir", lambda root, *, dims: Path(root))
    monkeypatch.setattr(embed_cache, "_MEMORY", {})
    cfg = SemanticParams(enabled=True, model="static", static_dims=8, cache_dir="cache")
    first = embed_cache.cached_embedder(cfg, base_dir=tmp_path)(["bb", "a"])
    monkeypatch.setattr(embed_cache, "_MEMORY", {})
    again = embed_cache.cached_embedder(cfg, base_dir=tmp_path)(["a", "bb", "ccc"])
    assert first.tobytes() == again[[1, 0]].tobytes()
    assert calls == [["a", "bb"], ["ccc"]]
    assert pl.read_parquet(tmp_path / "cache" / "static-d8.parquet").height == 3


def test_embed_hook_shards_only_on_dask_and_only_when_semantic_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.distributed
    from flows.signing import embed_hook
    from schemas.scale_params import ScaleParams

    seen: list[tuple[list[str], ScaleParams]] = []

    def fake(texts: list[str], *, semantic: SemanticParams, scale: ScaleParams, base_dir: Path) -> np.ndarray:
        seen.append((list(texts), scale))
        return np.zeros((len(texts), semantic.static_dims), dtype=np.float32)

    monkeypatch.setattr(flows.distributed, "distributed_embeddings", fake)
    on = SemanticParams(enabled=True)
    dask = ScaleParams(runner="dask", shards=2, dask_address="tcp://127.0.0.1:1")
    assert embed_hook(ScaleParams(), on, Path(".")) is None
    assert embed_hook(dask, SemanticParams(enabled=False), Path(".")) is None
    compute = embed_hook(dask, on, Path("."))
    assert compute is not None and compute(["a", "b"]).shape == (2, 256)
    assert seen == [(["a", "b"], dask)]


@pytest.mark.slow  # two curate processes, a temporary Dask cluster and Prefect's ephemeral server
def test_curate_with_semantic_on_dask_gives_the_same_files(
    tmp_path: Path, banking_train: pl.DataFrame, banking_test: pl.DataFrame
) -> None:
    """`scale.runner: dask` with `semantic.enabled`: the embeddings are computed by the
    sharded-embeddings flow on the cluster, and every curated file is byte-identical to one process."""
    import os
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    labels = sorted(banking_train["label"].unique().to_list())[:10]
    banking_train.filter(pl.col("label").is_in(labels)).head(400).write_csv(tmp_path / "train.csv")
    banking_test.filter(pl.col("label").is_in(labels)).head(100).write_csv(tmp_path / "test.csv")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["labels"] = labels
    params["data"]["columns"]["label"] = "label"
    params["noise"]["enabled"] = False
    params["report"]["planted"] = None
    params["semantic"] |= {"enabled": True, "model": "static", "static_dims": 64, "cache_dir": None}
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect_home")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    env["HF_HUB_OFFLINE"] = "1"
    outs = {}
    for name, scale in (("local", {"runner": "local"}), ("dask", {"runner": "dask", "shards": 2})):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**params, "scale": scale}))
        proc = subprocess.run(
            [sys.executable, "-m", "flows.cli", "curate", "--train", str(tmp_path / "train.csv")]
            + ["--test", str(tmp_path / "test.csv"), "--params", str(tmp_path / f"{name}.yaml")]
            + ["--out", str(tmp_path / name)],
            cwd=root,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[name] = proc.stdout + proc.stderr
    assert "sharded-embeddings" in outs["dask"] and "sharded-embeddings" not in outs["local"]
    assert pl.read_parquet(tmp_path / "local" / "train.parquet").height > 300
    quality = json.loads((tmp_path / "local" / "quality.json").read_text())
    curated_labels = set(pl.read_parquet(tmp_path / "local" / "train.parquet")["label"])
    assert set(quality["coverage_per_class"]) == curated_labels  # the semantic checks ran
    for name in ("train.parquet", "removed.parquet", "flags.parquet", "quality.json"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
