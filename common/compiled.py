"""Compiled trees: a model's decision trees turned into native code by lleaves (LLVM), the fast
path's prediction (``STREAMFIT_COMPILED_TREES``, the ``fast`` extra).

The predictor compiles each model it serves itself, from the bundle's ``model.txt``, after the
model already serves through LightGBM; so a bundle stays code-free (nothing from the network is
ever executed), the binary always fits the machine it runs on, and compiling never delays a swap.
A compiled model is used only once it gives the booster's predictions on the warm-up rows (class
for class, scores to 1e-9); otherwise LightGBM keeps serving and the reason is logged.

Compiled binaries are cached under ``~/.cache/streamfit/compiled`` (a folder only its owner can
write), keyed by the sha256 of the model text, the lleaves version and the machine, so a replica
restarted on the same host loads instead of recompiling.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from streamfit.common.errors import BundleError, ConfigError

CACHE_DIR = Path.home() / ".cache" / "streamfit" / "compiled"
SCORE_TOLERANCE = 1e-9  # lleaves sums the same doubles in another order: 1e-16 apart on models seen here


def lleaves_version() -> str | None:
    try:
        return metadata.version("lleaves")
    except metadata.PackageNotFoundError:
        return None


def require_compiler() -> None:
    """Refuse at start-up, not at the first swap, a fast path that cannot compile."""
    if lleaves_version() is None:
        raise ConfigError(
            "STREAMFIT_COMPILED_TREES=true (--compiled-trees) needs lleaves: pip install 'streamfit[fast]', "
            "or leave it off to predict with LightGBM"
        )


@dataclass(frozen=True)
class CompiledTrees:
    """A compiled model: ``predict_matrix`` as ``ModelBundle.predict_matrix`` gives it."""

    model: Any  # lleaves.Model, compiled
    seconds: float  # to compile (or load from the cache)
    cached: bool

    def predict_matrix(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        return np.asarray(self.model.predict(matrix, n_jobs=num_threads or os.cpu_count() or 1))


def compile_trees(booster: lgb.Booster, cache_dir: Path = CACHE_DIR) -> CompiledTrees:
    """Compile ``booster`` (or load its binary from the cache). Raises BundleError if lleaves
    cannot: an objective or a tree it does not know."""
    import lleaves  # the fast extra; require_compiler() said so at start-up

    text = booster.model_to_string()
    key = hashlib.sha256(f"{text}\0{lleaves_version()}\0{platform.machine()}".encode()).hexdigest()[:32]
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    model_file, binary = cache_dir / f"{key}.txt", cache_dir / f"{key}.so"
    cached = binary.exists()
    started = time.perf_counter()
    try:
        if not model_file.exists():
            partial = model_file.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(text)
            partial.replace(model_file)
        model = lleaves.Model(model_file=str(model_file))
        # finline=False: the same speed here, and ten times less compile time on a 300-tree model.
        # A new binary is written beside its final name and renamed, so a replica starting on the
        # same host never loads half of one.
        target = binary if cached else binary.with_suffix(f".{os.getpid()}.tmp")
        model.compile(cache=str(target), finline=False)
        if not cached:
            target.replace(binary)
    except Exception as exc:  # whatever lleaves raises, LightGBM keeps serving
        raise BundleError(f"lleaves cannot compile the model: {type(exc).__name__}: {exc}") from exc
    return CompiledTrees(model, time.perf_counter() - started, cached)


def same_predictions(expected: np.ndarray, compiled: np.ndarray) -> str | None:
    """None when the compiled model gives the booster's scores on the same matrix; else why not."""
    if expected.shape != compiled.shape:
        return f"compiled scores have shape {compiled.shape}, LightGBM's {expected.shape}"
    gap = float(np.max(np.abs(expected - compiled), initial=0.0))
    if not np.all(np.isfinite(compiled)) or gap > SCORE_TOLERANCE:
        return f"compiled scores differ from LightGBM's by up to {gap:.3g} (tolerance {SCORE_TOLERANCE:g})"
    return None
