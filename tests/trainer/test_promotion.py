"""The promotion rule: better by more than the margin on the same holdout, or no champion."""

import math

import pytest

from streamfit.trainer.promotion import decide


def test_no_champion_promotes() -> None:
    assert decide(0.5, None, 0.0).promote


def test_strictly_better_promotes_and_a_tie_does_not() -> None:
    assert decide(0.30, 0.31, 0.0).promote
    tie = decide(0.31, 0.31, 0.0)
    assert not tie.promote and "does not beat" in tie.reason


def test_margin_must_be_exceeded() -> None:
    assert not decide(0.300, 0.305, 0.01).promote
    assert not decide(0.295, 0.305, 0.01).promote  # exactly the margin is not more than it
    assert decide(0.294, 0.305, 0.01).promote


def test_worse_candidate_is_rejected_with_both_scores() -> None:
    decision = decide(0.40, 0.30, 0.0)
    assert not decision.promote
    assert (decision.candidate_loss, decision.champion_loss) == (0.40, 0.30)


def test_non_finite_losses() -> None:
    assert not decide(math.nan, 0.3, 0.0).promote
    assert not decide(math.inf, None, 0.0).promote
    assert decide(0.3, math.nan, 0.0).promote  # a champion that cannot be scored loses


def test_negative_margin_is_refused() -> None:
    with pytest.raises(ValueError):
        decide(0.3, 0.4, -0.1)
