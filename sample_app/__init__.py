"""The sample app: streams a data set as requests and sends the true labels later.

``streamfit demo`` runs it in-process::

    from streamfit.sample_app import SampleAppOptions, run_sample_app
    summary = run_sample_app(settings, SampleAppOptions(count=3000, drift_at=1500, plot=path))
"""

from streamfit.sample_app.drift import DriftPlan, apply_drift, plan_drift
from streamfit.sample_app.progress import render_summary
from streamfit.sample_app.stats import Summary, Swap, VersionStats
from streamfit.sample_app.stream import SampleAppOptions, run_sample_app

__all__ = [
    "DriftPlan",
    "SampleAppOptions",
    "Summary",
    "Swap",
    "VersionStats",
    "apply_drift",
    "plan_drift",
    "render_summary",
    "run_sample_app",
]
