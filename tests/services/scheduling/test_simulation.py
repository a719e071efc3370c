"""The queue run forward under the policies (pure: no database), on known rates and loads."""

from __future__ import annotations

import time

import pytest

from jobs.services.scheduling.simulation import Estimates, FairShare, SimBatch, SimRunning, SimWorker, simulate

NOW = 1_000_000.0
SLOT = ("host", "cuda:0")
# Model A: 10 req/s, 30 s to load; model B: 20 req/s, 20 s to load.
SPR = {"A": 0.1, "B": 0.05}
LOAD = {"A": 30.0, "B": 20.0}
KNOWN = Estimates(lambda model, slot: SPR.get(model), lambda model, slot: LOAD.get(model))


def batches(*models: str, requests: int = 100, chunks: int = 4) -> list[SimBatch]:
    """Queued batches, one second apart, not started."""
    return [SimBatch(f"b{i}", model, NOW - 100 + i, False, None, chunks, requests) for i, model in enumerate(models)]


def worker(policy: str, loaded: str | None = None, name: str = "w1", slot=SLOT, **extra) -> SimWorker:
    return SimWorker(name, policy, loaded, slot, **extra)


SEED = ("A", "B", "A", "B", "A", "B", "A", "B")


def test_fifo_runs_the_seeds_eight_alternating_batches_in_order_with_seven_swaps():
    out = simulate(NOW, batches(*SEED), [worker("fifo")], KNOWN, max_wait=1800)
    assert out.swaps == 7
    assert sorted(out.starts, key=out.starts.__getitem__) == [f"b{i}" for i in range(8)]
    # Each batch: its load, then 100 requests at its model's rate.
    t = NOW
    for i, model in enumerate(SEED):
        t += LOAD[model] + 100 * SPR[model]
        assert out.ends[f"b{i}"] == pytest.approx(t)
    assert out.loads["w1"] == list(SEED)


def test_affinity_groups_them_with_one_swap_and_keeps_fifo_within_a_model():
    out = simulate(NOW, batches(*SEED), [worker("affinity")], KNOWN, max_wait=1800)
    assert out.swaps == 1 and out.loads["w1"] == ["A", "B"]
    order = sorted(out.starts, key=out.starts.__getitem__)
    assert order == ["b0", "b2", "b4", "b6", "b1", "b3", "b5", "b7"]
    assert out.ends["b6"] == pytest.approx(NOW + 30 + 4 * 10)
    assert out.ends["b7"] == pytest.approx(NOW + 30 + 40 + 20 + 4 * 5)


def test_a_short_bound_makes_affinity_switch_to_a_batch_that_waited_too_long():
    # b1 (B) was created at NOW - 99; with a 130 s bound it is overdue after A's
    # load and three of its batches' chunks: the worker switches before A is done.
    out = simulate(NOW, batches(*SEED), [worker("affinity")], KNOWN, max_wait=130)
    assert out.starts["b1"] < out.starts["b6"]
    assert out.swaps > 1


def test_affinity_keeps_a_worker_on_the_model_it_has_loaded():
    out = simulate(NOW, batches(*SEED), [worker("affinity", loaded="B")], KNOWN, max_wait=1800)
    assert out.loads["w1"] == ["A"] and out.swaps == 1
    assert min(out.starts, key=out.starts.__getitem__) == "b1"


def test_two_workers_under_affinity_settle_on_one_model_each():
    out = simulate(
        NOW,
        batches(*SEED),
        [worker("affinity", name="w1"), worker("affinity", name="w2", slot=("host", "cuda:1"))],
        KNOWN,
        max_wait=1800,
    )
    assert out.swaps <= 2
    assert sorted(tuple(loads[:1]) for loads in out.loads.values()) == [("A",), ("B",)]


def test_running_and_loading_work_comes_first_on_its_worker():
    busy = worker("fifo", running=[SimRunning("r", "A", 50)], loading="A", loading_for=10)
    out = simulate(NOW, batches("A"), [busy], KNOWN, max_wait=1800)
    # 20 s of A's load left, 50 requests of the running chunk, then b0 with no load.
    assert out.starts["b0"] == pytest.approx(NOW + 20 + 5)
    assert out.ends["b0"] == pytest.approx(NOW + 20 + 5 + 10)
    assert out.swaps == 0


def test_work_in_the_engine_ends_by_its_progress_or_its_schedule_whichever_is_later():
    # 100 lines of A fed 5 s ago (10 s of work at 10/s). Lines finish unevenly:
    # short answers first, so 90 done says little about the time left (schedule: 5 s).
    burst = worker("fifo", running=[SimRunning("r", "A", remaining=10, total=100, claimed_at=NOW - 5)])
    out = simulate(NOW, [SimBatch("r", "A", NOW - 9, True, NOW - 5, 0, 0)], [burst], KNOWN, max_wait=1800)
    assert out.ends["r"] == pytest.approx(NOW + 5)
    # Slower than its schedule (nothing done after 12 s): the lines left say 10 s.
    late = worker("fifo", running=[SimRunning("r", "A", remaining=100, total=100, claimed_at=NOW - 12)])
    out = simulate(NOW, [SimBatch("r", "A", NOW - 20, True, NOW - 12, 0, 0)], [late], KNOWN, max_wait=1800)
    assert out.ends["r"] == pytest.approx(NOW + 10)


