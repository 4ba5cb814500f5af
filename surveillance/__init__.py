"""kratom-surveillance: FAERS quarterly data in DuckDB, substance extraction, signals."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Database

try:
    __version__ = version("kratom-surveillance")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["Database", "__version__"]


def __getattr__(name: str) -> Any:
    """`surveillance.Database`, imported on first use so `import surveillance` stays light
    (no duckdb or pandas until a database is wanted)."""
    if name == "Database":
        from .api import Database

        return Database
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
