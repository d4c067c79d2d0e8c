"""The LSH index in a real Redis (datasketch's storage backend) gives curagate's candidate pairs.

Starts ``redis-server`` on a free port in a temporary directory and stops it afterwards;
skipped only when redis-server is not installed (CI installs it: apt-get install redis-server).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

from schemas.scale_params import ScaleParams

REDIS_SERVER = shutil.which("redis-server")
requires_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    import redis

    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.1)
        else:
            pytest.fail("redis-server did not answer PING within 10 s")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _signatures(banking_train, n: int = 800) -> np.ndarray:
    import polars as pl

    from benchmarks.synth import generate
    from curation.minhash import normalize_text, signatures

    data = generate(n, seed=3, base=banking_train)
    texts = pl.DataFrame({"t": data.texts}).select(normalize_text(pl.col("t")))["t"].to_list()
    return signatures(texts, kind="char", ngram=5, num_perm=128, seed=1)


@pytest.mark.slow  # real Redis and Prefect servers: the integration tier
@requires_redis
def test_redis_index_gives_the_in_memory_candidate_pairs(banking_train, redis_port, prefect_api) -> None:
    import redis

    from curation.minhash import band_keys, candidate_pairs, lsh_bands
    from flows.distributed import redis_candidate_pairs

    sig = _signatures(banking_train)
    bands, rows = lsh_bands(0.4, 128)
    expected = candidate_pairs(band_keys(sig, bands=bands, rows=rows))
    scale = ScaleParams(runner="local", shards=3, redis_host="127.0.0.1", redis_port=redis_port)
    got = redis_candidate_pairs(sig, threshold=0.4, seed=1, scale=scale, basename=b"test-idx")
    assert len(expected) > 100  # near copies make plenty of candidates
    np.testing.assert_array_equal(got, expected)
    # the index is deleted afterwards unless asked to keep it
    assert not list(redis.Redis(port=redis_port).scan_iter(match=b"test-idx_*"))


@pytest.mark.slow  # real Redis and Prefect servers: the integration tier
@requires_redis
def test_kept_redis_index_answers_datasketch_queries(banking_train, redis_port, prefect_api) -> None:
    from datasketch import LeanMinHash

    from flows.distributed import MINHASH_SCHEME, drop_redis_index, redis_candidate_pairs, redis_lsh

    sig = _signatures(banking_train, 400)
    config = {"host": "127.0.0.1", "port": redis_port, "db": 0}
    scale = ScaleParams(runner="local", shards=2, redis_host="127.0.0.1", redis_port=redis_port)
    pairs = redis_candidate_pairs(sig, threshold=0.4, seed=1, scale=scale, basename=b"kept", keep=True)
    lsh = redis_lsh(threshold=0.4, num_perm=128, redis=config, basename=b"kept")
    i, j = (int(x) for x in pairs[0])
    assert j in lsh.query(LeanMinHash(seed=1, hashvalues=sig[i], scheme=MINHASH_SCHEME))
    assert drop_redis_index(config, b"kept") > 0


@pytest.mark.parametrize("shards", [1, 3])
def test_redis_host_is_required(shards: int) -> None:
    from flows.distributed import redis_candidate_pairs

    with pytest.raises(ValueError, match="redis_host"):
        redis_candidate_pairs(
            np.zeros((2, 16), dtype=np.uint32), threshold=0.5, seed=1, scale=ScaleParams(shards=shards)
        )


@pytest.mark.slow  # real Redis and Prefect servers: the integration tier
@requires_redis
def test_curate_with_the_index_in_redis_gives_the_same_files(
    tmp_path, monkeypatch, banking_train, redis_port, prefect_api
):
    """`scale.redis_host` set: `run_curation`'s dedup takes its LSH candidates from an index
    built in Redis; the curated files are byte-identical to the in-memory run."""
    import json

    import polars as pl
    import yaml

    from benchmarks.synth import generate
    from flows.pipeline import run_curation, write_run
    from schemas.params import params_from_dict
    from tests.conftest import ROOT

    data = generate(1500, seed=4, base=banking_train)
    with (tmp_path / "train.jsonl").open("w") as f:
        for i, (text, label) in enumerate(zip(data.texts, data.labels, strict=True)):
            f.write(json.dumps({"id": f"r{i}", "text": text, "label": label}) + "\n")
    pl.DataFrame({"id": ["t0"], "text": ["how do i top up"], "label": [data.labels[0]]}).write_ndjson(
        tmp_path / "test.jsonl"
    )
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["columns"]["label"] = "label"
    raw["data"]["labels"] = str(ROOT / "data" / "raw" / "categories.json")
    raw["noise"]["enabled"] = False
    import flows.distributed

    calls = []
    real = flows.distributed.redis_candidate_pairs

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(flows.distributed, "redis_candidate_pairs", counted)
    outs = {}
    for name, scale in (("memory", {}), ("redis", {"redis_host": "127.0.0.1", "redis_port": redis_port})):
        params = params_from_dict({**raw, "scale": scale})
        run = run_curation(
            tmp_path / "train.jsonl", tmp_path / "test.jsonl", params=params, show_progress=False
        )
        assert len(calls) == (name == "redis")  # the index in Redis gave dedup its candidates
        write_run(run, tmp_path / name)
        outs[name] = tmp_path / name
    removed = pl.read_parquet(outs["memory"] / "removed.parquet")
    assert (removed["reason"] == "near_duplicate").sum() > 20  # the injected copies are found
    for file in ("train.parquet", "removed.parquet", "flags.parquet", "quality.json"):
        assert (outs["memory"] / file).read_bytes() == (outs["redis"] / file).read_bytes(), file
