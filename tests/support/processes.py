"""Helpers for tests that start streamfit commands as a user would."""

from __future__ import annotations

import signal


def ignore_sigint() -> None:
    """``preexec_fn``: start the child with SIGINT ignored, as a non-interactive shell starts a job
    with ``&`` and as some CI runners start the suite. A command that promises that Ctrl+C stops it
    must undo that itself (see ``streamfit.cli``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
