"""Beyond one machine: signatures sharded over a Dask cluster, the LSH index kept in Redis.

Both are wired with Prefect: a flow splits the work into shards and submits one task per
shard to the task runner that ``scale.runner`` picks (a thread pool, or ``DaskTaskRunner``
on a local or remote Dask cluster). The tasks call the same pure functions as the
single-process pipeline (``curation.minhash.signatures``), so the results are identical:
signatures byte for byte, candidate pairs as a set.

The Redis index is datasketch's own storage backend (``MinHashLSH(storage_config=
{"type": "redis", ...})``): workers insert their shards into one shared index, then each
band's buckets are read back and turned into candidate pairs, one task per band.
"""

from __future__ import annotations

import dataclasses
import pickle
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHashLSH
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from curation.minhash import signatures
from schemas.params import DedupParams
from schemas.scale_params import ScaleParams
from schemas.semantic_params import SemanticParams

# curation.minhash.signatures reproduce datasketch's (>= 2.0) "affine32" permutation scheme
MINHASH_SCHEME = "affine32"


def task_runner(scale: ScaleParams) -> Any:
    """The Prefect task runner for ``scale``: threads here, or a Dask cluster."""
    if scale.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if scale.dask_address:
            return DaskTaskRunner(address=scale.dask_address)
        # a temporary local cluster: one single-threaded worker process per shard (pure
        # Python/numpy work holds the GIL, so processes rather than threads)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": scale.shards, "threads_per_worker": 1, "processes": True}
        )
    return ThreadPoolTaskRunner(max_workers=scale.shards)


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous [lo, hi) ranges covering 0..n in order (empty ones dropped)."""
    edges = np.linspace(0, n, min(shards, max(n, 1)) + 1).astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo]


# --- signatures, sharded ------------------------------------------------------------------


@task(cache_policy=NO_CACHE, persist_result=False)
def signature_shard(
    texts: list[str], kind: str, ngram: int, num_perm: int, seed: int, engine: str = "datasketch"
) -> np.ndarray:
    """MinHash signatures of one shard (runs on a worker)."""
    return signatures(texts, kind=kind, ngram=ngram, num_perm=num_perm, seed=seed, engine=engine)


@flow(name="sharded-signatures", validate_parameters=False, persist_result=False)
def sharded_signatures_flow(
    shards: Any, kind: str, ngram: int, num_perm: int, seed: int, engine: str = "datasketch"
) -> np.ndarray:
    """Submit one signature task per shard; concatenate the results in shard order.

    ``shards`` is a :class:`Shards` holder, so Prefect records a placeholder instead of
    serialising every text into the flow run's parameters.
    """
    futures = [signature_shard.submit(part, kind, ngram, num_perm, seed, engine) for part in shards.parts]
    parts = [f.result() for f in futures]
    return np.concatenate(parts) if parts else np.zeros((0, num_perm), dtype=np.uint32)


class Shards:
    """Texts split into shards; not JSON-encodable on purpose (see ``sharded_signatures_flow``)."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[list[str]]) -> None:
        self.parts = parts

    def __iter__(self):  # fastapi's jsonable_encoder would otherwise walk every text
        raise TypeError("Shards is not iterable")


def distributed_signatures(texts: Sequence[str], *, cfg: DedupParams, scale: ScaleParams) -> np.ndarray:
    """``curation.minhash.signatures(texts, ...)``, computed shard by shard on ``scale.runner``.

    Returns exactly (byte for byte) what the single-process call returns.
    """
    parts = [list(texts[lo:hi]) for lo, hi in shard_bounds(len(texts), scale.shards)]
    runnable = sharded_signatures_flow.with_options(task_runner=task_runner(scale))
    return runnable(Shards(parts), cfg.shingle, cfg.ngram, cfg.num_perm, cfg.seed, cfg.engine)


# --- embeddings, sharded --------------------------------------------------------------------


