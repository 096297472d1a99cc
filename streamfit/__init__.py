"""streamfit: keep a LightGBM model fresh while it serves over Apache Kafka.

This package holds the command line (``streamfit``), the embedded broker and the local demo; the
services live in ``predictor``, ``trainer`` and ``sample_app``, and what they share in ``common``.
"""

from streamfit.common import __version__

__all__ = ["__version__"]
