"""The two-user seed scenario's pure parts (bench/seed_two_users.py): each column's settings,
the bound on user B's start, the tables and issue 18's targets, on hand-made results.
Fast: no batchsite is started (the run itself is measured in docs/BENCHMARKS.md)."""

from __future__ import annotations

from typing import Any

import pytest

from batchsite.env import SCHEDULER_POLICIES
from bench import seed_two_users as two


def row(batch: int, user: str = "A", wait: float = 1.0, err: float | None = 0.02) -> dict[str, Any]:
    return {
        "batch": batch,
        "user": user,
        "model": "model-a" if batch % 2 else "model-b",
        "wait_s": wait,
        "finish_wait_s": wait + 2.0,
        "done_at_s": 10.0 * batch,
        "eta_err_submit": 0.05,
        "eta_err_first_chunk": err,
    }


def result(
    policy: str, fair: str, total: float, swaps: int, b_wait: float, errors: dict[int, float | None] | None = None
) -> dict[str, Any]:
    errors = errors or {}
    rows = [row(k, err=errors.get(k, 0.02)) for k in range(1, 9)]
    rows.append(row(9, "B", wait=b_wait, err=errors.get(9)))
    return {
        "policy": policy,
        "fair_share": fair,
        "b_submitted_at_s": 12.0,
        "total_s": total,
        "swaps": swaps,
        "expected_swaps_after_b": swaps,
        "rows": rows,
    }


def results(**fair: Any) -> dict[str, dict[str, Any]]:
    fair_args: dict[str, Any] = {"total": 101.0, "swaps": 2, "b_wait": 3.0, **fair}
    return {
        "fifo": result("fifo", "off", 150.0, 7, 140.0),
        "affinity": result("affinity", "off", 100.0, 1, 80.0),
        "fair": result("affinity", "on", **fair_args),
    }


def test_the_columns_are_fifo_and_affinity_with_fair_share_off_then_affinity_inside_fair_share():
    assert two.COLUMNS == {"fifo": ("fifo", "off"), "affinity": ("affinity", "off"), "fair": ("affinity", "on")}
    assert {policy for policy, _ in two.COLUMNS.values()} <= set(SCHEDULER_POLICIES)


def test_fair_share_durations_are_the_server_defaults_scaled_with_the_timeline():
    assert two.fair_share_env("off", 0.25) == {"BATCHSITE_FAIR_SHARE": "off"}
    env = two.fair_share_env("on", 0.25)
    assert env["BATCHSITE_FAIR_SHARE"] == "on"
    assert float(env["BATCHSITE_FAIR_SWITCH_SECONDS"]) == pytest.approx(two.DEFAULTS.fair_switch_seconds * 0.25)
    assert float(env["BATCHSITE_FAIR_HALF_LIFE_SECONDS"]) == pytest.approx(two.DEFAULTS.fair_half_life_seconds / 4)
    assert float(two.fair_share_env("on", 0.5, switch_seconds=10)["BATCHSITE_FAIR_SWITCH_SECONDS"]) == 5.0


def test_b_may_wait_one_chunk_of_the_slower_model_plus_one_load_of_its_own():
    # Chunks of 100 at x0.25: model A runs 72 req/s (1.39 s a chunk); model B loads in 7 s, model A in 8.75 s.
    assert two.b_start_bound(100, 0.25, "model-b") == pytest.approx(100 / 72 + 7.0)
    assert two.b_start_bound(100, 0.25, "model-a") == pytest.approx(100 / 72 + 8.75)


def test_every_target_met_when_the_fair_column_is_within_them():
    checks = two.checks(results(), bound=8.39)
    assert all(checks.values()), checks
    assert len(checks) == 6  # three for the fair column, the ETA error for each of the three columns


@pytest.mark.parametrize(
    ("fair", "missed"),
    [
        ({"b_wait": 8.40}, "fair: B starts within one chunk plus one load (8.39 s)"),
        ({"total": 103.5}, "fair: total time within 3% of affinity's"),
        ({"swaps": 4}, "fair: swaps at most affinity's + 2"),
        ({"errors": {3: 0.101}}, "fair: ETA error after the first chunk <= 10% for every batch measured"),
    ],
)
def test_a_target_just_past_its_bound_is_missed_and_only_that_one(fair, missed):
    checks = two.checks(results(**fair), bound=8.39)
    assert [name for name, ok in checks.items() if not ok] == [missed]


def test_no_eta_measured_is_a_miss_not_a_pass():
    none = dict.fromkeys(range(1, 10))
    checks = two.checks(results(errors=none), bound=8.39)
    assert checks["fair: ETA error after the first chunk <= 10% for every batch measured"] is False


def test_the_worst_eta_error_names_its_batch_and_skips_batches_without_one():
    # B's 100 lines are one chunk: nothing is left to estimate after it.
    r = result("affinity", "on", 100.0, 1, 3.0, errors={4: 0.07, 9: None})
    assert two.worst_error(r) == (0.07, "A4", 8)


def test_tables_list_every_batch_of_both_users_under_each_column():
    res = results()
    side = two.side_by_side(res)
    assert [line["batch"] for line in side] == [f"A{k}" for k in range(1, 9)] + ["B"]
    assert {"fifo wait s", "affinity err@1st chunk", "fair done s"} <= set(side[0])
    summary = two.summary(res)
    assert [line["column"] for line in summary] == ["fifo", "affinity", "fair"]
    assert summary[2]["B wait to start s"] == "3.00" and summary[2]["A's longest wait s"] == "1.00"
    text = two.markdown(summary)
    assert text.splitlines()[0].startswith("| column | scheduler |") and len(text.splitlines()) == 5
