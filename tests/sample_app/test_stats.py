import math
import random

import numpy as np
import pytest
from rich.console import Console

from streamfit.common.errors import ConfigError
from streamfit.sample_app.progress import render_snapshot, render_summary
from streamfit.sample_app.stats import (
    Rolling,
    StreamStats,
    SwapPoint,
    around_swaps,
    detect_swaps,
    percentile,
    score_answer,
)
from streamfit.sample_app.stream import SampleAppOptions, label_selected


def test_percentile_matches_numpy() -> None:
    rng = random.Random(3)
    values = [rng.expovariate(1.0) for _ in range(101)]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert math.isnan(percentile([], 50))
    assert percentile([4.0], 99) == 4.0


def test_score_answer() -> None:
    assert score_answer("binary", ">50K", ">50K") == 1.0
    assert score_answer("multiclass", "1", 1) == 1.0  # one spelling of a class, as the pipeline's
    assert score_answer("binary", "<=50K", ">50K") == 0.0
    assert score_answer("binary", "<=50K", None) is None
    assert score_answer("regression", 2.5, 4) == 1.5
    assert score_answer("regression", "x", 4) is None


def test_rolling_mean_keeps_the_last_n() -> None:
    rolling = Rolling(3)
    assert math.isnan(rolling.mean)
    for value in (0.0, 1.0, 1.0, 1.0):
        rolling.add(value)
    assert rolling.mean == 1.0 and len(rolling) == 3


def test_a_clean_swap_is_found_where_it_happened() -> None:
    assert detect_swaps(["1"] * 20 + ["2"] * 20) == [SwapPoint(20, "1", "2")]
    assert detect_swaps(["1"] * 20) == []


def test_replicas_answering_side_by_side_make_one_swap_dated_to_the_first_new_answer() -> None:
    rollover = ["1", "2", "1", "1", "2", "1", "2", "2", "1", "2", "2"]
    versions = ["1"] * 30 + rollover + ["2"] * 30 + ["1"] * 2  # two late answers of the old one
    assert detect_swaps(versions) == [SwapPoint(31, "1", "2")]


def test_a_rollback_is_a_swap_and_a_swap_at_the_very_end_is_not_lost() -> None:
    versions = ["1"] * 10 + ["2"] * 10 + ["1"] * 10 + ["3"] * 3
    assert detect_swaps(versions) == [SwapPoint(10, "1", "2"), SwapPoint(20, "2", "1"), SwapPoint(30, "1", "3")]


def test_accuracy_before_and_after_each_swap() -> None:
    versions = ["1"] * 6 + ["2"] * 6
    values = [1.0, 1.0, 0.0, 0.0, math.nan, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    requests = list(range(12))
    (around,) = around_swaps(versions, values, requests, [SwapPoint(6, "1", "2")], window=4)
    assert (around.before, around.before_n) == (pytest.approx(1 / 4), 4)  # last 4 scored of v1
    assert (around.after, around.after_n) == (0.75, 4)  # first 4 of v2
    assert around.request_index == 6


def test_stream_stats_summary() -> None:
    stats = StreamStats("binary", window=5, started_at=1000.0)
    stats.sent = 30
    for i in range(30):
        version = "1" if i < 12 else "2"
        correct = 1.0 if (version == "2" or i % 2) else 0.0
        # Answers arrive out of request order around the swap: request 12 is answered last of its run.
        request = {12: 14, 13: 12, 14: 13}.get(i, i)
        stats.answer(request, version, latency=0.010 + i / 1000, value=correct, elapsed=i * 0.1)
    snap = stats.snapshot(3.0, count=30, in_flight=0, labels_pending=0, drift_at=None)
    assert snap.version == "2" and snap.rolling == 1.0 and snap.swaps == 1
    summary = stats.summary(3.0, unanswered=0, labels_unsent=0, drift_at=20, drift="test")
    assert summary.answered == 30 and summary.lost == 0
    assert summary.metric_by_version == {"1": 0.5, "2": 1.0}
    (swap,) = summary.swaps
    assert (swap.from_version, swap.to_version, swap.request_index) == ("1", "2", 12)
    assert swap.at == pytest.approx(1001.2) and swap.before == pytest.approx(0.6) and swap.after == 1.0
    assert summary.latency_p50_ms == pytest.approx(24.5)
    text = _text(render_summary(summary)) + _text(render_snapshot(snap))
    assert "1 → 2" in text and "100.0%" in text and "drift" in text


def test_a_long_run_keeps_exact_counts_and_a_thinned_timeline() -> None:
    stats = StreamStats("binary", window=10, max_series=64)
    for i in range(1000):
        stats.answer(i, "1" if i < 600 else "2", latency=i / 1000, value=float(i % 2), elapsed=i / 100)
    assert len(stats.versions) < 64 and stats.stride > 1
    assert len(stats.versions) == len(stats.elapsed) == len(stats.values) == len(stats.requests)
    assert stats.elapsed[-1] > 9  # the timeline still reaches the end of the run
    summary = stats.summary(10.0, unanswered=0, labels_unsent=0)
    assert summary.answered == 1000 and [(v.answered, v.scored) for v in summary.versions] == [(600, 600), (400, 400)]
    assert summary.overall == 0.5 and summary.latency_max_ms == pytest.approx(999)
    (swap,) = summary.swaps
    assert 600 <= swap.request_index < 600 + stats.stride


def test_label_selection_is_seeded_per_request() -> None:
    chosen = [label_selected(7, i, 0.3) for i in range(2000)]
    assert chosen == [label_selected(7, i, 0.3) for i in range(2000)]
    assert 0.25 < sum(chosen) / 2000 < 0.35
    assert all(label_selected(7, i, 1.0) for i in range(10))
    assert not any(label_selected(7, i, 0.0) for i in range(10))


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (SampleAppOptions(rate=-1), "--rate"),
        (SampleAppOptions(label_fraction=1.5), "--label-fraction"),
        (SampleAppOptions(timeout=0), "--timeout"),
        (SampleAppOptions(drift_at=-3), "--drift-at"),
    ],
)
def test_bad_options_name_their_flag(options: SampleAppOptions, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        options.check()


def _text(renderable: object) -> str:
    console = Console(record=True, width=140, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()
