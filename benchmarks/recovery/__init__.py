"""The recovery evaluation (issue 12), the project's ML benchmark: ``python -m benchmarks.recovery``.

Labelled streams with drift (``streams``) go through the real loop (``replay``: a broker, the
predictor and trainer processes, MLflow, the public topics); the answers are scored per window
against the frozen first model and River learning prequentially (``evaluate``, ``scoring``), and
written as ``docs/recovery.md`` with a plot per stream and the raw JSON (``report``).
"""
