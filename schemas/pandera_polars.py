"""``pandera.polars``, loaded on pandera's polars-only path (``from schemas.pandera_polars import pa``).

pandera's package ``__init__`` imports pandas and its pandas engine whenever pandas is
installed (0.3 CPU-s, a tenth of `curagate dedup` at 200k rows) for its pandas API, which
curagate never uses. With pandas not importable it takes the path pandera supports for
polars-only installs, with the same polars backend. So for this one import a finder makes
``import pandas`` fail as if pandas were not installed; it is removed right after, so pandas
stays importable for everyone else, and it is not used at all when pandas or pandera is
already loaded (then pandera is what it always was).
"""

from __future__ import annotations

import importlib.abc
import sys


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


_finder = None if "pandas" in sys.modules or "pandera" in sys.modules else _NoPandas()
if _finder is not None:
    sys.meta_path.insert(0, _finder)
try:
    import pandera.polars as pa  # noqa: E402 - after the finder is in place, on purpose
finally:
    if _finder is not None:
        sys.meta_path.remove(_finder)

__all__ = ["pa"]
