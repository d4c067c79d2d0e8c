"""Sharded signatures through Prefect + Dask equal the single-process ones, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.params import DedupParams, ParamsError, params_from_dict
from schemas.scale_params import ScaleParams


@pytest.fixture(scope="module")
def prefect_api():
    """A temporary Prefect server whose URL Dask worker processes inherit through the env
    (in ephemeral mode each worker process would try to start a server of its own)."""
    import os

    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    before = os.environ.get("PREFECT_API_URL")
    with prefect_test_harness(server_startup_timeout=120):
        os.environ["PREFECT_API_URL"] = prefect.settings.PREFECT_API_URL.value()
        yield os.environ["PREFECT_API_URL"]
    if before is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = before


def _texts(banking_train, n: int = 3000) -> list[str]:
    import polars as pl

    from curation.minhash import normalize_text

    texts = banking_train.head(n).select(normalize_text(pl.col("text")))["text"].to_list()
    return texts + ["", "a", "ünïcödé テキスト 😀", "x" * 500]


def test_shard_bounds_cover_everything_in_order() -> None:
    from flows.distributed import shard_bounds

    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2)]
    assert shard_bounds(0, 4) == []


def test_scale_params_reject_bad_values() -> None:
    assert params_from_dict({"scale": {"runner": "dask", "shards": 2}}).scale.shards == 2
    assert ScaleParams(redis_host="h", redis_port=7000).redis_config() == {"host": "h", "port": 7000, "db": 0}
    assert ScaleParams().redis_config() is None
    with pytest.raises(ParamsError, match="runner"):
        params_from_dict({"scale": {"runner": "ray"}})
    with pytest.raises(ParamsError, match="unknown key"):
        params_from_dict({"scale": {"shard": 2}})
    with pytest.raises(ParamsError, match="dask_address"):
        params_from_dict({"scale": {"runner": "local", "dask_address": "tcp://x:8786"}})


def test_params_yaml_scale_section_loads() -> None:
    from pathlib import Path

    from schemas.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    scale = params.scale
    assert scale.runner in ("local", "dask")
    assert scale.shards >= 1


@pytest.mark.slow  # a temporary Prefect server
def test_local_runner_signatures_equal_single_process(banking_train, prefect_api) -> None:
    from curation.minhash import signatures
    from flows.distributed import distributed_signatures

    texts = _texts(banking_train, 1000)
    cfg = DedupParams()
    single = signatures(
        texts, kind=cfg.shingle, ngram=cfg.ngram, num_perm=cfg.num_perm, seed=cfg.seed, engine=cfg.engine
    )
    sharded = distributed_signatures(texts, cfg=cfg, scale=ScaleParams(runner="local", shards=3))
    assert sharded.dtype == single.dtype and sharded.shape == single.shape
    assert sharded.tobytes() == single.tobytes()


@pytest.mark.slow  # a Prefect server and a 2-process Dask cluster
def test_dask_cluster_signatures_equal_single_process(banking_train, prefect_api) -> None:
    distributed = pytest.importorskip("distributed")
    from curation.minhash import signatures
    from flows.distributed import distributed_signatures

    texts = _texts(banking_train)
    cfg = DedupParams()
    single = signatures(
        texts, kind=cfg.shingle, ngram=cfg.ngram, num_perm=cfg.num_perm, seed=cfg.seed, engine=cfg.engine
    )
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        scale = ScaleParams(runner="dask", shards=4, dask_address=cluster.scheduler_address)
        sharded = distributed_signatures(texts, cfg=cfg, scale=scale)
        word_cfg = DedupParams(shingle="word", ngram=2, num_perm=64, seed=9)
        words = distributed_signatures(texts, cfg=word_cfg, scale=scale)
    assert sharded.tobytes() == single.tobytes()
    expected_words = signatures(texts, kind="word", ngram=2, num_perm=64, seed=9)
    assert np.array_equal(words, expected_words)
