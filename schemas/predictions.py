"""Row contract of predictions.parquet: what `curagate predict` writes and the production loop
(`curagate monitor`, `curagate review push-predictions`, the `monitor` Prefect flow) reads.

One row per input text that passed ingest and validation (bad lines go to the quarantine file
beside it, as in curate). Extra input columns (metadata such as source or channel) follow the
fixed columns unchanged.
"""

from __future__ import annotations

import polars as pl

PREDICTIONS_SCHEMA = pl.Schema(
    {
        "id": pl.String,  # the input's id, or the stable content-derived id ingest gives
        "text": pl.String,  # the text as read (PII is masked only where it leaves, e.g. for review)
        "label": pl.String,  # the predicted label, always one of the label set (constrained decoding)
        "confidence": pl.Float64,  # probability of the decoded label under the model, in [0, 1]
        "model_version": pl.String,  # which adapter answered (registry version or adapter content hash)
        "predicted_at": pl.String,  # ISO-8601 UTC timestamp of the batch, e.g. 2026-12-02T10:00:00Z
    }
)
PREDICTION_COLUMNS = tuple(PREDICTIONS_SCHEMA)

__all__ = ["PREDICTIONS_SCHEMA", "PREDICTION_COLUMNS"]
