"""The installed version of chem-persistence (from the package metadata)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chem-persistence")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
