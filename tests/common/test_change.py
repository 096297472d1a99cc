"""Finding a change of the world in the served error, and training on the rows after it."""

from __future__ import annotations

import numpy as np

from streamfit.common.change import latest_change
from streamfit.trainer.promotion import better_share, decide


def errors(*segments: tuple[int, float], seed: int = 0) -> np.ndarray:
    """0/1 served errors: ``(rows, error rate)`` per segment, in time order."""
    rng = np.random.default_rng(seed)
    return np.concatenate([(rng.random(n) < rate).astype(float) for n, rate in segments])


def test_an_abrupt_change_is_found_where_it_happened() -> None:
    for seed in range(5):
        found = latest_change(errors((5000, 0.05), (300, 0.5), seed=seed), classification=True)
        assert found is not None and abs(found.at - 5000) <= 25, found
        assert found.before < 0.1 < 0.4 < found.after


def test_a_short_burst_after_a_nearly_perfect_model_is_no_change_a_short_jump_is() -> None:
    """Twenty answers after the step, as the predictor scans: 4 errors after 9 in 980 pass the
    scan's normal score (7.5 standard errors) but not the exact binomial count; 12 in 20 do."""
    rng = np.random.default_rng(4)
    before = np.zeros(980)
    before[rng.choice(980, 9, replace=False)] = 1.0
    burst = np.r_[before, np.ones(4), np.zeros(16)]
    assert latest_change(burst, classification=True, min_after=20) is None
    jump = np.r_[before, (rng.random(20) < 0.6).astype(float)]
    found = latest_change(jump, classification=True, min_after=20)
    assert found is not None and 975 <= found.at <= 985 and found.after > 0.4, found


def test_the_change_is_kept_after_a_new_model_brings_the_error_down() -> None:
    # drift at 5,000 served by the old model for 400 rows, then a model of the new world
    found = latest_change(errors((5000, 0.05), (400, 0.5), (3000, 0.06), seed=1), classification=True)
    assert found is not None and abs(found.at - 5000) <= 25, found


def test_the_latest_of_two_changes_wins() -> None:
    series = errors((4000, 0.05), (300, 0.5), (3000, 0.05), (300, 0.45), (200, 0.1), seed=2)
    found = latest_change(series, classification=True)
    assert found is not None and abs(found.at - 7300) <= 25, found


def test_no_change_in_a_stationary_stream_of_any_length() -> None:
    for seed in range(20):
        assert latest_change(errors((30_000, 0.15), seed=seed), classification=True) is None
    assert latest_change(errors((60, 0.0), (60, 1.0)), classification=True) is not None
    assert latest_change(errors((40, 0.0), (40, 1.0)), classification=True) is None  # too few on each side


def test_a_step_down_is_a_better_model_not_a_change() -> None:
    assert latest_change(errors((2000, 0.5), (5000, 0.05)), classification=True) is None


def test_a_small_step_is_not_a_change() -> None:
    # +1.5 points on a 15% error rate: significant over 40,000 rows, but not worth forgetting the past for
    assert latest_change(errors((20_000, 0.15), (20_000, 0.165), seed=3), classification=True) is None


def test_regression_errors_and_unknown_rows() -> None:
    rng = np.random.default_rng(4)
    series = np.concatenate([np.abs(rng.normal(0, 1, 3000)), np.abs(rng.normal(0, 3, 500))])
    series[::7] = np.nan  # served answers this pipeline could not read
    found = latest_change(series, classification=False)
    assert found is not None and abs(found.at - 3000) <= 30, found
    assert latest_change(np.abs(rng.normal(0, 1, 10_000)), classification=False) is None


def test_paired_bootstrap_keeps_the_champion_within_the_noise() -> None:
    rng = np.random.default_rng(5)
    champion = rng.exponential(0.3, 400)
    noise = champion + rng.normal(0, 0.05, 400)  # as good, up to noise
    better = champion * 0.6  # clearly better on almost every row
    assert 0.05 < better_share(noise, champion) < 0.95
    assert better_share(better, champion) == 1.0
    tie = decide(float(noise.mean()), float(champion.mean()), 0.0, share=better_share(noise, champion),
                 confidence=0.95)  # fmt: skip
    assert not tie.promote or (tie.better_share is not None and tie.better_share >= 0.95)
    win = decide(float(better.mean()), float(champion.mean()), 0.0, share=1.0, confidence=0.95)
    assert win.promote and "100%" in win.reason
    lucky = decide(0.29, 0.30, 0.0, share=0.6, confidence=0.95)
    assert not lucky.promote and "noise" in lucky.reason
