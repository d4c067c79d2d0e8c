"""The ``scale`` section of params.yaml: where signature work runs and where the LSH index lives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ScaleParams:
    runner: Literal["local", "dask"] = "local"
    shards: int = 4
    dask_address: str | None = None
    redis_host: str | None = None
    redis_port: int = 6379
    redis_db: int = 0

    def __post_init__(self) -> None:
        if self.runner not in ("local", "dask"):
            raise ValueError(f"runner={self.runner!r} must be 'local' or 'dask'")
        if self.shards < 1:
            raise ValueError("shards must be >= 1")
        if self.dask_address is not None and self.runner != "dask":
            raise ValueError("dask_address is set but runner is not 'dask'")
        if not 0 < self.redis_port < 65536:
            raise ValueError(f"redis_port={self.redis_port} is not a TCP port")

    def redis_config(self) -> dict[str, Any] | None:
        """datasketch's ``storage_config["redis"]``, or None when the index stays in memory."""
        if self.redis_host is None:
            return None
        return {"host": self.redis_host, "port": self.redis_port, "db": self.redis_db}