def test_chunks_in_the_engine_together_end_one_after_another_on_their_schedule():
    fed = [SimRunning(f"c{i}", "A", remaining=32, total=32, claimed_at=NOW - 2 + 0.01 * i) for i in range(3)]
    held = [SimBatch(f"c{i}", "A", NOW - 10 + i, True, NOW - 2, 0, 0) for i in range(3)]
    out = simulate(NOW, held, [worker("fifo", running=fed)], KNOWN, max_wait=1800)
    # Nothing done yet after 2 s: the lines left say 9.6 s more for the last of them.
    assert [out.ends[f"c{i}"] for i in range(3)] == pytest.approx([NOW + 3.2, NOW + 6.4, NOW + 9.6])
    # A second later, with 80 of 96 answered (the short ones), the schedule says 6.6 s.
    for run, left in zip(fed, (0, 6, 10), strict=True):
        run.remaining = left
    out = simulate(NOW + 1, held, [worker("fifo", running=fed)], KNOWN, max_wait=1800)
    assert out.ends["c2"] == pytest.approx(NOW - 2 + 9.6)


def test_an_unknown_rate_makes_the_ends_that_depend_on_it_unknown_not_the_others():
    partial = Estimates(lambda model, slot: SPR["A"] if model == "A" else None, lambda model, slot: 0.0)
    out = simulate(NOW, batches("A", "B", "A"), [worker("fifo")], partial, max_wait=1800)
    assert out.ends["b0"] == pytest.approx(NOW + 10)
    assert out.ends["b1"] is None and out.ends["b2"] is None  # b2 runs after b1 on the same worker
    assert set(out.starts) == {"b0", "b1", "b2"}  # the order is still known


def test_a_stand_in_worker_orders_the_queue_but_promises_no_time():
    out = simulate(NOW, batches("A", "B"), [worker("fifo", slot=None)], KNOWN, max_wait=1800)
    assert out.starts["b0"] < out.starts["b1"]
    assert out.ends == {"b0": None, "b1": None}


def test_a_batch_with_nothing_left_to_claim_ends_now_and_one_nobody_can_take_has_no_end():
    done = SimBatch("done", "A", NOW - 10, True, NOW - 1, 0, 0)
    out = simulate(NOW, [done, *batches("A")], [], KNOWN, max_wait=1800)
    assert out.ends == {"done": NOW, "b0": None}


def test_a_huge_queue_is_simulated_in_bounded_time_and_keeps_its_totals():
    many = batches("A", "B", "A", requests=300_000, chunks=300_000)
    started = time.perf_counter()
    out = simulate(NOW, many, [worker("fifo"), worker("fifo", name="w2")], KNOWN, max_wait=1800)
    assert time.perf_counter() - started < 2
    # Two workers share each batch: about half the single-worker time, plus the loads.
    single = 300_000 * (0.1 + 0.05 + 0.1)
    assert single / 2 < out.ends["b2"] - NOW < single / 2 + 200


def owned(owner: int, model: str, created: float, requests: int = 100, chunks: int = 4, priority: int = 0) -> SimBatch:
    return SimBatch(f"u{owner}-{created}", model, created, False, None, chunks, requests, owner, priority)


def test_fair_share_starts_a_second_users_small_batch_after_one_chunk_not_after_the_first_users_queue():
    def queue() -> list[SimBatch]:  # fresh each run: the simulation consumes its batches
        return [*(owned(1, "A", NOW - 100 + i) for i in range(4)), owned(2, "A", NOW - 50, requests=5, chunks=1)]

    small = queue()[-1].id
    fair = FairShare({}, {}, switch_seconds=300)
    out = simulate(NOW, queue(), [worker("fifo", loaded="A")], KNOWN, max_wait=1800, fair=fair)
    # User 1's oldest batch waited longest: one chunk of it (25 requests at 10 req/s), then user 2's turn.
    assert out.starts[small] == pytest.approx(NOW + 2.5)
    unfair = simulate(NOW, queue(), [worker("fifo", loaded="A")], KNOWN, max_wait=1800)
    assert unfair.starts[small] == pytest.approx(NOW + 40)


def test_fair_share_in_the_simulation_keeps_the_switch_budget():
    a = [owned(1, "A", NOW - 10 + i, requests=4000, chunks=40) for i in range(2)]
    b = owned(2, "B", NOW - 5, requests=400, chunks=40)
    fair = FairShare({}, {}, switch_seconds=300)
    out = simulate(NOW, [*a, b], [worker("fifo", loaded="A")], KNOWN, max_wait=1800, fair=fair)
    # 800 s of A's work and 20 s of B's: B takes the worker only once its oldest line waited 300 s.
    assert out.starts[b.id] >= NOW - 5 + 300
    assert out.swaps <= 3


def test_the_simulation_runs_a_users_high_priority_batch_first():
    normal, high = owned(1, "A", NOW - 10), owned(1, "A", NOW - 5, priority=1)
    out = simulate(NOW, [normal, high], [worker("fifo", loaded="A")], KNOWN, max_wait=1800)
    assert out.starts[high.id] < out.starts[normal.id]
