"""The policies as pure functions: what a worker takes next in each situation."""

from __future__ import annotations

import pytest

from batchsite.env import SCHEDULER_POLICIES
from jobs.services.scheduling import policy
from jobs.services.scheduling.policy import Pick, Situation, Waiting, affinity, fifo

NOW = 10_000.0


def queue(*batches: tuple[str, float | None]) -> tuple[Waiting, ...]:
    """Batches in queue order as (model, waited seconds or None while running)."""
    return tuple(
        Waiting(f"b{i}", model, NOW - 5000 + i, None if waited is None else NOW - waited)
        for i, (model, waited) in enumerate(batches)
    )


def situation(
    q: tuple[Waiting, ...], loaded: str | None = None, held: set[str] | None = None, max_wait: float = 1800
) -> Situation:
    return Situation(NOW, loaded, frozenset(held or ()), q, max_wait)


def test_fifo_takes_the_queue_head_whatever_is_loaded():
    q = queue(("A", 10), ("B", 5))
    assert fifo(situation(q, loaded="B")) == Pick(None, "queue head")


def test_fifo_does_not_even_look_at_the_queue():
    class Blind(Situation):
        @property
        def queue(self):
            raise AssertionError("fifo read the queue")

        @property
        def held_elsewhere(self):
            raise AssertionError("fifo read the workers")

    assert fifo(Blind(NOW, None, frozenset(), (), 1800)) == Pick(None, "queue head")


def test_affinity_keeps_the_loaded_model_while_it_has_work():
    q = queue(("A", 100), ("B", 90), ("A", 80))
    assert affinity(situation(q, loaded="B")).model == "B"
    assert affinity(situation(q, loaded="A")).model == "A"


def test_affinity_switches_for_a_batch_past_the_bound_even_with_work_for_the_loaded_model():
    q = queue(("A", 1801), ("B", 50))
    pick = affinity(situation(q, loaded="B"))
    assert pick is not None and pick.model == "A" and "BATCHSITE_AFFINITY_MAX_WAIT_SECONDS" in pick.reason


def test_at_the_bound_itself_it_does_not_switch():
    q = queue(("A", 1800), ("B", 50))
    assert affinity(situation(q, loaded="B")).model == "B"


def test_past_the_bound_the_oldest_overdue_batch_goes_first_even_if_it_is_the_loaded_models():
    # Both are overdue; B's is older in the queue, so no swap is needed.
    q = queue(("B", 2000), ("A", 1900), ("B", 10))
    assert affinity(situation(q, loaded="B")).model == "B"
    q = queue(("A", 2000), ("B", 1900))
    assert affinity(situation(q, loaded="B")).model == "A"


def test_a_running_batch_is_not_waiting_however_old():
    q = queue(("A", None), ("B", 10))
    assert affinity(situation(q, loaded="B", max_wait=0)).model == "B"


def test_an_idle_worker_with_nothing_loaded_takes_the_head_when_nothing_is_held():
    q = queue(("A", 10), ("B", 5))
    assert affinity(situation(q)) == Pick("A", "model not held by another worker")


def test_a_worker_whose_model_has_no_work_prefers_a_model_no_other_worker_holds():
    q = queue(("A", 10), ("B", 5), ("A", 1))
    assert affinity(situation(q, loaded="C", held={"A"})).model == "B"
    assert affinity(situation(q, held={"A"})).model == "B"


def test_when_every_waiting_model_is_held_it_helps_with_the_queue_head():
    q = queue(("A", 10), ("B", 5))
    assert affinity(situation(q, loaded="C", held={"A", "B"})) == Pick(None, "queue head")


def test_a_zero_bound_makes_affinity_fifo_among_waiting_batches():
    q = queue(("A", 1), ("B", 1))
    assert affinity(situation(q, loaded="B", max_wait=0)).model == "A"


def test_every_policy_the_settings_accept_exists():
    assert SCHEDULER_POLICIES == tuple(policy.POLICIES)


def test_affinity_answers_none_on_an_empty_queue():
    assert affinity(situation((), loaded="A")) is None


class TestThePolicyInForce:
    def test_is_the_setting_without_a_file(self, scheduler):
        scheduler(policy="affinity")
        assert policy.current_policy() == "affinity"

    def test_a_file_switches_it_at_once_and_its_removal_switches_back(self, scheduler, tmp_path):
        knob = tmp_path / "scheduler"
        scheduler(policy="fifo", policy_file=str(knob))
        assert policy.current_policy() == "fifo"
        knob.write_text("affinity\n")
        assert policy.current_policy() == "affinity"
        knob.write_text("")
        assert policy.current_policy() == "fifo"
        knob.unlink()
        assert policy.current_policy() == "fifo"

    @pytest.mark.parametrize(
        "content",
        [b"lifo", b"AFFINITY", b"\xff\xfe\x00", "\udc80".encode("utf-8", "surrogatepass"), b"affinity" * 10_000],
    )
    def test_a_file_with_anything_else_is_reported_and_ignored(self, scheduler, tmp_path, caplog, content):
        knob = tmp_path / "scheduler"
        knob.write_bytes(content)
        scheduler(policy="fifo", policy_file=str(knob))
        policy._reported.clear()
        assert policy.current_policy() == "fifo"
        assert policy.current_policy() == "fifo"
        errors = [r for r in caplog.records if "BATCHSITE_SCHEDULER_FILE" in r.getMessage()]
        assert len(errors) == 1  # reported once, not at every claim

    def test_a_directory_in_place_of_the_file_is_ignored(self, scheduler, tmp_path):
        scheduler(policy="affinity", policy_file=str(tmp_path))
        policy._reported.clear()
        assert policy.current_policy() == "affinity"