@task(cache_policy=NO_CACHE, persist_result=False)
def embedding_shard(texts: list[str], semantic: SemanticParams, base_dir: str) -> np.ndarray:
    """Embeddings of one shard (runs on a worker; the model loads once per worker process)."""
    from flows.embed_cache import raw_embedder

    return raw_embedder(semantic, base_dir=Path(base_dir))(texts)


@flow(name="sharded-embeddings", validate_parameters=False, persist_result=False)
def sharded_embeddings_flow(shards: Any, semantic: SemanticParams, base_dir: str) -> np.ndarray:
    """Submit one embedding task per shard; concatenate the results in shard order."""
    from flows.embed_cache import dims_of

    futures = [embedding_shard.submit(part, semantic, base_dir) for part in shards.parts]
    parts = [f.result() for f in futures]
    return np.concatenate(parts) if parts else np.zeros((0, dims_of(semantic)), dtype=np.float32)


def distributed_embeddings(
    texts: Sequence[str],
    *,
    semantic: SemanticParams,
    scale: ScaleParams,
    base_dir: Path = Path("."),
    shard_rows: int | None = None,
) -> np.ndarray:
    """The embeddings of ``texts`` (``semantic.model``), computed shard by shard on ``scale.runner``.

    A text's vector depends on that text only (flows/embed.py, flows/embed_static.py), so the
    result is byte-identical to one process. The static model is distilled here first, once,
    so workers only read it.

    Args:
        shard_rows: at most this many texts per task (more, smaller tasks than ``scale.shards``
            for a progress that moves and a bounded worker memory); None = ``scale.shards`` tasks.
    """
    from flows.embed_cache import dims_of

    if not texts:
        return np.zeros((0, dims_of(semantic)), dtype=np.float32)
    if semantic.model == "static":
        from flows.embed_static import static_model_dir

        static_model_dir(Path(base_dir) / semantic.model_cache_dir, dims=semantic.static_dims)
    count = scale.shards if shard_rows is None else max(scale.shards, -(-len(texts) // shard_rows))
    parts = [list(texts[lo:hi]) for lo, hi in shard_bounds(len(texts), count)]
    runnable = sharded_embeddings_flow.with_options(task_runner=task_runner(scale))
    return runnable(Shards(parts), semantic, str(Path(base_dir).resolve()))


@contextmanager
def on_dask(scale: ScaleParams) -> Iterator[ScaleParams]:
    """``scale`` with a Dask scheduler to run on, for the length of a whole curation run.

    With ``scale.dask_address`` that cluster. Without, one temporary local cluster
    (``scale.shards`` single-threaded worker processes) serves every call of the run and is
    closed at the end. Its workers report task runs to the same Prefect API as this process:
    ``PREFECT_API_URL`` when set, else the ephemeral server Prefect itself would start here
    (a worker left without one would start a server of its own).
    """
    if scale.dask_address:
        yield scale
        return
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # the process-wide instance Prefect's client uses
        server.start()
        api_url = server.api_url
    with LocalCluster(
        n_workers=scale.shards,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"PREFECT_API_URL": api_url},  # added to the environment the workers inherit
    ) as cluster:
        yield dataclasses.replace(scale, dask_address=cluster.scheduler_address)


# --- the LSH index in Redis -------------------------------------------------------------


def redis_lsh(*, threshold: float, num_perm: int, redis: dict[str, Any], basename: bytes) -> MinHashLSH:
    """A handle on the shared Redis-backed index ``basename`` (datasketch's storage backend)."""
    return MinHashLSH(
        threshold=threshold,
        num_perm=num_perm,
        storage_config={"type": "redis", "basename": basename, "redis": dict(redis)},
    )


@task(cache_policy=NO_CACHE, persist_result=False)
def insert_shard(
    sig: np.ndarray, offset: int, seed: int, threshold: float, redis: dict[str, Any], basename: bytes
) -> int:
    """Insert one shard's signatures into the shared index; keys are global row numbers."""
    lsh = redis_lsh(threshold=threshold, num_perm=sig.shape[1], redis=redis, basename=basename)
    with lsh.insertion_session(buffer_size=10_000) as session:
        for i, row in enumerate(sig):
            session.insert(
                offset + i,
                LeanMinHash(seed=seed, hashvalues=row, scheme=MINHASH_SCHEME),
                check_duplication=False,
            )
    return len(sig)


@task(cache_policy=NO_CACHE, persist_result=False)
def band_pairs(
    band: int, num_perm: int, threshold: float, redis: dict[str, Any], basename: bytes
) -> np.ndarray:
    """Every (i, j), i < j, sharing a bucket of one band of the shared index."""
    lsh = redis_lsh(threshold=threshold, num_perm=num_perm, redis=redis, basename=basename)
    table = lsh.hashtables[band]
    buckets = table.keys()
    out = []
    step = 10_000
    for s in range(0, len(buckets), step):
        for members in table.getmany(*buckets[s : s + step]):
            if len(members) < 2:
                continue
            docs = np.sort(np.fromiter((pickle.loads(m) for m in members), dtype=np.int64))
            i, j = np.triu_indices(len(docs), k=1)
            out.append(np.stack([docs[i], docs[j]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


@flow(name="redis-lsh-pairs", validate_parameters=False, persist_result=False)
def redis_lsh_pairs_flow(
    sig_shards: Any, seed: int, threshold: float, redis: dict[str, Any], basename: bytes
) -> np.ndarray:
    """Insert shards into one Redis index (in parallel), then read candidate pairs band by band."""
    offsets = np.cumsum([0] + [len(s) for s in sig_shards.parts])
    num_perm = sig_shards.parts[0].shape[1]
    inserted = [
        insert_shard.submit(part, int(off), seed, threshold, redis, basename)
        for part, off in zip(sig_shards.parts, offsets, strict=False)
    ]
    for f in inserted:
        f.result()
    bands = redis_lsh(threshold=threshold, num_perm=num_perm, redis=redis, basename=basename).b
    pairs = [band_pairs.submit(b, num_perm, threshold, redis, basename) for b in range(bands)]
    found = np.concatenate([f.result() for f in pairs])
    if found.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(found, axis=0)


def redis_candidate_pairs(
    sig: np.ndarray,
    *,
    threshold: float,
    seed: int,
    scale: ScaleParams,
    basename: bytes | None = None,
    keep: bool = False,
) -> np.ndarray:
    """LSH candidate pairs of ``sig`` from an index built in Redis by ``scale.runner``'s workers.

    Returns the same (i, j), i < j, sorted rows as the in-memory
    ``candidate_pairs(band_keys(sig, *lsh_bands(threshold, num_perm)))``.

    Args:
        basename: the index's name in Redis; a fresh random one by default.
        keep: leave the index in Redis (to query later documents against it) instead of
            deleting it when done.

    Raises:
        ValueError: ``scale.redis_host`` is not set.
    """
    redis = scale.redis_config()
    if redis is None:
        raise ValueError("scale.redis_host is not set: no Redis to build the index in")
    if sig.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    basename = basename or f"curagate-{uuid.uuid4().hex[:12]}".encode()
    parts = [sig[lo:hi] for lo, hi in shard_bounds(sig.shape[0], scale.shards)]
    runnable = redis_lsh_pairs_flow.with_options(task_runner=task_runner(scale))
    try:
        return runnable(Shards(parts), seed, threshold, redis, basename)
    finally:
        if not keep:
            drop_redis_index(redis, basename)


def drop_redis_index(redis: dict[str, Any], basename: bytes) -> int:
    """Delete every Redis key of the index ``basename``; returns how many were deleted."""
    import redis as redis_client

    client = redis_client.Redis(**redis)
    deleted = 0
    batch = []
    for key in client.scan_iter(match=basename + b"_*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted
