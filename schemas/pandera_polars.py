"""pandera's polars API, imported without pandas.

pandera's ``__init__`` imports pandas (~0.3 CPU-s, with pyarrow) whenever pandas is installed,
only to offer its pandas API, which curagate never uses (every schema is a polars one). In a
polars-only install it skips that branch, and pandera tests that configuration. A command that
has not loaded pandas yet imports pandera as a polars-only install would: pandas is hidden for
the length of that one import, then importable again as usual (sklearn, mlflow...); pandera
in this process then validates polars frames only, which is all curagate asks of it.
"""

from __future__ import annotations

import importlib.abc
import sys


class _PandasHidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - the finder protocol
        if name == "pandas" or name.startswith("pandas."):
            # the message pandera's __init__ treats as "pandas not installed"
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _import_without_pandas() -> None:
    if "pandera" in sys.modules or "pandas" in sys.modules:  # pandas paid already: nothing to save
        return
    finder = _PandasHidden()
    sys.meta_path.insert(0, finder)
    try:
        import pandera.polars  # noqa: F401
        from pandera.backends import register_checks

        # Every check looks up pandas' backend types first (importing pandas), once per process
        # (cached), to route pandas-like frames; with pandas hidden it caches "none" and routes
        # polars frames as it always does. Should pandera rename this, pandas merely loads at
        # the first validation again: slower, the same results.
        probe = getattr(register_checks, "_load_get_backend_types_from_mro", None)
        if probe is not None:
            probe()
    finally:
        sys.meta_path.remove(finder)


_import_without_pandas()

import pandera.errors as errors  # noqa: E402  (loaded above: no second cost)
import pandera.polars as pa  # noqa: E402

__all__ = ["errors", "pa"]
