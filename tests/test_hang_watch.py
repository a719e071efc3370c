"""A finalize longer than BATCHSITE_ENGINE_STALL_SECONDS does not mark a healthy engine dead
(issue 20 item 6): the hang watch stops counting while the engine waits on a finalize.
A real worker subprocess on the SIMULATED engine (the fault is the worker's clock, not inference)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.hang_watch import HangWatch
from tests.conftest import start_worker
from tests.worker.common import FAST, SIM, assert_every_line_once, finish, make_batch

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_finalize_slower_than_the_stall_limit_leaves_the_engine_running(
    client, models, upload, settings, limits, tmp_path: Path
):
    limits(chunk_size=5)
    first = make_batch(client, upload, 5)
    # The next batch's lines are in the engine while the first one finalizes.
    second = make_batch(client, upload, 10)
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        worker = start_worker(
            settings,
            *SIM,
            stderr=err,
            **FAST,
            BATCHSITE_ENGINE_STALL_SECONDS="1",
            FAULT_FINALIZE_PAUSE_SECONDS="3",  # each finalize takes 3 s (tests/faults)
            SIM_WINDOW="4",
        )
        assert finish(worker, timeout=90) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "hangs" not in text and "engine died" not in text, text[-3000:]
    assert text.count("model HuggingFaceTB/SmolLM2-135M-Instruct ready") == 1  # loaded once, never restarted
    assert_every_line_once(first, 5)
    assert_every_line_once(second, 10)


def test_the_watch_counts_engine_silence_but_not_time_off_the_clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("jobs.hang_watch.time.monotonic", lambda: now[0])
    watch = HangWatch(stall_seconds=5)
    with watch.running():
        with watch.off_clock():
            now[0] += 60  # a minute finalizing: the engine waits on us
            assert watch.stalled() is None
        now[0] += 4
        assert watch.stalled() is None
        now[0] += 2
        assert watch.stalled() == "no progress for 6s (BATCHSITE_ENGINE_STALL_SECONDS=5)"
        assert watch.stalled() is None  # once per run
    assert watch.stalled() is None
