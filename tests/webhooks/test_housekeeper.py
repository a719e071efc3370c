"""The housekeeper: periodic jobs in one thread, each failure contained."""

from __future__ import annotations

import threading
import time

import pytest
from django.db.utils import OperationalError

from jobs.housekeeper import Housekeeper, Job, standard_jobs


def test_a_failing_job_is_logged_and_the_others_keep_running(caplog):
    runs: list[str] = []

    def broken() -> None:
        runs.append("broken")
        raise ValueError("bad job")

    def offline() -> None:
        runs.append("offline")
        raise OperationalError("database is down")

    keeper = Housekeeper(
        "t", [Job("broken", 0.05, broken), Job("offline", 0.05, offline), Job("ok", 0.05, lambda: runs.append("ok"))]
    )
    thread = keeper.start()
    time.sleep(0.4)
    keeper.stop(timeout=5)
    assert not thread.is_alive()
    assert runs.count("ok") >= 3 and runs.count("broken") >= 3 and runs.count("offline") >= 3
    assert "broken failed" in caplog.text and "bad job" in caplog.text
    assert "offline: database unavailable" in caplog.text


def test_each_job_keeps_its_own_interval():
    runs: list[str] = []
    keeper = Housekeeper(
        "t", [Job("fast", 0.05, lambda: runs.append("fast")), Job("slow", 10, lambda: runs.append("slow"))]
    )
    keeper.start()
    time.sleep(0.5)
    keeper.stop(timeout=5)
    assert runs.count("slow") == 1 and runs.count("fast") >= 5


def test_stop_ends_the_loop_at_once_even_with_long_intervals():
    keeper = Housekeeper("t", [Job("rare", 3600, lambda: None)])
    thread = keeper.start()
    time.sleep(0.1)
    began = time.monotonic()
    keeper.stop(timeout=5)
    assert not thread.is_alive() and time.monotonic() - began < 1


@pytest.mark.django_db
def test_the_standard_jobs_send_webhooks_at_the_configured_interval(settings):
    jobs = standard_jobs("t", threading.Event())
    assert [job.name for job in jobs][0] == "send webhooks"
    assert jobs[0].every_seconds == settings.BATCHSITE_WEBHOOKS.poll_seconds
    Housekeeper("t").run_once()  # nothing due: a no-op that touches the database
