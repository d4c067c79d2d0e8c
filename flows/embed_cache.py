"""Embeddings cached by text hash across runs: ``<cache_dir>/<model>-b<batch>-t<threads>.parquet``.

The file holds (sha1 of the text, vector); batch size and threads are in its name because they
decide the exact floats (for the static model, its dims instead: ``static-d<dims>.parquet``).

flows/embed.py makes a text's vector depend on that text only (equal-length, fixed-size
batches, fixed threads), so a vector read from the cache is byte-identical to one computed
now: curated files are the same with a cold or a warm cache. Within a process the vectors are
also kept in memory, so decontam, the semantic step and coverage embed each text once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from schemas.semantic_params import SemanticParams

log = logging.getLogger(__name__)

MINILM_DIMS = 384
_MEMORY: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def model_key(cfg: SemanticParams) -> str:
    """What decides a vector's bytes, as a file-name stem."""
    if cfg.model == "static":
        return f"static-d{cfg.static_dims}"
    return f"{cfg.model}-b{cfg.batch_size}-t{cfg.threads}"


def dims_of(cfg: SemanticParams) -> int:
    return cfg.static_dims if cfg.model == "static" else MINILM_DIMS


def raw_embedder(
    cfg: SemanticParams, *, base_dir: Path = Path("."), show_progress: bool = False
) -> Callable[[list[str]], np.ndarray]:
    """texts -> vectors with the model ``cfg.model`` (no cache); a text's vector depends on it only."""
    if cfg.model == "static":
        from flows.embed_static import embed_texts_static, static_model_dir

        folder = static_model_dir(Path(base_dir) / cfg.model_cache_dir, dims=cfg.static_dims)
        return lambda texts: embed_texts_static(texts, model_dir=folder, show_progress=show_progress)
    from flows.embed import embed_texts  # loads torch: only when a semantic check runs

    return lambda texts: embed_texts(
        texts, batch_size=cfg.batch_size, threads=cfg.threads, show_progress=show_progress
    )


def text_sha1(texts: list[str]) -> list[str]:
    return [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


def _read_cache(path: Path, dims: int) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        frame = pl.read_parquet(path)
        vectors = np.asarray(frame["vector"].to_numpy(), dtype=np.float32).reshape(-1, dims)
    except (OSError, pl.exceptions.PolarsError, ValueError) as exc:  # a broken cache is only slower
        log.warning("%s: unreadable embedding cache, recomputing (%s)", path, exc)
        return {}
    return dict(zip(frame["sha1"].to_list(), vectors, strict=True))


def _write_cache(path: Path, vectors: dict[str, np.ndarray], dims: int) -> None:
    keys = sorted(vectors)
    matrix = np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, dims), np.float32)
    frame = pl.DataFrame(
        {"sha1": keys, "vector": matrix}, schema={"sha1": pl.String, "vector": pl.Array(pl.Float32, dims)}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    frame.write_parquet(tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


def cached_embedder(
    cfg: SemanticParams,
    *,
    base_dir: Path = Path("."),
    show_progress: bool = False,
    compute: Callable[[list[str]], np.ndarray] | None = None,
) -> Callable[[list[str]], np.ndarray]:
    """texts -> float32 unit vectors (rows in order), through the memory and disk caches.

    Args:
        cfg: the ``semantic`` section (model, batch size, threads, cache_dir; null = no disk cache).
        base_dir: a relative ``cache_dir`` resolves against it (the params file's folder).
        compute: embeds the texts missing from the caches; default :func:`raw_embedder` in this
            process (flows/distributed.py's ``distributed_embeddings`` shards it over Dask).
    """
    dims = dims_of(cfg)
    key = model_key(cfg)
    path = None if cfg.cache_dir is None else Path(base_dir) / cfg.cache_dir / f"{key}.parquet"
    memory = _MEMORY.setdefault((key, str(path)), {})
    embed_now = compute
    if path is not None and not memory:
        memory.update(_read_cache(path, dims))

    def embed(texts: list[str]) -> np.ndarray:
        keys = text_sha1(texts)
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in memory}.items())
        if missing:
            nonlocal embed_now
            if embed_now is None:  # the model loads (or is distilled) only when a text is missing
                embed_now = raw_embedder(cfg, base_dir=base_dir, show_progress=show_progress)
            vectors = embed_now([t for _, t in missing])
            memory.update(zip((k for k, _ in missing), vectors, strict=True))
            if path is not None:
                _write_cache(path, memory, dims)
            log.info("embedded %d new texts (%d cached)", len(missing), len(texts) - len(missing))
        if not keys:
            return np.zeros((0, dims), dtype=np.float32)
        return np.stack([memory[k] for k in keys]).astype(np.float32, copy=False)

    return embed


__all__ = ["cached_embedder", "dims_of", "model_key", "raw_embedder", "text_sha1"]
