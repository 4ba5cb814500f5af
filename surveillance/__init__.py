"""kratom-surveillance: FAERS quarterly data in DuckDB, substance extraction, signals."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kratom-surveillance")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
