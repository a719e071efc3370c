"""Fair share's rule, pure (jobs/services/scheduling/fairness.py): whose work a free worker takes.

The loops below simulate claims with share accounting (each claim adds its
run seconds to its owner's usage), the way share.record does for real chunks;
tests/services/scheduling/test_fair_claims.py runs the real claim.
"""

from __future__ import annotations

import pytest

from jobs.services.scheduling.fairness import choose_owner, waiting_by_owner
from jobs.services.scheduling.policy import Waiting

SWITCH = 300.0


def test_nobody_waiting_is_nobody():
    assert choose_owner({}, {}, {}, "m", 0.0, SWITCH) is None
    assert choose_owner({"alice": {}}, {}, {}, "m", 0.0, SWITCH) is None


def test_one_owner_gets_the_worker_whatever_their_usage_or_model():
    assert choose_owner({"alice": {"other": 99.0}}, {"alice": 1e9}, {"alice": 0.001}, "m", 100.0, SWITCH) == "alice"


def test_the_owner_furthest_below_their_share_goes_first():
    waiting = {"alice": {"m": 0.0}, "bob": {"m": 50.0}}
    assert choose_owner(waiting, {"alice": 100.0, "bob": 10.0}, {}, "m", 60.0, SWITCH) == "bob"
    # Weighted: alice's 100 s over weight 20 is 5 s per weight, below bob's 10.
    assert choose_owner(waiting, {"alice": 100.0, "bob": 10.0}, {"alice": 20.0}, "m", 60.0, SWITCH) == "alice"


def test_equal_shares_go_to_the_oldest_wait():
    waiting = {"alice": {"m": 40.0}, "bob": {"m": 10.0}}
    assert choose_owner(waiting, {}, {}, "m", 60.0, SWITCH) == "bob"


def test_another_models_owner_waits_for_the_switch_budget():
    waiting = {"alice": {"a": 0.0}, "bob": {"b": 0.0}}
    used = {"alice": 500.0, "bob": 0.0}
    assert choose_owner(waiting, used, {}, "a", SWITCH - 1, SWITCH) == "alice"
    assert choose_owner(waiting, used, {}, "a", SWITCH, SWITCH) == "bob"


def test_no_budget_applies_with_nothing_loaded_or_no_work_on_the_loaded_model():
    waiting = {"alice": {"a": 0.0}, "bob": {"b": 0.0}}
    used = {"alice": 500.0, "bob": 0.0}
    assert choose_owner(waiting, used, {}, None, 1.0, SWITCH) == "bob"
    assert choose_owner(waiting, used, {}, "c", 1.0, SWITCH) == "bob"


def test_an_owner_with_any_work_on_the_loaded_model_is_served_with_no_swap():
    waiting = {"alice": {"a": 0.0}, "bob": {"b": 0.0, "a": 0.0}}
    assert choose_owner(waiting, {"alice": 500.0}, {}, "a", 1.0, SWITCH) == "bob"


def test_a_batch_being_served_does_not_make_its_owner_overdue():
    queue = (
        Waiting("b1", "a", 0.0, None, owner=1),
        Waiting("b2", "b", 0.0, 5.0, owner=2),
        Waiting("b3", "b", 0.0, 2.0, owner=2),
    )
    assert waiting_by_owner(queue, 1000.0) == {1: {"a": 1000.0}, 2: {"b": 2.0}}


def run(
    weights: dict[str, float],
    models: dict[str, str],
    chunk_seconds: dict[str, float],
    steps: int,
    switch: float = SWITCH,
) -> dict:
    """One worker, every owner always with work: claim, run the chunk, add its seconds to the owner's usage."""
    used = dict.fromkeys(models, 0.0)
    served = dict.fromkeys(models, 0.0)  # when each owner's last chunk ended
    loaded: str | None = None
    now, swaps = 0.0, 0
    for _ in range(steps):
        waiting = {owner: {model: served[owner]} for owner, model in models.items()}
        owner = choose_owner(waiting, used, weights, loaded, now, switch)
        assert owner is not None
        if models[owner] != loaded:
            swaps += loaded is not None
            loaded = models[owner]
        now += chunk_seconds[owner]
        used[owner] += chunk_seconds[owner]
        served[owner] = now
    return {"used": used, "swaps": swaps, "now": now}


def test_a_two_to_one_weight_gives_about_two_to_one_worker_time():
    out = run({"alice": 2.0, "bob": 1.0}, {"alice": "m", "bob": "m"}, {"alice": 7.0, "bob": 11.0}, 600)
    assert out["used"]["alice"] / out["used"]["bob"] == pytest.approx(2.0, rel=0.05)


def test_equal_weights_share_equally_though_chunks_differ_in_length():
    out = run({}, {"alice": "m", "bob": "m"}, {"alice": 3.0, "bob": 20.0}, 600)
    assert out["used"]["alice"] / out["used"]["bob"] == pytest.approx(1.0, rel=0.05)


def test_two_users_on_two_models_swap_no_more_than_the_budget_allows():
    chunk = {"alice": 10.0, "bob": 10.0}
    out = run({}, {"alice": "a", "bob": "b"}, chunk, 720)
    # A swap is due only once the other owner's oldest line waited SWITCH seconds.
    assert out["swaps"] <= out["now"] / SWITCH + 1
    assert out["used"]["alice"] / out["used"]["bob"] == pytest.approx(1.0, rel=0.1)
    # Without the budget the same run swaps at every chunk: the bound is the budget's doing.
    unbudgeted = run({}, {"alice": "a", "bob": "b"}, chunk, 720, switch=0.0)
    assert unbudgeted["swaps"] > 10 * out["swaps"]
