"""streamfit: keep a LightGBM model fresh while it serves over Apache Kafka.

This package holds the command line (``streamfit``), the embedded broker and the local demo; the
services live in ``predictor``, ``trainer`` and ``sample_app``, and what they share in ``common``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streamfit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
