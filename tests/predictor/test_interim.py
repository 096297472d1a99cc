"""The interim answer (pure logic): which of the old model's answers are served otherwise after a
drift alarm, and what is sent with them."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.interim import MIN_ANSWERS, Correction, Remap, remaps


def pairs(*groups: tuple[int, int, int]) -> np.ndarray:
    """(model answer, label, times) groups as one array of (answer, label) rows."""
    return np.array([(a, y) for a, y, times in groups for _ in range(times)], dtype=np.int32).reshape(-1, 2)


def test_an_answer_the_labels_now_contradict_is_remapped_with_the_share_of_positives() -> None:
    found = remaps(pairs((0, 1, 35), (0, 0, 5), (1, 1, 10), (-1, 1, 50), (0, -1, 50)), classes=2, binary=True)
    assert found == {0: Remap(served=1, score=35 / 40, followed=35, given=40)}  # 1 was given too rarely
    # two in three: clear after 45 answers (2.2 standard errors), not after 15
    assert remaps(pairs((0, 1, 30), (0, 0, 15)), 2, True) == {0: Remap(1, 30 / 45, 30, 45)}
    assert remaps(pairs((0, 1, 10), (0, 0, 5)), 2, True) == {}


def test_noise_a_rare_answer_and_an_unmoved_concept_are_left_alone() -> None:
    assert remaps(pairs((0, 1, 15), (0, 0, 10)), 2, True) == {}  # more often wrong, but not by 2 sigma
    assert remaps(pairs((0, 1, MIN_ANSWERS - 1)), 2, True) == {}  # every time wrong, but too few times
    assert remaps(pairs((0, 0, 90), (0, 1, 10), (1, 1, 80), (1, 0, 20)), 2, True) == {}
    assert remaps(np.zeros((0, 2), dtype=np.int32), 2, True) == {}


def test_several_classes_serve_the_class_that_followed_most_with_its_share() -> None:
    found = remaps(pairs((2, 0, 30), (2, 2, 4), (2, 1, 6), (1, 1, 40)), classes=3, binary=False)
    assert found == {2: Remap(served=0, score=0.75, followed=30, given=40)}
    # ten classes after a change: 4 of 22 labels behind the best class is no rule, however wrong the answer
    assert remaps(pairs((5, 0, 4), *((5, c, 2) for c in range(1, 10) if c != 5)), classes=10, binary=False) == {}


def test_a_correction_serves_only_its_version_until_it_expires() -> None:
    correction = Correction("3", ("no", "yes"), {0: Remap(1, 0.875, 35, 40)}, until=100.0)
    assert correction.apply(["no", "yes", "no"], [0.2, 0.9, 0.4]) == (["yes", "yes", "yes"], [0.875, 0.9, 0.875])
    assert correction.active("3", now=99.0)
    assert not correction.active("4", now=99.0) and not correction.active("3", now=100.0)
    assert "'no' -> 'yes' (35 of 40 labels)" in correction.describe()


@pytest.mark.parametrize("classes", [("no", "yes"), (0, 1)])
def test_an_answer_outside_the_classes_is_passed_through(classes: tuple[object, object]) -> None:
    correction = Correction("1", classes, {1: Remap(0, 0.1, 30, 30)}, until=float("inf"))
    assert correction.apply([classes[0], "other"], [0.3, 0.5]) == ([classes[0], "other"], [0.3, 0.5])
    assert correction.apply([classes[1]], [0.7]) == ([classes[0]], [0.1])
