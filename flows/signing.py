"""How a run computes MinHash signatures and finds LSH candidates: here, on Dask, or via Redis.

The runner opens :func:`scale_hooks` for a whole run and hands its signer and candidate source
to the steps that read them (dedup, decontam); they give identical results either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import polars as pl

from curation.dedup import CandidateSource, local_signer
from curation.minhash import Signer
from schemas.params import DedupParams, ParamsError
from schemas.scale_params import ScaleParams
from schemas.semantic_params import SemanticParams

log = logging.getLogger(__name__)


EmbedCompute = Callable[[list[str]], np.ndarray]


@contextmanager
def scale_hooks(
    scale: ScaleParams,
    dedup: DedupParams,
    *,
    on_scale: Callable[[ScaleParams], None] | None = None,
) -> Iterator[tuple[Signer, CandidateSource | None]]:
    """How a run computes MinHash signatures and LSH candidates (``params.yaml → scale``).

    Signatures: here, or sharded on Dask (``scale.runner``). Candidates: banded in memory by
    dedup itself (None), or from an index that Prefect tasks build in Redis
    (``scale.redis_host``). Either way they are identical, so the curated files are too; and
    the signatures are remembered, so decontam reuses those dedup computed.
    """
    local = RememberedSignatures(local_signer(dedup))
    if scale.runner != "dask" and scale.redis_host is None:
        yield local, None
        return
    # imports prefect, dask and redis: only when asked for
    from flows.distributed import distributed_signatures, on_dask, redis_candidate_pairs

    with on_dask(scale) if scale.runner == "dask" else nullcontext(scale) as scale:
        if on_scale is not None:  # e.g. the embeddings, sharded on the same cluster
            on_scale(scale)
        log.info(
            "scale: signatures %s, LSH index %s", scale.dask_address or "here", scale.redis_host or "here"
        )
        signer = local
        if scale.runner == "dask":
            signer = RememberedSignatures(lambda texts: distributed_signatures(texts, cfg=dedup, scale=scale))
        candidates = None
        if scale.redis_host is not None:
            cfg = dedup
            check_redis_banding(cfg)

            def candidates(sig: np.ndarray) -> list[np.ndarray]:
                return [redis_candidate_pairs(sig, threshold=cfg.lsh_threshold, seed=cfg.seed, scale=scale)]

        yield signer, candidates


def embed_hook(scale: ScaleParams, semantic: SemanticParams, params_dir: Path) -> EmbedCompute | None:
    """How the semantic steps embed the texts missing from the cache: here (None), or sharded on
    the Dask cluster of ``scale`` (``scale.runner: dask``; inside :func:`scale_hooks`, which
    passes the scale of the cluster it opened). Byte-identical either way."""
    if scale.runner != "dask" or not semantic.enabled:
        return None
    from flows.distributed import distributed_embeddings

    return lambda texts: distributed_embeddings(texts, semantic=semantic, scale=scale, base_dir=params_dir)


def check_redis_banding(cfg: DedupParams) -> None:
    """The Redis index bands at ``lsh_threshold`` (datasketch's storage picks the bands). With
    the fast engine dedup adds the edit and word-order pairs itself, so the curated files
    equal the in-memory ones exactly when that banding has more bands than a pair reaching
    ``threshold`` can differ in slots (:func:`curation.minhash.exact_bands`).

    Raises:
        ParamsError: the banding could miss such a pair.
    """
    from curation.minhash import exact_bands, lsh_bands

    if cfg.engine != "fast" or cfg.max_char_edits > 1:
        return
    have, _ = lsh_bands(cfg.lsh_threshold, cfg.num_perm)
    need, _ = exact_bands(cfg.threshold, cfg.num_perm)
    if have < need:
        raise ParamsError(
            f"dedup.lsh_threshold={cfg.lsh_threshold} gives the Redis index {have} LSH bands; "
            f"engine fast needs at least {need} (threshold={cfg.threshold}, num_perm={cfg.num_perm}) "
            "to find every near duplicate: lower dedup.lsh_threshold"
        )


class RememberedSignatures:
    """A signer that keeps what it computed and computes only texts it has not seen.

    Dedup signs the distinct normalised train texts; decontam then signs the normalised texts
    of the rows dedup kept, all of which dedup has signed already.
    """

    def __init__(self, compute: Signer) -> None:
        self.compute = compute
        self.known = pl.DataFrame(schema={"text": pl.String, "_row": pl.Int64})
        # blocks in the order computed, not one array: appending decontam's few test texts to
        # dedup's millions would copy them all (at 10M texts, 5 GB more for a moment)
        self.blocks: list[np.ndarray] = []
        self.size = 0
        # False: forget everything once a query was answered wholly from memory (the last
        # reuse; a later query is computed afresh, with the same signatures)
        self.keep = True

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        query = pl.DataFrame({"text": list(texts)}, schema={"text": pl.String})
        if not self.blocks:  # nothing known yet: no join (dedup's million texts)
            missing = query["text"].unique(maintain_order=True)
        else:
            rows = query.join(self.known, on="text", how="left", maintain_order="left")["_row"]
            missing = query.filter(rows.is_null())["text"].unique(maintain_order=True)
        if len(missing):
            fresh = self.compute(missing.to_list())
            added = pl.DataFrame({"text": missing, "_row": np.arange(self.size, self.size + len(missing))})
            self.blocks.append(fresh)
            self.size += len(missing)
            self.known = pl.concat([self.known, added])
            if len(missing) == len(query):  # all new and distinct: already in query order
                return fresh
            rows = query.join(self.known, on="text", how="left", maintain_order="left")["_row"]
        if not self.blocks:  # no texts at all
            return self.compute([])
        found = self._gather(rows.to_numpy())
        if not self.keep and not len(missing):
            self.forget()
        return found

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """The signatures of remembered rows ``rows``, from whichever blocks hold them."""
        if len(self.blocks) == 1:
            return self.blocks[0][rows]
        out = np.empty((len(rows), self.blocks[0].shape[1]), dtype=self.blocks[0].dtype)
        start = 0
        for block in self.blocks:
            inside = (rows >= start) & (rows < start + len(block))
            out[inside] = block[rows[inside] - start]
            start += len(block)
        return out

    def forget(self) -> None:
        """Drop what was remembered (the signatures of a million texts are ~0.5 GB)."""
        self.known = self.known.clear()
        self.blocks, self.size = [], 0
