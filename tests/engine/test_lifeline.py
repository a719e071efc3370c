"""Processes an engine starts with multiprocessing die with their parent, forked or spawned,
and so do theirs (jobs/engine/lifeline.py). No model here: plain processes that sleep;
tests/engine/test_worker_process_death.py kills a worker running real vLLM."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

# Not from tests.conftest: the spawned children import this module, without Django.
ROOT = Path(__file__).resolve().parents[2]


def sleep_forever(grandchild: bool = False) -> None:
    if grandchild:
        multiprocessing.get_context("spawn").Process(target=sleep_forever, daemon=False).start()
    time.sleep(3600)


def start_children() -> None:
    """The parent: ties its children to itself, starts a forked and a spawned one, then waits."""
    from jobs.engine import lifeline

    lifeline.tie_children()
    multiprocessing.get_context("fork").Process(target=sleep_forever).start()
    multiprocessing.get_context("spawn").Process(target=sleep_forever, kwargs={"grandchild": True}).start()
    print("started", flush=True)
    time.sleep(3600)


def descendants(pid: int) -> list[psutil.Process]:
    """Its processes, less multiprocessing's resource tracker (which exits by itself, when its pipe closes)."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_forked_and_spawned_children_and_grandchildren_die_with_a_killed_parent() -> None:
    code = "from tests.engine.test_lifeline import start_children; start_children()"
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 30
        while len(family := descendants(parent.pid)) < 3:  # fork child, spawn child, its spawned grandchild
            assert time.monotonic() < deadline, family
            time.sleep(0.05)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
    _, alive = psutil.wait_procs(family, timeout=5)
    leftovers = running(alive)
    for proc in leftovers:
        proc.kill()
    assert leftovers == []
