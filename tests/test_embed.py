"""The offline MiniLM embedder (used by the optional `embedding` noise view) on real weights."""

from __future__ import annotations

import numpy as np
import pytest

from flows.embed import embed_texts


@pytest.mark.slow
def test_embeddings_are_unit_length_and_put_paraphrases_closer() -> None:
    texts = [
        "My card has not arrived yet",
        "I am still waiting for my card to arrive",
        "What is the exchange rate for euros?",
    ]
    emb = embed_texts(texts, batch_size=2)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    similar, unrelated = emb[0] @ emb[1], emb[0] @ emb[2]
    assert similar > unrelated + 0.2
