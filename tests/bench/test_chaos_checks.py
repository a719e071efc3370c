"""The chaos run's checks (bench/chaos_watch.py, bench/chaos.py failures) on hand-made cases, and its
process handling (bench/chaos_stack.py) on real short-lived processes. Fast: no batchsite is started."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import prometheus_client
import pytest
import standardwebhooks

from bench import chaos_stack
from bench.chaos_report import failures
from bench.chaos_watch import (
    CounterWatch,
    Receiver,
    check_counts,
    check_lines,
    check_webhooks,
    counter_samples,
    verify_signature,
)
from bench.common import free_port

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_every_line_once_is_clean():
    clean = {"lost": 0, "duplicated": 0, "unexpected": 0, "examples": []}
    assert check_lines(["a", "b", "c"], ["a", "c"], ["b"]) == clean


def test_a_line_in_neither_file_is_lost():
    found = check_lines(["a", "b", "c"], ["a"], ["c"])
    assert (found["lost"], found["examples"]) == (1, ["b"])


def test_a_line_twice_in_one_file_or_in_both_is_duplicated():
    assert check_lines(["a", "b"], ["a", "a", "b"], [])["duplicated"] == 1
    assert check_lines(["a", "b"], ["a", "b"], ["b"])["duplicated"] == 1


def test_a_line_that_was_never_input_is_unexpected():
    found = check_lines(["a"], ["a", "\ud800", "x" * 10_000], [])
    assert (found["unexpected"], found["lost"], found["duplicated"]) == (2, 0, 0)


def test_request_counts_must_match_the_files_and_the_input():
    assert check_counts({"completed": 2, "failed": 1, "total": 3}, 2, 1, 3) == []
    problems = check_counts({"completed": 3, "failed": 0, "total": 4}, 2, 1, 3)
    assert len(problems) == 3 and "completed=3" in problems[0]
    assert len(check_counts({}, 0, 0, 0)) == 3  # absent counts are not zeros


def test_webhooks_missing_duplicated_and_double_ended():
    received = [("b1", "evt_1"), ("b1", "evt_1"), ("b2", "evt_2"), ("b2", "evt_3"), ("zz", "evt_9")]
    found = check_webhooks(["b1", "b2", "b3"], received)
    assert found == {"missing": ["b3"], "duplicates": 1, "two_events": ["b2"], "unknown": ["zz"]}


def test_counters_that_rise_or_stay_are_fine():
    watch = CounterWatch()
    for value in (1.0, 1.0, 5.0):
        watch.add({"batchsite_requests_total{model=m}": value})
    assert watch.falls == [] and watch.scrapes == 3


def test_a_counter_that_falls_or_vanishes_is_a_fall():
    watch = CounterWatch()
    watch.add({"a_total{}": 10.0, "b_total{}": 3.0})
    watch.add({"a_total{}": 7.0}, when=2.0)
    watch.add({"a_total{}": 8.0}, when=3.0)  # still below the 10 seen: falls again
    assert [(f["sample"], f["to"]) for f in watch.falls] == [("a_total{}", 7.0), ("b_total{}", None)] + [
        ("a_total{}", 8.0),
        ("b_total{}", None),
    ]


def test_counter_samples_takes_counters_and_histograms_not_gauges():
    # The text as /metrics writes it: prometheus_client's own exposition.
    registry = prometheus_client.CollectorRegistry()
    requests = prometheus_client.Counter("batchsite_requests", "", ["model", "outcome"], registry=registry)
    requests.labels("m", "completed").inc(4)
    prometheus_client.Gauge("batchsite_batches", "", ["status"], registry=registry).labels("completed").set(2)
    wait = prometheus_client.Histogram("batchsite_queue_wait_seconds", "", buckets=(1.0,), registry=registry)
    wait.observe(0.5)
    wait.observe(1.5)
    samples = counter_samples(prometheus_client.generate_latest(registry).decode())
    assert samples["batchsite_requests_total{model=m,outcome=completed}"] == 4
    assert samples["batchsite_queue_wait_seconds_count{}"] == 2
    assert samples["batchsite_queue_wait_seconds_bucket{le=+Inf}"] == 2
    assert samples["batchsite_queue_wait_seconds_sum{}"] == 2.0
    assert not [key for key in samples if key.startswith("batchsite_batches")]
    # A counter's _created sample is when it was made (a timestamp), not a count.
    assert not [key for key in samples if "_created{" in key]
    assert len(samples) == 5  # requests, the two buckets, count, sum


def test_signature_check_agrees_with_the_standard_webhooks_library():
    body = b'{"id": "evt_1", "data": {"id": "batch_1"}}'
    signed = standardwebhooks.Webhook(SECRET).sign("evt_1", _now(), body.decode())
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(int(_now().timestamp())), "webhook-signature": signed}
    assert verify_signature(SECRET, headers, body)
    assert not verify_signature(SECRET, headers, body + b" ")
    assert not verify_signature(SECRET, {**headers, "webhook-signature": "v1,AAAA"}, body)
    assert not verify_signature(SECRET, {**headers, "webhook-signature": None}, body)


def _now():
    import datetime

    return datetime.datetime.fromtimestamp(1_767_225_600, tz=datetime.UTC)


def test_receiver_counts_signed_posts_refuses_bad_ones_and_goes_down():
    receiver = Receiver(free_port(), {"alice": SECRET})
    url = f"http://127.0.0.1:{receiver.port}/hook/alice"
    body = '{"id": "evt_1", "data": {"id": "batch_1"}}'
    stamp = str(int(_now().timestamp()))
    signature = standardwebhooks.Webhook(SECRET).sign("evt_1", _now(), body)
    headers = {"webhook-id": "evt_1", "webhook-timestamp": stamp, "webhook-signature": signature}
    try:
        assert httpx.post(url, content=body, headers=headers).status_code == 204
        assert httpx.post(url.replace("alice", "mallory"), content=body, headers=headers).status_code == 400
        assert httpx.post(url, content=body + " ", headers=headers).status_code == 400
        assert receiver.snapshot() == [("batch_1", "evt_1")] and len(receiver.bad) == 2

        stopping = threading.Event()
        outage = threading.Thread(target=receiver.down, args=(30, stopping))
        outage.start()
        assert receiver.is_down.wait(5)
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, content=body, headers=headers)
        stopping.set()  # an outage ends early when the run stops
        outage.join()
        assert httpx.post(url, content=body, headers=headers).status_code == 204
        assert len(receiver.snapshot()) == 2 and len(receiver.outages) == 1
    finally:
        receiver.stop()


def clean_report(**changes: object) -> dict:
    report: dict = {
        "batches": [{"id": "b1", "status": "completed", "lines": 3, "lost": 0, "duplicated": 0, "unexpected": 0}],
        "webhooks": {"missing": [], "duplicates": 2, "two_events": [], "unknown": []},
        "metrics": {"falls": [], "requests_total": 3.0},
        "lines": 3,
        "orphans": [],
        "submit_errors": [],
        "bad_webhook_posts": 0,
        "quiet": True,
    }
    report["batches"][0]["counts"] = []
    report.update(changes)
    return report


def test_a_clean_run_has_no_failures_duplicate_webhook_posts_allowed():
    assert failures(clean_report(), submitted=1) == []


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"quiet": False}, "no quiet"),
        ({"orphans": [{"pid": 1, "cmd": "x"}]}, "left running"),
        ({"metrics": {"falls": [{"sample": "a"}], "requests_total": 3.0}}, "counter fell"),
        ({"metrics": {"falls": [], "requests_total": 6.0}}, "batchsite_requests_total is 6.0"),
        ({"webhooks": {"missing": ["b1"], "duplicates": 0, "two_events": [], "unknown": []}}, "no webhook for b1"),
        ({"bad_webhook_posts": 1}, "bad signature"),
    ],
)
def test_each_broken_promise_is_a_failure(changes, says):
    found = failures(clean_report(**changes), submitted=1)
    assert any(says in line for line in found), found


def test_lost_lines_a_live_batch_and_a_missing_batch_are_failures():
    report = clean_report()
    report["batches"][0].update(status="in_progress", lost=2)
    found = failures(report, submitted=2)
    assert "2 batches submitted, 1 listed" in found and "b1 is in_progress" in found and "2 lines lost" in found


def test_marked_finds_only_this_runs_processes_whatever_their_parent():
    token = os.urandom(4).hex()
    env = {**os.environ, chaos_stack.MARKER: token}
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = chaos_stack.marked(token)
        assert [p["pid"] for p in found] == [ours.pid]
        assert chaos_stack.marked(token + "0") == []
    finally:
        for process in (ours, other):
            process.kill()
            process.wait()
    assert chaos_stack.marked(token) == []


def test_a_killed_supervised_command_is_started_again_and_shutdown_leaves_nothing(tmp_path: Path):
    token = os.urandom(4).hex()
    env = {**os.environ, chaos_stack.MARKER: token}
    # A command with a child of its own, as a gunicorn master has workers; like gunicorn it
    # stops its child on SIGTERM (a bare bash would leave its sleep running, not our concern).
    cmd = ["bash", "-c", "trap 'kill $!; exit 0' TERM; sleep 60 & wait"]
    supervised = chaos_stack.Supervised("web", "probe", cmd, env, tmp_path / "probe.log")
    try:
        first = _wait(supervised.target)
        _wait(lambda: chaos_stack.descendants(first))
        tree = supervised.kill()
        assert first in tree and len(tree) == 2
        second = _wait(lambda: (pid := supervised.target()) and pid != first and pid)
        assert second != first and supervised.kills == 1
        # Its own child started too: a shutdown racing the restart's fork could miss it.
        _wait(lambda: chaos_stack.descendants(second))
        _wait(lambda: supervised.restarts() == 1)
    finally:
        hung = chaos_stack.shutdown([supervised], timeout=10)
    assert hung == [] and chaos_stack.marked(token) == []


def _wait(condition, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value
