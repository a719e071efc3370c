"""The seed scenario with a second user (bench/seed_scenario.py --two-users): the pure parts.

User A submits the seed's eight alternating batches; user B, another key holder,
submits one small batch part-way in. Three columns, each on its own stack:
``fifo`` and ``affinity`` with fair share off (one line for everyone, today's
queue), and ``fair``: fair share on with the affinity scheduler inside each
user's work. This module holds what needs no stack: each column's settings,
the bound on B's start, the tables and the issue's targets (issue 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchsite.env import Reader, read_scheduler_settings

# The seed's two models: requests/s and load seconds.
SEED_MODELS = {"model-a": (18.0, 35.0), "model-b": (37.0, 28.0)}
# Column -> (BATCHSITE_SCHEDULER, BATCHSITE_FAIR_SHARE).
COLUMNS = {"fifo": ("fifo", "off"), "affinity": ("affinity", "off"), "fair": ("affinity", "on")}
# The server's own defaults (seed time), so the bench follows them if they change.
DEFAULTS = read_scheduler_settings(Reader({}))


@dataclass(frozen=True)
class SecondUser:
    model: str
    requests: int
    delay: float  # seconds of the seed's timeline (scaled) after user A's last submission


def fair_share_env(fair_share: str, scale: float, switch_seconds: float | None = None) -> dict[str, str]:
    """BATCHSITE_FAIR_* for one column. The switch budget and the usage half-life are
    durations of the seed's timeline, so they are scaled with it (at x0.25: 75 s, 900 s),
    as the models' rates and loads are; ``switch_seconds`` (seed time) overrides the default."""
    env = {"BATCHSITE_FAIR_SHARE": fair_share}
    if fair_share == "on":
        budget = DEFAULTS.fair_switch_seconds if switch_seconds is None else switch_seconds
        env["BATCHSITE_FAIR_SWITCH_SECONDS"] = str(budget * scale)
        env["BATCHSITE_FAIR_HALF_LIFE_SECONDS"] = str(DEFAULTS.fair_half_life_seconds * scale)
    return env


def b_start_bound(chunk: int, scale: float, b_model: str) -> float:
    """The target for B's wait to start: one chunk (of the slower model, whichever the worker
    is running when B arrives) plus one load of B's model, at the seed's nominal numbers, scaled."""
    slowest = min(rate for rate, _ in SEED_MODELS.values())
    return chunk * scale / slowest + SEED_MODELS[b_model][1] * scale


def label(row: dict[str, Any]) -> str:
    return "B" if row.get("user") == "B" else f"A{row['batch']}"


def b_row(result: dict[str, Any]) -> dict[str, Any]:
    return next(row for row in result["rows"] if row.get("user") == "B")


def worst_error(result: dict[str, Any]) -> tuple[float | None, str, int]:
    """The largest ETA error after a batch's first chunk, that batch, and how many batches
    had one (a batch of one chunk has nothing left to estimate after it: no figure)."""
    rows = result["rows"]
    measured = [(row["eta_err_first_chunk"], label(row)) for row in rows if row["eta_err_first_chunk"] is not None]
    if not measured:
        return None, "-", 0
    error, which = max(measured)
    return error, which, len(measured)


def fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.2f}"


def summary(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, r in results.items():
        b = b_row(r)
        error, which, measured = worst_error(r)
        rows.append(
            {
                "column": name,
                "scheduler": r["policy"],
                "fair share": r["fair_share"],
                "B submitted at s": fmt(r["b_submitted_at_s"]),
                "B wait to start s": fmt(b["wait_s"]),
                "B wait to finish s": fmt(b["finish_wait_s"]),
                "total s": fmt(r["total_s"]),
                "swaps (plan expected once B queued)": f"{r['swaps']} ({r['expected_swaps_after_b']})",
                "A's longest wait s": fmt(max(row["wait_s"] for row in r["rows"] if row.get("user") != "B")),
                "worst ETA err after 1st chunk": f"{fmt(error, True)} ({which}; {measured} measured)",
            }
        )
    return rows


def side_by_side(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    first = next(iter(results.values()))
    rows = []
    for k, row in enumerate(first["rows"]):
        line: dict[str, Any] = {"batch": label(row), "model": row["model"]}
        for name, r in results.items():
            data = r["rows"][k]
            line[f"{name} wait s"] = fmt(data["wait_s"])
            line[f"{name} done s"] = fmt(data["done_at_s"])
            line[f"{name} err@submit"] = fmt(data["eta_err_submit"], True)
            line[f"{name} err@1st chunk"] = fmt(data["eta_err_first_chunk"], True)
        rows.append(line)
    return rows


def checks(results: dict[str, dict[str, Any]], bound: float) -> dict[str, bool]:
    """Issue 18's targets for the fair-share column, against ``affinity`` (fair share off)."""
    fair, affinity = results["fair"], results["affinity"]
    out = {
        f"fair: B starts within one chunk plus one load ({bound:.2f} s)": b_row(fair)["wait_s"] <= bound,
        "fair: total time within 3% of affinity's": fair["total_s"] <= 1.03 * affinity["total_s"],
        "fair: swaps at most affinity's + 2": fair["swaps"] <= affinity["swaps"] + 2,
    }
    for name, r in results.items():
        error, _, _ = worst_error(r)
        out[f"{name}: ETA error after the first chunk <= 10% for every batch measured"] = (
            error is not None and error <= 0.10
        )
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    """The same table as bench.common.table, as Markdown for docs/BENCHMARKS.md."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
