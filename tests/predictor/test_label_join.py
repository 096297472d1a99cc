"""The label join, without a broker: join, hold, expire, evict, undo."""

from __future__ import annotations

import pytest

from streamfit.predictor.label_join import NO_LABEL, LabelJoin, Served


def serve(join: LabelJoin, request_id: str, entry: Served) -> object:
    return join.served(request_id, entry.features, entry.prediction, entry.score, entry.model_version, entry.served_at)


def served(request_id: str, at: float = 0.0) -> Served:
    return Served({"request_id": request_id, "age": 39, "city": None}, "yes", 0.9, "1", at)


def test_a_label_joins_what_was_served_once() -> None:
    join = LabelJoin(max_size=10, max_age=60)
    entry = served("a")
    assert serve(join, "a", entry) is NO_LABEL
    assert join.label("a", "no", now=1.0) == entry
    assert join.pending == 0 and join.joined == 1
    assert join.label("a", "no", now=1.0) is None  # a second label for it: held, then unknown
    join.expire(now=1.0 + join.hold_age)
    assert join.unknown == 1 and join.held == 0


def test_a_label_that_comes_before_its_request_is_held_and_joined_when_it_is_served() -> None:
    join = LabelJoin(max_size=10, max_age=60, hold_age=5)
    assert join.label("early", "yes", now=0.0) is None
    assert join.held == 1 and join.held_total == 1
    assert serve(join, "early", served("early", at=1.0)) == "yes"
    assert join.held == 0 and join.pending == 0 and join.joined == 1


def test_held_labels_expire_as_unknown_and_are_bounded() -> None:
    join = LabelJoin(max_size=10, max_age=60, hold_max=2, hold_age=5)
    for i, request_id in enumerate(("a", "b", "c")):
        join.label(request_id, "yes", now=float(i))
    assert join.held == 2 and join.unknown == 1  # the oldest went first
    join.expire(now=6.5)  # "b" (held at 1.0) is older than 5 s, "c" (2.0) is not
    assert join.held == 1 and join.unknown == 2


def test_served_requests_are_bounded_by_size_and_age() -> None:
    join = LabelJoin(max_size=3, max_age=10)
    for i in range(5):
        serve(join, f"r{i}", served(f"r{i}", at=float(i)))
    assert join.pending == 3 and join.evicted == 2
    assert join.label("r0", "yes", now=5.0) is None  # evicted: not joined
    join.expire(now=13.5)  # r2 (2.0) and r3 (3.0) are older than 10 s; r4 (4.0) is not
    assert join.pending == 1 and join.expired == 2
    assert join.label("r4", "yes", now=13.5) is not None


def test_serving_a_request_again_refreshes_it() -> None:
    join = LabelJoin(max_size=2, max_age=10)
    serve(join, "a", served("a", at=0.0))
    serve(join, "b", served("b", at=1.0))
    again = served("a", at=2.0)
    serve(join, "a", again)  # a repeated batch (at-least-once): the newest answer wins
    serve(join, "c", served("c", at=3.0))  # evicts "b", now the oldest
    assert join.label("b", "x", now=3.0) is None
    assert join.label("a", "x", now=3.0) == again


def test_rollback_puts_back_what_a_failed_batch_joined() -> None:
    join = LabelJoin(max_size=10, max_age=60)
    first = served("a")
    serve(join, "a", first)
    join.label("early", "yes", now=0.0)
    join.begin()
    assert join.label("a", "no", now=1.0) == first
    assert serve(join, "early", served("early")) == "yes"
    join.rollback()
    assert join.joined == 0 and join.pending == 1 and join.held == 1
    join.begin()
    assert join.label("a", "no", now=2.0) == first  # the retried batch joins it again
    join.commit()
    join.rollback()  # nothing to undo after a commit
    assert join.joined == 1 and join.pending == 0


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        LabelJoin(max_size=0, max_age=1)


def test_a_joined_request_comes_back_exactly_as_served() -> None:
    join = LabelJoin(max_size=10, max_age=60)
    entries = {
        "a": Served({"age": 39, "hours": 40.5, "city": None, "tags": ["x", 1], "ok": True}, True, 0.75, "3", 1.5),
        "b": Served({"hours": 1e-300, "age": -7}, 1, 0.25, "3", 2.5),  # other key order; 1 is not True
        "c": Served({}, "yes", 0.123456789012345, "10", 3.5),
        "d": Served({"age": 1}, {"class": "nested"}, 0.5, "4", 4.5),  # a prediction no table holds
    }
    for request_id, entry in entries.items():
        serve(join, request_id, entry)
    for request_id, entry in entries.items():
        back = join.label(request_id, "x", now=5.0)
        assert back == entry and back is not None
        assert list(back.features) == list(entry.features) and type(back.prediction) is type(entry.prediction)


def test_requests_past_the_tables_bounds_come_back_whole() -> None:
    join = LabelJoin(max_size=70_000, max_age=60)
    entries = [Served({f"f{i}": i}, "yes", 0.5, "1", 1.0) for i in range(0xFFFF + 2)]  # each its own key set
    for i, entry in enumerate(entries):
        serve(join, f"r{i}", entry)
    for i in (0, 0xFFFE, 0xFFFF, 0xFFFF + 1):  # the last two do not fit the table of key sets
        assert join.label(f"r{i}", "x", now=2.0) == entries[i]


def test_the_size_bound_counts_requests_still_waiting_not_those_joined() -> None:
    join = LabelJoin(max_size=3, max_age=60)
    for request_id in "abc":
        serve(join, request_id, served(request_id))
    assert join.label("b", "yes", now=1.0) is not None
    serve(join, "d", served("d"))  # a, c, d: within the bound, nothing evicted
    assert join.evicted == 0 and join.pending == 3
    serve(join, "a", served("a"))  # served again: now the newest
    serve(join, "e", served("e"))  # c is the oldest
    assert join.evicted == 1 and join.label("c", "yes", now=2.0) is None
    assert join.label("a", "yes", now=2.0) is not None


def test_many_joins_do_not_grow_the_order_without_bound() -> None:
    join = LabelJoin(max_size=100, max_age=60)
    serve(join, "first", served("first"))
    for i in range(10_000):
        serve(join, f"r{i}", served(f"r{i}"))
        assert join.label(f"r{i}", "yes", now=1.0) is not None
    assert join.pending == 1 and len(join._order_ids) <= 2 * join.pending + 1024
    assert join.label("first", "yes", now=1.0) is not None
